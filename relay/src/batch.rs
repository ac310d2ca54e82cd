//! Datagrams in batches: on Linux, recvmmsg and sendmmsg (through nix's safe
//! wrappers) move up to [`BATCH`] datagrams per system call; elsewhere (or
//! built with `--cfg tallow_portable_io`, to test it on Linux) the same
//! interface does one `recv_from` or `send_to` per datagram.
//!
//! Receiving: one call fills up to BATCH slots, which the shell hands to the
//! core one by one. Sending: datagrams to clients through the UDP listener
//! (every relayed packet toward a client, and every response) are queued and
//! leave in one call when the batch is full or the shell has finished the
//! work at hand. Relay sockets send one by one: consecutive packets rarely
//! leave through the same one.
//!
//! UDP GSO (UDP_SEGMENT) and GRO are not used: a relay's consecutive
//! datagrams mostly go to different destinations, where GSO does not apply.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// The largest datagram received whole (a UDP payload can be no larger).
const SLOT: usize = 65_536;
/// Queued bytes that make the send queue flush early.
const SEND_BYTES: usize = 256 * 1024;

/// Receive slots for up to BATCH datagrams.
pub struct Receiver {
    bufs: Vec<u8>,
    got: [(usize, Option<SocketAddr>); BATCH],
    sys: sys::RecvState,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            // Zeroed on demand by the kernel: only the bytes datagrams fill
            // become resident.
            bufs: vec![0; SLOT * BATCH],
            got: [(0, None); BATCH],
            sys: sys::RecvState::default(),
        }
    }
}

impl Receiver {
    /// Read what `sock` (an IPv6 socket if `v6`) has, up to BATCH
    /// datagrams; WouldBlock when nothing.
    pub fn recv(&mut self, sock: &UdpSocket, v6: bool) -> io::Result<usize> {
        sys::recv(&mut self.sys, sock, v6, &mut self.bufs, &mut self.got)
    }

    /// Datagram `i` of the last `recv`: its bytes and source (None: skip).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (len, from) = self.got[i];
        (&self.bufs[i * SLOT..i * SLOT + len], from)
    }
}

/// Datagrams waiting to leave through one socket.
pub struct Sender {
    bytes: Vec<u8>,
    msgs: Vec<(usize, usize, SocketAddr)>,
    sys: sys::SendState,
}

impl Default for Sender {
    fn default() -> Self {
        Sender {
            bytes: Vec::with_capacity(SEND_BYTES),
            msgs: Vec::with_capacity(BATCH),
            sys: sys::SendState::default(),
        }
    }
}

impl Sender {
    /// Queue `data` for `to`, sending the batch through `sock` once full.
    /// Returns the datagrams the socket refused.
    pub fn push(&mut self, sock: &UdpSocket, data: &[u8], to: SocketAddr) -> u64 {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.msgs.push((start, data.len(), to));
        if self.msgs.len() == BATCH || self.bytes.len() >= SEND_BYTES {
            return self.flush(sock);
        }
        0
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Send everything queued. Returns the datagrams the socket refused
    /// (full buffer, unreachable destination): dropped, as UDP may.
    pub fn flush(&mut self, sock: &UdpSocket) -> u64 {
        let failed = sys::send(&mut self.sys, sock, &self.bytes, &self.msgs);
        self.bytes.clear();
        self.msgs.clear();
        failed
    }
}

#[cfg(all(target_os = "linux", not(tallow_portable_io)))]
mod sys {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use mio::net::UdpSocket;
    use nix::errno::Errno;
    use nix::sys::socket::{
        recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
    };

    use super::{BATCH, SLOT};

    /// Headers per address family: the kernel shortens a header's address
    /// length to what it wrote and nix does not reset it, so a header that
    /// once held an IPv4 source would truncate an IPv6 one.
    pub struct RecvState([MultiHeaders<SockaddrStorage>; 2]);

    impl Default for RecvState {
        fn default() -> Self {
            RecvState(std::array::from_fn(|_| {
                MultiHeaders::preallocate(BATCH, None)
            }))
        }
    }

    pub fn recv(
        state: &mut RecvState,
        sock: &UdpSocket,
        v6: bool,
        bufs: &mut [u8],
        got: &mut [(usize, Option<SocketAddr>); BATCH],
    ) -> io::Result<usize> {
        let mut chunks = bufs.chunks_exact_mut(SLOT);
        let mut iovs: [[io::IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [io::IoSliceMut::new(
                chunks.next().expect("BATCH slots of SLOT bytes"),
            )]
        });
        let results = recvmmsg(
            sock.as_raw_fd(),
            &mut state.0[usize::from(v6)],
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for msg in results {
            let from = msg.address.as_ref().and_then(to_std);
            // Truncated (cannot happen below 64 KiB) or sourceless: skipped.
            let whole = !msg.flags.contains(MsgFlags::MSG_TRUNC);
            got[n] = (msg.bytes, from.filter(|_| whole));
            n += 1;
        }
        Ok(n)
    }

    fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = a.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }

    pub struct SendState {
        headers: MultiHeaders<SockaddrStorage>,
        addrs: Vec<Option<SockaddrStorage>>,
    }

    impl Default for SendState {
        fn default() -> Self {
            SendState {
                headers: MultiHeaders::preallocate(BATCH, None),
                addrs: Vec::with_capacity(BATCH),
            }
        }
    }

    pub fn send(
        state: &mut SendState,
        sock: &UdpSocket,
        bytes: &[u8],
        msgs: &[(usize, usize, SocketAddr)],
    ) -> u64 {
        state.addrs.clear();
        state.addrs.extend(
            msgs.iter()
                .map(|&(_, _, to)| Some(SockaddrStorage::from(to))),
        );
        let iovs: Vec<[io::IoSlice<'_>; 1]> = msgs
            .iter()
            .map(|&(start, len, _)| [io::IoSlice::new(&bytes[start..start + len])])
            .collect();
        let n = msgs.len();
        let mut failed = 0;
        let mut at = 0;
        while at < n {
            let none: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                sock.as_raw_fd(),
                &mut state.headers,
                iovs[at..].iter(),
                &state.addrs[at..],
                none,
                MsgFlags::MSG_DONTWAIT,
            ) {
                // The kernel stops at the first datagram it refuses: go on
                // from there.
                Ok(sent) => match sent.count() {
                    0 => {
                        failed += 1;
                        at += 1;
                    }
                    k => at += k,
                },
                // A full buffer drops the rest, as a full socket would.
                Err(Errno::EAGAIN) => {
                    failed += (n - at) as u64;
                    break;
                }
                Err(Errno::EINTR) => {}
                // The first datagram failed on its own (unreachable, too
                // large): skip it.
                Err(_) => {
                    failed += 1;
                    at += 1;
                }
            }
        }
        failed
    }
}

#[cfg(not(all(target_os = "linux", not(tallow_portable_io))))]
mod sys {
    use std::io;
    use std::net::SocketAddr;

    use mio::net::UdpSocket;

    use super::{BATCH, SLOT};

    #[derive(Default)]
    pub struct RecvState;

    pub fn recv(
        _: &mut RecvState,
        sock: &UdpSocket,
        _v6: bool,
        bufs: &mut [u8],
        got: &mut [(usize, Option<SocketAddr>); BATCH],
    ) -> io::Result<usize> {
        let (len, from) = sock.recv_from(&mut bufs[..SLOT])?;
        got[0] = (len, Some(from));
        Ok(1)
    }

    #[derive(Default)]
    pub struct SendState;

    pub fn send(
        _: &mut SendState,
        sock: &UdpSocket,
        bytes: &[u8],
        msgs: &[(usize, usize, SocketAddr)],
    ) -> u64 {
        let mut failed = 0;
        for &(start, len, to) in msgs {
            if sock.send_to(&bytes[start..start + len], to).is_err() {
                failed += 1;
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sock(addr: &str) -> UdpSocket {
        let std = std::net::UdpSocket::bind(addr).unwrap();
        std.set_nonblocking(true).unwrap();
        UdpSocket::from_std(std)
    }

    /// Wait (bounded) until `rx` reads something from `s`.
    fn recv_some(rx: &mut Receiver, s: &UdpSocket, v6: bool) -> usize {
        for _ in 0..500 {
            match rx.recv(s, v6) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nothing arrived");
    }

    /// One receiver over IPv4 and IPv6 sockets keeps full source addresses
    /// (an IPv4 source once shortened the header's address length).
    #[test]
    fn sources_of_both_families_arrive_whole_through_one_receiver() {
        let mut rx = Receiver::default();
        let (r4, r6) = (sock("127.0.0.1:0"), sock("[::1]:0"));
        let (s4, s6) = (sock("127.0.0.1:0"), sock("[::1]:0"));
        for _ in 0..2 {
            s4.send_to(b"four", r4.local_addr().unwrap()).unwrap();
            assert_eq!(recv_some(&mut rx, &r4, false), 1);
            assert_eq!(rx.get(0), (&b"four"[..], Some(s4.local_addr().unwrap())));
            s6.send_to(b"six", r6.local_addr().unwrap()).unwrap();
            assert_eq!(recv_some(&mut rx, &r6, true), 1);
            assert_eq!(rx.get(0), (&b"six"[..], Some(s6.local_addr().unwrap())));
        }
    }

    /// Batches leave in order; a datagram the kernel refuses (an IPv6
    /// destination on an IPv4 socket) is counted and skipped, the rest go.
    #[test]
    fn batches_arrive_in_order_and_a_refused_datagram_costs_only_itself() {
        let (tx, a, b) = (
            sock("127.0.0.1:0"),
            sock("127.0.0.1:0"),
            sock("127.0.0.1:0"),
        );
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut out = Sender::default();
        let mut failed = 0;
        for i in 0..(BATCH as u32 + 8) {
            let to = if i % 2 == 0 { to_a } else { to_b };
            failed += out.push(&tx, &i.to_be_bytes(), to);
            if i == 5 {
                failed += out.push(&tx, b"nowhere", "[::1]:9".parse().unwrap());
            }
        }
        failed += out.flush(&tx);
        assert_eq!(failed, 1);
        assert!(out.is_empty());
        let mut rx = Receiver::default();
        for (s, first) in [(&a, 0u32), (&b, 1)] {
            let mut want = first;
            while want < BATCH as u32 + 8 {
                let n = recv_some(&mut rx, s, false);
                for i in 0..n {
                    assert_eq!(rx.get(i).0, want.to_be_bytes());
                    want += 2;
                }
            }
        }
    }
}
