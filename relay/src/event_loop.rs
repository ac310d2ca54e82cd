//! The relay's shell: a thread per shard ([`crate::shard`]), each one mio
//! poll over its UDP listener, TCP and TLS listeners and their connections,
//! its relay sockets and its inbox of packets from other shards. A core is
//! owned by its thread, so no packet takes a lock or a task hop, and the
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

use crossbeam_queue::ArrayQueue;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::allocation::{ClientAddr, RelayId, Transport};
use crate::batch::{Receiver, Sender};
use crate::codec;
use crate::config::PortRange;
use crate::core::{Core, CoreConfig, Io};
use crate::metrics::RelayMetrics;
use crate::shard::Shared;

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
/// Packets queued for one shard from the others: some milliseconds of a
/// busy shard's traffic, beyond which they are dropped as a full socket
/// buffer would drop them.
const INBOX_CAP: usize = 8192;
/// Packets handed to a shard before it is woken, within one pass.
const WAKE_EVERY: u32 = 64;
/// Handed-over packet buffers a shard keeps for reuse.
const SPARE_BUFFERS: usize = 1024;

/// Where and how the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    pub port_range: PortRange,
    /// Bind IPv6 relay sockets here (enables REQUESTED-ADDRESS-FAMILY IPv6).
    pub relay_ipv6: Option<Ipv6Addr>,
    /// TURN over TLS, when a certificate is configured.
    pub tls: Option<TlsConfig>,
    /// Shards (event loop threads); 0: one per core.
    pub threads: usize,
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

/// A running relay: its shard threads.
pub struct RelayHandle {
    stop: Arc<AtomicBool>,
    inboxes: Arc<[Inbox]>,
    threads: Vec<JoinHandle<()>>,
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    /// Shards running.
    pub shards: usize,
}

impl RelayHandle {
    /// Stop the relay threads and wait for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for inbox in self.inboxes.iter() {
            let _ = inbox.waker.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A packet from a client of one shard to a relayed address of another.
struct Handoff {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// A shard's way in from the other shards: a bounded lock-free queue
/// (crossbeam's ArrayQueue: one CAS per push or pop, no lock, no allocation)
/// and the waker of its poll.
struct Inbox {
    queue: ArrayQueue<Handoff>,
    waker: Waker,
}

/// Shards for `threads` (0: one per core), no more than the relay port pairs
/// so each shard owns some ports.
pub fn shard_count(threads: usize, ports: PortRange) -> usize {
    let wanted = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let pairs = (usize::from(ports.high - ports.low) + 2) / 2;
    if wanted > pairs {
        tracing::warn!(
            wanted,
            pairs,
            "TURN_THREADS: fewer relay port pairs than shards; running one shard per pair"
        );
    }
    wanted.clamp(1, pairs)
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
    let shards = shard_count(cfg.threads, cfg.port_range);
    let (udps, tcps) = bind_listeners(cfg.listen, shards)?;
    let udp_addr = udps[0].local_addr()?;
    let tcp_addr = tcps[0].local_addr()?;
    let (tls_config, tlss) = match &cfg.tls {
        Some(t) => {
            let server = tls_server_config(t)?;
            (Some(server), bind_tcp_group(t.listen, shards)?)
        }
        None => (None, Vec::new()),
    };
    let tls_addr = match tlss.first() {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let shared = Arc::new(Shared::new(shards, cfg.port_range));
    let polls = (0..shards)
        .map(|_| Poll::new())
        .collect::<io::Result<Vec<_>>>()?;
    let inboxes: Arc<[Inbox]> = polls
        .iter()
        .map(|p| {
            Ok(Inbox {
                queue: ArrayQueue::new(INBOX_CAP),
                waker: Waker::new(p.registry(), WAKER)?,
            })
        })
        .collect::<io::Result<Vec<_>>>()?
        .into();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tlss = tlss.into_iter();
    let mut threads = Vec::with_capacity(shards);
    for (shard, ((poll, udp), tcp)) in polls.into_iter().zip(udps).zip(tcps).enumerate() {
        let tls = tlss.next().zip(tls_config.clone());
        let ctx = ShardCtx {
            shard,
            shared: shared.clone(),
            inboxes: inboxes.clone(),
        };
        let (cfg, metrics, stopping) = (cfg.clone(), metrics.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("tallow-relay-{shard}"))
            .spawn(move || {
                let udp = UdpSocket::from_std(udp);
                if let Err(e) = run(poll, udp, tcp, tls, cfg, metrics, ctx, &stopping) {
                    tracing::error!(error = %e, shard, "relay loop failed");
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Stop the shards already running before reporting.
                drop(RelayHandle {
                    stop,
                    inboxes,
                    threads,
                    udp_addr,
                    tcp_addr,
                    tls_addr,
                    shards,
                });
                return Err(e);
            }
        }
    }
    tracing::info!(%udp_addr, %tcp_addr, tls_addr = ?tls_addr, shards, advertised = %plan.summary, "TURN relay listening");
    for warning in &plan.warnings {
        tracing::warn!(%warning, "TURN relay: remote clients may not reach relayed addresses");
    }
    Ok(RelayHandle {
        stop,
        inboxes,
        threads,
        udp_addr,
        tcp_addr,
        tls_addr,
        shards,
    })
}

/// The UDP and TCP listeners of `shards` shards, on one port. One shard:
/// plain sockets. More: first a probe pair without SO_REUSEPORT, so a port
/// another process holds (with SO_REUSEPORT or not) is refused rather than
/// joined, then the group with SO_REUSEPORT on the port the probe got.
fn bind_listeners(
    listen: SocketAddr,
    shards: usize,
) -> io::Result<(Vec<StdUdp>, Vec<TcpListener>)> {
    if shards == 1 {
        let (u, t) = bind_same_port(listen, bind_udp, TcpListener::bind)?;
        return Ok((vec![u], vec![t]));
    }
    // With port 0 another process may take the probed port before the group
    // binds it: probe again, a few times.
    let mut last = None;
    for _ in 0..4 {
        let (probe_u, probe_t) = bind_same_port(listen, bind_udp, |a| bind_tcp(a, false))?;
        let addr = probe_u.local_addr()?;
        drop((probe_u, probe_t));
        let group = (|| -> io::Result<(Vec<StdUdp>, Vec<TcpListener>)> {
            let udps = (0..shards)
                .map(|_| bind_udp_with(addr, true))
                .collect::<io::Result<Vec<_>>>()?;
            let tcps = (0..shards)
                .map(|_| bind_tcp(addr, true))
                .collect::<io::Result<Vec<_>>>()?;
            Ok((udps, tcps))
        })();
        match group {
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// `shards` TCP listeners on `listen` (TLS), probed as in bind_listeners.
fn bind_tcp_group(listen: SocketAddr, shards: usize) -> io::Result<Vec<TcpListener>> {
    if shards == 1 {
        return Ok(vec![TcpListener::bind(listen)?]);
    }
    let probe = bind_tcp(listen, false)?;
    let addr = probe.local_addr()?;
    drop(probe);
    (0..shards).map(|_| bind_tcp(addr, true)).collect()
}

fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std and mio do: rebinding over TIME_WAIT connections is fine.
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(TcpListener::from_std(sock.into()))
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
    bind_udp_with(addr, false)
}

fn bind_udp_with(addr: SocketAddr, reuse_port: bool) -> io::Result<StdUdp> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

struct RelaySock {
    sock: UdpSocket,
    v6: bool,
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

/// Which shard a loop runs and how it reaches the others.
struct ShardCtx {
    shard: usize,
    shared: Arc<Shared>,
    inboxes: Arc<[Inbox]>,
}

struct Shell {
    ctx: ShardCtx,
    /// Packets handed to each shard since it was last woken.
    handed: Vec<u32>,
    spare: Vec<Vec<u8>>,
    registry: Registry,
    udp: UdpSocket,
    /// Datagrams to clients, leaving through `udp` in batches.
    out: Sender,
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
                let failed = self.out.push(&self.udp, data, client.addr);
                if failed > 0 {
                    self.metrics.dropped_send_failed.inc_by(failed);
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
        // This shard's ports only: pairs me, me + N, me + 2N, ... of the
        // range (crate::shard), tried from a random one.
        let PortRange { low, high } = self.ports;
        let (me, n) = (self.ctx.shard as u32, self.ctx.shared.shards() as u32);
        let pairs = (u32::from(high - low) + 2) / 2;
        if me >= pairs {
            return None;
        }
        let owned = (pairs - me - 1) / n + 1;
        let start: u32 = rand::random::<u32>() % owned;
        let candidates = (0..owned.min(256)).flat_map(|i| {
            let first = u32::from(low) + 2 * (me + n * ((start + i) % owned));
            [first, first + 1]
        });
        for port in candidates {
            if port > u32::from(high) || (even && port % 2 == 1) {
                continue;
            }
            let port = port as u16;
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
            self.relays[id] = Some(RelaySock {
                sock,
                v6: ip.is_ipv6(),
            });
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

    fn send_to_shard(
        &mut self,
        shard: usize,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(inbox) = self.ctx.inboxes.get(shard) else {
            return false;
        };
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        if let Err(h) = inbox.queue.push(Handoff {
            from,
            to,
            data: buf,
        }) {
            self.spare.push(h.data);
            return false;
        }
        // Wake it now and then within a long pass, and at the pass's end.
        self.handed[shard] += 1;
        if self.handed[shard] >= WAKE_EVERY {
            self.handed[shard] = 0;
            let _ = inbox.waker.wake();
        }
        true
    }
}

impl Shell {
    /// Send the datagrams queued for clients.
    fn flush(&mut self) {
        if !self.out.is_empty() {
            let failed = self.out.flush(&self.udp);
            if failed > 0 {
                self.metrics.dropped_send_failed.inc_by(failed);
            }
        }
    }

    /// Wake the shards this one handed packets to since their last wake.
    fn wake_shards(&mut self) {
        for (shard, n) in self.handed.iter_mut().enumerate() {
            if *n > 0 {
                *n = 0;
                let _ = self.ctx.inboxes[shard].waker.wake();
            }
        }
    }

    /// Hand this shard's queued packets to its core; true if more remain.
    fn drain_inbox(&mut self, core: &mut Core, now: Instant) -> bool {
        let inboxes = self.ctx.inboxes.clone();
        let inbox = &inboxes[self.ctx.shard];
        for _ in 0..INBOX_CAP {
            let Some(h) = inbox.queue.pop() else {
                return false;
            };
            core.on_shard(self, h.from, h.to, &h.data, now);
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(h.data);
            }
        }
        !inbox.queue.is_empty()
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

#[allow(clippy::too_many_arguments)]
fn run(
    mut poll: Poll,
    mut udp: UdpSocket,
    mut tcp: TcpListener,
    tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    cfg: RelayConfig,
    metrics: RelayMetrics,
    ctx: ShardCtx,
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
    let mut core = Core::for_shard(
        cfg.core.clone(),
        metrics.clone(),
        ctx.shared.clone(),
        ctx.shard,
        Instant::now(),
    );
    let mut shell = Shell {
        out: Sender::default(),
        handed: vec![0; ctx.inboxes.len()],
        spare: Vec::new(),
        ctx,
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
    let mut rx = Receiver::default();
    let udp_v6 = shell.udp.local_addr()?.is_ipv6();
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    let mut backlog = false;
    while !stop.load(Ordering::Relaxed) {
        let timeout = match backlog {
            true => Duration::ZERO,
            false => next_tick.saturating_duration_since(Instant::now()),
        };
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
                    match rx.recv(&shell.udp, udp_v6) {
                        Ok(n) => {
                            for i in 0..n {
                                let (data, from) = rx.get(i);
                                let Some(addr) = from else { continue };
                                let client = ClientAddr {
                                    transport: Transport::Udp,
                                    addr,
                                };
                                core.on_client(&mut shell, &client, data, now);
                            }
                            // Counted before the batch leaves: whoever sees
                            // a packet out sees it in the metrics.
                            core.publish_metrics();
                            shell.flush();
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
                        match rx.recv(&r.sock, r.v6) {
                            Ok(n) => {
                                for i in 0..n {
                                    let (data, from) = rx.get(i);
                                    if let Some(from) = from {
                                        core.on_peer(&mut shell, id as RelayId, from, data, now);
                                    }
                                }
                                core.publish_metrics();
                                shell.flush();
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
        // Every pass, not only on a wake: a wake may have been spent on a
        // pass that was already draining.
        backlog = shell.drain_inbox(&mut core, now);
        if now >= next_tick {
            core.tick(&mut shell, now);
            next_tick = now + Duration::from_secs(1);
        }
        core.publish_metrics();
        shell.flush();
        shell.wake_shards();
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

    /// A port another socket holds is refused even when that socket set
    /// SO_REUSEPORT itself (same user, so the kernel would let a reuseport
    /// group join it): the probe binds without SO_REUSEPORT.
    #[test]
    fn a_port_in_use_is_refused_whatever_the_holder_set() {
        for holder_reuses in [false, true] {
            let held = bind_udp_with("127.0.0.1:0".parse().unwrap(), holder_reuses).unwrap();
            let addr = held.local_addr().unwrap();
            let e = bind_listeners(addr, 4).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{holder_reuses}");
            let tcp_held = bind_tcp(addr, holder_reuses).unwrap();
            drop(held);
            let e = bind_listeners(addr, 4).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "tcp {holder_reuses}");
            drop(tcp_held);
        }
        // Free, it binds one socket per shard on one port.
        let (udps, tcps) = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = udps[0].local_addr().unwrap().port();
        assert_eq!(udps.len(), 3);
        assert!(udps.iter().all(|u| u.local_addr().unwrap().port() == port));
        assert!(tcps.iter().all(|t| t.local_addr().unwrap().port() == port));
    }

    #[test]
    fn shards_never_outnumber_port_pairs() {
        let range = |low, high| PortRange { low, high };
        assert_eq!(shard_count(8, range(1000, 1003)), 2);
        assert_eq!(shard_count(8, range(1000, 1004)), 3);
        assert_eq!(shard_count(3, range(49152, 65535)), 3);
        assert_eq!(shard_count(1, range(1000, 1000)), 1);
        assert!(shard_count(0, range(49152, 65535)) >= 1);
    }
}
