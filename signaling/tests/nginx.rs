//! The shipped nginx.conf in front of a real server: the WebSocket upgrade,
//! the probes, the web client and the client address all pass through.
//! Needs Debian's nginx (scripts/test.sh installs it). TLS is swapped for a
//! plain listener on a free loopback port; everything else is the file as
//! shipped.

mod common;

use common::nginx::start as start_nginx;
use common::{start, Client};
use serde_json::json;

#[tokio::test]
async fn the_shipped_nginx_conf_proxies_signal_probes_and_the_web_client() {
    let server = start(&[
        "--trust-forwarded-for",
        "true",
        "--max-sessions-per-ip",
        "2",
    ])
    .await;
    let nginx = start_nginx(server.local_addr());
    let front = nginx.addr;

    let (status, body) = common::http_get(front, "/api/health").await;
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");
    let (status, body) = common::http_get(front, "/api/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = common::http_get(front, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>Tallow</title>"));
    // Loopback is on the metrics allow-list.
    let (status, body) = common::http_get(front, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("tallow_connections"));

    // Pair through the proxy and exchange a message.
    let (mut a, mut b, _, _) = common::pair(front).await;
    a.send(json!({"type": "send", "seq": 2, "body": "through nginx"}))
        .await;
    a.expect("ack").await;
    assert_eq!(b.expect("message").await["body"], "through nginx");

    // The server sees the client address nginx forwards: with two sessions
    // per IP held by a and b, a third client from 127.0.0.1 is refused.
    let mut c = Client::connect(front).await;
    c.send(json!({"type": "create"})).await;
    c.expect_error("too_many_sessions").await;

    // A spoofed X-Forwarded-For does not buy a new address: nginx appends
    // the real one and the server takes the last entry.
    let mut d = Client::connect_with(front, &[("x-forwarded-for", "203.0.113.9")])
        .await
        .unwrap();
    d.send(json!({"type": "create"})).await;
    d.expect_error("too_many_sessions").await;
}

/// NGINX's request id (its `$request_id`, not one a client made up) reaches
/// tallow-server's JSON log, for a plain request and for a WebSocket.
#[tokio::test]
async fn the_request_id_from_nginx_reaches_the_server_log() {
    let mut bin =
        common::Binary::spawn(&[("TURN_ENABLED", "true"), ("TURN_LISTEN", "127.0.0.1:0")]);
    let nginx = start_nginx(bin.addr);
    let front = nginx.addr;
    let resp = reqwest::Client::new()
        .get(format!("http://{front}/api/turn/credentials"))
        .header("x-request-id", "chosen-by-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(resp.headers().get_all("x-request-id").iter().count(), 1);
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let found = bin.logs.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["request_id"] == id.as_str()).then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not in the server log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(line["path"], "/api/turn/credentials");
    assert_eq!(line["status"], 200);
    // It is NGINX's own: the same id is on its access log line.
    let access = nginx.access_log();
    let mine = access
        .iter()
        .find(|v| {
            v["request"]
                .as_str()
                .unwrap_or("")
                .contains("/api/turn/credentials")
        })
        .unwrap_or_else(|| panic!("no access log line: {access:?}"));
    assert_eq!(mine["request_id"], id.as_str());
    assert!(!bin
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("chosen-by-the-client")));

    // The upgrade through NGINX is logged with an id NGINX made.
    let mut c = Client::connect_with(front, &[("x-request-id", "chosen-by-the-client")])
        .await
        .unwrap();
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let upgrade = bin.logs.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["path"] == "/signal" && v["status"] == 101).then_some(v)
        });
        if let Some(v) = upgrade {
            let rid = v["request_id"].as_str().unwrap().to_owned();
            assert_ne!(rid, id);
            // NGINX logs a WebSocket when it closes.
            drop(c);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !nginx.access_log().iter().any(|a| {
                a["request"].as_str().unwrap_or("").contains("/signal")
                    && a["request_id"] == rid.as_str()
            }) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{rid} not in nginx's log: {:?}",
                    nginx.access_log()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no upgrade line");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bin.signal("-TERM");
    bin.wait_exit(std::time::Duration::from_secs(12));
}

/// Through NGINX (and the request-id middleware) a WebSocket still ends
/// with the server's close code and reason: a client told 1012 resumes
/// elsewhere rather than guessing.
#[tokio::test]
async fn a_close_code_and_reason_pass_through_nginx() {
    let redis = common::RedisServer::start();
    let url = redis.url();
    let mut bin = common::Binary::spawn(&[("REDIS_URL", url.as_str())]);
    let nginx = start_nginx(bin.addr);
    let mut c = Client::connect(nginx.addr).await;
    c.send(json!({"type": "create"})).await;
    c.expect("created").await;
    bin.signal("-TERM");
    let reason = c.expect_close(1012).await;
    assert_eq!(reason, "server restarting: reconnect and resume");
    bin.wait_exit(std::time::Duration::from_secs(12));
}

/// Plain HTTP redirects to HTTPS except for the liveness probe, which load
/// balancers call on port 80 by either name: `/api/health` or the
/// `/api/health/liveness` that earlier manifests use.
#[tokio::test]
async fn liveness_answers_on_plain_http_by_both_names() {
    let server = start(&[]).await;
    let nginx = start_nginx(server.local_addr());
    // Redirects are what is tested, so none is followed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| {
        let req = http.get(format!("http://{}{path}", nginx.http_addr));
        async move {
            let resp = req.send().await.expect("http get");
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    for path in ["/api/health", "/api/health/liveness"] {
        let (status, body) = get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains("\"status\":\"ok\""), "{path}: {body}");
    }
    for path in ["/api/turn/credentials", "/api/health/livenessX", "/"] {
        assert_eq!(get(path).await.0, 301, "{path}");
    }
}
