//! The ICE servers handed to a paired client: STUN/TURN URLs with ephemeral
//! TURN REST API credentials that the embedded relay, a standalone
//! tallow-relay or coturn (`use-auth-secret`) accept.

use std::time::{SystemTime, UNIX_EPOCH};

use tallow_relay::config::Secret;
use tallow_relay::credentials;

use crate::protocol::IceServer;

#[derive(Debug, Clone)]
pub struct IceConfig {
    /// TURN URLs; empty when no relay is available.
    pub turn_urls: Vec<String>,
    /// STUN URLs (no credentials).
    pub stun_urls: Vec<String>,
    pub secret: Secret,
    pub ttl_secs: u64,
}

impl IceConfig {
    /// Servers for one seat of `session`. The label names the session so
    /// relay logs can be tied to it, not the user.
    pub fn servers_for(&self, session: &str) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn_urls.is_empty() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let label = session.get(..16).unwrap_or(session);
            let c = credentials::issue(self.secret.expose(), label, now, self.ttl_secs);
            out.push(IceServer {
                urls: self.turn_urls.clone(),
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
            secret: Secret::new("s3cret"),
            ttl_secs: 600,
        };
        let servers = cfg.servers_for("0123456789abcdef0123");
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
}
