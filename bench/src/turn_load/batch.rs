//! Batched receive: one recvmmsg (nix's safe wrapper) reads up to a batch
//! of datagrams from a socket. With level-triggered epoll one call per
//! readiness event is enough (what is left wakes the next wait), so a busy
//! socket costs one syscall per batch instead of one per datagram plus a
//! final EAGAIN.

use std::io::IoSliceMut;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

const MTU: usize = 2048;

pub struct RecvBatch {
    bufs: Vec<[u8; MTU]>,
    headers: MultiHeaders<SockaddrStorage>,
    lens: Vec<usize>,
    addrs: Vec<Option<SockaddrStorage>>,
}

impl RecvBatch {
    pub fn new(batch: usize) -> Self {
        RecvBatch {
            bufs: vec![[0u8; MTU]; batch],
            headers: MultiHeaders::preallocate(batch, None),
            lens: Vec::with_capacity(batch),
            addrs: Vec::with_capacity(batch),
        }
    }

    /// Read what is waiting on `fd` (non-blocking); returns how many
    /// datagrams arrived (zero when none was waiting).
    pub fn recv(&mut self, fd: RawFd) -> nix::Result<usize> {
        self.lens.clear();
        self.addrs.clear();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        match recvmmsg(
            fd,
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(msgs) => {
                for m in msgs {
                    self.lens.push(m.bytes);
                    self.addrs.push(m.address);
                }
                Ok(self.lens.len())
            }
            // ECONNREFUSED: an ICMP error from an earlier send on a
            // connected socket; the datagram it stands for is simply lost.
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Datagram `i` of the last `recv`.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Sources of the last `recv`'s datagrams, in order.
    pub fn addrs(&self) -> &[Option<SockaddrStorage>] {
        &self.addrs
    }

    /// The last `recv`'s datagrams, in order.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.packet(i))
    }
}
