//! Tallow signaling: pairs two clients by a short nameplate and relays their
//! opaque messages, in order and at most once, across reconnects.
//!
//! Layout: the protocol core is pure (`protocol`, `registry`, `mailbox`,
//! `nameplate`, `ratelimit`, `ip_limits`); `presence` puts the session table
//! behind a store trait; `conn` and `server` are the thin tokio shell, with
//! `tls` (the HTTPS certificate) and `https` (the TLS listener).

// No unsafe code: the fuzz targets run without AddressSanitizer
// (scripts/test.sh), which is only sound while this holds.
#![forbid(unsafe_code)]

pub mod client_addr;
pub mod config;
mod conn;
mod https;
pub mod ice;
pub mod ip_limits;
pub mod mailbox;
pub mod metrics;
pub mod nameplate;
pub mod origin;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
mod readiness;
pub mod registry;
pub mod request_id;
pub mod room;
pub mod rooms;
mod serve;
pub mod server;
mod state;
pub mod tls;
pub mod turn_rest;
