//! The metrics the alert rules stand on (monitoring/alerts.yml): readiness
//! and the presence store as seen from a real node in front of a real
//! redis-server, the configured limits, and process figures.

mod common;

use std::time::{Duration, Instant};

/// The value of an unlabelled series in a /metrics page.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = common::http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// Scrape until `ok` holds, at most 20 s.
async fn scrape_until(addr: std::net::SocketAddr, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(addr).await;
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} never held:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn ready_and_presence_gauges_follow_the_store_as_the_probe_does() {
    let mut env = common::Store::Redis.start(&[]).await;
    let addr = env.local_addr();
    // Ready once the node has subscribed to its notice channel.
    let m = scrape_until(addr, "ready at start", |m| {
        value(m, "tallow_ready") == Some(1.0)
    })
    .await;
    let (status, body) = common::http_get(addr, "/api/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(value(&m, "tallow_presence_up"), Some(1.0), "{m}");
    let errors_before = value(&m, "tallow_presence_errors_total").expect("presence errors");

    // Redis goes away: the probe and the gauges agree, and the failed
    // heartbeats are counted.
    env.redis.as_mut().unwrap().kill();
    let (status, body) = common::http_get(addr, "/api/ready").await;
    assert_eq!(status, 503, "{body}");
    let m = scrape_until(addr, "presence errors counted", |m| {
        value(m, "tallow_presence_errors_total").is_some_and(|v| v > errors_before)
    })
    .await;
    assert_eq!(value(&m, "tallow_ready"), Some(0.0), "{m}");
    assert_eq!(value(&m, "tallow_presence_up"), Some(0.0), "{m}");

    // Back: ready again once the store answers.
    env.redis.as_mut().unwrap().restart();
    let m = scrape_until(addr, "ready again", |m| {
        value(m, "tallow_ready") == Some(1.0)
    })
    .await;
    assert_eq!(value(&m, "tallow_presence_up"), Some(1.0), "{m}");
    let (status, body) = common::http_get(addr, "/api/ready").await;
    assert_eq!(status, 200, "{body}");

    // Stalled rather than gone (SIGSTOP): the probe times out, and the
    // scrape still answers with the node marked unready.
    let errors_before = value(&m, "tallow_presence_errors_total").unwrap();
    env.redis.as_ref().unwrap().stop();
    let m = scrape_until(addr, "stall counted", |m| {
        value(m, "tallow_presence_errors_total").is_some_and(|v| v > errors_before)
    })
    .await;
    assert_eq!(value(&m, "tallow_ready"), Some(0.0), "{m}");
    assert_eq!(value(&m, "tallow_presence_up"), Some(0.0), "{m}");
    env.redis.as_ref().unwrap().cont();
    scrape_until(addr, "ready after the stall", |m| {
        value(m, "tallow_ready") == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn the_configured_limits_are_exported() {
    let server = common::start(&[
        "--max-connections",
        "321",
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        "--turn-total-quota",
        "77",
    ])
    .await;
    let m = scrape(server.local_addr()).await;
    assert_eq!(value(&m, "tallow_max_connections"), Some(321.0), "{m}");
    assert_eq!(value(&m, "tallow_turn_max_allocations"), Some(77.0), "{m}");
    // The relay's labelled series exist from the start, so rate() and the
    // alerts on them work from zero.
    for series in [
        r#"tallow_turn_packets_relayed_total{direction="client_to_peer"} 0"#,
        r#"tallow_turn_packets_relayed_total{direction="peer_to_client"} 0"#,
        r#"tallow_turn_bytes_relayed_total{direction="peer_to_client"} 0"#,
        r#"tallow_turn_dropped_packets_total{reason="bandwidth"} 0"#,
        r#"tallow_turn_dropped_packets_total{reason="no_permission"} 0"#,
    ] {
        assert!(m.contains(series), "{series} missing from\n{m}");
    }
}

#[tokio::test]
async fn process_figures_describe_the_serving_process() {
    let server = common::start(&[]).await;
    let m = scrape(server.local_addr()).await;
    // The server runs inside this test process: its own /proc figures.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let threads: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(value(&m, "tallow_process_threads").is_some_and(|t| t >= 1.0 && t <= threads * 2.0));
    assert!(
        value(&m, "tallow_process_resident_memory_bytes").is_some_and(|b| b > 1e6),
        "{m}"
    );
    assert!(
        value(&m, "tallow_process_open_fds").is_some_and(|n| n >= 3.0),
        "{m}"
    );
    assert!(
        value(&m, "tallow_process_cpu_seconds_total").is_some(),
        "{m}"
    );
    assert!(
        value(&m, "tallow_process_max_fds").is_some_and(|n| n >= 3.0),
        "{m}"
    );
}
