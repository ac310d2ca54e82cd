//! One 1:1 session as the web client runs it (web/src/peer.js): the
//! handshake over /signal, then sealed `offer`/`answer`/`ice`/`reconnect`
//! messages that set up peer connections, one per epoch (docs/PROTOCOL.md,
//! "What the web client seals"): the creator offers each, with its data key
//! `dk`. One task, the driver, owns signaling and the current connection
//! for the session's whole life; each data channel it opens reaches the
//! transfer through `Connected`, the first at once, the next ones when the
//! transfer asks after a break (`Connected::reconnect`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tallow_peer::handshake::{Initiator, Message, Randomness, Responder, Session};
use tallow_peer::Role;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

use crate::channel::{Link, LinkGuard};
use crate::rtc::{self, RtcEvent};
use crate::signal::{Event, IceServer};
use crate::ws::{Cmd, SignalLink};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How long a broken session tries to come back (docs/PROTOCOL.md "Resume").
pub const RECONNECT_FOR: Duration = Duration::from_secs(180);
/// Each new connection's time to open its channel.
pub const ATTEMPT_FOR: Duration = Duration::from_secs(15);
/// A connection `disconnected` this long counts as broken.
pub const DISCONNECTED_FOR: Duration = Duration::from_secs(4);

/// The wait before the creator's next attempt: 2, 4, 8, then every 10 s.
pub fn retry_delay(failed_attempts: u32) -> Duration {
    Duration::from_secs(match failed_attempts {
        0 | 1 => 2,
        2 => 4,
        3 => 8,
        _ => 10,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Signal(#[from] crate::ws::WsError),
    #[error("the server refused: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("the handshake failed: {0}")]
    Handshake(#[from] tallow_peer::HandshakeError),
    #[error("your peer stopped the session: {}", peer_reason(.0))]
    PeerAborted(String),
    #[error("your peer left")]
    PeerLeft,
    #[error("your peer sent something malformed: {0}")]
    Malformed(String),
    #[error("WebRTC failed: {0}")]
    Rtc(#[from] webrtc::error::Error),
    #[error(transparent)]
    Link(#[from] crate::channel::LinkError),
    /// Refused as the web client does (web/src/session.js): a replayed or
    /// re-delivered handshake message must not build a second session.
    #[error("out of turn: {0}")]
    OutOfTurn(&'static str),
    #[error("the connection to your peer failed")]
    Failed,
    #[error("the connection to your peer broke and did not come back within {} s", RECONNECT_FOR.as_secs())]
    ReconnectTimedOut,
    #[error("the session ended")]
    Ended,
}

/// A peer's abort reason in words, as web/src/failures.js puts it; the
/// reason is the peer's (unauthenticated before the session), so it only
/// picks the words, and anything unknown is shown neutralised.
fn peer_reason(reason: &str) -> String {
    match reason {
        "confirmation" | "downgrade" => {
            "the codes did not match, or someone tampered with the connection".into()
        }
        "out_of_turn" | "replay" | "tampered" | "malformed" => {
            format!("a message was replayed, altered or out of turn ({reason}): someone may be tampering")
        }
        "local" => "a problem on your peer's side, not with the code".into(),
        "cancelled" => "your peer cancelled".into(),
        other => other
            .chars()
            .filter(|c| !c.is_control() && !tallow_peer::names::is_replaced_char(*c))
            .take(80)
            .collect(),
    }
}

/// Why we stop, for the peer (docs/PROTOCOL.md, "What the web client
/// seals"): a failed check names its kind, our own failure is `local`;
/// nothing is said when the peer or the server ended it.
fn abort_reason(e: &SessionError) -> Option<&'static str> {
    use tallow_peer::HandshakeError as H;
    Some(match e {
        SessionError::Handshake(H::Downgrade(_)) => "downgrade",
        SessionError::Handshake(H::Malformed(_)) | SessionError::Malformed(_) => "malformed",
        SessionError::Handshake(H::ConfirmationFailed) => "confirmation",
        SessionError::Handshake(H::Tampered) => "tampered",
        SessionError::Handshake(H::Replay { .. }) => "replay",
        SessionError::OutOfTurn(_) => "out_of_turn",
        SessionError::Handshake(H::EmptyCode) | SessionError::Rtc(_) | SessionError::Failed => {
            "local"
        }
        _ => return None,
    })
}

#[derive(Clone)]
pub struct Options {
    pub relay_only: bool,
    pub bind: String,
}

/// A data channel the driver opened, with its connection.
struct Opened {
    link: Link,
    pc: Arc<dyn PeerConnection>,
    epoch: u64,
}

/// What the transfer side tells the driver.
enum Ctl {
    /// The link of this epoch broke.
    Broke(u64),
    /// Stop the session with a sealed abort.
    Abort(String),
}

/// A session whose data channel is open. Keep it alive while the link is
/// used: its driver holds the peer connection and the signaling connection.
pub struct Connected {
    pub link: Link,
    pub words: Vec<String>,
    /// The current connection (replaced by `reconnect`).
    pub pc: Arc<dyn PeerConnection>,
    /// The current connection's epoch (1, 2, ...).
    pub epoch: u64,
    signal: mpsc::UnboundedSender<Cmd>,
    up: mpsc::UnboundedReceiver<Result<Opened, SessionError>>,
    ctl: mpsc::UnboundedSender<Ctl>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connected {
    pub fn leave(&self) {
        let _ = self.signal.send(Cmd::Leave);
    }

    /// Ends the session for the peer with a sealed `abort` (its page words
    /// `reason`, docs/PROTOCOL.md "What the web client seals").
    pub fn abort(&self, reason: &str) {
        let _ = self.ctl.send(Ctl::Abort(reason.to_owned()));
    }

    /// After `link` broke (its channel closed or the connection failed):
    /// waits for the session to bring up the next peer connection (a new
    /// epoch, docs/PROTOCOL.md "Resume") and puts its link in `link`. An
    /// error when the reconnect budget (3 minutes) is spent, or the peer
    /// left or aborted. The transfer then calls its machine's `on_channel`.
    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        let _ = self.ctl.send(Ctl::Broke(self.epoch));
        // A link the driver opened while the transfer had not noticed yet
        // may be waiting; take the newest.
        let mut next = None;
        while let Ok(o) = self.up.try_recv() {
            next = Some(o);
        }
        let o = match next {
            Some(o) => o?,
            None => self.up.recv().await.ok_or(SessionError::Ended)??,
        };
        self.link = o.link;
        self.pc = o.pc;
        self.epoch = o.epoch;
        Ok(())
    }
}

enum Hand {
    Idle,
    SentHello(Initiator),
    SentReply(Responder),
}

struct Ctx {
    role: Role,
    code: String,
    sid: String,
    ice: Vec<IceServer>,
    hand: Hand,
    session: Option<Session>,
    pc: Option<Arc<dyn PeerConnection>>,
    rtc_rx: Option<mpsc::UnboundedReceiver<RtcEvent>>,
    dk: [u8; 32],
    epoch: u64,
    /// The data channel being opened (ours for A, the peer's for B).
    opening: Option<oneshot::Receiver<Result<Link, crate::channel::LinkError>>>,
    /// Ends the current connection's link when dropped.
    guard: Option<LinkGuard>,
    /// A channel has opened once: breaks are reconnected from then on.
    connected_once: bool,
    /// Since when the session is reconnecting.
    broken_since: Option<Instant>,
    /// A: the current attempt's deadline; B: unused.
    attempt_until: Option<Instant>,
    /// A: when to make the next attempt.
    next_attempt: Option<Instant>,
    failed_attempts: u32,
    disconnected_since: Option<Instant>,
}

/// Runs the creator's side: `on_code` gets the share code once the server
/// gave a nameplate.
pub async fn create(
    mut sig: SignalLink,
    opts: &Options,
    on_code: impl FnOnce(&str),
) -> Result<Connected, SessionError> {
    let _ = sig.cmd.send(Cmd::Create);
    let (sid, code) = loop {
        match next(&mut sig).await? {
            Event::Created { session, nameplate } => {
                let words: Vec<String> = rand::random::<[u8; 3]>()
                    .iter()
                    .map(|b| tallow_peer::words::word(*b))
                    .collect();
                break (session, format!("{nameplate}-{}", words.join("-")));
            }
            e => refused(e)?,
        }
    };
    on_code(&code);
    start(sig, Role::A, code, sid, opts).await
}

/// Runs the joiner's side with the share code.
pub async fn join(
    mut sig: SignalLink,
    code: &str,
    opts: &Options,
) -> Result<Connected, SessionError> {
    let code = code.trim().to_lowercase();
    let nameplate = code.split('-').next().unwrap_or_default().to_owned();
    let _ = sig.cmd.send(Cmd::Join(nameplate));
    let sid = loop {
        match next(&mut sig).await? {
            Event::Joined { session } => break session,
            e => refused(e)?,
        }
    };
    start(sig, Role::B, code, sid, opts).await
}

async fn next(sig: &mut SignalLink) -> Result<Event, SessionError> {
    Ok(sig
        .events
        .recv()
        .await
        .ok_or(crate::ws::WsError::Closed)??)
}

/// Events before the seat is ours: an error ends it, the rest waits.
fn refused(e: Event) -> Result<(), SessionError> {
    match e {
        Event::Error { code, message, .. } => Err(SessionError::Refused {
            code: crate::output::neutral(&code, 64),
            message: crate::output::neutral(&message, 300),
        }),
        _ => Ok(()),
    }
}

async fn start(
    sig: SignalLink,
    role: Role,
    code: String,
    sid: String,
    opts: &Options,
) -> Result<Connected, SessionError> {
    let ctx = Ctx {
        role,
        code,
        sid,
        ice: Vec::new(),
        hand: Hand::Idle,
        session: None,
        pc: None,
        rtc_rx: None,
        dk: [0; 32],
        epoch: 0,
        opening: None,
        guard: None,
        connected_once: false,
        broken_since: None,
        attempt_until: None,
        next_attempt: None,
        failed_attempts: 0,
        disconnected_since: None,
    };
    let (up_tx, mut up) = mpsc::unbounded_channel();
    let (ctl_tx, ctl) = mpsc::unbounded_channel();
    let (words_tx, words_rx) = oneshot::channel();
    let signal = sig.cmd.clone();
    let driver = tokio::spawn(drive(sig, ctx, opts.clone(), up_tx, ctl, words_tx));
    let first = match up.recv().await {
        Some(r) => r,
        None => Err(SessionError::Ended),
    };
    let o = match first {
        Ok(o) => o,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let words = words_rx.await.unwrap_or_default();
    Ok(Connected {
        link: o.link,
        words,
        pc: o.pc,
        epoch: o.epoch,
        signal,
        up,
        ctl: ctl_tx,
        driver,
    })
}

/// The session's one task: until the session ends (its result goes `up`
/// as an error) or `Connected` is dropped.
async fn drive(
    mut sig: SignalLink,
    mut ctx: Ctx,
    opts: Options,
    up: mpsc::UnboundedSender<Result<Opened, SessionError>>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    words: oneshot::Sender<Vec<String>>,
) {
    let cmd = sig.cmd.clone();
    let mut words = Some(words);
    let mut signal_up = true;
    let end = loop {
        let wake = ctx.next_deadline();
        let opened = async {
            match ctx.opening.as_mut() {
                Some(rx) => rx.await,
                None => std::future::pending().await,
            }
        };
        let rtc_ev = async {
            match ctx.rtc_rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let r = tokio::select! {
            ev = next(&mut sig), if signal_up => match ev {
                Ok(ev) => on_signal(&mut ctx, &cmd, ev, &opts).await,
                // Losing signaling does not close a working channel; it
                // only leaves no way to reconnect.
                Err(e) if ctx.connected_once && ctx.broken_since.is_none() => {
                    debug(format_args!("signaling lost: {e}"));
                    signal_up = false;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Some(ev) = rtc_ev => on_rtc(&mut ctx, &cmd, ev, &opts).await,
            r = opened => {
                ctx.opening = None;
                match r {
                    Ok(Ok(link)) => {
                        if let Some(w) = words.take() {
                            if let Some(s) = &ctx.session {
                                let _ = w.send(s.verification_words());
                            }
                        }
                        ctx.on_opened();
                        let pc = ctx.pc.clone().expect("a channel comes with its connection");
                        let _ = up.send(Ok(Opened { link, pc, epoch: ctx.epoch }));
                        Ok(())
                    }
                    // The channel closed before it opened: this epoch failed.
                    _ => on_break(&mut ctx, &cmd, &opts, "the channel did not open").await,
                }
            }
            c = ctl.recv() => match c {
                Some(Ctl::Broke(epoch)) if epoch == ctx.epoch => {
                    on_break(&mut ctx, &cmd, &opts, "the transfer's channel closed").await
                }
                Some(Ctl::Broke(_)) => Ok(()),
                Some(Ctl::Abort(reason)) => {
                    seal(&mut ctx, &cmd, json!({"kind": "abort", "reason": reason}));
                    Err(SessionError::Ended)
                }
                None => Err(SessionError::Ended),
            },
            _ = timer => on_timer(&mut ctx, &cmd, &opts).await,
        };
        if let Err(e) = r {
            break e;
        }
        if !signal_up && ctx.broken_since.is_some() {
            break SessionError::Signal(crate::ws::WsError::Closed);
        }
    };
    debug(format_args!("session ends: {end}"));
    if let Some(reason) = abort_reason(&end) {
        // Sealed once the session exists; before it only an unsealed abort
        // can go (and the peer honours it only then).
        if ctx.session.is_some() {
            seal(&mut ctx, &cmd, json!({"kind": "abort", "reason": reason}));
        } else {
            let _ = cmd.send(Cmd::Send(
                json!({"t": "abort", "reason": reason}).to_string(),
            ));
        }
        let _ = cmd.send(Cmd::Leave);
        // The process may exit as soon as we report: wait until the server
        // confirms the leave, so the abort before it was delivered.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(ev) = sig.events.recv().await {
                if matches!(ev, Ok(Event::Left) | Err(_)) {
                    return;
                }
            }
        })
        .await;
    }
    if let Some(pc) = ctx.pc.take() {
        let _ = pc.close().await;
    }
    let _ = up.send(Err(end));
}

impl Ctx {
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.broken_since.map(|t| t + RECONNECT_FOR),
            self.attempt_until,
            self.next_attempt,
            self.disconnected_since.map(|t| t + DISCONNECTED_FOR),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_opened(&mut self) {
        self.connected_once = true;
        self.broken_since = None;
        self.attempt_until = None;
        self.next_attempt = None;
        self.failed_attempts = 0;
        self.disconnected_since = None;
    }

    /// Drops the current connection (its channel and events with it).
    fn drop_connection(&mut self) {
        self.opening = None;
        self.guard = None;
        self.rtc_rx = None;
        self.disconnected_since = None;
        if let Some(pc) = self.pc.take() {
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

async fn on_timer(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    opts: &Options,
) -> Result<(), SessionError> {
    let now = Instant::now();
    if ctx.broken_since.is_some_and(|t| now >= t + RECONNECT_FOR) {
        return Err(SessionError::ReconnectTimedOut);
    }
    if ctx
        .disconnected_since
        .is_some_and(|t| now >= t + DISCONNECTED_FOR)
    {
        ctx.disconnected_since = None;
        return on_break(ctx, cmd, opts, "disconnected for 4 s").await;
    }
    if ctx.attempt_until.is_some_and(|t| now >= t) {
        return on_break(ctx, cmd, opts, "the new connection did not open in time").await;
    }
    if ctx.next_attempt.is_some_and(|t| now >= t) {
        ctx.next_attempt = None;
        return offer(ctx, cmd, opts).await;
    }
    Ok(())
}

/// The current connection broke (or an attempt to replace it failed).
async fn on_break(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    _opts: &Options,
    why: &str,
) -> Result<(), SessionError> {
    if !ctx.connected_once {
        // Before the first channel there is nothing to resume.
        return Err(SessionError::Failed);
    }
    debug(format_args!("epoch {} broke: {why}", ctx.epoch));
    let now = Instant::now();
    if ctx.broken_since.is_none() {
        ctx.broken_since = Some(now);
    } else if ctx.role == Role::A && ctx.attempt_until.is_some() {
        ctx.failed_attempts += 1;
    }
    ctx.drop_connection();
    ctx.attempt_until = None;
    match ctx.role {
        Role::A => {
            if ctx.next_attempt.is_none() {
                ctx.next_attempt = Some(if ctx.failed_attempts == 0 {
                    now
                } else {
                    now + retry_delay(ctx.failed_attempts)
                });
            }
        }
        // The creator makes every connection; tell it this one broke.
        Role::B => {
            let epoch = ctx.epoch;
            seal(ctx, cmd, json!({"kind": "reconnect", "epoch": epoch}));
        }
    }
    Ok(())
}

fn seal(ctx: &mut Ctx, cmd: &mpsc::UnboundedSender<Cmd>, v: Value) {
    if let Some(s) = ctx.session.as_mut() {
        let _ = cmd.send(Cmd::Send(s.seal(v.to_string().as_bytes()).to_json()));
    }
}

/// `TALLOW_DEBUG=1`: what the session does, on stderr.
pub(crate) fn debug(what: std::fmt::Arguments<'_>) {
    if std::env::var_os("TALLOW_DEBUG").is_some() {
        eprintln!("tallow: {what}");
    }
}

async fn on_rtc(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    ev: RtcEvent,
    opts: &Options,
) -> Result<(), SessionError> {
    match &ev {
        RtcEvent::Candidate(c) => debug(format_args!("local candidate {}", c.candidate)),
        RtcEvent::DataChannel(_) => debug(format_args!("the peer's data channel")),
        RtcEvent::State(s) => debug(format_args!("connection {s} (epoch {})", ctx.epoch)),
    }
    match ev {
        RtcEvent::Candidate(c) => {
            let candidate = serde_json::to_value(&c).unwrap_or(Value::Null);
            let epoch = ctx.epoch;
            seal(
                ctx,
                cmd,
                json!({"kind": "ice", "candidate": candidate, "epoch": epoch}),
            );
        }
        RtcEvent::DataChannel(dc) => open(ctx, dc),
        RtcEvent::State(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) => {
            return on_break(ctx, cmd, opts, "the connection failed").await;
        }
        RtcEvent::State(RTCPeerConnectionState::Disconnected) => {
            ctx.disconnected_since.get_or_insert_with(Instant::now);
        }
        RtcEvent::State(_) => ctx.disconnected_since = None,
    }
    Ok(())
}

async fn on_signal(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    ev: Event,
    opts: &Options,
) -> Result<(), SessionError> {
    match ev {
        Event::Paired { ice_servers } => {
            if !matches!(ctx.hand, Hand::Idle) || ctx.session.is_some() {
                return Ok(()); // paired once
            }
            ctx.ice = ice_servers;
            if ctx.role == Role::A {
                let (init, hello) = Initiator::start(&ctx.code, &ctx.sid, &Randomness::fresh())?;
                ctx.hand = Hand::SentHello(init);
                let _ = cmd.send(Cmd::Hello(hello.to_json()));
            }
        }
        Event::Message(body) => on_peer(ctx, cmd, &body, opts).await?,
        // Gone for good: a working channel may still finish, but nothing
        // can be set up again.
        Event::PeerLeft { .. } if !ctx.connected_once || ctx.broken_since.is_some() => {
            return Err(SessionError::PeerLeft)
        }
        Event::Error {
            code,
            message,
            retryable: false,
        } => {
            return Err(SessionError::Refused {
                code: crate::output::neutral(&code, 64),
                message: crate::output::neutral(&message, 300),
            })
        }
        _ => {}
    }
    Ok(())
}

async fn on_peer(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    body: &str,
    opts: &Options,
) -> Result<(), SessionError> {
    let raw: Value =
        serde_json::from_str(body).map_err(|_| SessionError::Malformed("not JSON".into()))?;
    if raw["t"] == "abort" {
        // Unsealed: honoured only before the session (anyone can forge it after).
        if ctx.session.is_none() {
            return Err(SessionError::PeerAborted(
                raw["reason"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        return Ok(());
    }
    let msg = Message::from_json(body)?;
    if let Message::Sealed { .. } = msg {
        let Some(s) = ctx.session.as_mut() else {
            return Err(SessionError::Malformed("sealed before the session".into()));
        };
        let plain = s.open(&msg)?;
        let v: Value = serde_json::from_slice(&plain)
            .map_err(|_| SessionError::Malformed("a sealed message is not JSON".into()))?;
        return on_sealed(ctx, cmd, v, opts).await;
    }
    if ctx.session.is_some() {
        return Err(SessionError::OutOfTurn(
            "a handshake message after the session",
        ));
    }
    match (std::mem::replace(&mut ctx.hand, Hand::Idle), &msg) {
        (Hand::Idle, Message::Hello { .. }) if ctx.role == Role::B => {
            let (resp, reply) =
                Responder::respond(&ctx.code, &ctx.sid, &msg, &Randomness::fresh())?;
            ctx.hand = Hand::SentReply(resp);
            let _ = cmd.send(Cmd::Send(reply.to_json()));
        }
        (Hand::SentHello(init), Message::Reply { .. }) => {
            let (session, confirm) = init.finish(&msg)?;
            let _ = cmd.send(Cmd::Send(confirm.to_json()));
            ctx.session = Some(session);
            offer(ctx, cmd, opts).await?;
        }
        (Hand::SentReply(resp), Message::Confirm { .. }) => {
            ctx.session = Some(resp.finish(&msg)?);
        }
        _ => return Err(SessionError::OutOfTurn("a handshake message out of turn")),
    }
    Ok(())
}

/// A: the connection of the next epoch, its channel and its offer (with a
/// new `dk`): the first one, and each attempt after a break.
async fn offer(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    opts: &Options,
) -> Result<(), SessionError> {
    let (pc, rx) = rtc::peer_connection(&ctx.ice, opts.relay_only, &opts.bind).await?;
    ctx.dk = rand::random();
    let dc = pc.create_data_channel("file", None).await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let sdp = pc.local_description().await.ok_or(SessionError::Failed)?;
    ctx.pc = Some(pc);
    ctx.rtc_rx = Some(rx);
    ctx.epoch += 1;
    if ctx.connected_once {
        ctx.attempt_until = Some(Instant::now() + ATTEMPT_FOR);
    }
    debug(format_args!("offering epoch {}", ctx.epoch));
    let dk = B64.encode(ctx.dk);
    let epoch = ctx.epoch;
    seal(
        ctx,
        cmd,
        json!({"kind": "offer", "sdp": sdp, "epoch": epoch, "dk": dk}),
    );
    // The creator's channel is its own: the handler sees only the peer's.
    open(ctx, dc);
    Ok(())
}

/// Opens `dc` in its own task, so signaling goes on meanwhile.
fn open(ctx: &mut Ctx, dc: Arc<dyn DataChannel>) {
    let (tx, rx) = oneshot::channel();
    let (dk, role) = (ctx.dk, ctx.role);
    let (guard, alive) = LinkGuard::new();
    ctx.guard = Some(guard);
    tokio::spawn(async move {
        let _ = tx.send(Link::open(dc, &dk, role, alive).await);
    });
    ctx.opening = Some(rx);
}

/// A sealed message of the session (docs/PROTOCOL.md, "What the web client
/// seals").
async fn on_sealed(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    v: Value,
    opts: &Options,
) -> Result<(), SessionError> {
    let epoch = v["epoch"].as_u64().unwrap_or(1);
    let bad = |what: &str| SessionError::Malformed(what.to_owned());
    debug(format_args!("sealed {} (epoch {epoch})", v["kind"]));
    match v["kind"].as_str().unwrap_or_default() {
        "offer" => {
            if ctx.role != Role::B || epoch <= ctx.epoch {
                // A replayed or stale offer: the web client ignores it too.
                return Ok(());
            }
            let dk = v["dk"]
                .as_str()
                .and_then(|d| B64.decode(d).ok())
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| bad("an offer without a 32-byte data key"))?;
            let sdp: RTCSessionDescription =
                serde_json::from_value(v["sdp"].clone()).map_err(|_| bad("an offer's sdp"))?;
            if ctx.connected_once && ctx.broken_since.is_none() {
                // The creator saw the break first.
                ctx.broken_since = Some(Instant::now());
            }
            ctx.drop_connection();
            ctx.epoch = epoch;
            ctx.dk = dk;
            let (pc, rx) = rtc::peer_connection(&ctx.ice, opts.relay_only, &opts.bind).await?;
            pc.set_remote_description(sdp).await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            let sdp = pc.local_description().await.ok_or(SessionError::Failed)?;
            ctx.pc = Some(pc);
            ctx.rtc_rx = Some(rx);
            seal(
                ctx,
                cmd,
                json!({"kind": "answer", "sdp": sdp, "epoch": epoch}),
            );
        }
        "answer" if ctx.role == Role::A && epoch == ctx.epoch => {
            let sdp: RTCSessionDescription =
                serde_json::from_value(v["sdp"].clone()).map_err(|_| bad("an answer's sdp"))?;
            if let Some(pc) = &ctx.pc {
                pc.set_remote_description(sdp).await?;
            }
        }
        "ice" if epoch == ctx.epoch => {
            let c: RTCIceCandidateInit = serde_json::from_value(v["candidate"].clone())
                .map_err(|_| bad("an ice candidate"))?;
            if let Some(pc) = &ctx.pc {
                // A candidate the connection cannot use is not the end of it.
                if let Err(e) = pc.add_ice_candidate(c).await {
                    debug(format_args!("candidate refused: {e}"));
                }
            }
        }
        // B saw this epoch break (or fail to come up) first.
        "reconnect"
            if ctx.role == Role::A
                && epoch == ctx.epoch
                && ctx.connected_once
                && (ctx.broken_since.is_none() || ctx.attempt_until.is_some()) =>
        {
            return on_break(ctx, cmd, opts, "the peer says it broke").await;
        }
        "abort" => {
            return Err(SessionError::PeerAborted(
                v["reason"].as_str().unwrap_or_default().to_owned(),
            ))
        }
        _ => {}
    }
    Ok(())
}
