//! Processes the relay tests drive: tallow-relay itself and coturn's
//! turnutils (Debian package coturn, installed by scripts/test.sh).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Start tallow-relay on a free loopback port with `env` on top of the
/// test defaults; returns it and its address.
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
