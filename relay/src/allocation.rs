//! One TURN allocation: its relayed address, credentials, lifetime,
//! permissions, channel bindings and bandwidth budget. Pure data with time
//! passed in. Lists are small vectors: a browser's allocation talks to one or
//! two peers, where a linear scan beats hashing.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_codec::TransactionId;

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The client side of an allocation's 5-tuple. For TCP, `addr` is the
/// connection's remote address, unique per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// The shell's handle of a relay socket.
pub type RelayId = u32;

pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

/// Bytes per second with a one-second burst; 0 disables the cap.
#[derive(Debug)]
pub struct ByteBucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl ByteBucket {
    pub fn new(rate: u64, now: Instant) -> Self {
        ByteBucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    pub fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed >= Duration::from_millis(1) {
            let refill = (self.rate as u128 * elapsed.as_micros() / 1_000_000) as u64;
            self.tokens = (self.tokens + refill).min(self.rate);
            self.last = now;
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub struct Allocation {
    pub client: ClientAddr,
    pub relay: RelayId,
    /// The address peers send to (advertised; external IP when configured).
    pub relayed: SocketAddr,
    pub username: String,
    /// The REST-API password for `username`, to sign responses.
    pub password: String,
    /// The Allocate transaction, to answer its retransmissions.
    pub txid: TransactionId,
    pub expires: Instant,
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
    pub bucket: ByteBucket,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ChannelConflict;

impl Allocation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: ClientAddr,
        relay: RelayId,
        relayed: SocketAddr,
        username: String,
        password: String,
        txid: TransactionId,
        expires: Instant,
        bandwidth: u64,
        now: Instant,
    ) -> Self {
        Allocation {
            client,
            relay,
            relayed,
            username,
            password,
            txid,
            expires,
            permissions: Vec::new(),
            channels: Vec::new(),
            bucket: ByteBucket::new(bandwidth, now),
        }
    }

    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.iter().any(|(p, t)| *p == ip && *t > now)
    }

    pub fn permit(&mut self, ip: IpAddr, now: Instant) {
        let until = now + PERMISSION_LIFETIME;
        match self.permissions.iter_mut().find(|(p, _)| *p == ip) {
            Some(slot) => slot.1 = until,
            None => self.permissions.push((ip, until)),
        }
    }

    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
            .map(|c| c.peer)
    }

    pub fn channel_for(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }

    /// Bind or refresh `number` to `peer`. A number bound to another peer,
    /// or a peer bound to another number, is a conflict (400).
    pub fn bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), ChannelConflict> {
        let until = now + CHANNEL_LIFETIME;
        for c in &mut self.channels {
            let live = c.expires > now;
            if c.number == number && c.peer == peer {
                c.expires = until;
                return Ok(());
            }
            if live && (c.number == number || c.peer == peer) {
                return Err(ChannelConflict);
            }
        }
        self.channels.retain(|c| c.expires > now);
        self.channels.push(Channel {
            number,
            peer,
            expires: until,
        });
        Ok(())
    }

    /// Forget expired permissions and channels.
    pub fn prune(&mut self, now: Instant) {
        self.permissions.retain(|(_, t)| *t > now);
        self.channels.retain(|c| c.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(now: Instant) -> Allocation {
        Allocation::new(
            ClientAddr {
                transport: Transport::Udp,
                addr: "192.0.2.1:5000".parse().unwrap(),
            },
            1,
            "203.0.113.1:50000".parse().unwrap(),
            "u".into(),
            "p".into(),
            TransactionId::new([0; 12]),
            now + Duration::from_secs(600),
            1000,
            now,
        )
    }

    #[test]
    fn permissions_and_channels_expire() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let peer: SocketAddr = "198.51.100.1:7000".parse().unwrap();
        assert!(!a.permitted(peer.ip(), t0));
        a.permit(peer.ip(), t0);
        assert!(a.permitted(peer.ip(), t0 + Duration::from_secs(299)));
        assert!(!a.permitted(peer.ip(), t0 + PERMISSION_LIFETIME));
        a.bind(0x4000, peer, t0).unwrap();
        assert_eq!(a.channel_peer(0x4000, t0), Some(peer));
        assert_eq!(a.channel_for(peer, t0), Some(0x4000));
        assert_eq!(a.channel_peer(0x4000, t0 + CHANNEL_LIFETIME), None);
    }

    #[test]
    fn channel_conflicts_are_refused_and_rebinds_refresh() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let p1: SocketAddr = "198.51.100.1:7000".parse().unwrap();
        let p2: SocketAddr = "198.51.100.2:7000".parse().unwrap();
        a.bind(0x4000, p1, t0).unwrap();
        assert_eq!(a.bind(0x4000, p2, t0), Err(ChannelConflict));
        assert_eq!(a.bind(0x4001, p1, t0), Err(ChannelConflict));
        let later = t0 + Duration::from_secs(500);
        a.bind(0x4000, p1, later).unwrap();
        assert_eq!(a.channel_peer(0x4000, t0 + CHANNEL_LIFETIME), Some(p1));
        // Once expired, the number may go to another peer.
        let much_later = later + CHANNEL_LIFETIME;
        a.bind(0x4000, p2, much_later).unwrap();
    }

    #[test]
    fn the_byte_bucket_caps_bandwidth() {
        let t0 = Instant::now();
        let mut b = ByteBucket::new(1000, t0);
        assert!(b.admit(600, t0));
        assert!(!b.admit(600, t0));
        assert!(b.admit(400, t0));
        assert!(b.admit(500, t0 + Duration::from_millis(500)));
        assert!(!b.admit(1, t0 + Duration::from_millis(500)));
        let mut free = ByteBucket::new(0, t0);
        assert!(free.admit(usize::MAX, t0));
    }
}
