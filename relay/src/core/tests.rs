//! The core driven with a recording Io and a hand-advanced clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_codec::rfc5389::attributes::{
    ErrorCode, MessageIntegrity, Nonce, Realm, Username, XorMappedAddress,
};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5766::attributes::{
    Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayAddress,
};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use stun_codec::{Message, MessageClass, Method, TransactionId};

use super::*;
use crate::codec::ChannelNumber;
use crate::credentials;

#[derive(Default)]
struct FakeIo {
    to_client: Vec<(ClientAddr, Vec<u8>)>,
    to_peer: Vec<(RelayId, SocketAddr, Vec<u8>)>,
    next_port: u16,
    open: Vec<RelayId>,
    refuse_open: bool,
    /// The IPv4 address relayed addresses get (default 192.0.2.100).
    relay_v4: Option<&'static str>,
}

impl Io for FakeIo {
    fn send_to_client(&mut self, client: &ClientAddr, data: &[u8]) {
        self.to_client.push((*client, data.to_vec()));
    }
    fn send_to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]) {
        self.to_peer.push((relay, peer, data.to_vec()));
    }
    fn open_relay(&mut self, _: &ClientAddr, ipv6: bool, _: bool) -> Option<(RelayId, SocketAddr)> {
        if self.refuse_open {
            return None;
        }
        self.next_port += 1;
        let id = u32::from(self.next_port);
        self.open.push(id);
        let ip = if ipv6 {
            "::1"
        } else {
            self.relay_v4.unwrap_or("192.0.2.100")
        };
        Some((
            id,
            SocketAddr::new(ip.parse().unwrap(), 50000 + self.next_port),
        ))
    }
    fn close_relay(&mut self, relay: RelayId) {
        self.open.retain(|r| *r != relay);
    }
}

const SECRET: &str = "test-secret";

struct Harness {
    core: Core,
    io: FakeIo,
    now: Instant,
}

struct TestClient {
    addr: ClientAddr,
    username: String,
    password: String,
    nonce: Option<String>,
    txid: u8,
}

impl Harness {
    fn new(tweak: impl FnOnce(&mut CoreConfig)) -> Harness {
        let mut cfg = CoreConfig::new("tallow", Secret::new(SECRET));
        tweak(&mut cfg);
        let now = Instant::now();
        Harness {
            core: Core::new(cfg, RelayMetrics::default(), now),
            io: FakeIo::default(),
            now,
        }
    }

    fn client(&self, port: u16, label: &str) -> TestClient {
        let cred = credentials::issue(SECRET.as_bytes(), label, self.core.unix(self.now), 3600);
        TestClient {
            addr: ClientAddr {
                transport: Transport::Udp,
                addr: SocketAddr::new("198.51.100.1".parse().unwrap(), port),
            },
            username: cred.username,
            password: cred.password,
            nonce: None,
            txid: 0,
        }
    }

    /// Send `msg` from `c`, return the one response.
    fn exchange(&mut self, c: &TestClient, msg: Msg) -> Msg {
        let bytes = codec::encode(msg);
        self.io.to_client.clear();
        self.core.on_client(&mut self.io, &c.addr, &bytes, self.now);
        assert_eq!(self.io.to_client.len(), 1, "one response");
        let (to, bytes) = self.io.to_client.pop().unwrap();
        assert_eq!(to, c.addr);
        codec::decode(&bytes).expect("response decodes")
    }

    /// A signed request; learns the nonce on the first 401 and retries.
    fn request(&mut self, c: &mut TestClient, method: Method, attrs: Vec<Attr>) -> Msg {
        for _ in 0..2 {
            let msg = c.build(method, attrs.clone());
            let resp = self.exchange(c, msg);
            let code = resp.get_attribute::<ErrorCode>().map(|e| e.code());
            if matches!(code, Some(401) | Some(438)) && c.nonce.is_none() {
                c.nonce = Some(resp.get_attribute::<Nonce>().unwrap().value().to_owned());
                continue;
            }
            return resp;
        }
        panic!("no answer after the challenge");
    }

    fn allocate(&mut self, c: &mut TestClient) -> SocketAddr {
        let resp = self.request(c, ALLOCATE, vec![RequestedTransport::new(17).into()]);
        assert_eq!(resp.class(), MessageClass::SuccessResponse, "{resp:?}");
        resp.get_attribute::<XorRelayAddress>().unwrap().address()
    }
}

impl TestClient {
    fn build(&mut self, method: Method, attrs: Vec<Attr>) -> Msg {
        self.txid = self.txid.wrapping_add(1);
        let mut m = Message::new(
            MessageClass::Request,
            method,
            TransactionId::new([self.txid; 12]),
        );
        for a in attrs {
            m.add_attribute(a);
        }
        if let Some(nonce) = &self.nonce {
            let user = Username::new(self.username.clone()).unwrap();
            let realm = Realm::new("tallow".into()).unwrap();
            m.add_attribute(user.clone());
            m.add_attribute(realm.clone());
            m.add_attribute(Nonce::new(nonce.clone()).unwrap());
            let mi = MessageIntegrity::new_long_term_credential(&m, &user, &realm, &self.password)
                .unwrap();
            m.add_attribute(mi);
        }
        m
    }
}

fn code(m: &Msg) -> Option<u16> {
    m.get_attribute::<ErrorCode>().map(|e| e.code())
}

fn peer_attr(addr: &str) -> Attr {
    XorPeerAddress::new(addr.parse().unwrap()).into()
}

#[test]
fn binding_answers_with_the_mapped_address_without_auth() {
    let mut h = Harness::new(|_| {});
    let c = h.client(4000, "x");
    let req = Message::new(MessageClass::Request, BINDING, TransactionId::new([9; 12]));
    let resp = h.exchange(&c, req);
    assert_eq!(resp.class(), MessageClass::SuccessResponse);
    assert_eq!(
        resp.get_attribute::<XorMappedAddress>().unwrap().address(),
        c.addr.addr
    );
}

#[test]
fn allocate_challenges_then_succeeds_and_signs_its_answer() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    let first = c.build(ALLOCATE, vec![RequestedTransport::new(17).into()]);
    let challenge = h.exchange(&c, first);
    assert_eq!(code(&challenge), Some(401));
    assert_eq!(challenge.get_attribute::<Realm>().unwrap().text(), "tallow");
    assert!(challenge.get_attribute::<Nonce>().is_some());
    // The challenge is not counted as an auth failure.
    assert_eq!(h.core.metrics.auth_failures.get(), 0);

    let relayed = h.allocate(&mut c);
    assert_eq!(relayed.ip().to_string(), "192.0.2.100");
    assert_eq!(h.core.allocation_count(), 1);
    // Retransmission of the same Allocate: same answer, no second allocation.
    let txid = c.txid;
    c.txid = txid - 1;
    let again = c.build(ALLOCATE, vec![RequestedTransport::new(17).into()]);
    let resp = h.exchange(&c, again);
    assert_eq!(
        resp.get_attribute::<XorRelayAddress>().unwrap().address(),
        relayed
    );
    assert_eq!(h.core.allocation_count(), 1);
    // The response is signed with the client's key.
    let user = Username::new(c.username.clone()).unwrap();
    let realm = Realm::new("tallow".into()).unwrap();
    resp.get_attribute::<MessageIntegrity>()
        .unwrap()
        .check_long_term_credential(&user, &realm, &c.password)
        .unwrap();
}

#[test]
fn a_second_allocate_on_the_same_five_tuple_is_437() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    h.allocate(&mut c);
    let resp = h.request(&mut c, ALLOCATE, vec![RequestedTransport::new(17).into()]);
    assert_eq!(code(&resp), Some(437));
    // Refresh without an allocation is 437 too.
    let mut other = h.client(4001, "bob");
    let resp = h.request(&mut other, REFRESH, vec![]);
    assert_eq!(code(&resp), Some(437));
}

#[test]
fn forged_and_expired_credentials_get_401() {
    let mut h = Harness::new(|_| {});
    let mut forged = h.client(4000, "mallory");
    forged.password = "not-the-password".into();
    let resp = h.request(
        &mut forged,
        ALLOCATE,
        vec![RequestedTransport::new(17).into()],
    );
    assert_eq!(code(&resp), Some(401));
    assert_eq!(h.core.metrics.auth_failures.get(), 1);

    let mut expired = h.client(4001, "late");
    let unix = h.core.unix(h.now);
    let cred = credentials::issue(SECRET.as_bytes(), "late", unix - 7200, 3600);
    expired.username = cred.username;
    expired.password = cred.password;
    let resp = h.request(
        &mut expired,
        ALLOCATE,
        vec![RequestedTransport::new(17).into()],
    );
    assert_eq!(code(&resp), Some(401));
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn stale_nonces_get_438_with_a_fresh_one() {
    let mut h = Harness::new(|c| c.nonce_lifetime_secs = 60);
    let mut c = h.client(4000, "alice");
    h.allocate(&mut c);
    h.now += Duration::from_secs(61);
    let msg = c.build(REFRESH, vec![]);
    let resp = h.exchange(&c, msg);
    assert_eq!(code(&resp), Some(438));
    let fresh = resp.get_attribute::<Nonce>().unwrap().value().to_owned();
    assert_ne!(Some(&fresh), c.nonce.as_ref());
    c.nonce = Some(fresh);
    let msg = c.build(REFRESH, vec![]);
    assert_eq!(h.exchange(&c, msg).class(), MessageClass::SuccessResponse);
}

#[test]
fn internal_peers_are_refused_with_403_unless_allowed() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    h.allocate(&mut c);
    for bad in [
        "127.0.0.1:9",
        "10.1.2.3:9",
        "192.168.0.1:9",
        "169.254.169.254:80",
        "0.0.0.0:9",
        "224.0.0.1:9",
    ] {
        let resp = h.request(&mut c, CREATE_PERMISSION, vec![peer_attr(bad)]);
        assert_eq!(code(&resp), Some(403), "{bad}");
    }
    let resp = h.request(
        &mut c,
        CHANNEL_BIND,
        vec![ChannelNumber(0x4000).into(), peer_attr("127.0.0.1:9")],
    );
    assert_eq!(code(&resp), Some(403));
    assert_eq!(h.core.metrics.refused_peers.get(), 7);
    let resp = h.request(&mut c, CREATE_PERMISSION, vec![peer_attr("203.0.113.5:9")]);
    assert_eq!(resp.class(), MessageClass::SuccessResponse);

    let mut open = Harness::new(|c| c.policy.allow_loopback = true);
    let mut c = open.client(4000, "alice");
    open.allocate(&mut c);
    let resp = open.request(&mut c, CREATE_PERMISSION, vec![peer_attr("127.0.0.1:9")]);
    assert_eq!(resp.class(), MessageClass::SuccessResponse);
}

#[test]
fn quotas_per_user_and_in_total_give_486() {
    let mut h = Harness::new(|c| {
        c.user_quota = 2;
        c.total_quota = 3;
    });
    for port in 0..2 {
        let mut c = h.client(5000 + port, "same-user");
        // Same username for both: the label is the user.
        h.allocate(&mut c);
    }
    let mut third = h.client(5002, "same-user");
    let resp = h.request(
        &mut third,
        ALLOCATE,
        vec![RequestedTransport::new(17).into()],
    );
    assert_eq!(code(&resp), Some(486));
    let mut other = h.client(5003, "other");
    h.allocate(&mut other);
    let mut fourth = h.client(5004, "yet-another");
    let resp = h.request(
        &mut fourth,
        ALLOCATE,
        vec![RequestedTransport::new(17).into()],
    );
    assert_eq!(code(&resp), Some(486));
    assert_eq!(h.core.metrics.quota_refusals.get(), 2);
}

#[test]
fn unsupported_transport_and_family_are_refused() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    let resp = h.request(&mut c, ALLOCATE, vec![RequestedTransport::new(6).into()]);
    assert_eq!(code(&resp), Some(442));
    let resp = h.request(&mut c, ALLOCATE, vec![]);
    assert_eq!(code(&resp), Some(400));
    let v6 = RequestedAddressFamily::new(AddressFamily::V6);
    let resp = h.request(
        &mut c,
        ALLOCATE,
        vec![RequestedTransport::new(17).into(), v6.into()],
    );
    assert_eq!(code(&resp), Some(440));
    h.io.refuse_open = true;
    let resp = h.request(&mut c, ALLOCATE, vec![RequestedTransport::new(17).into()]);
    assert_eq!(code(&resp), Some(508));
}

#[test]
fn channel_data_and_send_indications_reach_the_peer_and_back() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    h.allocate(&mut c);
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    // Without permission nothing goes out.
    let mut send = Message::new(MessageClass::Indication, SEND, TransactionId::new([1; 12]));
    send.add_attribute(XorPeerAddress::new(peer));
    send.add_attribute(Data::new(b"early".to_vec()).unwrap());
    let send_bytes = codec::encode(send);
    h.core.on_client(&mut h.io, &c.addr, &send_bytes, h.now);
    assert!(h.io.to_peer.is_empty());

    let resp = h.request(
        &mut c,
        CHANNEL_BIND,
        vec![
            ChannelNumber(0x4001).into(),
            XorPeerAddress::new(peer).into(),
        ],
    );
    assert_eq!(resp.class(), MessageClass::SuccessResponse, "{resp:?}");
    h.core.on_client(&mut h.io, &c.addr, &send_bytes, h.now);
    let mut cd = Vec::new();
    codec::write_channel_data(&mut cd, 0x4001, b"via channel", false);
    h.core.on_client(&mut h.io, &c.addr, &cd, h.now);
    let sent: Vec<_> =
        h.io.to_peer
            .iter()
            .map(|(_, p, d)| (*p, d.clone()))
            .collect();
    assert_eq!(
        sent,
        vec![(peer, b"early".to_vec()), (peer, b"via channel".to_vec())]
    );

    // The peer answers: bound, so it arrives as ChannelData.
    h.io.to_client.clear();
    let relay = h.io.open[0];
    h.core.on_peer(&mut h.io, relay, peer, b"pong", h.now);
    let (_, bytes) = h.io.to_client.pop().unwrap();
    assert_eq!(
        codec::classify(&bytes),
        codec::Packet::ChannelData {
            channel: 0x4001,
            data: b"pong"
        }
    );
    // Another port of the permitted IP: a Data indication.
    let other: SocketAddr = "203.0.113.5:7001".parse().unwrap();
    h.core.on_peer(&mut h.io, relay, other, b"hi", h.now);
    let (_, bytes) = h.io.to_client.pop().unwrap();
    let msg = codec::decode(&bytes).unwrap();
    assert_eq!(
        msg.get_attribute::<XorPeerAddress>().unwrap().address(),
        other
    );
    assert_eq!(msg.get_attribute::<Data>().unwrap().data(), b"hi");
    // An IP without permission is dropped.
    h.core.on_peer(
        &mut h.io,
        relay,
        "203.0.113.9:1".parse().unwrap(),
        b"x",
        h.now,
    );
    assert!(h.io.to_client.is_empty());
    // Both directions are counted, each with its own label: two packets
    // out ("early" was dropped before the permission), two back.
    let m = &h.core.metrics;
    assert_eq!(m.packets_to_peer.get(), 2);
    assert_eq!(
        m.bytes_to_peer.get(),
        (b"early".len() + b"via channel".len()) as u64
    );
    assert_eq!(m.packets_to_client.get(), 2);
    assert_eq!(
        m.bytes_to_client.get(),
        (b"pong".len() + b"hi".len()) as u64
    );
    // "early" (no permission yet) and 203.0.113.9 (none for that IP).
    assert_eq!(m.dropped_no_permission.get(), 2);
    assert_eq!(m.dropped_total(), 2);
}

#[test]
fn two_allocations_of_one_server_talk_without_the_kernel() {
    let mut h = Harness::new(|c| c.policy.allow_private = true);
    let mut a = h.client(4000, "a");
    let mut b = h.client(4001, "b");
    let ra = h.allocate(&mut a);
    let rb = h.allocate(&mut b);
    // Each permits the other's relayed address, as ICE would.
    for (c, peer) in [(&mut a, rb), (&mut b, ra)] {
        let resp = h.request(c, CREATE_PERMISSION, vec![XorPeerAddress::new(peer).into()]);
        assert_eq!(resp.class(), MessageClass::SuccessResponse);
    }
    h.io.to_client.clear();
    let mut send = Message::new(MessageClass::Indication, SEND, TransactionId::new([1; 12]));
    send.add_attribute(XorPeerAddress::new(rb));
    send.add_attribute(Data::new(b"a to b".to_vec()).unwrap());
    h.core
        .on_client(&mut h.io, &a.addr, &codec::encode(send), h.now);
    assert!(h.io.to_peer.is_empty(), "nothing went through a socket");
    let (to, bytes) = h.io.to_client.pop().unwrap();
    assert_eq!(to, b.addr);
    let msg = codec::decode(&bytes).unwrap();
    assert_eq!(msg.get_attribute::<XorPeerAddress>().unwrap().address(), ra);
    assert_eq!(msg.get_attribute::<Data>().unwrap().data(), b"a to b");
    // In-process, each allocation counts its own side: a relayed it out to
    // its peer, b relayed it in to its client.
    let m = &h.core.metrics;
    assert_eq!((m.packets_to_peer.get(), m.packets_to_client.get()), (1, 1));
    assert_eq!((m.bytes_to_peer.get(), m.bytes_to_client.get()), (6, 6));
}

/// The embedded relay on one host advertises loopback (or private)
/// relayed addresses to local clients. Two allocations of this relay must
/// reach each other under the default policy, in-process, while every other
/// internal address stays refused, including ports of the same IP and an
/// allocation's address after it is gone.
#[test]
fn own_allocations_talk_under_the_default_policy_and_nothing_else_internal_does() {
    for relay_ip in ["127.0.0.1", "10.0.0.7"] {
        let mut h = Harness::new(|_| {});
        h.io.relay_v4 = Some(relay_ip);
        let mut a = h.client(4000, "a");
        let mut b = h.client(4001, "b");
        let ra = h.allocate(&mut a);
        let rb = h.allocate(&mut b);
        assert_eq!(ra.ip().to_string(), relay_ip);
        for (c, peer) in [(&mut a, rb), (&mut b, ra)] {
            let resp = h.request(c, CREATE_PERMISSION, vec![XorPeerAddress::new(peer).into()]);
            assert_eq!(resp.class(), MessageClass::SuccessResponse, "{relay_ip}");
        }
        let resp = h.request(
            &mut a,
            CHANNEL_BIND,
            vec![ChannelNumber(0x4000).into(), XorPeerAddress::new(rb).into()],
        );
        assert_eq!(resp.class(), MessageClass::SuccessResponse, "{relay_ip}");
        assert_eq!(h.core.metrics.refused_peers.get(), 0);

        // Data flows both ways, through no socket.
        h.io.to_client.clear();
        let mut cd = Vec::new();
        codec::write_channel_data(&mut cd, 0x4000, b"a to b", false);
        h.core.on_client(&mut h.io, &a.addr, &cd, h.now);
        let send = |to: SocketAddr, data: &[u8]| {
            let mut m = Message::new(MessageClass::Indication, SEND, TransactionId::new([1; 12]));
            m.add_attribute(XorPeerAddress::new(to));
            m.add_attribute(Data::new(data.to_vec()).unwrap());
            codec::encode(m)
        };
        h.core
            .on_client(&mut h.io, &b.addr, &send(ra, b"b to a"), h.now);
        assert!(h.io.to_peer.is_empty(), "nothing went through a socket");
        let to: Vec<_> = h.io.to_client.iter().map(|(c, _)| *c).collect();
        assert_eq!(to, vec![b.addr, a.addr]);

        // Any other address of the same internal IP stays refused...
        let other_port = SocketAddr::new(rb.ip(), 22);
        let resp = h.request(
            &mut a,
            CREATE_PERMISSION,
            vec![XorPeerAddress::new(other_port).into()],
        );
        assert_eq!(code(&resp), Some(403), "{relay_ip}");
        let resp = h.request(&mut a, CREATE_PERMISSION, vec![peer_attr("127.0.0.1:6379")]);
        assert_eq!(code(&resp), Some(403));
        // ...and the permission its IP holds (from b's address) carries
        // nothing to that port: not sent, not received.
        h.io.to_client.clear();
        h.core
            .on_client(&mut h.io, &a.addr, &send(other_port, b"x"), h.now);
        assert!(
            h.io.to_peer.is_empty(),
            "{relay_ip}: sent to an internal port"
        );
        let relay_a = h.io.open[0];
        h.core
            .on_peer(&mut h.io, relay_a, other_port, b"from inside", h.now);
        assert!(
            h.io.to_client.is_empty(),
            "{relay_ip}: an internal service reached a"
        );

        // b's allocation goes: its address is just an internal one now.
        let resp = h.request(
            &mut b,
            REFRESH,
            vec![Lifetime::new(Duration::ZERO).unwrap().into()],
        );
        assert_eq!(resp.class(), MessageClass::SuccessResponse);
        h.core.on_client(&mut h.io, &a.addr, &cd, h.now);
        h.core
            .on_client(&mut h.io, &a.addr, &send(rb, b"late"), h.now);
        assert!(
            h.io.to_peer.is_empty(),
            "{relay_ip}: sent to a released relayed address"
        );
        let resp = h.request(
            &mut a,
            CREATE_PERMISSION,
            vec![XorPeerAddress::new(rb).into()],
        );
        assert_eq!(code(&resp), Some(403), "{relay_ip}");
    }
}

/// A relay on a public address (bound to it, or TURN_EXTERNAL_IP) must not
/// relay to its own address at ports that are no allocation of it: there
/// are its own TURN listener (3478) and any UDP service bound to the
/// wildcard on that host. The peer policy looks only at the address class,
/// and a public address passes. With 3478 reachable, a client gets an
/// interactive session with the relay's listener whose "client" is the
/// relay's own socket (allocations by the relay for the relay, nested
/// without end in sight); the answers come back through the same hole.
#[test]
fn the_relays_own_public_address_is_no_peer_except_its_allocations() {
    let mut h = Harness::new(|_| {});
    h.io.relay_v4 = Some("203.0.113.9");
    let mut a = h.client(4000, "a");
    let ra = h.allocate(&mut a);
    assert_eq!(ra.ip().to_string(), "203.0.113.9");
    let send = |to: SocketAddr, data: &[u8]| {
        let mut m = Message::new(MessageClass::Indication, SEND, TransactionId::new([1; 12]));
        m.add_attribute(XorPeerAddress::new(to));
        m.add_attribute(Data::new(data.to_vec()).unwrap());
        codec::encode(m)
    };
    // An ordinary public peer is served.
    let resp = h.request(
        &mut a,
        CREATE_PERMISSION,
        vec![peer_attr("198.51.100.50:9")],
    );
    assert_eq!(resp.class(), MessageClass::SuccessResponse);
    h.core.on_client(
        &mut h.io,
        &a.addr,
        &send("198.51.100.50:9".parse().unwrap(), b"hi"),
        h.now,
    );
    assert_eq!(h.io.to_peer.len(), 1);
    h.io.to_peer.clear();

    // The relay's own IP: a permission for it may exist (its allocations
    // reach each other through it), but nothing leaves a relay socket for
    // another port of it: the TURN listener, a resolver, its own address.
    let _ = h.request(
        &mut a,
        CREATE_PERMISSION,
        vec![XorPeerAddress::new(ra).into()],
    );
    for port in [3478, 53, ra.port()] {
        let own = SocketAddr::new(ra.ip(), port);
        h.core
            .on_client(&mut h.io, &a.addr, &send(own, b"\x00\x03"), h.now);
        assert!(
            h.io.to_peer.is_empty(),
            "relayed to its own address {own}: {:?}",
            h.io.to_peer
        );
    }
    // Nor is what comes from its own address (the listener answering a
    // relay socket) handed to a client as a peer's data.
    h.io.to_client.clear();
    let relay_a = h.io.open[0];
    h.core.on_peer(
        &mut h.io,
        relay_a,
        SocketAddr::new(ra.ip(), 3478),
        b"a listener's answer",
        h.now,
    );
    assert!(
        h.io.to_client.is_empty(),
        "the relay's own listener reached a client as a peer"
    );
}

#[test]
fn allocations_expire_and_refresh_zero_deletes() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    h.allocate(&mut c);
    let resp = h.request(&mut c, REFRESH, vec![Lifetime::from_u32(700).into()]);
    assert_eq!(
        resp.get_attribute::<Lifetime>()
            .unwrap()
            .lifetime()
            .as_secs(),
        700
    );
    h.now += Duration::from_secs(699);
    h.core.tick(&mut h.io, h.now);
    assert_eq!(h.core.allocation_count(), 1);
    h.now += Duration::from_secs(1);
    h.core.tick(&mut h.io, h.now);
    assert_eq!(h.core.allocation_count(), 0);
    assert!(h.io.open.is_empty(), "relay socket closed");

    let mut d = h.client(4001, "bob");
    h.allocate(&mut d);
    let resp = h.request(&mut d, REFRESH, vec![Lifetime::from_u32(0).into()]);
    assert_eq!(resp.class(), MessageClass::SuccessResponse);
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn channel_numbers_outside_the_range_are_400_and_rfc5766_numbers_work() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    h.allocate(&mut c);
    for (n, ok) in [
        (0x3FFF, false),
        (0x4000, true),
        (0x7ab1, true),
        (0x8000, false),
    ] {
        let peer = format!("203.0.113.{}:7000", n % 200 + 1);
        let resp = h.request(
            &mut c,
            CHANNEL_BIND,
            vec![ChannelNumber(n).into(), peer_attr(&peer)],
        );
        assert_eq!(code(&resp).is_none(), ok, "{n:#x}: {resp:?}");
    }
}

#[test]
fn bandwidth_is_capped_per_allocation() {
    let mut h = Harness::new(|c| c.bandwidth = 1000);
    let mut c = h.client(4000, "alice");
    h.allocate(&mut c);
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    h.request(
        &mut c,
        CHANNEL_BIND,
        vec![
            ChannelNumber(0x4000).into(),
            XorPeerAddress::new(peer).into(),
        ],
    );
    let mut cd = Vec::new();
    codec::write_channel_data(&mut cd, 0x4000, &[0u8; 400], false);
    for _ in 0..5 {
        h.core.on_client(&mut h.io, &c.addr, &cd, h.now);
    }
    assert_eq!(h.io.to_peer.len(), 2, "1000 bytes per second");
    assert_eq!(h.core.metrics.dropped_bandwidth.get(), 3);
    h.now += Duration::from_secs(1);
    h.core.on_client(&mut h.io, &c.addr, &cd, h.now);
    assert_eq!(h.io.to_peer.len(), 3);
    // The cap covers both directions: the peer's answers share the bucket.
    let relay = h.io.open[0];
    h.io.to_client.clear();
    for _ in 0..3 {
        h.core.on_peer(&mut h.io, relay, peer, &[1u8; 400], h.now);
    }
    assert_eq!(h.io.to_client.len(), 1, "600 bytes left this second");
    let m = &h.core.metrics;
    assert_eq!(m.dropped_bandwidth.get(), 5);
    assert_eq!(m.packets_to_client.get(), 1);
    assert_eq!(m.dropped_total(), 5, "every drop here was for bandwidth");
}

#[test]
fn drops_are_counted_by_reason() {
    let mut h = Harness::new(|_| {});
    let mut c = h.client(4000, "alice");
    let stranger = h.client(4001, "bob");
    // ChannelData from a client without an allocation.
    let mut cd = Vec::new();
    codec::write_channel_data(&mut cd, 0x4000, b"x", false);
    h.core.on_client(&mut h.io, &stranger.addr, &cd, h.now);
    assert_eq!(h.core.metrics.dropped_no_allocation.get(), 1);
    // Neither STUN nor ChannelData.
    h.core.on_client(&mut h.io, &c.addr, &[0xff; 8], h.now);
    assert_eq!(h.core.metrics.dropped_invalid.get(), 1);
    // A channel never bound: no permission.
    h.allocate(&mut c);
    h.core.on_client(&mut h.io, &c.addr, &cd, h.now);
    assert_eq!(h.core.metrics.dropped_no_permission.get(), 1);
    // A datagram on a relay socket that belongs to no allocation.
    h.core.on_peer(
        &mut h.io,
        999,
        "203.0.113.5:7000".parse().unwrap(),
        b"x",
        h.now,
    );
    assert_eq!(h.core.metrics.dropped_no_allocation.get(), 2);
    // From an internal address the policy refuses.
    let relay = h.io.open[0];
    h.core.on_peer(
        &mut h.io,
        relay,
        "10.1.2.3:7000".parse().unwrap(),
        b"x",
        h.now,
    );
    assert_eq!(h.core.metrics.dropped_no_permission.get(), 2);
    assert_eq!(h.core.metrics.dropped_bandwidth.get(), 0);
    assert_eq!(h.core.metrics.dropped_total(), 5);
    assert!(h.io.to_peer.is_empty() && h.io.to_client.is_empty());
}

#[test]
fn the_allocation_limit_is_exported() {
    let h = Harness::new(|c| c.total_quota = 123);
    assert_eq!(h.core.metrics.max_allocations.get(), 123);
}

#[test]
fn garbage_never_panics_and_gets_no_answer() {
    let mut h = Harness::new(|_| {});
    let c = h.client(4000, "x");
    let mut seed = 0x1234_5678u32;
    for len in 0..400 {
        let buf: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        h.core.on_client(&mut h.io, &c.addr, &buf, h.now);
    }
    assert!(h.io.to_peer.is_empty());
}
