//! Tallow's command-line peer (issue 12, first slice): the /signal client
//! (`signal` sans-IO, `ws` its socket), the session as the web client runs
//! it (`session`: handshake, sealed SDP/ICE, one WebRTC connection from
//! `rtc`), the sealed data channel (`channel`) and one transfer over it
//! (`transfer`, driving tallow-peer's machines).

pub mod channel;
pub mod rtc;
pub mod session;
pub mod signal;
pub mod transfer;
pub mod ws;
