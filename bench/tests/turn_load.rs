//! The real `turn-load` binary against real TURN servers on loopback: a
//! tiny load (50 allocations, 500 packets/s, 2 s) that every packet must
//! survive, in both modes against tallow-relay and in peer mode against
//! coturn's turnserver (Debian's coturn package). The report must be one
//! well-formed JSON line. Rates and latencies are printed, never judged.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const SECRET: &str = "turn-load-test-secret";
const ALLOCS: u32 = 50;
/// Generous bound on one generator run (setup, 2 s of load, drain).
const LIMIT: Duration = Duration::from_secs(90);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Relay ports for a server on `port`: a block of 100 below the ephemeral
/// range, picked from the listening port so parallel tests rarely share one.
fn relay_range(port: u16) -> (u16, u16) {
    let low = 20000 + (port % 100) * 100;
    (low, low + 99)
}

/// tallow-relay is another package's binary: build it (once per test
/// process) into the target directory this test binary lives in.
fn tallow_relay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "--locked",
                "-p",
                "tallow-relay",
                "--bin",
                "tallow-relay",
            ])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p tallow-relay failed");
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_turn-load")).with_file_name("tallow-relay");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// Read `child`'s stdout until a line contains `marker` (then keep
/// draining it in the background so the server never blocks on it).
fn wait_for_line(child: &mut Child, marker: &str) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("server exited before printing {marker:?}"))
            .unwrap();
        if line.contains(marker) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
}

fn tallow_relay() -> (Proc, u16) {
    let port = free_port();
    let (low, high) = relay_range(port);
    let mut child = Command::new(tallow_relay_bin())
        .env_clear()
        .env("TURN_LISTEN", format!("127.0.0.1:{port}"))
        .env("TURN_SECRET", SECRET)
        .env("TURN_PORT_RANGE", format!("{low}-{high}"))
        .env("TURN_ALLOW_LOOPBACK", "true")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tallow-relay");
    wait_for_line(&mut child, "TURN relay listening");
    (Proc(child), port)
}

fn coturn() -> (Proc, u16) {
    let path = "/usr/bin/turnserver";
    assert!(
        std::path::Path::new(path).exists(),
        "turnserver is missing: apt-get install coturn (scripts/apt-install.sh)"
    );
    let port = free_port();
    let (low, high) = relay_range(port);
    let child = Command::new(path)
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--relay-ip=127.0.0.1",
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            "--realm=tallow",
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--log-file=stdout",
            &format!("--min-port={low}"),
            &format!("--max-port={high}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnserver");
    let server = Proc(child);
    wait_for_stun(port);
    (server, port)
}

/// Wait until a STUN Binding request to 127.0.0.1:`port` is answered
/// (coturn prints nothing reliable when its listener is up).
fn wait_for_stun(port: u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[7u8; 12]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = sock.send_to(&req, ("127.0.0.1", port));
        if sock.recv(&mut buf).is_ok() {
            return;
        }
    }
    panic!("no STUN answer on port {port}");
}

/// Run turn-load against 127.0.0.1:`port` (with `extra` arguments) and
/// return its JSON report.
fn turn_load(port: u16, server_pid: u32, mode: &str, extra: &[&str]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_turn-load"))
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--secret",
            SECRET,
            "--mode",
            mode,
            "--allocs",
            &ALLOCS.to_string(),
            "--rate",
            "500",
            "--duration",
            "2",
            // Waiting ends as soon as everything is in; a long grace only
            // matters on a machine busy enough to delay packets.
            "--grace",
            "20",
            "--server-pid",
            &server_pid.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turn-load");
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "turn-load failed: {stderr}{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected: {stdout}");
    eprintln!("{mode}: {}", lines[0]);
    serde_json::from_str(lines[0]).expect("report is JSON")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

/// Every packet sent came back, and the report holds what the benchmark
/// script reads.
fn assert_lossless(v: &Value, mode: &str) {
    assert_eq!(v["tool"], "turn-load");
    assert_eq!(v["mode"], mode);
    assert_eq!(num(v, "allocations"), f64::from(ALLOCS));
    assert_eq!(num(v, "offered_pps"), 500.0);
    assert_eq!(num(v, "duration_s"), 2.0);
    let (sent, received) = (num(v, "sent"), num(v, "received"));
    assert!(sent > 0.0, "nothing sent: {v}");
    assert_eq!(sent, received, "loss at 500 packets/s: {v}");
    assert_eq!(num(v, "lost"), 0.0);
    assert_eq!(num(v, "loss_pct"), 0.0);
    assert_eq!(num(v, "send_failed"), 0.0);
    let (p50, p90, p99, max) = (
        num(v, "p50_us"),
        num(v, "p90_us"),
        num(v, "p99_us"),
        num(v, "max_us"),
    );
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "percentiles out of order: {v}"
    );
    for key in [
        "sent_pps",
        "delivered_pps",
        "gen_cpu_s",
        "server_cpu_s",
        "server_cpu_us_per_msg",
        "server_rss_kb_before",
        "server_rss_kb_ready",
    ] {
        assert!(num(v, key) >= 0.0, "{key}: {v}");
    }
    // Every allocation was released at the end.
    assert_eq!(num(v, "released"), f64::from(ALLOCS));
}

#[test]
fn tallow_relay_peer_mode_delivers_every_packet() {
    let (relay, port) = tallow_relay();
    let v = turn_load(port, relay.0.id(), "peer", &[]);
    assert_lossless(&v, "peer");
    assert_eq!(v["latency"], "round_trip");
}

#[test]
fn tallow_relay_client_to_client_delivers_every_packet() {
    let (relay, port) = tallow_relay();
    let v = turn_load(port, relay.0.id(), "c2c", &[]);
    assert_lossless(&v, "c2c");
    assert_eq!(v["latency"], "one_way");
}

#[test]
fn coturn_peer_mode_delivers_every_packet() {
    let (server, port) = coturn();
    let v = turn_load(port, server.0.id(), "peer", &[]);
    assert_lossless(&v, "peer");
}

#[test]
fn tallow_relay_answers_every_keepalive() {
    let (relay, port) = tallow_relay();
    // A keepalive round every half second from half a second in: over
    // the 2 s run every client refreshes its allocation, permission and
    // channel at least once, and the drain waits for the answers.
    let v = turn_load(port, relay.0.id(), "peer", &["--refresh", "0.5"]);
    assert_lossless(&v, "peer");
    assert_eq!(num(&v, "refresh_err"), 0.0, "{v}");
    assert!(
        num(&v, "refresh_ok") >= f64::from(3 * ALLOCS),
        "every client refreshes three things: {v}"
    );
}
