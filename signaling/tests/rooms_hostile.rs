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

async fn join_with(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    nameplate: &Value,
    who: &str,
) -> (Client, Value) {
    let mut c = Client::connect_with(addr, headers).await.unwrap();
    c.send(json!({"type": "room_join", "nameplate": nameplate, "display_name": who}))
        .await;
    let joined = c.expect("room_joined").await;
    c.expect("room_state").await;
    (c, joined)
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
    odd_requests_are_refused_and_change_nothing,
    tokens_of_ended_memberships_are_dead,
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

/// A record this version cannot read (say, written by another version
/// during a rolling upgrade) that is due first must not keep the sweep from
/// the rooms after it.
#[tokio::test]
async fn an_unreadable_room_record_does_not_stop_the_sweep() {
    let env = Store::Redis.start(&[]).await;
    let redis = env.redis.as_ref().unwrap();
    let mut conn = redis.conn().await;
    for i in 0..3 {
        let id = format!("bad{i}");
        let _: () = ::redis::cmd("HSET")
            .arg(format!("tallow:r:{id}"))
            .arg("v")
            .arg(1)
            .arg("b")
            .arg("{\"not\": \"a room\"}")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = ::redis::cmd("ZADD")
            .arg("tallow:rdl")
            .arg(1)
            .arg(&id)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let (mut a, _) = create(env.local_addr(), "Ada", json!({"ttl_secs": 1})).await;
    let closed = a.expect("room_closed").await;
    assert_eq!(closed["reason"], "expired");
}

fn node(redis: &common::RedisServer, extra: &[(&str, &str)]) -> common::Binary {
    let url = redis.url();
    let mut env = vec![
        ("REDIS_URL", url.as_str()),
        ("TALLOW_RESUME_GRACE_SECS", "2"),
        ("TALLOW_MAX_ROOMS_PER_IP", "2"),
    ];
    env.extend_from_slice(extra);
    common::Binary::spawn(&env)
}

/// Poll until `f` holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node SIGKILLed with room members: the others hear them go away and
/// time out; a room whose members were all there ends; nothing of either
/// is left in Redis, and the address they counted against is free again
/// (on any node).
#[tokio::test]
async fn members_of_a_killed_node_go_away_time_out_and_leave_nothing() {
    let redis = common::RedisServer::start();
    let mut n1 = node(&redis, &[]);
    let n2 = node(&redis, &[]);
    let (mut a, created) = create(n2.addr, "Ada", json!({})).await;
    let (_b, _) = join_with(n1.addr, &[], &created["nameplate"], "Bob").await;
    a.expect("room_member_joined").await;
    // The address holds its two memberships, across the nodes.
    let mut c = Client::connect(n1.addr).await;
    c.send(json!({"type": "room_create", "display_name": "Cy"}))
        .await;
    c.expect_error("too_many_rooms").await;
    drop(c);
    n1.kill9();
    assert_eq!(a.expect("room_member_away").await["member"], 2);
    let left = a.expect("room_member_left").await;
    assert_eq!(
        (left["member"].clone(), left["reason"].clone()),
        (json!(2), json!("timeout"))
    );
    // Bob's membership no longer counts: another fits.
    let mut d = Client::connect(n2.addr).await;
    d.send(json!({"type": "room_create", "display_name": "Dee"}))
        .await;
    d.expect("room_created").await;
    d.expect("room_state").await;
    d.send(json!({"type": "room_leave"})).await;
    d.expect("room_left").await;
    a.send(json!({"type": "room_leave"})).await;
    a.expect("room_left").await;
    eventually(Duration::from_secs(10), "room keys gone", || async {
        redis.keys().await.iter().all(|k| {
            !k.contains(":r:")
                && !k.contains(":rtok:")
                && !k.contains(":rip:")
                && !k.contains(":rns:")
                && !k.contains(":rnp:")
                && !k.contains(":near:")
        })
    })
    .await;
}

/// A room whose only members were on a node that was SIGKILLed ends once
/// their grace runs out, with nothing left in Redis.
#[tokio::test]
async fn a_room_entirely_on_a_killed_node_ends() {
    let redis = common::RedisServer::start();
    let mut n1 = node(&redis, &[]);
    let n2 = node(&redis, &[]);
    let (_a, created) = create(n1.addr, "Ada", json!({})).await;
    let (_b, _) = join_with(n1.addr, &[], &created["nameplate"], "Bob").await;
    n1.kill9();
    let mut e = Client::connect(n2.addr).await;
    // Within node TTL + grace + a sweep or two, the room is gone.
    tokio::time::sleep(Duration::from_secs(10)).await;
    e.send(json!({"type": "room_join", "nameplate": created["nameplate"], "display_name": "Eve"}))
        .await;
    e.expect_error("unknown_room").await;
    eventually(Duration::from_secs(10), "only n2's keys remain", || async {
        redis.keys().await == ["tallow:beats", "tallow:streaks"]
    })
    .await;
}

/// Redis stalls (SIGSTOP) for longer than the node TTL under a room with
/// members on two nodes: afterwards no member hears a false departure, and
/// the room works as before.
#[tokio::test]
async fn a_redis_stall_tells_no_member_a_false_departure() {
    let redis = common::RedisServer::start();
    let n1 = node(&redis, &[("TALLOW_RESUME_GRACE_SECS", "3")]);
    let n2 = node(&redis, &[("TALLOW_RESUME_GRACE_SECS", "3")]);
    let (mut a, created) = create(n1.addr, "Ada", json!({})).await;
    let (mut b, _) = join_with(n2.addr, &[], &created["nameplate"], "Bob").await;
    a.expect("room_member_joined").await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.cont();
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            e = a.next_event() => seen.push(("a", e)),
            e = b.next_event() => seen.push(("b", e)),
        }
    }
    let seen: Vec<String> = seen
        .into_iter()
        .map(|(who, e)| match e {
            common::Event::Json(v) => format!("{who}: {v}"),
            common::Event::Closed(c, r) => format!("{who}: closed {c} {r}"),
        })
        .collect();
    assert!(seen.is_empty(), "after the stall: {seen:?}");
    b.send(json!({"type": "room_invite", "to": [1]})).await;
    b.expect("room_invited").await;
    assert_eq!(a.expect("room_invite").await["from"], 2);
}

/// Two addresses behind the trusted proxy: `hostile` invites `victim`
/// (its fellow room member) without ever taking the sessions. Each
/// invitation reserves a seat for the victim, counted against the
/// victim's address: a member can keep another from opening any session.
#[tokio::test]
async fn invitations_cannot_use_up_the_invitees_session_quota() {
    let env = Store::Memory
        .start(&[
            "--trust-forwarded-for",
            "true",
            "--trusted-proxies",
            "127.0.0.1",
            "--max-sessions-per-ip",
            "4",
        ])
        .await;
    let addr = env.local_addr();
    let (mut hostile, created) =
        create_with(addr, &[("x-forwarded-for", "203.0.113.66")], "H", json!({})).await;
    let (mut victim, _) = join_with(
        addr,
        &[("x-forwarded-for", "198.51.100.5")],
        &created["nameplate"],
        "V",
    )
    .await;
    hostile.expect("room_member_joined").await;
    // As many invitations as the hostile address may open: the inviter
    // pays for both seats of each until its own quota is spent.
    let mut sent = 0;
    for _ in 0..8 {
        hostile
            .send(json!({"type": "room_invite", "to": [2]}))
            .await;
        let v = hostile.recv().await;
        if v["type"] == "error" {
            assert_eq!(v["code"], "too_many_sessions", "{v}");
            break;
        }
        assert_eq!(v["type"], "room_invited", "{v}");
        victim.expect("room_invite").await;
        sent += 1;
    }
    assert_eq!(sent, 2, "two seats per invitation, four seats per address");
    // The victim's whole quota is still its own.
    let mut own = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect_with(addr, &[("x-forwarded-for", "198.51.100.5")])
            .await
            .unwrap();
        c.send(json!({"type": "create"})).await;
        let v = c.recv().await;
        assert_eq!(v["type"], "created", "the victim's own session: {v}");
        own.push(c);
    }
}

/// Hostile input: every odd request is refused with a reason (never a
/// crash, never a close), and the connection and its room carry on.
async fn odd_requests_are_refused_and_change_nothing(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let (mut a, created) = create(addr, "Ada", json!({})).await;
    let (mut b, _) = join_with(addr, &[], &created["nameplate"], "Bob").await;
    a.expect("room_member_joined").await;
    let many: Vec<u32> = (0..10_000).collect();
    let odd = [
        r#"{"type":"room_invite","to":[-1]}"#.to_owned(),
        r#"{"type":"room_invite","to":["2"]}"#.to_owned(),
        r#"{"type":"room_invite","to":[2.5]}"#.to_owned(),
        r#"{"type":"room_invite","to":[4294967296]}"#.to_owned(),
        r#"{"type":"room_invite","to":2}"#.to_owned(),
        r#"{"type":"room_invite","to":null}"#.to_owned(),
        r#"{"type":"room_invite","to":[]}"#.to_owned(),
        json!({"type": "room_invite", "to": many}).to_string(),
        r#"{"type":"room_invite","to":[1]}"#.to_owned(),
        r#"{"type":"room_invite","to":[99]}"#.to_owned(),
        r#"{"type":"room_join","nameplate":417,"display_name":"x"}"#.to_owned(),
        r#"{"type":"room_create","display_name":"x","max_members":-1}"#.to_owned(),
        r#"{"type":"room_create","display_name":"x","ttl_secs":1e20}"#.to_owned(),
        r#"{"type":"room_create","display_name":{"a":1}}"#.to_owned(),
        r#"{"type":"room_resume","token":null}"#.to_owned(),
        r#"{"type":"room_resume","token":"x","token":"y"}"#.to_owned(),
        json!({"type": "room_resume", "token": created["resume_token"]}).to_string(),
        json!({"type": "room_create", "display_name": "\u{202e}".repeat(10)}).to_string(),
        json!({"type": "resume", "token": created["resume_token"], "last_seq": 0}).to_string(),
    ];
    for frame in &odd {
        a.send_text(frame).await;
        let v = a.recv().await;
        assert_eq!(v["type"], "error", "{frame} -> {v}");
    }
    a.assert_alive().await;
    // The room is as it was, and b heard nothing of all that.
    b.assert_alive().await;
    b.send(json!({"type": "room_invite", "to": [1]})).await;
    b.expect("room_invited").await;
    assert_eq!(a.expect("room_invite").await["from"], 2);
    // A room token is no session token, nor the other way round.
    let mut s = Client::connect(addr).await;
    s.send(json!({"type": "create"})).await;
    let seat = s.expect("created").await;
    let mut t = Client::connect(addr).await;
    t.send(json!({"type": "room_resume", "token": seat["resume_token"]}))
        .await;
    t.expect_error("invalid_resume_token").await;
}

/// Tokens after the fact: a membership left, or a room closed, cannot be
/// resumed; the taker of a live membership supersedes its holder (4001).
async fn tokens_of_ended_memberships_are_dead(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let (mut a, created) = create(addr, "Ada", json!({})).await;
    let (mut b, joined_b) = join_with(addr, &[], &created["nameplate"], "Bob").await;
    let (mut c, joined_c) = join_with(addr, &[], &created["nameplate"], "Cy").await;
    a.expect("room_member_joined").await;
    a.expect("room_member_joined").await;
    b.expect("room_member_joined").await;
    c.send(json!({"type": "room_leave"})).await;
    c.expect("room_left").await;
    a.expect("room_member_left").await;
    b.expect("room_member_left").await;
    let mut x = Client::connect(addr).await;
    x.send(json!({"type": "room_resume", "token": joined_c["resume_token"]}))
        .await;
    x.expect_error("invalid_resume_token").await;
    // Taking over b's membership closes b's connection.
    let mut b2 = Client::connect(addr).await;
    b2.send(json!({"type": "room_resume", "token": joined_b["resume_token"]}))
        .await;
    b2.expect("room_resumed").await;
    b2.expect("room_state").await;
    b.expect_close(4001).await;
    a.send(json!({"type": "room_close"})).await;
    a.expect("room_closed").await;
    b2.expect("room_closed").await;
    for t in [&created["resume_token"], &joined_b["resume_token"]] {
        x.send(json!({"type": "room_resume", "token": t})).await;
        x.expect_error("invalid_resume_token").await;
    }
}

/// Races across two nodes sharing Redis: several joins for the last seat
/// (exactly one gets it), and several clients of one address opening the
/// nearby room at once (all end up in the same one, each with its own id).
#[tokio::test]
async fn racing_joins_across_nodes() {
    let redis = common::RedisServer::start();
    let n1 = node(&redis, &[("TALLOW_MAX_ROOMS_PER_IP", "20")]);
    let n2 = node(&redis, &[("TALLOW_MAX_ROOMS_PER_IP", "20")]);
    let addrs = [n1.addr, n2.addr];
    let (_a, created) = create(n1.addr, "Ada", json!({"max_members": 3})).await;
    let (_b, _) = join_with(n2.addr, &[], &created["nameplate"], "Bob").await;
    let mut racers = Vec::new();
    for i in 0..6 {
        racers.push(Client::connect(addrs[i % 2]).await);
    }
    let np = created["nameplate"].clone();
    let results = futures_util::future::join_all(racers.iter_mut().map(|c| {
        let np = np.clone();
        async move {
            c.send(json!({"type": "room_join", "nameplate": np, "display_name": "R"}))
                .await;
            let v = c.recv().await;
            v["type"].as_str().unwrap_or_default().to_owned()
                + "/"
                + v["code"].as_str().unwrap_or("")
        }
    }))
    .await;
    let won = results.iter().filter(|r| *r == "room_joined/").count();
    let full = results.iter().filter(|r| *r == "error/room_full").count();
    assert_eq!((won, full), (1, 5), "{results:?}");

    let mut near = Vec::new();
    for i in 0..6 {
        near.push(Client::connect(addrs[i % 2]).await);
    }
    let joined = futures_util::future::join_all(near.iter_mut().map(|c| async move {
        c.send(json!({"type": "nearby_join", "display_name": "N"}))
            .await;
        c.expect("room_joined").await
    }))
    .await;
    let rooms: std::collections::HashSet<_> = joined.iter().map(|j| j["room"].clone()).collect();
    let ids: std::collections::HashSet<_> = joined.iter().map(|j| j["member"].clone()).collect();
    assert_eq!((rooms.len(), ids.len()), (1, 6), "{joined:?}");
}

/// Redis SIGKILLed and restarted empty: every member learns its room is
/// gone (`room_closed {reason: "gone"}`) within a ping interval, and can
/// open a new one on the same connection.
#[tokio::test]
async fn a_redis_restart_ends_rooms_for_their_members() {
    let mut env = Store::Redis
        .start(&["--ping-interval-secs", "1", "--idle-timeout-secs", "30"])
        .await;
    let addr = env.local_addr();
    let (mut a, created) = create(addr, "Ada", json!({})).await;
    let (mut b, _) = join_with(addr, &[], &created["nameplate"], "Bob").await;
    a.expect("room_member_joined").await;
    let redis = env.redis.as_mut().unwrap();
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    for x in [&mut a, &mut b] {
        let v = x.recv().await;
        assert_eq!(
            (v["type"].clone(), v["reason"].clone()),
            (json!("room_closed"), json!("gone")),
            "{v}"
        );
    }
    a.send(json!({"type": "room_create", "display_name": "Ada"}))
        .await;
    loop {
        let v = a.recv().await;
        if v["type"] == "room_created" {
            break;
        }
        // The store may still be coming back.
        assert_eq!(v["code"], "presence_unavailable", "{v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.send(json!({"type": "room_create", "display_name": "Ada"}))
            .await;
    }
    a.expect("room_state").await;
}
