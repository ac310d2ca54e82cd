//! The data-channel framing (docs/PROTOCOL.md, "The data channel"): the
//! sanitiser, control parsing, the receiver state machine, and the shared
//! vectors (peer/vectors/transfer-v1.json) that the JavaScript tests check
//! too. Every expected value here is written by hand; the vectors file is
//! generated from these tables and must match what is committed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tallow_peer::transfer::{
    has_reserved_stem, is_replaced_char, MAX_CONTROL_BYTES, MAX_DATA_BYTES, STALL_TIMEOUT,
};
use tallow_peer::{parse_control, sanitize_name, Action, Control, FramingError, Receiver};

const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn hex_sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// (input, sanitised) pairs, computed by hand from the rules.
fn sanitizer_cases() -> Vec<(String, String)> {
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let mut v = vec![
        s("report.pdf", "report.pdf"),
        s("", "file"),
        s(".", "file"),
        s("..", "file"),
        s("...", "file"),
        s("../../etc/passwd", ".._.._etc_passwd"),
        s("C:\\x", "C__x"),
        s(
            "C:\\Windows\\System32\\drivers\\etc\\hosts",
            "C__Windows_System32_drivers_etc_hosts",
        ),
        s("con.txt", "_con.txt"),
        s("aux", "_aux"),
        s("CoM1.tar.gz", "_CoM1.tar.gz"),
        s("LPT9", "_LPT9"),
        s("nul.", "_nul"),
        s("prn .txt", "prn .txt"),
        s("COM0", "COM0"),
        s("console.log", "console.log"),
        s("invoice\u{202E}txt.exe", "invoice_txt.exe"),
        s("\u{202A}evil\u{202C}.txt", "_evil_.txt"),
        s("\u{2066}x\u{2069}", "_x_"),
        s("a\u{0}b", "a_b"),
        s("tab\there\nnewline", "tab_here_newline"),
        s("\u{7F}\u{85}\u{9F}", "___"),
        s("\u{61C}", "_"),
        s("\u{200B}hidden\u{FEFF}", "_hidden_"),
        s("\u{200F}\u{2060}", "__"),
        s("what?<>|*\".txt", "what______.txt"),
        s("a:b", "a_b"),
        s("   ", "file"),
        s("  spaced name .txt  ", "spaced name .txt"),
        s("  .hidden", ".hidden"),
        s("name. . .", "name"),
        s("trailing dots...", "trailing dots"),
        s(
            "\u{3000}ideographic space\u{3000}",
            "\u{3000}ideographic space\u{3000}",
        ),
        s("名前.txt", "名前.txt"),
        s("😀.png", "😀.png"),
    ];
    // Length: 300 ASCII bytes are cut to 255.
    v.push(("x".repeat(300), "x".repeat(255)));
    // A two-byte char across the cut: 254 + 2 bytes, the é goes.
    v.push((
        format!("{}{}", "a".repeat(254), "é".repeat(23)),
        "a".repeat(254),
    ));
    // Three-byte chars: 85 x 3 = 255 fit exactly, the 86th goes.
    v.push(("€".repeat(100), "€".repeat(85)));
    // An emoji (4 bytes) straddling byte 255 goes whole.
    v.push((
        format!("{}😀{}", "b".repeat(252), "c".repeat(44)),
        "b".repeat(252),
    ));
    // An emoji ending exactly at byte 255 stays.
    v.push((
        format!("{}😀{}", "b".repeat(251), "c".repeat(45)),
        format!("{}😀", "b".repeat(251)),
    ));
    // The cut leaves a trailing space and dot: stripped.
    v.push((
        format!("{} .{}", "x".repeat(253), "y".repeat(45)),
        "x".repeat(253),
    ));
    // The cut plus the strip expose a device name: prefixed again.
    v.push((format!("aux{}x", " ".repeat(300)), "_aux".to_owned()));
    v.push((format!("LPT1{}x", ".".repeat(300)), "_LPT1".to_owned()));
    v.push((format!("Nul{}z", " .".repeat(150)), "_Nul".to_owned()));
    // All dots, all spaces.
    v.push((".".repeat(300), "file".to_owned()));
    v.push((" ".repeat(300), "file".to_owned()));
    // The cut leaves only spaces and dots after the first char: "a".
    v.push((format!("a{}b", " .".repeat(200)), "a".to_owned()));
    // A device name with a long extension: prefixed, then cut.
    v.push((
        format!("con.{}", "t".repeat(300)),
        format!("_con.{}", "t".repeat(250)),
    ));
    v
}

#[test]
fn sanitizer_matches_the_hand_written_cases() {
    for (input, want) in sanitizer_cases() {
        assert_eq!(sanitize_name(&input), want, "input {input:?}");
    }
}

#[test]
fn sanitized_names_keep_the_invariants_and_are_fixed_points() {
    for (input, _) in sanitizer_cases() {
        let out = sanitize_name(&input);
        assert!(!out.is_empty() && out.len() <= 255, "{out:?}");
        assert!(!out.chars().any(is_replaced_char), "{out:?}");
        assert!(out != "." && out != "..");
        assert!(!has_reserved_stem(&out), "{out:?}");
        assert!(!out.ends_with([' ', '.']) && !out.starts_with(' '));
        assert_eq!(sanitize_name(&out), out, "not idempotent on {input:?}");
    }
}

/// Regression (found while writing the fuzz invariants): the rule as first
/// written checked device names before the 255-byte cut, so a name that the
/// cut and the trailing strip reduce to a device name kept it.
#[test]
fn regression_cut_exposing_a_device_name_is_prefixed() {
    let out = sanitize_name(&format!("aux{}x", " ".repeat(300)));
    assert_eq!(out, "_aux");
    assert_eq!(sanitize_name(&out), out);
}

fn name_of(bytes: usize, unit: &str) -> String {
    unit.repeat(bytes / unit.len())
}

/// (frame text, expected parse as JSON or error kind).
fn control_cases() -> Vec<(String, Result<Value, &'static str>)> {
    let d = EMPTY_SHA;
    let ok = |s: &str, v: Value| (s.to_owned(), Ok(v));
    let err = |s: &str, k: &'static str| (s.to_owned(), Err(k));
    let mut v = vec![
        ok(
            r#"{"t":"file","name":"a.txt","size":5}"#,
            json!({"t":"file","name":"a.txt","size":5}),
        ),
        ok(
            r#" { "size" : 0 , "name" : "" , "t" : "file" } "#,
            json!({"t":"file","name":"","size":0}),
        ),
        ok(
            r#"{"t":"file","name":"x","size":9007199254740991}"#,
            json!({"t":"file","name":"x","size":9007199254740991u64}),
        ),
        err(
            r#"{"t":"file","name":"x","size":9007199254740992}"#,
            "bad_size",
        ),
        err(
            r#"{"t":"file","name":"x","size":18446744073709551616}"#,
            "bad_size",
        ),
        err(r#"{"t":"file","name":"x","size":-1}"#, "bad_size"),
        err(r#"{"t":"file","name":"x","size":1.5}"#, "bad_size"),
        err(r#"{"t":"file","name":"x","size":1e-7}"#, "bad_size"),
        ok(
            r#"{"t":"file","name":"x","size":5.0}"#,
            json!({"t":"file","name":"x","size":5}),
        ),
        ok(
            r#"{"t":"file","name":"x","size":1e3}"#,
            json!({"t":"file","name":"x","size":1000}),
        ),
        ok(
            r#"{"t":"file","name":"x","size":-0}"#,
            json!({"t":"file","name":"x","size":0}),
        ),
        err(r#"{"t":"file","name":"x","size":"5"}"#, "malformed"),
        err(r#"{"t":"file","name":"x","size":null}"#, "malformed"),
        err(r#"{"t":"file","name":"x"}"#, "malformed"),
        err(r#"{"t":"file","size":5}"#, "malformed"),
        err(r#"{"t":"file","name":7,"size":5}"#, "malformed"),
        err(r#"{"t":"file","name":7,"size":-1}"#, "malformed"),
        // Numbers a double cannot hold are malformed anywhere (JSON.parse
        // would give Infinity).
        err(r#"{"t":"file","name":"x","size":1e400}"#, "malformed"),
        err(r#"{"t":"cancel","reason":"r","x":-1e400}"#, "malformed"),
        ok(
            &format!(r#"{{"t":"end","sha256":"{d}"}}"#),
            json!({"t":"end","sha256":d}),
        ),
        err(
            &format!(r#"{{"t":"end","sha256":"{}"}}"#, d.to_uppercase()),
            "bad_digest",
        ),
        err(
            &format!(r#"{{"t":"end","sha256":"{}"}}"#, &d[..63]),
            "bad_digest",
        ),
        err(&format!(r#"{{"t":"end","sha256":"{d}0"}}"#), "bad_digest"),
        err(
            &format!(r#"{{"t":"end","sha256":"{}g"}}"#, &d[..63]),
            "bad_digest",
        ),
        err(r#"{"t":"end","sha256":""}"#, "bad_digest"),
        err(r#"{"t":"end","sha256":5}"#, "malformed"),
        err(r#"{"t":"end"}"#, "malformed"),
        ok(
            &format!(r#"{{"t":"received","ok":true,"sha256":"{d}"}}"#),
            json!({"t":"received","ok":true,"sha256":d}),
        ),
        ok(
            &format!(r#"{{"t":"received","ok":false,"sha256":"{d}"}}"#),
            json!({"t":"received","ok":false,"sha256":d}),
        ),
        err(
            &format!(r#"{{"t":"received","ok":"true","sha256":"{d}"}}"#),
            "malformed",
        ),
        err(
            &format!(r#"{{"t":"received","sha256":"{d}"}}"#),
            "malformed",
        ),
        err(r#"{"t":"received","ok":true,"sha256":"00"}"#, "bad_digest"),
        ok(
            r#"{"t":"cancel","reason":"user cancelled"}"#,
            json!({"t":"cancel","reason":"user cancelled"}),
        ),
        ok(
            r#"{"t":"cancel","reason":""}"#,
            json!({"t":"cancel","reason":""}),
        ),
        err(r#"{"t":"cancel"}"#, "malformed"),
        err(r#"{"t":"cancel","reason":null}"#, "malformed"),
        err(r#"{"t":"nope"}"#, "unknown_type"),
        err(r#"{"t":"FILE","name":"x","size":1}"#, "unknown_type"),
        err(r#"{"t":""}"#, "unknown_type"),
        err(r#"{"t":5}"#, "malformed"),
        err(r#"{"type":"file"}"#, "malformed"),
        err(r#"{}"#, "malformed"),
        err(r#"[]"#, "malformed"),
        err(r#""file""#, "malformed"),
        err(r#"null"#, "malformed"),
        err(r#"5"#, "malformed"),
        err(r#"not json"#, "malformed"),
        err(r#""#, "malformed"),
        err(r#"{"t":"cancel","reason":"r"} x"#, "malformed"),
        err(r#"{"t":"cancel","reason":"r"}{}"#, "malformed"),
        err(r#"{"t":"cancel","reason":"r",}"#, "malformed"),
        err(
            "{\"t\":\"cancel\",\"reason\":\"raw\u{1}control\"}",
            "malformed",
        ),
        err("\u{FEFF}{\"t\":\"cancel\",\"reason\":\"bom\"}", "malformed"),
        // Unpaired surrogate escapes are malformed wherever they are.
        err(r#"{"t":"cancel","reason":"\ud800"}"#, "malformed"),
        err(r#"{"t":"cancel","reason":"r","x":"\udc00"}"#, "malformed"),
        ok(
            r#"{"t":"cancel","reason":"\ud83d\ude00"}"#,
            json!({"t":"cancel","reason":"😀"}),
        ),
        // Extra fields are ignored; a repeated key takes its last value.
        ok(
            &format!(r#"{{"t":"end","sha256":"{d}","extra":[1,{{"a":null}}]}}"#),
            json!({"t":"end","sha256":d}),
        ),
        ok(
            &format!(r#"{{"t":"file","t":"end","sha256":"{d}"}}"#),
            json!({"t":"end","sha256":d}),
        ),
        // Type first, then fields in their documented order.
        err(r#"{"t":"nope","size":-1}"#, "unknown_type"),
    ];
    // Name length counts UTF-8 bytes.
    let n4096 = name_of(4096, "a");
    v.push((
        json!({"t":"file","name":n4096,"size":1}).to_string(),
        Ok(json!({"t":"file","name":n4096,"size":1})),
    ));
    v.push((
        json!({"t":"file","name":name_of(4097, "a"),"size":1}).to_string(),
        Err("bad_name"),
    ));
    // 1366 three-byte chars: 4098 bytes, 1366 chars.
    v.push((
        json!({"t":"file","name":"€".repeat(1366),"size":1}).to_string(),
        Err("bad_name"),
    ));
    // The name is checked before the size.
    v.push((
        json!({"t":"file","name":name_of(4097, "a"),"size":-1}).to_string(),
        Err("bad_name"),
    ));
    // Reason length counts Unicode code points (not UTF-16 units).
    let r256 = "😀".repeat(256);
    v.push((
        json!({"t":"cancel","reason":r256}).to_string(),
        Ok(json!({"t":"cancel","reason":r256})),
    ));
    v.push((
        json!({"t":"cancel","reason":"r".repeat(257)}).to_string(),
        Err("malformed"),
    ));
    // Frame length: 16384 bytes pass, 16385 do not (whatever they hold).
    let pad = |total: usize| {
        let base = r#"{"t":"cancel","reason":"r","pad":""}"#.len();
        json!({"t":"cancel","reason":"r","pad":"p".repeat(total - base)}).to_string()
    };
    let p16384 = pad(MAX_CONTROL_BYTES);
    assert_eq!(p16384.len(), 16384);
    v.push((p16384, Ok(json!({"t":"cancel","reason":"r"}))));
    let p16385 = pad(MAX_CONTROL_BYTES + 1);
    assert_eq!(p16385.len(), 16385);
    v.push((p16385, Err("too_large")));
    // Nesting: serde_json, like the documented rule, takes at most 127
    // nested arrays/objects (the frame's object counts as one).
    let nest = |depth: usize| {
        format!(
            r#"{{"t":"cancel","reason":"r","x":{}1{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    };
    v.push((nest(127), Ok(json!({"t":"cancel","reason":"r"}))));
    v.push((nest(128), Err("malformed")));
    v
}

fn control_json(c: &Control) -> Value {
    serde_json::from_str(&c.to_json()).unwrap()
}

#[test]
fn control_parsing_matches_the_hand_written_cases() {
    for (text, want) in control_cases() {
        let got = parse_control(&text);
        match (&got, &want) {
            (Ok(c), Ok(v)) => assert_eq!(&control_json(c), v, "frame {text:?}"),
            (Err(e), Err(k)) => assert_eq!(e.kind(), *k, "frame {text:?}: {e}"),
            _ => panic!("frame {text:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn control_messages_round_trip() {
    for c in [
        Control::File {
            name: "a \"quoted\" \u{202E} name".into(),
            size: 9_007_199_254_740_991,
        },
        Control::End {
            sha256: EMPTY_SHA.into(),
        },
        Control::Received {
            ok: false,
            sha256: EMPTY_SHA.into(),
        },
        Control::Cancel {
            reason: "stalled".into(),
        },
    ] {
        assert_eq!(parse_control(&c.to_json()).unwrap(), c);
    }
    assert_eq!(
        Control::File {
            name: "a\"b".into(),
            size: 3
        }
        .to_json(),
        r#"{"t":"file","name":"a\"b","size":3}"#
    );
    assert_eq!(
        Control::Received {
            ok: true,
            sha256: EMPTY_SHA.into()
        }
        .to_json(),
        format!(r#"{{"t":"received","ok":true,"sha256":"{EMPTY_SHA}"}}"#)
    );
}

/// One step of a frame sequence, as in the vectors file.
#[derive(Clone)]
enum Step {
    Text(String),
    /// Bytes given in hex.
    Hex(Vec<u8>),
    /// `len` bytes where byte i is i mod 256.
    Len(usize),
    Poll,
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

fn step_json(at_ms: u64, s: &Step) -> Value {
    match s {
        Step::Text(t) => json!({"at_ms": at_ms, "text": t}),
        Step::Hex(b) => json!({"at_ms": at_ms, "binary_hex": hex::encode(b)}),
        Step::Len(n) => json!({"at_ms": at_ms, "binary_len": n}),
        Step::Poll => json!({"at_ms": at_ms, "poll": true}),
    }
}

fn action_json(a: &Action) -> Value {
    match a {
        Action::Nothing => json!({"action": "nothing"}),
        Action::Start { name, size } => json!({"action": "start", "name": name, "size": size}),
        Action::Write(b) => json!({"action": "write", "len": b.len()}),
        Action::End {
            expected,
            actual,
            ok,
        } => json!({"action": "end", "expected": expected, "actual": actual, "ok": ok}),
        Action::Cancelled { reason, file_open } => {
            json!({"action": "cancelled", "reason": reason, "file_open": file_open})
        }
    }
}

fn run(steps: &[(u64, Step)]) -> Vec<Value> {
    let t0 = Instant::now();
    let mut r = Receiver::new();
    steps
        .iter()
        .map(|(ms, s)| {
            let now = t0 + Duration::from_millis(*ms);
            let res = match s {
                Step::Text(t) => r.on_text(t, now).map(|a| action_json(&a)),
                Step::Hex(b) => r.on_binary(b, now).map(|a| action_json(&a)),
                Step::Len(n) => {
                    let b = pattern(*n);
                    r.on_binary(&b, now).map(|a| action_json(&a))
                }
                Step::Poll => r.poll_timeout(now).map(|()| json!({"action": "nothing"})),
            };
            res.unwrap_or_else(|e| json!({"error": e.kind()}))
        })
        .collect()
}

type Sequence = (&'static str, Vec<(u64, Step)>, Vec<Value>);

fn sequences() -> Vec<Sequence> {
    let text = |s: &str| Step::Text(s.to_owned());
    let file =
        |name: &str, size: u64| Step::Text(json!({"t":"file","name":name,"size":size}).to_string());
    let end = |d: &str| Step::Text(json!({"t":"end","sha256":d}).to_string());
    let hello_sha = hex_sha(b"hello");
    let big = pattern(65536 + 10);
    let big_sha = hex_sha(&big);
    let start = |name: &str, size: u64| json!({"action":"start","name":name,"size":size});
    let write = |n: usize| json!({"action":"write","len":n});
    let error = |k: &str| json!({"error": k});
    let ended =
        |exp: &str, act: &str| json!({"action":"end","expected":exp,"actual":act,"ok": exp == act});
    let nothing = json!({"action":"nothing"});
    vec![
        (
            "a small file, then a second one",
            vec![
                (0, file("../hello.txt", 5)),
                (1, Step::Hex(b"hel".to_vec())),
                (2, Step::Hex(b"lo".to_vec())),
                (3, end(&hello_sha)),
                (4, file("again.txt", 0)),
                (5, end(EMPTY_SHA)),
            ],
            vec![
                start(".._hello.txt", 5),
                write(3),
                write(2),
                ended(&hello_sha, &hello_sha),
                start("again.txt", 0),
                ended(EMPTY_SHA, EMPTY_SHA),
            ],
        ),
        (
            "a full 65536-byte frame and the rest",
            vec![
                (0, file("con", 65546)),
                (10, Step::Len(65536)),
                (20, Step::Hex(big[65536..].to_vec())),
                (30, end(&big_sha)),
            ],
            vec![
                start("_con", 65546),
                write(65536),
                write(10),
                ended(&big_sha, &big_sha),
            ],
        ),
        (
            "a digest that does not match is reported, not an error",
            vec![
                (0, file("a", 5)),
                (1, Step::Hex(b"hellO".to_vec())),
                (2, end(&hello_sha)),
            ],
            vec![
                start("a", 5),
                write(5),
                ended(&hello_sha, &hex_sha(b"hellO")),
            ],
        ),
        (
            "an empty binary frame does nothing",
            vec![
                (0, file("a", 5)),
                (1, Step::Hex(vec![])),
                (2, Step::Hex(b"hello".to_vec())),
                (3, Step::Hex(vec![])),
                (4, end(&hello_sha)),
            ],
            vec![
                start("a", 5),
                nothing.clone(),
                write(5),
                nothing.clone(),
                ended(&hello_sha, &hello_sha),
            ],
        ),
        (
            "a binary frame over 65536 bytes",
            vec![(0, file("a", 100000)), (1, Step::Len(65537))],
            vec![start("a", 100000), error("unexpected_data")],
        ),
        (
            "a binary frame with no file open; the receiver stays failed",
            vec![
                (0, Step::Hex(b"x".to_vec())),
                (1, file("a", 1)),
                (2, Step::Poll),
            ],
            vec![
                error("unexpected_data"),
                error("unexpected_data"),
                error("unexpected_data"),
            ],
        ),
        (
            "more bytes than announced",
            vec![
                (0, file("a", 4)),
                (1, Step::Hex(b"hel".to_vec())),
                (2, Step::Hex(b"lo".to_vec())),
            ],
            vec![start("a", 4), write(3), error("size_exceeded")],
        ),
        (
            "bytes after end",
            vec![
                (0, file("a", 0)),
                (1, end(EMPTY_SHA)),
                (2, Step::Hex(b"x".to_vec())),
            ],
            vec![
                start("a", 0),
                ended(EMPTY_SHA, EMPTY_SHA),
                error("unexpected_data"),
            ],
        ),
        (
            "end before every byte arrived",
            vec![
                (0, file("a", 5)),
                (1, Step::Hex(b"hell".to_vec())),
                (2, end(&hello_sha)),
            ],
            vec![start("a", 5), write(4), error("size_short")],
        ),
        (
            "file while a file is open",
            vec![(0, file("a", 5)), (1, file("b", 5))],
            vec![start("a", 5), error("unexpected_control")],
        ),
        (
            "end with no file open",
            vec![(0, end(EMPTY_SHA))],
            vec![error("unexpected_control")],
        ),
        (
            "received sent to the receiving side",
            vec![(
                0,
                text(&format!(
                    r#"{{"t":"received","ok":true,"sha256":"{EMPTY_SHA}"}}"#
                )),
            )],
            vec![error("unexpected_control")],
        ),
        (
            "cancel mid-file, then a new file",
            vec![
                (0, file("a", 5)),
                (1, Step::Hex(b"he".to_vec())),
                (2, text(r#"{"t":"cancel","reason":"user cancelled"}"#)),
                (3, text(r#"{"t":"cancel","reason":"again"}"#)),
                (4, file("b", 5)),
                (5, Step::Hex(b"hello".to_vec())),
                (6, end(&hello_sha)),
            ],
            vec![
                start("a", 5),
                write(2),
                json!({"action":"cancelled","reason":"user cancelled","file_open":true}),
                json!({"action":"cancelled","reason":"again","file_open":false}),
                start("b", 5),
                write(5),
                ended(&hello_sha, &hello_sha),
            ],
        ),
        (
            "a bad control frame mid-file fails the transfer",
            vec![
                (0, file("a", 5)),
                (1, text(r#"{"t":"end","sha256":"ABC"}"#)),
                (2, Step::Hex(b"hello".to_vec())),
            ],
            vec![start("a", 5), error("bad_digest"), error("bad_digest")],
        ),
        (
            "stalled: 29.999 s of silence is fine, 30 s is not",
            vec![
                (1000, file("a", 5)),
                (31000 - 1, Step::Poll),
                (31000 - 1, Step::Hex(b"he".to_vec())),
                (60998, Step::Poll),
                (60999, Step::Poll),
                (61000, Step::Hex(b"llo".to_vec())),
            ],
            vec![
                start("a", 5),
                nothing.clone(),
                write(2),
                nothing.clone(),
                error("stalled"),
                error("stalled"),
            ],
        ),
        (
            "a frame arriving after 30 s of silence finds the file stalled",
            vec![(0, file("a", 5)), (30000, Step::Hex(b"hello".to_vec()))],
            vec![start("a", 5), error("stalled")],
        ),
        (
            "no file open: silence is not a stall",
            vec![
                (0, file("a", 0)),
                (1, end(EMPTY_SHA)),
                (100000, Step::Poll),
                (200000, file("b", 0)),
            ],
            vec![
                start("a", 0),
                ended(EMPTY_SHA, EMPTY_SHA),
                nothing.clone(),
                start("b", 0),
            ],
        ),
        (
            "a clock that steps back counts as no time",
            vec![
                (50000, file("a", 5)),
                (10000, Step::Poll),
                (79999, Step::Poll),
                (80000, Step::Poll),
            ],
            vec![
                start("a", 5),
                nothing.clone(),
                nothing.clone(),
                error("stalled"),
            ],
        ),
        (
            "an oversized control frame",
            vec![(0, file("a", 5)), (1, Step::Text("x".repeat(16385)))],
            vec![start("a", 5), error("too_large")],
        ),
    ]
}

#[test]
fn frame_sequences_give_the_hand_written_outcomes() {
    for (what, steps, want) in sequences() {
        assert_eq!(run(&steps), want, "{what}");
    }
}

#[test]
fn receiver_writes_every_byte_and_checks_the_digest() {
    let t0 = Instant::now();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let mut r = Receiver::new();
    let start = r
        .on_text(
            &Control::File {
                name: "big.bin".into(),
                size: data.len() as u64,
            }
            .to_json(),
            t0,
        )
        .unwrap();
    assert_eq!(
        start,
        Action::Start {
            name: "big.bin".into(),
            size: 200_000
        }
    );
    let mut written = Vec::new();
    for chunk in data.chunks(MAX_DATA_BYTES) {
        match r.on_binary(chunk, t0).unwrap() {
            Action::Write(b) => written.extend_from_slice(b),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(written, data);
    assert_eq!(r.received_bytes(), Some(200_000));
    let end = r
        .on_text(
            &Control::End {
                sha256: hex_sha(&data),
            }
            .to_json(),
            t0,
        )
        .unwrap();
    assert!(matches!(end, Action::End { ok: true, .. }));
    assert!(!r.file_open());
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn the_deadline_follows_the_last_frame() {
    let t0 = Instant::now();
    let mut r = Receiver::new();
    assert_eq!(r.next_deadline(), None);
    r.on_text(r#"{"t":"file","name":"a","size":3}"#, t0)
        .unwrap();
    assert_eq!(r.next_deadline(), Some(t0 + STALL_TIMEOUT));
    let t1 = t0 + Duration::from_secs(5);
    r.on_binary(b"a", t1).unwrap();
    assert_eq!(r.next_deadline(), Some(t1 + STALL_TIMEOUT));
    assert_eq!(
        r.poll_timeout(t1 + STALL_TIMEOUT),
        Err(FramingError::Stalled)
    );
    assert_eq!(r.error(), Some(&FramingError::Stalled));
    assert!(!r.file_open());
}

#[test]
fn error_kinds_are_stable() {
    let all = [
        (FramingError::TooLarge(1), "too_large"),
        (FramingError::Malformed("x"), "malformed"),
        (FramingError::UnknownType("x".into()), "unknown_type"),
        (FramingError::BadSize, "bad_size"),
        (FramingError::BadName(1), "bad_name"),
        (FramingError::BadDigest, "bad_digest"),
        (FramingError::UnexpectedData("x"), "unexpected_data"),
        (FramingError::UnexpectedControl("x"), "unexpected_control"),
        (FramingError::SizeExceeded { size: 1 }, "size_exceeded"),
        (FramingError::SizeShort { size: 1, got: 0 }, "size_short"),
        (FramingError::Stalled, "stalled"),
    ];
    for (e, k) in all {
        assert_eq!(e.kind(), k);
    }
}

/// JSON with every non-ASCII character escaped (`\uXXXX`, surrogate pairs
/// above U+FFFF), so that invisible and bidi characters are visible in the
/// file and in review.
fn ascii_json(v: &Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out + "\n"
}

/// Regenerate with `TALLOW_WRITE_VECTORS=1 cargo test -p tallow-peer --test transfer vectors`.
#[test]
fn vectors_match_the_file() {
    let sanitize: Vec<Value> = sanitizer_cases()
        .into_iter()
        .map(|(i, o)| json!({"input": i, "output": o}))
        .collect();
    let control: Vec<Value> = control_cases()
        .into_iter()
        .map(|(text, want)| match want {
            Ok(v) => json!({"text": text, "parsed": v}),
            Err(k) => json!({"text": text, "error": k}),
        })
        .collect();
    let seqs: Vec<Value> = sequences()
        .into_iter()
        .map(|(what, steps, want)| {
            json!({
                "name": what,
                "steps": steps.iter().map(|(ms, s)| step_json(*ms, s)).collect::<Vec<_>>(),
                "results": want,
            })
        })
        .collect();
    let v = json!({
        "version": 1,
        "about": "docs/PROTOCOL.md, \"The data channel\". sanitize: sanitize_name(input) == output. control: parsing text gives parsed (the message as a JSON object) or error (its kind). sequences: a fresh receiver fed steps in order, each at at_ms milliseconds from an arbitrary origin: text (a text frame), binary_hex (a binary frame), binary_len (a binary frame of that many bytes, byte i being i mod 256) or poll (check the stall timer); results[i] is the action for step i, or {\"error\": kind}.",
        "sanitize": sanitize,
        "control": control,
        "sequences": seqs,
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/transfer-v1.json");
    let text = ascii_json(&v);
    // The escaped file still parses to the same value.
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    if std::env::var_os("TALLOW_WRITE_VECTORS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let stored =
        std::fs::read_to_string(path).expect("vectors file (TALLOW_WRITE_VECTORS=1 to create)");
    assert_eq!(stored, text, "the framing no longer matches its vectors");

    // And the implementation agrees with the file as stored, read back the
    // way the JavaScript test reads it.
    let stored: Value = serde_json::from_str(&stored).unwrap();
    for case in stored["sanitize"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        assert_eq!(sanitize_name(input), case["output"].as_str().unwrap());
    }
    for case in stored["control"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        match parse_control(text) {
            Ok(c) => assert_eq!(control_json(&c), case["parsed"], "{text:?}"),
            Err(e) => assert_eq!(e.kind(), case["error"].as_str().unwrap(), "{text:?}"),
        }
    }
    for case in stored["sequences"].as_array().unwrap() {
        let steps: Vec<(u64, Step)> = case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let ms = s["at_ms"].as_u64().unwrap();
                let step = if let Some(t) = s["text"].as_str() {
                    Step::Text(t.to_owned())
                } else if let Some(h) = s["binary_hex"].as_str() {
                    Step::Hex(hex::decode(h).unwrap())
                } else if let Some(n) = s["binary_len"].as_u64() {
                    Step::Len(n as usize)
                } else {
                    assert_eq!(s["poll"], json!(true));
                    Step::Poll
                };
                (ms, step)
            })
            .collect();
        assert_eq!(
            Value::Array(run(&steps)),
            case["results"],
            "{}",
            case["name"]
        );
    }
}
