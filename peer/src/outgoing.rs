//! The sending side of a v2 transfer as a state machine (docs/PROTOCOL.md,
//! "Transfers (v2)"), mirroring the web client's `Outgoing`
//! (`web/src/outgoing.js`). The caller asks it which block to send next,
//! tells it each block's digest as it reads it, and hands it the receiver's
//! messages; it answers with messages to seal and with the transfer's state.
//!
//! Order: files in offer order, blocks in order; a block the receiver wants
//! again comes before anything new; after a resume, blocks the receiver
//! holds are skipped. Each block's digest is announced once (in `hashes`,
//! batched), then the file's whole digest (`sent`), which the caller
//! computes on the first, in-order read.
//!
//! Flow control ("Flow control"): on each data channel a block is handed
//! out only while the bytes of the blocks started on it stay within
//! [`WINDOW`] of the receiver's last `ack`; a block that does not fit stays
//! where it is (next in the cursor or the wanted queue) until an `ack`
//! makes room. Sans-IO; no message makes it panic.

use std::collections::{HashSet, VecDeque};

use crate::control::{
    blocks_of, offer_parts, ControlError, Message, OfferedFile, BLOCK, MAX_LIST, WINDOW,
};

/// SHA-256 of no bytes: the whole digest of an empty file.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Who stopped a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Us,
    Peer,
}

/// What the caller does after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutAction {
    /// Seal and send this message.
    Send(Message),
    /// The receiver accepted: start sending blocks (`next_block`).
    Accepted,
    /// The transfer ended without completing.
    Stopped { why: String, by: By },
    /// A resume was taken: `next_block` starts over from the first unconfirmed file.
    Resumed,
    /// The receiver confirmed this file with the digest we sent.
    FileConfirmed { file: u32, sha256: String },
    /// Every file was confirmed.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    Offered,
    Sending,
    Done,
    Stopped,
}

/// A block to read and send. `first`: never read before, so the caller
/// computes its digest (`digested`) and feeds the whole-file hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextBlock {
    pub file: u32,
    pub block: u64,
    pub offset: u64,
    pub length: u64,
    pub first: bool,
}

#[derive(Debug)]
struct OutFile {
    path: String,
    size: u64,
    blocks: u64,
    /// The receiver's `got` (ok, sha256).
    got: Option<(bool, String)>,
}

/// The sender's machine for one transfer.
#[derive(Debug)]
pub struct Outgoing {
    id: String,
    files: Vec<OutFile>,
    state: OutState,
    /// Next new block: (file, block).
    cursor: (usize, u64),
    /// Blocks whose digest we announced (or queued), per file.
    hashed: Vec<u64>,
    /// Each block's digest, kept to announce again after a break.
    digests: Vec<Vec<String>>,
    pending: Vec<(usize, u64, String)>,
    sent_whole: Vec<Option<String>>,
    announced: Vec<bool>,
    announce_from: usize,
    wanted: VecDeque<(usize, u64)>,
    /// The blocks in `wanted`: a block is queued once.
    wanting: HashSet<(usize, u64)>,
    /// Per file, the block ranges the receiver holds (after a resume).
    skip: Vec<Vec<[u64; 2]>>,
    got_count: usize,
    total: u64,
    acked: u64,
    /// On this data channel: file bytes of the blocks handed out, and the
    /// last `ack`'s `bytes`.
    started: u64,
    granted: u64,
    stopped_by: Option<By>,
    stop_reason: String,
}

impl Outgoing {
    /// `files` in the order they will be sent.
    pub fn new(id: &str, files: &[OfferedFile]) -> Self {
        let n = files.len();
        Outgoing {
            id: id.to_owned(),
            files: files
                .iter()
                .map(|f| OutFile {
                    path: f.path.clone(),
                    size: f.size,
                    blocks: blocks_of(f.size),
                    got: None,
                })
                .collect(),
            state: OutState::Offered,
            cursor: (0, 0),
            hashed: vec![0; n],
            digests: vec![Vec::new(); n],
            pending: Vec::new(),
            sent_whole: vec![None; n],
            announced: vec![false; n],
            announce_from: 0,
            wanted: VecDeque::new(),
            wanting: HashSet::new(),
            skip: vec![Vec::new(); n],
            got_count: 0,
            total: files.iter().fold(0u64, |t, f| t.saturating_add(f.size)),
            acked: 0,
            started: 0,
            granted: 0,
            stopped_by: None,
            stop_reason: String::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> OutState {
        self.state
    }

    /// Bytes offered in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes of the files the receiver confirmed.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// File bytes of the blocks handed out on this data channel.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The last `ack` on this data channel (0 before the first): blocks are
    /// handed out up to `granted() + WINDOW`.
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// Blocks of file `i`, if it is in the offer.
    pub fn blocks(&self, i: u32) -> Option<u64> {
        self.files.get(i as usize).map(|f| f.blocks)
    }

    /// The offer's messages.
    pub fn offer(&self) -> Result<Vec<Message>, ControlError> {
        let files: Vec<OfferedFile> = self
            .files
            .iter()
            .map(|f| OfferedFile {
                path: f.path.clone(),
                size: f.size,
            })
            .collect();
        offer_parts(&self.id, &files)
    }

    fn check_sending(&self, kind: &str) -> Result<(), ControlError> {
        if self.state != OutState::Sending {
            return Err(ControlError::Unexpected(format!(
                "{kind} in state {:?}",
                self.state
            )));
        }
        Ok(())
    }

    fn file(&self, i: u32) -> Result<usize, ControlError> {
        let i = i as usize;
        if i < self.files.len() {
            Ok(i)
        } else {
            Err(ControlError::Malformed("a file that is not in the offer"))
        }
    }

    /// A message from the receiver (already parsed with
    /// `control::parse_message`).
    pub fn on_message(&mut self, m: &Message) -> Result<Vec<OutAction>, ControlError> {
        if m.id() != self.id {
            return Err(ControlError::Unexpected(format!(
                "a message for transfer {} during {}",
                m.id(),
                self.id
            )));
        }
        if matches!(self.state, OutState::Stopped | OutState::Done) {
            return Ok(Vec::new());
        }
        match m {
            Message::Accept { .. } => {
                // Again after a break (answering the offer sent again).
                if self.state == OutState::Sending {
                    return Ok(Vec::new());
                }
                self.state = OutState::Sending;
                Ok(vec![OutAction::Accepted])
            }
            Message::Decline { .. } => {
                if self.state != OutState::Offered {
                    return Err(ControlError::Unexpected("decline after accept".into()));
                }
                self.state = OutState::Stopped;
                Ok(vec![OutAction::Stopped {
                    why: "your peer declined the files".into(),
                    by: By::Peer,
                }])
            }
            Message::Cancel { reason, .. } => {
                self.state = OutState::Stopped;
                let reason = if reason.is_empty() {
                    "no reason given"
                } else {
                    reason
                };
                Ok(vec![OutAction::Stopped {
                    why: format!("your peer cancelled: {reason}"),
                    by: By::Peer,
                }])
            }
            Message::Want { file, blocks, .. } => {
                self.check_sending("want")?;
                let i = self.file(*file)?;
                for &b in blocks {
                    if b >= self.files[i].blocks {
                        return Err(ControlError::Malformed(
                            "want of a block past the file's end",
                        ));
                    }
                    // Only what we already sent can be wanted again.
                    if b >= self.hashed[i] {
                        return Err(ControlError::Unexpected(format!(
                            "want of block {b} before it was sent"
                        )));
                    }
                    if self.wanting.insert((i, b)) {
                        self.wanted.push_back((i, b));
                    }
                }
                Ok(Vec::new())
            }
            Message::Resume { files, .. } => self.on_resume(files),
            Message::Ack { bytes, .. } => {
                self.check_sending("ack")?;
                if *bytes < self.granted || *bytes > self.started {
                    return Err(ControlError::Unexpected(format!(
                        "ack of {bytes} bytes after an ack of {} with {} started",
                        self.granted, self.started
                    )));
                }
                self.granted = *bytes;
                Ok(Vec::new())
            }
            Message::Got {
                file, ok, sha256, ..
            } => {
                self.check_sending("got")?;
                let i = self.file(*file)?;
                if self.files[i].got.is_some() {
                    return Err(ControlError::Unexpected(format!(
                        "file {file} confirmed twice"
                    )));
                }
                if !self.announced[i] {
                    return Err(ControlError::Unexpected(format!(
                        "file {file} confirmed before it was sent"
                    )));
                }
                self.files[i].got = Some((*ok, sha256.clone()));
                if !*ok || self.sent_whole[i].as_deref() != Some(sha256.as_str()) {
                    self.state = OutState::Stopped;
                    return Ok(vec![OutAction::Stopped {
                        why: format!("file {} arrived damaged", i + 1),
                        by: By::Peer,
                    }]);
                }
                self.got_count += 1;
                self.acked = self.acked.saturating_add(self.files[i].size);
                let mut out = vec![OutAction::FileConfirmed {
                    file: *file,
                    sha256: sha256.clone(),
                }];
                if self.got_count == self.files.len() {
                    self.state = OutState::Done;
                    out.push(OutAction::Done);
                }
                Ok(out)
            }
            other => Err(ControlError::Unexpected(format!(
                "{} is not for the sending side",
                other.kind()
            ))),
        }
    }

    fn on_resume(
        &mut self,
        files: &[crate::control::Holding],
    ) -> Result<Vec<OutAction>, ControlError> {
        // Only an accepted transfer is resumed: its accept was lost.
        let mut out = Vec::new();
        if self.state == OutState::Offered {
            self.state = OutState::Sending;
            out.push(OutAction::Accepted);
        }
        for s in &mut self.skip {
            s.clear();
        }
        self.wanted.clear();
        self.wanting.clear();
        for h in files {
            let i = self.file(h.file)?;
            let mut ranges = Vec::with_capacity(h.have.len());
            for &[a, b] in &h.have {
                if b > self.files[i].blocks {
                    return Err(ControlError::Malformed(
                        "resume of blocks past the file's end",
                    ));
                }
                // Only what we already sent can be held.
                if b > self.hashed[i] {
                    return Err(ControlError::Unexpected(format!(
                        "resume of blocks up to {b} of file {i} when {} were sent",
                        self.hashed[i]
                    )));
                }
                ranges.push([a, b]);
            }
            // A file listed twice: the last list counts, as in the web client.
            self.skip[i] = ranges;
        }
        // Back to the first file not confirmed; held blocks are skipped.
        let first = self.files.iter().position(|f| f.got.is_none());
        self.cursor = (first.unwrap_or(self.files.len()), 0);
        // What went out on the old channel may not have arrived: announce
        // every digest (and whole digest) of unconfirmed files again. The
        // receiver takes a repeated digest only if it is the same.
        self.pending.clear();
        if let Some(first) = first {
            let mut i = first;
            while i < self.files.len() && self.hashed[i] > 0 {
                if self.files[i].got.is_none() {
                    for (block, d) in self.digests[i].iter().enumerate() {
                        self.pending.push((i, block as u64, d.clone()));
                    }
                }
                i += 1;
            }
        }
        let mut again = self.flush_hashes();
        if let Some(first) = first {
            for i in first..self.announce_from {
                if self.files[i].got.is_none() {
                    if let Some(sha256) = &self.sent_whole[i] {
                        again.push(OutAction::Send(Message::Sent {
                            id: self.id.clone(),
                            file: i as u32,
                            sha256: sha256.clone(),
                        }));
                    }
                }
            }
        }
        out.extend(again);
        out.push(OutAction::Resumed);
        Ok(out)
    }

    /// A new data channel opened (the first, or one after a break). An
    /// offer not yet answered goes again; a cancel of ours goes again.
    /// While sending, the receiver's `resume` leads. The window starts
    /// afresh: nothing started, nothing acknowledged.
    pub fn on_channel(&mut self) -> Result<Vec<OutAction>, ControlError> {
        self.started = 0;
        self.granted = 0;
        match self.state {
            OutState::Offered => Ok(self.offer()?.into_iter().map(OutAction::Send).collect()),
            OutState::Stopped if self.stopped_by == Some(By::Us) => {
                Ok(vec![OutAction::Send(Message::Cancel {
                    id: self.id.clone(),
                    reason: self.stop_reason.clone(),
                })])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// We stop: the user cancelled, or something failed.
    pub fn cancel(&mut self, reason: &str) -> Vec<OutAction> {
        if matches!(self.state, OutState::Stopped | OutState::Done) {
            return Vec::new();
        }
        self.state = OutState::Stopped;
        self.stopped_by = Some(By::Us);
        self.stop_reason = reason.to_owned();
        vec![
            OutAction::Send(Message::Cancel {
                id: self.id.clone(),
                reason: reason.to_owned(),
            }),
            OutAction::Stopped {
                why: reason.to_owned(),
                by: By::Us,
            },
        ]
    }

    fn skipped(&self, file: usize, block: u64) -> bool {
        self.skip[file]
            .iter()
            .any(|&[a, b]| a <= block && block < b)
    }

    /// Whether a block of `length` bytes fits in the window.
    fn fits(&self, length: u64) -> bool {
        self.started.saturating_add(length) <= self.granted.saturating_add(WINDOW)
    }

    /// Counts a block handed out against the window.
    fn start(&mut self, b: NextBlock) -> Option<NextBlock> {
        self.started = self.started.saturating_add(b.length);
        Some(b)
    }

    /// The next block to read and send, or None when nothing is left for
    /// now: everything went out (`drained`), or the next block does not
    /// fit in the window (it comes once an `ack` makes room).
    pub fn next_block(&mut self) -> Option<NextBlock> {
        if self.state != OutState::Sending {
            return None;
        }
        while let Some(&(file, block)) = self.wanted.front() {
            if self.files[file].got.is_some() {
                self.wanted.pop_front();
                self.wanting.remove(&(file, block));
                continue;
            }
            let b = self.block(file, block);
            if !self.fits(b.length) {
                return None;
            }
            self.wanted.pop_front();
            self.wanting.remove(&(file, block));
            return self.start(b);
        }
        loop {
            let (file, block) = self.cursor;
            if file >= self.files.len() {
                return None;
            }
            if self.files[file].blocks == 0 && self.sent_whole[file].is_none() {
                self.sent_whole[file] = Some(EMPTY_SHA256.to_owned());
            }
            if self.files[file].got.is_some() || block >= self.files[file].blocks {
                self.cursor = (file + 1, 0);
                continue;
            }
            if self.skipped(file, block) {
                self.cursor = (file, block + 1);
                continue;
            }
            let b = self.block(file, block);
            if !self.fits(b.length) {
                return None;
            }
            self.cursor = (file, block + 1);
            return self.start(b);
        }
    }

    fn block(&self, file: usize, block: u64) -> NextBlock {
        let size = self.files[file].size;
        let offset = block * BLOCK;
        NextBlock {
            file: file as u32,
            block,
            offset,
            length: BLOCK.min(size - offset),
            first: block >= self.hashed[file],
        }
    }

    /// Each first-read block's digest, in order (the caller computes it).
    pub fn digested(
        &mut self,
        file: u32,
        block: u64,
        digest: &str,
    ) -> Result<Vec<OutAction>, ControlError> {
        let i = file as usize;
        if i >= self.files.len() || block != self.hashed[i] {
            return Err(ControlError::Internal(format!(
                "block {block} of file {file} digested out of order"
            )));
        }
        self.hashed[i] += 1;
        self.digests[i].push(digest.to_owned());
        self.pending.push((i, block, digest.to_owned()));
        Ok(if self.pending.len() >= MAX_LIST / 4 {
            self.flush_hashes()
        } else {
            Vec::new()
        })
    }

    /// The whole-file digest, once the caller hashed the file's last byte.
    pub fn whole(&mut self, file: u32, sha256: &str) -> Vec<OutAction> {
        if let Some(w) = self.sent_whole.get_mut(file as usize) {
            *w = Some(sha256.to_owned());
        }
        self.flush_hashes()
    }

    /// Batched `hashes` (contiguous runs per file), then any `sent` due.
    pub fn flush_hashes(&mut self) -> Vec<OutAction> {
        let mut out = Vec::new();
        let mut run: Option<(usize, u64, Vec<String>)> = None;
        let id = self.id.clone();
        let push = |run: Option<(usize, u64, Vec<String>)>, out: &mut Vec<OutAction>| {
            if let Some((file, first, sha256)) = run {
                out.push(OutAction::Send(Message::Hashes {
                    id: id.clone(),
                    file: file as u32,
                    first,
                    sha256,
                }));
            }
        };
        for (file, block, digest) in std::mem::take(&mut self.pending) {
            match &mut run {
                Some((f, first, ds))
                    if *f == file && *first + ds.len() as u64 == block && ds.len() < MAX_LIST =>
                {
                    ds.push(digest);
                }
                _ => {
                    push(run.take(), &mut out);
                    run = Some((file, block, vec![digest]));
                }
            }
        }
        push(run, &mut out);
        // Files are first read in order, so their `sent`s fall due in order.
        for i in self.announce_from..self.files.len() {
            let Some(sha256) = self.sent_whole[i].clone() else {
                break;
            };
            if self.hashed[i] != self.files[i].blocks {
                break;
            }
            self.announced[i] = true;
            self.announce_from = i + 1;
            out.push(OutAction::Send(Message::Sent {
                id: self.id.clone(),
                file: i as u32,
                sha256,
            }));
        }
        out
    }

    /// Whether every byte went out and only confirmations are awaited (a
    /// sender waiting for room in the window is not drained).
    pub fn drained(&self) -> bool {
        self.state == OutState::Sending
            && self.wanted.is_empty()
            && self.cursor.0 >= self.files.len()
    }
}
