//! The Redis store against a real redis-server, below the WebSocket layer.
//! Issue 8, point 8: its periodic work is bounded per call, whatever the
//! number of sessions, measured in Redis itself (command counts), not by
//! timing. And requests that land after the client gave up on them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use tallow_signaling::client_addr::IpKey;
use tallow_signaling::presence::redis::RedisPresence;
use tallow_signaling::presence::{Owner, Presence, PresenceConfig};

fn store(redis: &RedisServer, nameplate_ttl: Duration) -> RedisPresence {
    let cfg = PresenceConfig {
        nameplate_ttl,
        resume_grace: Duration::from_secs(60),
        mailbox_cap: 16,
        mailbox_bytes: 1 << 20,
        max_seats_per_ip: usize::MAX,
    };
    RedisPresence::new(&redis.url(), None, cfg).unwrap()
}

async fn create_many(p: &RedisPresence, node: &str, n: u64) {
    for conn in 0..n {
        // One address per session, as many clients would be.
        let ip = IpKey::new(
            std::net::Ipv4Addr::from(0x0a00_0000 + conn as u32).into(),
            64,
        );
        let owner = Owner {
            node: Arc::from(node),
            conn,
        };
        p.create(&owner, &format!("tok{conn}"), ip).await.unwrap();
    }
}

/// Calls of `cmd` inside scripts and outside since the last reset.
async fn calls(redis: &RedisServer, cmd: &str) -> u64 {
    let mut conn = redis.conn().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

async fn reset_stats(redis: &RedisServer) {
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_heartbeat_refreshes_a_bounded_slice_of_a_nodes_sessions() {
    let redis = RedisServer::start();
    let p = store(&redis, Duration::from_secs(600));
    let node = "bound-test~00000001";
    create_many(&p, node, 5_000).await;
    for beat in 0..3 {
        reset_stats(&redis).await;
        p.heartbeat(node).await.unwrap();
        // touch() refreshes at most six keys of a session; a slice is at
        // most a few hundred sessions, never all 5,000 (30,000 PEXPIREs).
        let n = calls(&redis, "pexpire").await;
        assert!(n <= 6 * 200, "beat {beat}: {n} PEXPIRE calls");
    }
}

#[tokio::test]
async fn one_sweep_works_off_a_flood_of_expiries() {
    let redis = RedisServer::start();
    let p = store(&redis, Duration::from_millis(200));
    create_many(&p, "flood-test~00000001", 1_000).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    p.sweep("flood-test~00000001").await.unwrap();
    let mut conn = redis.conn().await;
    let due: u64 = redis::cmd("ZCARD")
        .arg("tallow:dl")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(due, 0, "deadlines left after one sweep");
    let sessions: Vec<String> = redis::cmd("KEYS")
        .arg("tallow:s:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(sessions.is_empty(), "{} sessions left", sessions.len());
}

/// A `join` whose reply was lost (the client timed out while Redis was slow,
/// then Redis ran it): the same connection's retry gets that seat and its
/// token back, instead of `session_full` and a failed join on its record
/// while a ghost holds the seat.
#[tokio::test]
async fn a_join_that_landed_late_is_found_by_its_retry() {
    let redis = RedisServer::start();
    let p = store(&redis, Duration::from_secs(600));
    let ip = IpKey::new("198.51.100.7".parse().unwrap(), 64);
    let creator = Owner {
        node: Arc::from("late~1"),
        conn: 1,
    };
    let joiner = Owner {
        node: Arc::from("late~1"),
        conn: 2,
    };
    let created = p.create(&creator, "tok-a", ip).await.unwrap();
    // The join that landed late, then the client's retry with a new token.
    let first = p
        .join(created.nameplate, &joiner, "tok-b1", ip)
        .await
        .unwrap();
    let again = p
        .join(created.nameplate, &joiner, "tok-b2", ip)
        .await
        .unwrap();
    assert_eq!(again.session, first.session);
    assert_eq!(again.token, "tok-b1");
    // Anyone else still finds the session full.
    let other = Owner {
        node: Arc::from("late~1"),
        conn: 3,
    };
    let err = p
        .join(created.nameplate, &other, "tok-c", ip)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("two peers"), "{err}");
    // The seat answers to the first token.
    p.resume("tok-b1", &joiner, 0).await.unwrap();
}
