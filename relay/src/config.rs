//! TURN settings shared by `tallow-server` (embedded relay and the ICE
//! servers it hands out) and the standalone relay. Names follow the operator
//! contract in DESIGN.md.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use clap::{ArgAction, Args};

/// The REST API shared secret. Never printed: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// A fresh 256-bit secret, for a process that was given none.
    pub fn random() -> Self {
        Secret(hex::encode(rand::random::<[u8; 32]>()))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("TURN_SECRET must not be empty".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

/// Inclusive relay port range, `LOW-HIGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("port range {s:?} is not LOW-HIGH with 1 <= LOW <= HIGH <= 65535");
        let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
        let low: u16 = lo.trim().parse().map_err(|_| bad())?;
        let high: u16 = hi.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(PortRange { low, high })
    }
}

#[derive(Debug, Clone, Args)]
pub struct TurnConfig {
    /// TURN/STUN address (UDP and TCP).
    #[arg(
        id = "turn_listen",
        value_name = "ADDR",
        long = "turn-listen",
        env = "TURN_LISTEN",
        default_value = "0.0.0.0:3478"
    )]
    pub listen: SocketAddr,

    /// TURN REST API shared secret. Unset: random per process, so only this
    /// process's own relay accepts the credentials it hands out.
    #[arg(
        id = "turn_secret",
        value_name = "SECRET",
        long = "turn-secret",
        env = "TURN_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<Secret>,

    /// TURN realm.
    #[arg(
        id = "turn_realm",
        value_name = "REALM",
        long = "turn-realm",
        env = "TURN_REALM",
        default_value = "tallow"
    )]
    pub realm: String,

    /// Relayed address advertised to clients (host behind 1:1 NAT).
    #[arg(
        id = "turn_external_ip",
        value_name = "IP",
        long = "turn-external-ip",
        env = "TURN_EXTERNAL_IP"
    )]
    pub external_ip: Option<IpAddr>,

    /// Relay ports, LOW-HIGH.
    #[arg(
        id = "turn_port_range",
        value_name = "LOW-HIGH",
        long = "turn-port-range",
        env = "TURN_PORT_RANGE",
        default_value = "49152-65535"
    )]
    pub port_range: PortRange,

    /// Permit relaying to loopback peers (tests, local development).
    #[arg(id = "turn_allow_loopback", value_name = "BOOL", value_name = "BOOL", long = "turn-allow-loopback", env = "TURN_ALLOW_LOOPBACK", default_value_t = false, action = ArgAction::Set)]
    pub allow_loopback: bool,

    /// Permit relaying to private (RFC 1918, fc00::/7) peers.
    #[arg(id = "turn_allow_private", value_name = "BOOL", value_name = "BOOL", long = "turn-allow-private", env = "TURN_ALLOW_PRIVATE", default_value_t = false, action = ArgAction::Set)]
    pub allow_private: bool,

    /// Allocations one TURN username may hold at once (486 beyond).
    #[arg(
        id = "turn_user_quota",
        value_name = "N",
        long = "turn-user-quota",
        env = "TURN_USER_QUOTA",
        default_value_t = 10
    )]
    pub user_quota: usize,

    /// Allocations this relay holds at once (486 beyond).
    #[arg(
        id = "turn_total_quota",
        value_name = "N",
        long = "turn-total-quota",
        env = "TURN_TOTAL_QUOTA",
        default_value_t = 10_000
    )]
    pub total_quota: usize,

    /// Bytes per second one allocation may relay, both directions; 0 = no cap.
    #[arg(
        id = "turn_max_bytes_per_sec",
        value_name = "BYTES",
        long = "turn-max-bytes-per-sec",
        env = "TURN_MAX_BYTES_PER_SEC",
        default_value_t = 12_500_000
    )]
    pub max_bytes_per_sec: u64,

    /// IPv6 address to bind IPv6 relayed addresses on (enables them).
    #[arg(
        id = "turn_relay_ipv6",
        value_name = "IPV6",
        long = "turn-relay-ipv6",
        env = "TURN_RELAY_IPV6"
    )]
    pub relay_ipv6: Option<std::net::Ipv6Addr>,

    /// Seconds a nonce stays valid before a request gets 438 (Stale Nonce).
    #[arg(
        id = "turn_nonce_lifetime_secs",
        value_name = "SECS",
        long = "turn-nonce-lifetime-secs",
        env = "TURN_NONCE_LIFETIME_SECS",
        default_value_t = 600
    )]
    pub nonce_lifetime_secs: u64,

    /// TURN over TLS (`turns:`) on this address, with TURN_TLS_CERT and
    /// TURN_TLS_KEY; unset: no TLS listener.
    #[arg(id = "turn_tls_listen", value_name = "ADDR", long = "turn-tls-listen", env = "TURN_TLS_LISTEN", requires_all = ["turn_tls_cert", "turn_tls_key"])]
    pub tls_listen: Option<SocketAddr>,

    /// PEM certificate chain for TURN over TLS.
    #[arg(
        id = "turn_tls_cert",
        value_name = "PEM",
        long = "turn-tls-cert",
        env = "TURN_TLS_CERT"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for TURN over TLS.
    #[arg(
        id = "turn_tls_key",
        value_name = "PEM",
        long = "turn-tls-key",
        env = "TURN_TLS_KEY"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Lifetime of the TURN credentials handed out, in seconds.
    #[arg(
        id = "turn_credential_ttl_secs",
        value_name = "SECS",
        long = "turn-credential-ttl-secs",
        env = "TURN_CREDENTIAL_TTL_SECS",
        default_value_t = 3600
    )]
    pub credential_ttl_secs: u64,
}

impl TurnConfig {
    /// Settings that cannot work, named by their variable.
    pub fn validate(&self) -> Result<(), String> {
        crate::advertise::plan(self.listen.ip(), self.external_ip, None)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The relay's configuration, with the secret the process settled on.
    pub fn relay_config(&self, secret: Secret) -> crate::event_loop::RelayConfig {
        let mut core = crate::core::CoreConfig::new(self.realm.clone(), secret);
        core.policy = crate::peer_policy::PeerPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private,
        };
        core.external_ip = self.external_ip;
        core.user_quota = self.user_quota;
        core.total_quota = self.total_quota;
        core.bandwidth = self.max_bytes_per_sec;
        core.nonce_lifetime_secs = self.nonce_lifetime_secs.max(1);
        crate::event_loop::RelayConfig {
            listen: self.listen,
            port_range: self.port_range,
            relay_ipv6: self.relay_ipv6,
            tls: match (self.tls_listen, &self.tls_cert, &self.tls_key) {
                (Some(listen), Some(cert), Some(key)) => Some(crate::event_loop::TlsConfig {
                    listen,
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            core,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_strictly() {
        assert_eq!(
            "49152-65535".parse::<PortRange>(),
            Ok(PortRange {
                low: 49152,
                high: 65535
            })
        );
        for bad in ["", "5", "0-10", "10-5", "1-70000", "a-b"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_ne!(Secret::random(), Secret::random());
    }
}
