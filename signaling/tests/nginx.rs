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
