//! Whether this node should get traffic: one check that both `/api/ready`
//! and the `tallow_ready` gauge (computed when /metrics is scraped) use, so
//! the probe and the alert never disagree.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::state::AppState;

/// How long readiness waits for the presence store.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Readiness {
    /// Names of the failed checks; empty when ready.
    pub failed: Vec<&'static str>,
    /// Each check's outcome, as /api/ready shows it.
    pub checks: Map<String, Value>,
    /// Whether the presence store answered the probe.
    pub presence_ok: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.failed.is_empty()
    }
}

pub(crate) async fn check(st: &AppState) -> Readiness {
    let mut checks = Map::new();
    let mut failed = Vec::new();
    checks.insert("config".into(), json!("ok"));
    match tallow_peer::mlkem_self_test() {
        Ok(()) => {
            checks.insert("mlkem_self_test".into(), json!("ok"));
        }
        Err(e) => {
            failed.push("mlkem_self_test");
            checks.insert("mlkem_self_test".into(), json!(e));
        }
    }
    if st.shutdown.is_cancelled() {
        failed.push("shutdown");
        checks.insert("shutdown".into(), json!("draining"));
    }
    let probe = tokio::time::timeout(READY_PROBE_TIMEOUT, st.presence.ping()).await;
    let presence = match probe {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", READY_PROBE_TIMEOUT.as_secs()),
    };
    let presence_ok = presence == "ok";
    if !presence_ok {
        failed.push("presence");
    }
    checks.insert(
        "presence".into(),
        json!({ "store": st.presence.kind(), "status": presence }),
    );
    Readiness {
        failed,
        checks,
        presence_ok,
    }
}
