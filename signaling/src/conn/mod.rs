//! One WebSocket connection: frames in, protocol decisions from the pure core
//! and the presence store, frames out. Each connection is one task that owns
//! its socket; notices from other connections arrive on a channel.

mod room;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::mpsc;

use crate::client_addr::IpKey;
use crate::presence::{
    Event, LeftReason, Notice, Owner, PresenceError, PushOutcome, RegistryError, Seat,
};
use crate::protocol::{self, close, ClientMsg, ErrorCode, ServerMsg};
use crate::ratelimit::TokenBucket;
use crate::state::AppState;

/// Messages fetched from the mailbox per presence round trip.
const FETCH_BATCH: usize = 256;
/// Frames dropped for rate in a row before the client is cut off.
const MAX_DROPPED_IN_A_ROW: u32 = 1000;

/// What the loop does after handling one input.
enum Flow {
    Continue,
    /// Send a close frame with this code and reason, then stop.
    Close(u16, &'static str),
}

/// The socket is gone: nothing more can be sent.
struct Gone;

/// A request that failed for this connection because the store did not
/// answer in time, but that the store may still carry out (Redis runs a
/// command it received before it stalled): a seat this connection may hold
/// without knowing it. Settled by the next request, or at the end.
#[derive(Debug, Clone)]
enum Limbo {
    Create(String),
    Join(String),
    Resume(String),
}

impl Limbo {
    fn token(&self) -> &str {
        match self {
            Limbo::Create(t) | Limbo::Join(t) | Limbo::Resume(t) => t,
        }
    }

    /// A seat the client never learnt the token of is left; a resumed one
    /// is only detached, so that its client can resume it again.
    fn leave(&self) -> bool {
        !matches!(self, Limbo::Resume(_))
    }
}

struct SeatState {
    session: String,
    seat: Seat,
    paired: bool,
    /// Highest message seq written to this client.
    delivered: u64,
    /// The seat's resume token: how this connection claims the seat back
    /// when the store detached it while unreachable.
    token: String,
}

struct Conn {
    st: Arc<AppState>,
    ws: WebSocket,
    owner: Owner,
    ip: IpKey,
    /// The hostname the client used to reach us, to name the relay.
    host: Option<String>,
    bucket: TokenBucket,
    /// Whether the store holds the seat as this connection believes.
    seat: Option<SeatState>,
    /// A store call failed: whether the store still holds the seat for this
    /// connection is unknown until the next successful check.
    uncertain: bool,
    /// A seat request whose outcome the store never told.
    limbo: Option<Limbo>,
    /// The room membership this connection holds (instead of a seat).
    room: Option<room::Membership>,
    /// The token of a room request whose outcome the store never told.
    room_limbo: Option<String>,
    /// Close after the current step (set where a reply is not a `Flow`).
    closing: Option<(u16, &'static str)>,
    last_heard: Instant,
    dropped_in_a_row: u32,
    last_rate_error: Option<Instant>,
}

/// Counts the connection as open, on the node and against its address, for
/// as long as it lives. The address slot was taken before the upgrade.
struct OpenGuard(Arc<AppState>, IpKey);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.metrics.connections.dec();
        self.0.lock_ip_limits().close_connection(self.1);
    }
}

pub(crate) async fn run(st: Arc<AppState>, mut ws: WebSocket, ip: IpKey, host: Option<String>) {
    use std::sync::atomic::Ordering;
    let open = st.open.fetch_add(1, Ordering::Relaxed) + 1;
    st.metrics.connections.inc();
    st.metrics.connections_total.inc();
    let _guard = OpenGuard(st.clone(), ip);
    if open > st.cfg.limits.max_connections {
        st.metrics.error(ErrorCode::ServerFull);
        let msg = ServerMsg::error(
            ErrorCode::ServerFull,
            format!(
                "this node holds its maximum of {} connections; retry later",
                st.cfg.limits.max_connections
            ),
        );
        let _ = ws.send(Message::Text(msg.to_json().into())).await;
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: close::TRY_AGAIN_LATER,
                reason: "server full".into(),
            })))
            .await;
        return;
    }

    let id = st.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    st.lock_conns().insert(id, tx);
    let now = Instant::now();
    let rate = st.cfg.limits.max_messages_per_sec;
    let mut conn = Conn {
        owner: Owner {
            node: st.node.clone(),
            conn: id,
        },
        st: st.clone(),
        ws,
        ip,
        host,
        bucket: TokenBucket::new(rate, rate, now),
        seat: None,
        uncertain: false,
        limbo: None,
        room: None,
        room_limbo: None,
        closing: None,
        last_heard: now,
        dropped_in_a_row: 0,
        last_rate_error: None,
    };
    tracing::debug!(conn = id, %ip, "connected");
    conn.serve(rx).await;
    st.lock_conns().remove(&id);
    conn.finish().await;
    tracing::debug!(conn = id, "disconnected");
}

impl Conn {
    async fn serve(&mut self, mut notices: mpsc::UnboundedReceiver<Notice>) {
        let welcome = self.st.welcome.clone();
        if self.send_raw(welcome).await.is_err() {
            return;
        }
        let limits = &self.st.cfg.limits;
        let mut ticks = tokio::time::interval(limits.ping_interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let shutdown = self.st.shutdown.clone();
        loop {
            let step = tokio::select! {
                _ = shutdown.cancelled() => Ok(self.shutdown_close()),
                frame = self.ws.recv() => match frame {
                    None => return,
                    Some(Err(e)) if is_capacity_error(&e) => {
                        self.st.metrics.error(ErrorCode::FrameTooLarge);
                        Ok(Flow::Close(close::MESSAGE_TOO_BIG, "frame exceeds the hard size limit"))
                    }
                    Some(Err(_)) => return,
                    Some(Ok(Message::Close(_))) => return,
                    Some(Ok(msg)) => self.on_frame(msg).await,
                },
                Some(n) = notices.recv() => self.on_notice(n).await,
                _ = ticks.tick() => self.on_tick().await,
            };
            let step = match (step, self.closing.take()) {
                (Ok(Flow::Continue), Some((code, reason))) => Ok(Flow::Close(code, reason)),
                (step, _) => step,
            };
            match step {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close(code, reason)) => {
                    self.close(code, reason).await;
                    return;
                }
                Err(Gone) => return,
            }
        }
    }

    /// How to say goodbye at shutdown: a resume is promised only where the
    /// store outlives this process.
    fn shutdown_close(&self) -> Flow {
        if self.st.presence.durable() {
            Flow::Close(
                close::SERVICE_RESTART,
                "server restarting: reconnect and resume",
            )
        } else {
            Flow::Close(
                close::GOING_AWAY,
                "server stopping: its sessions end with it; start a new transfer",
            )
        }
    }

    /// After the socket is done: keep the seat for resume, and let go of a
    /// seat the store may have given this connection without saying so.
    async fn finish(&mut self) {
        self.leave_room_for_now().await;
        if let Some(l) = self.limbo.take() {
            let res = self
                .st
                .presence
                .abandon(l.token(), &self.owner, l.leave())
                .await;
            if let Err(PresenceError::Unavailable(_)) = res {
                self.st.lock_pending_abandon().push((
                    l.token().to_owned(),
                    l.leave(),
                    self.owner.clone(),
                ));
            }
        }
        if let Some(s) = self.seat.take() {
            if let Err(e) = self
                .st
                .presence
                .detach(&s.session, s.seat, &self.owner)
                .await
            {
                // Retried by the node until the store answers, so the peer
                // learns of it and the grace period starts.
                tracing::warn!(error = %e, "could not detach seat; will retry");
                self.st
                    .lock_pending_detach()
                    .push((s.session, s.seat, self.owner.clone()));
            }
        }
    }

    async fn on_frame(&mut self, msg: Message) -> Result<Flow, Gone> {
        let now = Instant::now();
        self.last_heard = now;
        // Every frame goes through the rate limit: tungstenite answers each
        // ping by itself, so a ping flood costs writes like any other.
        if !self.bucket.try_take(now) {
            self.dropped_in_a_row += 1;
            if self.dropped_in_a_row > MAX_DROPPED_IN_A_ROW {
                self.st.metrics.error(ErrorCode::RateLimited);
                return Ok(Flow::Close(
                    close::POLICY_VIOLATION,
                    "rate limit exceeded repeatedly",
                ));
            }
            // One error per second at most, so a flood is not echoed back.
            if self
                .last_rate_error
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.last_rate_error = Some(now);
                let msg = format!(
                    "over {} messages per second; frame dropped, retry in {} ms",
                    self.st.cfg.limits.max_messages_per_sec,
                    self.bucket.retry_after().as_millis().max(1)
                );
                self.error(ErrorCode::RateLimited, msg).await?;
            }
            return Ok(Flow::Continue);
        }
        self.dropped_in_a_row = 0;
        if matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return Ok(Flow::Continue);
        }
        let Message::Text(text) = msg else {
            self.error(
                ErrorCode::BadMessage,
                "binary frames are not part of the protocol; send JSON text",
            )
            .await?;
            return Ok(Flow::Continue);
        };
        let max = self.st.cfg.limits.max_frame_bytes;
        if text.len() > max {
            let msg = format!("frame of {} bytes exceeds the {max} byte limit", text.len());
            self.error(ErrorCode::FrameTooLarge, msg).await?;
            return Ok(Flow::Continue);
        }
        match protocol::decode(text.as_str()) {
            Ok(m) => self.on_message(m).await,
            Err(e) => {
                self.error(e.code(), e.to_string()).await?;
                Ok(Flow::Continue)
            }
        }
    }

    async fn on_message(&mut self, msg: ClientMsg) -> Result<Flow, Gone> {
        match msg {
            ClientMsg::Create {} => self.on_create().await?,
            ClientMsg::Join { nameplate } => self.on_join(&nameplate).await?,
            ClientMsg::Send { seq, body } => self.on_send(seq, body, false).await?,
            ClientMsg::Hello { seq, body } => self.on_hello(seq, body).await?,
            ClientMsg::Ack { seq } => self.on_ack(seq).await?,
            ClientMsg::Leave {} => return self.on_leave().await,
            ClientMsg::Resume { token, last_seq } => self.on_resume(&token, last_seq).await?,
            ClientMsg::Ping { id } => self.send(&ServerMsg::Pong { id }).await?,
            ClientMsg::RoomCreate {
                name,
                display_name,
                max_members,
                ttl_secs,
            } => {
                self.on_room_create(&name, &display_name, max_members, ttl_secs)
                    .await?
            }
            ClientMsg::RoomJoin {
                nameplate,
                display_name,
            } => self.on_room_join(&nameplate, &display_name).await?,
            ClientMsg::NearbyJoin { display_name } => self.on_nearby_join(&display_name).await?,
            ClientMsg::RoomResume { token } => self.on_room_resume(&token).await?,
            ClientMsg::RoomLeave {} => self.on_room_leave().await?,
            ClientMsg::RoomClose {} => self.on_room_close().await?,
            ClientMsg::RoomInvite { to } => self.on_room_invite(to).await?,
        }
        Ok(Flow::Continue)
    }

    async fn on_create(&mut self) -> Result<(), Gone> {
        if !self.may_take_seat().await? || !self.settle_limbo().await? {
            return Ok(());
        }
        let token = new_token();
        let res = self.st.presence.create(&self.owner, &token, self.ip).await;
        if let Err(PresenceError::Unavailable(_)) = res {
            self.limbo = Some(Limbo::Create(token.clone()));
        }
        match res {
            Ok(c) => {
                self.st.metrics.sessions_created.inc();
                self.seat = Some(SeatState {
                    session: c.session.clone(),
                    seat: 0,
                    paired: false,
                    delivered: 0,
                    token: token.clone(),
                });
                self.send(&ServerMsg::Created {
                    session: c.session,
                    nameplate: c.nameplate.to_string(),
                    seat: 0,
                    resume_token: token,
                    expires_in_secs: self.st.cfg.limits.nameplate_ttl_secs,
                })
                .await
            }
            Err(e) => self.presence_error(e).await,
        }
    }

    async fn on_join(&mut self, nameplate: &str) -> Result<(), Gone> {
        if self.room.is_some() {
            return self
                .error(
                    ErrorCode::AlreadyInRoom,
                    "this connection is in a room; use another one for the session",
                )
                .await;
        }
        if self.seat.is_some() {
            return self
                .error(
                    ErrorCode::AlreadyInSession,
                    "leave the current session first",
                )
                .await;
        }
        let Some(n) = self
            .reserve_join(
                nameplate,
                ErrorCode::UnknownNameplate,
                "a nameplate is 1 to 9 digits without a leading zero",
            )
            .await?
        else {
            return Ok(());
        };
        // A join that may have landed is kept for a retry of the same join
        // (the store hands the seat back); anything else is let go first.
        if !matches!(self.limbo, Some(Limbo::Join(_))) && !self.settle_limbo().await? {
            return Ok(());
        }
        let token = new_token();
        let res = self.st.presence.join(n, &self.owner, &token, self.ip).await;
        match &res {
            Err(PresenceError::Unavailable(_)) => {
                let earlier = self.limbo.take();
                if let Some(l) = earlier {
                    // Two joins in limbo: keep one, let the other go later.
                    self.st.lock_pending_abandon().push((
                        l.token().to_owned(),
                        l.leave(),
                        self.owner.clone(),
                    ));
                }
                self.limbo = Some(Limbo::Join(token.clone()));
            }
            Ok(j) if self.limbo.as_ref().is_some_and(|l| l.token() == j.token) => {
                self.limbo = None;
            }
            _ => {
                // Whatever this join did, the earlier one is not it: the
                // node lets that seat go (now, or once the store answers).
                if let Some(l) = self.limbo.take() {
                    self.st.lock_pending_abandon().push((
                        l.token().to_owned(),
                        l.leave(),
                        self.owner.clone(),
                    ));
                }
            }
        }
        let failed = matches!(
            res,
            Err(PresenceError::Rejected(
                RegistryError::UnknownNameplate | RegistryError::SessionFull
            ))
        );
        self.st
            .lock_ip_limits()
            .settle_join(self.ip, failed, Instant::now());
        match res {
            Ok(j) => {
                self.st.metrics.sessions_paired.inc();
                self.seat = Some(SeatState {
                    session: j.session.clone(),
                    seat: j.seat,
                    paired: true,
                    delivered: 0,
                    token: j.token.clone(),
                });
                self.send(&ServerMsg::Joined {
                    session: j.session.clone(),
                    seat: j.seat,
                    resume_token: j.token,
                })
                .await?;
                self.send_paired().await?;
                if !j.peer_present {
                    // The creator dropped before we came: it may resume.
                    self.send(&ServerMsg::PeerAway {}).await?;
                }
                Ok(())
            }
            Err(e) => self.presence_error(e).await,
        }
    }

    /// Count a join (of a session or a room) against the address's failed
    /// joins and parse its nameplate. The attempt counts as a failure until
    /// the caller settles it, so that concurrent guesses cannot all pass the
    /// check while the store answers. `None`: refused, and the client told
    /// (`unknown` with `why` for a nameplate that cannot be one).
    async fn reserve_join(
        &mut self,
        nameplate: &str,
        unknown: ErrorCode,
        why: &'static str,
    ) -> Result<Option<u32>, Gone> {
        if !self
            .st
            .lock_ip_limits()
            .try_reserve_join(self.ip, Instant::now())
        {
            let msg = format!(
                "too many failed joins from this address; wait up to {} s",
                self.st.cfg.limits.failed_join_window_secs
            );
            self.error(ErrorCode::TooManyFailedJoins, msg).await?;
            return Ok(None);
        }
        let Some(n) = crate::nameplate::parse(nameplate) else {
            self.st
                .lock_ip_limits()
                .settle_join(self.ip, true, Instant::now());
            self.error(unknown, why).await?;
            return Ok(None);
        };
        Ok(Some(n))
    }

    async fn on_send(&mut self, seq: u64, body: String, checked_hello: bool) -> Result<(), Gone> {
        let Some(s) = &self.seat else {
            return self
                .error(ErrorCode::NoSession, "create or join a session first")
                .await;
        };
        if !s.paired {
            return self
                .error(
                    ErrorCode::NotPaired,
                    "no peer has joined yet; wait for `paired`",
                )
                .await;
        }
        // The creator's first message opens the handshake and must be a
        // checked post-quantum `hello`.
        if seq == 1 && s.seat == 0 && !checked_hello {
            return self
                .error(
                    ErrorCode::PqRequired,
                    "the first message must be a `hello` with the post-quantum suite",
                )
                .await;
        }
        let body: Arc<str> = Arc::from(body);
        let mut res = self.push(seq, body.clone()).await;
        if matches!(res, Err(PresenceError::Rejected(RegistryError::Detached))) {
            // The store let go of the seat while it could not hear us:
            // claim it back, then store the message.
            self.reclaim(true).await?;
            if self.uncertain || self.seat.is_none() {
                // The outcome is told already.
                return Ok(());
            }
            res = self.push(seq, body).await;
        }
        match res {
            Ok(PushOutcome::Stored | PushOutcome::Duplicate) => {
                self.send(&ServerMsg::Ack { seq }).await
            }
            Err(e) => self.presence_error(e).await,
        }
    }

    async fn push(&mut self, seq: u64, body: Arc<str>) -> Result<PushOutcome, PresenceError> {
        let Some(s) = &self.seat else {
            return Err(PresenceError::Rejected(RegistryError::UnknownSession));
        };
        let res = self
            .st
            .presence
            .push(&s.session, s.seat, &self.owner, seq, body)
            .await;
        self.note(&res);
        res
    }

    /// Remember whether the store's view of this connection is in doubt.
    fn note<T>(&mut self, res: &Result<T, PresenceError>) {
        match res {
            Err(PresenceError::Unavailable(_)) => self.uncertain = true,
            Err(PresenceError::Rejected(RegistryError::Detached)) => {}
            _ => self.uncertain = false,
        }
    }

    async fn on_hello(&mut self, seq: u64, body: String) -> Result<(), Gone> {
        if self.seat.as_ref().is_some_and(|s| s.seat != 0) {
            return self
                .error(
                    ErrorCode::BadMessage,
                    "only the creator opens the handshake",
                )
                .await;
        }
        match tallow_peer::check_hello(&body) {
            Ok(()) => self.on_send(seq, body, true).await,
            Err(tallow_peer::HandshakeError::Downgrade(suite)) => {
                let shown: String = suite.chars().take(80).collect();
                let msg = format!(
                    "suite {shown:?} refused: this server relays only {}",
                    tallow_peer::SUITE
                );
                self.error(ErrorCode::PqRequired, msg).await
            }
            Err(e) => self.error(ErrorCode::BadPqKey, e.to_string()).await,
        }
    }

    async fn on_ack(&mut self, seq: u64) -> Result<(), Gone> {
        let Some(s) = &self.seat else {
            return self
                .error(ErrorCode::NoSession, "create or join a session first")
                .await;
        };
        if seq > s.delivered {
            let msg = format!("ack {seq} is beyond the last message sent, {}", s.delivered);
            return self.error(ErrorCode::BadSequence, msg).await;
        }
        let res = self
            .st
            .presence
            .ack(&s.session, s.seat, &self.owner, seq)
            .await;
        self.note(&res);
        match res {
            Ok(()) => Ok(()),
            // Claiming the seat back acknowledges up to what was delivered.
            Err(PresenceError::Rejected(RegistryError::Detached)) => {
                self.reclaim(true).await.map(drop)
            }
            Err(e) => self.presence_error(e).await,
        }
    }

    /// Leave the session. Idempotent: a connection without a seat has left
    /// already. The seat is let go only once the store has recorded the
    /// leave; until then the client is told to retry.
    async fn on_leave(&mut self) -> Result<Flow, Gone> {
        let Some(s) = &self.seat else {
            self.send(&ServerMsg::Left {}).await?;
            return Ok(Flow::Continue);
        };
        let (session, seat) = (s.session.clone(), s.seat);
        let mut res = self.st.presence.leave(&session, seat, &self.owner).await;
        if matches!(res, Err(PresenceError::Rejected(RegistryError::Detached))) {
            self.reclaim(true).await?;
            if self.uncertain {
                return Ok(Flow::Continue);
            }
            if self.seat.is_none() {
                self.send(&ServerMsg::Left {}).await?;
                return Ok(Flow::Continue);
            }
            res = self.st.presence.leave(&session, seat, &self.owner).await;
        }
        self.note(&res);
        match res {
            // A session already gone, or a seat taken over, is left all the
            // same as far as this connection goes.
            Ok(()) | Err(PresenceError::Rejected(_)) => {
                self.seat = None;
                self.send(&ServerMsg::Left {}).await?;
            }
            Err(e) => self.presence_error(e).await?,
        }
        Ok(Flow::Continue)
    }

    async fn on_resume(&mut self, token: &str, last_seq: u64) -> Result<(), Gone> {
        if !self.may_take_seat().await? {
            return Ok(());
        }
        // A retry of the same resume claims the same seat for the same
        // connection; anything else in limbo is let go first.
        let same = self.limbo.as_ref().is_some_and(|l| l.token() == token);
        if !same && !self.settle_limbo().await? {
            return Ok(());
        }
        let res = self.st.presence.resume(token, &self.owner, last_seq).await;
        self.note(&res);
        match &res {
            Err(PresenceError::Unavailable(_)) => {
                self.limbo = Some(Limbo::Resume(token.to_owned()))
            }
            _ => self.limbo = None,
        }
        match res {
            Ok(r) => {
                self.seat = Some(SeatState {
                    session: r.session.clone(),
                    seat: r.seat,
                    paired: r.paired,
                    delivered: last_seq,
                    token: token.to_owned(),
                });
                // What the client confirms having is no longer needed. The
                // seat is resumed whatever this says: a failure only delays
                // trimming the mailbox to the next ack, except a takeover.
                let acked = self
                    .st
                    .presence
                    .ack(&r.session, r.seat, &self.owner, last_seq)
                    .await;
                self.note(&acked);
                if let Err(PresenceError::Rejected(RegistryError::NotOwner)) = acked {
                    self.superseded();
                    return Ok(());
                }
                let ice_servers = r
                    .paired
                    .then(|| self.st.ice.servers_for(&r.session, self.host.as_deref()));
                self.send(&ServerMsg::Resumed {
                    session: r.session,
                    seat: r.seat,
                    paired: r.paired,
                    last_received: r.last_received,
                    resume_token: token.to_owned(),
                    ice_servers,
                })
                .await?;
                if r.peer_left {
                    return self.peer_left(LeftReason::Left).await;
                }
                if r.paired && !r.peer_present {
                    self.send(&ServerMsg::PeerAway {}).await?;
                }
                self.pump(true).await
            }
            Err(e) => self.presence_error(e).await,
        }
    }

    /// Let go of a seat the store may hold for this connection without
    /// having said so. `false` when the store still cannot answer: the
    /// client has been told to retry.
    async fn settle_limbo(&mut self) -> Result<bool, Gone> {
        let Some(l) = self.limbo.clone() else {
            return Ok(true);
        };
        let res = self
            .st
            .presence
            .abandon(l.token(), &self.owner, l.leave())
            .await;
        self.note(&res);
        match res {
            Err(e @ PresenceError::Unavailable(_)) => {
                self.presence_error(e).await?;
                Ok(false)
            }
            _ => {
                self.limbo = None;
                Ok(true)
            }
        }
    }

    /// Another connection took this seat: forget it, and close.
    fn superseded(&mut self) {
        self.seat = None;
        self.closing = Some((close::SUPERSEDED, "seat resumed by another connection"));
    }

    /// The peer left: deliver what it sent before, then close our side of
    /// the session too. A leave the store cannot take now is retried by the
    /// node, so no seat is left behind.
    async fn peer_left(&mut self, reason: LeftReason) -> Result<(), Gone> {
        self.pump(false).await?;
        if let Some(s) = self.seat.take() {
            let res = self
                .st
                .presence
                .leave(&s.session, s.seat, &self.owner)
                .await;
            if let Err(PresenceError::Unavailable(_)) = res {
                self.st
                    .lock_pending_leave()
                    .push((s.session, s.seat, self.owner.clone()));
            }
        }
        self.send(&ServerMsg::PeerLeft {
            reason: reason.as_str().to_owned(),
        })
        .await
    }

    /// Claim this connection's seat back after the store detached it (its
    /// node was taken for dead, or a detach landed late). The peer, told
    /// `peer_away` then, now hears `peer_back`. `solicited`: a client
    /// request is waiting for the outcome, so failures are its answer.
    async fn reclaim(&mut self, solicited: bool) -> Result<Flow, Gone> {
        let Some(s) = &self.seat else {
            return Ok(Flow::Continue);
        };
        let (token, delivered, was_paired) = (s.token.clone(), s.delivered, s.paired);
        let res = self
            .st
            .presence
            .resume(&token, &self.owner, delivered)
            .await;
        self.note(&res);
        match res {
            Ok(r) => {
                tracing::info!(
                    conn = self.owner.conn,
                    "seat re-asserted after the store let it go"
                );
                if r.paired && !was_paired {
                    if let Some(s) = self.seat.as_mut() {
                        s.paired = true;
                    }
                    self.send_paired().await?;
                }
                if r.paired && !r.peer_present {
                    self.send(&ServerMsg::PeerAway {}).await?;
                }
                self.pump(solicited).await?;
                Ok(Flow::Continue)
            }
            Err(PresenceError::Unavailable(detail)) => {
                if solicited {
                    self.presence_error(PresenceError::Unavailable(detail))
                        .await?;
                }
                Ok(Flow::Continue)
            }
            // The grace ran out or the session ended meanwhile.
            Err(PresenceError::Rejected(_)) => self.session_ended(was_paired).await,
        }
    }

    /// The store no longer has this connection's session: say so once.
    async fn session_ended(&mut self, was_paired: bool) -> Result<Flow, Gone> {
        self.seat = None;
        if was_paired {
            self.send(&ServerMsg::PeerLeft {
                reason: "gone".to_owned(),
            })
            .await?;
        } else {
            let msg = "the code expired or its session ended; create a new one";
            self.error(ErrorCode::NameplateExpired, msg).await?;
        }
        Ok(Flow::Continue)
    }

    /// Check the seat preconditions; on refusal the client has been told
    /// why. Seats per address are counted by the store.
    async fn may_take_seat(&mut self) -> Result<bool, Gone> {
        if self.room.is_some() {
            self.error(
                ErrorCode::AlreadyInRoom,
                "this connection is in a room; use another one for the session",
            )
            .await?;
            return Ok(false);
        }
        if self.seat.is_some() {
            self.error(
                ErrorCode::AlreadyInSession,
                "leave the current session first",
            )
            .await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn on_notice(&mut self, n: Notice) -> Result<Flow, Gone> {
        if n.event == Event::Resync {
            if self.room.is_some() {
                return self.room_sync(false).await;
            }
            return self.reconcile().await;
        }
        if n.event == Event::Room {
            return self.room_sync(false).await;
        }
        let current = self.seat.as_ref().is_some_and(|s| s.session == n.session);
        if !current {
            // For a session this connection already left.
            return Ok(Flow::Continue);
        }
        match n.event {
            Event::Paired => {
                if let Some(s) = self.seat.as_mut() {
                    s.paired = true;
                }
                self.send_paired().await?;
            }
            Event::Mail => self.pump(false).await?,
            Event::PeerAway => self.send(&ServerMsg::PeerAway {}).await?,
            Event::PeerBack => self.send(&ServerMsg::PeerBack {}).await?,
            Event::PeerLeft(reason) => self.peer_left(reason).await?,
            Event::NameplateExpired => {
                self.seat = None;
                let msg = format!(
                    "nobody joined within {} s; create a new code",
                    self.st.cfg.limits.nameplate_ttl_secs
                );
                self.error(ErrorCode::NameplateExpired, msg).await?;
            }
            Event::Resync | Event::Room => {}
            Event::Superseded => {
                // The seat now belongs to the other connection: do not detach.
                self.seat = None;
                return Ok(Flow::Close(
                    close::SUPERSEDED,
                    "seat resumed by another connection",
                ));
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_tick(&mut self) -> Result<Flow, Gone> {
        if self.last_heard.elapsed() >= self.st.cfg.limits.idle_timeout() {
            return Ok(Flow::Close(close::IDLE_TIMEOUT, "idle timeout"));
        }
        self.write(Message::Ping(Default::default())).await?;
        if self.room.is_some() {
            return self.room_sync(false).await;
        }
        // A store whose notices can be lost (Redis pub/sub) still delivers
        // within one ping interval; a connection whose last store call
        // failed checks that it still holds its seat.
        match &self.seat {
            Some(s) if s.paired && !self.uncertain => {
                self.pump(false).await?;
                Ok(Flow::Continue)
            }
            Some(_) => self.reconcile().await,
            None => Ok(Flow::Continue),
        }
    }

    /// Bring this connection in line with the store after notices may have
    /// been lost or the store was unreachable: pairing, the end of the
    /// session, a takeover, a seat the store let go, and mail. Nothing here
    /// answers a request, so an unreachable store is not reported.
    async fn reconcile(&mut self) -> Result<Flow, Gone> {
        let Some(s) = &self.seat else {
            return Ok(Flow::Continue);
        };
        let was_paired = s.paired;
        let res = self
            .st
            .presence
            .status(&s.session, s.seat, &self.owner)
            .await;
        self.note(&res);
        match res {
            Ok(status) => {
                if status.paired && !was_paired {
                    if let Some(s) = self.seat.as_mut() {
                        s.paired = true;
                    }
                    self.send_paired().await?;
                }
                self.pump(false).await?;
            }
            Err(PresenceError::Rejected(RegistryError::Detached)) => {
                return self.reclaim(false).await;
            }
            Err(PresenceError::Rejected(RegistryError::NotOwner)) => {
                self.seat = None;
                return Ok(Flow::Close(
                    close::SUPERSEDED,
                    "seat resumed by another connection",
                ));
            }
            // The session ended while we were not listening.
            Err(PresenceError::Rejected(_)) => return self.session_ended(was_paired).await,
            // Still unreachable: the next tick tries again.
            Err(PresenceError::Unavailable(_)) => {}
        }
        Ok(Flow::Continue)
    }

    /// Deliver everything in the mailbox beyond what this client has.
    /// `solicited`: a client request waits on this, so a store failure is
    /// reported to it; otherwise the failure only marks the seat uncertain.
    async fn pump(&mut self, solicited: bool) -> Result<(), Gone> {
        loop {
            let Some(s) = &self.seat else { return Ok(()) };
            let batch = self
                .st
                .presence
                .fetch(&s.session, s.seat, &self.owner, s.delivered, FETCH_BATCH)
                .await;
            self.note(&batch);
            let batch = match batch {
                Ok(b) => b,
                // The session ended under us; its notice says how.
                Err(PresenceError::Rejected(
                    RegistryError::UnknownSession | RegistryError::NotOwner,
                )) => return Ok(()),
                // Let go by the store: the next check claims it back.
                Err(PresenceError::Rejected(RegistryError::Detached)) => {
                    self.uncertain = true;
                    return Ok(());
                }
                Err(e) if solicited => return self.presence_error(e).await,
                Err(e) => {
                    tracing::debug!(error = %e, "mailbox fetch failed; retried on the next tick");
                    return Ok(());
                }
            };
            let n = batch.len();
            for env in batch {
                let msg = ServerMsg::Message {
                    seq: env.seq,
                    body: env.body.to_string(),
                };
                self.send(&msg).await?;
                self.st.metrics.messages_forwarded.inc();
                if let Some(s) = self.seat.as_mut() {
                    s.delivered = env.seq;
                }
            }
            if n < FETCH_BATCH {
                return Ok(());
            }
        }
    }

    async fn send_paired(&mut self) -> Result<(), Gone> {
        let Some(s) = &self.seat else { return Ok(()) };
        let msg = ServerMsg::Paired {
            session: s.session.clone(),
            seat: s.seat,
            ice_servers: self.st.ice.servers_for(&s.session, self.host.as_deref()),
        };
        self.send(&msg).await
    }

    async fn presence_error(&mut self, e: PresenceError) -> Result<(), Gone> {
        let (code, msg) = match e {
            PresenceError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "presence store unavailable");
                (
                    ErrorCode::PresenceUnavailable,
                    "the presence store is unavailable; retry shortly".to_owned(),
                )
            }
            PresenceError::Rejected(r) => {
                let code = match r {
                    RegistryError::UnknownNameplate => ErrorCode::UnknownNameplate,
                    RegistryError::SessionFull => ErrorCode::SessionFull,
                    RegistryError::NameplatesExhausted => ErrorCode::ServerFull,
                    RegistryError::InvalidResumeToken => ErrorCode::InvalidResumeToken,
                    RegistryError::UnknownSession => {
                        // The session ended under us; forget it locally too.
                        self.seat = None;
                        ErrorCode::NoSession
                    }
                    RegistryError::NotOwner => {
                        // Resumed by another connection, whose notice is on
                        // its way: say so as that notice would.
                        self.superseded();
                        return Ok(());
                    }
                    RegistryError::Detached => ErrorCode::PresenceUnavailable,
                    RegistryError::TooManySessions(_) => ErrorCode::TooManySessions,
                    RegistryError::ResumeBeyond { .. } => ErrorCode::BadSequence,
                    RegistryError::NotPaired => ErrorCode::NotPaired,
                    RegistryError::BadSequence { .. } => ErrorCode::BadSequence,
                    RegistryError::MailboxFull(_) => ErrorCode::MailboxFull,
                };
                (code, r.to_string())
            }
        };
        self.error(code, msg).await
    }

    async fn error(&mut self, code: ErrorCode, message: impl Into<String>) -> Result<(), Gone> {
        self.st.metrics.error(code);
        self.send(&ServerMsg::error(code, message)).await
    }

    async fn send(&mut self, msg: &ServerMsg) -> Result<(), Gone> {
        self.send_raw(msg.to_json()).await
    }

    async fn send_raw(&mut self, json: String) -> Result<(), Gone> {
        self.write(Message::Text(json.into())).await
    }

    /// Write one frame; a client that does not read for a whole idle timeout
    /// is treated as gone.
    async fn write(&mut self, m: Message) -> Result<(), Gone> {
        let limit = self.st.cfg.limits.idle_timeout();
        match tokio::time::timeout(limit, self.ws.send(m)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::debug!(conn = self.owner.conn, "write timed out");
                Err(Gone)
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        // Best effort: the client may already be gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.send(frame)).await;
    }
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn is_capacity_error(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
