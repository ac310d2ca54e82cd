//! Test harness: a real server on a loopback socket and real WebSocket
//! clients (tokio-tungstenite).
#![allow(dead_code)]

pub mod nginx;
pub mod turn;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tallow_signaling::config::Config;
use tallow_signaling::server::Server;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// Start a server on 127.0.0.1 with extra flags.
pub async fn start(flags: &[&str]) -> Server {
    let mut args = vec!["tallow-server", "--listen", "127.0.0.1:0"];
    // The embedded relay only where a test asks for it.
    if !flags.contains(&"--turn-enabled") {
        args.extend_from_slice(&["--turn-enabled", "false"]);
    }
    args.extend_from_slice(flags);
    let cfg = Config::try_parse_from(args).expect("test flags parse");
    Server::start(cfg).await.expect("server starts")
}

/// Which presence store a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    Memory,
    Redis,
}

/// A server and, for the Redis store, the redis-server behind it.
pub struct Env {
    pub server: Server,
    pub redis: Option<RedisServer>,
}

impl Env {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

impl Store {
    pub async fn start(self, flags: &[&str]) -> Env {
        match self {
            Store::Memory => Env {
                server: start(flags).await,
                redis: None,
            },
            Store::Redis => {
                let redis = RedisServer::start();
                let url = redis.url();
                let mut all = vec!["--redis-url", url.as_str()];
                all.extend_from_slice(flags);
                Env {
                    server: start(&all).await,
                    redis: Some(redis),
                }
            }
        }
    }
}

/// Generate `memory::name` and `redis::name` tests from `async fn name(Store)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::Store::Memory).await
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::Store::Redis).await
            })*
        }
    };
}

/// A real redis-server on a free loopback port, killed when dropped.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    password: Option<String>,
    dir: std::path::PathBuf,
    tls: bool,
}

fn redis_server_binary() -> &'static str {
    for p in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("redis-server is not installed: run scripts/test.sh, which installs it");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_password(None)
    }

    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tallow-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = RedisServer {
            child: None,
            port,
            password: password.map(str::to_owned),
            dir,
            tls: false,
        };
        r.restart();
        r
    }

    /// TLS only, with a server certificate for 127.0.0.1 signed by a
    /// throwaway CA (see `ca_file`).
    pub fn start_tls(password: Option<&str>) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tallow-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=tallow test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let mut r = RedisServer {
            child: None,
            port,
            password: password.map(str::to_owned),
            dir,
            tls: true,
        };
        r.restart();
        r
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }

    /// (Re)start on the same port with an empty data set.
    pub fn restart(&mut self) {
        let mut cmd = std::process::Command::new(redis_server_binary());
        if self.tls {
            let f = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args([
                    "--tls-cert-file",
                    &f("server.pem"),
                    "--tls-key-file",
                    &f("server.key"),
                ])
                .args([
                    "--tls-ca-cert-file",
                    &f("ca.pem"),
                    "--tls-auth-clients",
                    "no",
                ]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server stalls with every connection open, as a paused
    /// VM or a long fork would make it.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `stop`.
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// A command connection for inspecting the store.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// Keys under the tallow: prefix.
    pub async fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("tallow:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
}

impl Client {
    /// Connect and read `welcome`.
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_with(addr, &[]).await.expect("connect")
    }

    pub async fn connect_with(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{addr}/signal").into_client_request()?;
        for (k, v) in headers {
            let name = axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
            req.headers_mut()
                .insert(name, v.parse().expect("header value"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        c.welcome = c.expect("welcome").await;
        Ok(c)
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::Text(s.to_owned().into()))
            .await
            .expect("send");
    }

    /// Next JSON message, skipping pings and pongs. Panics on close.
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Json(v) => v,
            Event::Closed(code, reason) => panic!("closed {code} {reason}"),
        }
    }

    /// Next message or close.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame within the wait");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return Event::Json(serde_json::from_str(t.as_str()).expect("server JSON"))
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return Event::Closed(u16::from(f.code), f.reason.to_string())
                }
                Some(Ok(Message::Close(None))) | None => return Event::Closed(1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Event::Closed(1006, e.to_string()),
            }
        }
    }

    /// Next message, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected {ty}, got {v}");
        v
    }

    /// Next message, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    /// The connection must close with `code`; returns the reason.
    pub async fn expect_close(&mut self, code: u16) -> String {
        loop {
            match self.next_event().await {
                Event::Closed(c, reason) => {
                    assert_eq!(c, code, "close reason {reason:?}");
                    return reason;
                }
                // Errors and a peer's departure may race with the close (at
                // shutdown the peer's connection may close first).
                Event::Json(v) if v["type"] == "error" || v["type"] == "peer_away" => continue,
                Event::Json(v) => panic!("expected close {code}, got {v}"),
            }
        }
    }

    /// Round trip a ping: proves the connection is alive and that nothing
    /// else was queued before the pong.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type": "ping", "id": 77})).await;
        let v = self.recv().await;
        assert_eq!(v, json!({"type": "pong", "id": 77}));
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

pub enum Event {
    Json(Value),
    Closed(u16, String),
}

/// Two clients paired through `create` and `join`; returns (creator, joiner,
/// creator's `created`, joiner's `joined`).
pub async fn pair(addr: SocketAddr) -> (Client, Client, Value, Value) {
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    let joined = b.expect("joined").await;
    b.expect("paired").await;
    a.expect("paired").await;
    open_handshake(&mut a, &mut b, created["session"].as_str().unwrap()).await;
    (a, b, created, joined)
}

/// A real opening `hello` of the peer handshake for session `sid`.
pub fn hello_body(sid: &str) -> String {
    let rnd = tallow_peer::Randomness::fresh();
    let (_, hello) = tallow_peer::Initiator::start("1-test-code-words", sid, &rnd).unwrap();
    hello.to_json()
}

/// The creator's first message: the PQ `hello` (seq 1), which the joiner
/// receives as its message 1 and acknowledges. After this the creator's
/// next send is seq 2 and the joiner's next message from it is seq 2.
pub async fn open_handshake(a: &mut Client, b: &mut Client, sid: &str) {
    a.send(json!({"type": "hello", "seq": 1, "body": hello_body(sid)}))
        .await;
    assert_eq!(a.expect("ack").await["seq"], 1);
    let m = b.expect("message").await;
    assert_eq!(m["seq"], 1);
    assert!(m["body"].as_str().unwrap().contains("\"t\":\"hello\""));
    b.send(json!({"type": "ack", "seq": 1})).await;
    // The ack is processed before anything b sends next.
    b.assert_alive().await;
}

/// After an outage: for longer than the node TTL and the grace, neither
/// side hears a false notice, and messages flow both ways exactly once.
pub async fn settle_and_check(mut a: Client, mut b: Client) {
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
            Event::Json(v) => format!("{who}: {v}"),
            Event::Closed(c, r) => format!("{who}: closed {c} {r}"),
        })
        .collect();
    assert!(seen.is_empty(), "after the outage: {seen:?}");
    // a's seq 1 was the hello.
    let mut got = HashSet::new();
    for seq in 2..=6u64 {
        a.send(json!({"type": "send", "seq": seq, "body": format!("a{seq}")}))
            .await;
        let v = a.expect("ack").await;
        assert_eq!(v["seq"], seq);
        let m = b.expect("message").await;
        assert!(got.insert(m["seq"].as_u64().unwrap()));
        assert_eq!(m["body"], format!("a{seq}"));
    }
    b.send(json!({"type": "send", "seq": 1, "body": "b1"}))
        .await;
    b.expect("ack").await;
    assert_eq!(a.expect("message").await["body"], "b1");
    a.assert_alive().await;
    b.assert_alive().await;
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("http get");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// The real binary, configured only through the environment.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    pub fn spawn(env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tallow-server"));
        cmd.env_clear()
            .env("TALLOW_LISTEN", "127.0.0.1:0")
            .env("TURN_ENABLED", "false")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tallow-server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            let v: Value = serde_json::from_str(&line).expect("every log line is JSON");
            logs.lock().unwrap().push(line);
            if v["message"] == "tallow-server listening" {
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        // Keep draining logs so the child never blocks on a full pipe.
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                serde_json::from_str::<Value>(&line).expect("every log line is JSON");
                sink.lock().unwrap().push(line);
            }
        });
        Binary {
            child,
            addr,
            logs,
            reader: Some(reader),
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Binary {
    /// SIGKILL: a crash, with no chance to detach or drain.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU time (user + system) the process has used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run one side of the exchange: send `n` messages and collect the peer's
/// `n`, acknowledging as they come.
pub async fn exchange(client: Client, me: &'static str, first_seq: u64, n: u64) -> Vec<Value> {
    let (sink, mut stream) = client.ws.split();
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let writer = {
        let sink = sink.clone();
        tokio::spawn(async move {
            for i in 1..=n {
                let seq = first_seq + i - 1;
                let body = format!("{me}-{i}");
                let frame = json!({"type": "send", "seq": seq, "body": body}).to_string();
                sink.lock()
                    .await
                    .send(Message::Text(frame.into()))
                    .await
                    .unwrap();
            }
        })
    };
    let mut got = Vec::new();
    let mut acks = first_seq - 1;
    while got.len() < n as usize || acks < first_seq - 1 + n {
        let frame = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("exchange stalled")
            .expect("stream ended")
            .expect("frame");
        let Message::Text(t) = frame else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        match v["type"].as_str().unwrap() {
            "message" => {
                let seq = v["seq"].as_u64().unwrap();
                got.push(v.clone());
                if seq.is_multiple_of(100) {
                    let ack = json!({"type": "ack", "seq": seq}).to_string();
                    sink.lock()
                        .await
                        .send(Message::Text(ack.into()))
                        .await
                        .unwrap();
                }
            }
            "ack" => {
                let seq = v["seq"].as_u64().unwrap();
                assert_eq!(seq, acks + 1, "server acks our sends in order");
                acks = seq;
            }
            other => panic!("{me}: unexpected {other}: {v}"),
        }
    }
    writer.await.unwrap();
    got
}

/// `n` messages each way between a creator `a` (whose seq 1 was the
/// handshake's hello) and a joiner `b`, checked for order and completeness.
pub async fn exchange_both_ways(a: Client, b: Client, n: u64) {
    let (got_by_a, got_by_b) = tokio::join!(exchange(a, "a", 2, n), exchange(b, "b", 1, n));
    for (got, from, first) in [(got_by_a, "b", 1), (got_by_b, "a", 2)] {
        assert_eq!(got.len(), n as usize);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m["seq"], first + i as u64);
            assert_eq!(m["body"], format!("{from}-{}", i + 1));
        }
    }
}
