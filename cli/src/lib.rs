//! Tallow's command-line peer (issue 12): the /signal client (`signal`
//! sans-IO, `ws` its socket), the session as the web client runs it
//! (`session`: handshake, sealed SDP/ICE, one WebRTC connection from
//! `rtc`), the sealed data channel (`channel`), and the transfer over it
//! (`transfer`, driving tallow-peer's machines) with what surrounds it:
//! the files to offer (`offer`), the receiver's questions (`prompt`), what
//! the user sees (`output`) and the share link (`share`).

pub mod channel;
pub mod driver_tick;
pub mod offer;
pub mod output;
pub mod prompt;
pub mod rtc;
pub mod session;
pub mod share;
pub mod signal;
pub mod transfer;
pub mod ws;
