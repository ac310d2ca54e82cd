//! A data channel carrying sealed records (docs/PROTOCOL.md, "Records"),
//! as web/src/link.js: control messages as JSON, data frames as bytes.
//! A reader task turns the channel's events into a queue, so a sender can
//! look for the receiver's messages between blocks without losing one.

use std::sync::Arc;

use bytes::BytesMut;
use tallow_peer::{RecordError, RecordType, Records, Role};
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// What arrived on the channel, opened.
pub enum Incoming {
    Control(Vec<u8>),
    Data(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("a record did not open: {0}")]
    Record(#[from] RecordError),
    #[error("a text frame on a channel of sealed records")]
    Text,
    #[error("the data channel failed: {0}")]
    Channel(#[from] webrtc::error::Error),
    #[error("the data channel closed")]
    Closed,
}

pub struct Link {
    dc: Arc<dyn DataChannel>,
    records: Records,
    rx: mpsc::UnboundedReceiver<(bool, BytesMut)>,
    alive: watch::Receiver<()>,
}

/// The session's hold on a link: dropping it ends the link (its `recv`
/// and a `send` waiting on a full buffer return `Closed`). A closed
/// webrtc-rs connection does not end its channel's events, so the session
/// ends the link itself when it drops or replaces the connection.
pub struct LinkGuard(#[allow(dead_code)] watch::Sender<()>);

impl LinkGuard {
    pub fn new() -> (Self, watch::Receiver<()>) {
        let (tx, rx) = watch::channel(());
        (LinkGuard(tx), rx)
    }
}

impl Link {
    /// Waits for `dc` to open, then reads it in the background.
    pub async fn open(
        dc: Arc<dyn DataChannel>,
        dk: &[u8; 32],
        role: Role,
        alive: watch::Receiver<()>,
    ) -> Result<Self, LinkError> {
        let mut ended = alive.clone();
        loop {
            let ev = tokio::select! {
                ev = dc.poll() => ev,
                _ = ended.changed() => return Err(LinkError::Closed),
            };
            match ev {
                Some(DataChannelEvent::OnOpen) => break,
                Some(DataChannelEvent::OnClose) | None => return Err(LinkError::Closed),
                Some(_) => {}
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = dc.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    ev = reader.poll() => ev,
                    _ = ended.changed() => return,
                };
                let Some(ev) = ev else { return };
                let go_on = match ev {
                    DataChannelEvent::OnMessage(m) => tx.send((m.is_string, m.data)).is_ok(),
                    DataChannelEvent::OnClose => false,
                    _ => true,
                };
                if !go_on {
                    return;
                }
            }
        });
        Ok(Link {
            dc,
            records: Records::new(dk, role),
            rx,
            alive,
        })
    }

    fn opened(&mut self, (text, data): (bool, BytesMut)) -> Result<Incoming, LinkError> {
        if text {
            return Err(LinkError::Text);
        }
        crate::session::debug(format_args!("record of {} bytes", data.len()));
        let (ty, plain) = self.records.open(&data)?;
        Ok(match ty {
            RecordType::Control => Incoming::Control(plain),
            RecordType::Data => Incoming::Data(plain),
        })
    }

    /// The next record, waiting for it.
    pub async fn recv(&mut self) -> Result<Incoming, LinkError> {
        let m = self.rx.recv().await.ok_or(LinkError::Closed)?;
        self.opened(m)
    }

    /// The next record if one is already here.
    pub fn try_recv(&mut self) -> Result<Option<Incoming>, LinkError> {
        match self.rx.try_recv() {
            Ok(m) => self.opened(m).map(Some),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(LinkError::Closed),
        }
    }

    /// Seals and sends; waits while the channel's buffer is full.
    pub async fn send(&mut self, ty: RecordType, plain: &[u8]) -> Result<(), LinkError> {
        let rec = self.records.seal(ty, plain)?;
        let mut ended = self.alive.clone();
        tokio::select! {
            r = self.dc.send(BytesMut::from(&rec[..])) => r?,
            _ = ended.changed() => return Err(LinkError::Closed),
        }
        Ok(())
    }

    /// Waits until what we sent left the buffer (at most `within`).
    pub async fn drain(&self, within: std::time::Duration) {
        let until = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < until {
            match self.dc.outstanding_bytes().await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
}
