//! The thin WebSocket shell around `signal::Signal`: one task owns the
//! socket, writes the frames the machine queues and hands its events on.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::signal::{Event, Signal, SignalError};

#[derive(Debug)]
pub enum Cmd {
    Create,
    Join(String),
    Hello(String),
    Send(String),
    Leave,
}

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("cannot reach the signaling server: {0}")]
    Connect(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Protocol(#[from] SignalError),
    #[error("the connection to the signaling server closed")]
    Closed,
    #[error("the signaling server did not answer within {0} s")]
    Timeout(u64),
}

/// Our handle on the signaling connection.
pub struct SignalLink {
    pub cmd: mpsc::UnboundedSender<Cmd>,
    pub events: mpsc::UnboundedReceiver<Result<Event, WsError>>,
}

/// How long the first connection to the server may take.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(15);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` (ws:// or wss://, the server's /signal). Once we hold
/// a seat, a dropped or silent connection is replaced and the seat resumed
/// for as long as the server keeps it (`resume_grace_secs`); the session
/// above sees only the peer's messages, in order, once each.
pub async fn connect(url: &str) -> Result<SignalLink, WsError> {
    // A server that takes the TCP connection but never answers the upgrade
    // must not hang the CLI without a word.
    let (ws, _) = tokio::time::timeout(CONNECT_WITHIN, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| WsError::Timeout(CONNECT_WITHIN.as_secs()))??;
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<Cmd>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(url.to_owned(), ws, cmd_rx, ev_tx));
    Ok(SignalLink {
        cmd: cmd_tx,
        events: ev_rx,
    })
}

type Events = mpsc::UnboundedSender<Result<Event, WsError>>;

enum Ended {
    /// Our side is done (the session dropped its handle).
    Quit,
    /// The socket closed, failed or went silent.
    Dropped,
}

/// The server's timing, from `welcome`.
struct Timing {
    ping: Duration,
    grace: Duration,
}

async fn drive(url: String, mut ws: Socket, mut cmds: mpsc::UnboundedReceiver<Cmd>, ev: Events) {
    let mut s = Signal::new();
    let mut timing = Timing {
        ping: Duration::from_secs(25),
        grace: Duration::from_secs(120),
    };
    let mut resuming = false;
    loop {
        if let Ended::Quit = serve(&mut ws, &mut s, &mut cmds, &ev, &mut timing, resuming).await {
            let _ = ws.close(None).await;
            return;
        }
        if !s.has_seat() {
            let _ = ev.send(Err(WsError::Closed));
            return;
        }
        crate::session::debug(format_args!("signaling connection lost: resuming the seat"));
        match redial(&url, &mut s, &mut cmds, timing.grace).await {
            Some(new) => ws = new,
            None => {
                let _ = ev.send(Err(WsError::Closed));
                return;
            }
        }
        resuming = true;
    }
}

/// Dials again with backoff until `grace` runs out, still taking the
/// session's commands (its `send`s wait in the machine for `resumed`).
async fn redial(
    url: &str,
    s: &mut Signal,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    grace: Duration,
) -> Option<Socket> {
    let until = Instant::now() + grace;
    let mut backoff = Duration::from_millis(250);
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        let attempt = tokio::time::timeout(left.min(Duration::from_secs(5)), async {
            tokio_tungstenite::connect_async(url).await
        });
        if let Ok(Ok((ws, _))) = attempt.await {
            return Some(ws);
        }
        let wake = Instant::now() + backoff;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => break,
                cmd = cmds.recv() => match cmd {
                    Some(c) => apply(s, c),
                    None => return None,
                },
            }
        }
    }
}

fn apply(s: &mut Signal, cmd: Cmd) {
    match cmd {
        Cmd::Create => s.create(),
        Cmd::Join(n) => s.join(&n),
        Cmd::Hello(b) => s.hello(b),
        Cmd::Send(b) => s.send(b),
        Cmd::Leave => s.leave(),
    }
}

/// One connection, until it ends. The server pings every
/// `ping_interval_secs`; a connection silent for two of those and a bit is
/// dead even if TCP has not said so (a cut path never does).
async fn serve(
    ws: &mut Socket,
    s: &mut Signal,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    ev: &Events,
    timing: &mut Timing,
    mut resuming: bool,
) -> Ended {
    let mut heard = Instant::now();
    loop {
        let silent_until = heard + timing.ping * 2 + Duration::from_secs(5);
        tokio::select! {
            frame = ws.next() => {
                heard = Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ended::Dropped,
                    Some(Ok(_)) => continue,
                };
                match s.on_text(text.as_str()) {
                    Ok(evs) => {
                        for e in evs {
                            if let Event::Welcome { ping_interval_secs, resume_grace_secs } = e {
                                timing.ping = Duration::from_secs(ping_interval_secs.max(1));
                                timing.grace = Duration::from_secs(resume_grace_secs);
                                if std::mem::take(&mut resuming) {
                                    s.reconnected();
                                }
                            }
                            let _ = ev.send(Ok(e));
                        }
                    }
                    Err(e) => {
                        let _ = ev.send(Err(e.into()));
                    }
                }
            }
            cmd = cmds.recv(), if !resuming && !s.is_resuming() => match cmd {
                Some(c) => apply(s, c),
                None => return Ended::Quit,
            },
            _ = tokio::time::sleep_until(silent_until.into()) => return Ended::Dropped,
        }
        while let Some(f) = s.poll_frame() {
            if ws.send(Message::text(f)).await.is_err() {
                return Ended::Dropped;
            }
        }
    }
}
