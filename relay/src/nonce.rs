//! Stateless nonces: `<expiry, 8 hex digits><HMAC-SHA1(key, expiry), 16 hex
//! digits>`. The server keeps no nonce table, a forged nonce fails the MAC,
//! and an old one is recognisably stale (438) rather than wrong.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but expired: answer 438 with a fresh one.
    Stale,
    /// Not ours.
    Invalid,
}

impl Nonces {
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Nonces { key, lifetime_secs }
    }

    pub fn issue(&self, now_unix: u64) -> String {
        let expiry = (now_unix + self.lifetime_secs) as u32;
        format!("{expiry:08x}{}", self.mac(expiry))
    }

    pub fn check(&self, nonce: &str, now_unix: u64) -> NonceCheck {
        if nonce.len() != 24 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let Ok(expiry) = u32::from_str_radix(&nonce[..8], 16) else {
            return NonceCheck::Invalid;
        };
        if nonce[8..] != self.mac(expiry) {
            return NonceCheck::Invalid;
        }
        if u64::from(expiry) <= now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    fn mac(&self, expiry: u32) -> String {
        let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(&self.key).expect("any key length");
        m.update(&expiry.to_be_bytes());
        let tag = m.finalize().into_bytes();
        tag[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_valid_until_they_expire_and_unforgeable() {
        let n = Nonces::new([1; 32], 600);
        let nonce = n.issue(1_000);
        assert_eq!(n.check(&nonce, 1_000), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1_599), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1_600), NonceCheck::Stale);
        let other = Nonces::new([2; 32], 600);
        assert_eq!(other.check(&nonce, 1_000), NonceCheck::Invalid);
        let mut forged = nonce.clone();
        forged.replace_range(0..8, "ffffffff");
        assert_eq!(n.check(&forged, 1_000), NonceCheck::Invalid);
        assert_eq!(n.check("short", 0), NonceCheck::Invalid);
        assert_eq!(n.check("ééééééééééééé", 0), NonceCheck::Invalid);
    }
}
