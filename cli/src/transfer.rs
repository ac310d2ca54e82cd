//! One transfer over a link, driving tallow-peer's machines: the sender's
//! (`Outgoing`) reads blocks from disk, the receiver's (`Incoming`) says
//! what to write, hash and read back. The machines decide; this only does
//! the I/O they ask for.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tallow_peer::control::{self, encode_frame, OfferedFile, MAX_PAYLOAD};
use tallow_peer::incoming::{InAction, InState, Incoming as InMachine};
use tallow_peer::outgoing::{OutAction, Outgoing};
use tallow_peer::{ControlError, RecordType};

use crate::channel::{Incoming, Link, LinkError};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{}: {}", .0.kind(), .0)]
    Control(#[from] ControlError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the transfer stopped: {0}")]
    Stopped(String),
    #[error("{0} exists already; not overwriting it")]
    Exists(PathBuf),
}

/// What a finished transfer moved: each file's path and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub files: Vec<(PathBuf, String)>,
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

async fn control(link: &mut Link, m: &control::Message) -> Result<(), LinkError> {
    link.send(RecordType::Control, m.to_json().as_bytes()).await
}

/// Sends one file; returns once the receiver confirmed it.
pub async fn send_file(link: &mut Link, path: &Path) -> Result<Moved, TransferError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut out = Outgoing::new(&random_id(), &[OfferedFile { path: name, size }]);
    let mut whole = Sha256::new();
    let mut confirmed = None;
    let mut pending = out.on_channel()?;
    loop {
        for a in std::mem::take(&mut pending) {
            match a {
                OutAction::Send(m) => control(link, &m).await?,
                OutAction::FileConfirmed { sha256, .. } => confirmed = Some(sha256),
                OutAction::Done => {
                    link.drain(std::time::Duration::from_secs(5)).await;
                    let sha = confirmed.clone().unwrap_or_default();
                    return Ok(Moved {
                        files: vec![(path.to_owned(), sha)],
                    });
                }
                OutAction::Stopped { why, .. } => return Err(TransferError::Stopped(why)),
                OutAction::Accepted | OutAction::Resumed => {}
            }
        }
        // The receiver's messages first, then at most one block.
        while let Some(rec) = link.try_recv()? {
            pending.extend(on_sender_record(&mut out, rec)?);
        }
        if !pending.is_empty() {
            continue;
        }
        let Some(b) = out.next_block() else {
            let rec = link.recv().await?;
            pending.extend(on_sender_record(&mut out, rec)?);
            continue;
        };
        let mut buf = vec![0u8; b.length as usize];
        file.read_exact_at(&mut buf, b.offset)?;
        if b.first {
            whole.update(&buf);
            pending.extend(out.digested(b.file, b.block, &hex::encode(Sha256::digest(&buf)))?);
            if out.blocks(b.file) == Some(b.block + 1) {
                pending.extend(out.whole(b.file, &hex::encode(whole.clone().finalize())));
            } else {
                pending.extend(out.flush_hashes());
            }
        }
        // The block's digest goes before its frames.
        for a in std::mem::take(&mut pending) {
            match a {
                OutAction::Send(m) => control(link, &m).await?,
                other => pending.push(other),
            }
        }
        for (i, chunk) in buf.chunks(MAX_PAYLOAD).enumerate() {
            let frame = encode_frame(b.file, b.offset + (i * MAX_PAYLOAD) as u64, chunk);
            link.send(RecordType::Data, &frame).await?;
        }
    }
}

fn on_sender_record(out: &mut Outgoing, rec: Incoming) -> Result<Vec<OutAction>, TransferError> {
    match rec {
        Incoming::Control(bytes) => {
            let m = tallow_peer::parse_message(&bytes)?;
            Ok(out.on_message(&m)?)
        }
        Incoming::Data(_) => {
            Err(ControlError::UnexpectedData("a data frame to the sender".into()).into())
        }
    }
}

/// Receives one offer into `dir`, accepting it (`--yes`); never overwrites.
pub async fn receive(link: &mut Link, dir: &Path) -> Result<Moved, TransferError> {
    let mut m = InMachine::new();
    let mut files: Vec<(PathBuf, File)> = Vec::new();
    let mut done: Vec<(PathBuf, String)> = Vec::new();
    let mut pending = m.on_channel();
    loop {
        while let Some(a) = pending.pop() {
            // Actions in order: `pending` is kept reversed below.
            match a {
                InAction::Send(msg) => control(link, &msg).await?,
                InAction::Offer(offer) => {
                    for f in &offer.files {
                        let path = f.parts.iter().fold(dir.to_owned(), |p, c| p.join(c));
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .read(true)
                            .create_new(true)
                            .open(&path)
                            .map_err(|e| match e.kind() {
                                std::io::ErrorKind::AlreadyExists => {
                                    TransferError::Exists(path.clone())
                                }
                                _ => e.into(),
                            })?;
                        files.push((path, file));
                    }
                    push(&mut pending, m.accept()?);
                }
                InAction::Write { file, offset, data } => {
                    files[file as usize].1.write_all_at(&data, offset)?;
                }
                InAction::Digest { file, block, data } => {
                    let d = hex::encode(Sha256::digest(&data));
                    push(
                        &mut pending,
                        m.block_digest(file, block, &d, Some(Arc::clone(&data)))?,
                    );
                }
                InAction::ReadBack { file, from } => {
                    let f = &files[file as usize].1;
                    let len = f.metadata()?.len();
                    let mut at = from;
                    let mut buf = vec![0u8; 1 << 20];
                    while at < len {
                        let n = f.read_at(&mut buf, at)?;
                        if n == 0 {
                            break;
                        }
                        m.read_back(file, &buf[..n]);
                        at += n as u64;
                    }
                    push(&mut pending, m.read_back_done(file)?);
                }
                InAction::FileDone { file, ok, sha256 } => {
                    if ok {
                        done.push((files[file as usize].0.clone(), sha256));
                    }
                }
                InAction::Done => {
                    link.drain(std::time::Duration::from_secs(5)).await;
                    return Ok(Moved { files: done });
                }
                InAction::Stopped { why, .. } => return Err(TransferError::Stopped(why)),
            }
        }
        if m.state() == InState::Done {
            return Ok(Moved { files: done });
        }
        match link.recv().await? {
            Incoming::Control(bytes) => push(&mut pending, m.on_record(&bytes)?),
            Incoming::Data(frame) => {
                let f = control::decode_frame(&frame)?;
                let n = f.data.len() as u64;
                let mut acts = m.on_data(&f)?;
                // Finished with the frame once its writes are done: they come
                // first in `acts`, and the ack after them.
                acts.extend(m.consumed(n));
                push(&mut pending, acts);
            }
        }
    }
}

/// Queues `acts` ahead of what is pending (a stack, popped in order).
fn push(pending: &mut Vec<InAction>, acts: Vec<InAction>) {
    for a in acts.into_iter().rev() {
        pending.push(a);
    }
}
