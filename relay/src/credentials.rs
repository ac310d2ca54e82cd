//! Ephemeral TURN credentials in the TURN REST API form.
//!
//! username = `<expiry unix seconds>:<label>` (or the bare timestamp)
//! password = base64(HMAC-SHA1(shared secret, username))
//!
//! The relay recomputes the password from the username, so no state is
//! shared between the service that hands credentials out and the relay that
//! checks them beyond the secret itself.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// A credential pair handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// Unix time (seconds) after which the relay refuses it.
    pub expires_at: u64,
}

/// Why a username was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("username is not of the form <expiry>:<label>")]
    Malformed,
    #[error("credential expired at {0}")]
    Expired(u64),
}

/// Password for `username` under `secret`.
pub fn password_for(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Issue a credential for `label` valid for `ttl_secs` from `now_unix`.
pub fn issue(secret: &[u8], label: &str, now_unix: u64, ttl_secs: u64) -> Credential {
    let expires_at = now_unix.saturating_add(ttl_secs);
    let username = format!("{expires_at}:{label}");
    let password = password_for(secret, &username);
    Credential {
        username,
        password,
        expires_at,
    }
}

/// Check that `username` is well formed and not expired at `now_unix`;
/// returns the password the client must have used. Password comparison is
/// left to the caller because TURN checks it through MESSAGE-INTEGRITY.
pub fn expected_password(
    secret: &[u8],
    username: &str,
    now_unix: u64,
) -> Result<String, CredentialError> {
    // The timestamp is what precedes the first ':' (labels may hold ':'), or
    // the whole username when there is no label, as coturn accepts too.
    let expiry = username.split_once(':').map_or(username, |(e, _)| e);
    let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if expiry <= now_unix {
        return Err(CredentialError::Expired(expiry));
    }
    Ok(password_for(secret, username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // HMAC-SHA1("secret", "1700000000:alice"), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        assert_eq!(
            password_for(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn issued_credentials_verify_until_expiry() {
        let c = issue(b"k", "session-1", 1_000, 60);
        assert_eq!(c.username, "1060:session-1");
        assert_eq!(
            expected_password(b"k", &c.username, 1_059).unwrap(),
            c.password
        );
        assert_eq!(
            expected_password(b"k", &c.username, 1_060),
            Err(CredentialError::Expired(1060))
        );
        assert_ne!(
            expected_password(b"other", &c.username, 1_000).unwrap(),
            c.password
        );
    }

    #[test]
    fn a_bare_timestamp_is_a_username_too() {
        let pw = expected_password(b"k", "2000", 1_000).unwrap();
        assert_eq!(pw, password_for(b"k", "2000"));
    }

    #[test]
    fn malformed_usernames_are_refused() {
        for u in ["", "alice", "abc:alice", ":alice", "-5:x", "12a"] {
            assert_eq!(
                expected_password(b"k", u, 0),
                Err(CredentialError::Malformed),
                "{u}"
            );
        }
    }
}
