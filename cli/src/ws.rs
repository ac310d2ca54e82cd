//! The thin WebSocket shell around `signal::Signal`: one task owns the
//! socket, writes the frames the machine queues and hands its events on.

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
}

/// Our handle on the signaling connection.
pub struct SignalLink {
    pub cmd: mpsc::UnboundedSender<Cmd>,
    pub events: mpsc::UnboundedReceiver<Result<Event, WsError>>,
}

/// Connects to `url` (ws:// or wss://, the server's /signal).
pub async fn connect(url: &str) -> Result<SignalLink, WsError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut s = Signal::new();
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            let _ = ev_tx.send(Err(WsError::Closed));
                            return;
                        }
                        Some(Ok(_)) => continue,
                    };
                    match s.on_text(text.as_str()) {
                        Ok(evs) => evs.into_iter().for_each(|e| { let _ = ev_tx.send(Ok(e)); }),
                        Err(e) => { let _ = ev_tx.send(Err(e.into())); }
                    }
                }
                cmd = cmd_rx.recv() => match cmd {
                    Some(Cmd::Create) => s.create(),
                    Some(Cmd::Join(n)) => s.join(&n),
                    Some(Cmd::Hello(b)) => s.hello(b),
                    Some(Cmd::Send(b)) => s.send(b),
                    Some(Cmd::Leave) => s.leave(),
                    None => {
                        let _ = ws.close(None).await;
                        return;
                    }
                },
            }
            while let Some(f) = s.poll_frame() {
                if ws.send(Message::text(f)).await.is_err() {
                    let _ = ev_tx.send(Err(WsError::Closed));
                    return;
                }
            }
        }
    });
    Ok(SignalLink {
        cmd: cmd_tx,
        events: ev_rx,
    })
}
