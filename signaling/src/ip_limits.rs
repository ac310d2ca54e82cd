//! Per-IP accounting on one node: live sessions opened from an address and
//! failed joins (nameplate guessing) within a sliding window. Pure: time is
//! an argument.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct IpLimits {
    max_sessions: usize,
    max_failed_joins: usize,
    window: Duration,
    sessions: HashMap<IpAddr, usize>,
    failed: HashMap<IpAddr, VecDeque<Instant>>,
}

impl IpLimits {
    pub fn new(max_sessions: usize, max_failed_joins: usize, window: Duration) -> Self {
        IpLimits {
            max_sessions,
            max_failed_joins,
            window,
            sessions: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Reserve a session slot for `ip`; `false` when it holds the maximum.
    pub fn try_open_session(&mut self, ip: IpAddr) -> bool {
        let n = self.sessions.entry(ip).or_insert(0);
        if *n >= self.max_sessions {
            return false;
        }
        *n += 1;
        true
    }

    pub fn close_session(&mut self, ip: IpAddr) {
        if let Some(n) = self.sessions.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.sessions.remove(&ip);
            }
        }
    }

    /// Whether `ip` may try a join now (it has not used up its failures).
    pub fn may_join(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.failures_in_window(ip, now) < self.max_failed_joins
    }

    pub fn record_failed_join(&mut self, ip: IpAddr, now: Instant) {
        self.failures_in_window(ip, now);
        self.failed.entry(ip).or_default().push_back(now);
    }

    fn failures_in_window(&mut self, ip: IpAddr, now: Instant) -> usize {
        let Some(q) = self.failed.get_mut(&ip) else {
            return 0;
        };
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        let n = q.len();
        if n == 0 {
            self.failed.remove(&ip);
        }
        n
    }

    /// Drop stale failure records so memory stays bounded by active guessers.
    pub fn sweep(&mut self, now: Instant) {
        let window = self.window;
        self.failed.retain(|_, q| {
            q.retain(|t| now.saturating_duration_since(*t) < window);
            !q.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_slots_are_per_ip_and_released() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut l = IpLimits::new(2, 1, Duration::from_secs(1));
        assert!(l.try_open_session(a));
        assert!(l.try_open_session(a));
        assert!(!l.try_open_session(a));
        assert!(l.try_open_session(b));
        l.close_session(a);
        assert!(l.try_open_session(a));
    }

    #[test]
    fn failed_joins_expire_after_the_window() {
        let a: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        let mut l = IpLimits::new(1, 2, Duration::from_secs(10));
        assert!(l.may_join(a, t0));
        l.record_failed_join(a, t0);
        l.record_failed_join(a, t0 + Duration::from_secs(1));
        assert!(!l.may_join(a, t0 + Duration::from_secs(2)));
        assert!(l.may_join(a, t0 + Duration::from_secs(10)));
        l.sweep(t0 + Duration::from_secs(20));
        assert!(l.failed.is_empty());
    }
}
