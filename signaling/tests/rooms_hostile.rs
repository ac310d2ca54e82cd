//! Rooms under hostile clients and faults: limits that must not be
//! sidestepped, records and index keys that must not outlive their room,
//! and memberships that must stay with the address they belong to.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Store};
use serde_json::{json, Value};

async fn create(addr: SocketAddr, who: &str, extra: Value) -> (Client, Value) {
    create_with(addr, &[], who, extra).await
}

async fn create_with(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    who: &str,
    extra: Value,
) -> (Client, Value) {
    let mut c = Client::connect_with(addr, headers).await.unwrap();
    let mut msg = json!({"type": "room_create", "name": "team", "display_name": who});
    for (k, v) in extra.as_object().into_iter().flatten() {
        msg[k] = v.clone();
    }
    c.send(msg).await;
    let created = c.expect("room_created").await;
    c.expect("room_state").await;
    (c, created)
}

/// Room keys left in Redis (records and their indexes).
async fn room_keys(env: &common::Env) -> Vec<String> {
    match &env.redis {
        Some(r) => r
            .keys()
            .await
            .into_iter()
            .filter(|k| {
                [":r:", ":rnp:", ":rtok:", ":rip:", ":near:"]
                    .iter()
                    .any(|p| k.contains(p))
            })
            .collect(),
        None => Vec::new(),
    }
}

/// A named room everyone left (or timed out of) is over: its code no longer
/// lets anyone in, and nothing of it is kept. Otherwise one address could
/// hold any number of rooms and codes for their whole life (creating and
/// leaving, memberships are all `TALLOW_MAX_ROOMS_PER_IP` counts), and a
/// newcomer would find a room nobody owns and nobody can close.
async fn an_emptied_named_room_ends(store: Store) {
    let env = store
        .start(&["--resume-grace-secs", "1", "--max-rooms-per-ip", "1"])
        .await;
    let addr = env.local_addr();
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (mut a, created) = create(addr, "Ada", json!({})).await;
        a.send(json!({"type": "room_leave"})).await;
        a.expect("room_left").await;
        codes.push(created["nameplate"].clone());
    }
    // The creator's connection drops and does not come back in time.
    let (b, created) = create(addr, "Bob", json!({})).await;
    drop(b);
    codes.push(created["nameplate"].clone());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut e = Client::connect(addr).await;
    for np in &codes {
        e.send(json!({"type": "room_join", "nameplate": np, "display_name": "Eve"}))
            .await;
        let v = e.recv().await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("unknown_room")),
            "room {np} has nobody in it: {v}"
        );
    }
    assert_eq!(room_keys(&env).await, Vec::<String>::new());
}

/// A nearby membership belongs to the address it was made from: its token
/// does not let a client elsewhere (a visitor gone home, a stolen token)
/// keep watching who is at that address.
async fn a_nearby_membership_does_not_follow_its_token_elsewhere(store: Store) {
    let env = store
        .start(&[
            "--trust-forwarded-for",
            "true",
            "--trusted-proxies",
            "127.0.0.1",
        ])
        .await;
    let addr = env.local_addr();
    let at = |ip: &'static str| [("x-forwarded-for", ip)];
    let mut x = Client::connect_with(addr, &at("198.51.100.1"))
        .await
        .unwrap();
    x.send(json!({"type": "nearby_join", "display_name": "visitor"}))
        .await;
    let joined = x.expect("room_joined").await;
    x.expect("room_state").await;
    let mut y = Client::connect_with(addr, &at("198.51.100.1"))
        .await
        .unwrap();
    y.send(json!({"type": "nearby_join", "display_name": "resident"}))
        .await;
    y.expect("room_joined").await;
    y.expect("room_state").await;
    drop(x);
    y.expect("room_member_away").await;

    let mut home = Client::connect_with(addr, &at("203.0.113.9"))
        .await
        .unwrap();
    home.send(json!({"type": "room_resume", "token": joined["resume_token"]}))
        .await;
    let v = home.recv().await;
    assert_eq!(v["type"], "error", "resumed from another address: {v}");
    assert_eq!(v["code"], "invalid_resume_token", "{v}");
    home.assert_alive().await;

    // From the address it belongs to, the same token works.
    let mut back = Client::connect_with(addr, &at("198.51.100.1"))
        .await
        .unwrap();
    back.send(json!({"type": "room_resume", "token": joined["resume_token"]}))
        .await;
    back.expect("room_resumed").await;
    back.expect("room_state").await;
    y.expect("room_member_back").await;
}

on_both_stores!(
    an_emptied_named_room_ends,
    a_nearby_membership_does_not_follow_its_token_elsewhere,
);

/// A room record that vanished from Redis without a sweep (every node was
/// down past its end, so its key expired) leaves its id in the deadline
/// index. Such ids must be dropped, not handed to every sweep forever: a
/// sweep takes the earliest 256, so enough of them would keep every live
/// room from ever expiring or timing its members out.
#[tokio::test]
async fn deadlines_of_vanished_rooms_do_not_starve_the_sweep() {
    let env = Store::Redis.start(&[]).await;
    let redis = env.redis.as_ref().unwrap();
    let mut conn = redis.conn().await;
    // What expired records leave behind: due ids with no record.
    for i in 0..300 {
        let _: () = ::redis::cmd("ZADD")
            .arg("tallow:rdl")
            .arg(1)
            .arg(format!("gone{i:04}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let (mut a, _) = create(env.local_addr(), "Ada", json!({"ttl_secs": 1})).await;
    let closed = a.expect("room_closed").await;
    assert_eq!(closed["reason"], "expired");
    let left: u64 = ::redis::cmd("ZCARD")
        .arg("tallow:rdl")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left <= 1, "{left} deadlines left in tallow:rdl");
}
