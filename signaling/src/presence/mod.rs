//! Presence: where nameplates, sessions, seats, mailboxes and seat ownership
//! live. One trait, two stores: in memory (the embedded default, one node)
//! and Redis (several nodes form one service).
//!
//! The contract every store keeps:
//! - Operations are atomic per session: `push` either stores a message for
//!   the peer and advances the sender's seq, or changes nothing.
//! - Records carry TTLs: an unjoined nameplate lives `nameplate_ttl`, a seat
//!   whose connection went away lives `resume_grace`, and a node's ownership
//!   of connections lives only while the node calls `heartbeat`. A crashed
//!   node therefore leaves nothing behind once its TTLs run out.
//! - Notices for a connection (paired, mail, peer away/back/left, ...) are
//!   delivered to the node that owns it, through `subscribe`.

pub mod memory;
pub mod redis;
pub mod room_table;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::client_addr::IpKey;
use crate::mailbox::Envelope;
pub use crate::registry::{
    Created, Event, Joined, LeftReason, Notice, Owner, RegistryError, Resumed, Seat, SeatStatus,
};
use crate::room::{IndexOp, Room};

#[derive(Debug, Clone, thiserror::Error)]
pub enum PresenceError {
    /// The request was refused by the session rules.
    #[error(transparent)]
    Rejected(#[from] RegistryError),
    /// The store cannot be reached; the request may succeed later.
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// Timers every store applies.
#[derive(Debug, Clone, Copy)]
pub struct PresenceConfig {
    pub nameplate_ttl: Duration,
    pub resume_grace: Duration,
    pub mailbox_cap: usize,
    /// Bytes of message bodies a seat's mailbox holds at most.
    pub mailbox_bytes: usize,
    /// Seats one address may hold, connected or waiting for a resume.
    pub max_seats_per_ip: usize,
}

/// Store-wide counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sessions: usize,
    pub nameplates: usize,
    pub rooms: usize,
}

/// How a room record is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomKey {
    Id(String),
    /// A named room's nameplate.
    Nameplate(u32),
    /// A member's resume token.
    Token(String),
    /// The nearby room of an address.
    Nearby(String),
}

/// One compare-and-set write of a room record and its indexes.
#[derive(Debug, Clone)]
pub struct RoomWrite<'a> {
    pub id: &'a str,
    /// The version the writer read; `None`: the record must not exist.
    pub expected: Option<u64>,
    /// The new record; `None` deletes it.
    pub room: Option<&'a Room>,
    pub ops: Vec<IndexOp>,
    /// Connections (`node|conn`) to wake with `Event::Room`.
    pub notify: Vec<String>,
    /// When a sweep must look at the room next.
    pub deadline: Option<u64>,
    /// How long the store keeps the record and its keys without a sweep.
    pub ttl_ms: u64,
}

/// Outcome of a [`RoomWrite`]; nothing was written unless `Saved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomPut {
    Saved,
    /// Another write came first: read again.
    Conflict,
    /// A unique key (nameplate, nearby address) belongs to another room.
    Taken,
    /// An address holds its maximum of room memberships.
    Limit,
}

/// Rooms a sweep must look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomsDue {
    pub rooms: Vec<String>,
    /// Nodes taken for dead: their members go away.
    pub dead_nodes: Vec<String>,
}

/// Whether a `push` stored the message or recognised it as a resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Stored,
    Duplicate,
}

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Short name for logs and readiness reports ("memory", "redis").
    fn kind(&self) -> &'static str;

    /// Whether sessions outlive this process (so a client told to reconnect
    /// elsewhere can resume there).
    fn durable(&self) -> bool;

    /// Open a session with seat 0 held by `owner`, under resume `token`.
    /// The seat counts against `ip` until it ends.
    async fn create(&self, owner: &Owner, token: &str, ip: IpKey)
        -> Result<Created, PresenceError>;

    /// Take seat 1 of the session behind `nameplate`; seat 0 gets `Paired`.
    async fn join(
        &self,
        nameplate: u32,
        owner: &Owner,
        token: &str,
        ip: IpKey,
    ) -> Result<Joined, PresenceError>;

    /// Reclaim the seat of `token` for `owner`, whose client has every
    /// message up to `last_seq` (more than was sent is refused). Also how a
    /// connection re-asserts a seat the store detached while it could not
    /// reach it.
    async fn resume(
        &self,
        token: &str,
        owner: &Owner,
        last_seq: u64,
    ) -> Result<Resumed, PresenceError>;

    /// Store send `seq` of `seat` for its peer; the peer's owner gets `Mail`.
    async fn push(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
        body: Arc<str>,
    ) -> Result<PushOutcome, PresenceError>;

    /// The seat's session as the store sees it, to reconcile after notices
    /// may have been lost.
    async fn status(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
    ) -> Result<SeatStatus, PresenceError>;

    /// Messages waiting for `seat` after seq `after`, at most `max`.
    async fn fetch(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        after: u64,
        max: usize,
    ) -> Result<Vec<Envelope>, PresenceError>;

    /// Drop messages for `seat` up to `seq`.
    async fn ack(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
    ) -> Result<(), PresenceError>;

    /// The connection of `seat` went away: keep the seat for the grace period.
    async fn detach(&self, session: &str, seat: Seat, owner: &Owner) -> Result<(), PresenceError>;

    /// End the session; the peer gets `PeerLeft`.
    async fn leave(&self, session: &str, seat: Seat, owner: &Owner) -> Result<(), PresenceError>;

    /// A `create`, `join` or `resume` by `owner` under `token` failed for
    /// its caller (the store did not answer in time) but may have been
    /// carried out all the same. If `owner` holds the seat `token` names,
    /// let it go: `leave` it (a seat whose token the client never learnt)
    /// or detach it (a resumed seat, which the client may resume again).
    async fn abandon(&self, token: &str, owner: &Owner, leave: bool) -> Result<(), PresenceError>;

    /// Open a session whose two seats are reserved for `tokens` and taken
    /// with `resume` within the resume grace (a room invitation). Seat 0
    /// counts against `ips[0]`, seat 1 against `ips[1]`.
    async fn create_pair(
        &self,
        tokens: [String; 2],
        ips: [IpKey; 2],
    ) -> Result<String, PresenceError>;

    /// A room record and the store's clock, in milliseconds.
    async fn room_get(&self, key: &RoomKey) -> Result<(Option<Room>, u64), PresenceError>;

    /// Write a room record if it is still at the version read.
    async fn room_put(&self, w: &RoomWrite<'_>) -> Result<RoomPut, PresenceError>;

    /// Rooms whose deadline has come or that have members on nodes taken
    /// for dead (judged as `sweep` does), at most `max`.
    async fn rooms_due(&self, node: &str, max: usize) -> Result<RoomsDue, PresenceError>;

    /// Rooms with a member connected to `node`, to find memberships whose
    /// connection is gone without a word (a detach that never landed).
    async fn rooms_of(&self, node: &str) -> Result<Vec<String>, PresenceError>;

    /// Notices for connections of `node`. Called once per node.
    fn subscribe(&self, node: &str) -> mpsc::UnboundedReceiver<Notice>;

    /// Refresh `node`'s liveness so its seats are not reclaimed.
    async fn heartbeat(&self, node: &str) -> Result<(), PresenceError>;

    /// Apply expiries that need a notice (nameplates, resume grace), and
    /// hand the seats of nodes that stopped beating to the grace period.
    /// `node` is the sweeping node: it never takes itself for dead. Each
    /// call does a bounded amount of work in the store.
    async fn sweep(&self, node: &str) -> Result<(), PresenceError>;

    /// Cheap round trip for readiness.
    async fn ping(&self) -> Result<(), PresenceError>;

    async fn counts(&self) -> Result<Counts, PresenceError>;
}
