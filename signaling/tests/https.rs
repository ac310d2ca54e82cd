//! tallow-server's own HTTPS (TALLOW_TLS_CERT/KEY): what a browser on
//! another device gets, and what a hostile or clumsy client cannot do to
//! it: silent connections and half handshakes do not hold others up,
//! garbage closes only its own connection, plain HTTP is redirected.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

struct Tls {
    server: tallow_signaling::server::Server,
    client: tokio_rustls::TlsConnector,
    cert_file: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with a certificate for `localhost` from PEM files, and a
/// client that trusts exactly that certificate.
async fn start() -> Tls {
    let dir = std::env::temp_dir().join(format!(
        "tallow-https-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let server = common::start(&[
        "--tls-cert",
        c.to_str().unwrap(),
        "--tls-key",
        k.to_str().unwrap(),
    ])
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        server,
        client: tokio_rustls::TlsConnector::from(Arc::new(config)),
        cert_file: c,
        _dir: TempDir(dir),
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

impl Tls {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr()).await.unwrap();
        self.client
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the trusted certificate")
    }

    /// One HTTP/1.1 GET over TLS; the raw response.
    async fn get(&self, path: &str) -> String {
        let mut s = self.connect().await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[tokio::test]
async fn health_the_page_and_signal_are_served_over_tls() {
    let t = start().await;
    let health = t.get("/api/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let page = t.get("/").await;
    assert!(page.contains("<title>Tallow</title>"), "{page}");
    assert!(page
        .to_ascii_lowercase()
        .contains("content-security-policy"));

    // wss: the signaling protocol over the same TLS listener.
    let tls = t.connect().await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/signal", tls)
        .await
        .expect("WebSocket upgrade over TLS");
    let first = ws.next().await.unwrap().unwrap();
    assert!(
        first.to_text().unwrap().contains("\"welcome\""),
        "{first:?}"
    );

    // The operator's probe, trusting the certificate file the server uses.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/health-check.sh");
    let out = tokio::process::Command::new(script)
        .arg(format!("https://localhost:{}", t.addr().port()))
        .arg("--cacert")
        .arg(&t.cert_file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_redirected() {
    let t = start().await;
    let mut s = TcpStream::connect(t.addr()).await.unwrap();
    s.write_all(b"GET /?relay=1 HTTP/1.1\r\nHost: 192.168.1.5:8443\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the redirect ends the connection")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("location: https://192.168.1.5:8443/?relay=1\r\n"),
        "{out}"
    );
    // A Host that would inject a header gets 400, not a redirect.
    let mut s = TcpStream::connect(t.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.example/x y\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
}

/// Slowloris at the handshake: connections that say nothing, or start a
/// ClientHello and stall, each wait in their own task; a real client is
/// served meanwhile, well before the stalled ones time out (10 s).
#[tokio::test]
async fn stalled_and_garbage_handshakes_do_not_hold_others_up() {
    let t = start().await;
    let mut stalled = Vec::new();
    // From several loopback addresses: one address may hold only 16.
    for i in 0..200u32 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from(([127, 0, 1, (i % 12) as u8 + 1], 0)))
            .unwrap();
        let mut s = sock.connect(t.addr()).await.unwrap();
        if i % 2 == 0 {
            // A TLS record header promising 512 bytes, then nothing.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    // Garbage after a TLS-looking first byte: that connection closes.
    let mut g = TcpStream::connect(t.addr()).await.unwrap();
    g.write_all(&[0x16; 64]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match g.read(&mut buf).await {
                Ok(0) | Err(_) => break 0,
                Ok(_) => continue, // a TLS alert, then the close
            }
        }
    })
    .await
    .expect("garbage is closed at once, not left to time out");
    assert_eq!(n, 0);

    let health = tokio::time::timeout(Duration::from_secs(8), t.get("/api/health"))
        .await
        .expect("served while 200 handshakes stall");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // One address that stalls 40 handshakes holds 16; the rest are closed
    // at once, and another address is still served.
    let mut hogs = Vec::new();
    for _ in 0..40 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from(([127, 0, 2, 1], 0))).unwrap();
        let mut s = sock.connect(t.addr()).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        hogs.push(s);
    }
    // The held ones stay open past the wait; the others close at once.
    let outcomes = futures_util::future::join_all(hogs.iter_mut().map(|s| async move {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    let closed = outcomes.iter().filter(|c| **c).count();
    assert_eq!(closed, 40 - 16, "one address holds at most 16 handshakes");
    let health = tokio::time::timeout(Duration::from_secs(8), t.get("/api/health"))
        .await
        .expect("served while one address hogs its share");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop(stalled);
}

/// Slowloris after the handshake: the handshake's deadline ends with the
/// handshake, and nothing bounds what follows. A client that completes it
/// and then sends no request, or dribbles one header line at a time, holds
/// its connection (and a file descriptor) for as long as it likes, and one
/// address may hold any number of them (the per-address cap counts
/// handshakes in flight only): enough of them and the server cannot accept
/// anyone (seen with a 256-descriptor limit: 244 idle connections from
/// 127.0.0.1, then every other client's handshake timed out). A request's
/// head must arrive within a deadline, as the handshake must.
#[tokio::test]
async fn connections_that_never_finish_a_request_are_closed() {
    let t = start().await;
    let mut silent = t.connect().await;
    let mut dribbling = t.connect().await;
    dribbling
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let dribble = async {
        // One header line every 2 s: never a complete head.
        for i in 0..30u32 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let line = format!("X-{i}: x\r\n");
            if dribbling.write_all(line.as_bytes()).await.is_err() {
                return true;
            }
            let mut b = [0u8; 64];
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(1), dribbling.read(&mut b)).await
            {
                if matches!(r, Ok(0) | Err(_)) {
                    return true;
                }
            }
        }
        false
    };
    let silence = async {
        let mut b = [0u8; 64];
        // Whatever the server sends before closing (a 408) is fine.
        loop {
            match silent.read(&mut b).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    };
    // hyper's own default for a request head is 30 s.
    let (silent_closed, dribbler_closed) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(40), silence)
                .await
                .unwrap_or(false)
        },
        async {
            tokio::time::timeout(Duration::from_secs(40), dribble)
                .await
                .unwrap_or(false)
        },
    );
    assert!(
        silent_closed,
        "a connection that sent nothing after the handshake is still open after 40 s"
    );
    assert!(
        dribbler_closed,
        "a request head dribbled a line every 2 s is still being read after 40 s"
    );
}
