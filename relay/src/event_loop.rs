//! The relay's shell: one thread, one mio poll over the UDP listener, the
//! TCP listener and its connections, and every relay socket. The core is
//! owned by this thread, so no packet takes a lock or a task hop, and the
//! receive buffer is reused for every datagram.
//!
//! Why a thread with mio rather than tokio tasks: a relay socket per
//! allocation would be a task per allocation, and each packet would cross a
//! channel (a heap allocation and a wake-up) to reach the state it needs.
//! Here the packet is read, looked up and sent in one pass.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::allocation::{ClientAddr, RelayId, Transport};
use crate::codec;
use crate::config::PortRange;
use crate::core::{Core, CoreConfig, Io};
use crate::metrics::RelayMetrics;

const UDP_LISTENER: Token = Token(0);
const TCP_LISTENER: Token = Token(1);
const WAKER: Token = Token(2);
const TLS_LISTENER: Token = Token(3);
const TCP_BASE: usize = 16;
const RELAY_BASE: usize = 1 << 24;
/// Kernel socket buffers: bursts of a few thousand datagrams fit.
const SOCKET_BUFFER: usize = 4 << 20;
/// Bytes queued for a slow TCP client before its packets are dropped.
const TCP_OUT_CAP: usize = 4 << 20;
/// A TCP client's partial frame can be at most one STUN message.
const TCP_IN_CAP: usize = 65_536 + 4;

/// Where and how the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    pub port_range: PortRange,
    /// Bind IPv6 relay sockets here (enables REQUESTED-ADDRESS-FAMILY IPv6).
    pub relay_ipv6: Option<Ipv6Addr>,
    /// TURN over TLS, when a certificate is configured.
    pub tls: Option<TlsConfig>,
    pub core: CoreConfig,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn tls_server_config(cfg: &TlsConfig) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| bad(&cfg.cert.display().to_string(), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&cfg.cert.display().to_string(), &e))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| bad(&cfg.key.display().to_string(), &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("TLS certificate", &e))?;
    Ok(Arc::new(config))
}

/// A running relay thread.
pub struct RelayHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
}

impl RelayHandle {
    /// Stop the relay thread and wait for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bind the listeners and start the relay thread.
pub fn start(mut cfg: RelayConfig, metrics: RelayMetrics) -> io::Result<RelayHandle> {
    cfg.core.ipv6 = cfg.relay_ipv6.is_some();
    // Route lookup only (connect sends nothing); TEST-NET-2 stands for "the
    // internet" so no real host is named.
    let route = local_ip_towards(SocketAddr::from(([198, 51, 100, 1], 3478)));
    let plan = crate::advertise::plan(cfg.listen.ip(), cfg.core.external_ip, route)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (udp, tcp) = bind_same_port(cfg.listen, bind_udp, TcpListener::bind)?;
    let udp = UdpSocket::from_std(udp);
    let udp_addr = udp.local_addr()?;
    let tcp_addr = tcp.local_addr()?;
    let tls = match &cfg.tls {
        Some(t) => {
            let server = tls_server_config(t)?;
            let listener = TcpListener::bind(t.listen)?;
            Some((listener, server))
        }
        None => None,
    };
    let tls_addr = match &tls {
        Some((l, _)) => Some(l.local_addr()?),
        None => None,
    };
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("tallow-relay".into())
            .spawn(move || {
                if let Err(e) = run(poll, udp, tcp, tls, cfg, metrics, &stop) {
                    tracing::error!(error = %e, "relay loop failed");
                }
            })?
    };
    tracing::info!(%udp_addr, %tcp_addr, tls_addr = ?tls_addr, advertised = %plan.summary, "TURN relay listening");
    for warning in &plan.warnings {
        tracing::warn!(%warning, "TURN relay: remote clients may not reach relayed addresses");
    }
    Ok(RelayHandle {
        stop,
        waker,
        thread: Some(thread),
        udp_addr,
        tcp_addr,
        tls_addr,
    })
}

/// UDP and TCP on one port, as clients expect. With port 0 the kernel picks
/// the UDP port, and that TCP port may already be taken (an ephemeral port
/// of some outgoing connection): pick again, a bounded number of times.
fn bind_same_port<U, T>(
    listen: SocketAddr,
    mut udp: impl FnMut(SocketAddr) -> io::Result<U>,
    mut tcp: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<(U, T)>
where
    U: LocalAddr,
{
    const ATTEMPTS: usize = 16;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let u = udp(listen)?;
        match tcp(u.local_addr()?) {
            Ok(t) => return Ok((u, t)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// What bind_same_port needs of a UDP socket.
trait LocalAddr {
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl LocalAddr for StdUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        StdUdp::local_addr(self)
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<StdUdp> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

struct RelaySock {
    sock: UdpSocket,
}

struct TcpConn {
    stream: TcpStream,
    addr: SocketAddr,
    /// TURN over TLS: plaintext goes through this session.
    tls: Option<rustls::ServerConnection>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    want_write: bool,
}

struct Shell {
    registry: Registry,
    udp: UdpSocket,
    relays: Vec<Option<RelaySock>>,
    free_relays: Vec<usize>,
    conns: Vec<Option<TcpConn>>,
    free_conns: Vec<usize>,
    conn_by_addr: HashMap<SocketAddr, usize>,
    ports: PortRange,
    bind_v4: IpAddr,
    bind_v6: Option<Ipv6Addr>,
    metrics: RelayMetrics,
}

impl Io for Shell {
    fn send_to_client(&mut self, client: &ClientAddr, data: &[u8]) {
        match client.transport {
            Transport::Udp => {
                if self.udp.send_to(data, client.addr).is_err() {
                    self.metrics.dropped_send_failed.inc();
                }
            }
            Transport::Tcp => {
                let Some(&i) = self.conn_by_addr.get(&client.addr) else {
                    return;
                };
                if let Some(c) = self.conns[i].as_mut() {
                    if !queue_tcp(c, data) {
                        self.metrics.dropped_send_failed.inc();
                    }
                    if !c.outbuf.is_empty() && !c.want_write {
                        c.want_write = true;
                        let _ = self.registry.reregister(
                            &mut c.stream,
                            Token(TCP_BASE + i),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                    }
                }
            }
        }
    }

    fn send_to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]) {
        if let Some(Some(r)) = self.relays.get(relay as usize) {
            if r.sock.send_to(data, peer).is_err() {
                self.metrics.dropped_send_failed.inc();
            }
        }
    }

    fn open_relay(
        &mut self,
        client: &ClientAddr,
        ipv6: bool,
        even: bool,
    ) -> Option<(RelayId, SocketAddr)> {
        let ip = match (ipv6, self.bind_v6) {
            (true, Some(v6)) => IpAddr::V6(v6),
            (true, None) => return None,
            (false, _) => self.bind_v4,
        };
        // Advertise a concrete address: the one the kernel would use to
        // reach this client when bound to the wildcard.
        let advertised_ip = if ip.is_unspecified() {
            local_ip_towards(client.addr).unwrap_or(ip)
        } else {
            ip
        };
        let PortRange { low, high } = self.ports;
        let span = u32::from(high - low) + 1;
        let start: u32 = rand::random::<u32>() % span;
        for i in 0..span.min(512) {
            let port = (u32::from(low) + (start + i) % span) as u16;
            if even && port % 2 == 1 {
                continue;
            }
            let Ok(std) = bind_udp(SocketAddr::new(ip, port)) else {
                continue;
            };
            let mut sock = UdpSocket::from_std(std);
            let id = match self.free_relays.pop() {
                Some(id) => id,
                None => {
                    self.relays.push(None);
                    self.relays.len() - 1
                }
            };
            if self
                .registry
                .register(&mut sock, Token(RELAY_BASE + id), Interest::READABLE)
                .is_err()
            {
                self.free_relays.push(id);
                continue;
            }
            self.relays[id] = Some(RelaySock { sock });
            return Some((id as RelayId, SocketAddr::new(advertised_ip, port)));
        }
        None
    }

    fn close_relay(&mut self, relay: RelayId) {
        let id = relay as usize;
        if let Some(mut r) = self.relays.get_mut(id).and_then(Option::take) {
            let _ = self.registry.deregister(&mut r.sock);
            self.free_relays.push(id);
        }
    }
}

/// Queue or write `data` on a TCP connection; false if it had to be dropped.
fn queue_tcp(c: &mut TcpConn, data: &[u8]) -> bool {
    if let Some(tls) = c.tls.as_mut() {
        if tls.wants_write() && c.outbuf.len() > TCP_OUT_CAP {
            return false;
        }
        if tls.writer().write_all(data).is_err() {
            return false;
        }
        return write_tls(c);
    }
    if c.outbuf.is_empty() {
        match c.stream.write(data) {
            Ok(n) if n == data.len() => return true,
            Ok(n) => {
                c.outbuf.extend_from_slice(&data[n..]);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    if c.outbuf.len() + data.len() > TCP_OUT_CAP {
        return false;
    }
    c.outbuf.extend_from_slice(data);
    true
}

/// Push pending TLS records to the socket. When the socket is full they
/// stay in the session (rustls buffers them), marked in `outbuf`'s length
/// only as a signal to register for writability.
fn write_tls(c: &mut TcpConn) -> bool {
    let Some(tls) = c.tls.as_mut() else {
        return true;
    };
    while tls.wants_write() {
        match tls.write_tls(&mut c.stream) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Mark pending output so the loop asks for WRITABLE.
                if c.outbuf.is_empty() {
                    c.outbuf.push(0);
                }
                return true;
            }
            Err(_) => return false,
        }
    }
    c.outbuf.clear();
    true
}

fn local_ip_towards(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = StdUdp::bind(any).ok()?;
    s.connect(peer).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn run(
    mut poll: Poll,
    mut udp: UdpSocket,
    mut tcp: TcpListener,
    tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    cfg: RelayConfig,
    metrics: RelayMetrics,
    stop: &AtomicBool,
) -> io::Result<()> {
    let registry = poll.registry().try_clone()?;
    registry.register(&mut udp, UDP_LISTENER, Interest::READABLE)?;
    registry.register(&mut tcp, TCP_LISTENER, Interest::READABLE)?;
    let (mut tls_listener, tls_config) = match tls {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    };
    if let Some(l) = tls_listener.as_mut() {
        registry.register(l, TLS_LISTENER, Interest::READABLE)?;
    }
    let mut core = Core::new(cfg.core.clone(), metrics.clone(), Instant::now());
    let mut shell = Shell {
        registry,
        udp,
        relays: Vec::new(),
        free_relays: Vec::new(),
        conns: Vec::new(),
        free_conns: Vec::new(),
        conn_by_addr: HashMap::new(),
        ports: cfg.port_range,
        bind_v4: cfg.listen.ip(),
        bind_v6: cfg.relay_ipv6,
        metrics,
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65_536];
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now();
        for ev in events.iter() {
            match ev.token() {
                UDP_LISTENER => loop {
                    match shell.udp.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let client = ClientAddr {
                                transport: Transport::Udp,
                                addr: from,
                            };
                            core.on_client(&mut shell, &client, &buf[..n], now);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors surface here (ECONNREFUSED): go on.
                        Err(_) => continue,
                    }
                },
                TCP_LISTENER => accept_all(&mut tcp, &mut shell, None),
                TLS_LISTENER => {
                    if let Some(l) = tls_listener.as_mut() {
                        accept_all(l, &mut shell, tls_config.as_ref());
                    }
                }
                WAKER => {}
                Token(t) if t >= RELAY_BASE => {
                    let id = t - RELAY_BASE;
                    while let Some(Some(r)) = shell.relays.get(id) {
                        match r.sock.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                core.on_peer(&mut shell, id as RelayId, from, &buf[..n], now)
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => continue,
                        }
                    }
                }
                Token(t) => {
                    let i = t - TCP_BASE;
                    if ev.is_writable() {
                        flush_tcp(&mut shell, i);
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        read_tcp(&mut shell, &mut core, i, now);
                    }
                }
            }
        }
        if now >= next_tick {
            core.tick(&mut shell, now);
            next_tick = now + Duration::from_secs(1);
        }
    }
    Ok(())
}

fn accept_all(
    listener: &mut TcpListener,
    shell: &mut Shell,
    tls: Option<&Arc<rustls::ServerConfig>>,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let session = match tls.map(|c| rustls::ServerConnection::new(c.clone())) {
                    Some(Ok(s)) => Some(s),
                    Some(Err(_)) => continue,
                    None => None,
                };
                let i = match shell.free_conns.pop() {
                    Some(i) => i,
                    None => {
                        shell.conns.push(None);
                        shell.conns.len() - 1
                    }
                };
                if shell
                    .registry
                    .register(&mut stream, Token(TCP_BASE + i), Interest::READABLE)
                    .is_err()
                {
                    shell.free_conns.push(i);
                    continue;
                }
                shell.conns[i] = Some(TcpConn {
                    stream,
                    addr,
                    tls: session,
                    inbuf: Vec::with_capacity(4096),
                    outbuf: Vec::new(),
                    want_write: false,
                });
                shell.conn_by_addr.insert(addr, i);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return,
        }
    }
}

fn flush_tcp(shell: &mut Shell, i: usize) {
    let Some(Some(c)) = shell.conns.get_mut(i) else {
        return;
    };
    if c.tls.is_some() {
        write_tls(c);
    }
    while c.tls.is_none() && !c.outbuf.is_empty() {
        match c.stream.write(&c.outbuf) {
            Ok(0) => break,
            Ok(n) => {
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => break,
        }
    }
    if c.outbuf.is_empty() && c.want_write {
        c.want_write = false;
        let _ = shell
            .registry
            .reregister(&mut c.stream, Token(TCP_BASE + i), Interest::READABLE);
    }
}

/// Read TLS records from the socket and append their plaintext to `inbuf`.
/// Returns the ciphertext bytes read (0 at end of stream).
fn read_tls(
    tls: &mut rustls::ServerConnection,
    stream: &mut TcpStream,
    chunk: &mut [u8],
    inbuf: &mut Vec<u8>,
) -> io::Result<usize> {
    let n = tls.read_tls(stream)?;
    let state = tls
        .process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut left = state.plaintext_bytes_to_read();
    while left > 0 {
        let got = tls.reader().read(chunk)?;
        if got == 0 {
            break;
        }
        inbuf.extend_from_slice(&chunk[..got]);
        left = left.saturating_sub(got);
    }
    Ok(n)
}

fn read_tcp(shell: &mut Shell, core: &mut Core, i: usize, now: Instant) {
    let Some(Some(c)) = shell.conns.get_mut(i) else {
        return;
    };
    let client = ClientAddr {
        transport: Transport::Tcp,
        addr: c.addr,
    };
    let mut inbuf = std::mem::take(&mut c.inbuf);
    let mut closed = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Some(Some(c)) = shell.conns.get_mut(i) else {
            return;
        };
        let got = match c.tls.as_mut() {
            Some(tls) => read_tls(tls, &mut c.stream, &mut chunk, &mut inbuf),
            None => c
                .stream
                .read(&mut chunk)
                .inspect(|&n| inbuf.extend_from_slice(&chunk[..n])),
        };
        // Handshake records and alerts may need to go out now.
        if c.tls.is_some() && !write_tls(c) {
            closed = true;
        }
        match got {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
        // Hand complete frames to the core as they arrive.
        let mut pos = 0;
        loop {
            match codec::frame_len(&inbuf[pos..]) {
                Ok(Some(len)) if inbuf.len() - pos >= len => {
                    core.on_client(shell, &client, &inbuf[pos..pos + len], now);
                    pos += len;
                }
                Ok(_) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        inbuf.drain(..pos);
        if closed || inbuf.len() > TCP_IN_CAP {
            closed = true;
            break;
        }
    }
    if closed {
        core.client_gone(shell, &client);
        if let Some(mut c) = shell.conns.get_mut(i).and_then(Option::take) {
            let _ = shell.registry.deregister(&mut c.stream);
            shell.conn_by_addr.remove(&c.addr);
            shell.free_conns.push(i);
        }
    } else if let Some(Some(c)) = shell.conns.get_mut(i) {
        c.inbuf = inbuf;
        if !c.outbuf.is_empty() && !c.want_write {
            c.want_write = true;
            let _ = shell.registry.reregister(
                &mut c.stream,
                Token(TCP_BASE + i),
                Interest::READABLE | Interest::WRITABLE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP port already taken where the kernel put the UDP socket: with
    /// port 0 another pair is tried; with a fixed port it is an error.
    #[test]
    fn a_taken_tcp_port_is_retried_only_when_the_port_was_ours_to_pick() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut tries = 0;
        let (u, _t) = bind_same_port(any, bind_udp, |a| {
            tries += 1;
            if tries < 3 {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                TcpListener::bind(a)
            }
        })
        .unwrap();
        assert_eq!(tries, 3);
        assert_ne!(u.local_addr().unwrap().port(), 0);
        // Every attempt taken: a clear error, not a loop.
        let e = bind_same_port(any, bind_udp, |_| -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::AddrInUse))
        })
        .err()
        .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // A fixed port is what the operator asked for: no second guess.
        let fixed: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let mut calls = 0;
        let e = bind_same_port(
            fixed,
            |a| {
                calls += 1;
                bind_udp(SocketAddr::new(a.ip(), 0))
            },
            |_| -> io::Result<()> { Err(io::Error::from(io::ErrorKind::AddrInUse)) },
        )
        .err()
        .unwrap();
        assert_eq!((e.kind(), calls), (io::ErrorKind::AddrInUse, 1));
    }
}
