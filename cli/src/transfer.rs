//! One transfer over the session's link, driving tallow-peer's machines:
//! the sender's (`Outgoing`) reads blocks from disk, the receiver's
//! (`Incoming`) says what to write, hash and read back. The machines
//! decide; this does the I/O they ask for, and the shell's parts of
//! docs/PROTOCOL.md: a new link after a break ("Resume", through
//! `Connected::reconnect`), the 30 s stall rules ("Errors and stalls"),
//! and the user's Ctrl-C (a `cancel` to the peer).
//!
//! Received files are written under a temporary name (`.tallow-<hex>.part`
//! beside the final one) and get their final name only once the machine
//! verified their SHA-256; a file that failed, or a transfer that stopped,
//! leaves no temporary file behind. An existing file is never replaced
//! unless the user chose to overwrite it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tallow_peer::control::{self, encode_frame, MAX_PAYLOAD};
use tallow_peer::incoming::{InAction, InState, Incoming as InMachine, Offer};
use tallow_peer::outgoing::{By, OutAction, OutState, Outgoing};
use tallow_peer::paths::numbered;
use tallow_peer::{ControlError, RecordType};
use tokio::sync::watch;

use crate::channel::{Incoming, Link, LinkError};
use crate::offer::Source;
use crate::output::{neutral, Output};
use crate::prompt::{Conflict, Decide};
use crate::session::{Connected, SessionError};

/// Silence that ends a transfer ("Errors and stalls").
pub const STALL: Duration = Duration::from_secs(30);
/// How long a last word (a cancel, a decline) gets to leave.
const LAST_WORD: Duration = Duration::from_secs(3);
/// How long a side that stopped keeps reading after its last word.
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{}: {}", .0.kind(), .0)]
    Control(#[from] ControlError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The machine stopped: `by` the peer (a decline or cancel) or us.
    #[error("{why}")]
    Stopped { why: String, by: By },
    #[error("you declined the offer")]
    Declined,
    #[error("interrupted")]
    Interrupted,
    #[error("stalled: {0}")]
    Stalled(String),
    #[error("lost the connection to your peer: {0}")]
    Lost(SessionError),
}

/// What a finished transfer moved: each file's path and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub files: Vec<(PathBuf, String)>,
    pub bytes: u64,
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

async fn control(link: &mut Link, m: &control::Message) -> Result<(), LinkError> {
    link.send(RecordType::Control, m.to_json().as_bytes()).await
}

/// Whether an error is the link breaking (a reconnect may help).
fn broken(e: &TransferError) -> bool {
    matches!(
        e,
        TransferError::Link(LinkError::Closed | LinkError::Channel(_))
    )
}

/// Waits for Ctrl-C (the flag set to true).
async fn interrupted(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sends `msgs` (a cancel, a decline) and lets them leave, briefly: the
/// peer should hear why, but a dead link must not hold the exit. Then
/// reads on for a moment: a sender blocked on a full buffer gets to the
/// cancel only while we still take (and so acknowledge) its frames.
async fn last_word(link: &mut Link, msgs: &[control::Message]) {
    let _ = tokio::time::timeout(LAST_WORD, async {
        for m in msgs {
            if control(link, m).await.is_err() {
                return;
            }
        }
        link.drain(LAST_WORD).await;
    })
    .await;
    let _ = tokio::time::timeout(LINGER, async { while link.recv().await.is_ok() {} }).await;
}

/// The sealed `abort` that ends the session after our cancel, as the web
/// client words it (docs/PROTOCOL.md, "What the web client seals").
fn abort_reason(e: &TransferError) -> &'static str {
    match e {
        TransferError::Interrupted => "cancelled",
        TransferError::Control(c) => c.kind(),
        TransferError::Stalled(_) => "stalled",
        _ => "local",
    }
}

// ---------------------------------------------------------------- sending

struct Sender<'a> {
    out: Outgoing,
    files: &'a [Source],
    pending: VecDeque<OutAction>,
    /// The file being read for the first time, its whole-file hash.
    whole: Option<(u32, Sha256)>,
    open: Option<(u32, File)>,
    /// Per file, how far its blocks went out (for progress).
    sent_to: Vec<u64>,
    confirmed: Vec<Option<String>>,
}

/// Sends `files` (from `offer::collect`); returns once the receiver
/// confirmed every one, or the transfer stopped.
pub async fn send(
    conn: &mut Connected,
    files: &[Source],
    output: &mut Output,
    stop: &mut watch::Receiver<bool>,
) -> Result<Moved, TransferError> {
    let offered: Vec<_> = files.iter().map(Source::offered_file).collect();
    let mut s = Sender {
        out: Outgoing::new(&random_id(), &offered),
        files,
        pending: VecDeque::new(),
        whole: None,
        open: None,
        sent_to: vec![0; files.len()],
        confirmed: vec![None; files.len()],
    };
    output.offer(
        files
            .iter()
            .map(|f| (neutral(&f.offered, 200), f.size))
            .collect(),
        true,
    );
    s.pending.extend(s.out.on_channel()?);
    loop {
        let r = tokio::select! {
            r = s.run(&mut conn.link, output) => r,
            _ = interrupted(stop) => Err(TransferError::Interrupted),
        };
        match r {
            Ok(moved) => return Ok(moved),
            Err(e)
                if broken(&e) && !matches!(s.out.state(), OutState::Done | OutState::Stopped) =>
            {
                output.note(
                    "reconnecting",
                    &format!("The connection broke ({e}); reconnecting ..."),
                );
                tokio::select! {
                    l = conn.reconnect() => l.map_err(TransferError::Lost)?,
                    _ = interrupted(stop) => return Err(TransferError::Interrupted),
                };
                output.note("reconnected", "Reconnected; resuming");
                // What was queued for the old link is said again on the new
                // one as the machine sees fit; the rest stays.
                s.pending.retain(|a| !matches!(a, OutAction::Send(_)));
                s.pending.extend(s.out.on_channel()?);
            }
            Err(e) => {
                let reason = match &e {
                    TransferError::Interrupted => "cancelled by the user".to_owned(),
                    TransferError::Control(c) => format!("{}: {c}", c.kind()),
                    TransferError::Stalled(w) => format!("stalled: {w}"),
                    TransferError::Stopped { .. } => return Err(e),
                    other => format!("the sender failed: {other}"),
                };
                let msgs: Vec<_> = s
                    .out
                    .cancel(&reason)
                    .into_iter()
                    .filter_map(|a| match a {
                        OutAction::Send(m) => Some(m),
                        _ => None,
                    })
                    .collect();
                if !matches!(e, TransferError::Link(_)) {
                    last_word(&mut conn.link, &msgs).await;
                }
                conn.abort(abort_reason(&e));
                return Err(e);
            }
        }
    }
}

impl Sender<'_> {
    fn stall_limit(&self) -> Duration {
        // Plus 1 s per 50 MB sent and not yet confirmed: the receiver may
        // be reading it back to hash it ("Errors and stalls").
        let unconfirmed: u64 = self
            .sent_to
            .iter()
            .zip(&self.confirmed)
            .filter(|(_, c)| c.is_none())
            .map(|(s, _)| *s)
            .sum();
        STALL + Duration::from_secs(unconfirmed / 50_000_000)
    }

    /// Actions in order until none is left; `Some` when the transfer ended.
    async fn act(
        &mut self,
        link: &mut Link,
        output: &mut Output,
    ) -> Result<Option<Moved>, TransferError> {
        while let Some(a) = self.pending.pop_front() {
            match a {
                OutAction::Send(m) => {
                    if let Err(e) = self.timed_send(link, &m).await {
                        self.pending.push_front(OutAction::Send(m));
                        return Err(e);
                    }
                }
                OutAction::Accepted => output.started(),
                OutAction::Resumed => {}
                OutAction::FileConfirmed { file, sha256 } => {
                    let f = &self.files[file as usize];
                    output.file_done(file, &f.disk.display().to_string(), &sha256);
                    self.confirmed[file as usize] = Some(sha256);
                }
                OutAction::Done => {
                    link.drain(Duration::from_secs(5)).await;
                    let files = self
                        .files
                        .iter()
                        .zip(&self.confirmed)
                        .map(|(f, c)| (f.disk.clone(), c.clone().unwrap_or_default()))
                        .collect();
                    return Ok(Some(Moved {
                        files,
                        bytes: self.out.total(),
                    }));
                }
                OutAction::Stopped { why, by } => {
                    // A peer's reason: one neutralised line.
                    let why = crate::output::neutral(&why, 300);
                    return Err(TransferError::Stopped { why, by });
                }
            }
        }
        Ok(None)
    }

    async fn timed_send(&self, link: &mut Link, m: &control::Message) -> Result<(), TransferError> {
        let limit = self.stall_limit();
        tokio::time::timeout(limit, control(link, m))
            .await
            .map_err(|_| TransferError::Stalled("the channel's buffer did not drain".into()))??;
        Ok(())
    }

    async fn run(&mut self, link: &mut Link, output: &mut Output) -> Result<Moved, TransferError> {
        loop {
            if let Some(m) = self.act(link, output).await? {
                return Ok(m);
            }
            // The receiver's messages first, then at most one block.
            while let Some(rec) = link.try_recv()? {
                let acts = self.on_record(rec)?;
                self.pending.extend(acts);
            }
            if !self.pending.is_empty() {
                continue;
            }
            let Some(b) = self.out.next_block() else {
                // An empty file has no block to read: its `sent` falls due
                // when the cursor passes it, and goes out only on a flush.
                let due = self.out.flush_hashes();
                if !due.is_empty() {
                    self.pending.extend(due);
                    continue;
                }
                // Waiting for the person to accept is not a stall.
                let rec = if self.out.state() == OutState::Offered {
                    link.recv().await?
                } else {
                    let limit = self.stall_limit();
                    tokio::time::timeout(limit, link.recv())
                        .await
                        .map_err(|_| {
                            TransferError::Stalled(format!(
                                "nothing from the receiver for {} s",
                                limit.as_secs()
                            ))
                        })??
                };
                let acts = self.on_record(rec)?;
                self.pending.extend(acts);
                continue;
            };
            let buf = self.read(b.file, b.offset, b.length)?;
            if b.first {
                let whole = match &mut self.whole {
                    Some((f, h)) if *f == b.file => h,
                    _ => &mut self.whole.insert((b.file, Sha256::new())).1,
                };
                whole.update(&buf);
                let d = hex::encode(Sha256::digest(&buf));
                let mut acts = self.out.digested(b.file, b.block, &d)?;
                if self.out.blocks(b.file) == Some(b.block + 1) {
                    let h = self.whole.take().map(|(_, h)| h).unwrap_or_default();
                    acts.extend(self.out.whole(b.file, &hex::encode(h.finalize())));
                } else {
                    acts.extend(self.out.flush_hashes());
                }
                self.pending.extend(acts);
            }
            // The block's digest goes before its frames.
            let mut rest = VecDeque::new();
            while let Some(a) = self.pending.pop_front() {
                match a {
                    OutAction::Send(m) => self.timed_send(link, &m).await?,
                    other => rest.push_back(other),
                }
            }
            self.pending = rest;
            for (i, chunk) in buf.chunks(MAX_PAYLOAD).enumerate() {
                let frame = encode_frame(b.file, b.offset + (i * MAX_PAYLOAD) as u64, chunk);
                let limit = self.stall_limit();
                tokio::time::timeout(limit, link.send(RecordType::Data, &frame))
                    .await
                    .map_err(|_| {
                        TransferError::Stalled("the channel's buffer did not drain".into())
                    })??;
                // A cancel may be waiting: seen between frames, not only
                // between blocks (a send can wait on a full buffer).
                while let Some(rec) = link.try_recv()? {
                    let acts = self.on_record(rec)?;
                    self.pending.extend(acts);
                }
                if self
                    .pending
                    .iter()
                    .any(|a| matches!(a, OutAction::Stopped { .. }))
                {
                    break;
                }
            }
            let f = b.file as usize;
            self.sent_to[f] = self.sent_to[f].max(b.offset + b.length);
            let done: u64 = self.sent_to.iter().sum();
            output.progress(b.file, self.sent_to[f], done);
        }
    }

    /// Reads a block; a file that changed size since the offer fails.
    fn read(&mut self, file: u32, offset: u64, length: u64) -> Result<Vec<u8>, TransferError> {
        let src = &self.files[file as usize];
        if self.open.as_ref().is_none_or(|(f, _)| *f != file) {
            let f = File::open(&src.disk)?;
            if f.metadata()?.len() != src.size {
                return Err(std::io::Error::other(format!(
                    "{} changed size since it was offered",
                    src.disk.display()
                ))
                .into());
            }
            self.open = Some((file, f));
        }
        let mut buf = vec![0u8; length as usize];
        if let Some((_, f)) = &self.open {
            f.read_exact_at(&mut buf, offset)?;
        }
        Ok(buf)
    }

    fn on_record(&mut self, rec: Incoming) -> Result<Vec<OutAction>, TransferError> {
        match rec {
            Incoming::Control(bytes) => {
                let m = tallow_peer::parse_message(&bytes)?;
                Ok(self.out.on_message(&m)?)
            }
            Incoming::Data(_) => {
                Err(ControlError::UnexpectedData("a data frame to the sender".into()).into())
            }
        }
    }
}

// -------------------------------------------------------------- receiving

/// Where one offered file goes.
#[derive(Debug)]
struct Target {
    /// The final path, or None to skip it (received, then dropped).
    dest: Option<PathBuf>,
    /// The user chose to replace what is at `dest`.
    overwrite: bool,
    part: PathBuf,
    file: Option<File>,
    written: u64,
    size: u64,
}

struct Receiver<'a> {
    m: InMachine,
    dir: &'a Path,
    targets: Vec<Target>,
    pending: VecDeque<InAction>,
    done: Vec<(PathBuf, String)>,
    /// Bytes written, all files (for progress; the machine counts a block
    /// only once its digest is in).
    written: u64,
}

/// Receives one offer into `dir`, asking `decide` about it and about
/// every existing file in the way.
pub async fn receive(
    conn: &mut Connected,
    dir: &Path,
    decide: &mut dyn Decide,
    output: &mut Output,
    stop: &mut watch::Receiver<bool>,
) -> Result<Moved, TransferError> {
    let mut r = Receiver {
        m: InMachine::new(),
        dir,
        targets: Vec::new(),
        pending: VecDeque::new(),
        done: Vec::new(),
        written: 0,
    };
    r.pending.extend(r.m.on_channel());
    let result = loop {
        let res = tokio::select! {
            res = r.run(&mut conn.link, decide, output) => res,
            _ = interrupted(stop) => Err(TransferError::Interrupted),
        };
        match res {
            Ok(moved) => break Ok(moved),
            Err(e)
                if broken(&e) && matches!(r.m.state(), InState::Offering | InState::Receiving) =>
            {
                output.note(
                    "reconnecting",
                    &format!("The connection broke ({e}); reconnecting ..."),
                );
                let back = tokio::select! {
                    l = conn.reconnect() => l.map_err(TransferError::Lost),
                    _ = interrupted(stop) => Err(TransferError::Interrupted),
                };
                if let Err(e) = back {
                    break Err(e);
                }
                output.note("reconnected", "Reconnected; resuming");
                r.pending.retain(|a| !matches!(a, InAction::Send(_)));
                let acts = r.m.on_channel();
                r.pending.extend(acts);
            }
            Err(e) => {
                let reason = match &e {
                    TransferError::Interrupted => Some("cancelled by the user".to_owned()),
                    TransferError::Control(c) => Some(format!("{}: {c}", c.kind())),
                    TransferError::Stalled(w) => Some(format!("stalled: {w}")),
                    TransferError::Io(io) => Some(format!("the receiver failed: {io}")),
                    _ => None,
                };
                if let Some(reason) = reason {
                    let msgs: Vec<_> =
                        r.m.cancel(&reason)
                            .into_iter()
                            .filter_map(|a| match a {
                                InAction::Send(m) => Some(m),
                                _ => None,
                            })
                            .collect();
                    last_word(&mut conn.link, &msgs).await;
                    conn.abort(abort_reason(&e));
                }
                break Err(e);
            }
        }
    };
    // Whatever did not complete leaves nothing that looks complete.
    for t in &r.targets {
        if t.file.is_some() || t.part.exists() {
            let _ = std::fs::remove_file(&t.part);
        }
    }
    result
}

impl Receiver<'_> {
    async fn run(
        &mut self,
        link: &mut Link,
        decide: &mut dyn Decide,
        output: &mut Output,
    ) -> Result<Moved, TransferError> {
        loop {
            while let Some(a) = self.pending.pop_front() {
                match a {
                    InAction::Send(msg) => {
                        if let Err(e) = control(link, &msg).await {
                            self.pending.push_front(InAction::Send(msg));
                            return Err(e.into());
                        }
                    }
                    InAction::Offer(offer) => {
                        if !self.place(&offer, decide, output)? {
                            let msgs: Vec<_> = self
                                .m
                                .decline()?
                                .into_iter()
                                .filter_map(|a| match a {
                                    InAction::Send(m) => Some(m),
                                    _ => None,
                                })
                                .collect();
                            last_word(link, &msgs).await;
                            return Err(TransferError::Declined);
                        }
                        let acts = self.m.accept()?;
                        self.pending.extend(acts);
                        output.started();
                    }
                    InAction::Write { file, offset, data } => {
                        self.write(file, offset, &data)?;
                        let t = &self.targets[file as usize];
                        output.progress(file, t.written, self.written);
                    }
                    InAction::Digest { file, block, data } => {
                        let d = hex::encode(Sha256::digest(&data));
                        let acts = self
                            .m
                            .block_digest(file, block, &d, Some(Arc::clone(&data)))?;
                        self.pending.extend(acts);
                    }
                    InAction::ReadBack { file, from } => {
                        let acts = self.read_back(file, from)?;
                        self.pending.extend(acts);
                    }
                    InAction::FileDone { file, ok, sha256 } => {
                        if ok {
                            let shown = self.finish(file, output)?;
                            output.file_done(file, &shown.display().to_string(), &sha256);
                            self.done.push((shown, sha256));
                        } else if let Some(t) = self.targets.get_mut(file as usize) {
                            t.file = None;
                            let _ = std::fs::remove_file(&t.part);
                        }
                    }
                    InAction::Done => {
                        link.drain(Duration::from_secs(5)).await;
                        return Ok(self.moved());
                    }
                    InAction::Stopped { why, by } => {
                        // Our cancel (a damaged file) went just before.
                        link.drain(LAST_WORD).await;
                        let why = crate::output::neutral(&why, 300);
                        return Err(TransferError::Stopped { why, by });
                    }
                }
            }
            if self.m.state() == InState::Done {
                return Ok(self.moved());
            }
            // Silence counts only while receiving, and only while we wait:
            // our own disk and hash work is not the sender's silence.
            let rec = if self.m.state() == InState::Receiving {
                tokio::time::timeout(STALL, link.recv())
                    .await
                    .map_err(|_| {
                        TransferError::Stalled(format!(
                            "nothing from the sender for {} s",
                            STALL.as_secs()
                        ))
                    })??
            } else {
                link.recv().await?
            };
            let acts = match rec {
                Incoming::Control(bytes) => self.m.on_record(&bytes)?,
                Incoming::Data(frame) => {
                    let f = control::decode_frame(&frame)?;
                    let n = f.data.len() as u64;
                    let mut acts = self.m.on_data(&f)?;
                    // Finished with the frame once its writes are done: they
                    // come first in `acts`, and the ack after them.
                    acts.extend(self.m.consumed(n));
                    acts
                }
            };
            self.pending.extend(acts);
        }
    }

    fn moved(&self) -> Moved {
        Moved {
            files: self.done.clone(),
            bytes: self.m.progress().total,
        }
    }

    /// Shows the offer, asks, and chooses where each file goes. False when
    /// the user declined (or aborted on a conflict).
    fn place(
        &mut self,
        offer: &Offer,
        decide: &mut dyn Decide,
        output: &mut Output,
    ) -> Result<bool, TransferError> {
        output.offer(
            offer
                .files
                .iter()
                .map(|f| (neutral(&f.parts.join("/"), 200), f.size))
                .collect(),
            false,
        );
        if !decide.accept() {
            return Ok(false);
        }
        // Every path this offer will use, so a rename never lands on
        // another file of the offer.
        let mut taken: HashSet<PathBuf> = offer
            .files
            .iter()
            .map(|f| join(self.dir, &f.parts))
            .collect();
        // Offered folders whose name is taken here by a file or a link go
        // to a free name instead (the same one for every file in them).
        let mut moved: HashMap<PathBuf, PathBuf> = HashMap::new();
        for f in &offer.files {
            let want = place_dirs(self.dir, &f.parts, &mut moved, &mut taken);
            let mut t = Target {
                dest: Some(want.clone()),
                overwrite: false,
                part: want
                    .parent()
                    .unwrap_or(self.dir)
                    .join(format!(".tallow-{}.part", random_id())),
                file: None,
                written: 0,
                size: f.size,
            };
            if exists(&want) {
                let free = free_name(&want, &taken);
                match decide.conflict(&want, &free) {
                    Conflict::Overwrite => t.overwrite = true,
                    Conflict::Rename => {
                        taken.insert(free.clone());
                        t.dest = Some(free);
                    }
                    Conflict::Skip => t.dest = None,
                    Conflict::Abort => return Ok(false),
                }
            }
            if let Some(d) = &t.dest {
                if d.is_dir() {
                    return Err(std::io::Error::other(format!(
                        "{} is a folder; cannot save a file there",
                        d.display()
                    ))
                    .into());
                }
            }
            self.targets.push(t);
        }
        Ok(true)
    }

    fn target(&mut self, file: u32) -> Result<&mut Target, TransferError> {
        self.targets.get_mut(file as usize).ok_or_else(|| {
            ControlError::Internal(format!("file {file} is not in the offer")).into()
        })
    }

    fn open<'t>(dir: &Path, t: &'t mut Target) -> Result<&'t File, TransferError> {
        if t.file.is_none() {
            if let Some(parent) = t.part.parent() {
                make_dirs(dir, parent)?;
            }
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&t.part)?;
            t.file = Some(f);
        }
        t.file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no file").into())
    }

    fn write(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        let dir = self.dir;
        let t = self.target(file)?;
        Self::open(dir, t)?.write_all_at(data, offset)?;
        let before = t.written;
        t.written = (t.written + data.len() as u64).min(t.size);
        self.written += t.written - before;
        Ok(())
    }

    fn read_back(&mut self, file: u32, from: u64) -> Result<Vec<InAction>, TransferError> {
        let dir = self.dir;
        let t = self.target(file)?;
        let f = Self::open(dir, t)?.try_clone()?;
        let len = f.metadata()?.len();
        let mut at = from;
        let mut buf = vec![0u8; 1 << 20];
        while at < len {
            let n = f.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            self.m.read_back(file, &buf[..n]);
            at += n as u64;
        }
        Ok(self.m.read_back_done(file)?)
    }

    /// A verified file gets its final name; returns where it is (or, when
    /// skipped, where it would have been).
    fn finish(&mut self, file: u32, output: &Output) -> Result<PathBuf, TransferError> {
        let dir = self.dir.to_owned();
        let t = self.target(file)?;
        Self::open(&dir, t)?; // an empty file has had no write
        t.file = None;
        let Some(dest) = t.dest.clone() else {
            std::fs::remove_file(&t.part)?;
            return Ok(PathBuf::from("(skipped: the existing file was kept)"));
        };
        if t.overwrite {
            std::fs::rename(&t.part, &dest)?;
            return Ok(dest);
        }
        // The folders again: a link planted since the `.part` was opened
        // must not carry the final name elsewhere.
        if let Some(parent) = dest.parent() {
            make_dirs(&dir, parent)?;
        }
        // A hard link never replaces what is there (unlike rename): a file
        // that appeared meanwhile makes the next free name instead.
        let mut dest = dest;
        for _ in 0..1000 {
            match std::fs::hard_link(&t.part, &dest) {
                Ok(()) => {
                    std::fs::remove_file(&t.part)?;
                    t.dest = Some(dest.clone());
                    return Ok(dest);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let free = free_name(&dest, &HashSet::new());
                    output.note(
                        "renamed",
                        &format!(
                            "{} appeared meanwhile; saving as {}",
                            dest.display(),
                            free.display()
                        ),
                    );
                    dest = free;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::other(format!("no free name for a file in {}", dir.display())).into())
    }
}

fn join(dir: &Path, parts: &[String]) -> PathBuf {
    parts.iter().fold(dir.to_owned(), |p, c| p.join(c))
}

/// Where an offered path goes below `dir`: each folder of it that exists
/// here as anything but a real folder (a file, or a link, which must never
/// be followed out of `dir`) is replaced by a free name, remembered in
/// `moved` for the offer's other files.
fn place_dirs(
    dir: &Path,
    parts: &[String],
    moved: &mut HashMap<PathBuf, PathBuf>,
    taken: &mut HashSet<PathBuf>,
) -> PathBuf {
    let Some((name, folders)) = parts.split_last() else {
        return dir.join("file");
    };
    let mut cur = dir.to_owned();
    for c in folders {
        let next = cur.join(c);
        cur = match moved.get(&next) {
            Some(m) => m.clone(),
            None if is_folder_or_absent(&next) => next,
            None => {
                let free = free_name(&next, taken);
                taken.insert(free.clone());
                moved.insert(next, free.clone());
                free
            }
        };
    }
    cur.join(name)
}

fn is_folder_or_absent(p: &Path) -> bool {
    std::fs::symlink_metadata(p).map_or(true, |m| m.is_dir())
}

/// Makes `parent` (below `dir`) one folder at a time, refusing to go
/// through anything that is not a real folder: a link planted after the
/// offer was placed ends the transfer rather than lead a write outside
/// `dir`. (A link swapped in between this check and the open remains a
/// race; openat with O_NOFOLLOW would close it.)
fn make_dirs(dir: &Path, parent: &Path) -> std::io::Result<()> {
    // `--dir` itself is the user's choice and may not exist yet.
    std::fs::create_dir_all(dir)?;
    let rel = parent.strip_prefix(dir).map_err(|_| {
        std::io::Error::other(format!("{} is outside {}", parent.display(), dir.display()))
    })?;
    let mut cur = dir.to_owned();
    for c in rel.components() {
        cur.push(c);
        let made = match std::fs::symlink_metadata(&cur) {
            Ok(m) => m.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&cur) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    is_folder_or_absent(&cur) && cur.is_dir()
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        if !made {
            return Err(std::io::Error::other(format!(
                "{} is not a folder (a link or a file appeared there); not writing through it",
                cur.display()
            )));
        }
    }
    Ok(())
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The first of `name (2).ext`, `name (3).ext`, ... neither on disk nor
/// `taken` by the offer.
fn free_name(path: &Path, taken: &HashSet<PathBuf>) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new(""));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut n = 2;
    loop {
        let p = parent.join(numbered(&name, n));
        if !exists(&p) && !taken.contains(&p) {
            return p;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_name_skips_what_is_on_disk_and_in_the_offer() {
        let d = std::env::temp_dir().join(format!("tallow-free-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.txt"), b"").unwrap();
        std::fs::write(d.join("a (2).txt"), b"").unwrap();
        let taken: HashSet<PathBuf> = [d.join("a (3).txt")].into();
        assert_eq!(free_name(&d.join("a.txt"), &taken), d.join("a (4).txt"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
