//! The HTTP shell: routes, shared state, background timers and graceful
//! shutdown. `Server::start` is what the binary and the integration tests run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;
use tallow_relay::config::Secret;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;
use tracing::Instrument;

use crate::config::Config;
use crate::ice::IceConfig;
use crate::ip_limits::{IpLimits, IpLimitsConfig, Refusal};
use crate::metrics::Metrics;
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::presence::{Event, Notice, Presence, PresenceConfig, PresenceError};
use crate::protocol::{AnnouncedLimits, ErrorCode, ServerMsg, PROTOCOL_VERSION};
use crate::request_id::RequestId;
use crate::room::RoomRules;
use crate::rooms::{self, RoomsConfig};
pub use crate::state::AppState;
use crate::turn_rest;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("presence store: {0}")]
    Presence(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

fn rooms_config(cfg: &Config) -> RoomsConfig {
    let r = &cfg.rooms;
    let grace_ms = cfg.limits.resume_grace_secs * 1000;
    RoomsConfig {
        rules: RoomRules {
            grace_ms,
            nearby_ttl_ms: 3_600_000,
            linger_ms: 60_000,
            invites_per_min: r.room_invites_per_min,
            pending_invites: 16,
        },
        max_members: r.room_max_members,
        nearby_max_members: r.nearby_max_members,
        default_ttl: Duration::from_secs(r.room_ttl_secs),
        max_ttl: Duration::from_secs(r.room_max_ttl_secs),
        max_per_ip: r.max_rooms_per_ip,
    }
}

/// A running node.
pub struct Server {
    addr: SocketAddr,
    relay: Option<tallow_relay::event_loop::RelayHandle>,
    metrics_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    http: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Server {
    /// Validate `cfg`, bind, and start serving.
    pub async fn start(cfg: Config) -> Result<Server, ServerError> {
        cfg.validate()?;
        let server_id = cfg
            .server_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", hex::encode(rand::random::<[u8; 4]>())));
        // In the presence store each process incarnation is a node of its
        // own: a restart under the same server id must not reuse the owner
        // strings ("node|conn") of seats its predecessor left behind.
        let node: Arc<str> = Arc::from(format!(
            "{server_id}~{}",
            hex::encode(rand::random::<[u8; 4]>())
        ));
        let l = &cfg.limits;
        let pcfg = PresenceConfig {
            nameplate_ttl: l.nameplate_ttl(),
            resume_grace: l.resume_grace(),
            mailbox_cap: l.max_queued_messages,
            mailbox_bytes: l.max_queued_bytes,
            max_seats_per_ip: l.max_sessions_per_ip,
        };
        let presence: Arc<dyn Presence> = match &cfg.redis_url {
            Some(url) => {
                let ca = match &cfg.redis_ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        ServerError::Presence(format!("reading {}: {e}", path.display()))
                    })?),
                    None => None,
                };
                Arc::new(
                    RedisPresence::new(url, ca, pcfg)
                        .map_err(|e| ServerError::Presence(e.to_string()))?,
                )
            }
            None => Arc::new(MemoryPresence::new(pcfg)),
        };
        let welcome = ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            server_id: server_id.clone(),
            limits: AnnouncedLimits {
                max_frame_bytes: l.max_frame_bytes,
                max_messages_per_sec: l.max_messages_per_sec,
                ping_interval_secs: l.ping_interval_secs,
                idle_timeout_secs: l.idle_timeout_secs,
                resume_grace_secs: l.resume_grace_secs,
                nameplate_ttl_secs: l.nameplate_ttl_secs,
                max_queued_messages: l.max_queued_messages,
                room_max_members: cfg.rooms.room_max_members,
                room_ttl_secs: cfg.rooms.room_ttl_secs,
                room_max_ttl_secs: cfg.rooms.room_max_ttl_secs,
            },
        }
        .to_json();
        let relay_metrics = tallow_relay::metrics::RelayMetrics::default();
        let secret = cfg.turn.secret.clone().unwrap_or_else(Secret::random);
        let relay = if cfg.turn_enabled {
            let rc = cfg.turn.relay_config(secret.clone());
            Some(
                tallow_relay::event_loop::start(rc, relay_metrics.clone()).map_err(|source| {
                    ServerError::Bind {
                        addr: cfg.turn.listen,
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let ice = ice_config(
            &cfg,
            secret,
            relay
                .as_ref()
                .map(|r| (r.udp_addr, r.tls_addr.map(|a| a.port()))),
        );
        let tls = tls_identity(&cfg)?;
        let cfg_listen = cfg.listen;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let state = Arc::new(AppState {
            ip_limits: Mutex::new(IpLimits::new(IpLimitsConfig {
                max_connections: l.max_connections_per_ip,
                upgrades_per_min: l.max_upgrades_per_ip_per_min,
                credentials_per_min: l.turn_credentials_per_ip_per_min,
                max_failed_joins: l.max_failed_joins_per_ip,
                window: Duration::from_secs(l.failed_join_window_secs),
            })),
            node: node.clone(),
            presence,
            metrics: Metrics::new(
                cfg.turn_enabled.then_some(&relay_metrics),
                cfg.limits.max_connections,
            ),
            ice,
            welcome,
            conns: Mutex::new(HashMap::new()),
            pending_detach: Mutex::new(Vec::new()),
            pending_leave: Mutex::new(Vec::new()),
            pending_abandon: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            rooms: rooms_config(&cfg),
            cfg,
        });

        let metrics_listener = match state.cfg.metrics_listen {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|source| ServerError::Bind { addr: at, source })?,
            ),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

        let notices = state.presence.subscribe(&node);
        let background = vec![
            tokio::spawn(route_notices(state.clone(), notices)),
            tokio::spawn(run_timers(state.clone())),
            tokio::spawn(run_retries(state.clone())),
            tokio::spawn(run_rooms(state.clone())),
            tokio::spawn(run_heartbeat(state.clone())),
        ];
        let app = router(state.clone(), metrics_listener.is_none());
        if let Some(l) = metrics_listener {
            let app = Router::new()
                .route("/metrics", get(metrics))
                .with_state(state.clone());
            let stop = state.shutdown.clone();
            let header_timeout = state.cfg.limits.header_timeout();
            state
                .tracker
                .spawn(crate::serve::serve(l, app, stop, header_timeout));
        }
        let stop = state.shutdown.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let header_timeout = state.cfg.limits.header_timeout();
        let http = match tls {
            Some(id) => {
                let listener = crate::https::TlsListener::new(
                    listener,
                    id.config,
                    state.cfg.limits.ipv6_prefix,
                )
                .map_err(|source| ServerError::Bind {
                    addr: cfg_listen,
                    source,
                })?;
                tokio::spawn(crate::serve::serve(listener, app, stop, header_timeout))
            }
            None => {
                // Signaling frames are small and latency matters: no Nagle delay.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                tokio::spawn(crate::serve::serve(listener, app, stop, header_timeout))
            }
        };
        tracing::info!(%addr, scheme, server_id = %server_id, node = %node, presence = state.presence.kind(), "tallow-server listening");
        Ok(Server {
            addr,
            relay,
            metrics_addr,
            state,
            http,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The embedded relay's UDP (and TCP) address, if it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(|r| r.udp_addr)
    }

    /// Where /metrics is served when TALLOW_METRICS_LISTEN is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stop accepting, tell every client to reconnect elsewhere (close 1012)
    /// and wait for connections to finish, at most `timeout`. Returns whether
    /// everything finished in time.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        self.state.shutdown.cancel();
        self.state.tracker.close();
        let drained = tokio::time::timeout(timeout, async {
            let _ = self.http.await;
            self.state.tracker.wait().await;
        })
        .await
        .is_ok();
        for task in &self.background {
            task.abort();
        }
        if let Some(relay) = self.relay {
            relay.stop();
        }
        tracing::info!(drained, "tallow-server stopped");
        drained
    }
}

/// The HTTPS identity, if TLS is configured; logs what users should check.
fn tls_identity(cfg: &Config) -> Result<Option<crate::tls::Identity>, ServerError> {
    let t = &cfg.tls;
    let id = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => crate::tls::from_files(cert, key)?,
        _ if t.self_signed => crate::tls::self_signed(&crate::tls::local_names(), &t.names)?,
        _ => return Ok(None),
    };
    if t.self_signed {
        let port = cfg.listen.port();
        let urls: Vec<String> = id
            .names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("https://[{v6}]:{port}/"),
                _ => format!("https://{n}:{port}/"),
            })
            .collect();
        tracing::info!(
            sha256 = %id.sha256,
            pin = id.pin.as_deref().unwrap_or_default(),
            names = ?id.names,
            urls = ?urls,
            "serving HTTPS with a self-signed certificate made at start: before accepting it in a browser, check that the browser shows this SHA-256 fingerprint"
        );
    } else {
        tracing::info!(sha256 = %id.sha256, "serving HTTPS");
    }
    Ok(Some(id))
}

fn ice_config(cfg: &Config, secret: Secret, relay: Option<(SocketAddr, Option<u16>)>) -> IceConfig {
    let (stun, turn): (Vec<String>, Vec<String>) = cfg
        .turn_urls
        .iter()
        .cloned()
        .partition(|u| u.starts_with("stun:"));
    let embedded = relay.map(|(addr, tls_port)| crate::ice::EmbeddedRelay {
        host: cfg
            .turn
            .external_ip
            .or((!addr.ip().is_unspecified()).then_some(addr.ip())),
        port: addr.port(),
        tls_port,
    });
    if turn.is_empty() && embedded.is_none() {
        tracing::warn!("no TURN relay to hand out: TURN_ENABLED=false and TURN_URLS unset");
    }
    IceConfig {
        turn_urls: turn,
        stun_urls: stun,
        embedded,
        secret,
        ttl_secs: cfg.turn.credential_ttl_secs,
    }
}

/// Notice routing, expiry sweeps and the node heartbeat.
/// Hand each notice from the presence store to its connection. A task of
/// its own, so a slow store call in the timers never holds messages back.
async fn route_notices(st: Arc<AppState>, mut notices: mpsc::UnboundedReceiver<Notice>) {
    while let Some(n) = notices.recv().await {
        if n.event == Event::Resync {
            for tx in st.lock_conns().values() {
                let _ = tx.send(n.clone());
            }
            continue;
        }
        let tx = st.lock_conns().get(&n.to.conn).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(n);
        }
    }
}

/// Sweep and beat often enough that expiries land within a fraction of
/// their TTL.
fn timer_period(l: &crate::config::Limits) -> Duration {
    (l.nameplate_ttl().min(l.resume_grace()) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Expiry sweeps of sessions and per-address limits.
async fn run_timers(st: Arc<AppState>) {
    let mut tick = tokio::time::interval(timer_period(&st.cfg.limits));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = st.presence.sweep(&st.node).await {
            st.metrics.presence_errors.inc();
            tracing::warn!(error = %e, "presence sweep failed");
        }
        st.lock_ip_limits().sweep(std::time::Instant::now());
    }
}

/// The heartbeat has a task of its own: a sweep slowed by a store that just
/// came back from a stall (each call may wait out its timeout) must not keep
/// this node from beating, or the other nodes take it for dead. A sweep
/// never judges its own node, so the two need no ordering.
async fn run_heartbeat(st: Arc<AppState>) {
    let mut tick = tokio::time::interval(timer_period(&st.cfg.limits));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = st.presence.heartbeat(&st.node).await {
            st.metrics.presence_errors.inc();
            tracing::warn!(error = %e, "presence heartbeat failed");
        }
    }
}

/// Rooms' timers, in a task of their own so that they never hold up the
/// heartbeat: expiries and grace periods due, members of dead nodes, and
/// memberships of this node whose connection is gone without a word.
async fn run_rooms(st: Arc<AppState>) {
    const BATCH: usize = 256;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        match st.presence.rooms_due(&st.node, BATCH).await {
            Ok(due) => {
                // One room that cannot be swept (a record this version cannot
                // read) must not hold up the others; a store that stopped
                // answering (failures in a row) ends the round.
                let mut failures = 0;
                for id in &due.rooms {
                    match rooms::sweep_one(&*st.presence, &st.rooms, id, &due.dead_nodes).await {
                        Ok(()) => failures = 0,
                        Err(e) => {
                            tracing::warn!(error = %e, room = %id, "room sweep failed");
                            failures += 1;
                            if failures >= 3 {
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "room sweep failed"),
        }
        // Every 5 s: a cheap read, and a write only where something is off.
        if ticks.is_multiple_of(10) {
            let live = |c: u64| st.lock_conns().contains_key(&c);
            match rooms::detach_orphans(&*st.presence, &st.rooms, &st.node, live).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    memberships = n,
                    "detached room memberships of closed connections"
                ),
                Err(e) => tracing::warn!(error = %e, "room orphan check failed"),
            }
        }
    }
}

/// Store calls that failed while the store was unreachable, retried once a
/// second. A task of its own: after a long outage thousands may wait, and
/// working them off must not hold up the heartbeat.
async fn run_retries(st: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        retry_pending(&st, Retry::Detach).await;
        retry_pending(&st, Retry::Leave).await;
        retry_abandons(&st).await;
    }
}

#[derive(Clone, Copy)]
enum Retry {
    Detach,
    Leave,
}

/// At the first call that still fails the rest wait for the next tick, so a
/// long outage costs one timed-out call per tick, not one per waiting seat.
async fn retry_pending(st: &AppState, kind: Retry) {
    let queue = || match kind {
        Retry::Detach => st.lock_pending_detach(),
        Retry::Leave => st.lock_pending_leave(),
    };
    let pending = std::mem::take(&mut *queue());
    let mut rest = pending.into_iter();
    while let Some((session, seat, owner)) = rest.next() {
        let res = match kind {
            Retry::Detach => st.presence.detach(&session, seat, &owner).await,
            Retry::Leave => st.presence.leave(&session, seat, &owner).await,
        };
        if let Err(PresenceError::Unavailable(_)) = res {
            let mut q = queue();
            q.push((session, seat, owner));
            q.extend(rest);
            return;
        }
    }
}

async fn retry_abandons(st: &AppState) {
    let pending = std::mem::take(&mut *st.lock_pending_abandon());
    let mut rest = pending.into_iter();
    while let Some((token, leave, owner)) = rest.next() {
        if let Err(PresenceError::Unavailable(_)) = st.presence.abandon(&token, &owner, leave).await
        {
            let mut q = st.lock_pending_abandon();
            q.push((token, leave, owner));
            q.extend(rest);
            return;
        }
    }
}

fn router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let web = web_root(&state.cfg);
    let mut r = Router::new()
        .route("/signal", get(signal))
        .route("/api/health", get(health))
        .route("/api/ready", get(ready))
        // The paths Tallow's earlier manifests and clients call.
        .route("/api/health/liveness", get(health))
        .route("/api/health/readiness", get(ready))
        .route("/api/turn/credentials", get(turn_credentials));
    if with_metrics {
        r = r.route("/metrics", get(metrics));
    }
    security_headers(r.fallback_service(ServeDir::new(web)).with_state(state))
        .layer(axum::middleware::from_fn(crate::request_id::layer))
}

/// What the page may load: only its own scripts, styles and connections
/// (the signaling WebSocket), no framing, no plugins. `'wasm-unsafe-eval'`
/// lets those scripts compile WebAssembly (the hashing worker's SHA-256,
/// three times the speed of JavaScript); JavaScript `eval` stays refused.
/// NGINX sends the same in production; tallow-server sends it where nothing
/// is in front of it.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; \
     worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Headers on every response, unless a handler set its own.
fn security_headers(r: Router) -> Router {
    use axum::http::HeaderValue;
    use tower_http::set_header::SetResponseHeaderLayer;
    let set = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(
            axum::http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    r.layer(set("content-security-policy", CONTENT_SECURITY_POLICY))
        .layer(set("x-content-type-options", "nosniff"))
        .layer(set("x-frame-options", "DENY"))
        .layer(set("referrer-policy", "no-referrer"))
        .layer(set("cross-origin-opener-policy", "same-origin"))
}

fn web_root(cfg: &Config) -> PathBuf {
    if let Some(p) = &cfg.web_root {
        return p.clone();
    }
    let local = PathBuf::from("web");
    if local.join("index.html").is_file() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web"))
}

async fn signal(
    State(st): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !crate::origin::allowed(&st.cfg.allowed_origins, headers.get(header::ORIGIN)) {
        st.metrics.error(ErrorCode::OriginNotAllowed);
        let body = json!({
            "code": ErrorCode::OriginNotAllowed.as_str(),
            "message": "this origin may not open /signal",
        });
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    if st.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let ip = st.client_key(remote.ip(), &headers);
    // Refused before the upgrade, where a refusal costs the least. The slot
    // is released when the connection ends (conn::run).
    let admitted = st
        .lock_ip_limits()
        .try_open_connection(ip, std::time::Instant::now());
    if let Err(why) = admitted {
        let (code, message, retry) = match why {
            Refusal::TooManyConnections => (
                ErrorCode::TooManyConnections,
                format!(
                    "this address already holds {} connections",
                    st.cfg.limits.max_connections_per_ip
                ),
                Duration::from_secs(5),
            ),
            Refusal::TooFast { retry_after } => (
                ErrorCode::RateLimited,
                format!(
                    "over {} new connections a minute from this address",
                    st.cfg.limits.max_upgrades_per_ip_per_min
                ),
                retry_after,
            ),
        };
        st.metrics.error(code);
        let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
        let body = json!({ "code": code.as_str(), "message": message, "retry_after_secs": secs });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(body),
        )
            .into_response();
    }
    let host = request_hostname(&headers);
    // Frames somewhat over the limit are read and refused with an error
    // message; far larger ones are cut off by the transport (close 1009).
    let hard = st
        .cfg
        .limits
        .max_frame_bytes
        .saturating_mul(4)
        .max(64 << 10);
    let tracker = st.tracker.clone();
    // Small buffers: an idle connection should cost kilobytes, not the
    // 128 KiB tungstenite reserves by default (frames grow them on demand).
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_failed_upgrade({
            let st = st.clone();
            move |_| st.lock_ip_limits().close_connection(ip)
        })
        .on_upgrade(move |socket| {
            // Every line the connection logs carries the upgrade's id. At
            // error level so that the span exists whenever any line is
            // logged: an info span is off under RUST_LOG=warn, and the
            // warnings are the lines that need the id.
            let span = tracing::error_span!("conn", request_id = %request_id);
            tracker.track_future(crate::conn::run(st, socket, ip, host).instrument(span))
        })
}

async fn turn_credentials(
    State(st): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Query<turn_rest::Params>, QueryRejection>,
) -> Response {
    let origin = headers.get(header::ORIGIN);
    if !crate::origin::allowed(&st.cfg.allowed_origins, origin) {
        return turn_refusal(
            &st,
            StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            "this origin may not fetch TURN credentials".into(),
        );
    }
    let mut resp = issue_turn_credentials(&st, remote, &headers, params);
    // A page of an allowed origin may read every answer, refusals included
    // (a 429's retry_after_secs), not only the credentials.
    if let Some(o) = origin.filter(|_| !st.cfg.allowed_origins.is_empty()) {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        resp.headers_mut()
            .insert(header::VARY, axum::http::HeaderValue::from_static("origin"));
    } else if origin.is_some() {
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            axum::http::HeaderValue::from_static("*"),
        );
    }
    resp
}

/// A refusal from `/api/turn/credentials`: counted, JSON, never cached.
fn turn_refusal(st: &AppState, status: StatusCode, code: ErrorCode, message: String) -> Response {
    st.metrics.error(code);
    let body = json!({ "code": code.as_str(), "message": message });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `/api/turn/credentials` past the origin check: the per-address limit,
/// then the credentials or the reason there are none.
fn issue_turn_credentials(
    st: &AppState,
    remote: SocketAddr,
    headers: &HeaderMap,
    params: Result<Query<turn_rest::Params>, QueryRejection>,
) -> Response {
    let refuse = |status, code, message| turn_refusal(st, status, code, message);
    let ip = st.client_key(remote.ip(), headers);
    let admitted = st
        .lock_ip_limits()
        .try_issue_credentials(ip, std::time::Instant::now());
    if let Err(retry) = admitted {
        let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
        let code = ErrorCode::RateLimited;
        st.metrics.error(code);
        let message = format!(
            "over {} credential requests a minute from this address",
            st.cfg.limits.turn_credentials_per_ip_per_min
        );
        let body = json!({ "code": code.as_str(), "message": message, "retry_after_secs": secs });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, secs.to_string()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
            Json(body),
        )
            .into_response();
    }
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("unreadable query: {}", e.body_text()),
            )
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let host = request_hostname(headers);
    match turn_rest::issue(&st.ice, &params, host.as_deref(), now) {
        Ok(c) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Json(c),
        )
            .into_response(),
        Err(r) => {
            let status = match r.code {
                ErrorCode::TurnUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            refuse(status, r.code, r.message)
        }
    }
}

/// The hostname of the request's Host header, without the port; only
/// plausible hostnames, since it ends up in URLs handed to clients.
fn request_hostname(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then(|| name.to_owned())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let r = crate::readiness::check(&st).await;
    let (failed, checks) = (r.failed, r.checks);
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        let body = json!({ "status": "unavailable", "failed": failed, "checks": checks });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    // Side by side: a stalled store costs one response timeout, not two.
    let (readiness, counts) = tokio::join!(crate::readiness::check(&st), st.presence.counts());
    st.metrics.record_readiness(&readiness);
    if let Ok(c) = counts {
        st.metrics.sessions.set(c.sessions as i64);
        st.metrics.nameplates.set(c.nameplates as i64);
        st.metrics.rooms.set(c.rooms as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
