//! The one typed configuration of `tallow-server`: every option is a flag
//! and an environment variable. README.md and DEVOPS.md list them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, Parser, ValueEnum};
use tallow_relay::config::TurnConfig;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "tallow-server",
    version,
    about = "Tallow signaling server with embedded TURN relay"
)]
pub struct Config {
    /// HTTP + WebSocket address.
    #[arg(long = "listen", env = "TALLOW_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Serve /metrics on this separate address instead of TALLOW_LISTEN, so
    /// that a public ingress never exposes it.
    #[arg(long = "metrics-listen", env = "TALLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Comma-separated origins allowed on /signal; unset allows any.
    #[arg(
        long = "allowed-origins",
        env = "ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Presence store; unset keeps presence in memory (single node).
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the CA that signed the Redis server's certificate, for
    /// `rediss://` URLs with a private CA (default: the webpki roots).
    #[arg(long = "redis-ca-file", env = "TALLOW_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Log output format.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Name of this node in `welcome`, logs and presence; default random.
    #[arg(long = "server-id", env = "TALLOW_SERVER_ID")]
    pub server_id: Option<String>,

    /// Directory of the web client served at /; default: `web` next to the
    /// working directory, else the one in the source tree.
    #[arg(long = "web-root", env = "TALLOW_WEB_ROOT")]
    pub web_root: Option<PathBuf>,

    /// Take the client address from the last X-Forwarded-For entry (only
    /// behind a proxy that sets it, such as the shipped nginx.conf).
    #[arg(long = "trust-forwarded-for", env = "TALLOW_TRUST_FORWARDED_FOR", default_value_t = false, action = ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Addresses and networks (CIDR) of the proxies whose X-Forwarded-For
    /// is believed when TALLOW_TRUST_FORWARDED_FOR is on; from any other
    /// peer the header is ignored.
    #[arg(
        long = "trusted-proxies",
        env = "TALLOW_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128",
        value_parser = parse_net
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Seconds to drain connections on SIGTERM/SIGINT before exiting.
    #[arg(
        long = "shutdown-timeout-secs",
        env = "TALLOW_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub shutdown_timeout_secs: u64,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub rooms: RoomLimits,

    #[command(flatten)]
    pub turn: TurnConfig,

    /// Run the embedded TURN relay.
    #[arg(long = "turn-enabled", env = "TURN_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub turn_enabled: bool,

    /// Comma-separated TURN/STUN URLs handed to clients instead of the
    /// embedded relay's (an external tallow-relay or coturn sharing TURN_SECRET).
    #[arg(long = "turn-urls", env = "TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// HTTPS on TALLOW_LISTEN, for a server with no TLS proxy in front.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain: serve HTTPS (and wss) instead of HTTP.
    #[arg(long = "tls-cert", env = "TALLOW_TLS_CERT")]
    pub cert: Option<PathBuf>,

    /// PEM private key of TALLOW_TLS_CERT.
    #[arg(long = "tls-key", env = "TALLOW_TLS_KEY")]
    pub key: Option<PathBuf>,

    /// Serve HTTPS with a certificate generated at start (for a LAN); its
    /// SHA-256 fingerprint is logged so users can check what the browser shows.
    #[arg(long = "tls-self-signed", env = "TALLOW_TLS_SELF_SIGNED", default_value_t = false, action = ArgAction::Set)]
    pub self_signed: bool,

    /// Comma-separated extra host names and IP addresses for the generated
    /// certificate (it always names localhost, 127.0.0.1, ::1, this host's
    /// name and its address toward the network).
    #[arg(long = "tls-names", env = "TALLOW_TLS_NAMES", value_delimiter = ',')]
    pub names: Vec<String>,
}

impl TlsArgs {
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert.is_some()
    }
}

#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest text frame accepted, in bytes.
    #[arg(
        long = "max-frame-bytes",
        env = "TALLOW_MAX_FRAME_BYTES",
        default_value_t = 65536
    )]
    pub max_frame_bytes: usize,

    /// Frames per second per connection (burst of one second's worth).
    #[arg(
        long = "max-messages-per-sec",
        env = "TALLOW_MAX_MESSAGES_PER_SEC",
        default_value_t = 50
    )]
    pub max_messages_per_sec: u32,

    /// Seats held at once from one address (IPv6: one prefix), counting
    /// seats whose connection dropped and that wait for a resume.
    #[arg(
        long = "max-sessions-per-ip",
        env = "TALLOW_MAX_SESSIONS_PER_IP",
        default_value_t = 20
    )]
    pub max_sessions_per_ip: usize,

    /// Failed joins per IP address within the failed-join window.
    #[arg(
        long = "max-failed-joins-per-ip",
        env = "TALLOW_MAX_FAILED_JOINS_PER_IP",
        default_value_t = 10
    )]
    pub max_failed_joins_per_ip: usize,

    /// Window for counting failed joins, in seconds.
    #[arg(
        long = "failed-join-window-secs",
        env = "TALLOW_FAILED_JOIN_WINDOW_SECS",
        default_value_t = 600
    )]
    pub failed_join_window_secs: u64,

    /// WebSocket connections one address (IPv6: one prefix) holds at once
    /// on this node; more are refused with 429 before the upgrade.
    #[arg(
        long = "max-connections-per-ip",
        env = "TALLOW_MAX_CONNECTIONS_PER_IP",
        default_value_t = 64
    )]
    pub max_connections_per_ip: usize,

    /// New WebSocket connections per address (IPv6: one prefix) per minute
    /// on this node, also the burst; more are refused with 429.
    #[arg(
        long = "max-upgrades-per-ip-per-min",
        env = "TALLOW_MAX_UPGRADES_PER_IP_PER_MIN",
        default_value_t = 60
    )]
    pub max_upgrades_per_ip_per_min: u32,

    /// `GET /api/turn/credentials` answers per address (IPv6: one prefix)
    /// per minute on this node, also the burst; more are refused with 429.
    #[arg(
        long = "turn-credentials-per-ip-per-min",
        env = "TALLOW_TURN_CREDENTIALS_PER_IP_PER_MIN",
        default_value_t = 30
    )]
    pub turn_credentials_per_ip_per_min: u32,

    /// IPv6 clients count against their address's first this many bits
    /// (a /64 is one home, office or phone).
    #[arg(
        long = "ipv6-prefix",
        env = "TALLOW_IPV6_PREFIX",
        default_value_t = 64,
        value_parser = clap::value_parser!(u8).range(1..=128)
    )]
    pub ipv6_prefix: u8,

    /// WebSocket connections this node accepts at once.
    #[arg(
        long = "max-connections",
        env = "TALLOW_MAX_CONNECTIONS",
        default_value_t = 50_000
    )]
    pub max_connections: usize,

    /// Seconds between server pings.
    #[arg(
        long = "ping-interval-secs",
        env = "TALLOW_PING_INTERVAL_SECS",
        default_value_t = 20
    )]
    pub ping_interval_secs: u64,

    /// Seconds without any frame from the client before it is closed.
    #[arg(
        long = "idle-timeout-secs",
        env = "TALLOW_IDLE_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub idle_timeout_secs: u64,

    /// Seconds an HTTP request head may take to arrive, counted from when
    /// the connection (or its last response) is ready for one; a slower or
    /// silent client is closed. WebSocket connections are not affected once
    /// upgraded.
    #[arg(
        long = "header-timeout-secs",
        env = "TALLOW_HEADER_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub header_timeout_secs: u64,

    /// Seconds a disconnected seat waits for its client to resume.
    #[arg(
        long = "resume-grace-secs",
        env = "TALLOW_RESUME_GRACE_SECS",
        default_value_t = 120
    )]
    pub resume_grace_secs: u64,

    /// Seconds an unjoined nameplate lives.
    #[arg(
        long = "nameplate-ttl-secs",
        env = "TALLOW_NAMEPLATE_TTL_SECS",
        default_value_t = 600
    )]
    pub nameplate_ttl_secs: u64,

    /// Unacknowledged messages held per seat.
    #[arg(
        long = "max-queued-messages",
        env = "TALLOW_MAX_QUEUED_MESSAGES",
        default_value_t = 1024
    )]
    pub max_queued_messages: usize,

    /// Bytes of unacknowledged message bodies held per seat.
    #[arg(
        long = "max-queued-bytes",
        env = "TALLOW_MAX_QUEUED_BYTES",
        default_value_t = 1 << 20
    )]
    pub max_queued_bytes: usize,
}

/// Rooms and nearby discovery.
#[derive(Debug, Clone, clap::Args)]
pub struct RoomLimits {
    /// Members a room holds at most (its creator may choose fewer).
    #[arg(
        long = "room-max-members",
        env = "TALLOW_ROOM_MAX_MEMBERS",
        default_value_t = 10
    )]
    pub room_max_members: usize,

    /// How long a room lives unless its creator asks for less.
    #[arg(
        long = "room-ttl-secs",
        env = "TALLOW_ROOM_TTL_SECS",
        default_value_t = 3600
    )]
    pub room_ttl_secs: u64,

    /// The longest life a creator may ask for.
    #[arg(
        long = "room-max-ttl-secs",
        env = "TALLOW_ROOM_MAX_TTL_SECS",
        default_value_t = 86400
    )]
    pub room_max_ttl_secs: u64,

    /// Named-room memberships one address holds at once (a nearby room
    /// is bounded by its size instead).
    #[arg(
        long = "max-rooms-per-ip",
        env = "TALLOW_MAX_ROOMS_PER_IP",
        default_value_t = 8
    )]
    pub max_rooms_per_ip: usize,

    /// Invitations (pairwise sessions) one member may open per minute.
    #[arg(
        long = "room-invites-per-min",
        env = "TALLOW_ROOM_INVITES_PER_MIN",
        default_value_t = 30
    )]
    pub room_invites_per_min: u32,

    /// Clients one address's nearby room shows at most.
    #[arg(
        long = "nearby-max-members",
        env = "TALLOW_NEARBY_MAX_MEMBERS",
        default_value_t = 32
    )]
    pub nearby_max_members: usize,
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a network such as 10.0.0.0/8"))
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parse flags and environment. An empty variable counts as unset, so
    /// templates (compose, Helm) may leave optional values blank. Call before
    /// any thread starts: it edits the process environment.
    pub fn load() -> Config {
        for arg in Config::command().get_arguments() {
            if let Some(name) = arg.get_env() {
                if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
                    std::env::remove_var(name);
                }
            }
        }
        let mut cfg = Config::parse();
        cfg.allowed_origins.retain(|s| !s.trim().is_empty());
        cfg.turn_urls.retain(|s| !s.trim().is_empty());
        cfg.tls.names.retain(|s| !s.trim().is_empty());
        cfg
    }

    /// Reject values that would make the server misbehave rather than fail
    /// later at a distance.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("TALLOW_MAX_FRAME_BYTES", l.max_frame_bytes as u64),
            (
                "TALLOW_MAX_MESSAGES_PER_SEC",
                u64::from(l.max_messages_per_sec),
            ),
            ("TALLOW_MAX_SESSIONS_PER_IP", l.max_sessions_per_ip as u64),
            (
                "TALLOW_MAX_FAILED_JOINS_PER_IP",
                l.max_failed_joins_per_ip as u64,
            ),
            ("TALLOW_FAILED_JOIN_WINDOW_SECS", l.failed_join_window_secs),
            ("TALLOW_MAX_CONNECTIONS", l.max_connections as u64),
            ("TALLOW_PING_INTERVAL_SECS", l.ping_interval_secs),
            ("TALLOW_IDLE_TIMEOUT_SECS", l.idle_timeout_secs),
            ("TALLOW_HEADER_TIMEOUT_SECS", l.header_timeout_secs),
            ("TALLOW_RESUME_GRACE_SECS", l.resume_grace_secs),
            ("TALLOW_NAMEPLATE_TTL_SECS", l.nameplate_ttl_secs),
            ("TALLOW_MAX_QUEUED_MESSAGES", l.max_queued_messages as u64),
            (
                "TALLOW_MAX_CONNECTIONS_PER_IP",
                l.max_connections_per_ip as u64,
            ),
            (
                "TALLOW_MAX_UPGRADES_PER_IP_PER_MIN",
                u64::from(l.max_upgrades_per_ip_per_min),
            ),
            (
                "TALLOW_TURN_CREDENTIALS_PER_IP_PER_MIN",
                u64::from(l.turn_credentials_per_ip_per_min),
            ),
            (
                "TALLOW_ROOM_MAX_MEMBERS",
                self.rooms.room_max_members as u64,
            ),
            ("TALLOW_ROOM_TTL_SECS", self.rooms.room_ttl_secs),
            ("TALLOW_ROOM_MAX_TTL_SECS", self.rooms.room_max_ttl_secs),
            (
                "TALLOW_MAX_ROOMS_PER_IP",
                self.rooms.max_rooms_per_ip as u64,
            ),
            (
                "TALLOW_ROOM_INVITES_PER_MIN",
                u64::from(self.rooms.room_invites_per_min),
            ),
            (
                "TALLOW_NEARBY_MAX_MEMBERS",
                self.rooms.nearby_max_members as u64,
            ),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError(format!("{name} must be greater than 0")));
            }
        }
        if self.rooms.room_ttl_secs > self.rooms.room_max_ttl_secs {
            return Err(ConfigError(
                "TALLOW_ROOM_TTL_SECS must not exceed TALLOW_ROOM_MAX_TTL_SECS".into(),
            ));
        }
        if self.rooms.room_max_members < 2 {
            return Err(ConfigError(
                "TALLOW_ROOM_MAX_MEMBERS must be at least 2".into(),
            ));
        }
        if l.idle_timeout_secs <= l.ping_interval_secs {
            return Err(ConfigError(
                "TALLOW_IDLE_TIMEOUT_SECS must exceed TALLOW_PING_INTERVAL_SECS, or live clients are cut off"
                    .into(),
            ));
        }
        if l.max_queued_bytes < l.max_frame_bytes {
            return Err(ConfigError(
                "TALLOW_MAX_QUEUED_BYTES must be at least TALLOW_MAX_FRAME_BYTES, or one full frame could never be queued"
                    .into(),
            ));
        }
        if l.max_frame_bytes > 16 << 20 {
            return Err(ConfigError(
                "TALLOW_MAX_FRAME_BYTES must be at most 16 MiB".into(),
            ));
        }
        for o in &self.allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(ConfigError(format!(
                    "ALLOWED_ORIGINS entry {o:?} must look like https://host[:port]"
                )));
            }
        }
        self.turn.validate().map_err(ConfigError)?;
        match (&self.tls.cert, &self.tls.key, self.tls.self_signed) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(ConfigError(
                    "TALLOW_TLS_CERT and TALLOW_TLS_KEY go together".into(),
                ))
            }
            (Some(_), Some(_), true) => {
                return Err(ConfigError(
                    "TALLOW_TLS_SELF_SIGNED and TALLOW_TLS_CERT exclude each other: pick one"
                        .into(),
                ))
            }
            _ => {}
        }
        if !self.tls.names.is_empty() && !self.tls.self_signed {
            return Err(ConfigError(
                "TALLOW_TLS_NAMES names the generated certificate: it needs TALLOW_TLS_SELF_SIGNED=true".into(),
            ));
        }
        for n in &self.tls.names {
            let ok = n.parse::<std::net::IpAddr>().is_ok()
                || (n.len() <= 253
                    && n.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }));
            if !ok {
                return Err(ConfigError(format!(
                    "TALLOW_TLS_NAMES entry {n:?} is neither a host name nor an IP address"
                )));
            }
        }
        for u in &self.turn_urls {
            if !(u.starts_with("turn:") || u.starts_with("turns:") || u.starts_with("stun:")) {
                return Err(ConfigError(format!(
                    "TURN_URLS entry {u:?} must start with turn:, turns: or stun:"
                )));
            }
        }
        // A random per-process key signs what no external relay can check.
        if self.turn.secret.is_none() && self.turn_urls.iter().any(|u| !u.starts_with("stun:")) {
            return Err(ConfigError(
                "TURN_URLS names a TURN relay: set TURN_SECRET to the secret it checks credentials with (coturn's static-auth-secret)".into(),
            ));
        }
        if let Some(id) = &self.server_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(ConfigError(
                    "TALLOW_SERVER_ID must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
                ));
            }
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError(
                    "REDIS_URL must start with redis:// or rediss://".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Limits {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }
    pub fn resume_grace(&self) -> Duration {
        Duration::from_secs(self.resume_grace_secs)
    }
    pub fn nameplate_ttl(&self) -> Duration {
        Duration::from_secs(self.nameplate_ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut v = vec!["tallow-server"];
        v.extend_from_slice(args);
        Config::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_follow_the_operator_contract() {
        let c = parse(&[]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.turn.listen.to_string(), "0.0.0.0:3478");
        assert_eq!(c.turn.realm, "tallow");
        assert_eq!(
            (c.turn.port_range.low, c.turn.port_range.high),
            (49152, 65535)
        );
        assert!(!c.turn.allow_loopback && !c.turn.allow_private);
        assert!(c.turn_enabled);
        assert!(c.redis_url.is_none() && c.allowed_origins.is_empty());
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.limits.max_frame_bytes, 65536);
        c.validate().unwrap();
    }

    #[test]
    fn an_external_relay_needs_the_shared_secret() {
        // Without TURN_SECRET the credentials are signed with a random
        // per-process key that no external relay can share: every one of
        // them would be refused.
        let url = "turn:relay.example:3478?transport=udp";
        let e = parse(&["--turn-urls", url]).validate().unwrap_err();
        assert!(e.0.contains("TURN_SECRET"), "{}", e.0);
        parse(&["--turn-urls", url, "--turn-secret", "s3cret"])
            .validate()
            .unwrap();
        // STUN needs no credentials; the embedded relay shares its process's.
        parse(&["--turn-urls", "stun:stun.example:3478"])
            .validate()
            .unwrap();
        parse(&["--turn-enabled", "true"]).validate().unwrap();
    }

    #[test]
    fn flags_parse_and_bad_values_are_refused() {
        let c = parse(&[
            "--allowed-origins",
            "https://a.example,http://localhost:8080",
            "--turn-enabled",
            "false",
            "--log-format",
            "pretty",
        ]);
        assert_eq!(c.allowed_origins.len(), 2);
        assert!(!c.turn_enabled);
        c.validate().unwrap();
        assert!(parse(&["--max-frame-bytes", "0"]).validate().is_err());
        assert!(
            parse(&["--idle-timeout-secs", "5", "--ping-interval-secs", "5"])
                .validate()
                .is_err()
        );
        assert!(parse(&["--allowed-origins", "a.example"])
            .validate()
            .is_err());
        assert!(parse(&["--redis-url", "http://x"]).validate().is_err());
        for bad in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &[
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--tls-self-signed",
                "true",
            ],
            &["--tls-names", "box.lan"],
            &["--tls-self-signed", "true", "--tls-names", "a b"],
            &["--tls-self-signed", "true", "--tls-names", "../x"],
        ] {
            assert!(parse(bad).validate().is_err(), "{bad:?}");
        }
        let ok = parse(&[
            "--tls-self-signed",
            "true",
            "--tls-names",
            "box.lan,192.168.1.5",
        ]);
        ok.validate().unwrap();
        assert!(ok.tls.enabled());
        assert!(Config::try_parse_from(["tallow-server", "--turn-port-range", "9-1"]).is_err());
    }
}
