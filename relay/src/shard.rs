//! One relay, several shards: what the shards share and how they split the
//! work.
//!
//! - N shards (`TURN_THREADS`, 0 = one per core), each a mio event loop on
//!   its own thread with its own [`Core`](crate::core::Core). A shard owns
//!   its allocations outright: their state, relay sockets and TCP
//!   connections are touched by that thread only, so the data path takes no
//!   lock.
//! - Listeners (UDP, TCP, TLS) are one socket per shard on the same port,
//!   shared through SO_REUSEPORT. The kernel hashes a UDP datagram's 4-tuple
//!   to pick the socket, so a client's 5-tuple always lands on the same
//!   shard (while the group does not change, i.e. for the relay's life);
//!   a TCP connection stays with the shard that accepted it. Before the
//!   group is bound, one probe socket without SO_REUSEPORT binds the port:
//!   a port held by another process (even one that set SO_REUSEPORT itself)
//!   is refused there instead of being silently shared.
//! - Relay ports are partitioned: port pair `(p - LOW) / 2` belongs to shard
//!   `pair % N` ([`Shared::owner`]), so the shard a peer datagram arrives on
//!   (the one holding that relay socket) is the allocation's own shard, and
//!   any shard can tell which shard owns a relayed address from its port.
//!   Pairs keep EVEN-PORT allocations possible on every shard. With a small
//!   range and many shards a shard may run short of ports while others have
//!   some (DEVOPS.md); shards are capped at the number of pairs.
//! - A client on shard A sending to a relayed address of shard B (both
//!   browsers of a transfer on this relay, on different shards) hands the
//!   packet to B through B's bounded lock-free queue and wakes B's poll
//!   ([`Io::send_to_shard`](crate::core::Io::send_to_shard), then
//!   [`Core::on_shard`](crate::core::Core::on_shard) on B). A full queue
//!   drops the packet and counts it, as a full socket buffer would.
//! - Shared, behind one mutex touched only on allocate, free, CreatePermission
//!   and ChannelBind (never per packet): the quota counters (per user and in
//!   total), the live relayed addresses and the relayed IPs in use. Shards
//!   cache the IP list and re-read it only when its generation changes.
//! - One nonce key for every shard, so a nonce issued on one is valid on all
//!   (a TCP client reconnecting may land elsewhere).
//! - Metrics are shared atomics, so the exported series are the relay's
//!   totals; the per-packet ones are counted in the core and added once per
//!   batch, so shards do not contend for them per packet.
//!   `tallow_turn_shard_allocations{shard}` shows the spread.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::config::PortRange;

/// What every shard of one relay shares.
pub struct Shared {
    shards: usize,
    ports: PortRange,
    nonce_key: [u8; 32],
    ledger: Mutex<Ledger>,
    /// Bumped whenever the set of relayed IPs changes.
    ips_generation: AtomicU64,
}

#[derive(Default)]
struct Ledger {
    live: usize,
    per_user: HashMap<String, usize>,
    relayed: HashSet<SocketAddr>,
    ips: Vec<(IpAddr, usize)>,
}

/// Why an allocation may not be counted.
#[derive(Debug, PartialEq, Eq)]
pub struct OverQuota;

impl Shared {
    /// `shards` shards over relay ports `ports`, one random nonce key.
    pub fn new(shards: usize, ports: PortRange) -> Self {
        Self::with_nonce_key(shards, ports, rand::random())
    }

    pub fn with_nonce_key(shards: usize, ports: PortRange, nonce_key: [u8; 32]) -> Self {
        Shared {
            shards: shards.max(1),
            ports,
            nonce_key,
            ledger: Mutex::new(Ledger::default()),
            ips_generation: AtomicU64::new(0),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn nonce_key(&self) -> [u8; 32] {
        self.nonce_key
    }

    /// The shard owning relay port `port`; None outside the range.
    pub fn owner(&self, port: u16) -> Option<usize> {
        if port < self.ports.low || port > self.ports.high {
            return None;
        }
        Some(usize::from((port - self.ports.low) / 2) % self.shards)
    }

    /// Whether shard `shard` owns `port`.
    pub fn owns(&self, shard: usize, port: u16) -> bool {
        self.owner(port) == Some(shard)
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic elsewhere cannot leave the counters half-updated: every
        // update below completes before the guard drops.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one more allocation for `user`, unless that goes over either
    /// quota (0: no limit). Undo with [`Shared::release`].
    pub fn reserve(
        &self,
        user: &str,
        user_quota: usize,
        total_quota: usize,
    ) -> Result<(), OverQuota> {
        let mut l = self.ledger();
        let mine = l.per_user.get(user).copied().unwrap_or(0);
        if over(l.live, total_quota) || over(mine, user_quota) {
            return Err(OverQuota);
        }
        l.live += 1;
        *l.per_user.entry(user.to_owned()).or_insert(0) += 1;
        Ok(())
    }

    /// Give back what [`Shared::reserve`] counted.
    pub fn release(&self, user: &str) {
        let mut l = self.ledger();
        l.live = l.live.saturating_sub(1);
        if let Some(n) = l.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                l.per_user.remove(user);
            }
        }
    }

    /// Allocations live on every shard.
    pub fn live(&self) -> usize {
        self.ledger().live
    }

    /// A relayed address came into use.
    pub fn add_relayed(&self, addr: SocketAddr) {
        let mut l = self.ledger();
        l.relayed.insert(addr);
        match l.ips.iter_mut().find(|(ip, _)| *ip == addr.ip()) {
            Some(entry) => entry.1 += 1,
            None => {
                l.ips.push((addr.ip(), 1));
                self.ips_generation.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// A relayed address was released.
    pub fn remove_relayed(&self, addr: SocketAddr) {
        let mut l = self.ledger();
        l.relayed.remove(&addr);
        if let Some(pos) = l.ips.iter().position(|(ip, _)| *ip == addr.ip()) {
            l.ips[pos].1 -= 1;
            if l.ips[pos].1 == 0 {
                l.ips.swap_remove(pos);
                self.ips_generation.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Whether `addr` is a live relayed address of any shard.
    pub fn is_relayed(&self, addr: SocketAddr) -> bool {
        self.ledger().relayed.contains(&addr)
    }

    /// The generation of the relayed IP set: one atomic load, for shards to
    /// notice a change without the lock.
    pub fn ips_generation(&self) -> u64 {
        self.ips_generation.load(Ordering::Acquire)
    }

    /// The relayed IPs in use, and the generation they belong to.
    pub fn relayed_ips(&self, out: &mut Vec<IpAddr>) -> u64 {
        let l = self.ledger();
        out.clear();
        out.extend(l.ips.iter().map(|(ip, _)| *ip));
        self.ips_generation.load(Ordering::Acquire)
    }
}

/// Whether `held` allocations leave no room under `quota` (0: no limit).
pub fn over(held: usize, quota: usize) -> bool {
    quota != 0 && held >= quota
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(low: u16, high: u16) -> PortRange {
        PortRange { low, high }
    }

    #[test]
    fn ports_are_split_by_pairs_and_every_shard_gets_some() {
        let s = Shared::new(3, range(50001, 50012));
        let owners: Vec<_> = (50001..=50012).map(|p| s.owner(p).unwrap()).collect();
        assert_eq!(owners, [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
        assert_eq!(s.owner(50000), None);
        assert_eq!(s.owner(50013), None);
        // Every shard has an even port for EVEN-PORT.
        for shard in 0..3 {
            assert!((50001..=50012).any(|p| p % 2 == 0 && s.owns(shard, p)));
        }
        let one = Shared::new(1, range(1000, 1003));
        assert!((1000..=1003).all(|p| one.owns(0, p)));
    }

    #[test]
    fn quotas_count_across_callers_and_zero_is_no_limit() {
        let s = Shared::new(2, range(50000, 50099));
        assert_eq!(s.reserve("a", 2, 3), Ok(()));
        assert_eq!(s.reserve("a", 2, 3), Ok(()));
        assert_eq!(s.reserve("a", 2, 3), Err(OverQuota));
        assert_eq!(s.reserve("b", 2, 3), Ok(()));
        assert_eq!(s.reserve("c", 2, 3), Err(OverQuota));
        s.release("a");
        assert_eq!(s.live(), 2);
        assert_eq!(s.reserve("c", 2, 3), Ok(()));
        for _ in 0..100 {
            s.reserve("d", 0, 0).unwrap();
        }
        assert_eq!(s.live(), 103);
    }

    #[test]
    fn the_ip_generation_moves_only_when_the_ip_set_does() {
        let s = Shared::new(2, range(50000, 50099));
        let a: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:50002".parse().unwrap();
        let g0 = s.ips_generation();
        s.add_relayed(a);
        let g1 = s.ips_generation();
        assert_ne!(g0, g1);
        s.add_relayed(b);
        assert_eq!(s.ips_generation(), g1);
        assert!(s.is_relayed(b));
        s.remove_relayed(a);
        assert_eq!(s.ips_generation(), g1);
        s.remove_relayed(b);
        assert!(!s.is_relayed(b));
        let mut ips = Vec::new();
        assert_eq!(s.relayed_ips(&mut ips), s.ips_generation());
        assert!(ips.is_empty());
    }
}
