//! Pairing, forwarding, leaving and resuming, end to end over real sockets.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{pair, Client, Store};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn welcome_announces_version_limits_and_server_id(store: Store) {
    let server = store
        .start(&["--server-id", "node-a", "--max-frame-bytes", "1000"])
        .await;
    let c = Client::connect(server.local_addr()).await;
    let w = &c.welcome;
    assert_eq!(w["version"], 1);
    assert_eq!(w["server_id"], "node-a");
    assert_eq!(w["limits"]["max_frame_bytes"], 1000);
    for key in [
        "max_messages_per_sec",
        "ping_interval_secs",
        "idle_timeout_secs",
        "resume_grace_secs",
        "nameplate_ttl_secs",
        "max_queued_messages",
        "room_max_members",
        "room_ttl_secs",
        "room_max_ttl_secs",
    ] {
        assert!(
            w["limits"][key].as_u64().is_some_and(|v| v > 0),
            "{key}: {w}"
        );
    }
}

async fn create_join_pairs_both_seats_and_releases_the_nameplate(store: Store) {
    let server = store.start(&[]).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    let nameplate = created["nameplate"].as_str().unwrap().to_owned();
    assert!(nameplate.chars().all(|c| c.is_ascii_digit()), "{created}");
    assert_eq!(created["seat"], 0);
    assert_eq!(created["expires_in_secs"], 600);
    assert_eq!(created["resume_token"].as_str().unwrap().len(), 64);

    // While waiting, the creator cannot send yet.
    a.send(json!({"type": "send", "seq": 1, "body": "early"}))
        .await;
    a.expect_error("not_paired").await;

    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "join", "nameplate": nameplate}))
        .await;
    let joined = b.expect("joined").await;
    assert_eq!(joined["seat"], 1);
    assert_eq!(joined["session"], created["session"]);
    assert_ne!(joined["resume_token"], created["resume_token"]);
    let pb = b.expect("paired").await;
    let pa = a.expect("paired").await;
    assert_eq!(pa["session"], pb["session"]);
    assert_eq!(pa["seat"], 0);
    assert_eq!(pb["seat"], 1);
    assert!(pa["ice_servers"].is_array());

    // The nameplate is released: a third party is told the session is full.
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "join", "nameplate": nameplate}))
        .await;
    c.expect_error("session_full").await;
    let (_, metrics) = common::http_get(addr, "/metrics").await;
    assert!(metrics.contains("tallow_nameplates 0\n"), "{metrics}");
    assert!(metrics.contains("tallow_sessions 1\n"), "{metrics}");
}

async fn thousand_messages_each_way_arrive_in_order_exactly_once(store: Store) {
    let server = store.start(&["--max-messages-per-sec", "100000"]).await;
    let (a, b, _, _) = pair(server.local_addr()).await;
    let n = 1000;
    // a's seq 1 was the handshake's hello (see `pair`).
    common::exchange_both_ways(a, b, n).await;
    let (_, metrics) = common::http_get(server.local_addr(), "/metrics").await;
    assert!(
        metrics.contains("tallow_messages_forwarded_total 2001\n"),
        "{metrics}"
    );
}

async fn opaque_bodies_pass_through_unchanged(store: Store) {
    let server = store.start(&[]).await;
    let (mut a, mut b, _, _) = pair(server.local_addr()).await;
    let bodies = [
        String::new(),
        "{\"sdp\":\"v=0\\r\\n\"}".to_owned(),
        "ünïcødé ✓ 🔐".to_owned(),
        "A".repeat(60_000),
    ];
    for (i, body) in bodies.iter().enumerate() {
        a.send(json!({"type": "send", "seq": i + 2, "body": body}))
            .await;
        assert_eq!(a.expect("ack").await["seq"], i + 2);
        let m = b.expect("message").await;
        assert_eq!(m["body"].as_str().unwrap(), body);
    }
}

async fn resume_delivers_messages_queued_during_the_gap_exactly_once(store: Store) {
    let server = store.start(&[]).await;
    let addr = server.local_addr();
    let (a, mut b, created, _) = pair(addr).await;
    let mut a = a;

    // a sends 2..=4 (1 was the hello); b sends 1..=5 and a reads them all.
    for seq in 2..=4u64 {
        a.send(json!({"type": "send", "seq": seq, "body": format!("a{seq}")}))
            .await;
        a.expect("ack").await;
    }
    for seq in 2..=4u64 {
        assert_eq!(b.expect("message").await["seq"], seq);
    }
    for seq in 1..=5u64 {
        b.send(json!({"type": "send", "seq": seq, "body": format!("b{seq}")}))
            .await;
        b.expect("ack").await;
    }
    for seq in 1..=5u64 {
        assert_eq!(a.expect("message").await["seq"], seq);
    }

    // a's network drops without a close handshake.
    drop(a);
    b.expect("peer_away").await;

    // During the gap b keeps talking.
    for seq in 6..=10u64 {
        b.send(json!({"type": "send", "seq": seq, "body": format!("b{seq}")}))
            .await;
        b.expect("ack").await;
    }

    // a comes back with its token and the last seq it processed.
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 5}))
        .await;
    let r = a.expect("resumed").await;
    assert_eq!(r["session"], created["session"]);
    assert_eq!(r["seat"], 0);
    assert_eq!(r["paired"], true);
    assert_eq!(r["last_received"], 4, "the server holds a's sends up to 4");
    let mut seen = HashSet::new();
    for seq in 6..=10u64 {
        let m = a.expect("message").await;
        assert_eq!(m["seq"], seq);
        assert_eq!(m["body"], format!("b{seq}"));
        assert!(seen.insert(seq));
    }
    // Nothing else is queued: the next frame answers our ping.
    a.assert_alive().await;
    b.expect("peer_back").await;

    // a resends 4 (already stored: acknowledged, not forwarded again) and
    // goes on with 5.
    a.send(json!({"type": "send", "seq": 4, "body": "a4"}))
        .await;
    assert_eq!(a.expect("ack").await["seq"], 4);
    a.send(json!({"type": "send", "seq": 5, "body": "a5"}))
        .await;
    assert_eq!(a.expect("ack").await["seq"], 5);
    let m = b.expect("message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["body"].as_str()),
        (Some(5), Some("a5"))
    );
    b.assert_alive().await;
}

async fn resume_replays_unacknowledged_messages_a_client_lost_in_flight(store: Store) {
    let server = store.start(&[]).await;
    let addr = server.local_addr();
    let (a, mut b, created, _) = pair(addr).await;
    for seq in 1..=4u64 {
        b.send(json!({"type": "send", "seq": seq, "body": format!("b{seq}")}))
            .await;
        b.expect("ack").await;
    }
    // a never read them (they may have been lost with its connection).
    drop(a);
    b.expect("peer_away").await;
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 2}))
        .await;
    a.expect("resumed").await;
    for seq in 3..=4u64 {
        assert_eq!(a.expect("message").await["seq"], seq);
    }
    a.assert_alive().await;
}

async fn resuming_a_live_seat_supersedes_the_old_connection(store: Store) {
    let server = store.start(&[]).await;
    let addr = server.local_addr();
    let (mut a, _b, created, _) = pair(addr).await;
    let mut a2 = Client::connect(addr).await;
    a2.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}))
        .await;
    a2.expect("resumed").await;
    let reason = a.expect_close(4001).await;
    assert!(reason.contains("resumed"), "{reason}");
}

async fn leave_tells_the_peer_and_frees_the_seat(store: Store) {
    let server = store.start(&[]).await;
    let (mut a, mut b, created, _) = pair(server.local_addr()).await;
    b.send(json!({"type": "leave"})).await;
    b.expect("left").await;
    let v = a.expect("peer_left").await;
    assert_eq!(v["reason"], "left");
    // Both can start over on the same connection.
    a.send(json!({"type": "send", "seq": 1, "body": "x"})).await;
    a.expect_error("no_session").await;
    a.send(json!({"type": "create"})).await;
    a.expect("created").await;
    // Leaving again is answered the same way (leave is idempotent).
    b.send(json!({"type": "leave"})).await;
    b.expect("left").await;
    // The old token is gone with the session.
    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}))
        .await;
    c.expect_error("invalid_resume_token").await;
}

async fn a_peer_that_does_not_return_within_the_grace_period_has_left(store: Store) {
    let server = store.start(&["--resume-grace-secs", "1"]).await;
    let (a, mut b, created, _) = pair(server.local_addr()).await;
    drop(a);
    b.expect("peer_away").await;
    let v = b.expect("peer_left").await;
    assert_eq!(v["reason"], "timeout");
    let mut a = Client::connect(server.local_addr()).await;
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}))
        .await;
    a.expect_error("invalid_resume_token").await;
}

async fn unjoined_nameplates_expire(store: Store) {
    let server = store.start(&["--nameplate-ttl-secs", "1"]).await;
    let mut a = Client::connect(server.local_addr()).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    a.expect_error("nameplate_expired").await;
    let mut b = Client::connect(server.local_addr()).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    b.expect_error("unknown_nameplate").await;
    // The creator may open a new one right away.
    a.send(json!({"type": "create"})).await;
    a.expect("created").await;
}

async fn ping_is_answered_and_server_pings_keep_a_reading_client(store: Store) {
    let server = store
        .start(&["--ping-interval-secs", "1", "--idle-timeout-secs", "2"])
        .await;
    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));
    // Reading answers the server's pings automatically: 4 s is twice the
    // idle timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut pings = 0;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Ok(other) => panic!("connection ended: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(pings >= 2, "server pinged {pings} times");
    c.assert_alive().await;
}

async fn a_full_mailbox_pushes_back_on_the_sender(store: Store) {
    let server = store.start(&["--max-queued-messages", "3"]).await;
    let (mut a, mut b, _, _) = pair(server.local_addr()).await;
    for seq in 2..=4u64 {
        a.send(json!({"type": "send", "seq": seq, "body": "x"}))
            .await;
        a.expect("ack").await;
    }
    a.send(json!({"type": "send", "seq": 5, "body": "x"})).await;
    let e = a.expect_error("mailbox_full").await;
    assert_eq!(e["retryable"], true);
    for seq in 2..=4u64 {
        assert_eq!(b.expect("message").await["seq"], seq);
    }
    b.send(json!({"type": "ack", "seq": 4})).await;
    b.assert_alive().await;
    a.send(json!({"type": "send", "seq": 5, "body": "x"})).await;
    a.expect("ack").await;
    assert_eq!(b.expect("message").await["seq"], 5);
}

async fn a_peer_away_during_leave_gets_the_last_messages_and_the_news(store: Store) {
    let server = store.start(&["--resume-grace-secs", "2"]).await;
    let addr = server.local_addr();
    let (a, mut b, created, _) = pair(addr).await;
    drop(a);
    b.expect("peer_away").await;
    b.send(json!({"type": "send", "seq": 1, "body": "bye"}))
        .await;
    b.expect("ack").await;
    b.send(json!({"type": "leave"})).await;
    b.expect("left").await;
    // a comes back within its grace period: the message is there, and then
    // it learns that b left.
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}))
        .await;
    a.expect("resumed").await;
    // Not `peer_away` (the peer has left, not dropped): the last message,
    // then the news, at once rather than when b's grace runs out.
    assert_eq!(a.expect("message").await["body"], "bye");
    assert_eq!(a.expect("peer_left").await["reason"], "left");
    a.send(json!({"type": "send", "seq": 2, "body": "x"})).await;
    a.expect_error("no_session").await;
}

on_both_stores!(
    a_peer_away_during_leave_gets_the_last_messages_and_the_news,
    welcome_announces_version_limits_and_server_id,
    create_join_pairs_both_seats_and_releases_the_nameplate,
    thousand_messages_each_way_arrive_in_order_exactly_once,
    opaque_bodies_pass_through_unchanged,
    resume_delivers_messages_queued_during_the_gap_exactly_once,
    resume_replays_unacknowledged_messages_a_client_lost_in_flight,
    resuming_a_live_seat_supersedes_the_old_connection,
    leave_tells_the_peer_and_frees_the_seat,
    a_peer_that_does_not_return_within_the_grace_period_has_left,
    unjoined_nameplates_expire,
    ping_is_answered_and_server_pings_keep_a_reading_client,
    a_full_mailbox_pushes_back_on_the_sender,
);
