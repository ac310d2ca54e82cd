//! The UDP echo peer of `peer` mode: every datagram goes back to where it
//! came from (an allocation's relayed address). All allocations of a worker
//! share it, so it sees the whole packet rate: it reads and writes in
//! batches (recvmmsg/sendmmsg, through nix's safe wrappers) to stay cheap.

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    sendmmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

use crate::batch::RecvBatch;

pub const BATCH: usize = 64;

pub struct Echo {
    sock: UdpSocket,
    rx: RecvBatch,
    tx: MultiHeaders<SockaddrStorage>,
    /// Datagrams that could not be sent back (socket buffer full).
    pub dropped: u64,
    pub echoed: u64,
}

impl Echo {
    pub fn bind(ip: IpAddr) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        sock.set_nonblocking(true)?;
        big_buffers(&sock);
        Ok(Echo {
            sock,
            rx: RecvBatch::new(BATCH),
            tx: MultiHeaders::preallocate(BATCH, None),
            dropped: 0,
            echoed: 0,
        })
    }

    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.sock.local_addr()?)
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Echo one batch of whatever is waiting; returns how many arrived
    /// (a full batch means more may be waiting).
    pub fn pump(&mut self) -> anyhow::Result<usize> {
        let fd = self.sock.as_raw_fd();
        let n = self.rx.recv(fd)?;
        if n == 0 {
            return Ok(0);
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = self.rx.packets().map(|p| [IoSlice::new(p)]).collect();
        let none: [ControlMessage<'_>; 0] = [];
        let sent = match sendmmsg(
            fd,
            &mut self.tx,
            &iovs,
            self.rx.addrs(),
            none,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(res) => res.count(),
            Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        self.echoed += sent as u64;
        self.dropped += (n - sent) as u64;
        Ok(n)
    }
}

/// Ask for 4 MiB socket buffers so bursts are not dropped by the kernel on
/// our side: forced as root (above net.core.*mem_max), else the capped size.
pub fn big_buffers(sock: &UdpSocket) {
    const SIZE: usize = 4 << 20;
    if setsockopt(sock, sockopt::RcvBufForce, &SIZE).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &SIZE);
    }
    if setsockopt(sock, sockopt::SndBufForce, &SIZE).is_err() {
        let _ = setsockopt(sock, sockopt::SndBuf, &SIZE);
    }
}
