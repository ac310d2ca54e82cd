//! Tallow's end-to-end peer session (docs/PROTOCOL.md, "The peer session"):
//! hybrid X25519 + ML-KEM-768 key agreement, bound to the share code with
//! CPace over ristretto255 and to the transcript with HKDF-SHA-256, key
//! confirmation, verification words, and AES-256-GCM sealing; and the
//! data-channel file framing ("The data channel"), in `transfer`.

pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
mod json;
pub mod names;
pub mod paths;
pub mod records;
pub mod transfer;
pub mod words;

pub use handshake::{
    check_encapsulation_key, check_hello, mlkem_self_test, HandshakeError, Initiator, Message,
    Randomness, Responder, Session, SUITE,
};
pub use names::sanitize_name;
pub use transfer::{parse_control, Action, Control, FramingError, Receiver};
