//! The peer handshake of docs/PROTOCOL.md ("The peer session"), sans-IO:
//! functions take the other side's message and the randomness to use, and
//! return the next message. Nothing here touches a socket or a clock.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ml_kem::kem::TryDecapsulate;
use ml_kem::{DecapsulationKey768, EncapsulationKey768, KeyExport, Seed, B32};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::words;

pub const SUITE: &str = "tallow-v1/x25519+mlkem768/cpace-ristretto255/hkdf-sha256/aes256gcm";
pub const EK_LEN: usize = 1184;
pub const CT_LEN: usize = 1088;
const SEAL_AAD: &[u8] = b"tallow-v1 sealed";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the peer offered suite {0:?}, not {SUITE}: refusing a downgrade")]
    Downgrade(String),
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    #[error(
        "key confirmation failed: the other side used a different code, or a message was altered"
    )]
    ConfirmationFailed,
    #[error("a sealed message did not open: it was altered or is not for this session")]
    Tampered,
    #[error("sealed message {got} arrived where {expected} was due: replayed or reordered")]
    Replay { expected: u64, got: u64 },
    #[error("the share code is empty")]
    EmptyCode,
}

/// Fresh randomness for one side of a handshake. Explicit so that test
/// vectors can fix it.
#[derive(Clone)]
pub struct Randomness {
    pub mlkem_seed: [u8; 64],
    pub mlkem_m: [u8; 32],
    pub x25519: [u8; 32],
    pub cpace: [u8; 64],
}

impl Randomness {
    pub fn fresh() -> Self {
        Randomness {
            mlkem_seed: rand::random(),
            mlkem_m: rand::random(),
            x25519: rand::random(),
            cpace: rand::random(),
        }
    }
}

/// Handshake and session messages, as JSON with a `t` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    Hello {
        suite: String,
        ek: String,
        x: String,
        y: String,
    },
    Reply {
        suite: String,
        ct: String,
        x: String,
        y: String,
        mac: String,
    },
    Confirm {
        mac: String,
    },
    Sealed {
        n: u64,
        c: String,
    },
}

impl Message {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages serialize")
    }

    pub fn from_json(s: &str) -> Result<Self, HandshakeError> {
        serde_json::from_str(s).map_err(|_| HandshakeError::Malformed("not a session message"))
    }
}

fn lp(out: &mut Vec<u8>, x: &[u8]) {
    out.extend_from_slice(&(x.len() as u16).to_be_bytes());
    out.extend_from_slice(x);
}

fn normalize(code: &str) -> Result<String, HandshakeError> {
    let c = code.trim().to_lowercase();
    if c.is_empty() {
        return Err(HandshakeError::EmptyCode);
    }
    Ok(c)
}

fn generator(code: &str, sid: &str) -> RistrettoPoint {
    let mut input = Vec::new();
    lp(&mut input, b"tallow-v1 cpace");
    lp(&mut input, code.as_bytes());
    lp(&mut input, sid.as_bytes());
    let h: [u8; 64] = Sha512::digest(&input).into();
    RistrettoPoint::from_uniform_bytes(&h)
}

fn decode<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], HandshakeError> {
    let v = B64.decode(s).map_err(|_| HandshakeError::Malformed(what))?;
    v.try_into().map_err(|_| HandshakeError::Malformed(what))
}

fn point(bytes: &[u8; 32]) -> Result<RistrettoPoint, HandshakeError> {
    let p = CompressedRistretto(*bytes)
        .decompress()
        .ok_or(HandshakeError::Malformed(
            "CPace share is not a group element",
        ))?;
    if p == RistrettoPoint::default() {
        return Err(HandshakeError::Malformed("CPace share is the identity"));
    }
    Ok(p)
}

/// Check an encapsulation key as FIPS 203 §7.2 asks (length, and every
/// coefficient below q). The server runs this on `hello` too.
pub fn check_encapsulation_key(ek: &[u8]) -> Result<EncapsulationKey768, HandshakeError> {
    let arr: [u8; EK_LEN] = ek
        .try_into()
        .map_err(|_| HandshakeError::Malformed("ML-KEM-768 encapsulation key length"))?;
    EncapsulationKey768::new(&arr.into()).map_err(|_| {
        HandshakeError::Malformed("ML-KEM-768 encapsulation key fails the FIPS 203 check")
    })
}

struct Transcript<'a> {
    sid: &'a str,
    ek: &'a [u8],
    xa: &'a [u8; 32],
    ya: &'a [u8; 32],
    ct: &'a [u8],
    xb: &'a [u8; 32],
    yb: &'a [u8; 32],
}

impl Transcript<'_> {
    fn hash(&self) -> [u8; 32] {
        let mut t = Vec::with_capacity(2600);
        lp(&mut t, b"tallow-v1 transcript");
        lp(&mut t, SUITE.as_bytes());
        lp(&mut t, self.sid.as_bytes());
        for part in [self.ek, self.xa, self.ya, self.ct, self.xb, self.yb] {
            lp(&mut t, part);
        }
        Sha256::digest(&t).into()
    }
}

struct Keys {
    confirm_a: [u8; 32],
    confirm_b: [u8; 32],
    a_to_b: [u8; 32],
    b_to_a: [u8; 32],
    words: [u8; 4],
}

fn derive(th: &[u8; 32], ss_kem: &[u8], ss_x: &[u8; 32], k: &[u8; 32]) -> Keys {
    let mut ikm = Vec::with_capacity(96);
    ikm.extend_from_slice(ss_kem);
    ikm.extend_from_slice(ss_x);
    ikm.extend_from_slice(k);
    let hk = Hkdf::<Sha256>::new(Some(th), &ikm);
    let out = |label: &str, buf: &mut [u8]| {
        hk.expand(format!("tallow-v1 {label}").as_bytes(), buf)
            .expect("short HKDF outputs");
    };
    let mut keys = Keys {
        confirm_a: [0; 32],
        confirm_b: [0; 32],
        a_to_b: [0; 32],
        b_to_a: [0; 32],
        words: [0; 4],
    };
    out("confirm A", &mut keys.confirm_a);
    out("confirm B", &mut keys.confirm_b);
    out("key A->B", &mut keys.a_to_b);
    out("key B->A", &mut keys.b_to_a);
    out("words", &mut keys.words);
    keys
}

fn mac(key: &[u8; 32], th: &[u8; 32]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("any key length");
    m.update(th);
    m.finalize().into_bytes().into()
}

fn verify_mac(key: &[u8; 32], th: &[u8; 32], tag: &[u8; 32]) -> Result<(), HandshakeError> {
    let mut m = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("any key length");
    m.update(th);
    m.verify_slice(tag)
        .map_err(|_| HandshakeError::ConfirmationFailed)
}

fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Result<[u8; 32], HandshakeError> {
    let shared = StaticSecret::from(*secret).diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(HandshakeError::Malformed("X25519 key of low order"));
    }
    Ok(*shared.as_bytes())
}

/// A, after sending `hello`.
pub struct Initiator {
    sid: String,
    dk: DecapsulationKey768,
    ek: Vec<u8>,
    x_secret: [u8; 32],
    xa: [u8; 32],
    a: Scalar,
    ya: [u8; 32],
}

impl Initiator {
    pub fn start(
        code: &str,
        sid: &str,
        rnd: &Randomness,
    ) -> Result<(Self, Message), HandshakeError> {
        let code = normalize(code)?;
        let g = generator(&code, sid);
        let dk = DecapsulationKey768::from_seed(Seed::from(rnd.mlkem_seed));
        let ek = dk.encapsulation_key().to_bytes().to_vec();
        let xa = PublicKey::from(&StaticSecret::from(rnd.x25519)).to_bytes();
        let a = Scalar::from_bytes_mod_order_wide(&rnd.cpace);
        let ya = (g * a).compress().to_bytes();
        let hello = Message::Hello {
            suite: SUITE.to_owned(),
            ek: B64.encode(&ek),
            x: B64.encode(xa),
            y: B64.encode(ya),
        };
        Ok((
            Initiator {
                sid: sid.to_owned(),
                dk,
                ek,
                x_secret: rnd.x25519,
                xa,
                a,
                ya,
            },
            hello,
        ))
    }

    /// Take B's `reply`; on success the session and the `confirm` for B.
    pub fn finish(self, reply: &Message) -> Result<(Session, Message), HandshakeError> {
        let Message::Reply {
            suite,
            ct,
            x,
            y,
            mac: mb,
        } = reply
        else {
            return Err(HandshakeError::Malformed("expected reply"));
        };
        if suite != SUITE {
            return Err(HandshakeError::Downgrade(suite.clone()));
        }
        let ct: [u8; CT_LEN] = decode(ct, "ML-KEM ciphertext")?;
        let xb: [u8; 32] = decode(x, "X25519 key")?;
        let yb: [u8; 32] = decode(y, "CPace share")?;
        let mb: [u8; 32] = decode(mb, "confirmation")?;
        let k = point(&yb)? * self.a;
        if k == RistrettoPoint::default() {
            return Err(HandshakeError::ConfirmationFailed);
        }
        let ss_kem = self
            .dk
            .try_decapsulate(&ct.into())
            .map_err(|_| HandshakeError::Malformed("ML-KEM ciphertext"))?;
        let ss_x = x25519(&self.x_secret, &xb)?;
        let th = Transcript {
            sid: &self.sid,
            ek: &self.ek,
            xa: &self.xa,
            ya: &self.ya,
            ct: &ct,
            xb: &xb,
            yb: &yb,
        }
        .hash();
        let keys = derive(&th, &ss_kem, &ss_x, &k.compress().to_bytes());
        verify_mac(&keys.confirm_b, &th, &mb)?;
        let confirm = Message::Confirm {
            mac: B64.encode(mac(&keys.confirm_a, &th)),
        };
        Ok((Session::new(keys.a_to_b, keys.b_to_a, keys.words), confirm))
    }
}

/// B, after sending `reply`, waiting for A's `confirm`.
pub struct Responder {
    th: [u8; 32],
    keys: Keys,
}

impl Responder {
    /// Take A's `hello`; returns the state and the `reply` for A.
    pub fn respond(
        code: &str,
        sid: &str,
        hello: &Message,
        rnd: &Randomness,
    ) -> Result<(Self, Message), HandshakeError> {
        let Message::Hello { suite, ek, x, y } = hello else {
            return Err(HandshakeError::Malformed("expected hello"));
        };
        if suite != SUITE {
            return Err(HandshakeError::Downgrade(suite.clone()));
        }
        let code = normalize(code)?;
        let ek = B64
            .decode(ek)
            .map_err(|_| HandshakeError::Malformed("ML-KEM encapsulation key"))?;
        let ek_key = check_encapsulation_key(&ek)?;
        let xa: [u8; 32] = decode(x, "X25519 key")?;
        let ya: [u8; 32] = decode(y, "CPace share")?;
        let g = generator(&code, sid);
        let b = Scalar::from_bytes_mod_order_wide(&rnd.cpace);
        let yb = (g * b).compress().to_bytes();
        let k = point(&ya)? * b;
        let (ct, ss_kem) = ek_key.encapsulate_deterministic(&B32::from(rnd.mlkem_m));
        let xb = PublicKey::from(&StaticSecret::from(rnd.x25519)).to_bytes();
        let ss_x = x25519(&rnd.x25519, &xa)?;
        let th = Transcript {
            sid,
            ek: &ek,
            xa: &xa,
            ya: &ya,
            ct: ct.as_slice(),
            xb: &xb,
            yb: &yb,
        }
        .hash();
        let keys = derive(&th, &ss_kem, &ss_x, &k.compress().to_bytes());
        let reply = Message::Reply {
            suite: SUITE.to_owned(),
            ct: B64.encode(ct.as_slice()),
            x: B64.encode(xb),
            y: B64.encode(yb),
            mac: B64.encode(mac(&keys.confirm_b, &th)),
        };
        Ok((Responder { th, keys }, reply))
    }

    pub fn finish(self, confirm: &Message) -> Result<Session, HandshakeError> {
        let Message::Confirm { mac: ma } = confirm else {
            return Err(HandshakeError::Malformed("expected confirm"));
        };
        let ma: [u8; 32] = decode(ma, "confirmation")?;
        verify_mac(&self.keys.confirm_a, &self.th, &ma)?;
        Ok(Session::new(
            self.keys.b_to_a,
            self.keys.a_to_b,
            self.keys.words,
        ))
    }
}

/// An established session: seal and open in order, one key per direction.
pub struct Session {
    send: Aes256Gcm,
    recv: Aes256Gcm,
    send_n: u64,
    recv_n: u64,
    words: [u8; 4],
}

fn nonce(n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    b
}

impl Session {
    fn new(send: [u8; 32], recv: [u8; 32], words: [u8; 4]) -> Self {
        Session {
            send: Aes256Gcm::new(&send.into()),
            recv: Aes256Gcm::new(&recv.into()),
            send_n: 0,
            recv_n: 0,
            words,
        }
    }

    /// The verification words both users should see.
    pub fn verification_words(&self) -> Vec<String> {
        self.words.iter().map(|b| words::word(*b)).collect()
    }

    pub fn seal(&mut self, plaintext: &[u8]) -> Message {
        let n = self.send_n;
        self.send_n += 1;
        let c = self
            .send
            .encrypt(
                &nonce(n).into(),
                Payload {
                    msg: plaintext,
                    aad: SEAL_AAD,
                },
            )
            .expect("AES-GCM seals any message under 64 GiB");
        Message::Sealed {
            n,
            c: B64.encode(c),
        }
    }

    pub fn open(&mut self, msg: &Message) -> Result<Vec<u8>, HandshakeError> {
        let Message::Sealed { n, c } = msg else {
            return Err(HandshakeError::Malformed("expected sealed"));
        };
        if *n != self.recv_n {
            return Err(HandshakeError::Replay {
                expected: self.recv_n,
                got: *n,
            });
        }
        let c = B64.decode(c).map_err(|_| HandshakeError::Tampered)?;
        let plain = self
            .recv
            .decrypt(
                &nonce(*n).into(),
                Payload {
                    msg: &c,
                    aad: SEAL_AAD,
                },
            )
            .map_err(|_| HandshakeError::Tampered)?;
        self.recv_n += 1;
        Ok(plain)
    }
}

/// Known-answer-free ML-KEM-768 self-test: keygen, encapsulate,
/// decapsulate, compare. `/api/ready` runs it.
pub fn mlkem_self_test() -> Result<(), String> {
    let dk = DecapsulationKey768::from_seed(Seed::from(rand::random::<[u8; 64]>()));
    let ek =
        check_encapsulation_key(&dk.encapsulation_key().to_bytes()).map_err(|e| e.to_string())?;
    let (ct, sent) = ek.encapsulate_deterministic(&B32::from(rand::random::<[u8; 32]>()));
    let got = dk
        .try_decapsulate(&ct)
        .map_err(|_| "decapsulation failed".to_owned())?;
    if got != sent {
        return Err("decapsulated secret differs from the encapsulated one".into());
    }
    Ok(())
}

/// What the server checks in the opening `hello` before forwarding it: the
/// suite and the encapsulation key. Returns why it refuses, if it does.
pub fn check_hello(body: &str) -> Result<(), HandshakeError> {
    let msg = Message::from_json(body)?;
    let Message::Hello { suite, ek, .. } = msg else {
        return Err(HandshakeError::Malformed("expected hello"));
    };
    if suite != SUITE {
        return Err(HandshakeError::Downgrade(suite));
    }
    let ek = B64
        .decode(ek)
        .map_err(|_| HandshakeError::Malformed("ML-KEM encapsulation key"))?;
    check_encapsulation_key(&ek).map(drop)
}
