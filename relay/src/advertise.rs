//! What relayed address the relay hands out, and whether remote clients can
//! use it. A relay that advertises an address its clients cannot reach
//! fails silently: ICE just never finds a relayed pair. So start-up says
//! what will be advertised and warns (or refuses) when it cannot work.
//!
//! Pure: the caller supplies the address this host uses toward the
//! internet (`route`), found by the shell with a connected UDP socket.

use std::net::{IpAddr, Ipv4Addr};

/// What clients are told, in plain words for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Relayed addresses' IP, when it is the same for every client.
    pub fixed: Option<IpAddr>,
    /// One line saying what is advertised.
    pub summary: String,
    /// Why remote clients may fail to use it, and what to set.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    #[error("TURN_EXTERNAL_IP={0} cannot be advertised: it is not a unicast address")]
    NotUnicast(IpAddr),
    #[error(
        "TURN_EXTERNAL_IP={0} is IPv6 but the relay's sockets are IPv4 (TURN_LISTEN={1}): \
         give the public IPv4 address (TURN_RELAY_IPV6 is for IPv6 relaying)"
    )]
    FamilyMismatch(IpAddr, IpAddr),
}

/// An address anyone on the internet might reach (not loopback, private,
/// link-local or CGNAT).
fn is_global(ip: IpAddr) -> bool {
    // The peer policy's default is exactly "public unicast only".
    crate::peer_policy::PeerPolicy::default().allows(ip)
}

fn is_unicast(ip: IpAddr) -> bool {
    // An IPv4-mapped address is the IPv4 address it carries.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.octets()[0] == 0)
        }
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// Plan for a relay listening on `listen` with `TURN_EXTERNAL_IP` =
/// `external`; `route` is the local address toward the internet, if any.
pub fn plan(
    listen: IpAddr,
    external: Option<IpAddr>,
    route: Option<IpAddr>,
) -> Result<Plan, AdvertiseError> {
    const SET_EXTERNAL: &str = "set TURN_EXTERNAL_IP to this host's public address \
                                if clients outside that network must use the relay";
    if let Some(ip) = external {
        if !is_unicast(ip) {
            return Err(AdvertiseError::NotUnicast(ip));
        }
        if ip.is_ipv6() && listen.is_ipv4() {
            return Err(AdvertiseError::FamilyMismatch(ip, listen));
        }
        let mut warnings = Vec::new();
        if ip.is_loopback() {
            warnings.push(format!(
                "TURN_EXTERNAL_IP={ip} is loopback: only clients on this host can use the relay"
            ));
        } else if !is_global(ip) {
            warnings.push(format!(
                "TURN_EXTERNAL_IP={ip} is a private address: only clients on that network can use the relay"
            ));
        }
        return Ok(Plan {
            fixed: Some(ip),
            summary: format!("relayed addresses advertised as {ip} (TURN_EXTERNAL_IP)"),
            warnings,
        });
    }
    if !listen.is_unspecified() {
        let mut warnings = Vec::new();
        if listen.is_loopback() {
            warnings.push(format!(
                "the relay listens on loopback {listen}: only clients on this host can use it; \
                 listen on 0.0.0.0 (TURN_LISTEN) for other devices"
            ));
        } else if !is_global(listen) {
            warnings.push(format!(
                "{listen} is a private address: only clients on that network can use the relay; {SET_EXTERNAL}"
            ));
        }
        return Ok(Plan {
            fixed: Some(listen),
            summary: format!("relayed addresses advertised as {listen}, the listen address"),
            warnings,
        });
    }
    let mut warnings = Vec::new();
    let towards = match route {
        Some(ip) if is_global(ip) => format!("{ip} toward the internet"),
        Some(ip) => {
            warnings.push(format!(
                "this host reaches the internet from the private address {ip} (behind NAT): \
                 remote clients cannot reach relayed addresses on it; {SET_EXTERNAL}"
            ));
            format!("{ip} toward the internet")
        }
        None => {
            warnings.push(format!(
                "this host has no route to the internet: the relay serves clients on this host \
                 and its local networks only; {SET_EXTERNAL}"
            ));
            "no route to the internet".to_owned()
        }
    };
    Ok(Plan {
        fixed: None,
        summary: format!(
            "relay bound to the wildcard address: each client is given the local address facing it \
             ({towards}; {} for clients on this host)",
            if listen.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
        ),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_non_unicast_external_ip_is_refused() {
        for bad in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert_eq!(
                plan(ip("0.0.0.0"), Some(ip(bad)), None),
                Err(AdvertiseError::NotUnicast(ip(bad)))
            );
        }
    }

    /// TURN_EXTERNAL_IP replaces the IP of relayed addresses whose sockets
    /// are bound to TURN_LISTEN. An IPv6 one on an IPv4 relay makes every
    /// IPv4 allocation's relayed address IPv6: clients then get 443 for every
    /// IPv4 peer and nothing is ever relayed, while start-up says all is
    /// well. An IPv4-mapped form of a non-unicast address is that address.
    #[test]
    fn an_external_ip_that_cannot_be_the_relays_is_refused() {
        for bad in [
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.1",
            "::ffff:255.255.255.255",
        ] {
            assert!(
                plan(ip("0.0.0.0"), Some(ip(bad)), None).is_err(),
                "{bad} accepted"
            );
        }
        for listen in ["0.0.0.0", "198.51.100.4"] {
            assert!(
                plan(ip(listen), Some(ip("2001:db8::9")), None).is_err(),
                "IPv6 TURN_EXTERNAL_IP accepted for IPv4 relay sockets on {listen}"
            );
        }
    }

    #[test]
    fn an_external_ip_is_advertised_and_judged() {
        let p = plan(ip("0.0.0.0"), Some(ip("203.0.113.9")), Some(ip("10.0.0.2"))).unwrap();
        assert_eq!(p.fixed, Some(ip("203.0.113.9")));
        assert!(p.warnings.is_empty(), "{p:?}");
        let p = plan(ip("0.0.0.0"), Some(ip("192.168.1.5")), None).unwrap();
        assert!(p.warnings[0].contains("private"), "{p:?}");
        let p = plan(ip("0.0.0.0"), Some(ip("127.0.0.1")), None).unwrap();
        assert!(p.warnings[0].contains("only clients on this host"), "{p:?}");
    }

    #[test]
    fn a_specific_listen_address_is_advertised() {
        let p = plan(ip("127.0.0.1"), None, Some(ip("203.0.113.9"))).unwrap();
        assert_eq!(p.fixed, Some(ip("127.0.0.1")));
        assert!(p.warnings[0].contains("only clients on this host"));
        let p = plan(ip("198.51.100.4"), None, None).unwrap();
        assert!(p.warnings.is_empty());
        let p = plan(ip("10.1.1.1"), None, None).unwrap();
        assert!(p.warnings[0].contains("TURN_EXTERNAL_IP"));
    }

    #[test]
    fn the_wildcard_warns_behind_nat_and_without_a_route() {
        let public = plan(ip("0.0.0.0"), None, Some(ip("198.51.100.4"))).unwrap();
        assert_eq!(public.fixed, None);
        assert!(public.summary.contains("198.51.100.4 toward the internet"));
        assert!(public.warnings.is_empty(), "{public:?}");
        for route in [Some(ip("192.168.1.5")), Some(ip("100.64.3.3")), None] {
            let p = plan(ip("0.0.0.0"), None, route).unwrap();
            assert_eq!(p.warnings.len(), 1, "{route:?}");
            assert!(p.warnings[0].contains("TURN_EXTERNAL_IP"), "{p:?}");
        }
    }
}
