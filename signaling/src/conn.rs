//! One WebSocket connection: frames in, protocol decisions from the pure core
//! and the presence store, frames out. Each connection is one task that owns
//! its socket; notices from other connections arrive on a channel.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::mpsc;

use crate::presence::{Event, Notice, Owner, PresenceError, PushOutcome, RegistryError, Seat};
use crate::protocol::{self, close, ClientMsg, ErrorCode, ServerMsg};
use crate::ratelimit::TokenBucket;
use crate::server::AppState;

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

struct SeatState {
    session: String,
    seat: Seat,
    paired: bool,
    /// Highest message seq written to this client.
    delivered: u64,
}

struct Conn {
    st: Arc<AppState>,
    ws: WebSocket,
    owner: Owner,
    ip: IpAddr,
    /// The hostname the client used to reach us, to name the relay.
    host: Option<String>,
    bucket: TokenBucket,
    seat: Option<SeatState>,
    holds_ip_slot: bool,
    last_heard: Instant,
    dropped_in_a_row: u32,
    last_rate_error: Option<Instant>,
}

/// Counts the connection as open for as long as it lives.
struct OpenGuard(Arc<AppState>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.metrics.connections.dec();
    }
}

pub(crate) async fn run(st: Arc<AppState>, mut ws: WebSocket, ip: IpAddr, host: Option<String>) {
    use std::sync::atomic::Ordering;
    let open = st.open.fetch_add(1, Ordering::Relaxed) + 1;
    st.metrics.connections.inc();
    st.metrics.connections_total.inc();
    let _guard = OpenGuard(st.clone());
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
        holds_ip_slot: false,
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
                _ = shutdown.cancelled() => {
                    Ok(Flow::Close(close::SERVICE_RESTART, "server restarting: reconnect and resume"))
                }
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

    /// After the socket is done: keep the seat for resume, free the IP slot.
    async fn finish(&mut self) {
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
        self.release_ip_slot();
    }

    async fn on_frame(&mut self, msg: Message) -> Result<Flow, Gone> {
        let now = Instant::now();
        self.last_heard = now;
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                self.error(
                    ErrorCode::BadMessage,
                    "binary frames are not part of the protocol; send JSON text",
                )
                .await?;
                return Ok(Flow::Continue);
            }
            // Pongs only prove liveness; tungstenite answers pings itself.
            _ => return Ok(Flow::Continue),
        };
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
            ClientMsg::Leave {} => self.on_leave().await?,
            ClientMsg::Resume { token, last_seq } => self.on_resume(&token, last_seq).await?,
            ClientMsg::Ping { id } => self.send(&ServerMsg::Pong { id }).await?,
        }
        Ok(Flow::Continue)
    }

    async fn on_create(&mut self) -> Result<(), Gone> {
        if !self.may_take_seat().await? {
            return Ok(());
        }
        let token = new_token();
        match self.st.presence.create(&self.owner, &token).await {
            Ok(c) => {
                self.st.metrics.sessions_created.inc();
                self.seat = Some(SeatState {
                    session: c.session.clone(),
                    seat: 0,
                    paired: false,
                    delivered: 0,
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
            Err(e) => {
                self.release_ip_slot();
                self.presence_error(e).await
            }
        }
    }

    async fn on_join(&mut self, nameplate: &str) -> Result<(), Gone> {
        if self.seat.is_some() {
            return self
                .error(
                    ErrorCode::AlreadyInSession,
                    "leave the current session first",
                )
                .await;
        }
        let now = Instant::now();
        if !self.st.lock_ip_limits().may_join(self.ip, now) {
            let msg = format!(
                "too many failed joins from this address; wait up to {} s",
                self.st.cfg.limits.failed_join_window_secs
            );
            return self.error(ErrorCode::TooManyFailedJoins, msg).await;
        }
        let Some(n) = crate::nameplate::parse(nameplate) else {
            self.st.lock_ip_limits().record_failed_join(self.ip, now);
            return self
                .error(
                    ErrorCode::UnknownNameplate,
                    "a nameplate is 1 to 9 digits without a leading zero",
                )
                .await;
        };
        if !self.may_take_seat().await? {
            return Ok(());
        }
        let token = new_token();
        match self.st.presence.join(n, &self.owner, &token).await {
            Ok(j) => {
                self.st.metrics.sessions_paired.inc();
                self.seat = Some(SeatState {
                    session: j.session.clone(),
                    seat: j.seat,
                    paired: true,
                    delivered: 0,
                });
                self.send(&ServerMsg::Joined {
                    session: j.session.clone(),
                    seat: j.seat,
                    resume_token: token,
                })
                .await?;
                self.send_paired().await
            }
            Err(e) => {
                self.release_ip_slot();
                if matches!(
                    e,
                    PresenceError::Rejected(
                        RegistryError::UnknownNameplate | RegistryError::SessionFull
                    )
                ) {
                    self.st.lock_ip_limits().record_failed_join(self.ip, now);
                }
                self.presence_error(e).await
            }
        }
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
        let res = self
            .st
            .presence
            .push(&s.session, s.seat, &self.owner, seq, Arc::from(body))
            .await;
        match res {
            Ok(PushOutcome::Stored | PushOutcome::Duplicate) => {
                self.send(&ServerMsg::Ack { seq }).await
            }
            Err(e) => self.presence_error(e).await,
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
        match res {
            Ok(()) => Ok(()),
            Err(e) => self.presence_error(e).await,
        }
    }

    async fn on_leave(&mut self) -> Result<(), Gone> {
        let Some(s) = self.seat.take() else {
            return self.error(ErrorCode::NoSession, "not in a session").await;
        };
        self.release_ip_slot();
        match self
            .st
            .presence
            .leave(&s.session, s.seat, &self.owner)
            .await
        {
            // A session already gone is left all the same.
            Ok(()) | Err(PresenceError::Rejected(_)) => self.send(&ServerMsg::Left {}).await,
            Err(e) => self.presence_error(e).await,
        }
    }

    async fn on_resume(&mut self, token: &str, last_seq: u64) -> Result<(), Gone> {
        if !self.may_take_seat().await? {
            return Ok(());
        }
        match self.st.presence.resume(token, &self.owner).await {
            Ok(r) => {
                self.seat = Some(SeatState {
                    session: r.session.clone(),
                    seat: r.seat,
                    paired: r.paired,
                    delivered: last_seq,
                });
                // What the client confirms having is no longer needed.
                if let Err(e) = self
                    .st
                    .presence
                    .ack(&r.session, r.seat, &self.owner, last_seq)
                    .await
                {
                    return self.presence_error(e).await;
                }
                self.send(&ServerMsg::Resumed {
                    session: r.session,
                    seat: r.seat,
                    paired: r.paired,
                    last_received: r.last_received,
                    resume_token: token.to_owned(),
                })
                .await?;
                if r.paired && !r.peer_present {
                    self.send(&ServerMsg::PeerAway {}).await?;
                }
                self.pump().await
            }
            Err(e) => {
                self.release_ip_slot();
                self.presence_error(e).await
            }
        }
    }

    /// Check the seat preconditions and reserve this IP's slot; on refusal
    /// the client has been told why.
    async fn may_take_seat(&mut self) -> Result<bool, Gone> {
        if self.seat.is_some() {
            self.error(
                ErrorCode::AlreadyInSession,
                "leave the current session first",
            )
            .await?;
            return Ok(false);
        }
        if !self.holds_ip_slot {
            if !self.st.lock_ip_limits().try_open_session(self.ip) {
                let msg = format!(
                    "this address already holds {} sessions",
                    self.st.cfg.limits.max_sessions_per_ip
                );
                self.error(ErrorCode::TooManySessions, msg).await?;
                return Ok(false);
            }
            self.holds_ip_slot = true;
        }
        Ok(true)
    }

    fn release_ip_slot(&mut self) {
        if std::mem::take(&mut self.holds_ip_slot) {
            self.st.lock_ip_limits().close_session(self.ip);
        }
    }

    async fn on_notice(&mut self, n: Notice) -> Result<Flow, Gone> {
        if n.event == Event::Resync {
            return self.reconcile().await;
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
            Event::Mail => self.pump().await?,
            Event::PeerAway => self.send(&ServerMsg::PeerAway {}).await?,
            Event::PeerBack => self.send(&ServerMsg::PeerBack {}).await?,
            Event::PeerLeft(reason) => {
                // Deliver what the peer sent before it left, then close our
                // side of the session too.
                self.pump().await?;
                if let Some(s) = self.seat.take() {
                    let _ = self
                        .st
                        .presence
                        .leave(&s.session, s.seat, &self.owner)
                        .await;
                }
                self.release_ip_slot();
                self.send(&ServerMsg::PeerLeft {
                    reason: reason.as_str().to_owned(),
                })
                .await?;
            }
            Event::NameplateExpired => {
                self.seat = None;
                self.release_ip_slot();
                let msg = format!(
                    "nobody joined within {} s; create a new code",
                    self.st.cfg.limits.nameplate_ttl_secs
                );
                self.error(ErrorCode::NameplateExpired, msg).await?;
            }
            Event::Resync => {}
            Event::Superseded => {
                // The seat now belongs to the other connection: do not detach.
                self.seat = None;
                self.release_ip_slot();
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
        // A store whose notices can be lost (Redis pub/sub) still delivers
        // within one ping interval.
        match &self.seat {
            Some(s) if s.paired => {
                self.pump().await?;
                Ok(Flow::Continue)
            }
            Some(_) => self.reconcile().await,
            None => Ok(Flow::Continue),
        }
    }

    /// Bring this connection in line with the store after notices may have
    /// been lost: pairing, the end of the session, a takeover, and mail.
    async fn reconcile(&mut self) -> Result<Flow, Gone> {
        let Some(s) = &self.seat else {
            return Ok(Flow::Continue);
        };
        let was_paired = s.paired;
        match self
            .st
            .presence
            .status(&s.session, s.seat, &self.owner)
            .await
        {
            Ok(status) => {
                if status.paired && !was_paired {
                    if let Some(s) = self.seat.as_mut() {
                        s.paired = true;
                    }
                    self.send_paired().await?;
                }
                self.pump().await?;
            }
            Err(PresenceError::Rejected(RegistryError::NotOwner)) => {
                self.seat = None;
                self.release_ip_slot();
                return Ok(Flow::Close(
                    close::SUPERSEDED,
                    "seat resumed by another connection",
                ));
            }
            Err(PresenceError::Rejected(_)) => {
                // The session ended while we were not listening.
                self.seat = None;
                self.release_ip_slot();
                if was_paired {
                    self.send(&ServerMsg::PeerLeft {
                        reason: "gone".to_owned(),
                    })
                    .await?;
                } else {
                    let msg = "the code expired or its session ended; create a new one";
                    self.error(ErrorCode::NameplateExpired, msg).await?;
                }
            }
            // Still unreachable: the next tick tries again.
            Err(PresenceError::Unavailable(_)) => {}
        }
        Ok(Flow::Continue)
    }

    /// Deliver everything in the mailbox beyond what this client has.
    async fn pump(&mut self) -> Result<(), Gone> {
        loop {
            let Some(s) = &self.seat else { return Ok(()) };
            let batch = self
                .st
                .presence
                .fetch(&s.session, s.seat, &self.owner, s.delivered, FETCH_BATCH)
                .await;
            let batch = match batch {
                Ok(b) => b,
                // The session ended under us; its notice says how.
                Err(PresenceError::Rejected(
                    RegistryError::UnknownSession | RegistryError::NotOwner,
                )) => return Ok(()),
                Err(e) => return self.presence_error(e).await,
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
                    RegistryError::UnknownSession | RegistryError::NotOwner => {
                        // The session ended under us; forget it locally too.
                        self.seat = None;
                        self.release_ip_slot();
                        ErrorCode::NoSession
                    }
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

fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn is_capacity_error(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
