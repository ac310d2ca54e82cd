//! `GET /api/turn/credentials`: TURN REST API credentials over plain HTTP,
//! for clients and tools that want ICE servers without a signaling session.
//! They are the credentials `paired` carries (username `expiry:label`,
//! password base64 HMAC-SHA1 under TURN_SECRET), so the embedded relay, a
//! standalone tallow-relay and coturn with `use-auth-secret` accept them.
//!
//! The request is parsed and checked here, purely; the handler in `server`
//! adds the origin check and the per-address rate limit.

use serde::{Deserialize, Serialize};

use crate::ice::IceConfig;
use crate::protocol::{ErrorCode, IceServer};

/// Shortest lifetime a caller may ask for: less and a slow ICE gathering
/// outlives its own credentials.
pub const MIN_TTL_SECS: u64 = 300;
/// Longest: half a day, so a leaked credential does not stay useful.
pub const MAX_TTL_SECS: u64 = 43_200;

/// Query parameters, as the TURN REST API draft names them: `service`
/// (only `turn`), `username` (a label that ends up in relay logs) and
/// `ttl` (seconds).
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub service: Option<String>,
    pub username: Option<String>,
    pub ttl: Option<String>,
}

/// The answer: the draft's fields, and the same servers in the shape of
/// `paired`'s `ice_servers` (an RTCConfiguration `iceServers` list).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub ttl: u64,
    /// Unix time after which the relay refuses them.
    pub expires_at: u64,
    pub uris: Vec<String>,
    pub ice_servers: Vec<IceServer>,
}

/// Why a request is refused: a protocol error code and a sentence.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Refused {
    Refused {
        code: ErrorCode::BadRequest,
        message: message.into(),
    }
}

/// The lifetime asked for, or the configured one brought into range.
fn ttl(asked: Option<&str>, configured: u64) -> Result<u64, Refused> {
    let Some(asked) = asked else {
        return Ok(configured.clamp(MIN_TTL_SECS, MAX_TTL_SECS));
    };
    let secs: u64 = asked.parse().map_err(|_| {
        bad(format!(
            "ttl must be a whole number of seconds, {MIN_TTL_SECS} to {MAX_TTL_SECS}"
        ))
    })?;
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&secs) {
        return Err(bad(format!(
            "ttl {secs} is out of range: {MIN_TTL_SECS} to {MAX_TTL_SECS} seconds"
        )));
    }
    Ok(secs)
}

/// The label in the username: the caller's if it is short and plain (it
/// is logged by relays), else a random one.
fn label(asked: Option<&str>) -> Result<String, Refused> {
    match asked {
        None | Some("") => Ok(hex::encode(rand::random::<[u8; 8]>())),
        Some(l)
            if l.len() <= 64
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(l.to_owned())
        }
        Some(_) => Err(bad(
            "username must be 1 to 64 of A-Z a-z 0-9 . _ - (it is a label, not an account)",
        )),
    }
}

/// Credentials for `params` at Unix time `now`, for a client that reached
/// the server as `host_hint`.
pub fn issue(
    ice: &IceConfig,
    params: &Params,
    host_hint: Option<&str>,
    now: u64,
) -> Result<Credentials, Refused> {
    if let Some(s) = params.service.as_deref() {
        if s != "turn" {
            return Err(bad(format!("service {s:?} is not offered; only \"turn\"")));
        }
    }
    let ttl = ttl(params.ttl.as_deref(), ice.ttl_secs)?;
    let label = label(params.username.as_deref())?;
    let ice_servers = ice.servers_at(&label, host_hint, now, ttl);
    let Some(turn) = ice_servers.iter().find(|s| s.username.is_some()) else {
        return Err(Refused {
            code: ErrorCode::TurnUnavailable,
            message: "this server has no TURN relay (TURN_ENABLED is off and TURN_URLS is empty)"
                .into(),
        });
    };
    Ok(Credentials {
        username: turn.username.clone().unwrap_or_default(),
        password: turn.credential.clone().unwrap_or_default(),
        ttl,
        expires_at: now + ttl,
        uris: turn.urls.clone(),
        ice_servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::EmbeddedRelay;
    use tallow_relay::config::Secret;
    use tallow_relay::credentials;

    fn ice(embedded: bool, turn_urls: &[&str], ttl_secs: u64) -> IceConfig {
        IceConfig {
            turn_urls: turn_urls.iter().map(|s| s.to_string()).collect(),
            stun_urls: vec![],
            embedded: embedded.then_some(EmbeddedRelay {
                host: Some("192.0.2.7".parse().unwrap()),
                port: 3478,
                tls_port: None,
            }),
            secret: Secret::new("s3cret"),
            ttl_secs,
        }
    }

    fn params(service: Option<&str>, username: Option<&str>, ttl: Option<&str>) -> Params {
        Params {
            service: service.map(Into::into),
            username: username.map(Into::into),
            ttl: ttl.map(Into::into),
        }
    }

    #[test]
    fn credentials_verify_under_the_secret_and_expire_at_now_plus_ttl() {
        let now = 1_800_000_000;
        let c = issue(
            &ice(true, &[], 3600),
            &params(Some("turn"), Some("probe-1"), None),
            None,
            now,
        )
        .unwrap();
        assert_eq!(c.ttl, 3600);
        assert_eq!(c.expires_at, now + 3600);
        assert_eq!(c.username, format!("{}:probe-1", now + 3600));
        assert_eq!(
            c.password,
            credentials::password_for(b"s3cret", &c.username)
        );
        assert_eq!(
            c.uris,
            [
                "turn:192.0.2.7:3478?transport=udp",
                "turn:192.0.2.7:3478?transport=tcp"
            ]
        );
        assert_eq!(c.ice_servers[0].urls, ["stun:192.0.2.7:3478"]);
        assert_eq!(
            c.ice_servers[1].username.as_deref(),
            Some(c.username.as_str())
        );
    }

    #[test]
    fn the_lifetime_is_kept_within_300_s_to_12_h() {
        let now = 1_800_000_000;
        for (asked, want) in [(Some("300"), 300), (Some("43200"), 43_200), (None, 3600)] {
            let c = issue(&ice(true, &[], 3600), &params(None, None, asked), None, now).unwrap();
            assert_eq!(c.ttl, want, "{asked:?}");
        }
        // A configured lifetime outside the range is brought into it.
        let c = issue(&ice(true, &[], 60), &Params::default(), None, now).unwrap();
        assert_eq!(c.ttl, MIN_TTL_SECS);
        let c = issue(&ice(true, &[], 86_400), &Params::default(), None, now).unwrap();
        assert_eq!(c.ttl, MAX_TTL_SECS);
        for asked in [
            "299",
            "43201",
            "0",
            "-5",
            "1e3",
            "",
            "18446744073709551616",
            "3600s",
        ] {
            let e = issue(
                &ice(true, &[], 3600),
                &params(None, None, Some(asked)),
                None,
                now,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{asked:?}");
        }
    }

    #[test]
    fn labels_are_plain_or_random() {
        let now = 1_800_000_000;
        let c = issue(&ice(true, &[], 3600), &Params::default(), None, now).unwrap();
        let (_, label) = c.username.split_once(':').unwrap();
        assert_eq!(label.len(), 16);
        for hostile in ["a:b", "x y", "é", &"l".repeat(65), "a\nb"] {
            let e = issue(
                &ice(true, &[], 3600),
                &params(None, Some(hostile), None),
                None,
                now,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{hostile:?}");
        }
    }

    #[test]
    fn other_services_and_a_server_without_turn_are_refused() {
        let now = 1_800_000_000;
        let e = issue(
            &ice(true, &[], 3600),
            &params(Some("stun"), None, None),
            None,
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = issue(&ice(false, &[], 3600), &Params::default(), None, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::TurnUnavailable);
        // An external relay is named by TURN_URLS.
        let c = issue(
            &ice(false, &["turn:turn.example:3478?transport=udp"], 3600),
            &Params::default(),
            None,
            now,
        )
        .unwrap();
        assert_eq!(c.uris, ["turn:turn.example:3478?transport=udp"]);
    }
}
