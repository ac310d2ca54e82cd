//! Tallow's TURN relay (RFC 8656, with STUN Binding from RFC 8489).
//!
//! - `codec`: wire formats (stun_codec for control messages, an
//!   allocation-free data path for ChannelData and Send/Data indications).
//! - `core`: the TURN server as a sans-IO state machine over `allocation`s,
//!   with `nonce`s, the `peer_policy` and TURN REST API `credentials`.
//! - `event_loop`: the shell: one thread, non-blocking sockets (UDP and
//!   TCP), no locks on the data path.
//! - `config`: the `TURN_*` settings shared with tallow-server.
//! - `advertise`: what relayed address clients get, judged at start-up.

// No unsafe code: the fuzz targets run without AddressSanitizer
// (scripts/test.sh), which is only sound while this holds.
#![forbid(unsafe_code)]

pub mod advertise;
pub mod allocation;
pub mod codec;
pub mod config;
pub mod core;
pub mod credentials;
pub mod event_loop;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod nonce;
pub mod peer_policy;
