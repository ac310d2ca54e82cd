//! Faults and abuse found by review (issue 8): each test failed on the code
//! before its fix. Real sockets, a real redis-server where the store matters.

mod common;

use std::time::Duration;

use common::{pair, start, Client, Store};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

on_both_stores!(
    seats_of_dropped_connections_still_count_against_their_address,
    mailboxes_are_capped_by_bytes,
    a_creator_who_dropped_before_the_join_gets_the_ice_servers_on_resume,
    resume_beyond_what_was_delivered_is_refused_and_skips_nothing,
    leave_is_idempotent,
);

/// Point 2: closing a connection must not free its address's slot while
/// the seat lives on for the resume grace.
async fn seats_of_dropped_connections_still_count_against_their_address(store: Store) {
    let env = store.start(&["--max-sessions-per-ip", "3"]).await;
    let addr = env.local_addr();
    let mut created = 0;
    let mut refused = 0;
    for _ in 0..12 {
        let mut c = Client::connect(addr).await;
        c.send(json!({"type": "create"})).await;
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("created") => created += 1,
            Some("error") => {
                assert_eq!(v["code"], "too_many_sessions", "{v}");
                assert_eq!(v["retryable"], true);
                refused += 1;
            }
            _ => panic!("unexpected {v}"),
        }
        drop(c);
        // Let the server see the drop and detach the seat.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!((created, refused), (3, 9));
}

/// Point 2: a seat's mailbox is capped in bytes as well as in messages.
async fn mailboxes_are_capped_by_bytes(store: Store) {
    let env = store.start(&["--max-queued-bytes", "200000"]).await;
    let (mut a, b, _, _) = pair(env.local_addr()).await;
    let big = "x".repeat(60_000);
    // b never reads: a's messages pile up in b's mailbox (a's seq 1 was the
    // hello, which b acknowledged).
    let mut stored = 0;
    let mut seq = 2;
    loop {
        a.send(json!({"type": "send", "seq": seq, "body": big}))
            .await;
        let v = a.recv().await;
        if v["type"] == "ack" {
            stored += 1;
            seq += 1;
            assert!(stored < 10, "200 kB cap not enforced");
            continue;
        }
        assert_eq!(v["code"], "mailbox_full", "{v}");
        assert_eq!(v["retryable"], true);
        break;
    }
    assert_eq!(
        stored, 3,
        "three 60 kB bodies fit under 200 kB, a fourth does not"
    );
    drop(b);
}

/// Point 3: the creator learns it is paired (with the ICE servers) when it
/// resumes after the joiner arrived; the joiner learns the creator was away.
async fn a_creator_who_dropped_before_the_join_gets_the_ice_servers_on_resume(store: Store) {
    let env = store
        .start(&[
            "--turn-urls",
            "turn:127.0.0.1:3478?transport=udp",
            "--turn-secret",
            "s3cret",
        ])
        .await;
    let addr = env.local_addr();
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    b.expect("joined").await;
    let paired = b.expect("paired").await;
    assert_eq!(
        paired["ice_servers"][0]["urls"][0],
        "turn:127.0.0.1:3478?transport=udp"
    );
    // The creator is not connected: the joiner is told so.
    b.expect("peer_away").await;

    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}))
        .await;
    let r = a.expect("resumed").await;
    assert_eq!(r["paired"], true, "{r}");
    let ice = &r["ice_servers"];
    assert_eq!(ice[0]["urls"], paired["ice_servers"][0]["urls"], "{r}");
    assert!(
        ice[0]["username"].as_str().is_some_and(|u| !u.is_empty()),
        "{r}"
    );
    assert!(
        ice[0]["credential"].as_str().is_some_and(|u| !u.is_empty()),
        "{r}"
    );
    b.expect("peer_back").await;
    // Now the handshake can start.
    common::open_handshake(&mut a, &mut b, created["session"].as_str().unwrap()).await;
}

/// Point 9: a resume that claims more than was delivered is refused rather
/// than silently skipping messages.
async fn resume_beyond_what_was_delivered_is_refused_and_skips_nothing(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let (mut a, mut b, created, _) = pair(addr).await;
    for seq in 1..=2u64 {
        b.send(json!({"type": "send", "seq": seq, "body": format!("b{seq}")}))
            .await;
        b.expect("ack").await;
    }
    for seq in 1..=2u64 {
        assert_eq!(a.expect("message").await["seq"], seq);
    }
    drop(a);
    b.expect("peer_away").await;
    for seq in 3..=4u64 {
        b.send(json!({"type": "send", "seq": seq, "body": format!("b{seq}")}))
            .await;
        b.expect("ack").await;
    }
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 9}))
        .await;
    let e = a.expect_error("bad_sequence").await;
    assert!(e["message"].as_str().unwrap().contains('4'), "{e}");
    // The seat is still there, with everything after what a really has.
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 2}))
        .await;
    a.expect("resumed").await;
    for seq in 3..=4u64 {
        let m = a.expect("message").await;
        assert_eq!(m["body"], format!("b{seq}"));
    }
    a.assert_alive().await;
}

/// Point 4: `leave` twice, or without a seat, is answered `left`.
async fn leave_is_idempotent(store: Store) {
    let env = store.start(&[]).await;
    let (mut a, mut b, _, _) = pair(env.local_addr()).await;
    a.send(json!({"type": "leave"})).await;
    a.expect("left").await;
    a.send(json!({"type": "leave"})).await;
    a.expect("left").await;
    assert_eq!(b.expect("peer_left").await["reason"], "left");
    let mut c = Client::connect(env.local_addr()).await;
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
}

/// Point 4: a leave that the store could not record is not forgotten: the
/// retry succeeds and the peer is told, and no seat is left behind.
#[tokio::test]
async fn a_leave_during_a_redis_stall_is_retried_and_leaves_no_ghost() {
    let env = Store::Redis.start(&[]).await;
    let redis = env.redis.as_ref().unwrap();
    let (mut a, mut b, _, _) = pair(env.local_addr()).await;
    redis.stop();
    a.send(json!({"type": "leave"})).await;
    let e = a.expect_error("presence_unavailable").await;
    assert_eq!(e["retryable"], true);
    redis.cont();
    a.send(json!({"type": "leave"})).await;
    a.expect("left").await;
    assert_eq!(b.expect("peer_left").await["reason"], "left");
    // b's own leave went through as part of peer_left: nothing remains.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sessions: Vec<String> = redis
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("tallow:s:") || k.starts_with("tallow:tok:"))
        .collect();
    assert!(sessions.is_empty(), "ghost records: {sessions:?}");
}

/// Point 6: binary frames go through the rate limiter like text frames.
#[tokio::test]
async fn binary_floods_are_rate_limited_and_cut_off() {
    let server = start(&["--max-messages-per-sec", "10"]).await;
    let c = Client::connect(server.local_addr()).await;
    let mut errors = 0;
    let (mut sink, mut stream) = c.ws.split();
    let writer = tokio::spawn(async move {
        for _ in 0..1500 {
            if sink
                .send(Message::Binary(vec![0u8; 8].into()))
                .await
                .is_err()
            {
                break;
            }
        }
        sink
    });
    let close = loop {
        let f = tokio::time::timeout(common::WAIT, stream.next())
            .await
            .expect("a frame");
        match f {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["type"], "error");
                errors += 1;
            }
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let _ = writer.await;
    assert_eq!(close, 1008);
    assert!(errors <= 12, "a flood is not echoed back: {errors} errors");
}

/// Point 7: concurrent failed joins cannot overshoot the limit by racing
/// between the check and the record.
#[tokio::test]
async fn concurrent_bad_joins_cannot_overshoot_the_failed_join_limit() {
    let env = Store::Redis
        .start(&[
            "--max-failed-joins-per-ip",
            "10",
            "--max-sessions-per-ip",
            "100",
        ])
        .await;
    let addr = env.local_addr();
    let mut clients = Vec::new();
    for _ in 0..60 {
        clients.push(Client::connect(addr).await);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(json!({"type": "join", "nameplate": format!("8{i:07}")}))
            .await;
    }
    let mut unknown = 0;
    let mut limited = 0;
    for c in &mut clients {
        let v = c.expect("error").await;
        match v["code"].as_str() {
            Some("unknown_nameplate") => unknown += 1,
            Some("too_many_failed_joins") => limited += 1,
            _ => panic!("{v}"),
        }
    }
    assert_eq!((unknown, limited), (10, 50));
}

/// Point 9: during an outage, idle connections are not sent errors they
/// did not ask for.
#[tokio::test]
async fn an_outage_sends_no_unsolicited_errors() {
    let env = Store::Redis.start(&["--ping-interval-secs", "1"]).await;
    let redis = env.redis.as_ref().unwrap();
    let (mut a, mut b, _, _) = pair(env.local_addr()).await;
    redis.stop();
    let mut frames = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(f) = tokio::time::timeout_at(until, a.ws.next()).await {
        if let Some(Ok(Message::Text(t))) = f {
            frames.push(t.to_string());
        }
    }
    redis.cont();
    assert!(frames.is_empty(), "unsolicited: {frames:?}");
    a.assert_alive().await;
    b.assert_alive().await;
}

/// Point 9: the in-memory store loses sessions with the process, so its
/// shutdown does not promise a resume.
#[tokio::test]
async fn shutdown_of_an_in_memory_node_does_not_promise_a_resume() {
    let server = start(&[]).await;
    let addr = server.local_addr();
    let (mut a, _b, _, _) = pair(addr).await;
    let done = tokio::spawn(server.shutdown(Duration::from_secs(5)));
    let reason = a.expect_close(1001).await;
    assert!(!reason.contains("resume"), "{reason}");
    assert!(done.await.unwrap());
}

/// Point 2: per-address caps on concurrent connections and on the upgrade
/// rate, answered before the upgrade with 429.
#[tokio::test]
async fn connections_and_upgrades_per_address_are_capped() {
    let server = start(&[
        "--max-connections-per-ip",
        "3",
        "--max-upgrades-per-ip-per-min",
        "100",
    ])
    .await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(addr).await);
    }
    let refused = Client::connect_with(addr, &[])
        .await
        .err()
        .expect("refused");
    assert_http_status(refused, 429);
    held.pop().unwrap().close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.push(Client::connect(addr).await);

    let server = start(&["--max-upgrades-per-ip-per-min", "5"]).await;
    let addr = server.local_addr();
    for _ in 0..5 {
        Client::connect(addr).await.close().await;
    }
    let refused = Client::connect_with(addr, &[])
        .await
        .err()
        .expect("refused");
    assert_http_status(refused, 429);
}

fn assert_http_status(e: tokio_tungstenite::tungstenite::Error, status: u16) {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status().as_u16(), status);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("expected HTTP {status}, got {other}"),
    }
}

/// Point 2: IPv6 clients are counted by their /64 (behind a trusted proxy
/// here, so that the test can pick the addresses).
#[tokio::test]
async fn ipv6_addresses_in_one_prefix_share_their_limits() {
    let server = start(&[
        "--trust-forwarded-for",
        "true",
        "--max-sessions-per-ip",
        "2",
    ])
    .await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for host in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"] {
        let mut c = Client::connect_with(addr, &[("x-forwarded-for", host)])
            .await
            .unwrap();
        c.send(json!({"type": "create"})).await;
        c.expect("created").await;
        held.push(c);
    }
    let mut c = Client::connect_with(addr, &[("x-forwarded-for", "2001:db8:1:2:abcd::7")])
        .await
        .unwrap();
    c.send(json!({"type": "create"})).await;
    c.expect_error("too_many_sessions").await;
    // Another /64 is another address.
    let mut d = Client::connect_with(addr, &[("x-forwarded-for", "2001:db8:1:3::1")])
        .await
        .unwrap();
    d.send(json!({"type": "create"})).await;
    d.expect("created").await;
}

/// Point 9: an unparsable last X-Forwarded-For entry does not hand the
/// choice of address to the client (the entries before it are its own).
#[tokio::test]
async fn a_garbled_forwarded_for_entry_does_not_fall_back_to_a_client_chosen_one() {
    let server = start(&[
        "--trust-forwarded-for",
        "true",
        "--max-sessions-per-ip",
        "1",
    ])
    .await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    // Each client claims a different address before the garbage entry; all
    // of them must count as the one address the proxy really saw.
    for (i, ok) in [(1, true), (2, false)] {
        let xff = format!("198.51.100.{i}, not-an-address");
        let mut c = Client::connect_with(addr, &[("x-forwarded-for", xff.as_str())])
            .await
            .unwrap();
        c.send(json!({"type": "create"})).await;
        if ok {
            c.expect("created").await;
        } else {
            c.expect_error("too_many_sessions").await;
        }
        held.push(c);
    }
}

/// Point 12: tallow-server sends the security headers itself.
#[tokio::test]
async fn every_response_carries_security_headers() {
    let server = start(&[]).await;
    for path in ["/", "/dist/app.js", "/api/health", "/nope"] {
        let url = format!("http://{}{path}", server.local_addr());
        let resp = reqwest::get(&url).await.unwrap();
        let h = resp.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        for refused in ["'unsafe-eval'", "'unsafe-inline'", "*"] {
            assert!(!csp.contains(refused), "{path}: {csp}");
        }
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }
}

/// Point 1, one node: a Redis stall longer than the node TTL must not make
/// the node sweep its own seats.
#[tokio::test]
async fn seats_are_not_reclaimed_from_a_live_node_by_its_own_sweep() {
    let env = Store::Redis.start(&["--resume-grace-secs", "3"]).await;
    let redis = env.redis.as_ref().unwrap();
    let (a, b, _, _) = pair(env.local_addr()).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.cont();
    common::settle_and_check(a, b).await;
}

/// Plain HTTP has the same deadline for request heads as HTTPS: a silent
/// connection, one dribbling a head, and a kept-alive one that goes quiet
/// after a response are all closed; a WebSocket, once upgraded, is not.
#[tokio::test]
async fn request_heads_have_a_deadline_on_plain_http_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(&["--header-timeout-secs", "1"]).await;
    let addr = server.local_addr();
    let closed_within = |mut s: tokio::net::TcpStream, d: Duration| async move {
        let mut buf = vec![0u8; 4096];
        tokio::time::timeout(d, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    };
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut ws = Client::connect(addr).await;
    let (a, b, c) = tokio::join!(
        closed_within(silent, Duration::from_secs(5)),
        closed_within(partial, Duration::from_secs(5)),
        closed_within(kept, Duration::from_secs(5)),
    );
    assert!(a, "a silent connection outlived the head deadline");
    assert!(b, "a partial head outlived the head deadline");
    assert!(
        c,
        "a quiet kept-alive connection outlived the head deadline"
    );
    // The upgraded WebSocket is past heads: it still answers.
    ws.send(json!({"type": "create"})).await;
    ws.expect("created").await;
}
