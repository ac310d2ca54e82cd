//! A real Prometheus (Debian's `prometheus` package) scrapes a real
//! tallow-server with its embedded relay every second while real traffic
//! runs through it: a paired session exchanging messages, a protocol error,
//! TURN allocations relaying both ways (coturn's turnutils_uclient against
//! turnutils_peer). Then every query of the Grafana dashboard
//! (monitoring/grafana/tallow.json) must return data, its variable queries
//! must find this server, and the alert rules (monitoring/alerts.yml) must
//! be loaded and evaluate without error.
//!
//! scripts/check-monitoring.sh installs prometheus; without it this test
//! fails, it does not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::turn::Proc;
use serde_json::{json, Value};

const PROMETHEUS: &str = "/usr/bin/prometheus";
/// The scrape job's name, as monitoring/README.md tells operators to name it
/// (and as the ServiceMonitor names it after its Service).
const JOB: &str = "tallow-server";
/// Prometheus scrapes and evaluates rules this often here.
const SCRAPE_SECS: u64 = 1;
/// Grafana's `$__rate_interval` is max($__interval + scrape interval,
/// 4 × scrape interval); for a short range with a 1 s scrape interval that
/// is its floor, 4 × 1 s.
const RATE_INTERVAL: &str = "4s";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Prometheus {
    _proc: Proc,
    base: String,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Start prometheus on a free loopback port, scraping `target` as job
    /// `tallow-server` and evaluating `rules`; returns once it is ready.
    async fn start(target: std::net::SocketAddr, rules: &Path) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's prometheus package \
             (scripts/check-monitoring.sh does) before running this test"
        );
        let port = common::free_port();
        let dir =
            std::env::temp_dir().join(format!("tallow-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: {SCRAPE_SECS}s\n  scrape_timeout: {SCRAPE_SECS}s\n  \
             evaluation_interval: {SCRAPE_SECS}s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            _proc: Proc(child),
            base: format!("http://127.0.0.1:{port}"),
            dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = p
                .http
                .get(format!("{}/-/ready", p.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path with query parameters; the `data` of a success.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let resp = self.http.get(url).send().await.expect("prometheus answers");
        let body: Value = resp.json().await.expect("prometheus JSON");
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        body["data"].clone()
    }

    /// An instant query at `time`: its result vector.
    async fn query(&self, expr: &str, time: f64) -> Vec<Value> {
        let time = format!("{time:.3}");
        let data = self
            .api("/api/v1/query", &[("query", expr), ("time", &time)])
            .await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().unwrap().clone()
    }

    async fn now_value(&self, expr: &str) -> Option<f64> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        let v = data["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .to_owned();
        v.parse().ok()
    }
}

/// Every `expr` of every target of every panel, rows' panels included.
fn dashboard_exprs(v: &Value, out: &mut Vec<(String, String)>, panel: &str) {
    match v {
        Value::Object(m) => {
            let title = m
                .get("title")
                .and_then(Value::as_str)
                .map_or(panel.to_owned(), str::to_owned);
            if let Some(Value::Array(targets)) = m.get("targets") {
                for t in targets {
                    let expr = t["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{title}: target without expr"));
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            for (k, child) in m {
                if k != "targets" && k != "templating" {
                    dashboard_exprs(child, out, &title);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| dashboard_exprs(c, out, panel)),
        _ => {}
    }
}

/// The dashboard's variables as this test's Prometheus knows them: one job,
/// every instance (the "All" value, a regex).
fn substitute(expr: &str, instance_all: &str) -> String {
    let out = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", JOB)
        .replace("$instance", instance_all);
    assert!(
        !out.contains('$'),
        "a dashboard variable this test does not know: {expr}"
    );
    out
}

/// `label_values(SELECTOR, LABEL)`, Grafana's variable query.
fn label_values(q: &str) -> (String, String) {
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {q}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    (selector.trim().to_owned(), label.trim().to_owned())
}

/// Run coturn's client through the embedded relay to an echo peer.
fn uclient(user: &str, pass: &str, turn_port: u16, peer_port: u16) -> String {
    let (peer, turn) = (peer_port.to_string(), turn_port.to_string());
    common::turn::uclient(&[
        "-c",
        "-u",
        user,
        "-w",
        pass,
        "-e",
        "127.0.0.1",
        "-r",
        &peer,
        "-p",
        &turn,
        "-m",
        "2",
        "-n",
        "50",
        "-l",
        "100",
        "127.0.0.1",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_the_alert_rules_load() {
    let server = common::start(&[
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        "--turn-allow-loopback",
        "true",
        "--turn-port-range",
        "42000-42499",
    ])
    .await;
    let addr = server.local_addr();
    let turn = server.turn_addr().expect("embedded relay runs");
    let rules = repo().join("monitoring/alerts.yml").canonicalize().unwrap();
    let prom = Prometheus::start(addr, &rules).await;

    // Traffic. A paired session: the joiner's `paired` carries the relay
    // credentials.
    let mut a = common::Client::connect(addr).await;
    a.send(json!({"type": "create"})).await;
    let created = a.expect("created").await;
    let mut b = common::Client::connect(addr).await;
    b.send(json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    b.expect("joined").await;
    let paired = b.expect("paired").await;
    a.expect("paired").await;
    common::open_handshake(&mut a, &mut b, created["session"].as_str().unwrap()).await;
    common::exchange_both_ways(a, b, 20).await;
    // A protocol error.
    let mut c = common::Client::connect(addr).await;
    c.send_text("this is not JSON").await;
    c.expect_error("bad_json").await;
    // TURN allocations relaying both ways.
    let turn_server = &paired["ice_servers"][1];
    let user = turn_server["username"].as_str().unwrap().to_owned();
    let pass = turn_server["credential"].as_str().unwrap().to_owned();
    let peer_port = common::free_port();
    let _peer = Proc(
        Command::new("/usr/bin/turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer (Debian package coturn)"),
    );
    // turnutils_peer binds right after exec; the client retries nothing, so
    // wait until the UDP port is taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", peer_port)).is_ok() {
        assert!(Instant::now() < deadline, "turnutils_peer did not bind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = tokio::task::spawn_blocking(move || uclient(&user, &pass, turn.port(), peer_port))
        .await
        .unwrap();
    assert!(
        text.contains("tot_send_msgs=100, tot_recv_msgs=100"),
        "{text}"
    );

    // Wait (bounded) until Prometheus has scraped the traffic, with enough
    // samples in a rate window behind it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let relayed = prom
            .now_value(&format!(
                "sum(tallow_turn_packets_relayed_total{{job=\"{JOB}\",direction=\"peer_to_client\"}})"
            ))
            .await;
        let samples = prom
            .now_value(&format!(
                "count_over_time(up{{job=\"{JOB}\"}}[{RATE_INTERVAL}])"
            ))
            .await;
        let up = prom.now_value(&format!("up{{job=\"{JOB}\"}}")).await;
        if relayed.is_some_and(|n| n >= 100.0)
            && samples.is_some_and(|n| n >= 3.0)
            && up == Some(1.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the traffic (relayed {relayed:?}, samples {samples:?}, up {up:?}):\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every query is asked at the time of the latest scrape, so that each
    // rate window ends at a sample.
    let at = prom
        .now_value(&format!("timestamp(up{{job=\"{JOB}\"}})"))
        .await
        .expect("a scrape timestamp");

    // The variable queries find this server.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("monitoring/grafana/tallow.json")).unwrap(),
    )
    .expect("dashboard JSON");
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let mut known = vec!["datasource"];
    for var in vars {
        let name = var["name"].as_str().unwrap();
        if var["type"] == "datasource" {
            assert_eq!(var["query"], "prometheus");
            continue;
        }
        known.push(name);
        let q = var["query"]["query"].as_str().unwrap();
        let (selector, label) = label_values(&substitute(q, ".*"));
        let values = prom
            .api(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", &selector)],
            )
            .await;
        let want = if label == "instance" {
            addr.to_string()
        } else {
            JOB.to_owned()
        };
        assert!(
            values.as_array().unwrap().iter().any(|v| v == &json!(want)),
            "variable {name} ({q}) does not offer {want}: {values}"
        );
    }
    assert_eq!(
        known,
        ["datasource", "job", "instance"],
        "variables the substitution knows"
    );

    // Every panel query returns data.
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], &mut exprs, "");
    assert!(exprs.len() >= 30, "{} queries", exprs.len());
    let mut empty = Vec::new();
    for (panel, expr) in &exprs {
        let q = substitute(expr, ".*");
        let result = prom.query(&q, at).await;
        if result.is_empty() {
            empty.push(format!("{panel}: {q}"));
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned no data:\n{}",
        empty.len(),
        exprs.len(),
        empty.join("\n")
    );
    // A figure the traffic must show, as a check that the data is ours.
    let by_direction = prom
        .query(
            &substitute(
                "sum by (direction) (tallow_turn_packets_relayed_total{job=~\"$job\", instance=~\"$instance\"})",
                ".*",
            ),
            at,
        )
        .await;
    assert_eq!(by_direction.len(), 2, "{by_direction:?}");
    for s in &by_direction {
        let n: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
        assert!(n >= 100.0, "{s}");
    }

    // The alert rules: loaded, every one of them, and evaluated without error.
    let want: Vec<String> = std::fs::read_to_string(&rules)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(want.len() >= 10, "{want:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let rules_seen = loop {
        let data = prom.api("/api/v1/rules", &[("type", "alert")]).await;
        let seen: Vec<Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        let evaluated = seen.len() == want.len() && seen.iter().all(|r| r["health"] != "unknown");
        if evaluated {
            break seen;
        }
        assert!(Instant::now() < deadline, "rules not all evaluated: {data}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut names: Vec<String> = rules_seen
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    for r in &rules_seen {
        assert_eq!(
            r["health"], "ok",
            "rule {} failed to evaluate: {r}",
            r["name"]
        );
        assert!(r["lastError"].as_str().unwrap_or("").is_empty(), "{r}");
    }
    let mut want_sorted = want.clone();
    want_sorted.sort();
    names.sort();
    assert_eq!(names, want_sorted);
    // A healthy node under light traffic: no condition holds, so no rule
    // is even pending.
    let active: Vec<&Value> = rules_seen
        .iter()
        .filter(|r| r["state"] != "inactive")
        .collect();
    assert!(active.is_empty(), "{active:?}");
}
