//! Transfers v2 against the vectors the web client generated and checks
//! (peer/vectors/transfer-v2.json, from web/tools/transfer-vectors.mjs):
//! control messages, offer paging, data-frame headers and sealed records.

use serde_json::{json, Value};
use tallow_peer::control::{
    decode_frame, encode_frame, offer_parts, parse_message, ControlError, Message, OfferedFile,
};
use tallow_peer::records::{RecordType, Records, Role};

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/transfer-v2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes_of(case: &Value) -> Vec<u8> {
    match (case.get("text"), case.get("hex")) {
        (Some(Value::String(t)), _) => t.as_bytes().to_vec(),
        (_, Some(Value::String(h))) => hex::decode(h).unwrap(),
        _ => panic!("a case without text or hex: {case}"),
    }
}

fn outcome(r: Result<Message, ControlError>) -> Value {
    match r {
        Ok(m) => {
            // to_json is what gets sealed: it must parse back to the same.
            assert_eq!(parse_message(m.to_json().as_bytes()).as_ref(), Ok(&m));
            json!({ "parsed": serde_json::to_value(&m).unwrap() })
        }
        Err(e) => json!({ "error": e.kind() }),
    }
}

#[test]
fn control_messages_parse_as_in_the_web_client() {
    let v = vectors();
    let cases = v["messages"].as_array().unwrap();
    assert!(cases.len() > 100);
    let mut failures = Vec::new();
    for case in cases {
        let want = match (case.get("parsed"), case.get("error")) {
            (Some(p), None) => json!({ "parsed": p }),
            (None, Some(e)) => json!({ "error": e }),
            _ => panic!("{case}"),
        };
        let got = outcome(parse_message(&bytes_of(case)));
        if got != want {
            failures.push(format!("{}: want {want}, got {got}", case["comment"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn offers_are_paged_as_in_the_web_client() {
    let v = vectors();
    let id = v["id"].as_str().unwrap();
    for case in v["offers"].as_array().unwrap() {
        let files: Vec<OfferedFile> = case["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| OfferedFile {
                path: f["path"].as_str().unwrap().to_owned(),
                size: f["size"].as_u64().unwrap(),
            })
            .collect();
        let got = match offer_parts(id, &files) {
            Ok(parts) => json!({ "parts": serde_json::to_value(&parts).unwrap() }),
            Err(e) => json!({ "error": e.kind() }),
        };
        let want = match (case.get("parts"), case.get("error")) {
            (Some(p), None) => json!({ "parts": p }),
            (None, Some(e)) => json!({ "error": e }),
            _ => panic!("{case}"),
        };
        assert_eq!(got, want, "{}", case["comment"]);
        if let Ok(parts) = offer_parts(id, &files) {
            for p in parts {
                let text = p.to_json();
                assert!(
                    text.len() < tallow_peer::control::PART_BYTES,
                    "{}",
                    text.len()
                );
                assert_eq!(parse_message(text.as_bytes()), Ok(p));
            }
        }
    }
}

#[test]
fn frame_headers_as_in_the_web_client() {
    let v = vectors();
    for case in v["frames"]["encode"].as_array().unwrap() {
        let payload = hex::decode(case["payload"].as_str().unwrap()).unwrap();
        let frame = encode_frame(
            case["file"].as_u64().unwrap() as u32,
            case["offset"].as_u64().unwrap(),
            &payload,
        );
        assert_eq!(hex::encode(&frame), case["frame"].as_str().unwrap());
        let f = decode_frame(&frame).unwrap();
        assert_eq!(f.data, &payload[..]);
    }
    for case in v["frames"]["decode"].as_array().unwrap() {
        let mut buf = hex::decode(case["head"].as_str().unwrap()).unwrap();
        buf.resize(buf.len() + case["pad"].as_u64().unwrap() as usize, 0);
        let got = match decode_frame(&buf) {
            Ok(f) => json!({
                "file": f.file,
                "offset": f.offset,
                "data_len": f.data.len(),
                "data_head": hex::encode(&f.data[..f.data.len().min(8)]),
            }),
            Err(e) => json!({ "error": e.kind() }),
        };
        let mut want = case.clone();
        let w = want.as_object_mut().unwrap();
        for k in ["comment", "head", "pad"] {
            w.remove(k);
        }
        assert_eq!(got, want, "{}", case["comment"]);
    }
}

#[test]
fn records_seal_and_open_as_in_the_web_client() {
    let v = vectors();
    let r = &v["records"];
    let dk: [u8; 32] = hex::decode(r["dk"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let ty = |c: &Value| match c["type"].as_u64().unwrap() {
        1 => RecordType::Control,
        2 => RecordType::Data,
        t => panic!("type {t}"),
    };
    for (role, other) in [(Role::A, Role::B), (Role::B, Role::A)] {
        let key = if role == Role::A { "A" } else { "B" };
        let mut sealer = Records::new(&dk, role);
        let mut opener = Records::new(&dk, other);
        for case in r[key].as_array().unwrap() {
            let plain = hex::decode(case["plain"].as_str().unwrap()).unwrap();
            let record = sealer.seal(ty(case), &plain).unwrap();
            assert_eq!(hex::encode(&record), case["record"].as_str().unwrap());
            assert_eq!(opener.open(&record), Ok((ty(case), plain)));
        }
    }
    for case in r["refused"].as_array().unwrap() {
        let record = hex::decode(case["record"].as_str().unwrap()).unwrap();
        let err = Records::new(&dk, Role::B).open(&record).unwrap_err();
        assert_eq!(
            err.kind(),
            case["error"].as_str().unwrap(),
            "{}",
            case["comment"]
        );
    }
}

#[test]
fn records_are_strictly_in_order_per_direction() {
    let dk = [7u8; 32];
    let mut a = Records::new(&dk, Role::A);
    let mut b = Records::new(&dk, Role::B);
    let r0 = a.seal(RecordType::Data, b"one").unwrap();
    let r1 = a.seal(RecordType::Control, b"two").unwrap();
    assert_eq!(b.open(&r0).unwrap().1, b"one");
    // A replay takes the next counter and fails; nothing opens after it.
    assert_eq!(b.open(&r0).unwrap_err().kind(), "tampered");
    assert!(b.open(&r1).is_err());
    // The other direction has its own counter and key.
    let back = b.seal(RecordType::Control, b"three").unwrap();
    assert_eq!(
        a.open(&back).unwrap(),
        (RecordType::Control, b"three".to_vec())
    );
    assert!(
        Records::new(&dk, Role::A).open(&r0).is_err(),
        "own direction"
    );
    assert!(
        Records::new(&[8u8; 32], Role::B).open(&r0).is_err(),
        "another dk"
    );
}

#[test]
fn frames_round_trip_at_the_bounds() {
    let payload = vec![9u8; tallow_peer::control::MAX_PAYLOAD];
    let f = encode_frame(3, tallow_peer::control::MAX_SIZE, &payload);
    let d = decode_frame(&f).unwrap();
    assert_eq!((d.file, d.offset, d.data.len()), (3, (1 << 53) - 1, 65536));
    assert_eq!(
        decode_frame(&encode_frame(0, 0, &[])).unwrap_err().kind(),
        "bad_frame"
    );
}

#[test]
fn deep_nesting_and_long_input_do_not_overflow() {
    let id = "00112233445566aa";
    let deep = format!(
        r#"{{"kind":"accept","id":"{id}","x":{}{}}}"#,
        "[".repeat(500_000),
        "]".repeat(500_000)
    );
    assert!(parse_message(deep.as_bytes()).is_ok());
    let open = "[".repeat(500_000);
    assert_eq!(
        parse_message(open.as_bytes()).unwrap_err().kind(),
        "malformed"
    );
    let objs = "{\"a\":".repeat(200_000);
    assert_eq!(
        parse_message(objs.as_bytes()).unwrap_err().kind(),
        "malformed"
    );
}

#[test]
fn ack_parses_with_its_bytes_and_serialises_as_sent() {
    // docs/PROTOCOL.md, "Parsing a control record": `ack`: `bytes` in
    // 0..=2^53-1, as the other integer fields.
    let id = "00112233445566aa";
    let ack = |bytes: &str| format!(r#"{{"kind":"ack","id":"{id}","bytes":{bytes}}}"#);
    for (bytes, n) in [
        ("0", 0u64),
        ("4194304", 4 << 20),
        ("5.0", 5),
        ("5e0", 5),
        ("-0", 0),
        ("9007199254740991", (1 << 53) - 1),
    ] {
        let m = parse_message(ack(bytes).as_bytes()).unwrap_or_else(|e| panic!("{bytes}: {e}"));
        assert_eq!(m.kind(), "ack");
        assert_eq!(m.id(), id);
        // Serialised as the web client sends it, and back to the same.
        assert_eq!(m.to_json(), ack(&n.to_string()));
        assert_eq!(parse_message(m.to_json().as_bytes()), Ok(m));
    }
    // Extra fields are ignored; a repeated key counts by its last value.
    let m = parse_message(
        format!(r#"{{"kind":"ack","id":"{id}","bytes":1,"file":3,"bytes":2}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(m.to_json(), ack("2"));
    for bytes in [
        "1.5",
        "-1",
        "1e400",
        "9007199254740992",
        "\"5\"",
        "null",
        "true",
        "[5]",
        "{}",
    ] {
        assert_eq!(
            parse_message(ack(bytes).as_bytes()).unwrap_err().kind(),
            "malformed",
            "bytes {bytes}"
        );
    }
    let missing = format!(r#"{{"kind":"ack","id":"{id}"}}"#);
    assert_eq!(
        parse_message(missing.as_bytes()).unwrap_err().kind(),
        "malformed"
    );
    // The order of the checks: id before kind before fields.
    assert_eq!(
        parse_message(br#"{"kind":"ack","id":"00112233445566AA","bytes":"x"}"#)
            .unwrap_err()
            .kind(),
        "malformed"
    );
    assert_eq!(
        parse_message(format!(r#"{{"kind":"Ack","id":"{id}","bytes":1}}"#).as_bytes())
            .unwrap_err()
            .kind(),
        "unknown_type"
    );
    assert_eq!(tallow_peer::control::TRANSFER_KINDS.len(), 10);
    assert!(tallow_peer::control::TRANSFER_KINDS.contains(&"ack"));
}
