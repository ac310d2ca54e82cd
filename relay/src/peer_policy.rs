//! Which peer addresses a relay may send to. A TURN server is an open proxy
//! from the inside of its network unless it refuses internal destinations;
//! by default everything but public unicast is refused (403).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    pub allow_loopback: bool,
    /// RFC 1918, CGNAT (100.64/10), fc00::/7, and link-local (169.254/16,
    /// including cloud metadata at 169.254.169.254, and fe80::/10).
    pub allow_private: bool,
}

impl PeerPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match ip {
            IpAddr::V4(v4) => self.allows_v4(v4),
            IpAddr::V6(v6) => self.allows_v6(v6),
        }
    }

    fn allows_v4(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || o[0] == 0 || o[0] >= 240
        {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        let cgnat = o[0] == 100 && (o[1] & 0xc0) == 64;
        if ip.is_private() || ip.is_link_local() || cgnat {
            return self.allow_private;
        }
        true
    }

    fn allows_v6(&self, ip: Ipv6Addr) -> bool {
        let seg0 = ip.segments()[0];
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        let unique_local = (seg0 & 0xfe00) == 0xfc00;
        let link_local = (seg0 & 0xffc0) == 0xfe80;
        if unique_local || link_local {
            return self.allow_private;
        }
        true
    }
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses are their IPv4 address:
/// `::ffff:127.0.0.1` is loopback.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn by_default_only_public_unicast_is_allowed() {
        let p = PeerPolicy::default();
        for ok in ["8.8.8.8", "198.51.100.7", "2001:4860:4860::8888"] {
            assert!(p.allows(ip(ok)), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "ff02::1",
        ] {
            assert!(!p.allows(ip(bad)), "{bad}");
        }
    }

    #[test]
    fn loopback_and_private_open_separately() {
        let lo = PeerPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        assert!(lo.allows(ip("127.0.0.1")) && lo.allows(ip("::1")));
        assert!(lo.allows(ip("::ffff:127.0.0.1")));
        assert!(!lo.allows(ip("10.0.0.1")));
        let private = PeerPolicy {
            allow_loopback: false,
            allow_private: true,
        };
        assert!(private.allows(ip("10.0.0.1")) && private.allows(ip("fd00::1")));
        assert!(!private.allows(ip("127.0.0.1")));
        // Never, whatever the settings.
        let all = PeerPolicy {
            allow_loopback: true,
            allow_private: true,
        };
        for bad in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert!(!all.allows(ip(bad)), "{bad}");
        }
    }
}
