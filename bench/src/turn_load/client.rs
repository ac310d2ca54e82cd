//! One TURN client per allocation, and the setup that brings a worker's
//! clients from nothing to a bound channel: Allocate (401, then
//! authenticated), CreatePermission, ChannelBind, each phase run for all
//! clients at once with a bounded number of transactions in flight and
//! retransmission on timeout. Release (Refresh with lifetime 0) ends a run
//! so a long-lived server does not carry allocations into the next one.
//!
//! Each client has its own UDP socket: a TURN server keys an allocation by
//! the client's 5-tuple, so one socket can hold one allocation per server
//! address, and thousands of allocations need thousands of sockets.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};

use crate::stun::{self, Challenge, Creds, Reply, Request};

/// The one channel each client binds (channels are per allocation).
pub const CHANNEL: u16 = 0x4000;
/// Lifetime asked for on keepalive refreshes.
pub const LIFETIME: Duration = Duration::from_secs(600);

pub struct Client {
    pub sock: UdpSocket,
    server: SocketAddr,
    pub creds: Creds,
    pub challenge: Option<Challenge>,
    pub relayed: Option<SocketAddr>,
    /// Where this client's data goes: the echo peer or its partner's
    /// relayed address.
    pub peer: Option<SocketAddr>,
    pub index: u32,
    counter: u32,
}

impl Client {
    /// A socket connected to `server` (so sends need no address and only
    /// the server's packets arrive), registered with `epoll` under `token`.
    pub fn new(server: SocketAddr, creds: Creds, index: u32) -> anyhow::Result<Self> {
        Ok(Client {
            sock: Self::socket(server)?,
            server,
            creds,
            challenge: None,
            relayed: None,
            peer: None,
            index,
            counter: 0,
        })
    }

    fn socket(server: SocketAddr) -> anyhow::Result<UdpSocket> {
        let bind: SocketAddr = match server {
            SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
            SocketAddr::V6(_) => "[::]:0".parse()?,
        };
        let sock = UdpSocket::bind(bind).context("client socket (open files limit?)")?;
        sock.connect(server)?;
        sock.set_nonblocking(true)?;
        Ok(sock)
    }

    /// Move to a fresh local port (registered under `token`): the server
    /// still holds an allocation for the old 5-tuple (437), left by an
    /// earlier run that reused the same port.
    fn rebind(&mut self, epoll: &Epoll, token: u64) -> anyhow::Result<()> {
        // Closing the old socket removes it from the epoll set.
        self.sock = Self::socket(self.server)?;
        epoll.add(&self.sock, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        Ok(())
    }

    /// Encode `req` with a fresh transaction id, authenticated once a
    /// challenge is known.
    pub fn request(&mut self, salt: u32, req: Request) -> anyhow::Result<([u8; 12], Vec<u8>)> {
        self.counter = self.counter.wrapping_add(1);
        let txid = stun::txid(salt, self.index, self.counter);
        let auth = self.challenge.as_ref().map(|ch| (&self.creds, ch));
        Ok((txid, stun::encode(req, txid, auth)?))
    }

    /// Send, counting a full socket buffer as not sent.
    pub fn send(&self, buf: &[u8]) -> anyhow::Result<bool> {
        match self.sock.send(buf) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
            // Loopback reports an ICMP unreachable from an earlier send as
            // ECONNREFUSED on a later one: the packet is lost, not the run.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Allocate without credentials, for the 401's realm and nonce.
    Probe,
    Allocate,
    Permission,
    Bind,
    /// Refresh with lifetime 0; best effort.
    Release,
}

impl Phase {
    fn request(self, c: &Client) -> anyhow::Result<Request> {
        let peer = || c.peer.context("client has no peer");
        Ok(match self {
            Phase::Probe | Phase::Allocate => Request::Allocate,
            Phase::Permission => Request::CreatePermission(peer()?),
            Phase::Bind => Request::ChannelBind(CHANNEL, peer()?),
            Phase::Release => Request::Refresh(Duration::ZERO),
        })
    }
}

/// How setup transactions are paced.
#[derive(Debug, Clone, Copy)]
pub struct SetupLimits {
    /// Transactions in flight at once (over the worker's clients).
    pub window: usize,
    /// Retransmission timeout (fixed: loopback has no RTT to estimate).
    pub rto: Duration,
    pub tries: u32,
}

#[derive(Clone, Copy)]
struct Pending {
    txid: [u8; 12],
    sent: Instant,
    tries: u32,
}

/// Run `phase` for every client; clients' sockets must be registered with
/// `epoll` under their index. Fails on the first error response (but
/// `Release`, which only counts) or when `deadline` passes.
/// Returns how many clients completed the phase.
pub fn run_phase(
    clients: &mut [Client],
    epoll: &Epoll,
    salt: u32,
    phase: Phase,
    limits: SetupLimits,
    deadline: Instant,
) -> anyhow::Result<usize> {
    let n = clients.len();
    let mut pending: Vec<Option<Pending>> = vec![None; n];
    let (mut next, mut inflight, mut done, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 2048];
    let mut last_scan = Instant::now();

    let send = |c: &mut Client, tries: u32| -> anyhow::Result<Pending> {
        let req = phase.request(c)?;
        let (txid, bytes) = c.request(salt, req)?;
        c.send(&bytes)?;
        Ok(Pending {
            txid,
            sent: Instant::now(),
            tries,
        })
    };

    while done + failed < n {
        let now = Instant::now();
        if now > deadline {
            if phase == Phase::Release {
                break;
            }
            bail!("{phase:?}: only {done} of {n} clients done by the deadline");
        }
        while inflight < limits.window && next < n {
            pending[next] = Some(send(&mut clients[next], 1)?);
            next += 1;
            inflight += 1;
        }
        if now.duration_since(last_scan) >= limits.rto / 4 {
            last_scan = now;
            for i in 0..next {
                let Some(p) = pending[i] else { continue };
                if now.duration_since(p.sent) < limits.rto {
                    continue;
                }
                if p.tries >= limits.tries {
                    if phase == Phase::Release {
                        pending[i] = None;
                        inflight -= 1;
                        failed += 1;
                        continue;
                    }
                    bail!(
                        "{phase:?}: client {i} got no answer after {} tries",
                        p.tries
                    );
                }
                pending[i] = Some(send(&mut clients[i], p.tries + 1)?);
            }
        }
        let ready = epoll.wait(&mut events, EpollTimeout::from(10u8))?;
        for ev in &events[..ready] {
            let i = ev.data() as usize;
            let Some(c) = clients.get_mut(i) else {
                continue;
            };
            loop {
                let len = match c.sock.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(e.into()),
                };
                let Some((txid, reply)) = stun::decode_reply(&buf[..len]) else {
                    continue;
                };
                let Some(p) = pending[i] else { continue };
                if txid.as_bytes() != &p.txid {
                    continue;
                }
                pending[i] = None;
                let outcome = match (phase, reply) {
                    (Phase::Probe, Reply::Challenge(ch)) => {
                        c.challenge = Some(ch);
                        Ok(())
                    }
                    (Phase::Probe, Reply::Ok { .. }) => {
                        bail!("the server allocated without credentials")
                    }
                    (_, Reply::Ok { relayed }) => {
                        if phase == Phase::Allocate {
                            c.relayed = Some(
                                relayed.context("Allocate success without XOR-RELAYED-ADDRESS")?,
                            );
                        }
                        Ok(())
                    }
                    // A new nonce (438, or a 401 with a fresh one): again.
                    (_, Reply::Challenge(ch)) if p.tries < limits.tries => {
                        c.challenge = Some(ch);
                        pending[i] = Some(send(c, p.tries + 1)?);
                        continue;
                    }
                    (_, Reply::Challenge(_)) => Err((401, "challenged on every try".to_owned())),
                    (Phase::Probe, Reply::Error(437, _)) if p.tries < limits.tries => {
                        c.rebind(epoll, i as u64)?;
                        pending[i] = Some(send(c, p.tries + 1)?);
                        break;
                    }
                    (_, Reply::Error(code, reason)) => Err((code, reason)),
                };
                inflight -= 1;
                match outcome {
                    Ok(()) => done += 1,
                    Err(_) if phase == Phase::Release => failed += 1,
                    Err((code, reason)) => bail!("{phase:?}: client {i}: error {code} {reason}"),
                }
            }
        }
    }
    Ok(done)
}

/// Register every client's socket with `epoll` under its index.
pub fn register(epoll: &Epoll, clients: &[Client]) -> anyhow::Result<()> {
    for (i, c) in clients.iter().enumerate() {
        epoll.add(&c.sock, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
    }
    Ok(())
}
