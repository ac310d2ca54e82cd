//! The handshake end to end in Rust, its failure modes, and the shared test
//! vectors (peer/vectors/handshake-v1.json), which the JavaScript tests
//! check too.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tallow_peer::{HandshakeError, Initiator, Message, Randomness, Responder, SUITE};

const CODE: &str = "7-amber-falcon-river";
const SID: &str = "9c1e04a2b7d14f60a1b2c3d4e5f60718";

fn fixed(tag: u8) -> Randomness {
    let fill =
        |n: usize, k: u8| -> Vec<u8> { (0..n).map(|i| (i as u8).wrapping_mul(31) ^ k).collect() };
    Randomness {
        mlkem_seed: fill(64, tag).try_into().unwrap(),
        mlkem_m: fill(32, tag ^ 0x55).try_into().unwrap(),
        x25519: fill(32, tag ^ 0xaa).try_into().unwrap(),
        cpace: fill(64, tag ^ 0x0f).try_into().unwrap(),
    }
}

fn randomness_json(r: &Randomness) -> Value {
    json!({
        "mlkem_seed": hex::encode(r.mlkem_seed),
        "mlkem_m": hex::encode(r.mlkem_m),
        "x25519": hex::encode(r.x25519),
        "cpace": hex::encode(r.cpace),
    })
}

#[test]
fn both_sides_agree_and_talk_sealed() {
    let (a, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    // Case and surrounding blanks do not matter.
    let (b, reply) =
        Responder::respond(" 7-Amber-Falcon-River ", SID, &hello, &Randomness::fresh()).unwrap();
    let (mut sa, confirm) = a.finish(&reply).unwrap();
    let mut sb = b.finish(&confirm).unwrap();
    assert_eq!(sa.verification_words(), sb.verification_words());
    assert_eq!(sa.verification_words().len(), 4);
    for i in 0..3 {
        let m = sa.seal(format!("a{i}").as_bytes());
        assert_eq!(sb.open(&m).unwrap(), format!("a{i}").as_bytes());
        let m = sb.seal(b"b");
        assert_eq!(sa.open(&m).unwrap(), b"b");
    }
}

#[test]
fn a_wrong_code_fails_confirmation_on_both_sides() {
    let (a, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    let (b, reply) =
        Responder::respond("7-amber-falcon-rivet", SID, &hello, &Randomness::fresh()).unwrap();
    assert!(matches!(
        a.finish(&reply),
        Err(HandshakeError::ConfirmationFailed)
    ));
    // And B, given a confirm from anyone else, fails too.
    let bogus = Message::Confirm {
        mac: B64.encode([0u8; 32]),
    };
    assert!(matches!(
        b.finish(&bogus),
        Err(HandshakeError::ConfirmationFailed)
    ));
}

#[test]
fn tampered_handshake_messages_fail() {
    // A swapped X25519 key in hello: B computes another transcript than A.
    let (a, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    let (_, other) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    let (Message::Hello { suite, ek, y, .. }, Message::Hello { x: other_x, .. }) = (hello, other)
    else {
        unreachable!()
    };
    let swapped = Message::Hello {
        suite,
        ek,
        x: other_x,
        y,
    };
    let (_, reply) = Responder::respond(CODE, SID, &swapped, &Randomness::fresh()).unwrap();
    assert!(matches!(
        a.finish(&reply),
        Err(HandshakeError::ConfirmationFailed)
    ));

    // A flipped bit in the ML-KEM ciphertext of reply.
    let (a, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    let (_, reply) = Responder::respond(CODE, SID, &hello, &Randomness::fresh()).unwrap();
    let Message::Reply {
        suite,
        ct,
        x,
        y,
        mac,
    } = reply
    else {
        unreachable!()
    };
    let mut ct_bytes = B64.decode(&ct).unwrap();
    ct_bytes[17] ^= 1;
    let bad = Message::Reply {
        suite,
        ct: B64.encode(ct_bytes),
        x,
        y,
        mac,
    };
    assert!(matches!(
        a.finish(&bad),
        Err(HandshakeError::ConfirmationFailed)
    ));
}

#[test]
fn sealed_messages_refuse_tampering_and_replay() {
    let (a, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    let (b, reply) = Responder::respond(CODE, SID, &hello, &Randomness::fresh()).unwrap();
    let (mut sa, confirm) = a.finish(&reply).unwrap();
    let mut sb = b.finish(&confirm).unwrap();
    let m0 = sa.seal(b"offer");
    let Message::Sealed { n, c } = m0.clone() else {
        unreachable!()
    };
    let mut bytes = B64.decode(&c).unwrap();
    bytes[0] ^= 0x80;
    let tampered = Message::Sealed {
        n,
        c: B64.encode(bytes),
    };
    assert_eq!(sb.open(&tampered), Err(HandshakeError::Tampered));
    assert_eq!(sb.open(&m0).unwrap(), b"offer");
    assert_eq!(
        sb.open(&m0),
        Err(HandshakeError::Replay {
            expected: 1,
            got: 0
        })
    );
    let m1 = sa.seal(b"candidate");
    let m2 = sa.seal(b"candidate 2");
    assert_eq!(
        sb.open(&m2),
        Err(HandshakeError::Replay {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(sb.open(&m1).unwrap(), b"candidate");
}

#[test]
fn a_downgraded_suite_is_refused() {
    let (_, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    let Message::Hello { ek, x, y, .. } = hello else {
        unreachable!()
    };
    let downgraded = Message::Hello {
        suite: "tallow-v1/x25519/cpace-ristretto255/hkdf-sha256/aes256gcm".into(),
        ek,
        x,
        y,
    };
    assert!(matches!(
        Responder::respond(CODE, SID, &downgraded, &Randomness::fresh()),
        Err(HandshakeError::Downgrade(_))
    ));
}

#[test]
fn encapsulation_keys_get_the_fips_203_check() {
    let (_, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    let Message::Hello { suite, ek, x, y } = hello else {
        unreachable!()
    };
    let mut bytes = B64.decode(&ek).unwrap();
    assert!(tallow_peer::check_encapsulation_key(&bytes).is_ok());
    // First coefficient = 4095 >= q = 3329.
    bytes[0] = 0xff;
    bytes[1] |= 0x0f;
    assert!(tallow_peer::check_encapsulation_key(&bytes).is_err());
    assert!(tallow_peer::check_encapsulation_key(&bytes[..1000]).is_err());
    let bad = Message::Hello {
        suite,
        ek: B64.encode(&bytes),
        x,
        y,
    };
    assert!(matches!(
        Responder::respond(CODE, SID, &bad, &Randomness::fresh()),
        Err(HandshakeError::Malformed(_))
    ));
}

/// Regenerate with `TALLOW_WRITE_VECTORS=1 cargo test -p tallow-peer --test handshake vectors`.
#[test]
fn vectors_match_the_file() {
    let (ra, rb) = (fixed(1), fixed(2));
    let (a, hello) = Initiator::start(CODE, SID, &ra).unwrap();
    let (b, reply) = Responder::respond(CODE, SID, &hello, &rb).unwrap();
    let (mut sa, confirm) = a.finish(&reply).unwrap();
    let mut sb = b.finish(&confirm).unwrap();
    let sealed_a = sa.seal(b"hello from A");
    let sealed_b = sb.seal(b"hello from B");
    let v = json!({
        "suite": SUITE,
        "code": CODE,
        "sid": SID,
        "randomness_a": randomness_json(&ra),
        "randomness_b": randomness_json(&rb),
        "hello": serde_json::to_value(&hello).unwrap(),
        "reply": serde_json::to_value(&reply).unwrap(),
        "confirm": serde_json::to_value(&confirm).unwrap(),
        "words": sa.verification_words(),
        "sealed_a_to_b": {"plaintext": "hello from A", "message": serde_json::to_value(&sealed_a).unwrap()},
        "sealed_b_to_a": {"plaintext": "hello from B", "message": serde_json::to_value(&sealed_b).unwrap()},
        "wrong_code": "7-amber-falcon-rivet",
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/handshake-v1.json");
    let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
    if std::env::var_os("TALLOW_WRITE_VECTORS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let stored =
        std::fs::read_to_string(path).expect("vectors file (TALLOW_WRITE_VECTORS=1 to create)");
    assert_eq!(stored, text, "the handshake no longer matches its vectors");
    assert_eq!(
        sb.verification_words(),
        v["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
}
