//! Adversarial review of the issue-8 hardening: faults at awkward moments,
//! replays, hostile inputs and accounting drift, each against real
//! components (a real redis-server, real tallow-server, real WebSocket
//! clients). Every test here states the behaviour the protocol promises;
//! the ones that fail are the findings of the review.

mod common;

use std::time::{Duration, Instant};

use common::{pair, Client, Store};
use serde_json::json;

on_both_stores!(
    a_peer_that_resumes_after_its_partner_left_is_told_peer_left_not_peer_away,
    per_address_seat_counts_return_to_zero_after_every_kind_of_ending,
    frames_at_exactly_the_size_limit_pass_and_one_byte_more_is_refused,
);

/// Every event (JSON or close) a client receives within `d`.
async fn events_for(c: &mut Client, d: Duration) -> Vec<String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let until = tokio::time::Instant::now() + d;
    let mut seen = Vec::new();
    loop {
        let Ok(frame) = tokio::time::timeout_at(until, c.ws.next()).await else {
            return seen;
        };
        match frame {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    seen.push(format!("error:{}", v["code"].as_str().unwrap_or("?")));
                } else {
                    seen.push(v["type"].as_str().unwrap_or("?").to_owned());
                }
            }
            Some(Ok(Message::Close(f))) => {
                seen.push(format!("closed {:?}", f.map(|f| u16::from(f.code))));
                return seen;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                seen.push(format!("closed {e}"));
                return seen;
            }
            None => {
                seen.push("closed".to_owned());
                return seen;
            }
        }
    }
}

/// Skip notices until a message of type `ty`.
async fn skip_to(c: &mut Client, ty: &str) -> serde_json::Value {
    loop {
        let v = c.recv().await;
        if v["type"] == ty {
            return v;
        }
        assert_ne!(v["type"], "error", "waiting for {ty}: {v}");
    }
}

async fn redis_cmd<T: ::redis::FromRedisValue>(redis: &common::RedisServer, args: &[&str]) -> T {
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
        &[
            "HGET",
            &format!("tallow:s:{}", joined["session"].as_str().unwrap()),
            "o1",
        ],
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
    let env = Store::Redis.start(&["--max-sessions-per-ip", "1"]).await;
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
async fn a_peer_that_resumes_after_its_partner_left_is_told_peer_left_not_peer_away(store: Store) {
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

/// Two connections resume the same token at once (a client whose first
/// reconnect attempt it believed dead). The one that loses must be closed
/// with 4001, as the protocol says of a superseded connection; it must not
/// be told `no_session` (non-retryable, "the session has ended") and left
/// open.
#[tokio::test]
async fn the_loser_of_a_resume_race_is_closed_with_4001_not_told_no_session() {
    let env = Store::Redis.start(&["--max-sessions-per-ip", "1000"]).await;
    let addr = env.local_addr();
    let (mut a, b, _, joined) = pair(addr).await;
    drop(b);
    a.expect("peer_away").await;
    let token = joined["resume_token"].clone();
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let mut x = Client::connect(addr).await;
        let mut y = Client::connect(addr).await;
        let msg = json!({"type": "resume", "token": token, "last_seq": 1});
        tokio::join!(x.send(msg.clone()), y.send(msg));
        let (ex, ey) = tokio::join!(
            events_for(&mut x, Duration::from_millis(700)),
            events_for(&mut y, Duration::from_millis(700))
        );
        for e in [&ex, &ey] {
            if e.iter().any(|t| t.starts_with("error")) {
                outcomes.push(format!("{ex:?} / {ey:?}"));
            }
        }
        // Leave the seat detached for the next round.
        drop(x);
        drop(y);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        outcomes.is_empty(),
        "resume races where a connection got an error instead of resumed or close 4001: {outcomes:#?}"
    );
}

/// Churn through every way a seat can end, from one address, and check
/// that its seat count comes back to zero: the full quota can be taken
/// again, and in Redis the address's seat set is empty.
async fn per_address_seat_counts_return_to_zero_after_every_kind_of_ending(store: Store) {
    let env = store
        .start(&[
            "--max-sessions-per-ip",
            "12",
            "--resume-grace-secs",
            "1",
            "--nameplate-ttl-secs",
            "2",
            "--max-messages-per-sec",
            "1000",
        ])
        .await;
    let addr = env.local_addr();
    // 1. Both leave, one after the other.
    let (mut a, mut b, _, _) = pair(addr).await;
    a.send(json!({"type": "leave"})).await;
    a.expect("left").await;
    b.expect("peer_left").await;
    b.send(json!({"type": "leave"})).await;
    b.expect("left").await;
    // 2. Both leave at once (leave racing peer_left).
    let (mut a, mut b, _, _) = pair(addr).await;
    let leave = json!({"type": "leave"});
    tokio::join!(a.send(leave.clone()), b.send(leave.clone()));
    drop((a, b));
    // 3. Both drop without a word: the grace runs out.
    let (a, b, _, _) = pair(addr).await;
    drop((a, b));
    // 4. One leaves while the other is away, and never comes back.
    let (mut a, b, _, _) = pair(addr).await;
    drop(b);
    a.expect("peer_away").await;
    a.send(leave.clone()).await;
    a.expect("left").await;
    // 5. Creator drops before anyone joins; the nameplate expires.
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    drop(c);
    // 6. Creator waits until its nameplate expires.
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    c.expect_error("nameplate_expired").await;
    // 7. Resumed, then superseded, then left.
    let (mut a, b, _, joined) = pair(addr).await;
    drop(b);
    a.expect("peer_away").await;
    let mut b1 = Client::connect(addr).await;
    b1.send(json!({"type": "resume", "token": joined["resume_token"], "last_seq": 1}))
        .await;
    b1.expect("resumed").await;
    let mut b2 = Client::connect(addr).await;
    b2.send(json!({"type": "resume", "token": joined["resume_token"], "last_seq": 1}))
        .await;
    b2.expect("resumed").await;
    b1.expect_close(4001).await;
    b2.send(leave.clone()).await;
    b2.expect("left").await;
    a.send(leave.clone()).await;
    skip_to(&mut a, "left").await;

    // Every grace (1 s) and nameplate TTL (2 s) has run out.
    tokio::time::sleep(Duration::from_secs(4)).await;
    if let Some(redis) = &env.redis {
        let members: Vec<String> = redis_cmd(redis, &["SMEMBERS", "tallow:ip:127.0.0.1"]).await;
        assert!(
            members.is_empty(),
            "seats still counted in Redis: {members:?}"
        );
        let sessions: Vec<String> = redis_cmd(redis, &["KEYS", "tallow:s:*"]).await;
        assert!(sessions.is_empty(), "sessions left: {sessions:?}");
    }
    let mut held = Vec::new();
    for i in 0..12 {
        let mut c = Client::connect(addr).await;
        c.send(json!({"type": "create"})).await;
        let v = c.recv().await;
        assert_eq!(v["type"], "created", "create {i} after the churn: {v}");
        held.push(c);
    }
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "create"})).await;
    c.expect_error("too_many_sessions").await;
}

/// A text frame of exactly `max_frame_bytes` is accepted and forwarded
/// intact (multi-byte UTF-8 included); one byte more is refused with
/// `frame_too_large` and the connection survives.
async fn frames_at_exactly_the_size_limit_pass_and_one_byte_more_is_refused(store: Store) {
    let env = store.start(&["--max-frame-bytes", "4096"]).await;
    let (mut a, mut b, _, _) = pair(env.local_addr()).await;
    let frame_for = |body: &str| json!({"type": "send", "seq": 2, "body": body}).to_string();
    let overhead = frame_for("").len();
    // 'é' is two bytes: fill to the byte, with an odd tail of ASCII.
    let n = (4096 - overhead) / 2;
    let mut body = "é".repeat(n);
    body.push_str(&"x".repeat(4096 - overhead - 2 * n));
    let frame = frame_for(&body);
    assert_eq!(frame.len(), 4096);
    a.send_text(&frame).await;
    assert_eq!(a.expect("ack").await["seq"], 2);
    assert_eq!(b.expect("message").await["body"], body.as_str());
    let over = json!({"type": "send", "seq": 3, "body": format!("{body}y")}).to_string();
    assert_eq!(over.len(), 4097);
    a.send_text(&over).await;
    a.expect_error("frame_too_large").await;
    a.assert_alive().await;
}

/// Redis restarted empty under live sessions: the nodes cannot keep them,
/// but both peers must be told (`peer_left` "gone") rather than left
/// waiting, and new sessions must work at once.
#[tokio::test]
async fn redis_restarted_empty_ends_live_sessions_with_a_notice() {
    let mut env = Store::Redis.start(&["--resume-grace-secs", "3"]).await;
    let addr = env.local_addr();
    let (mut a, mut b, _, _) = pair(addr).await;
    let redis = env.redis.as_mut().unwrap();
    redis.kill();
    redis.restart();
    let (ea, eb) = tokio::join!(
        events_for(&mut a, Duration::from_secs(6)),
        events_for(&mut b, Duration::from_secs(6))
    );
    assert!(ea.iter().any(|t| t == "peer_left"), "a saw {ea:?}");
    assert!(eb.iter().any(|t| t == "peer_left"), "b saw {eb:?}");
    let (mut c, mut d, _, _) = pair(addr).await;
    c.send(json!({"type": "send", "seq": 2, "body": "fresh"}))
        .await;
    c.expect("ack").await;
    assert_eq!(d.expect("message").await["body"], "fresh");
}

/// WebSocket ping control frames are answered by the transport before any
/// rate limit: a client can make the server write a pong for every ping it
/// sends, without end, and is never cut off (text and binary floods are
/// closed with 1008 after 1,000 dropped frames in a row).
#[tokio::test]
async fn a_ping_frame_flood_is_rate_limited_like_other_frames() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = common::start(&["--max-messages-per-sec", "10"]).await;
    let c = Client::connect(server.local_addr()).await;
    let (mut sink, mut stream) = c.ws.split();
    let reader = tokio::spawn(async move {
        let mut pongs = 0u64;
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_secs(3), stream.next()).await
        {
            match m {
                Message::Pong(_) => pongs += 1,
                Message::Close(f) => return (pongs, format!("closed {f:?}")),
                _ => {}
            }
        }
        (pongs, "open".to_owned())
    });
    for _ in 0..5000 {
        if sink
            .send(Message::Ping(vec![0u8; 125].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (pongs, end) = reader.await.unwrap();
    assert!(
        end.starts_with("closed"),
        "5,000 pings against a limit of 10 frames/s: {pongs} pongs written, connection {end}"
    );
}

/// A WebSocket client whose TCP connection comes from `from` (a loopback
/// address other than nginx's own 127.0.0.1), with extra headers.
async fn connect_from(from: &str, to: std::net::SocketAddr, headers: &[(&str, &[u8])]) -> Client {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = sock.connect(to).await.unwrap();
    let mut req = format!("ws://{to}/signal").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_bytes(v).unwrap(),
        );
    }
    let (ws, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade through nginx");
    let mut c = Client {
        ws,
        welcome: serde_json::Value::Null,
    };
    c.welcome = c.expect("welcome").await;
    c
}

/// Through the shipped nginx.conf: a client at 127.0.0.2 that adds
/// "X-Forwarded-For: é" is counted as nginx's own address (127.0.0.1)
/// instead of its own, so it takes a seat beyond its address's quota.
#[tokio::test]
async fn through_nginx_a_non_ascii_forwarded_for_does_not_buy_a_second_quota() {
    let server = common::start(&[
        "--trust-forwarded-for",
        "true",
        "--max-sessions-per-ip",
        "1",
    ])
    .await;
    let front = common::nginx::start(server.local_addr());
    let mut first = connect_from("127.0.0.2", front.addr, &[]).await;
    first.send(json!({"type": "create"})).await;
    first.expect("created").await;
    // Without tricks, 127.0.0.2 is at its quota.
    let mut plain = connect_from("127.0.0.2", front.addr, &[]).await;
    plain.send(json!({"type": "create"})).await;
    plain.expect_error("too_many_sessions").await;
    // With one non-ASCII byte in its own X-Forwarded-For it is not.
    let mut tricky = connect_from(
        "127.0.0.2",
        front.addr,
        &[("x-forwarded-for", "é".as_bytes())],
    )
    .await;
    tricky.send(json!({"type": "create"})).await;
    let v = tricky.recv().await;
    assert_eq!(
        v["code"], "too_many_sessions",
        "127.0.0.2 holds its one seat, yet with X-Forwarded-For: é it got {v}"
    );
}

/// IPv4-mapped IPv6 forms of one address share its limits.
#[tokio::test]
async fn an_ipv4_mapped_forwarded_for_shares_the_ipv4_address_limits() {
    let server = common::start(&[
        "--trust-forwarded-for",
        "true",
        "--max-sessions-per-ip",
        "1",
    ])
    .await;
    let addr = server.local_addr();
    let mut a = Client::connect_with(addr, &[("x-forwarded-for", "198.51.100.7")])
        .await
        .unwrap();
    a.send(json!({"type": "create"})).await;
    a.expect("created").await;
    for form in ["::ffff:198.51.100.7", "::FFFF:c633:6407", " 198.51.100.7 "] {
        let mut b = Client::connect_with(addr, &[("x-forwarded-for", form)])
            .await
            .unwrap();
        b.send(json!({"type": "create"})).await;
        let v = b.recv().await;
        assert_eq!(v["code"], "too_many_sessions", "{form:?}: {v}");
    }
}

fn node(redis: &common::RedisServer, id: &str) -> common::Binary {
    let url = redis.url();
    common::Binary::spawn(&[
        ("REDIS_URL", url.as_str()),
        ("TALLOW_SERVER_ID", id),
        ("TALLOW_RESUME_GRACE_SECS", "30"),
    ])
}

/// A node stops (SIGSTOP) just as its client sends `leave`; the other node
/// rightly takes it for dead. When it runs again it must carry out the
/// leave: its client gets `left`, the peer ends with `peer_left` "left"
/// (not a timeout much later), and nothing remains in Redis.
#[tokio::test]
async fn a_leave_sent_to_a_stopped_node_is_carried_out_when_it_runs_again() {
    let redis = common::RedisServer::start();
    let n1 = node(&redis, "adv-1");
    let n2 = node(&redis, "adv-2");
    let mut a = Client::connect(n1.addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    let mut b = Client::connect(n2.addr).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    b.expect("joined").await;
    b.expect("paired").await;
    a.expect("paired").await;
    common::open_handshake(&mut a, &mut b, created["session"].as_str().unwrap()).await;

    n1.signal("-STOP");
    a.send(json!({"type": "leave"})).await;
    assert_eq!(b.expect("peer_away").await["type"], "peer_away");
    n1.signal("-CONT");
    skip_to(&mut a, "left").await;
    let mut seen = Vec::new();
    loop {
        let v = b.recv().await;
        seen.push(v["type"].as_str().unwrap().to_owned());
        if v["type"] == "peer_left" {
            assert_eq!(v["reason"], "left", "{seen:?}");
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions: Vec<String> = redis_cmd(&redis, &["KEYS", "tallow:s:*"]).await;
    assert!(sessions.is_empty(), "{sessions:?} after {seen:?}");
}

/// Issue 8 point 1 with longer stalls than the shipped test (7 s): across
/// several reconnect cycles of the nodes' Redis connections, a live
/// cross-node session must still go on with nothing lost and no false
/// notice once Redis runs again.
#[tokio::test]
async fn longer_redis_stalls_break_no_cross_node_session() {
    for stall in [12u64, 20] {
        let redis = common::RedisServer::start();
        let n1 = node(&redis, "long-1");
        let n2 = node(&redis, "long-2");
        let mut a = Client::connect(n1.addr).await;
        a.send(json!({"type": "create"})).await;
        let created = a.expect("created").await;
        let mut b = Client::connect(n2.addr).await;
        b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
            .await;
        b.expect("joined").await;
        b.expect("paired").await;
        a.expect("paired").await;
        common::open_handshake(&mut a, &mut b, created["session"].as_str().unwrap()).await;
        redis.stop();
        tokio::time::sleep(Duration::from_secs(stall)).await;
        redis.cont();
        common::settle_and_check(a, b).await;
    }
}
