//! The HTTP/1.1 connection loop for TALLOW_LISTEN, plain or TLS.
//!
//! axum::serve gives no say over hyper's timer, so a connection that never
//! finishes a request head (nothing sent after the TLS handshake, or a head
//! dribbled a line at a time) would be held open for as long as the client
//! likes, a file descriptor each. Here every request head, the first and
//! each one on a kept-alive connection, must arrive within `header_timeout`.
//! WebSocket upgrades leave hyper once upgraded; their lifetime is the
//! signaling connection's own (pings, idle timeout, 1012 on shutdown).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Serves `app` on `listener` until `stop`, then lets the requests in
/// flight finish (the caller bounds how long it waits).
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    stop: CancellationToken,
    header_timeout: Duration,
) where
    L: Listener<Addr = SocketAddr>,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conns = TaskTracker::new();
    loop {
        let (io, addr) = tokio::select! {
            conn = listener.accept() => conn,
            () = stop.cancelled() => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // What axum's ConnectInfo extractor reads: the TCP peer.
            req.extensions_mut().insert(ConnectInfo(addr));
            let app = app.clone();
            async move {
                Ok::<_, Infallible>(
                    app.oneshot(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let stop = stop.clone();
        conns.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // On shutdown: finish the request in flight, take no other.
            let r = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(%addr, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Warns about failed accepts (out of file descriptors, mostly) at most
/// once per interval with a count, so a flood does not flood the log too.
pub struct AcceptErrors {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    const EVERY: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        AcceptErrors {
            last: None,
            suppressed: 0,
        }
    }

    pub fn report(&mut self, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, more_since_last = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

impl Default for AcceptErrors {
    fn default() -> Self {
        Self::new()
    }
}
