//! Who a client is, for per-address limits: its IP as the server sees it
//! (or as a trusted proxy reports it), and the key that limits count by.
//! IPv6 hosts get whole prefixes from their provider (a /64 per home or
//! phone), so counting single IPv6 addresses would let one host take as many
//! slots as it likes. Pure functions.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;

/// The address that limits count against: an IPv4 address, or an IPv6
/// address cut to the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpKey {
    V4(std::net::Ipv4Addr),
    V6 { net: Ipv6Addr, prefix: u8 },
}

impl IpKey {
    /// The key of `ip` when IPv6 addresses are counted by `/v6_prefix`.
    /// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
    pub fn new(ip: IpAddr, v6_prefix: u8) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(v4),
                None => {
                    let prefix = v6_prefix.clamp(1, 128);
                    let mask = u128::MAX << (128 - u32::from(prefix));
                    IpKey::V6 {
                        net: Ipv6Addr::from(u128::from(v6) & mask),
                        prefix,
                    }
                }
            },
        }
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpKey::V4(v4) => write!(f, "{v4}"),
            IpKey::V6 { net, prefix } => write!(f, "{net}/{prefix}"),
        }
    }
}

impl std::str::FromStr for IpKey {
    type Err = std::net::AddrParseError;

    /// Back from [`IpKey`]'s text (as stored with a room membership).
    fn from_str(s: &str) -> Result<IpKey, Self::Err> {
        match s.split_once('/') {
            Some((net, prefix)) => Ok(IpKey::V6 {
                net: net.parse()?,
                prefix: prefix.parse().unwrap_or(128),
            }),
            None => Ok(IpKey::V4(s.parse()?)),
        }
    }
}

/// The client's address: the socket peer, or, when that peer is one of the
/// `trusted` proxies, the last `X-Forwarded-For` entry (with or without a
/// port), which is the one that proxy appended. Entries before it are whatever the client sent, so
/// they are never used: if the last one does not parse, the proxy's own
/// address is the answer. From any other peer the header is ignored.
pub fn client_ip(trusted: &[ipnet::IpNet], remote: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = match remote {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(remote, IpAddr::V4),
        v4 => v4,
    };
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return remote;
    }
    // Bytes, not `to_str`: a non-ASCII byte the client put in its own part
    // of the header must not spoil the entry the proxy appended.
    let Some(last) = headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
    else {
        return remote;
    };
    std::str::from_utf8(last)
        .ok()
        .and_then(|s| forwarded_addr(s.trim()))
        .unwrap_or(remote)
}

/// An `X-Forwarded-For` entry's address: a bare address, or one with a port
/// as some proxies write it (`198.51.100.1:52731`, `[2001:db8::5]:52731`),
/// or a bracketed IPv6 address.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn ipv6_is_keyed_by_prefix_and_mapped_ipv4_by_its_address() {
        let k = |s: &str, p| IpKey::new(s.parse().unwrap(), p).to_string();
        assert_eq!(k("2001:db8:1:2::1", 64), "2001:db8:1:2::/64");
        assert_eq!(k("2001:db8:1:2:ffff::9", 64), "2001:db8:1:2::/64");
        assert_ne!(k("2001:db8:1:3::1", 64), k("2001:db8:1:2::1", 64));
        assert_eq!(k("2001:db8:1:2::1", 128), "2001:db8:1:2::1/128");
        assert_eq!(k("2001:db8:ff::1", 48), "2001:db8:ff::/48");
        assert_eq!(k("::ffff:198.51.100.7", 64), "198.51.100.7");
        assert_eq!(k("198.51.100.7", 64), "198.51.100.7");
        // Out-of-range prefixes are clamped rather than panicking.
        assert_eq!(k("2001:db8::1", 0), "::/1");
        assert_eq!(k("2001:db8::1", 200), "2001:db8::1/128");
    }

    #[test]
    fn only_the_last_forwarded_entry_counts() {
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |h: &HeaderMap| client_ip(&proxies, remote, h);
        assert_eq!(
            ip(&headers(&["198.51.100.1"])),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip(&headers(&["203.0.113.9, 198.51.100.1"])),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip(&headers(&["203.0.113.9", "198.51.100.1"])),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // A garbled last entry: the proxy's address, never the client's pick.
        assert_eq!(ip(&headers(&["203.0.113.9, not-an-ip"])), remote);
        assert_eq!(ip(&headers(&["203.0.113.9", ""])), remote);
        assert_eq!(ip(&HeaderMap::new()), remote);
        // Non-ASCII bytes in the client's part change nothing.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xc3\xa9, 198.51.100.1").unwrap(),
        );
        assert_eq!(ip(&h), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&[], remote, &headers(&["198.51.100.1"])), remote);
    }

    #[test]
    fn a_forwarded_entry_with_a_port_is_the_address_it_names() {
        // Some proxies (Azure Application Gateway, for one) append
        // `address:port`. Taken for garbage, every client behind such a
        // proxy would count as the proxy: one address for all the limits,
        // and one nearby room for everyone.
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |v: &str| client_ip(&proxies, remote, &headers(&[v])).to_string();
        assert_eq!(ip("198.51.100.1:52731"), "198.51.100.1");
        assert_eq!(ip("203.0.113.9, 198.51.100.1:443"), "198.51.100.1");
        assert_eq!(ip("[2001:db8::5]:52731"), "2001:db8::5");
        assert_eq!(ip("[2001:db8::5]"), "2001:db8::5");
        assert_eq!(ip("198.51.100.1:notaport"), "10.0.0.1");
        assert_eq!(ip("[2001:db8::5"), "10.0.0.1");
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxies: Vec<ipnet::IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "2001:db8::7/128".parse().unwrap(),
        ];
        let h = headers(&["198.51.100.1"]);
        let via = |r: &str| client_ip(&proxies, r.parse().unwrap(), &h).to_string();
        assert_eq!(via("127.0.0.1"), "198.51.100.1");
        assert_eq!(via("::ffff:127.0.0.1"), "198.51.100.1");
        assert_eq!(via("2001:db8::7"), "198.51.100.1");
        assert_eq!(via("2001:db8::8"), "2001:db8::8");
        assert_eq!(via("192.0.2.4"), "192.0.2.4");
    }

    #[test]
    fn keys_read_back_from_their_text() {
        for s in ["198.51.100.7", "2001:db8:1:2::/64"] {
            assert_eq!(s.parse::<IpKey>().unwrap().to_string(), s);
        }
        assert!("nonsense".parse::<IpKey>().is_err());
    }
}
