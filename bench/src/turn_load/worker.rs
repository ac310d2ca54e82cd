//! One generator thread: its share of the clients, one epoll over their
//! sockets (and its own echo peer in `peer` mode), the setup, the paced data
//! phase and the release.
//!
//! Pacing: packets are due at `rate` per second from the shared start;
//! every loop turn sends what is due (round robin over the clients), then
//! waits on epoll at most 1 ms. A generator that cannot keep up sends fewer
//! than offered, which the report shows (`sent_pps` below `offered_pps`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::batch::RecvBatch;
use crate::client::{self, Client, Phase, SetupLimits, CHANNEL, LIFETIME};
use crate::echo::Echo;
use crate::probe::{self, Probe};
use crate::stun::{self, Reply, Request};

const ECHO_TOKEN: u64 = u64::MAX;
/// Datagrams read per recvmmsg on a client socket.
const CLIENT_BATCH: usize = 16;
/// Sends per loop turn at most, so receiving keeps up during catch-up.
const MAX_BURST: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each client sends to an echo peer; the echo comes back through the
    /// relay. Latency is a round trip.
    Peer,
    /// Clients in pairs send to each other's relayed address. Latency is
    /// one way.
    C2c,
}

pub struct Worker {
    clients: Vec<Client>,
    epoll: Epoll,
    echo: Option<Echo>,
    salt: u32,
    mode: Mode,
}

/// What the data phase counted.
pub struct Tally {
    pub sent: u64,
    pub send_failed: u64,
    pub received: u64,
    pub latency_ns: Histogram<u64>,
    pub refresh_ok: u64,
    pub refresh_err: u64,
    pub echo_dropped: u64,
}

impl Tally {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            sent: 0,
            send_failed: 0,
            received: 0,
            // 1 ns to 60 s at 3 significant digits: fixed memory whatever
            // the packet count.
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
            refresh_ok: 0,
            refresh_err: 0,
            echo_dropped: 0,
        })
    }

    pub fn add(&mut self, o: &Tally) -> anyhow::Result<()> {
        self.sent += o.sent;
        self.send_failed += o.send_failed;
        self.received += o.received;
        self.latency_ns.add(&o.latency_ns)?;
        self.refresh_ok += o.refresh_ok;
        self.refresh_err += o.refresh_err;
        self.echo_dropped += o.echo_dropped;
        Ok(())
    }
}

pub struct DataPhase {
    pub start: Instant,
    /// Packets per second for this worker.
    pub rate: f64,
    pub duration: Duration,
    /// How long to wait for stragglers after the last send.
    pub grace: Duration,
    pub size: usize,
    /// Keepalive period (Refresh, CreatePermission, ChannelBind).
    pub refresh: Duration,
}

impl Worker {
    /// Open `count` clients numbered from `first`, each with its own REST
    /// username (`<user>-<index>`), so per-user quotas do not apply.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: SocketAddr,
        mode: Mode,
        first: u32,
        count: u32,
        secret: &str,
        user: &str,
        peer_ip: std::net::IpAddr,
        salt: u32,
    ) -> anyhow::Result<Self> {
        let now = stun::unix_now()?;
        let mut clients = Vec::with_capacity(count as usize);
        for i in first..first + count {
            let creds = stun::Creds::rest(secret, &format!("{user}-{i}"), now, 24 * 3600)?;
            clients.push(Client::new(server, creds, i)?);
        }
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        client::register(&epoll, &clients)?;
        let echo = match mode {
            Mode::Peer => {
                let e = Echo::bind(peer_ip)?;
                epoll.add(e.socket(), EpollEvent::new(EpollFlags::EPOLLIN, ECHO_TOKEN))?;
                Some(e)
            }
            Mode::C2c => None,
        };
        Ok(Worker {
            clients,
            epoll,
            echo,
            salt,
            mode,
        })
    }

    /// Allocate, then permission and channel for every client.
    pub fn setup(&mut self, limits: SetupLimits, deadline: Instant) -> anyhow::Result<()> {
        for phase in [Phase::Probe, Phase::Allocate] {
            client::run_phase(
                &mut self.clients,
                &self.epoll,
                self.salt,
                phase,
                limits,
                deadline,
            )?;
        }
        match self.mode {
            Mode::Peer => {
                let echo = self
                    .echo
                    .as_ref()
                    .context("peer mode without echo")?
                    .addr()?;
                for c in &mut self.clients {
                    c.peer = Some(echo);
                }
            }
            Mode::C2c => {
                for pair in self.clients.chunks_exact_mut(2) {
                    let (a, b) = pair.split_at_mut(1);
                    a[0].peer = b[0].relayed;
                    b[0].peer = a[0].relayed;
                }
            }
        }
        for phase in [Phase::Permission, Phase::Bind] {
            client::run_phase(
                &mut self.clients,
                &self.epoll,
                self.salt,
                phase,
                limits,
                deadline,
            )?;
        }
        Ok(())
    }

    /// Release every allocation (best effort); returns how many the server
    /// confirmed.
    pub fn release(&mut self, limits: SetupLimits, deadline: Instant) -> anyhow::Result<usize> {
        client::run_phase(
            &mut self.clients,
            &self.epoll,
            self.salt,
            Phase::Release,
            limits,
            deadline,
        )
    }

    pub fn run(&mut self, cfg: &DataPhase) -> anyhow::Result<Tally> {
        let n = self.clients.len();
        let mut t = Tally::new()?;
        if n == 0 {
            return Ok(t);
        }
        let mut pkt = vec![0u8; 4 + cfg.size.max(probe::HEADER)];
        pkt[..2].copy_from_slice(&CHANNEL.to_be_bytes());
        let payload_len = (pkt.len() - 4) as u16;
        pkt[2..4].copy_from_slice(&payload_len.to_be_bytes());
        let mut seqs = vec![0u32; n];
        let mut rr = 0usize;
        let mut events = vec![EpollEvent::empty(); 1024];
        let mut rx = RecvBatch::new(CLIENT_BATCH);
        let end_send = cfg.start + cfg.duration;
        let end = end_send + cfg.grace;
        // Keepalive: client i is refreshed at round_start + refresh * i / n,
        // the first round one period after the start (short runs send none).
        let mut round_start = cfg.start + cfg.refresh;
        let mut refresh_next = 0usize;
        let mut refresh_retry: Vec<usize> = Vec::new();
        // Keepalive requests not answered yet: the drain waits for them too.
        let mut refresh_pending = 0u64;

        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let sending = now < end_send;
            let mut behind = false;
            if sending && cfg.rate > 0.0 {
                let due = (now.duration_since(cfg.start).as_secs_f64() * cfg.rate) as u64;
                let mut burst = 0;
                while t.sent + t.send_failed < due && burst < MAX_BURST {
                    let c = &self.clients[rr];
                    let sent_ns = cfg.start.elapsed().as_nanos() as u64;
                    probe::write(
                        &mut pkt[4..],
                        Probe {
                            alloc: c.index,
                            seq: seqs[rr],
                            sent_ns,
                        },
                    );
                    seqs[rr] = seqs[rr].wrapping_add(1);
                    if c.send(&pkt)? {
                        t.sent += 1;
                    } else {
                        t.send_failed += 1;
                    }
                    rr = (rr + 1) % n;
                    burst += 1;
                }
                behind = t.sent + t.send_failed < due;
            } else if !sending && t.received >= t.sent && refresh_pending == 0 {
                break;
            }
            if now >= round_start {
                let target = ((now.duration_since(round_start).as_secs_f64()
                    / cfg.refresh.as_secs_f64())
                    * n as f64) as usize;
                while refresh_next < target.min(n) {
                    refresh_pending += self.keepalive(refresh_next)?;
                    refresh_next += 1;
                }
                if refresh_next == n {
                    round_start += cfg.refresh;
                    refresh_next = 0;
                }
            }
            for i in refresh_retry.drain(..) {
                refresh_pending += self.keepalive(i)?;
            }
            let timeout = if behind {
                EpollTimeout::ZERO
            } else {
                EpollTimeout::from(1u8)
            };
            let ready = self.epoll.wait(&mut events, timeout)?;
            for ev in &events[..ready] {
                let token = ev.data();
                if token == ECHO_TOKEN {
                    if let Some(echo) = self.echo.as_mut() {
                        // Drain a bounded number of batches per turn.
                        for _ in 0..8 {
                            if echo.pump()? < crate::echo::BATCH {
                                break;
                            }
                        }
                    }
                    continue;
                }
                let i = token as usize;
                let Some(c) = self.clients.get_mut(i) else {
                    continue;
                };
                rx.recv(c.sock.as_raw_fd())?;
                let at_ns = cfg.start.elapsed().as_nanos() as u64;
                for p in rx.packets() {
                    match tallow_relay::codec::classify(p) {
                        tallow_relay::codec::Packet::ChannelData { data, .. } => {
                            if let Some(probe) = probe::read(data) {
                                t.received += 1;
                                t.latency_ns
                                    .saturating_record(at_ns.saturating_sub(probe.sent_ns).max(1));
                            }
                        }
                        tallow_relay::codec::Packet::Stun => match stun::decode_reply(p) {
                            Some((_, Reply::Ok { .. })) => {
                                refresh_pending = refresh_pending.saturating_sub(1);
                                t.refresh_ok += 1;
                            }
                            Some((_, Reply::Challenge(ch))) => {
                                refresh_pending = refresh_pending.saturating_sub(1);
                                // Stale nonce: again with the new one.
                                c.challenge = Some(ch);
                                t.refresh_err += 1;
                                if t.refresh_err < 10 * n as u64 {
                                    refresh_retry.push(i);
                                }
                            }
                            Some((_, Reply::Error(..))) => {
                                refresh_pending = refresh_pending.saturating_sub(1);
                                t.refresh_err += 1;
                            }
                            None => {}
                        },
                        tallow_relay::codec::Packet::Invalid => {}
                    }
                }
            }
        }
        t.echo_dropped = self.echo.as_ref().map_or(0, |e| e.dropped);
        Ok(t)
    }

    /// Refresh client `i`'s allocation, permission and channel (answers are
    /// counted by the data loop); returns how many requests went out.
    fn keepalive(&mut self, i: usize) -> anyhow::Result<u64> {
        let c = &mut self.clients[i];
        let peer = c.peer.context("client has no peer")?;
        let mut sent = 0;
        for req in [
            Request::Refresh(LIFETIME),
            Request::CreatePermission(peer),
            Request::ChannelBind(CHANNEL, peer),
        ] {
            let (_, bytes) = c.request(self.salt, req)?;
            if c.send(&bytes)? {
                sent += 1;
            }
        }
        Ok(sent)
    }
}
