//! Per-address accounting on one node: open connections, the upgrade rate,
//! the TURN credential rate, and failed joins (nameplate guessing) within a
//! sliding window. Seats per
//! address are counted by the presence store, which knows when a seat ends
//! even after its connection is gone. Pure: time is an argument.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::client_addr::IpKey;

#[derive(Debug, Clone, Copy)]
pub struct IpLimitsConfig {
    pub max_connections: usize,
    /// Upgrades per address per minute; also the burst.
    pub upgrades_per_min: u32,
    /// `GET /api/turn/credentials` per address per minute; also the burst.
    pub credentials_per_min: u32,
    pub max_failed_joins: usize,
    pub window: Duration,
}

/// A token bucket that refills `per_min` tokens a minute, up to `per_min`.
#[derive(Debug)]
struct PerMinute {
    tokens: f64,
    at: Instant,
}

impl PerMinute {
    /// Take a token for `ip` from `buckets`, or say how long until one.
    fn take(
        buckets: &mut HashMap<IpKey, PerMinute>,
        ip: IpKey,
        per_min: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let per_min = f64::from(per_min.max(1));
        let rate = per_min / 60.0;
        let b = buckets.entry(ip).or_insert(PerMinute {
            tokens: per_min,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(per_min);
        b.at = now;
        if b.tokens < 1.0 {
            let wait = (1.0 - b.tokens) / rate;
            return Err(Duration::from_secs_f64(wait.max(0.001)));
        }
        b.tokens -= 1.0;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Failures {
    /// When each failed join happened, oldest first.
    at: VecDeque<Instant>,
    /// Joins under way that may still fail: counted as failures until they
    /// are settled, so concurrent guesses cannot all pass the check.
    pending: usize,
}

/// Why an upgrade is refused, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooFast { retry_after: Duration },
}

#[derive(Debug)]
pub struct IpLimits {
    cfg: IpLimitsConfig,
    connections: HashMap<IpKey, usize>,
    upgrades: HashMap<IpKey, PerMinute>,
    credentials: HashMap<IpKey, PerMinute>,
    failed: HashMap<IpKey, Failures>,
}

impl IpLimits {
    pub fn new(cfg: IpLimitsConfig) -> Self {
        IpLimits {
            cfg,
            connections: HashMap::new(),
            upgrades: HashMap::new(),
            credentials: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Admit a new connection from `ip`, or say why not. An admitted
    /// connection must be released with `close_connection`.
    pub fn try_open_connection(&mut self, ip: IpKey, now: Instant) -> Result<(), Refusal> {
        let open = self.connections.get(&ip).copied().unwrap_or(0);
        if open >= self.cfg.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        PerMinute::take(&mut self.upgrades, ip, self.cfg.upgrades_per_min, now)
            .map_err(|retry_after| Refusal::TooFast { retry_after })?;
        *self.connections.entry(ip).or_insert(0) += 1;
        Ok(())
    }

    /// Admit one TURN credential request from `ip`, or say when to retry.
    pub fn try_issue_credentials(&mut self, ip: IpKey, now: Instant) -> Result<(), Duration> {
        PerMinute::take(&mut self.credentials, ip, self.cfg.credentials_per_min, now)
    }

    pub fn close_connection(&mut self, ip: IpKey) {
        if let Some(n) = self.connections.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.connections.remove(&ip);
            }
        }
    }

    /// Reserve a join attempt for `ip`: `false` when it has used up its
    /// failures. A reserved attempt must be settled with `settle_join`.
    pub fn try_reserve_join(&mut self, ip: IpKey, now: Instant) -> bool {
        let window = self.cfg.window;
        let f = self.failed.entry(ip).or_default();
        expire(f, now, window);
        if f.at.len() + f.pending >= self.cfg.max_failed_joins {
            if f.at.is_empty() && f.pending == 0 {
                self.failed.remove(&ip);
            }
            return false;
        }
        f.pending += 1;
        true
    }

    /// Settle a reserved join: a failure is remembered for the window.
    pub fn settle_join(&mut self, ip: IpKey, failed: bool, now: Instant) {
        let f = self.failed.entry(ip).or_default();
        f.pending = f.pending.saturating_sub(1);
        if failed {
            f.at.push_back(now);
        } else if f.at.is_empty() && f.pending == 0 {
            self.failed.remove(&ip);
        }
    }

    /// Drop stale records so memory stays bounded by active clients.
    pub fn sweep(&mut self, now: Instant) {
        let window = self.cfg.window;
        self.failed.retain(|_, f| {
            expire(f, now, window);
            !f.at.is_empty() || f.pending > 0
        });
        // A bucket that has refilled says nothing a fresh one would not.
        let full = Duration::from_secs(60);
        let connections = &self.connections;
        self.upgrades.retain(|ip, b| {
            connections.contains_key(ip) || now.saturating_duration_since(b.at) < full
        });
        self.credentials
            .retain(|_, b| now.saturating_duration_since(b.at) < full);
    }

    /// Addresses with state, for tests and metrics.
    pub fn tracked(&self) -> usize {
        self.connections.len() + self.upgrades.len() + self.credentials.len() + self.failed.len()
    }
}

fn expire(f: &mut Failures, now: Instant, window: Duration) {
    while f
        .at
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        f.at.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> IpKey {
        IpKey::new(s.parse().unwrap(), 64)
    }

    fn limits(max_connections: usize, upgrades_per_min: u32, max_failed: usize) -> IpLimits {
        IpLimits::new(IpLimitsConfig {
            max_connections,
            upgrades_per_min,
            credentials_per_min: 3,
            max_failed_joins: max_failed,
            window: Duration::from_secs(10),
        })
    }

    #[test]
    fn connections_are_capped_per_address_and_released() {
        let t = Instant::now();
        let (a, b) = (key("10.0.0.1"), key("10.0.0.2"));
        let mut l = limits(2, 100, 1);
        assert_eq!(l.try_open_connection(a, t), Ok(()));
        assert_eq!(l.try_open_connection(a, t), Ok(()));
        assert_eq!(
            l.try_open_connection(a, t),
            Err(Refusal::TooManyConnections)
        );
        assert_eq!(l.try_open_connection(b, t), Ok(()));
        l.close_connection(a);
        assert_eq!(l.try_open_connection(a, t), Ok(()));
    }

    #[test]
    fn upgrades_are_rate_limited_with_a_retry_time() {
        let t = Instant::now();
        let a = key("2001:db8::1");
        let mut l = limits(100, 6, 1);
        for _ in 0..6 {
            l.try_open_connection(a, t).unwrap();
            l.close_connection(a);
        }
        // Another host in the same /64 shares the budget.
        let Err(Refusal::TooFast { retry_after }) = l.try_open_connection(key("2001:db8::2"), t)
        else {
            panic!("seventh upgrade within the minute admitted");
        };
        assert_eq!(retry_after.as_secs(), 10);
        assert!(l
            .try_open_connection(a, t + Duration::from_secs(10))
            .is_ok());
    }

    #[test]
    fn credentials_have_their_own_budget_per_address() {
        let t = Instant::now();
        let (a, b) = (key("192.0.2.1"), key("192.0.2.2"));
        let mut l = limits(100, 100, 1);
        for _ in 0..3 {
            assert_eq!(l.try_issue_credentials(a, t), Ok(()));
        }
        // Three a minute: the fourth waits a third of a minute.
        assert_eq!(l.try_issue_credentials(a, t), Err(Duration::from_secs(20)));
        // Another address, and a's WebSocket upgrades, are not charged.
        assert_eq!(l.try_issue_credentials(b, t), Ok(()));
        assert_eq!(l.try_open_connection(a, t), Ok(()));
        assert_eq!(
            l.try_issue_credentials(a, t + Duration::from_secs(20)),
            Ok(())
        );
        // Full buckets are forgotten.
        l.close_connection(a);
        l.sweep(t + Duration::from_secs(200));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn reserved_joins_count_until_settled() {
        let t0 = Instant::now();
        let a = key("::1");
        let mut l = limits(1, 1, 2);
        assert!(l.try_reserve_join(a, t0));
        assert!(l.try_reserve_join(a, t0));
        // Two in flight: a third may not start, whatever they turn out to be.
        assert!(!l.try_reserve_join(a, t0));
        l.settle_join(a, false, t0);
        assert!(l.try_reserve_join(a, t0));
        l.settle_join(a, true, t0);
        l.settle_join(a, true, t0 + Duration::from_secs(1));
        assert!(!l.try_reserve_join(a, t0 + Duration::from_secs(2)));
        assert!(l.try_reserve_join(a, t0 + Duration::from_secs(10)));
        l.settle_join(a, false, t0 + Duration::from_secs(10));
        l.sweep(t0 + Duration::from_secs(20));
        assert_eq!(l.tracked(), 0);
    }
}
