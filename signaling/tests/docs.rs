//! The documentation names what the code does: every option, error code,
//! close code and metric.

mod common;

use clap::CommandFactory;
use tallow_signaling::config::Config;
use tallow_signaling::protocol::{close, ErrorCode};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_option_is_documented_in_readme_and_devops() {
    let readme = read("README.md");
    let devops = read("DEVOPS.md");
    let mut n = 0;
    for arg in Config::command().get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_str().unwrap();
        let flag = format!("--{}", arg.get_long().unwrap());
        assert!(
            readme.contains(&format!("`{env}`")),
            "README.md lacks {env}"
        );
        assert!(
            readme.contains(&format!("`{flag}`")),
            "README.md lacks {flag}"
        );
        assert!(
            devops.contains(&format!("`{env}`")),
            "DEVOPS.md lacks {env}"
        );
        n += 1;
    }
    assert!(n >= 30, "only {n} options found");
}

#[test]
fn every_error_and_close_code_is_in_the_protocol_doc() {
    let doc = read("docs/PROTOCOL.md");
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", code.as_str())),
            "docs/PROTOCOL.md lacks error code {}",
            code.as_str()
        );
    }
    for c in [
        close::POLICY_VIOLATION,
        close::MESSAGE_TOO_BIG,
        close::SERVICE_RESTART,
        close::TRY_AGAIN_LATER,
        close::IDLE_TIMEOUT,
        close::SUPERSEDED,
    ] {
        assert!(
            doc.contains(&format!("| {c} |")),
            "docs/PROTOCOL.md lacks close {c}"
        );
    }
}

#[tokio::test]
async fn every_exported_metric_is_in_devops() {
    let server = common::start(&[]).await;
    let (_, metrics) = common::http_get(server.local_addr(), "/metrics").await;
    let devops = read("DEVOPS.md");
    let mut n = 0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let shown = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        assert!(
            devops.contains(&format!("`{shown}")),
            "DEVOPS.md lacks {shown}"
        );
        n += 1;
    }
    assert!(n >= 8);
}
