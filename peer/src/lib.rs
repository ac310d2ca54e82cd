//! Tallow's end-to-end peer session (docs/PROTOCOL.md, "The peer session"):
//! hybrid X25519 + ML-KEM-768 key agreement, bound to the share code with
//! CPace over ristretto255 and to the transcript with HKDF-SHA-256, key
//! confirmation, verification words, and AES-256-GCM sealing; and the
//! pieces of a v2 file transfer ("Transfers (v2)"), sans-IO: the sealed
//! data-channel records (`records`), the transfer messages and data-frame
//! header (`control`), offered paths and names made safe (`paths`,
//! `names`), and the sender's and receiver's machines (`outgoing`,
//! `incoming`).

// No unsafe code: the fuzz targets run without AddressSanitizer
// (scripts/test.sh), which is only sound while this holds.
#![forbid(unsafe_code)]

pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod incoming;
mod json;
pub mod names;
pub mod outgoing;
pub mod paths;
pub mod records;
pub mod words;

pub use control::{parse_message, ControlError};
pub use handshake::{
    check_encapsulation_key, check_hello, mlkem_self_test, HandshakeError, Initiator, Message,
    Randomness, Responder, Session, SUITE,
};
pub use names::sanitize_name;
pub use records::{RecordError, RecordType, Records, Role};
