//! Every limit and every client error: the error code, and whether the
//! connection survives.

mod common;

use std::time::Duration;

use common::{pair, start, Client};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_survives() {
    let server = start(&[]).await;
    let mut c = Client::connect(server.local_addr()).await;
    for (frame, code) in [
        ("{not json", "bad_json"),
        ("", "bad_json"),
        (r#"{"type":"teleport"}"#, "unknown_type"),
        (r#"{"type":42}"#, "bad_message"),
        (r#"{"nameplate":"1"}"#, "bad_message"),
        (r#"[{"type":"create"}]"#, "bad_message"),
        (r#"{"type":"join"}"#, "bad_message"),
        (r#"{"type":"join","nameplate":7}"#, "bad_message"),
        (r#"{"type":"send","seq":"one","body":"x"}"#, "bad_message"),
    ] {
        c.send_text(frame).await;
        let e = c.expect_error(code).await;
        assert_eq!(e["retryable"], false, "{frame}: {e}");
    }
    c.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    c.expect_error("bad_message").await;
    c.assert_alive().await;
}

#[tokio::test]
async fn requests_out_of_state_get_errors() {
    let server = start(&[]).await;
    let addr = server.local_addr();
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "send", "seq": 1, "body": "x"})).await;
    c.expect_error("no_session").await;
    c.send(json!({"type": "ack", "seq": 1})).await;
    c.expect_error("no_session").await;
    // Leave is idempotent: without a seat it has nothing to do.
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
    c.send(json!({"type": "resume", "token": "00ff", "last_seq": 0}))
        .await;
    c.expect_error("invalid_resume_token").await;
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    c.send(json!({"type": "create"})).await;
    c.expect_error("already_in_session").await;
    c.send(json!({"type": "join", "nameplate": "5"})).await;
    c.expect_error("already_in_session").await;
    c.assert_alive().await;

    let (mut a, mut b, _, _) = pair(addr).await;
    // Sequence numbers must not skip (a's seq 1 was the hello).
    a.send(json!({"type": "send", "seq": 3, "body": "x"})).await;
    let e = a.expect_error("bad_sequence").await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("expected send seq 2"),
        "{e}"
    );
    // Acks cannot run ahead of what was delivered.
    b.send(json!({"type": "ack", "seq": 9})).await;
    b.expect_error("bad_sequence").await;
    a.assert_alive().await;
    b.assert_alive().await;
}

#[tokio::test]
async fn joining_unknown_or_malformed_nameplates_fails_cleanly() {
    let server = start(&[]).await;
    let mut c = Client::connect(server.local_addr()).await;
    for nameplate in ["999999", "0", "12a", "", "1234567890"] {
        c.send(json!({"type": "join", "nameplate": nameplate}))
            .await;
        c.expect_error("unknown_nameplate").await;
    }
    c.assert_alive().await;
}

#[tokio::test]
async fn frames_over_the_limit_are_refused_and_the_connection_survives() {
    // Room for the handshake's hello (about 1.8 KB), not for more.
    let server = start(&["--max-frame-bytes", "4096"]).await;
    let (mut a, mut b, _, _) = pair(server.local_addr()).await;
    let body = "x".repeat(4100);
    a.send(json!({"type": "send", "seq": 2, "body": body}))
        .await;
    let e = a.expect_error("frame_too_large").await;
    assert!(e["message"].as_str().unwrap().contains("4096"), "{e}");
    // Nothing was forwarded and seq 2 is still free.
    a.send(json!({"type": "send", "seq": 2, "body": "small"}))
        .await;
    a.expect("ack").await;
    assert_eq!(b.expect("message").await["body"], "small");
    a.assert_alive().await;
}

#[tokio::test]
async fn frames_far_over_the_limit_close_with_1009() {
    let server = start(&["--max-frame-bytes", "1024"]).await;
    let mut c = Client::connect(server.local_addr()).await;
    // Above the transport's hard cap (4x the limit, at least 64 KiB).
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(200_000));
    let _ = c.ws.send(Message::Text(huge.into())).await;
    c.expect_close(1009).await;
}

#[tokio::test]
async fn message_rate_is_limited_per_connection() {
    let server = start(&["--max-messages-per-sec", "5"]).await;
    let mut c = Client::connect(server.local_addr()).await;
    for _ in 0..20 {
        c.send(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    // 5 pongs from the burst, then one rate_limited error (errors are sent
    // at most once per second).
    for _ in 0..6 {
        let v = c.recv().await;
        match v["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => {
                assert_eq!(v["code"], "rate_limited");
                assert_eq!(v["retryable"], true);
                limited += 1;
            }
            _ => panic!("{v}"),
        }
    }
    assert_eq!((pongs, limited), (5, 1));
    // A second later the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.assert_alive().await;
}

#[tokio::test]
async fn a_client_that_keeps_flooding_is_closed_with_1008() {
    let server = start(&["--max-messages-per-sec", "1"]).await;
    let mut c = Client::connect(server.local_addr()).await;
    for _ in 0..1100 {
        if c.ws
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    loop {
        match c.next_event().await {
            common::Event::Closed(code, _) => {
                assert_eq!(code, 1008);
                break;
            }
            common::Event::Json(_) => continue,
        }
    }
}

#[tokio::test]
async fn sessions_per_ip_are_limited() {
    let server = start(&["--max-sessions-per-ip", "2"]).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    let mut nameplates = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(addr).await;
        c.send(json!({"type": "create"})).await;
        nameplates.push(c.expect("created").await["nameplate"].clone());
        held.push(c);
    }
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "create"})).await;
    let e = c.expect_error("too_many_sessions").await;
    assert_eq!(e["retryable"], true);
    c.send(json!({"type": "join", "nameplate": nameplates[1]}))
        .await;
    c.expect_error("too_many_sessions").await;
    // Leaving frees a slot.
    held[0].send(json!({"type": "leave"})).await;
    held[0].expect("left").await;
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
}

#[tokio::test]
async fn failed_joins_per_ip_are_limited() {
    let server = start(&["--max-failed-joins-per-ip", "3"]).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;

    let mut guesser = Client::connect(addr).await;
    for guess in ["90000001", "90000002", "90000003"] {
        guesser
            .send(json!({"type": "join", "nameplate": guess}))
            .await;
        guesser.expect_error("unknown_nameplate").await;
    }
    // Even the right code is refused now: guessing is over for a while.
    guesser
        .send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    let e = guesser.expect_error("too_many_failed_joins").await;
    assert_eq!(e["retryable"], true);
    // The count is per address, not per connection.
    let mut again = Client::connect(addr).await;
    again
        .send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    again.expect_error("too_many_failed_joins").await;
}

#[tokio::test]
async fn total_connections_are_limited() {
    let server = start(&["--max-connections", "2"]).await;
    let addr = server.local_addr();
    let _a = Client::connect(addr).await;
    let b = Client::connect(addr).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal"))
        .await
        .unwrap();
    let mut third = Client {
        ws: {
            use futures_util::StreamExt;
            let first = ws.next().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["code"], "server_full");
            ws
        },
        welcome: json!(null),
    };
    third.expect_close(1013).await;
    // A slot frees when a client leaves.
    b.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = Client::connect(addr).await;
    d.assert_alive().await;
}

#[tokio::test]
async fn origins_outside_allowed_origins_are_refused() {
    let server = start(&[
        "--allowed-origins",
        "https://tallow.example,http://localhost:8080",
    ])
    .await;
    let addr = server.local_addr();
    let err = Client::connect_with(addr, &[("origin", "https://evil.example")])
        .await
        .err()
        .expect("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 403);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("origin_not_allowed"), "{body}");
        }
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    let mut ok = Client::connect_with(addr, &[("origin", "https://tallow.example")])
        .await
        .expect("allowed origin");
    ok.assert_alive().await;
    // Native clients send no Origin header and are not browsers to protect.
    let mut native = Client::connect(addr).await;
    native.assert_alive().await;
    let (_, metrics) = common::http_get(addr, "/metrics").await;
    assert!(
        metrics.contains(r#"tallow_errors_total{code="origin_not_allowed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn silent_clients_are_closed_after_the_idle_timeout() {
    let server = start(&["--ping-interval-secs", "1", "--idle-timeout-secs", "2"]).await;
    let mut c = Client::connect(server.local_addr()).await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reason = c.expect_close(4000).await;
    assert_eq!(reason, "idle timeout");
}

#[tokio::test]
async fn every_error_code_is_counted_in_metrics() {
    let server = start(&[]).await;
    let mut c = Client::connect(server.local_addr()).await;
    c.send_text("nope").await;
    c.expect_error("bad_json").await;
    let (status, metrics) = common::http_get(server.local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"tallow_errors_total{code="bad_json"} 1"#),
        "{metrics}"
    );
    for code in tallow_signaling::protocol::ErrorCode::ALL {
        assert!(
            metrics.contains(&format!("code=\"{}\"", code.as_str())),
            "{} missing",
            code.as_str()
        );
    }
}

#[tokio::test]
async fn thousands_of_mangled_frames_never_break_the_server() {
    use rand::{RngExt, SeedableRng};
    let server = start(&["--max-messages-per-sec", "100000"]).await;
    let addr = server.local_addr();
    let (mut a, mut b, created, _) = pair(addr).await;
    let seeds = [
        r#"{"type":"create"}"#.to_owned(),
        format!(r#"{{"type":"join","nameplate":{}}}"#, created["nameplate"]),
        r#"{"type":"send","seq":1,"body":"hello"}"#.to_owned(),
        r#"{"type":"ack","seq":1}"#.to_owned(),
        r#"{"type":"resume","token":"ab","last_seq":18446744073709551615}"#.to_owned(),
        r#"{"type":"ping","id":1}"#.to_owned(),
        r#"{"type":"leave"}"#.to_owned(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a11_0e5e);
    for i in 0..3000 {
        let mut bytes = seeds[i % seeds.len()].clone().into_bytes();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..4) {
                0 => bytes[at] = rng.random(),
                1 => bytes.truncate(at),
                2 => bytes.insert(at, b"{}[]\",:0\\x"[rng.random_range(0..10)]),
                _ => {
                    bytes.remove(at);
                }
            }
            if bytes.is_empty() {
                bytes.push(b'{');
            }
        }
        // Text frames must be UTF-8; invalid byte strings go as binary.
        let frame = match String::from_utf8(bytes) {
            Ok(s) => Message::Text(s.into()),
            Err(e) => Message::Binary(e.into_bytes().into()),
        };
        if b.ws.send(frame).await.is_err() {
            panic!("server dropped the connection after {i} frames");
        }
    }
    // Everything was answered or absorbed, in order: the marker ping comes
    // back after the replies to every mangled frame.
    for (c, id) in [(&mut b, 4242), (&mut a, 4243)] {
        c.send(json!({"type": "ping", "id": id})).await;
        let mut replies = 0;
        loop {
            let v = c.recv().await;
            if v["type"] == "pong" && v["id"] == id {
                break;
            }
            replies += 1;
            assert!(replies <= 3000, "more replies than frames sent");
        }
    }
    let (status, _) = common::http_get(addr, "/api/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sessions_without_the_post_quantum_hello_are_refused() {
    let server = start(&[]).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    let sid = created["session"].as_str().unwrap().to_owned();
    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    b.expect("joined").await;
    b.expect("paired").await;
    a.expect("paired").await;

    // A plain first message from the creator: refused, nothing forwarded.
    a.send(json!({"type": "send", "seq": 1, "body": "{\"t\":\"hello\"}"}))
        .await;
    a.expect_error("pq_required").await;
    // A hello that offers a classical suite: refused as a downgrade.
    let hello: serde_json::Value = serde_json::from_str(&common::hello_body(&sid)).unwrap();
    let mut classical = hello.clone();
    classical["suite"] = json!("tallow-v1/x25519/cpace-ristretto255/hkdf-sha256/aes256gcm");
    a.send(json!({"type": "hello", "seq": 1, "body": classical.to_string()}))
        .await;
    let e = a.expect_error("pq_required").await;
    assert!(e["message"].as_str().unwrap().contains("mlkem768"), "{e}");
    // An encapsulation key with a coefficient >= q fails the FIPS 203 check.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ek = b64.decode(hello["ek"].as_str().unwrap()).unwrap();
    ek[0] = 0xff;
    ek[1] |= 0x0f;
    let mut bad = hello.clone();
    bad["ek"] = json!(b64.encode(&ek));
    a.send(json!({"type": "hello", "seq": 1, "body": bad.to_string()}))
        .await;
    a.expect_error("bad_pq_key").await;
    let mut short = hello.clone();
    short["ek"] = json!(b64.encode(&ek[..1000]));
    a.send(json!({"type": "hello", "seq": 1, "body": short.to_string()}))
        .await;
    a.expect_error("bad_pq_key").await;
    a.send(json!({"type": "hello", "seq": 1, "body": "not json"}))
        .await;
    a.expect_error("bad_pq_key").await;
    // Only the creator opens the handshake.
    b.send(json!({"type": "hello", "seq": 1, "body": hello.to_string()}))
        .await;
    b.expect_error("bad_message").await;
    // Nothing reached b; the valid hello goes through.
    a.send(json!({"type": "hello", "seq": 1, "body": hello.to_string()}))
        .await;
    a.expect("ack").await;
    let m = b.expect("message").await;
    assert_eq!(m["seq"], 1);
    assert_eq!(m["body"], hello.to_string());
}

#[tokio::test]
async fn readiness_includes_the_ml_kem_self_test() {
    let server = start(&[]).await;
    let (status, body) = common::http_get(server.local_addr(), "/api/ready").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"]["mlkem_self_test"], "ok");
}
