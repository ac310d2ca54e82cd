//! What every connection and route of one node shares. Its own module so
//! that the connection shell and the server that starts it do not import
//! each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::HeaderMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client_addr::{self, IpKey};
use crate::config::Config;
use crate::ice::IceConfig;
use crate::ip_limits::IpLimits;
use crate::metrics::Metrics;
use crate::presence::{Notice, Owner, Presence, Seat};
use crate::rooms::RoomsConfig;

/// State shared by every connection and route of one node.
pub struct AppState {
    pub(crate) cfg: Config,
    pub(crate) node: Arc<str>,
    pub(crate) presence: Arc<dyn Presence>,
    pub(crate) metrics: Metrics,
    pub(crate) ice: IceConfig,
    pub(crate) welcome: String,
    pub(crate) conns: Mutex<HashMap<u64, mpsc::UnboundedSender<Notice>>>,
    pub(crate) ip_limits: Mutex<IpLimits>,
    /// Seats whose detach failed (store down), retried by the timers.
    pub(crate) pending_detach: Mutex<Vec<(String, Seat, Owner)>>,
    /// Seats whose leave (after the peer left) failed, retried likewise.
    pub(crate) pending_leave: Mutex<Vec<(String, Seat, Owner)>>,
    /// Seats a request in limbo may have given a connection that is gone
    /// (token, leave rather than detach, owner): `Presence::abandon`.
    pub(crate) pending_abandon: Mutex<Vec<(String, bool, Owner)>>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) open: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) rooms: RoomsConfig,
}

impl AppState {
    /// The key per-address limits count a request from `remote` against:
    /// the forwarded client address when a trusted proxy sent it.
    pub(crate) fn client_key(&self, remote: std::net::IpAddr, headers: &HeaderMap) -> IpKey {
        let trusted: &[ipnet::IpNet] = if self.cfg.trust_forwarded_for {
            &self.cfg.trusted_proxies
        } else {
            &[]
        };
        let ip = client_addr::client_ip(trusted, remote, headers);
        IpKey::new(ip, self.cfg.limits.ipv6_prefix)
    }

    pub(crate) fn lock_conns(&self) -> MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Notice>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_ip_limits(&self) -> MutexGuard<'_, IpLimits> {
        self.ip_limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_pending_detach(&self) -> MutexGuard<'_, Vec<(String, Seat, Owner)>> {
        self.pending_detach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_pending_leave(&self) -> MutexGuard<'_, Vec<(String, Seat, Owner)>> {
        self.pending_leave.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_pending_abandon(&self) -> MutexGuard<'_, Vec<(String, bool, Owner)>> {
        self.pending_abandon
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
