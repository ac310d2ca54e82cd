//! Processes the relay tests drive: tallow-relay itself and coturn's
//! turnutils (Debian package coturn, installed by scripts/test.sh).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_codec::rfc5389::attributes::{ErrorCode, MessageIntegrity, Nonce, Realm, Username};
use stun_codec::rfc5766::attributes::RequestedTransport;
use stun_codec::{Message, MessageClass, Method, TransactionId};
use tallow_relay::codec::{self, Attr, Msg};
use tallow_relay::credentials;

pub const SECRET: &str = "relay-test-secret";

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{name} is missing: run scripts/test.sh, which installs Debian's coturn"
    );
    path
}

/// Shards the relay under test runs: RELAY_TEST_THREADS, default 4, so every
/// relay test runs across shards (scripts/test.sh runs them at 1 as well).
pub fn test_threads() -> usize {
    std::env::var("RELAY_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// Start tallow-relay on a free loopback port with `env` on top of the
/// test defaults (TURN_THREADS from [`test_threads`]); returns it and its
/// address.
pub fn relay(env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let port = free_port();
    let range_low = 40000 + (port % 200) * 100;
    let range = format!("{range_low}-{}", range_low + 99);
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tallow-relay"));
    cmd.env_clear()
        .env("TURN_LISTEN", &listen)
        .env("TURN_SECRET", SECRET)
        .env("TURN_PORT_RANGE", &range)
        .env("TURN_ALLOW_LOOPBACK", "true")
        .env("TURN_THREADS", test_threads().to_string())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tallow-relay");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("tallow-relay exited before listening")
            .unwrap();
        if line.contains("TURN relay listening") {
            // The shards asked for are the shards running.
            let want = env
                .iter()
                .find(|(k, _)| *k == "TURN_THREADS")
                .map_or(test_threads().to_string(), |(_, v)| v.to_string());
            assert!(line.contains(&format!("\"shards\":{want}")), "{line}");
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), listen.parse().unwrap())
}

/// coturn's echo peer on a free loopback port.
pub fn echo_peer() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(tool("turnutils_peer"))
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnutils_peer");
    std::thread::sleep(Duration::from_millis(200));
    (Proc(child), port)
}

/// Run a turnutils tool to completion, at most `limit`.
pub fn run_tool(name: &str, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(tool(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turnutils");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tot_send_msgs` and `tot_recv_msgs` of turnutils_uclient's summary.
pub fn totals(out: &Output) -> Option<(u64, u64)> {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
    let num = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((num("tot_send_msgs=")?, num("tot_recv_msgs=")?))
}

pub fn output_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A TURN client over one UDP socket, one request at a time.
pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    pub nonce: Option<String>,
    n: u8,
}

impl Client {
    pub fn new(server: SocketAddr, label: &str, secret: &str) -> Client {
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

    pub fn send(&mut self, method: Method, attrs: &[Attr]) -> Msg {
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
    pub fn request(&mut self, method: Method, attrs: &[Attr]) -> Msg {
        let resp = self.send(method, attrs);
        if self.nonce.is_none() && code(&resp) == Some(401) {
            self.nonce = Some(resp.get_attribute::<Nonce>().unwrap().value().to_owned());
            return self.send(method, attrs);
        }
        resp
    }
}

pub fn code(m: &Msg) -> Option<u16> {
    m.get_attribute::<ErrorCode>().map(|e| e.code())
}

pub fn udp() -> Attr {
    RequestedTransport::new(17).into()
}
