//! A webrtc-rs runtime that wakes each connection's driver at least every
//! `TICK`. webrtc-rs 0.20 hands data that arrives through its TURN client
//! to the connection core at the end of a driver pass, after the pass has
//! flushed writes and events, and then sleeps until the next packet or
//! timer: the SACKs and channel messages that data produced wait until
//! then (often an SCTP retransmission timeout). Bounding the sleep makes
//! the next pass come within `TICK` (docs/notes/cli-webrtc.md).
//!
//! Safe for webrtc 0.20.5, where every `Runtime::sleep` is a wait that
//! re-checks when it ends: the driver's next deadline, the send-buffer
//! backstop (50 ms) and the close poll (1 ms). Check again on an upgrade.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// The longest a driver sleeps.
pub const TICK: Duration = Duration::from_millis(2);

#[derive(Debug)]
pub struct Ticking(TokioRuntime);

impl Ticking {
    pub fn runtime() -> Arc<dyn Runtime> {
        Arc::new(Ticking(TokioRuntime))
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for Ticking {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.0.spawn(future)
    }

    fn spawn_reactor(
        &self,
        size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.0.spawn_reactor(size, future)
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        self.0.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Arc<dyn AsyncTcpListener>> {
        self.0.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote: SocketAddr,
    ) -> Boxed<'a, std::io::Result<Arc<dyn AsyncTcpStream>>> {
        self.0.connect_tcp(remote)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> Boxed<'a, std::io::Result<Vec<SocketAddr>>> {
        self.0.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> Boxed<'static, ()> {
        self.0.sleep(duration.min(TICK))
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.0.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.0.block_on(future)
    }

    fn yield_now(&self) -> Boxed<'static, ()> {
        self.0.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio, ticking"
    }
}
