//! The ICE servers handed to a paired client: STUN/TURN URLs with ephemeral
//! TURN REST API credentials that the embedded relay, a standalone
//! tallow-relay or coturn (`use-auth-secret`) accept.

use std::time::{SystemTime, UNIX_EPOCH};

use tallow_relay::config::Secret;
use tallow_relay::credentials;

use crate::protocol::IceServer;

#[derive(Debug, Clone)]
pub struct IceConfig {
    /// TURN URLs (from TURN_URLS); when empty, the embedded relay's.
    pub turn_urls: Vec<String>,
    /// STUN URLs (no credentials).
    pub stun_urls: Vec<String>,
    /// The embedded relay, if running.
    pub embedded: Option<EmbeddedRelay>,
    pub secret: Secret,
    pub ttl_secs: u64,
}

/// Where clients reach the embedded relay.
#[derive(Debug, Clone)]
pub struct EmbeddedRelay {
    /// TURN_EXTERNAL_IP, or the listen IP when it is not a wildcard.
    pub host: Option<std::net::IpAddr>,
    pub port: u16,
    /// TURN over TLS, when configured.
    pub tls_port: Option<u16>,
}

impl EmbeddedRelay {
    /// URLs for a client that reached the signaling service as `host_hint`
    /// (the hostname of its request), used when no address is configured.
    fn urls(&self, host_hint: Option<&str>) -> (Vec<String>, Vec<String>) {
        let host = match (self.host, host_hint) {
            (Some(std::net::IpAddr::V6(v6)), _) => format!("[{v6}]"),
            (Some(ip), _) => ip.to_string(),
            (None, Some(h)) => h.to_owned(),
            (None, None) => "127.0.0.1".to_owned(),
        };
        let port = self.port;
        let mut turn = vec![
            format!("turn:{host}:{port}?transport=udp"),
            format!("turn:{host}:{port}?transport=tcp"),
        ];
        if let Some(tls) = self.tls_port {
            turn.push(format!("turns:{host}:{tls}?transport=tcp"));
        }
        (vec![format!("stun:{host}:{port}")], turn)
    }
}

impl IceConfig {
    /// Servers for one seat of `session`. The label names the session so
    /// relay logs can be tied to it, not the user.
    pub fn servers_for(&self, session: &str, host_hint: Option<&str>) -> Vec<IceServer> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let label = session.get(..16).unwrap_or(session);
        self.servers_at(label, host_hint, now, self.ttl_secs)
    }

    /// Servers whose TURN credentials carry `label` and expire `ttl_secs`
    /// after Unix time `now`.
    pub fn servers_at(
        &self,
        label: &str,
        host_hint: Option<&str>,
        now: u64,
        ttl_secs: u64,
    ) -> Vec<IceServer> {
        let (stun_urls, turn_urls) = match (&self.embedded, self.turn_urls.is_empty()) {
            (Some(relay), true) => relay.urls(host_hint),
            _ => (self.stun_urls.clone(), self.turn_urls.clone()),
        };
        let mut out = Vec::new();
        if !stun_urls.is_empty() {
            out.push(IceServer {
                urls: stun_urls,
                username: None,
                credential: None,
            });
        }
        if !turn_urls.is_empty() {
            let c = credentials::issue(self.secret.expose(), label, now, ttl_secs);
            out.push(IceServer {
                urls: turn_urls,
                username: Some(c.username),
                credential: Some(c.password),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_verify_under_the_shared_secret() {
        let cfg = IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            embedded: None,
            secret: Secret::new("s3cret"),
            ttl_secs: 600,
        };
        let servers = cfg.servers_for("0123456789abcdef0123", None);
        assert_eq!(servers.len(), 2);
        let turn = &servers[1];
        let user = turn.username.as_deref().unwrap();
        assert!(user.ends_with(":0123456789abcdef"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(
            credentials::expected_password(b"s3cret", user, now).unwrap(),
            turn.credential.clone().unwrap()
        );
    }

    #[test]
    fn the_embedded_relay_is_named_by_its_address_or_the_request_host() {
        let mut cfg = IceConfig {
            turn_urls: vec![],
            stun_urls: vec![],
            embedded: Some(EmbeddedRelay {
                host: None,
                port: 3478,
                tls_port: None,
            }),
            secret: Secret::new("s"),
            ttl_secs: 60,
        };
        let s = cfg.servers_for("abc", Some("tallow.example"));
        assert_eq!(s[0].urls, ["stun:tallow.example:3478"]);
        assert_eq!(
            s[1].urls,
            [
                "turn:tallow.example:3478?transport=udp",
                "turn:tallow.example:3478?transport=tcp"
            ]
        );
        cfg.embedded = Some(EmbeddedRelay {
            host: Some("2001:db8::1".parse().unwrap()),
            port: 3478,
            tls_port: Some(5349),
        });
        let s = cfg.servers_for("abc", Some("ignored"));
        assert_eq!(s[0].urls, ["stun:[2001:db8::1]:3478"]);
        assert_eq!(s[1].urls[2], "turns:[2001:db8::1]:5349?transport=tcp");
        // TURN_URLS wins over the embedded relay.
        cfg.turn_urls = vec!["turn:coturn.example:3478".into()];
        let s = cfg.servers_for("abc", None);
        assert_eq!(s[0].urls, ["turn:coturn.example:3478"]);
    }
}
