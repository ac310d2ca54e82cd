//! Rooms and nearby discovery with real WebSocket clients against a real
//! server, on the memory store and on Redis (one node, and two nodes
//! sharing one redis-server): create, join, leave, rejoin, expiry, close,
//! the member limit, isolation between rooms, invitations that open
//! pairwise sessions, and who sees whom nearby.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Event, RedisServer, Store};
use serde_json::{json, Value};

/// Nothing (no JSON message, no close) reaches `c` within `ms`.
async fn quiet(c: &mut Client, ms: u64) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(ms), c.next_event()).await {
        match ev {
            Event::Json(v) => panic!("expected silence, got {v}"),
            Event::Closed(code, why) => panic!("expected silence, got close {code} {why}"),
        }
    }
}

async fn create(addr: SocketAddr, who: &str, extra: Value) -> (Client, Value) {
    let mut c = Client::connect(addr).await;
    let mut msg = json!({"type": "room_create", "name": "team", "display_name": who});
    for (k, v) in extra.as_object().into_iter().flatten() {
        msg[k] = v.clone();
    }
    c.send(msg).await;
    let created = c.expect("room_created").await;
    let state = c.expect("room_state").await;
    assert_eq!(state["you"], created["member"]);
    assert_eq!(state["owner"], created["member"]);
    (c, created)
}

async fn join(addr: SocketAddr, nameplate: &Value, who: &str) -> (Client, Value, Value) {
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "room_join", "nameplate": nameplate, "display_name": who}))
        .await;
    let joined = c.expect("room_joined").await;
    assert_eq!(joined["kind"], "named");
    let state = c.expect("room_state").await;
    (c, joined, state)
}

fn names(state: &Value) -> Vec<(u64, String)> {
    state["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["member"].as_u64().unwrap(),
                m["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn lifecycle(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let (mut a, created) = create(addr, "Ada", json!({})).await;
    assert_eq!(created["member"], 1);
    let np = created["nameplate"].clone();
    // Long enough that the failed-join limit keeps it out of reach.
    assert!(np.as_str().unwrap().len() >= 6, "{np}");
    let (mut b, joined_b, state_b) = join(addr, &np, "Bob").await;
    assert_eq!(joined_b["member"], 2);
    assert_eq!(state_b["name"], "team");
    assert_eq!(state_b["owner"], 1);
    assert_eq!(names(&state_b), vec![(1, "Ada".into()), (2, "Bob".into())]);
    let ev = a.expect("room_member_joined").await;
    assert_eq!(
        (ev["member"].clone(), ev["name"].clone()),
        (json!(2), json!("Bob"))
    );
    let (mut c, joined_c, _) = join(addr, &np, "Cy").await;
    assert_eq!(joined_c["member"], 3);
    assert_eq!(a.expect("room_member_joined").await["member"], 3);
    assert_eq!(b.expect("room_member_joined").await["member"], 3);

    // Bob's connection drops; he comes back with his token.
    let token_b = joined_b["resume_token"].clone();
    drop(b);
    assert_eq!(a.expect("room_member_away").await["member"], 2);
    assert_eq!(c.expect("room_member_away").await["member"], 2);
    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "room_resume", "token": token_b}))
        .await;
    let resumed = b.expect("room_resumed").await;
    assert_eq!(resumed["member"], 2);
    let state = b.expect("room_state").await;
    assert_eq!(names(&state).len(), 3);
    assert_eq!(a.expect("room_member_back").await["member"], 2);
    assert_eq!(c.expect("room_member_back").await["member"], 2);

    // Cy leaves for good.
    c.send(json!({"type": "room_leave"})).await;
    c.expect("room_left").await;
    for x in [&mut a, &mut b] {
        let ev = x.expect("room_member_left").await;
        assert_eq!(
            (ev["member"].clone(), ev["reason"].clone()),
            (json!(3), json!("left"))
        );
    }
    // Someone who left hears nothing more of the room.
    let (d, _, _) = join(addr, &np, "Dee").await;
    a.expect("room_member_joined").await;
    b.expect("room_member_joined").await;
    quiet(&mut c, 300).await;

    // Only the owner closes it.
    b.send(json!({"type": "room_close"})).await;
    b.expect_error("not_room_owner").await;
    a.send(json!({"type": "room_close"})).await;
    assert_eq!(a.expect("room_closed").await["reason"], "closed");
    assert_eq!(b.expect("room_closed").await["reason"], "closed");
    let mut d = d;
    assert_eq!(d.expect("room_closed").await["reason"], "closed");
    // Its code is gone with it.
    let mut e = Client::connect(addr).await;
    e.send(json!({"type": "room_join", "nameplate": np, "display_name": "Eve"}))
        .await;
    e.expect_error("unknown_room").await;
    quiet(&mut c, 200).await;
}

async fn member_limit_and_names(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let (_a, created) = create(addr, "Ada", json!({"max_members": 2})).await;
    let np = created["nameplate"].clone();
    let (_b, _, _) = join(addr, &np, "Bob").await;
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "room_join", "nameplate": np, "display_name": "Cy"}))
        .await;
    c.expect_error("room_full").await;
    // Bad names and limits are refused with a reason, not a crash.
    for bad in [
        json!({"type": "room_create", "display_name": ""}),
        json!({"type": "room_create", "display_name": "x".repeat(41)}),
        json!({"type": "room_create", "display_name": "Eve\u{202e}gpj.exe"}),
        json!({"type": "room_create", "display_name": "A", "max_members": 1}),
        json!({"type": "room_create", "display_name": "A", "max_members": 11}),
        json!({"type": "room_create", "display_name": "A", "ttl_secs": 0}),
        json!({"type": "room_create", "display_name": "A", "ttl_secs": 86401}),
        json!({"type": "room_join", "nameplate": "007", "display_name": "A"}),
    ] {
        c.send(bad.clone()).await;
        let err = c.expect("error").await;
        assert!(
            err["code"] == "bad_message" || err["code"] == "unknown_room",
            "{bad} -> {err}"
        );
    }
    // A connection holds a seat or a room, not both.
    let mut s = Client::connect(addr).await;
    s.send(json!({"type": "create"})).await;
    s.expect("created").await;
    s.send(json!({"type": "room_create", "display_name": "A"}))
        .await;
    s.expect_error("already_in_session").await;
    let (mut r, _) = create(addr, "Ada", json!({})).await;
    r.send(json!({"type": "create"})).await;
    r.expect_error("already_in_room").await;
    r.send(json!({"type": "room_create", "display_name": "A"}))
        .await;
    r.expect_error("already_in_room").await;
}

async fn expiry_and_grace(store: Store) {
    let env = store.start(&["--resume-grace-secs", "1"]).await;
    let addr = env.local_addr();
    let (mut a, created) = create(addr, "Ada", json!({"ttl_secs": 4})).await;
    let (b, joined, _) = join(addr, &created["nameplate"], "Bob").await;
    a.expect("room_member_joined").await;
    drop(b);
    a.expect("room_member_away").await;
    let left = a.expect("room_member_left").await;
    assert_eq!(left["reason"], "timeout");
    // Too late to come back.
    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "room_resume", "token": joined["resume_token"]}))
        .await;
    b.expect_error("invalid_resume_token").await;
    assert_eq!(a.expect("room_closed").await["reason"], "expired");
}

async fn rooms_are_isolated(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let (mut a, r1) = create(addr, "Ada", json!({})).await;
    let (mut b, _, _) = join(addr, &r1["nameplate"], "Bob").await;
    a.expect("room_member_joined").await;
    let (mut c, r2) = create(addr, "Cy", json!({})).await;
    let (mut d, _, state_d) = join(addr, &r2["nameplate"], "Dee").await;
    c.expect("room_member_joined").await;
    assert_ne!(r1["room"], r2["room"]);
    assert_ne!(r1["nameplate"], r2["nameplate"]);
    assert_eq!(names(&state_d), vec![(1, "Cy".into()), (2, "Dee".into())]);
    let mut outsider = Client::connect(addr).await;

    // Everything that happens in room 1 ...
    let (e, _, _) = join(addr, &r1["nameplate"], "Eve").await;
    a.expect("room_member_joined").await;
    b.expect("room_member_joined").await;
    a.send(json!({"type": "room_invite", "to": [2]})).await;
    a.expect("room_invited").await;
    b.expect("room_invite").await;
    drop(e);
    a.expect("room_member_away").await;
    b.expect("room_member_away").await;
    // ... reaches no one outside it. Member ids are per room: Cy's member
    // 3 does not exist, and member 2 of room 2 is not reachable from room 1.
    c.send(json!({"type": "room_invite", "to": [3]})).await;
    c.expect_error("unknown_member").await;
    quiet(&mut c, 300).await;
    quiet(&mut d, 100).await;
    quiet(&mut outsider, 100).await;
    // A client that is in no room has no room to act on.
    outsider
        .send(json!({"type": "room_invite", "to": [1]}))
        .await;
    outsider.expect_error("no_room").await;
    outsider.send(json!({"type": "room_close"})).await;
    outsider.expect_error("no_room").await;
}

/// An invitation opens a pairwise session that both take with `resume`; the
/// inviter holds seat 0 and opens the post-quantum handshake.
async fn invitations_open_sessions(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let (mut a, created) = create(addr, "Ada", json!({})).await;
    let (mut b, _, _) = join(addr, &created["nameplate"], "Bob").await;
    let (mut c, _, _) = join(addr, &created["nameplate"], "Cy").await;
    a.expect("room_member_joined").await;
    a.expect("room_member_joined").await;
    b.expect("room_member_joined").await;
    a.send(json!({"type": "room_invite", "to": [3, 2, 2]}))
        .await;
    let mut mine = Vec::new();
    for _ in 0..2 {
        mine.push(a.expect("room_invited").await);
    }
    assert_eq!(mine[0]["to"], 2);
    assert_eq!(mine[1]["to"], 3);
    let ib = b.expect("room_invite").await;
    let ic = c.expect("room_invite").await;
    assert_eq!(ib["from"], 1);
    assert_eq!(ib["session"], mine[0]["session"]);
    assert_eq!(ic["session"], mine[1]["session"]);
    assert_ne!(ib["resume_token"], mine[0]["resume_token"]);

    for (inv, theirs) in [(&mine[0], &ib), (&mine[1], &ic)] {
        let sid = inv["session"].as_str().unwrap();
        let mut s0 = Client::connect(addr).await;
        s0.send(json!({"type": "resume", "token": inv["resume_token"], "last_seq": 0}))
            .await;
        let r0 = s0.expect("resumed").await;
        assert_eq!(
            (r0["seat"].clone(), r0["paired"].clone()),
            (json!(0), json!(true))
        );
        assert!(r0["ice_servers"].is_array());
        s0.expect("peer_away").await;
        let mut s1 = Client::connect(addr).await;
        s1.send(json!({"type": "resume", "token": theirs["resume_token"], "last_seq": 0}))
            .await;
        let r1 = s1.expect("resumed").await;
        assert_eq!(r1["seat"], 1);
        s0.expect("peer_back").await;
        common::open_handshake(&mut s0, &mut s1, sid).await;
        s1.send(json!({"type": "send", "seq": 1, "body": "from the invitee"}))
            .await;
        s1.expect("ack").await;
        let m = s0.expect("message").await;
        assert_eq!(m["body"], "from the invitee");
    }
    // An invitation token is a seat token: used twice, the first holder is
    // superseded as with any resume; a made-up one is refused.
    let mut x = Client::connect(addr).await;
    x.send(json!({"type": "resume", "token": "00".repeat(32), "last_seq": 0}))
        .await;
    x.expect_error("invalid_resume_token").await;
}

async fn limits(store: Store) {
    let env = store
        .start(&["--max-rooms-per-ip", "2", "--room-invites-per-min", "2"])
        .await;
    let addr = env.local_addr();
    let (mut a, created) = create(addr, "Ada", json!({})).await;
    let (_b, _, _) = join(addr, &created["nameplate"], "Bob").await;
    a.expect("room_member_joined").await;
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "room_create", "display_name": "Cy"}))
        .await;
    c.expect_error("too_many_rooms").await;
    // Nearby rooms are bounded by their size, not by this limit.
    c.send(json!({"type": "nearby_join", "display_name": "Cy"}))
        .await;
    c.expect("room_joined").await;
    c.expect("room_state").await;
    // Offers (invitations) are rate limited per member.
    a.send(json!({"type": "room_invite", "to": [2]})).await;
    a.expect("room_invited").await;
    a.send(json!({"type": "room_invite", "to": [2]})).await;
    a.expect("room_invited").await;
    a.send(json!({"type": "room_invite", "to": [2]})).await;
    let err = a.expect_error("too_many_invites").await;
    assert_eq!(err["retryable"], true);
    // Guessing room codes counts as failed joins.
    let env = store.start(&["--max-failed-joins-per-ip", "3"]).await;
    let mut g = Client::connect(env.local_addr()).await;
    for n in 0..3 {
        g.send(json!({"type": "room_join", "nameplate": (900_000 + n).to_string(), "display_name": "G"}))
            .await;
        g.expect_error("unknown_room").await;
    }
    g.send(json!({"type": "room_join", "nameplate": "900100", "display_name": "G"}))
        .await;
    g.expect_error("too_many_failed_joins").await;
}

/// Nearby rooms group clients by the address the server sees: behind the
/// trusted proxy (loopback here) that is the last X-Forwarded-For entry.
async fn nearby(store: Store) {
    let env = store
        .start(&[
            "--trust-forwarded-for",
            "true",
            "--trusted-proxies",
            "127.0.0.1",
        ])
        .await;
    let addr = env.local_addr();
    let at = |ip: &'static str| async move {
        let mut c = Client::connect_with(addr, &[("x-forwarded-for", ip)])
            .await
            .unwrap();
        c.send(json!({"type": "nearby_join", "display_name": format!("laptop {ip}")}))
            .await;
        let joined = c.expect("room_joined").await;
        assert_eq!(joined["kind"], "nearby");
        let state = c.expect("room_state").await;
        (c, state)
    };
    let (mut x, sx) = at("198.51.100.1").await;
    assert_eq!(names(&sx).len(), 1);
    assert_eq!(sx["owner"], Value::Null);
    let (mut y, sy) = at("198.51.100.1").await;
    assert_eq!(
        names(&sy),
        vec![
            (1, "laptop 198.51.100.1".into()),
            (2, "laptop 198.51.100.1".into())
        ]
    );
    assert_eq!(x.expect("room_member_joined").await["member"], 2);
    let (mut z, sz) = at("203.0.113.5").await;
    assert_eq!(names(&sz).len(), 1, "another address sees no one");
    quiet(&mut x, 300).await;
    quiet(&mut z, 100).await;
    // Start a session without a code: an invitation, as in a room.
    y.send(json!({"type": "room_invite", "to": [1]})).await;
    y.expect("room_invited").await;
    assert_eq!(x.expect("room_invite").await["from"], 2);
    // Nearby rooms have no owner to close them.
    y.send(json!({"type": "room_close"})).await;
    y.expect_error("not_room_owner").await;
    // The last one out ends the room; a newcomer starts afresh.
    x.send(json!({"type": "room_leave"})).await;
    x.expect("room_left").await;
    assert_eq!(y.expect("room_member_left").await["member"], 1);
    y.send(json!({"type": "room_leave"})).await;
    y.expect("room_left").await;
    let (_w, sw) = at("198.51.100.1").await;
    assert_eq!(names(&sw).len(), 1);
    assert_ne!(sw["room"], sx["room"]);
}

/// A forged X-Forwarded-For from a peer that is not a trusted proxy
/// changes nothing: the server goes by the socket address.
async fn forged_forwarded_for(store: Store) {
    for flags in [
        vec!["--trust-forwarded-for", "false"],
        vec![
            "--trust-forwarded-for",
            "true",
            "--trusted-proxies",
            "10.0.0.0/8",
        ],
    ] {
        let env = store.start(&flags).await;
        let addr = env.local_addr();
        let mut a = Client::connect_with(addr, &[("x-forwarded-for", "198.51.100.1")])
            .await
            .unwrap();
        a.send(json!({"type": "nearby_join", "display_name": "A"}))
            .await;
        a.expect("room_joined").await;
        a.expect("room_state").await;
        let mut b = Client::connect_with(addr, &[("x-forwarded-for", "203.0.113.7")])
            .await
            .unwrap();
        b.send(json!({"type": "nearby_join", "display_name": "B"}))
            .await;
        b.expect("room_joined").await;
        let state = b.expect("room_state").await;
        assert_eq!(names(&state).len(), 2, "{flags:?}: both are 127.0.0.1");
        a.expect("room_member_joined").await;
    }
}

/// Everyone at one address shares its nearby room, so the limit on rooms
/// per address (named rooms) must not cap it: an office of ten behind one
/// NAT all see each other, up to TALLOW_NEARBY_MAX_MEMBERS.
async fn nearby_is_not_capped_by_rooms_per_address(store: Store) {
    let env = store
        .start(&["--max-rooms-per-ip", "2", "--nearby-max-members", "4"])
        .await;
    let addr = env.local_addr();
    let mut held = Vec::new();
    for n in 0..4 {
        let mut c = Client::connect(addr).await;
        c.send(json!({"type": "nearby_join", "display_name": format!("desk {n}")}))
            .await;
        c.expect("room_joined").await;
        let state = c.expect("room_state").await;
        assert_eq!(names(&state).len(), n + 1);
        held.push(c);
    }
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "nearby_join", "display_name": "desk 5"}))
        .await;
    c.expect_error("room_full").await;
    // Named rooms are still limited per address, nearby ones aside.
    let (_a, _) = create(addr, "Ada", json!({})).await;
    let (_b, _) = create(addr, "Bob", json!({})).await;
    c.send(json!({"type": "room_create", "display_name": "Cy"}))
        .await;
    c.expect_error("too_many_rooms").await;
}

async fn rooms_gauge(store: Store) {
    let env = store.start(&[]).await;
    let addr = env.local_addr();
    let gauge = || async move {
        let (_, m) = common::http_get(addr, "/metrics").await;
        m.lines()
            .find_map(|l| l.strip_prefix("tallow_rooms "))
            .map(|v| v.trim().to_owned())
    };
    assert_eq!(gauge().await.as_deref(), Some("0"));
    let (_a, _) = create(addr, "Ada", json!({})).await;
    let mut n = Client::connect(addr).await;
    n.send(json!({"type": "nearby_join", "display_name": "N"}))
        .await;
    n.expect("room_joined").await;
    assert_eq!(gauge().await.as_deref(), Some("2"));
}

on_both_stores!(
    nearby_is_not_capped_by_rooms_per_address,
    rooms_gauge,
    lifecycle,
    member_limit_and_names,
    expiry_and_grace,
    rooms_are_isolated,
    invitations_open_sessions,
    limits,
    nearby,
    forged_forwarded_for,
);

/// Two nodes sharing one Redis: members on different nodes share a room,
/// a member moves nodes by resuming, invitations open sessions across
/// nodes, and a close reaches everyone.
#[tokio::test]
async fn a_room_spans_two_nodes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let n1 = common::start(&["--redis-url", &url]).await;
    let n2 = common::start(&["--redis-url", &url]).await;
    let (a1, a2) = (n1.local_addr(), n2.local_addr());
    let (mut a, created) = create(a1, "Ada", json!({})).await;
    let np = created["nameplate"].clone();
    let (mut b, joined_b, state) = join(a2, &np, "Bob").await;
    assert_eq!(names(&state), vec![(1, "Ada".into()), (2, "Bob".into())]);
    assert_eq!(a.expect("room_member_joined").await["member"], 2);
    let (mut c, _, _) = join(a1, &np, "Cy").await;
    a.expect("room_member_joined").await;
    b.expect("room_member_joined").await;

    // Bob moves from node 2 to node 1.
    drop(b);
    a.expect("room_member_away").await;
    c.expect("room_member_away").await;
    let mut b = Client::connect(a1).await;
    b.send(json!({"type": "room_resume", "token": joined_b["resume_token"]}))
        .await;
    b.expect("room_resumed").await;
    b.expect("room_state").await;
    a.expect("room_member_back").await;
    c.expect("room_member_back").await;

    // Cy (node 1) invites Bob; their session runs across the nodes.
    c.send(json!({"type": "room_invite", "to": [2]})).await;
    let mine = c.expect("room_invited").await;
    let theirs = b.expect("room_invite").await;
    let mut s0 = Client::connect(a2).await;
    s0.send(json!({"type": "resume", "token": mine["resume_token"], "last_seq": 0}))
        .await;
    s0.expect("resumed").await;
    s0.expect("peer_away").await;
    let mut s1 = Client::connect(a1).await;
    s1.send(json!({"type": "resume", "token": theirs["resume_token"], "last_seq": 0}))
        .await;
    s1.expect("resumed").await;
    s0.expect("peer_back").await;
    common::open_handshake(&mut s0, &mut s1, mine["session"].as_str().unwrap()).await;

    // A member on node 2 joins and the owner closes from node 1.
    let (mut d, _, _) = join(a2, &np, "Dee").await;
    for x in [&mut a, &mut b, &mut c] {
        x.expect("room_member_joined").await;
    }
    a.send(json!({"type": "room_close"})).await;
    a.expect("room_closed").await;
    for x in [&mut b, &mut c, &mut d] {
        assert_eq!(x.expect("room_closed").await["reason"], "closed");
    }
    // Nothing of the room is left in Redis once it lingered out, except
    // the closed record itself until then.
    let keys = redis.keys().await;
    assert!(
        keys.iter()
            .all(|k| !k.contains(":rnp:") && !k.contains(":rtok:")),
        "{keys:?}"
    );
}
