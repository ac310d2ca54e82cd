//! Operator surface: probes, metrics, the web client, configuration from the
//! environment and graceful shutdown of the real binary.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{start, Binary, Client};
use serde_json::{json, Value};

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let server = start(&[]).await;
    let addr = server.local_addr();
    let (status, body) = common::http_get(addr, "/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );

    let (status, body) = common::http_get(addr, "/api/ready").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["checks"]["presence"]["store"], "memory");
    assert_eq!(v["checks"]["presence"]["status"], "ok");

    let _c = Client::connect(addr).await;
    let (status, metrics) = common::http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE tallow_connections gauge",
        "tallow_connections 1",
        "tallow_connections_accepted_total 1",
        "# TYPE tallow_sessions gauge",
        "# TYPE tallow_nameplates gauge",
        "# TYPE tallow_messages_forwarded counter",
        "# TYPE tallow_errors counter",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    assert!(metrics.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn metrics_can_move_to_their_own_port() {
    let server = start(&["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics_addr = server.metrics_addr().expect("metrics listener");
    let (status, body) = common::http_get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("tallow_connections"));
    let (status, _) = common::http_get(server.local_addr(), "/metrics").await;
    assert_eq!(status, 404, "not on the public port any more");
}

#[tokio::test]
async fn the_web_client_is_served_at_the_root() {
    let server = start(&[]).await;
    let (status, body) = common::http_get(server.local_addr(), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>Tallow</title>"), "{body}");
    let (status, js) = common::http_get(server.local_addr(), "/dist/app.js").await;
    assert_eq!(status, 200);
    assert!(js.contains("/signal"));
    let (status, _) = common::http_get(server.local_addr(), "/nope.html").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn shutdown_closes_clients_with_1012_and_stops_accepting() {
    // With Redis the sessions outlive the node, so a resume is promised;
    // the in-memory store closes with 1001 (tests/hardening.rs).
    let env = common::Store::Redis.start(&[]).await;
    let (server, _redis) = (env.server, env.redis);
    let addr = server.local_addr();
    let (mut a, mut b, _, _) = common::pair(addr).await;
    let started = Instant::now();
    let done = tokio::spawn(server.shutdown(Duration::from_secs(5)));
    for c in [&mut a, &mut b] {
        let reason = c.expect_close(1012).await;
        assert!(reason.contains("resume"), "{reason}");
    }
    assert!(done.await.unwrap(), "drained in time");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn the_binary_takes_its_config_from_the_environment_and_drains_on_sigterm() {
    let mut bin = Binary::spawn(&[
        ("TALLOW_SERVER_ID", "env-node"),
        ("TALLOW_MAX_FRAME_BYTES", "2048"),
        ("TURN_SECRET", "never-printed-secret"),
        ("TURN_URLS", "turn:127.0.0.1:3478?transport=udp"),
    ]);
    let mut a = Client::connect(bin.addr).await;
    assert_eq!(a.welcome["server_id"], "env-node");
    assert_eq!(a.welcome["limits"]["max_frame_bytes"], 2048);
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    let mut b = Client::connect(bin.addr).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    b.expect("joined").await;
    let paired = b.expect("paired").await;
    let turn = &paired["ice_servers"][0];
    assert_eq!(turn["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    let user = turn["username"].as_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        tallow_relay::credentials::expected_password(b"never-printed-secret", user, now).unwrap(),
        turn["credential"].as_str().unwrap()
    );

    a.expect("paired").await;

    bin.signal("-TERM");
    // Sessions in memory end with the process: no resume is promised.
    a.expect_close(1001).await;
    b.expect_close(1001).await;
    let status = bin.wait_exit(Duration::from_secs(12));
    assert!(status.success(), "{status:?}");
    // The child has exited: its log pipe ends and the reader finishes.
    bin.reader.take().unwrap().join().unwrap();
    let logs = bin.logs.lock().unwrap().join("\n");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(
        !logs.contains("never-printed-secret"),
        "the TURN secret was logged"
    );
}

#[tokio::test]
async fn the_binary_treats_blank_variables_as_unset_and_exits_on_sigint() {
    // Blank variables (as templates leave them) count as unset.
    let mut bin = Binary::spawn(&[
        ("TURN_EXTERNAL_IP", ""),
        ("ALLOWED_ORIGINS", ""),
        ("REDIS_URL", ""),
        ("TURN_URLS", ""),
    ]);
    let mut c = Client::connect(bin.addr).await;
    bin.signal("-INT");
    c.expect_close(1001).await;
    assert!(bin.wait_exit(Duration::from_secs(12)).success());
}

#[test]
fn invalid_configuration_is_refused_at_startup() {
    let out = Command::new(env!("CARGO_BIN_EXE_tallow-server"))
        .env_clear()
        .env("TALLOW_LISTEN", "127.0.0.1:0")
        .env("TALLOW_IDLE_TIMEOUT_SECS", "1")
        .env("TALLOW_PING_INTERVAL_SECS", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TALLOW_IDLE_TIMEOUT_SECS"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_tallow-server"))
        .env_clear()
        .env("TURN_PORT_RANGE", "9000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOW-HIGH"));

    // An external relay without the secret it shares: no credential handed
    // out (in `paired` or by /api/turn/credentials) could ever verify.
    // Bounded: a server that accepted this would serve until killed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tallow-server"))
        .env_clear()
        .env("TALLOW_LISTEN", "127.0.0.1:0")
        .env("TURN_ENABLED", "false")
        .env("TURN_URLS", "turn:127.0.0.1:3478?transport=udp")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TURN_SECRET"), "{stderr}");

    // An address no client can be sent to is refused, not advertised.
    for bad in ["0.0.0.0", "224.0.0.1", "::"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tallow-server"))
            .env_clear()
            .env("TALLOW_LISTEN", "127.0.0.1:0")
            .env("TURN_LISTEN", "127.0.0.1:0")
            .env("TURN_EXTERNAL_IP", bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("TURN_EXTERNAL_IP"), "{stderr}");
    }
}

/// Start-up says what the embedded relay advertises, and warns when remote
/// clients could not use it.
#[test]
fn the_relay_says_what_it_advertises() {
    let relay_log = |bin: &Binary| -> Vec<Value> {
        let logs = bin.logs.lock().unwrap();
        logs.iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["target"] == "tallow_relay::event_loop")
            .collect()
    };
    let mut bin = Binary::spawn(&[("TURN_ENABLED", "true"), ("TURN_LISTEN", "0.0.0.0:0")]);
    let logs = relay_log(&bin);
    let listening = logs
        .iter()
        .find(|v| v["message"] == "TURN relay listening")
        .expect("relay start line");
    let advertised = listening["advertised"].as_str().unwrap();
    assert!(
        advertised.contains("local address facing it") && advertised.contains("127.0.0.1"),
        "{advertised}"
    );
    bin.signal("-TERM");
    bin.wait_exit(Duration::from_secs(12));

    let mut bin = Binary::spawn(&[("TURN_ENABLED", "true"), ("TURN_LISTEN", "127.0.0.1:0")]);
    let logs = relay_log(&bin);
    let warning = logs
        .iter()
        .find(|v| v["level"] == "WARN")
        .expect("a loopback relay warns");
    assert!(
        warning["warning"]
            .as_str()
            .unwrap()
            .contains("only clients on this host"),
        "{warning}"
    );
    bin.signal("-TERM");
    bin.wait_exit(Duration::from_secs(12));
}

#[tokio::test]
async fn the_health_check_script_reports_alive_ready_and_dead() {
    let server = start(&[]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/health-check.sh");
    let url = format!("http://{}", server.local_addr());
    let out = tokio::process::Command::new(script)
        .args([url.as_str(), "--metrics"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("alive") && stdout.contains("ready"),
        "{stdout}"
    );
    assert!(stdout.contains("tallow_connections "), "{stdout}");

    // Nothing listens on a port we just freed: not alive, exit 2.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = tokio::process::Command::new(script)
        .arg(format!("http://{dead}"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT ALIVE"));
}

/// The probe script against the server's own HTTPS: a self-signed server's
/// logged pin is what the script checks; a wrong pin, or no trust at all, is
/// "not alive" rather than a silent pass.
#[tokio::test]
async fn the_health_check_script_probes_self_signed_https_by_its_logged_pin() {
    let mut bin = Binary::spawn(&[("TALLOW_TLS_SELF_SIGNED", "true")]);
    let pin = {
        let logs = bin.logs.lock().unwrap();
        logs.iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find_map(|v| v["pin"].as_str().map(str::to_owned))
            .expect("a self-signed server logs its pin")
    };
    assert!(pin.starts_with("sha256//") && pin.len() == 8 + 44, "{pin}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/health-check.sh");
    let url = format!("https://{}", bin.addr);
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(script)
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let ok = run(vec![
        url.clone(),
        "--metrics".into(),
        "--pin".into(),
        pin.clone(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("ready") && stdout.contains("tallow_connections "),
        "{stdout}"
    );

    let wrong = format!("sha256//{}", "A".repeat(43) + "=");
    for args in [vec![url.clone(), "--pin".into(), wrong], vec![url.clone()]] {
        let out = run(args.clone()).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("NOT ALIVE"));
    }
    let bad = run(vec![url.clone(), "--pin".into(), "md5//x".into()]).await;
    assert_eq!(bad.status.code(), Some(3));
    bin.signal("-TERM");
    bin.wait_exit(Duration::from_secs(12));
}

/// The paths Tallow's earlier manifests and clients probe answer as
/// `/api/health` and `/api/ready` do, including when the store stalls.
#[tokio::test]
async fn liveness_and_readiness_paths_follow_health_and_ready() {
    let env = common::Store::Redis.start(&[]).await;
    let addr = env.local_addr();
    let (status, body) = common::http_get(addr, "/api/health/liveness").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );
    // Ready once the node has subscribed to its notice channel.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = common::http_get(addr, "/api/health/readiness").await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["checks"]["presence"]["store"], "redis");

    // Redis stalls (SIGSTOP): not ready, still alive, and back after.
    let redis = env.redis.as_ref().unwrap();
    redis.stop();
    let (status, body) = common::http_get(addr, "/api/health/readiness").await;
    redis.cont();
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["failed"], json!(["presence"]));
    let (status, _) = common::http_get(addr, "/api/health/liveness").await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while common::http_get(addr, "/api/health/readiness").await.0 != 200 {
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_lines(bin: &Binary) -> Vec<Value> {
    bin.logs
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Wait (bounded) for a log line matching `pred`.
async fn logged(bin: &Binary, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = log_lines(bin).into_iter().find(&pred) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {what}: {:#?}",
            log_lines(bin)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn request_ids_reach_the_json_log_for_requests_and_upgrades() {
    let mut bin = Binary::spawn(&[("RUST_LOG", "info,tallow_signaling::conn=debug")]);
    let addr = bin.addr;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("http://{addr}/"))
        .header("x-request-id", "edge-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "edge-7f3a");
    let line = logged(&bin, "for GET /", |v| v["request_id"] == "edge-7f3a").await;
    assert_eq!(
        (
            &line["message"],
            &line["method"],
            &line["path"],
            &line["status"]
        ),
        (
            &json!("http request"),
            &json!("GET"),
            &json!("/"),
            &json!(200)
        )
    );

    // A header that is not a plausible id is replaced, and never logged.
    for hostile in ["has space", "x\"}{\"level\":\"ERROR", &"z".repeat(129)] {
        let resp = http
            .get(format!("http://{addr}/index.html"))
            .header("x-request-id", hostile)
            .send()
            .await
            .unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        logged(&bin, "for the replaced id", |v| {
            v["request_id"] == id.as_str()
        })
        .await;
        assert!(
            !bin.logs.lock().unwrap().iter().any(|l| l.contains(hostile)),
            "{hostile:?} reached the log"
        );
    }

    // A WebSocket upgrade: its own line, and the id on the connection's
    // lines (its span).
    let mut c = Client::connect_with(addr, &[("x-request-id", "ws-upgrade-42")])
        .await
        .unwrap();
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    let line = logged(&bin, "for the upgrade", |v| {
        v["request_id"] == "ws-upgrade-42" && v["message"] == "http request"
    })
    .await;
    assert_eq!(
        (&line["path"], &line["status"]),
        (&json!("/signal"), &json!(101))
    );
    logged(&bin, "from the connection", |v| {
        v["message"] == "connected" && v["span"]["request_id"] == "ws-upgrade-42"
    })
    .await;

    // Probes are routine: not at info.
    let resp = http
        .get(format!("http://{addr}/api/health/liveness"))
        .header("x-request-id", "probe-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "probe-1");
    drop(c);
    bin.signal("-TERM");
    bin.wait_exit(Duration::from_secs(12));
    assert!(!bin
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("probe-1")));
}

async fn health_check(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/health-check.sh");
    let mut cmd = tokio::process::Command::new(script);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

/// The probe script passes against a running server (with its TURN
/// credentials and metrics), and fails, non-zero, against one that stalls
/// (SIGSTOP), one whose store stalls, and one that is gone.
#[tokio::test]
async fn the_health_check_script_fails_on_a_stalled_or_stopped_server() {
    let mut bin = Binary::spawn(&[("TURN_ENABLED", "true"), ("TURN_LISTEN", "127.0.0.1:0")]);
    let url = format!("http://{}", bin.addr);
    let out = health_check(&[&url, "--metrics", "--turn"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "PASS alive",
        "PASS ready",
        "PASS metrics",
        "PASS turn credentials",
    ] {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    // Not a terminal: no colour codes. On a terminal (script(1) gives it
    // a pty), PASS is green.
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/health-check.sh");
    let tty = tokio::process::Command::new("script")
        .args(["-qec", &format!("{script} {url}"), "/dev/null"])
        .output()
        .await
        .expect("script(1), from util-linux");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(shown.contains("\u{1b}[32mPASS\u{1b}[0m alive"), "{shown:?}");

    // A stalled process holds its port but answers nothing.
    bin.signal("-STOP");
    let out = health_check(&[&url], &[]).await;
    bin.signal("-CONT");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT ALIVE"));
    let out = health_check(&[&url], &[]).await;
    assert!(out.status.success());

    // Gone: nothing listens.
    bin.signal("-TERM");
    bin.wait_exit(Duration::from_secs(12));
    let out = health_check(&[&url], &[("TALLOW_URL", "http://127.0.0.1:9")]).await;
    assert_eq!(out.status.code(), Some(2));

    // Alive but its Redis stalls: not ready, exit 1, with the reason.
    let env = common::Store::Redis.start(&[]).await;
    let url = format!("http://{}", env.local_addr());
    env.redis.as_ref().unwrap().stop();
    let out = health_check(&[&url], &[]).await;
    env.redis.as_ref().unwrap().cont();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOT READY") && stderr.contains("presence"),
        "{stderr}"
    );
    // TURN credentials asked of a server without a relay: a failed check.
    let out = health_check(&[&url, "--turn"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("turn_unavailable"));

    // Bad usage, and a k8s target with no cluster to reach.
    assert_eq!(health_check(&["staging"], &[]).await.status.code(), Some(3));
    let out = health_check(&["k8s"], &[("KUBECONFIG", "/nonexistent")]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback HTTP server that is not tallow-server: `answer` gives each
/// path's status line and body. It serves until the returned flag is set.
fn stranger(
    answer: fn(&str) -> (&'static str, &'static str),
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut reader = BufReader::new(conn);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let path = request.split(' ').nth(1).unwrap_or("/").to_owned();
            // The rest of the head, so that closing does not reset it.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = answer(&path);
            let mut conn = reader.into_inner();
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, stop)
}

/// A 200 is not enough: the answer must be tallow-server's. A base URL that
/// lands on the web client, or another server that answers every path,
/// is not a live and ready tallow-server.
#[tokio::test]
async fn the_health_check_script_wants_the_servers_answer_not_any_200() {
    let server = start(&[]).await;
    // The query swallows the probe's path: the server sends its index page.
    let url = format!("http://{}/?from=probe", server.local_addr());
    let out = health_check(&[&url], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT ALIVE"));

    // A web server with a page for every path.
    let (addr, stop) = stranger(|_| ("200 OK", "<html>\n<body>Welcome</body>\n</html>\n"));
    let out = health_check(&[&format!("http://{addr}")], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    // Alive by its answer, but readiness answered by something else.
    let (addr, stop) = stranger(|path| match path {
        "/api/health/liveness" => ("200 OK", r#"{"status":"ok"}"#),
        _ => ("200 OK", "ready enough"),
    });
    let out = health_check(&[&format!("http://{addr}")], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("PASS alive"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT READY"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    // A redirect is not followed, and the failure says where it pointed.
    let (addr, stop) = stranger(|_| {
        (
            "301 Moved Permanently\r\nLocation: https://elsewhere.invalid/api/health/liveness",
            "",
        )
    });
    let out = health_check(&[&format!("http://{addr}")], &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("301 redirected to https://elsewhere.invalid/api/health/liveness"),
        "{stderr}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Operators quiet the log with RUST_LOG=warn; the warnings a connection
/// logs (its store failing) are the lines to correlate, so they still carry
/// the upgrade's request id.
#[tokio::test]
async fn a_connections_warnings_carry_its_request_id_at_warn_level() {
    let redis = common::RedisServer::start();
    let port = common::free_port();
    let dir = std::env::temp_dir().join(format!("tallow-warn-log-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("stdout");
    // Not common::Binary: it waits for the info-level start-up line.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_tallow-server"))
        .env_clear()
        .env("TALLOW_LISTEN", format!("127.0.0.1:{port}"))
        .env("TURN_ENABLED", "false")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env("REDIS_URL", redis.url())
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect_with(addr, &[("x-request-id", "quiet-log-7")])
        .await
        .unwrap();
    redis.stop();
    c.send(json!({"type": "create"})).await;
    c.expect_error("presence_unavailable").await;
    redis.cont();
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON lines"))
        .find(|v| v["message"] == "presence store unavailable")
        .unwrap_or_else(|| panic!("no store warning in {text}"));
    assert_eq!(line["span"]["request_id"], "quiet-log-7", "{line}");
}
