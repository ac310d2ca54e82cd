//! The fuzz entry points (`fuzz/`: `cargo fuzz run session_messages`,
//! `cargo fuzz run transfer_messages`), also replayed over the committed seed
//! corpus by `peer/tests/fuzz_corpus.rs` so the ordinary tests run them.
//!
//! Both read the input as a little program: a stream of opcodes with their
//! operands, so the fuzzer reaches deep states (an established session, a
//! file half received) instead of stopping at the first parser. Every
//! property they check is an `assert!`: a violation is a crash.

use std::collections::HashSet;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::control::{
    decode_frame, encode_frame, offer_parts, parse_message, Message as TransferMessage,
    OfferedFile, HEADER, MAX_FILES, MAX_LIST, MAX_PARTS, MAX_PATH_BYTES, MAX_PAYLOAD, MAX_RANGES,
    MAX_REASON, MAX_SIZE, PART_BYTES,
};
use crate::handshake::{check_hello, HandshakeError, Initiator, Message, Randomness, Responder};
use crate::names::{has_reserved_stem, is_replaced_char, sanitize_name, MAX_SANITIZED_BYTES};
use crate::paths::{fold_name, sanitize_path, Allocator, MAX_DEPTH};
use crate::records::{RecordType, Records, Role};

/// Reads operands from the input; past its end every read gives zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn done(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A length-prefixed (one byte) slice.
    fn chunk(&mut self) -> &'a [u8] {
        let n = (self.u8() as usize).min(self.data.len());
        let (c, rest) = self.data.split_at(n);
        self.data = rest;
        c
    }

    /// A length-prefixed (two bytes) slice.
    fn long_chunk(&mut self) -> &'a [u8] {
        let n = (self.u16() as usize).min(self.data.len());
        let (c, rest) = self.data.split_at(n);
        self.data = rest;
        c
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.chunk()).into_owned()
    }
}

// ---------------------------------------------------------------------------
// session_messages

const CODE: &str = "7-amber-falcon-river";
const SID: &str = "fuzz-session";

fn fixed(tag: u8) -> Randomness {
    let fill = |k: u8| move |i: usize| (i as u8).wrapping_mul(31) ^ k;
    Randomness {
        mlkem_seed: std::array::from_fn(fill(tag)),
        mlkem_m: std::array::from_fn(fill(tag ^ 0x55)),
        x25519: std::array::from_fn(fill(tag ^ 0xaa)),
        cpace: std::array::from_fn(fill(tag ^ 0x0f)),
    }
}

/// The honest handshake with fixed randomness: hello, reply, confirm.
fn honest() -> &'static (Message, Message, Message) {
    static H: OnceLock<(Message, Message, Message)> = OnceLock::new();
    H.get_or_init(|| {
        let (a, hello) = Initiator::start(CODE, SID, &fixed(1)).expect("honest start");
        let (_, reply) = Responder::respond(CODE, SID, &hello, &fixed(2)).expect("honest reply");
        let (_, confirm) = a.finish(&reply).expect("honest finish");
        (hello, reply, confirm)
    })
}

/// A hostile version of one base64 field of an honest message.
fn field(input: &mut Input, honest: &str) -> String {
    match input.u8() % 6 {
        0 => honest.to_owned(),
        // Arbitrary bytes, well encoded.
        1 => B64.encode(input.long_chunk()),
        // Arbitrary text.
        2 => input.text(),
        // The honest bytes with one bit flipped.
        3 => {
            let mut b = B64.decode(honest).expect("honest base64");
            if !b.is_empty() {
                let i = input.u16() as usize % b.len();
                b[i] ^= 1 << (input.u8() % 8);
            }
            B64.encode(b)
        }
        // The honest bytes, cut or extended.
        4 => {
            let mut b = B64.decode(honest).expect("honest base64");
            let n = input.u16() as usize % (b.len() + 8);
            b.resize(n, input.u8());
            B64.encode(b)
        }
        // The honest text, edited.
        _ => {
            let mut s = honest.to_owned();
            let i = input.u16() as usize % (s.len() + 1);
            s.insert(i, input.u8() as char);
            s
        }
    }
}

fn suite(input: &mut Input, honest: &str) -> String {
    if input.u8().is_multiple_of(4) {
        input.text()
    } else {
        honest.to_owned()
    }
}

fn same_bytes(a: &str, b: &str) -> bool {
    match (B64.decode(a), B64.decode(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn hostile_hello(input: &mut Input) -> Message {
    let Message::Hello { suite: s, ek, x, y } = &honest().0 else {
        unreachable!("honest hello")
    };
    Message::Hello {
        suite: suite(input, s),
        ek: field(input, ek),
        x: field(input, x),
        y: field(input, y),
    }
}

/// Whatever the sender's messages, a responder either refuses or replies;
/// the server's check agrees with the responder on the suite and key.
fn feed_hello(hello: &Message) {
    let server = check_hello(&hello.to_json());
    let responder = Responder::respond(CODE, SID, hello, &fixed(2));
    if responder.is_ok() {
        assert!(
            server.is_ok(),
            "the responder took a hello the server refuses"
        );
    }
    if let (Message::Hello { suite, .. }, Ok(())) = (hello, &server) {
        assert_eq!(suite, crate::SUITE);
    }
}

fn hostile_reply(input: &mut Input) -> Message {
    let Message::Reply {
        suite: s,
        ct,
        x,
        y,
        mac,
    } = &honest().1
    else {
        unreachable!("honest reply")
    };
    Message::Reply {
        suite: suite(input, s),
        ct: field(input, ct),
        x: field(input, x),
        y: field(input, y),
        mac: field(input, mac),
    }
}

/// The initiator accepts a reply only if it is the honest one (byte for
/// byte after base64): anything else must fail confirmation or parsing.
fn feed_reply(reply: &Message) {
    let (a, _) = Initiator::start(CODE, SID, &fixed(1)).expect("honest start");
    if a.finish(reply).is_ok() {
        let (
            Message::Reply {
                suite,
                ct,
                x,
                y,
                mac,
            },
            Message::Reply {
                ct: hct,
                x: hx,
                y: hy,
                mac: hmac,
                ..
            },
        ) = (reply, &honest().1)
        else {
            panic!("the initiator accepted a reply that is not a reply");
        };
        assert_eq!(suite, crate::SUITE);
        assert!(
            same_bytes(ct, hct) && same_bytes(x, hx) && same_bytes(y, hy) && same_bytes(mac, hmac),
            "the initiator accepted an altered reply"
        );
    }
}

fn hostile_confirm(input: &mut Input) -> Message {
    let Message::Confirm { mac } = &honest().2 else {
        unreachable!("honest confirm")
    };
    Message::Confirm {
        mac: field(input, mac),
    }
}

fn feed_confirm(confirm: &Message) {
    let (b, _) = Responder::respond(CODE, SID, &honest().0, &fixed(2)).expect("honest reply");
    if b.finish(confirm).is_ok() {
        let (Message::Confirm { mac }, Message::Confirm { mac: hmac }) = (confirm, &honest().2)
        else {
            panic!("the responder accepted a confirm that is not a confirm");
        };
        assert!(
            same_bytes(mac, hmac),
            "the responder accepted an altered confirm"
        );
    }
}

/// One direction of an established session: what the sender sealed, and
/// how many the receiver has opened.
#[derive(Default)]
struct Wire {
    sent: Vec<(Vec<u8>, Message)>,
    opened: usize,
}

/// Deliver `msg` (sealed message `idx` as sent, or an altered copy) and
/// check the outcome: only the next message in order, unaltered, opens.
fn deliver(rx: &mut crate::Session, wire: &mut Wire, idx: usize, msg: &Message) {
    let original = &wire.sent[idx].1;
    let result = rx.open(msg);
    let due = idx == wire.opened && msg == original;
    match result {
        Ok(plain) => {
            assert!(
                due,
                "opened sealed message {idx} (altered: {}) with {} opened: a replay, a reorder or a forgery",
                msg != original,
                wire.opened
            );
            assert_eq!(plain, wire.sent[idx].0);
            wire.opened += 1;
        }
        Err(e) => {
            assert!(!due, "the next sealed message in order did not open: {e}");
            if let (Message::Sealed { n, .. }, HandshakeError::Replay { expected, got }) = (msg, &e)
            {
                assert_eq!((*expected, *got), (wire.opened as u64, *n));
            }
        }
    }
}

fn alter(input: &mut Input, msg: &Message) -> Message {
    let Message::Sealed { n, c } = msg else {
        unreachable!("sealed")
    };
    match input.u8() % 4 {
        0 => Message::Sealed {
            n: input.u64(),
            c: c.clone(),
        },
        1 => {
            let mut b = B64.decode(c).expect("sealed base64");
            let i = input.u16() as usize % b.len();
            b[i] ^= 1 << (input.u8() % 8);
            Message::Sealed {
                n: *n,
                c: B64.encode(b),
            }
        }
        2 => Message::Sealed {
            n: *n,
            c: field(input, c),
        },
        _ => Message::Sealed {
            n: *n,
            c: B64.encode(input.chunk()),
        },
    }
}

/// Hostile handshake and session messages. Never panics; accepts only the
/// honest handshake messages; opens each sealed message once, in order.
pub fn session_messages(data: &[u8]) {
    let mut input = Input { data };
    // The whole input as text, through every parser first.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = check_hello(text);
        if let Ok(msg) = Message::from_json(text) {
            feed_hello(&msg);
            feed_reply(&msg);
            feed_confirm(&msg);
        }
    }
    let mut session: Option<(crate::Session, crate::Session, Wire, Wire)> = None;
    let mut steps = 0;
    // Each hostile handshake message costs a handshake (milliseconds):
    // a few per input keep the fuzzer fast.
    let mut handshakes = 0;
    while !input.done() && steps < 64 {
        steps += 1;
        let op = input.u8() % 8;
        if op < 4 {
            handshakes += 1;
            if handshakes > 4 {
                continue;
            }
        }
        match op {
            0 => feed_hello(&hostile_hello(&mut input)),
            1 => feed_reply(&hostile_reply(&mut input)),
            2 => feed_confirm(&hostile_confirm(&mut input)),
            3 => {
                // Any JSON at all, as any of the three.
                let text = input.text();
                if let Ok(msg) = Message::from_json(&text) {
                    assert_eq!(Message::from_json(&msg.to_json()).as_ref(), Ok(&msg));
                    feed_hello(&msg);
                    feed_reply(&msg);
                    feed_confirm(&msg);
                    if let Some((a, b, ab, ba)) = session.as_mut() {
                        // A sealed message opens only if it is one that was
                        // sent, in its turn (the fuzzer can learn sent
                        // ciphertexts from comparisons); anything else would
                        // be an AES-GCM forgery.
                        for (rx, wire) in [(b, ab), (a, ba)] {
                            match wire.sent.iter().position(|(_, m)| *m == msg) {
                                Some(idx) => deliver(rx, wire, idx, &msg),
                                None => assert!(rx.open(&msg).is_err(), "opened a forgery"),
                            }
                        }
                    }
                }
            }
            op => {
                let (a, b, ab, ba) = session.get_or_insert_with(|| {
                    let (a, hello) = Initiator::start(CODE, SID, &fixed(1)).expect("start");
                    let (b, reply) =
                        Responder::respond(CODE, SID, &hello, &fixed(2)).expect("reply");
                    let (a, confirm) = a.finish(&reply).expect("finish");
                    let b = b.finish(&confirm).expect("confirm");
                    (a, b, Wire::default(), Wire::default())
                });
                // Direction: A to B, or B to A.
                let a_to_b = input.u8() & 1 == 0;
                let (tx, rx, wire) = if a_to_b { (a, b, ab) } else { (b, a, ba) };
                match op {
                    4 | 5 => {
                        let plain = input.chunk().to_vec();
                        let msg = tx.seal(&plain);
                        wire.sent.push((plain, msg));
                    }
                    6 => {
                        // Deliver a sent message as it is: in order, a
                        // replay, or ahead of its turn.
                        if !wire.sent.is_empty() {
                            let idx = input.u8() as usize % wire.sent.len();
                            let msg = wire.sent[idx].1.clone();
                            deliver(rx, wire, idx, &msg);
                        }
                    }
                    _ => {
                        if !wire.sent.is_empty() {
                            let idx = input.u8() as usize % wire.sent.len();
                            let msg = alter(&mut input, &wire.sent[idx].1);
                            deliver(rx, wire, idx, &msg);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// transfer_messages

/// The properties every sanitised name has (docs/PROTOCOL.md, "File names").
pub fn check_sanitized(raw: &str) -> String {
    let out = sanitize_name(raw);
    assert!(!out.is_empty(), "empty name from {raw:?}");
    assert!(out.len() <= MAX_SANITIZED_BYTES, "{} bytes", out.len());
    assert!(
        !out.chars().any(is_replaced_char),
        "{out:?} keeps a replaced character"
    );
    assert!(out != "." && out != "..");
    assert!(
        !has_reserved_stem(&out),
        "{out:?} from {raw:?} is a device name"
    );
    assert!(
        !out.starts_with(' ') && !out.ends_with([' ', '.']),
        "{out:?}"
    );
    assert_eq!(sanitize_name(&out), out, "not idempotent on {raw:?}");
    out
}

/// A sanitised component satisfies the "File names" invariants (and is
/// therefore its own sanitisation).
fn check_component(c: &str, raw: &str) {
    assert_eq!(check_sanitized(c), c, "component {c:?} of {raw:?}");
}

/// sanitize_path: never empty, at most MAX_DEPTH safe components.
fn check_path(raw: &str) -> Vec<String> {
    let parts = sanitize_path(raw);
    assert!(!parts.is_empty() && parts.len() <= MAX_DEPTH, "{raw:?}");
    for c in &parts {
        check_component(c, raw);
    }
    parts
}

/// What a parsed message promises: the documented bounds, and that what
/// `to_json` writes parses back to the same message.
fn check_message(m: &TransferMessage) {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    assert!(hex(m.id(), 16));
    match m {
        TransferMessage::Files {
            part,
            parts,
            count,
            total,
            files,
            ..
        } => {
            assert!(part < parts && u64::from(*parts) <= MAX_PARTS);
            assert!(*count >= 1 && u64::from(*count) <= MAX_FILES);
            assert!(*total <= MAX_SIZE);
            assert!(!files.is_empty() && files.len() <= *count as usize);
            for f in files {
                assert!(f.path.len() <= MAX_PATH_BYTES && f.size <= MAX_SIZE);
            }
        }
        TransferMessage::Cancel { reason, .. } => assert!(reason.chars().count() <= MAX_REASON),
        TransferMessage::Hashes {
            file,
            first,
            sha256,
            ..
        } => {
            assert!(u64::from(*file) < MAX_FILES && *first <= MAX_SIZE);
            assert!(!sha256.is_empty() && sha256.len() <= MAX_LIST);
            assert!(sha256.iter().all(|d| hex(d, 64)));
        }
        TransferMessage::Sent { file, sha256, .. } | TransferMessage::Got { file, sha256, .. } => {
            assert!(u64::from(*file) < MAX_FILES && hex(sha256, 64));
        }
        TransferMessage::Want { file, blocks, .. } => {
            assert!(u64::from(*file) < MAX_FILES);
            assert!(!blocks.is_empty() && blocks.len() <= MAX_LIST);
            assert!(blocks.iter().all(|b| *b <= MAX_SIZE));
        }
        TransferMessage::Resume { files, .. } => {
            assert!(files.len() <= MAX_RANGES);
            for h in files {
                assert!(u64::from(h.file) < MAX_FILES && h.have.len() <= MAX_RANGES);
                let mut end: Option<u64> = None;
                for [a, b] in &h.have {
                    assert!(a < b && *b <= MAX_SIZE && end.is_none_or(|e| *a > e));
                    end = Some(*b);
                }
            }
        }
        TransferMessage::Ack { bytes, .. } => assert!(*bytes <= MAX_SIZE),
        TransferMessage::Accept { .. } | TransferMessage::Decline { .. } => {}
    }
    assert_eq!(parse_message(m.to_json().as_bytes()).as_ref(), Ok(m));
}

/// Any bytes as a control record's plaintext: never a panic; what parses
/// keeps its promises.
fn check_record_text(bytes: &[u8]) {
    if let Ok(m) = parse_message(bytes) {
        check_message(&m);
    }
}

/// Any bytes as a data frame: what decodes is within bounds and encodes
/// back to the same bytes.
fn check_frame(bytes: &[u8]) {
    if let Ok(f) = decode_frame(bytes) {
        assert!(!f.data.is_empty() && f.data.len() <= MAX_PAYLOAD);
        assert!(f.offset <= MAX_SIZE);
        assert_eq!(encode_frame(f.file, f.offset, f.data), bytes);
    } else {
        assert!(
            bytes.len() <= HEADER
                || bytes.len() > HEADER + MAX_PAYLOAD
                || bytes[4..HEADER] > MAX_SIZE.to_be_bytes()[..]
        );
    }
}

/// A whole offer placed: every component safe, no two files on one path,
/// no file where a directory is (all compared as the file systems do).
fn check_offer(paths: &[String]) {
    let mut alloc = Allocator::new();
    let mut files = HashSet::new();
    let mut dirs = HashSet::new();
    for raw in paths {
        let placed = alloc.place(raw);
        assert!(!placed.is_empty() && placed.len() <= MAX_DEPTH);
        assert_eq!(placed.len(), sanitize_path(raw).len());
        for c in &placed {
            check_component(c, raw);
        }
        for i in 1..placed.len() {
            dirs.insert(fold_name(&placed[..i].join("/")));
        }
        assert!(
            files.insert(fold_name(&placed.join("/"))),
            "{placed:?} placed twice"
        );
    }
    for d in &dirs {
        assert!(!files.contains(d), "a file and a directory at {d:?}");
    }
}

/// Honest messages of every kind, for the fuzzer to splice into.
const HONEST: [&str; 10] = [
    r#"{"kind":"files","id":"00112233445566aa","part":0,"parts":1,"count":2,"total":7,"files":[{"path":"dir/a.txt","size":3},{"path":"b","size":4}]}"#,
    r#"{"kind":"accept","id":"00112233445566aa"}"#,
    r#"{"kind":"decline","id":"00112233445566aa"}"#,
    r#"{"kind":"cancel","id":"00112233445566aa","reason":"stopped"}"#,
    r#"{"kind":"hashes","id":"00112233445566aa","file":0,"first":0,"sha256":["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}"#,
    r#"{"kind":"sent","id":"00112233445566aa","file":1,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#,
    r#"{"kind":"want","id":"00112233445566aa","file":0,"blocks":[0,5]}"#,
    r#"{"kind":"resume","id":"00112233445566aa","files":[{"file":0,"have":[[0,3],[5,6]]}]}"#,
    r#"{"kind":"got","id":"00112233445566aa","file":0,"ok":true,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#,
    r#"{"kind":"ack","id":"00112233445566aa","bytes":4194304}"#,
];

/// Hostile control records, data frames, offered paths and offers, and
/// records: parsing never panics; what is accepted keeps the promises of
/// docs/PROTOCOL.md ("Transfers (v2)", "Paths", "File names"); only the
/// next record in order, unaltered, opens.
pub fn transfer_messages(data: &[u8]) {
    check_record_text(data);
    check_frame(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_path(text);
    }
    let mut input = Input { data };
    let mut steps = 0;
    let dk = [0x42u8; 32];
    let mut tx = Records::new(&dk, Role::A);
    let mut rx = Records::new(&dk, Role::B);
    while !input.done() && steps < 64 {
        steps += 1;
        match input.u8() % 8 {
            0 => check_record_text(input.long_chunk()),
            1 => {
                // An honest message with a span replaced by fuzzer bytes.
                let honest = HONEST[input.u8() as usize % HONEST.len()].as_bytes();
                let at = input.u8() as usize % (honest.len() + 1);
                let cut = (at + input.u8() as usize % 8).min(honest.len());
                let mut text = honest[..at].to_vec();
                text.extend_from_slice(input.chunk());
                text.extend_from_slice(&honest[cut..]);
                check_record_text(&text);
            }
            2 => {
                // A frame: a header from the input, a payload of any length
                // around the bounds.
                let mut frame = input.chunk().to_vec();
                frame.resize(HEADER, 0);
                let len = match input.u8() % 3 {
                    0 => input.u8() as usize,
                    1 => MAX_PAYLOAD - 2 + input.u8() as usize % 4,
                    _ => input.u16() as usize,
                };
                frame.resize(HEADER + len, 0);
                check_frame(&frame);
            }
            3 => {
                check_path(&input.text());
            }
            4 => {
                // An offer: paths separated by '\n', placed in order.
                let text = String::from_utf8_lossy(input.long_chunk()).into_owned();
                let paths: Vec<String> = text.split('\n').map(str::to_owned).collect();
                check_offer(&paths);
            }
            5 => {
                // offer_parts pages an offer so that it parses back whole.
                let n = input.u8() as usize % 40 + 1;
                let files: Vec<OfferedFile> = (0..n)
                    .map(|_| OfferedFile {
                        path: input.text().repeat(input.u8() as usize % 8 + 1),
                        size: match input.u8() % 3 {
                            0 => input.u8() as u64,
                            1 => MAX_SIZE - input.u8() as u64,
                            _ => input.u64(),
                        },
                    })
                    .collect();
                // offer_parts, like the web client's offerParts, does not
                // check the 4096-byte path limit: a longer path is offered,
                // and the receiver refuses the part (bad_name).
                let long = files.iter().any(|f| f.path.len() > MAX_PATH_BYTES);
                if let Ok(parts) = offer_parts("00112233445566aa", &files) {
                    let mut back = Vec::new();
                    for (i, p) in parts.iter().enumerate() {
                        let text = p.to_json();
                        assert!(text.len() < PART_BYTES, "{} bytes", text.len());
                        if long {
                            let r = parse_message(text.as_bytes());
                            assert!(r.is_ok() || r.is_err_and(|e| e.kind() == "bad_name"));
                            continue;
                        }
                        let Ok(TransferMessage::Files {
                            part, files: some, ..
                        }) = parse_message(text.as_bytes())
                        else {
                            panic!("an offer part that does not parse: {text}");
                        };
                        assert_eq!(part as usize, i);
                        back.extend(some);
                    }
                    if !long {
                        assert_eq!(back, files);
                    }
                } else {
                    let total = files.iter().try_fold(0u64, |t, f| t.checked_add(f.size));
                    assert!(total.is_none_or(|t| t > MAX_SIZE));
                }
            }
            6 => {
                // A record sealed, then delivered as is or altered: only the
                // unaltered one opens, and after a refusal nothing does.
                let ty = if input.u8() & 1 == 0 {
                    RecordType::Control
                } else {
                    RecordType::Data
                };
                let plain = input.chunk().to_vec();
                let mut record = tx.seal(ty, &plain).expect("seal");
                let flip = input.u8() as usize;
                let broken = rx.opened() != tx.sealed() - 1;
                let altered = matches!(flip % 3, 0);
                if altered {
                    let i = flip % record.len();
                    record[i] ^= input.u8() | 1;
                }
                let r = rx.open(&record);
                if altered || broken {
                    assert!(r.is_err());
                } else {
                    assert_eq!(r, Ok((ty, plain)));
                }
            }
            _ => {
                let _ = rx.open(input.chunk());
            }
        }
    }
}
