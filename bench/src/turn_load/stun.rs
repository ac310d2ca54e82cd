//! TURN control messages the generator sends and the answers it reads,
//! on top of the relay's own codec (`tallow_relay::codec`, stun_codec
//! underneath): the generator then speaks exactly the wire format the relay
//! tests pin down against coturn's clients, and has no codec of its own to
//! get wrong. Credentials follow the TURN REST API scheme
//! (`tallow_relay::credentials`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use stun_codec::rfc5389::attributes::{ErrorCode, MessageIntegrity, Nonce, Realm, Username};
use stun_codec::rfc5766::attributes::{
    Lifetime, RequestedTransport, XorPeerAddress, XorRelayAddress,
};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
use stun_codec::{MessageClass, Method, TransactionId};
use tallow_relay::codec::{self, ChannelNumber, Msg};

/// UDP, for REQUESTED-TRANSPORT.
const UDP: u8 = 17;

/// Long-term credentials derived from the shared secret.
#[derive(Debug, Clone)]
pub struct Creds {
    pub username: Username,
    pub password: String,
}

impl Creds {
    /// `expiry:user` with expiry `ttl` from now, password
    /// base64(HMAC-SHA1(secret, username)).
    pub fn rest(secret: &str, user: &str, now_unix: u64, ttl_secs: u64) -> anyhow::Result<Self> {
        let c = tallow_relay::credentials::issue(secret.as_bytes(), user, now_unix, ttl_secs);
        Ok(Creds {
            username: Username::new(c.username).map_err(|e| anyhow!("username: {e}"))?,
            password: c.password,
        })
    }
}

/// Realm and nonce a server handed out in a 401 or 438.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub realm: Realm,
    pub nonce: Nonce,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    Allocate,
    /// Refresh with this lifetime; zero releases the allocation.
    Refresh(Duration),
    CreatePermission(SocketAddr),
    ChannelBind(u16, SocketAddr),
}

impl Request {
    fn method(self) -> Method {
        match self {
            Request::Allocate => ALLOCATE,
            Request::Refresh(_) => REFRESH,
            Request::CreatePermission(_) => CREATE_PERMISSION,
            Request::ChannelBind(..) => CHANNEL_BIND,
        }
    }
}

/// Encode `req` with transaction id `txid`; authenticated when `auth` is
/// given (an Allocate without it draws the 401 that carries the nonce).
pub fn encode(
    req: Request,
    txid: [u8; 12],
    auth: Option<(&Creds, &Challenge)>,
) -> anyhow::Result<Vec<u8>> {
    let mut msg = Msg::new(
        MessageClass::Request,
        req.method(),
        TransactionId::new(txid),
    );
    match req {
        Request::Allocate => msg.add_attribute(RequestedTransport::new(UDP)),
        Request::Refresh(life) => {
            msg.add_attribute(Lifetime::new(life).map_err(|e| anyhow!("lifetime: {e}"))?)
        }
        Request::CreatePermission(peer) => msg.add_attribute(XorPeerAddress::new(peer)),
        Request::ChannelBind(channel, peer) => {
            msg.add_attribute(ChannelNumber(channel));
            msg.add_attribute(XorPeerAddress::new(peer));
        }
    }
    if let Some((creds, ch)) = auth {
        msg.add_attribute(creds.username.clone());
        msg.add_attribute(ch.realm.clone());
        msg.add_attribute(ch.nonce.clone());
        let mi = MessageIntegrity::new_long_term_credential(
            &msg,
            &creds.username,
            &ch.realm,
            &creds.password,
        )
        .map_err(|e| anyhow!("message integrity: {e}"))?;
        msg.add_attribute(mi);
    }
    Ok(codec::encode(msg))
}

/// A response, reduced to what the generator acts on.
#[derive(Debug)]
pub enum Reply {
    /// Success; the relayed address for an Allocate.
    Ok { relayed: Option<SocketAddr> },
    /// 401 or 438: retry with this realm and nonce.
    Challenge(Challenge),
    /// Any other error.
    Error(u16, String),
}

/// Decode a response; `None` for anything that is not a response (or is
/// not STUN at all).
pub fn decode_reply(buf: &[u8]) -> Option<(TransactionId, Reply)> {
    let msg = codec::decode(buf).ok()?;
    let txid = msg.transaction_id();
    let reply = match msg.class() {
        MessageClass::SuccessResponse => Reply::Ok {
            relayed: msg
                .get_attribute::<XorRelayAddress>()
                .map(XorRelayAddress::address),
        },
        MessageClass::ErrorResponse => {
            let (code, reason) = msg
                .get_attribute::<ErrorCode>()
                .map_or((0, String::new()), |e| {
                    (e.code(), e.reason_phrase().to_owned())
                });
            match (
                code,
                msg.get_attribute::<Realm>(),
                msg.get_attribute::<Nonce>(),
            ) {
                (401 | 438, Some(realm), Some(nonce)) => Reply::Challenge(Challenge {
                    realm: realm.clone(),
                    nonce: nonce.clone(),
                }),
                _ => Reply::Error(code, reason),
            }
        }
        _ => return None,
    };
    Some((txid, reply))
}

/// A transaction id that is unique within a run: the allocation index, a
/// per-allocation counter and a per-run salt (uniqueness is all STUN needs
/// from it here; nothing is secret).
pub fn txid(salt: u32, alloc: u32, counter: u32) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(&salt.to_be_bytes());
    t[4..8].copy_from_slice(&alloc.to_be_bytes());
    t[8..].copy_from_slice(&counter.to_be_bytes());
    t
}

/// The Unix time now, for credential expiry.
pub fn unix_now() -> anyhow::Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authenticated_allocate_verifies_with_the_rest_password() {
        let creds = Creds::rest("s3cret", "load-7", 1_000, 60).unwrap();
        assert_eq!(creds.username.name(), "1060:load-7");
        let ch = Challenge {
            realm: Realm::new("tallow".into()).unwrap(),
            nonce: Nonce::new("abc".into()).unwrap(),
        };
        let buf = encode(Request::Allocate, txid(1, 2, 3), Some((&creds, &ch))).unwrap();
        let msg = codec::decode(&buf).unwrap();
        assert_eq!(msg.method(), ALLOCATE);
        let pw =
            tallow_relay::credentials::expected_password(b"s3cret", "1060:load-7", 1_000).unwrap();
        msg.get_attribute::<MessageIntegrity>()
            .unwrap()
            .check_long_term_credential(&creds.username, &ch.realm, &pw)
            .unwrap();
    }

    #[test]
    fn channel_binds_carry_number_and_peer() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let buf = encode(Request::ChannelBind(0x4001, peer), txid(0, 0, 0), None).unwrap();
        let msg = codec::decode(&buf).unwrap();
        assert_eq!(
            msg.get_attribute::<ChannelNumber>().unwrap().value(),
            0x4001
        );
        assert_eq!(
            msg.get_attribute::<XorPeerAddress>().unwrap().address(),
            peer
        );
    }

    #[test]
    fn requests_are_not_replies() {
        let buf = encode(Request::Allocate, txid(0, 0, 0), None).unwrap();
        assert!(decode_reply(&buf).is_none());
        assert!(decode_reply(b"garbage").is_none());
    }
}
