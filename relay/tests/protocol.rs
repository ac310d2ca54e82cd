//! TURN error paths over a real UDP socket against the real binary:
//! 401, 403, 437, 438 and 486.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{relay, SECRET};
use stun_codec::rfc5389::attributes::{ErrorCode, MessageIntegrity, Nonce, Realm, Username};
use stun_codec::rfc5766::attributes::{RequestedTransport, XorPeerAddress, XorRelayAddress};
use stun_codec::rfc5766::methods::{ALLOCATE, CREATE_PERMISSION, REFRESH};
use stun_codec::{Message, MessageClass, Method, TransactionId};
use tallow_relay::codec::{self, Attr, Msg};
use tallow_relay::credentials;

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    nonce: Option<String>,
    n: u8,
}

impl Client {
    fn new(server: SocketAddr, label: &str, secret: &str) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let c = credentials::issue(secret.as_bytes(), label, now, 600);
        Client {
            sock,
            server,
            username: c.username,
            password: c.password,
            nonce: None,
            n: 0,
        }
    }

    fn send(&mut self, method: Method, attrs: &[Attr]) -> Msg {
        self.n += 1;
        let mut m = Message::new(
            MessageClass::Request,
            method,
            TransactionId::new([self.n; 12]),
        );
        for a in attrs {
            m.add_attribute(a.clone());
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
        self.sock.send_to(&codec::encode(m), self.server).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = self.sock.recv_from(&mut buf).expect("an answer");
        codec::decode(&buf[..n]).unwrap()
    }

    /// Request with credentials, learning the nonce from the first 401.
    fn request(&mut self, method: Method, attrs: &[Attr]) -> Msg {
        let resp = self.send(method, attrs);
        if self.nonce.is_none() && code(&resp) == Some(401) {
            self.nonce = Some(resp.get_attribute::<Nonce>().unwrap().value().to_owned());
            return self.send(method, attrs);
        }
        resp
    }
}

fn code(m: &Msg) -> Option<u16> {
    m.get_attribute::<ErrorCode>().map(|e| e.code())
}

fn udp() -> Attr {
    RequestedTransport::new(17).into()
}

#[test]
fn unauthenticated_and_forged_requests_get_401() {
    let (_relay, addr) = relay(&[]);
    let mut c = Client::new(addr, "a", SECRET);
    let challenge = c.send(ALLOCATE, &[udp()]);
    assert_eq!(code(&challenge), Some(401));
    assert_eq!(challenge.get_attribute::<Realm>().unwrap().text(), "tallow");
    let mut forged = Client::new(addr, "a", "another-secret");
    assert_eq!(code(&forged.request(ALLOCATE, &[udp()])), Some(401));
}

#[test]
fn allocation_mismatch_is_437() {
    let (_relay, addr) = relay(&[]);
    let mut c = Client::new(addr, "a", SECRET);
    let ok = c.request(ALLOCATE, &[udp()]);
    assert!(ok.get_attribute::<XorRelayAddress>().is_some(), "{ok:?}");
    assert_eq!(code(&c.request(ALLOCATE, &[udp()])), Some(437));
    let mut other = Client::new(addr, "b", SECRET);
    assert_eq!(code(&other.request(REFRESH, &[])), Some(437));
}

#[test]
fn stale_nonces_get_438() {
    let (_relay, addr) = relay(&[("TURN_NONCE_LIFETIME_SECS", "1")]);
    let mut c = Client::new(addr, "a", SECRET);
    assert_eq!(code(&c.request(ALLOCATE, &[udp()])), None);
    std::thread::sleep(Duration::from_millis(2100));
    let stale = c.send(REFRESH, &[]);
    assert_eq!(code(&stale), Some(438));
    c.nonce = Some(stale.get_attribute::<Nonce>().unwrap().value().to_owned());
    assert_eq!(code(&c.send(REFRESH, &[])), None);
}

#[test]
fn quotas_give_486() {
    let (_relay, addr) = relay(&[("TURN_USER_QUOTA", "1"), ("TURN_TOTAL_QUOTA", "2")]);
    let mut a1 = Client::new(addr, "alice", SECRET);
    assert_eq!(code(&a1.request(ALLOCATE, &[udp()])), None);
    // Same username (same label and second) from another socket.
    let mut a2 = Client::new(addr, "alice", SECRET);
    a2.username = a1.username.clone();
    a2.password = a1.password.clone();
    assert_eq!(code(&a2.request(ALLOCATE, &[udp()])), Some(486));
    let mut b = Client::new(addr, "bob", SECRET);
    assert_eq!(code(&b.request(ALLOCATE, &[udp()])), None);
    let mut c = Client::new(addr, "carol", SECRET);
    assert_eq!(code(&c.request(ALLOCATE, &[udp()])), Some(486));
}

#[test]
fn internal_peers_are_403_by_default() {
    let (_relay, addr) = relay(&[("TURN_ALLOW_LOOPBACK", "false")]);
    let mut c = Client::new(addr, "a", SECRET);
    assert_eq!(code(&c.request(ALLOCATE, &[udp()])), None);
    for peer in [
        "127.0.0.1:9",
        "10.0.0.1:9",
        "172.16.0.1:9",
        "192.168.1.1:9",
        "169.254.169.254:80",
        "100.64.0.1:9",
        "0.0.0.0:9",
        "224.0.0.1:9",
        "255.255.255.255:9",
    ] {
        let p: Attr = XorPeerAddress::new(peer.parse().unwrap()).into();
        assert_eq!(
            code(&c.request(CREATE_PERMISSION, &[p])),
            Some(403),
            "{peer}"
        );
    }
    let public: Attr = XorPeerAddress::new("198.51.100.1:9".parse().unwrap()).into();
    assert_eq!(code(&c.request(CREATE_PERMISSION, &[public])), None);
}
