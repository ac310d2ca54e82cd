//! `GET /api/turn/credentials` against real relays: the credentials it
//! hands out allocate on the embedded relay and on coturn with
//! `use-auth-secret` (driven by coturn's own turnutils_uclient), within the
//! documented lifetime, rate limited per address, refused to other origins.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::free_port;
use common::turn::Proc;
use serde_json::Value;

const SECRET: &str = "an-operator-secret-shared-with-coturn-0123456789";

/// GET `path` with extra headers: status, headers, JSON body.
async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("http get");
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.json().await.expect("a JSON body");
    (status, h, body)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Run coturn's client to completion (bounded): its output.
async fn uclient(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        common::turn::uclient(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

/// 2 clients x 50 messages through the relay at `turn_port` to an echo peer.
async fn relay_through(turn_port: u16, user: &str, pass: &str) -> String {
    let peer_port = free_port();
    let _peer = Proc(
        Command::new("/usr/bin/turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let args = [
        "-c",
        "-u",
        user,
        "-w",
        pass,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &turn_port.to_string(),
        "-m",
        "2",
        "-n",
        "50",
        "-l",
        "100",
        "127.0.0.1",
    ];
    uclient(args.iter().map(|s| s.to_string()).collect()).await
}

fn start_coturn(port: u16) -> Proc {
    let child = Command::new("/usr/bin/turnserver")
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
            "--log-file=stdout",
            "--min-port=51000",
            "--max-port=51999",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver (Debian package coturn; scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    // coturn answers TCP on its listening port once it is up.
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "coturn did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

#[tokio::test]
async fn credentials_over_http_allocate_on_the_embedded_relay_and_on_coturn() {
    let server = common::start(&[
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        "--turn-allow-loopback",
        "true",
        "--turn-port-range",
        "46000-46999",
        "--turn-secret",
        SECRET,
    ])
    .await;
    let turn = server.turn_addr().expect("embedded relay runs");
    let before = now();
    let (status, headers, c) = get(server.local_addr(), "/api/turn/credentials?ttl=600", &[]).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(c["ttl"], 600);
    let user = c["username"].as_str().unwrap();
    let pass = c["password"].as_str().unwrap();
    let expiry: u64 = user.split_once(':').unwrap().0.parse().unwrap();
    assert!((before + 600..=now() + 600).contains(&expiry), "{user}");
    assert_eq!(c["expires_at"], expiry);
    assert_eq!(
        c["uris"][0],
        format!("turn:127.0.0.1:{}?transport=udp", turn.port())
    );
    // The same servers in `paired`'s shape.
    assert_eq!(c["ice_servers"][1]["username"], user);
    assert_eq!(c["ice_servers"][1]["credential"], pass);

    let text = relay_through(turn.port(), user, pass).await;
    assert!(
        text.contains("tot_send_msgs=100, tot_recv_msgs=100"),
        "{text}"
    );

    // A server fronting coturn (TURN_URLS, same secret, no embedded relay).
    let coturn_port = free_port();
    let _coturn = start_coturn(coturn_port);
    let url = format!("turn:127.0.0.1:{coturn_port}?transport=udp");
    let front = common::start(&["--turn-urls", &url, "--turn-secret", SECRET]).await;
    let (status, _, c) = get(front.local_addr(), "/api/turn/credentials", &[]).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["uris"], serde_json::json!([url]));
    let (user, pass) = (
        c["username"].as_str().unwrap(),
        c["password"].as_str().unwrap(),
    );
    let text = relay_through(coturn_port, user, pass).await;
    assert!(
        text.contains("tot_send_msgs=100, tot_recv_msgs=100"),
        "coturn: {text}"
    );
    // coturn checks them: the same username with another password fails.
    let forged = format!("{}A", &pass[..pass.len() - 1]);
    let forged = if forged == pass {
        format!("{}B", &pass[..pass.len() - 1])
    } else {
        forged
    };
    let text = relay_through(coturn_port, user, &forged).await;
    assert!(
        !text.contains("tot_recv_msgs=100"),
        "coturn took a forged password: {text}"
    );
}

#[tokio::test]
async fn lifetimes_outside_300_s_to_12_h_and_odd_requests_are_refused() {
    let server = common::start(&["--turn-enabled", "true", "--turn-listen", "127.0.0.1:0"]).await;
    let addr = server.local_addr();
    // The default is TURN_CREDENTIAL_TTL_SECS (3600).
    let (status, _, c) = get(addr, "/api/turn/credentials", &[]).await;
    assert_eq!((status, c["ttl"].as_u64()), (200, Some(3600)), "{c}");
    for ttl in ["300", "43200"] {
        let (status, _, c) = get(addr, &format!("/api/turn/credentials?ttl={ttl}"), &[]).await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["ttl"].to_string(), ttl);
    }
    for query in [
        "ttl=299",
        "ttl=43201",
        "ttl=0",
        "ttl=-1",
        "ttl=abc",
        "ttl=99999999999999999999999",
        "service=stun",
        "username=a%3Ab",
        "username=%0Ainjected",
    ] {
        let (status, _, c) = get(addr, &format!("/api/turn/credentials?{query}"), &[]).await;
        assert_eq!(status, 400, "{query}: {c}");
        assert_eq!(c["code"], "bad_request", "{query}");
        assert!(c.get("password").is_none());
    }
    // A label of the caller's choosing ends the username.
    let (_, _, c) = get(
        addr,
        "/api/turn/credentials?service=turn&username=probe.7",
        &[],
    )
    .await;
    assert!(c["username"].as_str().unwrap().ends_with(":probe.7"), "{c}");

    // No relay configured: a clear refusal, not credentials for nothing.
    let bare = common::start(&[]).await;
    let (status, _, c) = get(bare.local_addr(), "/api/turn/credentials", &[]).await;
    assert_eq!(
        (status, c["code"].as_str()),
        (503, Some("turn_unavailable")),
        "{c}"
    );
}

#[tokio::test]
async fn credentials_are_rate_limited_per_address() {
    let server = common::start(&[
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        "--trust-forwarded-for",
        "true",
        "--turn-credentials-per-ip-per-min",
        "3",
    ])
    .await;
    let addr = server.local_addr();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..3 {
        let (status, _, c) = get(addr, "/api/turn/credentials", &from("203.0.113.1")).await;
        assert_eq!(status, 200, "{c}");
    }
    let (status, headers, c) = get(addr, "/api/turn/credentials", &from("203.0.113.1")).await;
    assert_eq!(status, 429, "{c}");
    assert_eq!(c["code"], "rate_limited");
    assert!(c.get("password").is_none());
    // Three a minute: the next one in about 20 s.
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(c["retry_after_secs"], retry);
    // Another address has its own budget, and the limited one may still
    // open /signal (a separate budget).
    let (status, _, _) = get(addr, "/api/turn/credentials", &from("203.0.113.2")).await;
    assert_eq!(status, 200);
    let mut ws = common::Client::connect_with(addr, &[("x-forwarded-for", "203.0.113.1")])
        .await
        .expect("/signal admits the address");
    ws.send(serde_json::json!({"type": "create"})).await;
    ws.expect("created").await;
    // Refusals are counted by code.
    let (_, metrics) = common::http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("tallow_errors_total{code=\"rate_limited\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn other_origins_are_refused_and_allowed_ones_may_read_the_answer() {
    let server = common::start(&[
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        "--allowed-origins",
        "https://tallow.example",
    ])
    .await;
    let addr = server.local_addr();
    for evil in [
        "https://evil.example",
        "https://tallow.example.evil",
        "null",
    ] {
        let (status, headers, c) = get(addr, "/api/turn/credentials", &[("origin", evil)]).await;
        assert_eq!(status, 403, "{evil}: {c}");
        assert_eq!(c["code"], "origin_not_allowed");
        assert!(c.get("password").is_none());
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    let (status, headers, c) = get(
        addr,
        "/api/turn/credentials",
        &[("origin", "https://tallow.example")],
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://tallow.example"
    );
    assert_eq!(headers["vary"], "origin");
    // Not a browser page (curl, the CLI): served, without CORS headers.
    let (status, headers, _) = get(addr, "/api/turn/credentials", &[]).await;
    assert_eq!(status, 200);
    assert!(headers.get("access-control-allow-origin").is_none());
}

/// A page of an allowed origin reads refusals too: without
/// `Access-Control-Allow-Origin` a browser hides a 429 (and its
/// `retry_after_secs`), a 400 or a 503 behind a bare network error.
#[tokio::test]
async fn an_allowed_page_may_read_the_refusals() {
    let origin = "https://tallow.example";
    let server = common::start(&[
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        "--allowed-origins",
        origin,
        "--turn-credentials-per-ip-per-min",
        "2",
    ])
    .await;
    let addr = server.local_addr();
    let (status, headers, c) =
        get(addr, "/api/turn/credentials?ttl=1", &[("origin", origin)]).await;
    assert_eq!(status, 400, "{c}");
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert_eq!(headers["vary"], "origin");
    let (status, _, c) = get(addr, "/api/turn/credentials", &[("origin", origin)]).await;
    assert_eq!(status, 200, "{c}");
    let (status, headers, c) = get(addr, "/api/turn/credentials", &[("origin", origin)]).await;
    assert_eq!((status, c["code"].as_str()), (429, Some("rate_limited")));
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert!(c["retry_after_secs"].as_u64().is_some(), "{c}");
    // Another origin still learns nothing, not even that it was refused.
    let (status, headers, _) = get(
        addr,
        "/api/turn/credentials",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(headers.get("access-control-allow-origin").is_none());

    // A server without a relay says so to the page as well.
    let bare = common::start(&["--allowed-origins", origin]).await;
    let (status, headers, c) = get(
        bare.local_addr(),
        "/api/turn/credentials",
        &[("origin", origin)],
    )
    .await;
    assert_eq!(
        (status, c["code"].as_str()),
        (503, Some("turn_unavailable"))
    );
    assert_eq!(headers["access-control-allow-origin"], origin);
}
