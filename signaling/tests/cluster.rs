//! Several real tallow-server processes sharing one real redis-server:
//! cross-node pairing, resume on another node after SIGKILL, Redis outages,
//! and what a crashed node leaves behind.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Binary, Client, RedisServer};
use serde_json::{json, Value};

fn node(redis: &RedisServer, id: &str, extra: &[(&str, &str)]) -> Binary {
    let url = redis.url();
    let mut env = vec![
        ("REDIS_URL", url.as_str()),
        ("TALLOW_SERVER_ID", id),
        ("TALLOW_MAX_MESSAGES_PER_SEC", "100000"),
    ];
    env.extend_from_slice(extra);
    Binary::spawn(&env)
}

async fn create_on(addr: std::net::SocketAddr) -> (Client, Value) {
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    (a, created)
}

/// Pair a (already created) with a joiner on `addr` and open the handshake.
async fn join_and_open(a: &mut Client, addr: std::net::SocketAddr, created: &Value) -> Client {
    let (mut b, _) = join_on(addr, &created["nameplate"]).await;
    a.expect("paired").await;
    common::open_handshake(a, &mut b, created["session"].as_str().unwrap()).await;
    b
}

async fn join_on(addr: std::net::SocketAddr, nameplate: &Value) -> (Client, Value) {
    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "join", "nameplate": nameplate}))
        .await;
    let joined = b.expect("joined").await;
    b.expect("paired").await;
    (b, joined)
}

async fn ready_status(addr: std::net::SocketAddr) -> (u16, String) {
    common::http_get(addr, "/api/ready").await
}

/// Poll until `f` holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn peers_on_different_nodes_pair_and_exchange_1000_messages_each_way() {
    let redis = RedisServer::start();
    let n1 = node(&redis, "node-1", &[]);
    let n2 = node(&redis, "node-2", &[]);
    let (mut a, created) = create_on(n1.addr).await;
    assert_eq!(a.welcome["server_id"], "node-1");
    let b = join_and_open(&mut a, n2.addr, &created).await;
    assert_eq!(b.welcome["server_id"], "node-2");

    let n = 1000;
    common::exchange_both_ways(a, b, n).await;
}

#[tokio::test]
async fn a_client_of_a_killed_node_resumes_on_another_with_nothing_lost_or_doubled() {
    let redis = RedisServer::start();
    let n1 = node(&redis, "node-1", &[]);
    let n2 = node(&redis, "node-2", &[]);
    let n3 = node(&redis, "node-3", &[]);
    let mut n1 = n1;
    let (mut a, created) = create_on(n1.addr).await;
    let mut b = join_and_open(&mut a, n2.addr, &created).await;

    // Before the crash: a sends 2..=4 (1 was the hello), b sends 1..=5, and
    // a reads 1..=4 of them (the fifth is in flight when the node dies).
    for seq in 2..=4u64 {
        a.send(json!({"type": "send", "seq": seq, "body": format!("a{seq}")}))
            .await;
        a.expect("ack").await;
    }
    for seq in 2..=4u64 {
        assert_eq!(b.expect("message").await["body"], format!("a{seq}"));
    }
    for seq in 1..=5u64 {
        b.send(json!({"type": "send", "seq": seq, "body": format!("b{seq}")}))
            .await;
        b.expect("ack").await;
    }
    for seq in 1..=4u64 {
        assert_eq!(a.expect("message").await["seq"], seq);
    }

    n1.kill9();
    drop(a);

    // b goes on talking while a is away.
    for seq in 6..=20u64 {
        b.send(json!({"type": "send", "seq": seq, "body": format!("b{seq}")}))
            .await;
        b.expect("ack").await;
    }

    // a reconnects to node 3 with its token and the last seq it processed.
    let mut a = Client::connect(n3.addr).await;
    assert_eq!(a.welcome["server_id"], "node-3");
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 4}))
        .await;
    let r = a.expect("resumed").await;
    assert_eq!(r["session"], created["session"]);
    assert_eq!(r["last_received"], 4);
    let mut seen = HashSet::new();
    for seq in 5..=20u64 {
        let m = a.expect("message").await;
        assert_eq!(m["seq"], seq, "{m}");
        assert_eq!(m["body"], format!("b{seq}"));
        assert!(seen.insert(seq), "seq {seq} twice");
    }
    a.assert_alive().await;

    // a resends what the server did not confirm (nothing) and continues.
    a.send(json!({"type": "send", "seq": 4, "body": "a4"}))
        .await;
    assert_eq!(a.expect("ack").await["seq"], 4);
    a.send(json!({"type": "send", "seq": 5, "body": "a5"}))
        .await;
    assert_eq!(a.expect("ack").await["seq"], 5);
    // b gets a5 once, and not a4 again, whatever notices came between.
    let mut from_a = Vec::new();
    while from_a.is_empty() {
        let v = b.recv().await;
        match v["type"].as_str().unwrap() {
            "message" => from_a.push(v["body"].as_str().unwrap().to_owned()),
            "peer_away" | "peer_back" => {}
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(from_a, ["a5"]);
    b.send(json!({"type": "ping", "id": 1})).await;
    loop {
        let v = b.recv().await;
        match v["type"].as_str().unwrap() {
            "pong" => break,
            "peer_away" | "peer_back" => {}
            other => panic!("unexpected {other} after the last message: {v}"),
        }
    }
}

#[tokio::test]
async fn a_redis_outage_turns_ready_to_503_refuses_retryably_and_recovers() {
    let mut redis = RedisServer::start();
    let n1 = node(&redis, "node-1", &[]);
    // Ready once connected and subscribed.
    eventually(Duration::from_secs(10), "ready at start", || async {
        ready_status(n1.addr).await.0 == 200
    })
    .await;
    let mut idle = Client::connect(n1.addr).await;

    redis.kill();
    eventually(Duration::from_secs(10), "ready turns 503", || async {
        ready_status(n1.addr).await.0 == 503
    })
    .await;
    let (_, body) = ready_status(n1.addr).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["failed"], json!(["presence"]), "{body}");
    assert_eq!(v["checks"]["presence"]["store"], "redis");

    // The process lives and answers, and says why it cannot pair now.
    let (status, _) = common::http_get(n1.addr, "/api/health").await;
    assert_eq!(status, 200);
    let mut c = Client::connect(n1.addr).await;
    c.send(json!({"type": "create"})).await;
    let e = c.expect_error("presence_unavailable").await;
    assert_eq!(e["retryable"], true);
    c.send(json!({"type": "join", "nameplate": "12"})).await;
    c.expect_error("presence_unavailable").await;
    idle.assert_alive().await;

    // It does not spin while Redis is away: well under a second of CPU in
    // three seconds of outage.
    let before = n1.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = n1.cpu_ticks() - before;
    assert!(used < 100, "{used} clock ticks of CPU in 3 s of outage");

    redis.restart();
    eventually(Duration::from_secs(15), "ready returns to 200", || async {
        ready_status(n1.addr).await.0 == 200
    })
    .await;
    // Service resumes on the same connections and on new ones.
    c.send(json!({"type": "create"})).await;
    let created = c.expect("created").await;
    let mut b = join_and_open(&mut c, n1.addr, &created).await;
    c.send(json!({"type": "send", "seq": 2, "body": "after the outage"}))
        .await;
    c.expect("ack").await;
    assert_eq!(b.expect("message").await["body"], "after the outage");
    idle.assert_alive().await;
}

#[tokio::test]
async fn a_crashed_node_leaves_nothing_behind() {
    let redis = RedisServer::start();
    let short = [
        ("TALLOW_NAMEPLATE_TTL_SECS", "2"),
        ("TALLOW_RESUME_GRACE_SECS", "2"),
    ];
    let mut n1 = node(&redis, "node-1", &short);
    let mut n2 = node(&redis, "node-2", &short);

    // On node 1: an unjoined code, and a session paired across the nodes.
    let (_lonely, waiting) = create_on(n1.addr).await;
    let (_a, created) = create_on(n1.addr).await;
    let (mut b, _) = join_on(n2.addr, &created["nameplate"]).await;
    assert!(!redis.keys().await.is_empty());

    n1.kill9();
    // node 2 notices node 1's heartbeat stop, starts the grace period, and
    // ends the session when nobody resumes.
    assert_eq!(b.expect("peer_away").await["type"], "peer_away");
    assert_eq!(b.expect("peer_left").await["reason"], "timeout");
    let mut c = Client::connect(n2.addr).await;
    c.send(json!({"type": "join", "nameplate": waiting["nameplate"]}))
        .await;
    c.expect_error("unknown_nameplate").await;

    // What remains is node 2's own liveness record.
    eventually(
        Duration::from_secs(10),
        "only node 2's keys remain",
        || async { redis.keys().await == ["tallow:beats", "tallow:streaks"] },
    )
    .await;
    let mut conn = redis.conn().await;
    let nodes: Vec<String> = redis::cmd("HKEYS")
        .arg("tallow:beats")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(nodes[0].starts_with("node-2~"), "{nodes:?}");

    // With every node gone, the TTLs clear the rest.
    n2.kill9();
    eventually(Duration::from_secs(20), "all keys expire", || async {
        redis.keys().await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn redis_with_a_password_and_tls_with_a_private_ca() {
    // Password.
    let redis = RedisServer::start_with_password(Some("s3cret-pw"));
    let n1 = node(&redis, "node-pw", &[]);
    let (_a, created) = create_on(n1.addr).await;
    join_on(n1.addr, &created["nameplate"]).await;
    // The wrong password is not ready, and says why.
    let bad = redis.url().replace("s3cret-pw", "wrong");
    let n2 = Binary::spawn(&[("REDIS_URL", bad.as_str())]);
    let (status, body) = ready_status(n2.addr).await;
    assert_eq!(status, 503, "{body}");

    // TLS (rediss://) with the server's certificate signed by a private CA.
    let tls = RedisServer::start_tls(Some("tls-pw"));
    let ca = tls.ca_file();
    let url = tls.url();
    let n3 = Binary::spawn(&[
        ("REDIS_URL", url.as_str()),
        ("TALLOW_REDIS_CA_FILE", ca.to_str().unwrap()),
    ]);
    eventually(Duration::from_secs(10), "ready over TLS", || async {
        ready_status(n3.addr).await.0 == 200
    })
    .await;
    let (_c, created) = create_on(n3.addr).await;
    join_on(n3.addr, &created["nameplate"]).await;
}

/// Issue 8, point 1: Redis stalls (SIGSTOP) for longer than the node TTL
/// under a live cross-node session. No node may sweep itself or, on the
/// strength of its own stale view, the other: after SIGCONT the session goes
/// on with nothing lost and no false notice on either side.
#[tokio::test]
async fn a_redis_stall_longer_than_the_node_ttl_breaks_no_cross_node_session() {
    let redis = RedisServer::start();
    let short = [("TALLOW_RESUME_GRACE_SECS", "3")];
    let n1 = node(&redis, "node-1", &short);
    let n2 = node(&redis, "node-2", &short);
    let (mut a, created) = create_on(n1.addr).await;
    let b = join_and_open(&mut a, n2.addr, &created).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.cont();
    common::settle_and_check(a, b).await;
}

/// Issue 8, point 5: a node restarted under the same TALLOW_SERVER_ID within
/// the node TTL starts a new id space: its new connections never collide
/// with the seats its previous incarnation held, and those seats are handed
/// to the resume grace like any crashed node's.
#[tokio::test]
async fn a_node_restarted_under_the_same_id_does_not_inherit_its_predecessors_seats() {
    let redis = RedisServer::start();
    let mut n1 = node(&redis, "node-x", &[]);
    let n2 = node(&redis, "node-2", &[]);
    // Two sessions across the nodes, creators on node-x.
    let (mut a, created) = create_on(n1.addr).await;
    let mut b = join_and_open(&mut a, n2.addr, &created).await;
    let (mut c, created_c) = create_on(n1.addr).await;
    let mut d = join_and_open(&mut c, n2.addr, &created_c).await;

    n1.kill9();
    drop((a, c));
    let n1 = node(&redis, "node-x", &[]);

    // a comes back on the new incarnation, very likely under the same
    // connection number it had before: it must keep its seat.
    let mut a = Client::connect(n1.addr).await;
    a.send(json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}))
        .await;
    let r = a.expect("resumed").await;
    assert_eq!(r["session"], created["session"]);
    a.assert_alive().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.assert_alive().await;
    a.send(json!({"type": "send", "seq": 2, "body": "after restart"}))
        .await;
    assert_eq!(a.expect("ack").await["seq"], 2);
    loop {
        let v = b.recv().await;
        match v["type"].as_str().unwrap() {
            "peer_away" | "peer_back" => {}
            "message" => {
                assert_eq!(v["body"], "after restart");
                break;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }

    // c never comes back: d learns that its peer is away, then gone.
    assert_eq!(d.expect("peer_away").await["type"], "peer_away");
}

/// Issue 8, point 1, the other side of a stall: a node process (not Redis)
/// stops for longer than the node TTL. The other node rightly takes it for
/// dead and tells the peer; when the stopped node runs again, its connection
/// claims its seat back, the peer hears `peer_back`, and nothing is lost in
/// either direction.
#[tokio::test]
async fn a_stalled_node_reasserts_its_seats_when_it_runs_again() {
    let redis = RedisServer::start();
    let n1 = node(
        &redis,
        "node-1",
        &[
            ("TALLOW_PING_INTERVAL_SECS", "1"),
            ("TALLOW_IDLE_TIMEOUT_SECS", "30"),
        ],
    );
    let n2 = node(&redis, "node-2", &[]);
    let (mut a, created) = create_on(n1.addr).await;
    let mut b = join_and_open(&mut a, n2.addr, &created).await;

    n1.signal("-STOP");
    assert_eq!(b.expect("peer_away").await["type"], "peer_away");
    // b goes on sending while a's node is stopped.
    b.send(json!({"type": "send", "seq": 1, "body": "while stopped"}))
        .await;
    b.expect("ack").await;
    n1.signal("-CONT");

    assert_eq!(b.expect("peer_back").await["type"], "peer_back");
    assert_eq!(a.expect("message").await["body"], "while stopped");
    a.send(json!({"type": "send", "seq": 2, "body": "back again"}))
        .await;
    assert_eq!(a.expect("ack").await["seq"], 2);
    assert_eq!(b.expect("message").await["body"], "back again");
    a.assert_alive().await;
    b.assert_alive().await;
}

/// Issue 8, point 1 under load: connections that drop while Redis stalls
/// leave detaches to retry. Retrying them must not hold up the node's
/// heartbeat after the store returns (one timed-out call each would take
/// longer than the node TTL), or the other node takes this one for dead and
/// its live sessions get a false `peer_away`.
#[tokio::test]
async fn detaches_queued_during_a_stall_do_not_hold_up_the_heartbeat() {
    let redis = RedisServer::start();
    let many = [("TALLOW_MAX_SESSIONS_PER_IP", "100")];
    let n1 = node(&redis, "node-1", &many);
    let n2 = node(&redis, "node-2", &many);
    let (mut a, created) = create_on(n1.addr).await;
    let b = join_and_open(&mut a, n2.addr, &created).await;
    let mut doomed = Vec::new();
    for _ in 0..12 {
        let (mut c, created) = create_on(n1.addr).await;
        let d = join_and_open(&mut c, n2.addr, &created).await;
        doomed.push((c, d));
    }
    redis.stop();
    // n1's side of every other session drops while the store cannot hear.
    let peers: Vec<Client> = doomed
        .into_iter()
        .map(|(c, d)| {
            drop(c);
            d
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.cont();
    common::settle_and_check(a, b).await;
    drop(peers);
}
