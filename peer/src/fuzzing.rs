//! The fuzz entry points (`peer/fuzz`: `cargo fuzz run session_messages`,
//! `cargo fuzz run transfer_frames`), also replayed over the committed seed
//! corpus by `peer/tests/fuzz_corpus.rs` so the ordinary tests run them.
//!
//! Both read the input as a little program: a stream of opcodes with their
//! operands, so the fuzzer reaches deep states (an established session, a
//! file half received) instead of stopping at the first parser. Every
//! property they check is an `assert!`: a violation is a crash.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::handshake::{check_hello, HandshakeError, Initiator, Message, Randomness, Responder};
use crate::transfer::{
    has_reserved_stem, is_replaced_char, parse_control, sanitize_name, Action, FramingError,
    Receiver, MAX_SANITIZED_BYTES, STALL_TIMEOUT,
};

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
// transfer_frames

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

/// What the harness knows of the open file, independently of the receiver.
struct Expect {
    size: u64,
    got: u64,
    hash: Sha256,
}

struct Harness {
    rx: Receiver,
    t0: Instant,
    now_ms: u64,
    /// Time of the last frame (the latest, if the clock stepped back).
    last_ms: Option<u64>,
    open: Option<Expect>,
    failed: Option<FramingError>,
}

impl Harness {
    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    fn stalled(&self) -> bool {
        match (&self.open, self.last_ms) {
            (Some(_), Some(t)) => self.now_ms.saturating_sub(t) >= STALL_TIMEOUT.as_millis() as u64,
            _ => false,
        }
    }

    /// The receiver's answer, checked against what the harness expects.
    fn check(&mut self, result: Result<Action, FramingError>, frame: bool) {
        if let Some(e) = &self.failed {
            assert_eq!(
                result.as_ref().err(),
                Some(e),
                "a failed receiver recovered"
            );
            return;
        }
        let stalled = self.stalled();
        if frame {
            self.last_ms = Some(self.last_ms.map_or(self.now_ms, |t| t.max(self.now_ms)));
        }
        match result {
            Err(e) => {
                if stalled {
                    assert_eq!(e, FramingError::Stalled);
                } else {
                    assert_ne!(e, FramingError::Stalled, "stalled too early");
                }
                self.open = None;
                self.failed = Some(e);
            }
            Ok(action) => {
                assert!(!stalled, "a stalled file went on");
                match action {
                    Action::Nothing => {}
                    Action::Start { name, size } => {
                        assert!(self.open.is_none(), "a second file opened");
                        check_sanitized(&name);
                        self.open = Some(Expect {
                            size,
                            got: 0,
                            hash: Sha256::new(),
                        });
                    }
                    Action::Write(b) => {
                        let open = self.open.as_mut().expect("bytes with no file open");
                        open.got += b.len() as u64;
                        assert!(open.got <= open.size, "more bytes than announced");
                        open.hash.update(b);
                    }
                    Action::End {
                        expected,
                        actual,
                        ok,
                    } => {
                        let open = self.open.take().expect("end with no file open");
                        assert_eq!(open.got, open.size, "ended short");
                        assert_eq!(actual, hex::encode(open.hash.finalize()));
                        assert_eq!(ok, expected == actual);
                    }
                    Action::Cancelled { file_open, .. } => {
                        assert_eq!(file_open, self.open.take().is_some());
                    }
                }
            }
        }
        assert_eq!(self.rx.file_open(), self.open.is_some());
        assert_eq!(self.rx.received_bytes(), self.open.as_ref().map(|o| o.got));
    }
}

/// Arbitrary text and binary frames and clock steps into a `Receiver`,
/// checked against an independent account of the transfer; and every name
/// through `sanitize_name`.
pub fn transfer_frames(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_sanitized(text);
        let _ = parse_control(text);
    }
    let mut input = Input { data };
    let mut h = Harness {
        rx: Receiver::new(),
        t0: Instant::now(),
        now_ms: 0,
        last_ms: None,
        open: None,
        failed: None,
    };
    let mut steps = 0;
    while !input.done() && steps < 256 {
        steps += 1;
        let now = h.now();
        match input.u8() % 10 {
            0 => {
                // Any text frame; when it parses, the receiver's error (if
                // any) is the parser's.
                let text = String::from_utf8_lossy(input.long_chunk()).into_owned();
                let parsed = parse_control(&text);
                let was_ok = h.failed.is_none() && !h.stalled();
                let r = h.rx.on_text(&text, now);
                if was_ok {
                    if let Err(pe) = &parsed {
                        assert_eq!(r.as_ref().err(), Some(pe));
                    }
                }
                h.check(r, true);
            }
            1 => {
                // A well-formed `file` with an arbitrary name and a small
                // (or any) size.
                let name = input.text();
                check_sanitized(&name);
                let size = match input.u8() % 3 {
                    0 => input.u16() as u64,
                    1 => input.u8() as u64,
                    _ => input.u64(),
                };
                let text = serde_json::json!({"t": "file", "name": name, "size": size}).to_string();
                let r = h.rx.on_text(&text, now);
                h.check(r, true);
            }
            2 | 3 => {
                let bytes = input.chunk();
                let r = h.rx.on_binary(bytes, now);
                h.check(r, true);
            }
            4 => {
                // A large binary frame (up to 65536 + 4096 bytes).
                let len = input.u16() as usize + (input.u8() as usize % 17) * 256;
                let fill = input.u8();
                let bytes = vec![fill; len];
                let r = h.rx.on_binary(&bytes, now);
                h.check(r, true);
            }
            5 => {
                // `end` with the right digest (as the harness computed it),
                // or a wrong one.
                let digest = match (&h.open, input.u8() % 4) {
                    (Some(o), 0..=2) => hex::encode(o.hash.clone().finalize()),
                    _ => hex::encode(input.chunk()),
                };
                let text = format!(r#"{{"t":"end","sha256":"{digest}"}}"#);
                let r = h.rx.on_text(&text, now);
                h.check(r, true);
            }
            6 => {
                let reason = input.text();
                let text = serde_json::json!({"t": "cancel", "reason": reason}).to_string();
                let r = h.rx.on_text(&text, now);
                h.check(r, true);
            }
            7 => {
                // The clock: forward a little, a lot, or back.
                match input.u8() % 4 {
                    0 => h.now_ms = h.now_ms.saturating_add(input.u16() as u64),
                    1 => h.now_ms = h.now_ms.saturating_add(29_990 + input.u8() as u64 % 20),
                    2 => h.now_ms = h.now_ms.saturating_sub(input.u16() as u64),
                    _ => {
                        h.now_ms = h
                            .now_ms
                            .saturating_add(input.u64() % (1 << 40))
                            .min(1 << 40)
                    }
                }
            }
            8 => {
                let r = h.rx.poll_timeout(now).map(|()| Action::Nothing);
                h.check(r, false);
            }
            _ => {
                let name = input.text();
                check_sanitized(&name);
            }
        }
    }
}
