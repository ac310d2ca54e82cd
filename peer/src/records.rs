//! The data channel's sealed records (docs/PROTOCOL.md, "Records"), as the
//! web client seals them (`web/src/records.js`):
//!
//! ```text
//! record = type (1 byte: 1 control, 2 data) || AES-256-GCM(plaintext) (ciphertext || 16-byte tag)
//! key    = HKDF-SHA-256(ikm = dk, salt = empty, info = "tallow dc v2 A->B" or "tallow dc v2 B->A")
//! nonce  = 4 zero bytes || u64 big-endian counter (from 0, per direction)
//! aad    = the type byte
//! ```
//!
//! `dk` is 32 random bytes the creator sends in its sealed SDP offer; a new
//! peer connection brings a new one. The channel is ordered and reliable, so
//! each record must open under exactly the next counter: one that does not
//! (altered, replayed, reordered, retyped, or from the other direction) is
//! an attack, and the caller closes the channel. Sans-IO; no input makes it
//! panic.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use hkdf::Hkdf;
use sha2::Sha256;

/// Bytes of the smallest record: the type byte and the GCM tag.
pub const MIN_RECORD: usize = 17;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// A transfer message's JSON (`crate::control::Message`).
    Control = 1,
    /// A data frame (`crate::control::encode_frame`).
    Data = 2,
}

impl RecordType {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordType::Control),
            2 => Some(RecordType::Data),
            _ => None,
        }
    }
}

/// Which end of the session: `A` created it (and offers the peer
/// connections), `B` joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    A,
    B,
}

/// A record refused (or, for `Exhausted`, not sealed). `kind()` is the
/// web client's `RecordError.kind` for a record that does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {n} did not open: altered, replayed, out of turn or mistyped")]
    Tampered { n: u64 },
    #[error("no counter left in this direction")]
    Exhausted,
    #[error("a record over the AES-GCM limit")]
    TooLong,
}

impl RecordError {
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::Tampered { .. } => "tampered",
            RecordError::Exhausted => "exhausted",
            RecordError::TooLong => "too_long",
        }
    }
}

fn direction_key(dk: &[u8; 32], info: &str) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(None, dk);
    let mut key = [0u8; 32];
    hk.expand(info.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    Aes256Gcm::new(&key.into())
}

fn nonce(n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    b
}

/// Seals and opens the records of one peer connection.
pub struct Records {
    send: Aes256Gcm,
    recv: Aes256Gcm,
    send_n: u64,
    recv_n: u64,
}

impl Records {
    pub fn new(dk: &[u8; 32], role: Role) -> Self {
        let (mine, theirs) = match role {
            Role::A => ("A->B", "B->A"),
            Role::B => ("B->A", "A->B"),
        };
        Records {
            send: direction_key(dk, &format!("tallow dc v2 {mine}")),
            recv: direction_key(dk, &format!("tallow dc v2 {theirs}")),
            send_n: 0,
            recv_n: 0,
        }
    }

    /// Records sealed so far.
    pub fn sealed(&self) -> u64 {
        self.send_n
    }

    /// Records opened (or refused) so far.
    pub fn opened(&self) -> u64 {
        self.recv_n
    }

    /// Seals `plain` as the next record of `ty`.
    pub fn seal(&mut self, ty: RecordType, plain: &[u8]) -> Result<Vec<u8>, RecordError> {
        let n = self.send_n;
        let next = n.checked_add(1).ok_or(RecordError::Exhausted)?;
        let aad = [ty as u8];
        let c = self
            .send
            .encrypt(
                &nonce(n).into(),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| RecordError::TooLong)?;
        self.send_n = next;
        let mut out = Vec::with_capacity(1 + c.len());
        out.push(ty as u8);
        out.extend_from_slice(&c);
        Ok(out)
    }

    /// Opens the next record. Every call takes a counter, as in the web
    /// client, so after a refused record nothing later opens either.
    pub fn open(&mut self, record: &[u8]) -> Result<(RecordType, Vec<u8>), RecordError> {
        let n = self.recv_n;
        self.recv_n = n.checked_add(1).ok_or(RecordError::Exhausted)?;
        let tampered = RecordError::Tampered { n };
        let (&b, c) = record.split_first().ok_or(tampered.clone())?;
        let ty = RecordType::from_byte(b).ok_or(tampered.clone())?;
        if record.len() < MIN_RECORD {
            return Err(tampered);
        }
        let plain = self
            .recv
            .decrypt(&nonce(n).into(), Payload { msg: c, aad: &[b] })
            .map_err(|_| tampered)?;
        Ok((ty, plain))
    }
}
