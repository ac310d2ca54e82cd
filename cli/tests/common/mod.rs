//! What the CLI tests share: a real tallow-server with its embedded relay
//! on loopback, `tallow` processes with relay-only ICE, and waiting for
//! them with a hang guard (never a timing assertion).

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use clap::Parser;
use sha2::{Digest, Sha256};
use tallow_signaling::config::Config;
use tallow_signaling::server::Server;

/// A tallow-server on loopback with TURN; returns it and its /signal URL.
pub async fn server() -> (Server, String) {
    let cfg = Config::try_parse_from([
        "tallow-server",
        "--listen",
        "127.0.0.1:0",
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        // Both peers and the relay are on loopback here.
        "--turn-allow-loopback",
        "true",
        "--turn-port-range",
        "46000-46999",
        // The relay's per-allocation rate stays at its default (12.5 MB/s):
        // what a deployment gives the CLI.
    ])
    .expect("flags parse");
    let server = Server::start(cfg).await.expect("server starts");
    let url = format!("ws://{}/signal", server.local_addr());
    (server, url)
}

/// `tallow` against `url` with relay-only ICE on loopback; stdin null,
/// stdout and stderr piped.
pub fn tallow(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tallow"));
    c.args(["--server", url, "--relay-only", "--bind", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `tallow receive CODE --dir OUT --yes`, started: the unattended
/// receiver most tests run against a `start_sender`.
pub fn receive_yes(url: &str, code: &str, out: &Path) -> Child {
    tallow(
        url,
        &["receive", code, "--dir", out.to_str().unwrap(), "--yes"],
    )
    .spawn()
    .unwrap()
}

/// A fresh folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tallow-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic bytes, different for each `seed`.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Every file under `dir`, as paths relative to it with `/`.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// A started sender: its code (read from its first line of stdout) and
/// the rest of its stdout to read later.
pub struct Sender {
    pub child: Child,
    pub code: String,
    pub stdout: BufReader<ChildStdout>,
}

/// Starts `tallow send` with `args` and waits for its code: the human
/// line `code: <code>`, or with `--json` the first object's `code`.
pub fn start_sender(url: &str, args: &[&str]) -> Sender {
    let mut child = tallow(url, args).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let code = if let Some(c) = line.trim().strip_prefix("code: ") {
        c.to_owned()
    } else {
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("no code: {line:?}"));
        assert_eq!(v["event"], "code", "{line}");
        v["code"].as_str().unwrap().to_owned()
    };
    Sender {
        child,
        code,
        stdout,
    }
}

/// How one process ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ended {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn all(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

fn collect(mut child: Child, mut stdout_rest: Option<BufReader<ChildStdout>>) -> Ended {
    let mut out = String::new();
    let mut err = String::new();
    let err_pipe = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err_pipe {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    if let Some(r) = stdout_rest.as_mut() {
        let _ = r.read_to_string(&mut out);
    } else if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = child.wait().unwrap();
    err.push_str(&err_thread.join().unwrap_or_default());
    Ended {
        status,
        stdout: out,
        stderr: err,
    }
}

/// Waits for a sender and another process, killing both after `guard`
/// (a hang guard only: the tests never judge by time).
pub async fn wait_pair(sender: Sender, other: Child, guard: Duration) -> (Ended, Ended) {
    let pids = [sender.child.id(), other.id()];
    let waited = tokio::task::spawn_blocking(move || {
        let o = std::thread::spawn(move || collect(other, None));
        let s = collect(sender.child, Some(sender.stdout));
        (s, o.join().unwrap())
    });
    match tokio::time::timeout(guard, waited).await {
        Ok(r) => r.unwrap(),
        Err(_) => {
            for pid in pids {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
            panic!("the processes did not end within {guard:?}");
        }
    }
}

/// Waits for one process, with the same hang guard.
pub async fn wait_one(child: Child, guard: Duration) -> Ended {
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || collect(child, None));
    match tokio::time::timeout(guard, waited).await {
        Ok(r) => r.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("the process did not end within {guard:?}");
        }
    }
}

/// The JSON lines of a `--json` run.
pub fn json_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}
