//! Tallow's TURN relay.
//!
//! For now this crate holds the credential scheme that the signaling service
//! and the relay share (the TURN REST API form of
//! draft-uberti-behave-turn-rest-00, also what coturn's `use-auth-secret`
//! accepts). The relay itself (RFC 8656) lands here as a sans-IO core with a
//! thin tokio shell.

pub mod codec;
pub mod config;
pub mod credentials;
