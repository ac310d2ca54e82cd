//! HTTPS on TALLOW_LISTEN: a listener that hands axum TLS streams.
//!
//! Handshakes run in tasks of their own, so one slow or silent client never
//! holds up the accept loop; each has a deadline and at most
//! `MAX_HANDSHAKES` run at once. A plain HTTP request on the TLS port (a
//! user who typed `http://`) gets a redirect to the same address over
//! HTTPS instead of a connection that closes without a word.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::Listener;
use hyper::{header, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::client_addr::IpKey;

/// A handshake (or a plain request to redirect) must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight; beyond, new connections are closed at once.
const MAX_HANDSHAKES: usize = 1024;
/// Handshakes in flight from one address (IPv6: one prefix), so that one
/// client cannot take all of `MAX_HANDSHAKES` for the 10 s deadline.
const MAX_HANDSHAKES_PER_IP: usize = 16;
/// The first byte of a TLS record carrying a handshake (ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// `v6_prefix`: IPv6 clients count per prefix of this length.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        v6_prefix: u8,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            tx,
            v6_prefix,
        ));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    v6_prefix: u8,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_ip: Arc<Mutex<HashMap<IpKey, usize>>> = Arc::default();
    let mut errors = crate::serve::AcceptErrors::new();
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                errors.report(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            continue;
        };
        let Some(slot) = IpSlot::take(&per_ip, IpKey::new(addr.ip(), v6_prefix)) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = (permit, slot);
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                let mut first = [0u8; 1];
                if !matches!(tcp.peek(&mut first).await, Ok(1)) {
                    return;
                }
                if first[0] != TLS_HANDSHAKE {
                    redirect_to_https(tcp).await;
                    return;
                }
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ = ready.send((tls, addr)).await;
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                }
            })
            .await;
        });
    }
}

/// One of an address's handshakes in flight, given back on drop.
struct IpSlot {
    table: Arc<Mutex<HashMap<IpKey, usize>>>,
    key: IpKey,
}

impl IpSlot {
    fn take(table: &Arc<Mutex<HashMap<IpKey, usize>>>, key: IpKey) -> Option<IpSlot> {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(key).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.key);
            }
        }
    }
}

/// Answer one plain HTTP request with a 308 to the same host and path
/// over HTTPS.
async fn redirect_to_https(tcp: TcpStream) {
    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
        Ok::<_, std::convert::Infallible>(redirect_response(&req))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
        .await;
}

fn redirect_response<B>(req: &Request<B>) -> Response<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Some(host) = host else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body("This server speaks HTTPS only.\n".to_owned())
            .expect("static response");
    };
    let location = format!(
        "https://{host}{}",
        if path.starts_with('/') { &path } else { "/" }
    );
    match Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, &location)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(format!("This server speaks HTTPS only: {location}\n"))
    {
        Ok(r) => r,
        Err(_) => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body("This server speaks HTTPS only.\n".to_owned())
            .expect("static response"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_a_bounded_share_of_handshakes() {
        let table = Arc::default();
        let key = |s: &str| IpKey::new(s.parse().unwrap(), 64);
        let mut held: Vec<IpSlot> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|_| IpSlot::take(&table, key("192.0.2.1")).unwrap())
            .collect();
        assert!(IpSlot::take(&table, key("192.0.2.1")).is_none());
        // Same /64: the same client.
        let v6: Vec<IpSlot> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|i| IpSlot::take(&table, key(&format!("2001:db8::{i:x}"))).unwrap())
            .collect();
        assert!(IpSlot::take(&table, key("2001:db8::ffff")).is_none());
        assert!(IpSlot::take(&table, key("192.0.2.2")).is_some());
        held.pop();
        assert!(IpSlot::take(&table, key("192.0.2.1")).is_some());
        drop((held, v6));
        assert!(table.lock().unwrap().is_empty(), "nothing left behind");
    }

    fn req(host: Option<&str>, uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn plain_requests_are_sent_to_the_same_place_over_https() {
        let r = redirect_response(&req(Some("192.168.1.5:8080"), "/?relay=1"));
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://192.168.1.5:8080/?relay=1"
        );
        let r = redirect_response(&req(Some("[::1]:8080"), "/"));
        assert_eq!(r.headers()[header::LOCATION], "https://[::1]:8080/");
        // A host that could smuggle anything into the Location is refused.
        for bad in ["", "a b", "evil.example/x", "a@b", "x\"y"] {
            let r = redirect_response(&req(Some(bad), "/"));
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert_eq!(
            redirect_response(&req(None, "/")).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
