//! Adversarial review of the issue-8 hardening: faults at awkward moments,
//! replays, hostile inputs and accounting drift, each against real
//! components (a real redis-server, real tallow-server, real WebSocket
//! clients). Every test here states the behaviour the protocol promises;
//! the ones that fail are the findings of the review.

mod common;

use std::time::{Duration, Instant};

use common::{pair, Client, Event, Store};
use serde_json::json;

on_both_stores!(a_peer_that_resumes_after_its_partner_left_is_told_peer_left_not_peer_away,);

/// Every event (JSON or close) a client receives within `d`.
async fn events_for(c: &mut Client, d: Duration) -> Vec<String> {
    let until = tokio::time::Instant::now() + d;
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return seen,
            e = c.next_event() => match e {
                Event::Json(v) => seen.push(v["type"].as_str().unwrap_or("?").to_owned()),
                Event::Closed(code, r) => {
                    seen.push(format!("closed {code} {r}"));
                    return seen;
                }
            },
        }
    }
}

async fn redis_cmd<T: ::redis::FromRedisValue>(
    redis: &common::RedisServer,
    args: &[&str],
) -> T {
    let mut conn = redis.conn().await;
    let mut cmd = ::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// Run every presence script once, so that Redis has them cached (as it has
/// on any node that served a while): a script first sent during a fault
/// fails with NOSCRIPT and never runs, which would hide the fault.
async fn warm_up(addr: std::net::SocketAddr) {
    let (mut a, b, created, _) = pair(addr).await;
    drop(b);
    a.expect("peer_away").await;
    a.send(json!({"type": "leave"})).await;
    a.expect("left").await;
    drop(a);
    let mut a2 = Client::connect(addr).await;
    a2.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}))
        .await;
    a2.expect_error("invalid_resume_token").await;
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
}

/// Load the create script only (one seat, given back at once).
async fn warm_up_create(addr: std::net::SocketAddr) {
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
}

/// A `resume` whose reply is lost in a Redis stall (the client is told
/// `presence_unavailable` and gives up on that connection) must not leave
/// the seat held by a connection that no longer exists. The script runs when
/// Redis wakes up: the seat's owner becomes the dead connection, the peer is
/// told `peer_back`, and since the node is alive and keeps refreshing it,
/// the seat is never detached and the session never times out.
///
/// Expected: within the grace period (3 s) plus slack, the peer hears that
/// the session ended (`peer_left`), or at least that its partner is away.
#[tokio::test]
async fn a_resume_lost_in_a_redis_stall_does_not_leave_a_ghost_seat_for_ever() {
    // Every key TTL is max(nameplate TTL, grace) + 10 s = 15 s here.
    let env = Store::Redis
        .start(&["--resume-grace-secs", "3", "--nameplate-ttl-secs", "5"])
        .await;
    let redis = env.redis.as_ref().unwrap();
    let addr = env.local_addr();
    warm_up(addr).await;
    let (mut a, b, _, joined) = pair(addr).await;
    drop(b);
    a.expect("peer_away").await;

    redis.stop();
    let mut b2 = Client::connect(addr).await;
    b2.send(json!({"type": "resume", "token": joined["resume_token"], "last_seq": 1}))
        .await;
    b2.expect_error("presence_unavailable").await;
    // The client gives up on this connection (as a browser whose socket
    // the OS tore down would).
    drop(b2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.cont();

    // Longer than the grace and than every key TTL: the seat is kept alive
    // by the node's own heartbeat, not by a TTL that would end it.
    let seen = events_for(&mut a, Duration::from_secs(18)).await;
    let owner: Option<String> = redis_cmd(
        redis,
        &["HGET", &format!("tallow:s:{}", joined["session"].as_str().unwrap()), "o1"],
    )
    .await;
    assert!(
        seen.iter().any(|t| t == "peer_left"),
        "18 s after the stall (grace 3 s, key TTL 15 s) the peer saw only {seen:?}; \
         the store says seat 1 is held by {owner:?}, a connection that closed before Redis woke"
    );
}

/// The same with `join`: a join whose reply is lost in a stall, by a client
/// that then closes, makes the creator `paired` with a joiner that does not
/// exist, and the creator is never told the peer is away or gone.
#[tokio::test]
async fn a_join_lost_in_a_redis_stall_does_not_pair_the_creator_with_a_ghost() {
    let env = Store::Redis.start(&["--resume-grace-secs", "3"]).await;
    let redis = env.redis.as_ref().unwrap();
    let addr = env.local_addr();
    warm_up(addr).await;
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;

    redis.stop();
    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    b.expect_error("presence_unavailable").await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.cont();

    let seen = events_for(&mut a, Duration::from_secs(10)).await;
    // Either never paired, or paired and then told the joiner is away/gone.
    let paired = seen.iter().any(|t| t == "paired");
    let told = seen.iter().any(|t| t == "peer_away" || t == "peer_left");
    assert!(
        !paired || told,
        "creator events within 10 s (grace 3 s): {seen:?}: paired with a joiner whose \
         connection closed before Redis woke, and never told it is away"
    );
}

/// A `create` whose reply is lost in a stall is carried out when Redis wakes
/// up, by nobody's request: the connection holds no seat, yet the session
/// counts against its address for the whole nameplate TTL (10 min). The
/// retry the error invites (`presence_unavailable` is retryable) is then
/// refused with `too_many_sessions`.
#[tokio::test]
async fn a_create_retried_after_a_redis_stall_is_not_refused_by_its_own_ghost() {
    let env = Store::Redis
        .start(&["--max-sessions-per-ip", "1"])
        .await;
    let redis = env.redis.as_ref().unwrap();
    warm_up_create(env.local_addr()).await;
    let mut c = Client::connect(env.local_addr()).await;
    redis.stop();
    c.send(json!({"type": "create"})).await;
    c.expect_error("presence_unavailable").await;
    redis.cont();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(json!({"type": "create"})).await;
    let v = c.recv().await;
    let members: Vec<String> = redis_cmd(redis, &["SMEMBERS", "tallow:ip:127.0.0.1"]).await;
    assert_eq!(
        v["type"], "created",
        "the retry of a create got {v}; the address's seats in Redis: {members:?} \
         (a session this connection never learnt of)"
    );
}

/// The per-address seat set in Redis (tallow:ip:<key>) gets its TTL only
/// when a seat is taken and is never refreshed by the heartbeat, unlike the
/// session keys. Once a key TTL (nameplate TTL or grace + 10 s) has passed,
/// the set expires while its seats live on, and the address may take its
/// full quota again, and again every key TTL.
#[tokio::test]
async fn the_per_address_seat_count_does_not_lapse_while_its_seats_live() {
    let env = Store::Redis
        .start(&[
            "--max-sessions-per-ip",
            "2",
            "--nameplate-ttl-secs",
            "2",
            "--resume-grace-secs",
            "2",
        ])
        .await;
    let redis = env.redis.as_ref().unwrap();
    let addr = env.local_addr();
    // Two seats from 127.0.0.1: the quota.
    let (mut a, mut b, _, _) = pair(addr).await;
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "create"})).await;
    c.expect_error("too_many_sessions").await;
    // The key TTL is max(2, 2) + 10 = 12 s. Keep the pair alive past it.
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        a.assert_alive().await;
        b.assert_alive().await;
    }
    let card: u64 = redis_cmd(redis, &["SCARD", "tallow:ip:127.0.0.1"]).await;
    let sessions: Vec<String> = redis_cmd(redis, &["KEYS", "tallow:s:*"]).await;
    c.send(json!({"type": "create"})).await;
    let v = c.recv().await;
    assert_eq!(
        v["code"], "too_many_sessions",
        "after 14 s, with both seats still held ({sessions:?} live), the address's seat set \
         holds {card} members and a third seat was granted: {v}"
    );
}

/// A peer that comes back (resume) after its partner sent `leave` must learn
/// that the session is over. Instead it is told `peer_away`, as if the
/// partner might come back, and hears `peer_left` only when the departed
/// seat's grace runs out (here 10 s later; 2 minutes by default).
async fn a_peer_that_resumes_after_its_partner_left_is_told_peer_left_not_peer_away(
    store: Store,
) {
    let env = store.start(&["--resume-grace-secs", "10"]).await;
    let addr = env.local_addr();
    let (mut a, b, _, joined) = pair(addr).await;
    drop(b);
    a.expect("peer_away").await;
    a.send(json!({"type": "send", "seq": 2, "body": "goodbye"}))
        .await;
    a.expect("ack").await;
    a.send(json!({"type": "leave"})).await;
    a.expect("left").await;

    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "resume", "token": joined["resume_token"], "last_seq": 1}))
        .await;
    let r = b.expect("resumed").await;
    let t = Instant::now();
    let seen = events_for(&mut b, Duration::from_secs(3)).await;
    assert!(
        seen.iter().any(|t| t == "peer_left") && !seen.iter().any(|t| t == "peer_away"),
        "after {r} the resumed peer saw {seen:?} within {:?}: the partner had left",
        t.elapsed()
    );
}

/// Behind a trusted proxy the last X-Forwarded-For entry is the proxy's own
/// and is always a plain address. If anything *before* it (which the client
/// chose) holds a non-ASCII byte, the whole header fails `to_str()` and the
/// server falls back to the proxy's address: one client can pick between
/// two buckets (its own and the proxy's, shared by everyone who does the
/// same), doubling every per-address limit.
#[tokio::test]
async fn a_non_ascii_byte_in_the_client_part_of_x_forwarded_for_does_not_change_its_address() {
    let server = common::start(&[
        "--trust-forwarded-for",
        "true",
        "--max-connections-per-ip",
        "1",
    ])
    .await;
    let addr = server.local_addr();
    let _held = Client::connect_with(addr, &[("x-forwarded-for", "198.51.100.7")])
        .await
        .unwrap();
    // What nginx's $proxy_add_x_forwarded_for makes of a client-sent
    // "X-Forwarded-For: é" from 198.51.100.7.
    let second = Client::connect_with(addr, &[("x-forwarded-for", "é, 198.51.100.7")]).await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 429)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!(
            "198.51.100.7 already holds its one connection, yet a second one from it was \
             admitted because its X-Forwarded-For carried a non-ASCII byte before the proxy's entry"
        ),
    }
}

/// Clients that send an upgrade request and vanish before reading the 101
/// (or mid-handshake) must give their per-address connection slot back.
#[tokio::test]
async fn upgrades_abandoned_mid_handshake_release_their_connection_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = common::start(&["--max-connections-per-ip", "2"]).await;
    let addr = server.local_addr();
    let req = format!(
        "GET /signal HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    for i in 0..6 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        if i % 2 == 1 {
            // Read the 101 and then drop without a close frame.
            let mut buf = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        }
        drop(s);
    }
    // A half-sent request: headers never finished.
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /signal HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            .await
            .unwrap();
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = Client::connect_with(addr, &[]).await;
    let b = Client::connect_with(addr, &[]).await;
    assert!(
        a.is_ok() && b.is_ok(),
        "slots leaked: {:?} {:?}",
        a.err(),
        b.err()
    );
}
