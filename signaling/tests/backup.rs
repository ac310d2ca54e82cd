//! DEVOPS.md "Backup and restore": the documented redis-cli commands, run
//! against a real Redis with AOF on (as shipped), bring back sessions and
//! their queued messages after the data directory is lost, and the
//! restored data survives the next restart with AOF on.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Client};
use serde_json::json;

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(port: u16, dir: &Path, appendonly: &str) -> Redis {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--appendonly",
            appendonly,
            "--save",
            "",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server (scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli(port, &["PING"]).trim() != "PONG" {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Redis(child)
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn info_field(port: u16, field: &str) -> String {
    let info = cli(port, &["INFO", "persistence"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn ready(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::http_get(addr, "/api/ready").await.0 != 200 {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_backup_restores_sessions_and_their_queued_messages() {
    let root = std::env::temp_dir().join(format!("tallow-backup-{}", std::process::id()));
    let (live, saved, restored) = (root.join("live"), root.join("saved"), root.join("restored"));
    for d in [&live, &saved, &restored] {
        std::fs::create_dir_all(d).unwrap();
    }
    let port = free_port();
    let mut r = redis(port, &live, "yes");
    let url = format!("redis://127.0.0.1:{port}/");
    let server = common::start(&["--redis-url", &url, "--resume-grace-secs", "300"]).await;
    let addr = server.local_addr();
    ready(addr).await;

    // b goes away; a's messages wait for it in Redis.
    let (mut a, b, _created, joined) = common::pair(addr).await;
    drop(b);
    a.expect("peer_away").await;
    for seq in 2..=4u64 {
        a.send(json!({"type": "send", "seq": seq, "body": format!("m{seq}")}))
            .await;
        a.expect("ack").await;
    }

    // Backup, from anywhere that reaches Redis, while it serves.
    let backup = saved.join("tallow.rdb");
    let out = cli(port, &["--rdb", backup.to_str().unwrap()]);
    assert!(
        backup.metadata().map(|m| m.len() > 0).unwrap_or(false),
        "{out}"
    );

    // Disaster: Redis dies with its data directory.
    drop(r);
    std::fs::remove_dir_all(&live).unwrap();

    // Restore: the backup as dump.rdb, Redis started once with AOF off so
    // it loads it (with AOF on it would start from an empty AOF instead),
    // then AOF switched on, which writes the AOF from memory.
    std::fs::copy(&backup, restored.join("dump.rdb")).unwrap();
    r = redis(port, &restored, "no");
    assert_eq!(
        cli(port, &["CONFIG", "SET", "appendonly", "yes"]).trim(),
        "OK"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(info_field(port, "aof_enabled") == "1"
        && info_field(port, "aof_rewrite_in_progress") == "0"
        && info_field(port, "aof_rewrite_scheduled") == "0")
    {
        assert!(Instant::now() < deadline, "AOF not written");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next restart runs as shipped (AOF on) and keeps the data.
    drop(r);
    std::fs::remove_file(restored.join("dump.rdb")).unwrap();
    let _r = redis(port, &restored, "yes");
    ready(addr).await;

    // b comes back with its token: the messages queued before the backup.
    let mut b = Client::connect(addr).await;
    b.send(json!({"type": "resume", "token": joined["resume_token"], "last_seq": 1}))
        .await;
    b.expect("resumed").await;
    for seq in 2..=4u64 {
        let m = b.expect("message").await;
        assert_eq!(
            (m["seq"].as_u64(), m["body"].as_str()),
            (Some(seq), Some(format!("m{seq}").as_str()))
        );
    }
    b.assert_alive().await;
    let _ = std::fs::remove_dir_all(&root);
}
