//! One 1:1 session as the web client runs it (web/src/peer.js): the
//! handshake over /signal, then sealed `offer`/`answer`/`ice` messages
//! that set up one peer connection (epoch 1, offered by the creator with
//! its data key `dk`), until its data channel opens.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};
use tallow_peer::handshake::{Initiator, Message, Randomness, Responder, Session};
use tallow_peer::Role;
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

use crate::channel::Link;
use crate::rtc::{self, RtcEvent};
use crate::signal::{Event, IceServer};
use crate::ws::{Cmd, SignalLink};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Signal(#[from] crate::ws::WsError),
    #[error("the server refused: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("the handshake failed: {0}")]
    Handshake(#[from] tallow_peer::HandshakeError),
    #[error("your peer stopped the session ({0})")]
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
}

pub struct Options {
    pub relay_only: bool,
    pub bind: String,
}

/// A session whose data channel is open. Keep it alive while the link is
/// used: it holds the peer connection and the signaling connection.
pub struct Connected {
    pub link: Link,
    pub words: Vec<String>,
    pub pc: Arc<dyn PeerConnection>,
    signal: mpsc::UnboundedSender<Cmd>,
    _background: tokio::task::JoinHandle<()>,
}

impl Connected {
    pub fn leave(&self) {
        let _ = self.signal.send(Cmd::Leave);
    }

    /// After `link` broke (its channel closed or the connection failed):
    /// waits for the session to bring up the next peer connection (a new
    /// epoch, docs/PROTOCOL.md "Resume") and returns its link. An error
    /// when the reconnect budget (3 minutes) is spent, or the peer left or
    /// aborted. The transfer then calls its machine's `on_channel` again.
    pub async fn reconnect(&mut self) -> Result<Link, SessionError> {
        // Not implemented yet: the session gives up on the first break.
        Err(SessionError::Failed)
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
    run(sig, Role::A, code, sid, opts).await
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
    run(sig, Role::B, code, sid, opts).await
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
        Event::Error { code, message, .. } => Err(SessionError::Refused { code, message }),
        _ => Ok(()),
    }
}

async fn run(
    mut sig: SignalLink,
    role: Role,
    code: String,
    sid: String,
    opts: &Options,
) -> Result<Connected, SessionError> {
    let mut ctx = Ctx {
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
    };
    let cmd = sig.cmd.clone();
    // Until the channel opens: signaling and the peer connection's events.
    let link = loop {
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
        tokio::select! {
            ev = next(&mut sig) => on_signal(&mut ctx, &cmd, ev?, opts).await?,
            Some(ev) = rtc_ev => on_rtc(&mut ctx, &cmd, ev)?,
            r = opened => break r.map_err(|_| SessionError::Failed)??,
        }
    };
    ctx.opening = None;
    let session = ctx
        .session
        .take()
        .expect("a channel comes after the session");
    let words = session.verification_words();
    let pc = ctx.pc.clone().expect("a channel comes with its connection");
    // Late candidates keep flowing both ways while the transfer runs.
    let background = tokio::spawn(background(sig, ctx, session, opts.relay_only));
    Ok(Connected {
        link,
        words,
        pc,
        signal: cmd,
        _background: background,
    })
}

async fn background(mut sig: SignalLink, mut ctx: Ctx, session: Session, relay_only: bool) {
    ctx.session = Some(session);
    let opts = Options {
        relay_only,
        bind: String::new(),
    };
    let cmd = sig.cmd.clone();
    loop {
        let rtc_ev = async {
            match ctx.rtc_rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let r = tokio::select! {
            ev = next(&mut sig) => match ev {
                Ok(ev) => on_signal(&mut ctx, &cmd, ev, &opts).await,
                Err(e) => Err(e),
            },
            Some(ev) = rtc_ev => on_rtc(&mut ctx, &cmd, ev),
        };
        // The transfer notices a broken path on its channel; here there is
        // nothing left to do once signaling ends.
        if r.is_err() {
            return;
        }
    }
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

fn on_rtc(
    ctx: &mut Ctx,
    cmd: &mpsc::UnboundedSender<Cmd>,
    ev: RtcEvent,
) -> Result<(), SessionError> {
    match &ev {
        RtcEvent::Candidate(c) => debug(format_args!("local candidate {}", c.candidate)),
        RtcEvent::DataChannel(_) => debug(format_args!("the peer's data channel")),
        RtcEvent::State(s) => debug(format_args!("connection {s}")),
    }
    match ev {
        RtcEvent::Candidate(c) => {
            let candidate = serde_json::to_value(&c).unwrap_or(Value::Null);
            seal(
                ctx,
                cmd,
                json!({"kind": "ice", "candidate": candidate, "epoch": 1}),
            );
        }
        RtcEvent::DataChannel(dc) => open(ctx, dc),
        RtcEvent::State(RTCPeerConnectionState::Failed) => return Err(SessionError::Failed),
        RtcEvent::State(_) => {}
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
        Event::PeerLeft { .. } if ctx.pc.is_none() => return Err(SessionError::PeerLeft),
        Event::Error {
            code,
            message,
            retryable: false,
        } => return Err(SessionError::Refused { code, message }),
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

/// A (the creator): the connection of epoch 1, its channel and its offer.
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
    ctx.epoch = 1;
    let dk = B64.encode(ctx.dk);
    seal(
        ctx,
        cmd,
        json!({"kind": "offer", "sdp": sdp, "epoch": 1, "dk": dk}),
    );
    // The creator's channel is its own: the handler sees only the peer's.
    open(ctx, dc);
    Ok(())
}

/// Opens `dc` in its own task, so signaling goes on meanwhile.
fn open(ctx: &mut Ctx, dc: Arc<dyn DataChannel>) {
    let (tx, rx) = oneshot::channel();
    let (dk, role) = (ctx.dk, ctx.role);
    tokio::spawn(async move {
        let _ = tx.send(Link::open(dc, &dk, role).await);
    });
    ctx.opening = Some(rx);
}

/// A sealed message of the session (docs/PROTOCOL.md, "What the web client
/// seals"): only epoch 1 here; reconnects are not implemented yet.
async fn on_sealed(
    ctx: &mut Ctx,
    _cmd: &mpsc::UnboundedSender<Cmd>,
    v: Value,
    opts: &Options,
) -> Result<(), SessionError> {
    let epoch = v["epoch"].as_u64().unwrap_or(1);
    let bad = |what: &str| SessionError::Malformed(what.to_owned());
    debug(format_args!("sealed {} (epoch {epoch})", v["kind"]));
    match v["kind"].as_str().unwrap_or_default() {
        "offer" => {
            if ctx.role != Role::B || epoch <= ctx.epoch {
                return Err(SessionError::OutOfTurn("an offer out of turn"));
            }
            let dk = v["dk"]
                .as_str()
                .and_then(|d| B64.decode(d).ok())
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| bad("an offer without a 32-byte data key"))?;
            let sdp: RTCSessionDescription =
                serde_json::from_value(v["sdp"].clone()).map_err(|_| bad("an offer's sdp"))?;
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
                _cmd,
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
                pc.add_ice_candidate(c).await?;
            }
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
