//! The receiving side of a v2 transfer as a state machine (docs/PROTOCOL.md,
//! "Transfers (v2)"), mirroring the web client's `Incoming`
//! (`web/src/incoming.js`). It takes the sender's messages, the data frames
//! and the digests the caller computed, and returns actions.
//!
//! Memory: one block buffer being filled, and at most [`HELD`] verified or
//! landed blocks (all files together) waiting for the whole-file hash; beyond that
//! the hash reads those blocks back from where they were written
//! (`ReadBack`). Per-block bookkeeping is sparse, so an offer of huge files
//! costs nothing until their blocks arrive. The sender's digests are kept
//! only until their block is verified, at most [`AHEAD`] of them in all;
//! verified blocks are counted, not listed, while they come in order.
//!
//! Flow control ("Flow control"): per data channel, a frame that takes the
//! bytes received past the last `ack` plus [`WINDOW`] is refused
//! (`unexpected_data`); the caller reports the bytes of each frame it is
//! finished with (`consumed`), and every [`ACK_EVERY`] of them an `ack`
//! goes to the sender. Sans-IO; no message or frame makes it panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::control::{
    blocks_of, ControlError, Frame, Message, ACK_EVERY, BLOCK, MAX_OFFER_PATH_BYTES, MAX_RANGES,
    WINDOW,
};
use crate::json::Doc;
use crate::outgoing::By;
use crate::paths::Allocator;

/// Most verified or landed blocks held in memory for the whole-file hash,
/// all files together.
pub const HELD: usize = 16;

/// Most digests of blocks not yet verified the sender may have given (an
/// honest one announces a block just before its frames).
pub const AHEAD: usize = 4096;

/// A file of the offer, its path made safe and distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFile {
    pub parts: Vec<String>,
    pub size: u64,
}

/// The whole offer, to show the user (then `accept` or `decline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub id: String,
    pub count: u32,
    pub total: u64,
    pub files: Vec<PlacedFile>,
}

/// What the caller does after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InAction {
    /// Seal and send this message to the sender.
    Send(Message),
    /// The whole offer arrived.
    Offer(Offer),
    /// A whole block landed: write it at `offset` of `file`.
    Write {
        file: u32,
        offset: u64,
        data: Arc<[u8]>,
    },
    /// SHA-256 this block, then call `block_digest`.
    Digest {
        file: u32,
        block: u64,
        data: Arc<[u8]>,
    },
    /// Read `file` back from `from` and feed it to `read_back`, then call
    /// `read_back_done`.
    ReadBack {
        file: u32,
        from: u64,
    },
    /// The file is complete: `ok` when its SHA-256 equals the sender's.
    FileDone {
        file: u32,
        ok: bool,
        sha256: String,
    },
    Done,
    Stopped {
        why: String,
        by: By,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InState {
    Offering,
    Offered,
    Receiving,
    Done,
    Stopped,
}

#[derive(Debug)]
struct Current {
    block: u64,
    buf: Vec<u8>,
    filled: usize,
}

#[derive(Debug)]
struct FileState {
    size: u64,
    blocks: u64,
    theirs: BTreeMap<u64, String>,
    ours: BTreeMap<u64, String>,
    /// Blocks written whose digest the caller is computing.
    landing: BTreeSet<u64>,
    /// Blocks below it are all verified.
    verified_to: u64,
    /// Verified blocks past `verified_to`.
    verified_above: BTreeSet<u64>,
    held: HashMap<u64, Arc<[u8]>>,
    hashed_to: u64,
    read_back_from: Option<u64>,
    reading_back: bool,
    current: Option<Current>,
    sent: Option<String>,
    done: bool,
    sha256: String,
    landed: u64,
}

impl FileState {
    fn new(size: u64) -> Self {
        FileState {
            size,
            blocks: blocks_of(size),
            theirs: BTreeMap::new(),
            ours: BTreeMap::new(),
            landing: BTreeSet::new(),
            verified_to: 0,
            verified_above: BTreeSet::new(),
            held: HashMap::new(),
            hashed_to: 0,
            read_back_from: None,
            reading_back: false,
            current: None,
            sent: None,
            done: false,
            sha256: String::new(),
            landed: 0,
        }
    }

    fn is_verified(&self, b: u64) -> bool {
        b < self.verified_to || self.verified_above.contains(&b)
    }

    fn n_verified(&self) -> u64 {
        self.verified_to + self.verified_above.len() as u64
    }

    fn mark_verified(&mut self, b: u64) {
        if b != self.verified_to {
            self.verified_above.insert(b);
            return;
        }
        self.verified_to += 1;
        while self.verified_above.remove(&self.verified_to) {
            self.verified_to += 1;
        }
    }

    fn block_length(&self, b: u64) -> u64 {
        BLOCK.min(self.size.saturating_sub(b * BLOCK))
    }
}

/// Progress for the page: bytes landed or done, of `total`; files done of
/// `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub files: usize,
    pub count: usize,
}

/// The receiver's machine for one transfer.
#[derive(Debug)]
pub struct Incoming {
    state: InState,
    id: Option<String>,
    reply_id: Option<String>,
    parts: Vec<(u32, u32, u64, Vec<crate::control::OfferedFile>)>,
    /// UTF-8 bytes of the paths in `parts`, counted as they come.
    part_names: usize,
    offer: Option<Offer>,
    files: Vec<FileState>,
    hashers: HashMap<u32, Sha256>,
    done_files: usize,
    /// Digests given for blocks not yet verified, all files.
    ahead: usize,
    /// Memory, across files (a sender spread over many files gains
    /// nothing): blocks held for the whole-file hash, and the one file
    /// whose block is partly received.
    held_blocks: usize,
    partial: Option<usize>,
    stopped_by: Option<By>,
    final_word: Option<Message>,
    /// On this data channel: payload bytes of the frames taken, those the
    /// caller is finished with, and the last `ack` sent.
    received: u64,
    finished: u64,
    last_ack: u64,
}

impl Default for Incoming {
    fn default() -> Self {
        Self::new()
    }
}

fn hex_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Incoming {
    pub fn new() -> Self {
        Incoming {
            state: InState::Offering,
            id: None,
            reply_id: None,
            parts: Vec::new(),
            part_names: 0,
            offer: None,
            files: Vec::new(),
            hashers: HashMap::new(),
            done_files: 0,
            ahead: 0,
            held_blocks: 0,
            partial: None,
            stopped_by: None,
            final_word: None,
            received: 0,
            finished: 0,
            last_ack: 0,
        }
    }

    pub fn state(&self) -> InState {
        self.state
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn offer(&self) -> Option<&Offer> {
        self.offer.as_ref()
    }

    /// A control record's plaintext from the sender: parsed
    /// (`control::parse_message`), then `on_message`. Before the transfer
    /// has an id, a well-formed `id` is kept even from a message that fails
    /// its checks, so that `cancel` can still answer it (as the web client
    /// does).
    pub fn on_record(&mut self, bytes: &[u8]) -> Result<Vec<InAction>, ControlError> {
        if self.id.is_none() {
            let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            if let Some(doc) = std::str::from_utf8(text).ok().and_then(Doc::parse) {
                if let Some(crate::json::Node::Str {
                    s,
                    well_formed: true,
                }) = doc.get(doc.root, "id").map(|i| doc.node(i))
                {
                    if hex_id(s) {
                        self.reply_id = Some(s.clone());
                    }
                }
            }
        }
        let m = crate::control::parse_message(bytes)?;
        self.on_message(&m)
    }

    /// A message from the sender (already parsed).
    pub fn on_message(&mut self, m: &Message) -> Result<Vec<InAction>, ControlError> {
        if self.id.is_none() {
            self.reply_id = Some(m.id().to_owned());
        }
        if let Some(id) = &self.id {
            if m.id() != id {
                return Err(ControlError::Unexpected(format!(
                    "a message for transfer {} during {id}",
                    m.id()
                )));
            }
        }
        if self.state == InState::Stopped {
            return match m {
                Message::Files { .. } => self.on_part(m),
                _ => Ok(Vec::new()),
            };
        }
        if let Message::Cancel { reason, .. } = m {
            if self.state == InState::Done {
                return Ok(Vec::new());
            }
            let reason = if reason.is_empty() {
                "no reason given"
            } else {
                reason
            };
            return Ok(self.stop(format!("the sender cancelled: {reason}"), By::Peer));
        }
        if self.state == InState::Done && !matches!(m, Message::Files { .. }) {
            return Ok(self.got_again(m));
        }
        match m {
            Message::Files { .. } => self.on_part(m),
            Message::Hashes {
                file,
                first,
                sha256,
                ..
            } => self.on_hashes(*file, *first, sha256),
            Message::Sent { file, sha256, .. } => self.on_sent(*file, sha256, m),
            other => Err(ControlError::Unexpected(format!(
                "{} is not for the receiving side",
                other.kind()
            ))),
        }
    }

    fn on_part(&mut self, m: &Message) -> Result<Vec<InAction>, ControlError> {
        let Message::Files {
            id,
            part,
            parts,
            count,
            total,
            files,
        } = m
        else {
            return Ok(Vec::new());
        };
        if self.state != InState::Offering {
            // The offer again, after a break: our answer may have been lost.
            if part + 1 < *parts {
                return Ok(Vec::new());
            }
            return Ok(self.answer_again());
        }
        if self.id.is_none() {
            self.id = Some(id.clone());
        }
        if *part == 0 {
            self.parts.clear(); // sent again from the start
            self.part_names = 0;
        }
        if *part as usize != self.parts.len() {
            return Err(ControlError::Unexpected(format!(
                "offer part {part} where {} was due",
                self.parts.len()
            )));
        }
        if let Some(first) = self.parts.first() {
            if (*parts, *count, *total) != (first.0, first.1, first.2) {
                return Err(ControlError::Malformed(
                    "offer parts disagree on parts, count or total",
                ));
            }
        }
        // Counted as the parts come, so a lying offer is refused before
        // it is held whole.
        self.part_names += files.iter().map(|f| f.path.len()).sum::<usize>();
        if self.part_names > MAX_OFFER_PATH_BYTES {
            return Err(ControlError::OfferNames(self.part_names));
        }
        self.parts.push((*parts, *count, *total, files.clone()));
        let listed: usize = self.parts.iter().map(|p| p.3.len()).sum();
        if listed > *count as usize {
            return Err(ControlError::Malformed(
                "the offer lists more files than its count",
            ));
        }
        if part + 1 < *parts {
            return Ok(Vec::new());
        }
        if listed != *count as usize {
            return Err(ControlError::Malformed(
                "the offer lists fewer files than its count",
            ));
        }
        let all: Vec<_> = std::mem::take(&mut self.parts)
            .into_iter()
            .flat_map(|p| p.3)
            .collect();
        // Each size is at most 2^53-1 and there are at most 100000: no overflow.
        let sum: u64 = all.iter().map(|f| f.size).sum();
        if sum != *total {
            return Err(ControlError::BadSize(
                "the files do not add up to the offer's total",
            ));
        }
        let mut paths = Allocator::new();
        let offer = Offer {
            id: id.clone(),
            count: *count,
            total: sum,
            files: all
                .iter()
                .map(|f| PlacedFile {
                    parts: paths.place(&f.path),
                    size: f.size,
                })
                .collect(),
        };
        self.files = all.iter().map(|f| FileState::new(f.size)).collect();
        self.offer = Some(offer.clone());
        self.state = InState::Offered;
        Ok(vec![InAction::Offer(offer)])
    }

    fn answer_again(&self) -> Vec<InAction> {
        match self.state {
            InState::Receiving | InState::Done => vec![InAction::Send(Message::Accept {
                id: self.id.clone().unwrap_or_default(),
            })],
            InState::Stopped if self.stopped_by == Some(By::Us) => self
                .final_word
                .clone()
                .map(InAction::Send)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The user accepts the offer.
    pub fn accept(&mut self) -> Result<Vec<InAction>, ControlError> {
        if self.state != InState::Offered {
            return Err(ControlError::Unexpected(format!(
                "accept in state {:?}",
                self.state
            )));
        }
        self.state = InState::Receiving;
        Ok(vec![InAction::Send(Message::Accept {
            id: self.id.clone().unwrap_or_default(),
        })])
    }

    /// The user declines the offer.
    pub fn decline(&mut self) -> Result<Vec<InAction>, ControlError> {
        if self.state != InState::Offered {
            return Err(ControlError::Unexpected(format!(
                "decline in state {:?}",
                self.state
            )));
        }
        self.state = InState::Stopped;
        self.stopped_by = Some(By::Us);
        let word = Message::Decline {
            id: self.id.clone().unwrap_or_default(),
        };
        self.final_word = Some(word.clone());
        Ok(vec![
            InAction::Send(word),
            InAction::Stopped {
                why: "you declined".into(),
                by: By::Us,
            },
        ])
    }

    /// We stop (the user cancelled, or a check failed): tell the sender.
    pub fn cancel(&mut self, reason: &str) -> Vec<InAction> {
        if matches!(self.state, InState::Stopped | InState::Done) {
            return Vec::new();
        }
        let Some(id) = self.id.clone().or_else(|| self.reply_id.clone()) else {
            return self.stop(reason.to_owned(), By::Us);
        };
        let word = Message::Cancel {
            id,
            reason: reason.to_owned(),
        };
        self.final_word = Some(word.clone());
        let mut out = vec![InAction::Send(word)];
        out.extend(self.stop(reason.to_owned(), By::Us));
        out
    }

    fn stop(&mut self, why: String, by: By) -> Vec<InAction> {
        self.state = InState::Stopped;
        self.stopped_by = Some(by);
        for f in &mut self.files {
            f.held.clear();
            f.current = None;
        }
        self.held_blocks = 0;
        self.partial = None;
        vec![InAction::Stopped { why, by }]
    }

    fn file(&self, i: u32) -> Result<usize, ControlError> {
        if (i as usize) < self.files.len() {
            Ok(i as usize)
        } else {
            Err(ControlError::BadFrame(format!(
                "file {i} is not in the offer of {}",
                self.files.len()
            )))
        }
    }

    fn on_hashes(
        &mut self,
        file: u32,
        first: u64,
        sha256: &[String],
    ) -> Result<Vec<InAction>, ControlError> {
        if self.state != InState::Receiving {
            return Err(ControlError::Unexpected(format!(
                "hashes in state {:?}",
                self.state
            )));
        }
        let i = self.file(file)?;
        if first + sha256.len() as u64 > self.files[i].blocks {
            return Err(ControlError::Malformed(
                "hashes for blocks past the file's end",
            ));
        }
        let mut out = Vec::new();
        for (k, d) in sha256.iter().enumerate() {
            let b = first + k as u64;
            let f = &mut self.files[i];
            // Given again after a break: a verified block needs it no more.
            if f.is_verified(b) {
                continue;
            }
            // A digest once given stays: a sender that changes it is lying.
            match f.theirs.get(&b) {
                Some(t) if t != d => {
                    return Err(ControlError::Malformed("a block was given two digests"));
                }
                Some(_) => {}
                None => {
                    if self.ahead >= AHEAD {
                        return Err(ControlError::Unexpected(format!(
                            "digests of more than {AHEAD} blocks that have not arrived"
                        )));
                    }
                    f.theirs.insert(b, d.clone());
                    self.ahead += 1;
                }
            }
            out.extend(self.check(i, b));
        }
        Ok(out)
    }

    /// After a break the sender announces unconfirmed files again: a file
    /// we completed gets its `got` again (the first may have been lost).
    fn got_again(&self, m: &Message) -> Vec<InAction> {
        let Message::Sent { file, .. } = m else {
            return Vec::new();
        };
        match self.files.get(*file as usize) {
            Some(f) if f.done => vec![InAction::Send(Message::Got {
                id: self.id.clone().unwrap_or_default(),
                file: *file,
                ok: true,
                sha256: f.sha256.clone(),
            })],
            _ => Vec::new(),
        }
    }

    fn on_sent(
        &mut self,
        file: u32,
        sha256: &str,
        m: &Message,
    ) -> Result<Vec<InAction>, ControlError> {
        if self.state != InState::Receiving {
            return Err(ControlError::Unexpected(format!(
                "sent in state {:?}",
                self.state
            )));
        }
        let i = self.file(file)?;
        let f = &mut self.files[i];
        if f.done {
            return Ok(self.got_again(m));
        }
        if f.sent.as_deref().is_some_and(|s| s != sha256) {
            return Err(ControlError::Malformed("a file was given two digests"));
        }
        // Every digest of a file goes out before its `sent`, on the same
        // ordered channel: a block without one was never going to come.
        if f.n_verified() + f.theirs.len() as u64 != f.blocks {
            return Err(ControlError::SizeShort(format!(
                "the sender finished file {} before announcing all its blocks",
                i + 1
            )));
        }
        f.sent = Some(sha256.to_owned());
        Ok(self.finish_file(i))
    }

    /// A data frame (from `control::decode_frame`). Once the caller is
    /// finished with its bytes (written out, or ignored), it calls
    /// `consumed` with their number.
    pub fn on_data(&mut self, frame: &Frame<'_>) -> Result<Vec<InAction>, ControlError> {
        if self.state != InState::Receiving {
            if matches!(self.state, InState::Stopped | InState::Done) {
                return Ok(Vec::new());
            }
            return Err(ControlError::UnexpectedData(format!(
                "data in state {:?}",
                self.state
            )));
        }
        // The window, before anything else.
        let received = self.received.saturating_add(frame.data.len() as u64);
        if received > self.last_ack.saturating_add(WINDOW) {
            return Err(ControlError::UnexpectedData(format!(
                "{received} bytes on this channel, past the last ack ({}) and the window",
                self.last_ack
            )));
        }
        self.received = received;
        let i = self.file(frame.file)?;
        let f = &mut self.files[i];
        let (offset, len) = (frame.offset, frame.data.len() as u64);
        // offset <= 2^53-1 and len <= 65536: no overflow.
        if offset + len > f.size {
            return Err(ControlError::SizeExceeded(format!(
                "bytes {offset}..{} of file {} of {}",
                offset + len,
                frame.file,
                f.size
            )));
        }
        let b = offset / BLOCK;
        let start = b * BLOCK;
        if offset + len > start + f.block_length(b) {
            return Err(ControlError::BadFrame(
                "a data frame crosses a block boundary".into(),
            ));
        }
        // Resent after a resume: we have it. A block that landed stays as
        // it landed until its digest is compared (a mismatch asks for it
        // again): taking another copy meanwhile would put on disk bytes
        // other than those verified.
        if f.done || f.is_verified(b) || f.landing.contains(&b) || f.ours.contains_key(&b) {
            return Ok(Vec::new());
        }
        if offset == start {
            // One block at a time is partly received (an honest sender
            // sends each block's frames together): starting one abandons
            // any other.
            let length = f.block_length(b) as usize;
            if let Some(p) = self.partial.filter(|&p| p != i) {
                self.files[p].current = None;
            }
            self.partial = Some(i);
            self.files[i].current = Some(Current {
                block: b,
                buf: vec![0; length],
                filled: 0,
            });
        } else if !f
            .current
            .as_ref()
            .is_some_and(|c| c.block == b && start + c.filled as u64 == offset)
        {
            return Err(ControlError::BadFrame(format!(
                "bytes at {offset} of file {} do not continue block {b}",
                frame.file
            )));
        }
        let f = &mut self.files[i];
        let Some(c) = f.current.as_mut() else {
            return Ok(Vec::new());
        };
        c.buf[c.filled..c.filled + frame.data.len()].copy_from_slice(frame.data);
        c.filled += frame.data.len();
        if c.filled < c.buf.len() {
            return Ok(Vec::new());
        }
        let Some(c) = f.current.take() else {
            return Ok(Vec::new());
        };
        self.partial = None;
        let data: Arc<[u8]> = c.buf.into();
        f.landing.insert(b);
        Ok(vec![
            InAction::Write {
                file: frame.file,
                offset: start,
                data: data.clone(),
            },
            InAction::Digest {
                file: frame.file,
                block: b,
                data,
            },
        ])
    }

    /// The caller is finished with `bytes` of the data frames taken on this
    /// channel (written out, or ignored): each frame's bytes once, and only
    /// frames taken since the last `on_channel`. Whenever that count grew by
    /// [`ACK_EVERY`] since the last `ack`, it goes to the sender as one. The
    /// count never passes the bytes taken (`on_data`), so neither does an
    /// `ack`. No `ack` once not receiving.
    pub fn consumed(&mut self, bytes: u64) -> Vec<InAction> {
        self.finished = self.finished.saturating_add(bytes).min(self.received);
        if self.state != InState::Receiving || self.finished - self.last_ack < ACK_EVERY {
            return Vec::new();
        }
        self.last_ack = self.finished;
        vec![InAction::Send(Message::Ack {
            id: self.id.clone().unwrap_or_default(),
            bytes: self.finished,
        })]
    }

    /// Our SHA-256 (hex) of a block that landed; `data` the block, if the
    /// caller lets the machine hold it for the whole-file hash.
    pub fn block_digest(
        &mut self,
        file: u32,
        block: u64,
        digest: &str,
        data: Option<Arc<[u8]>>,
    ) -> Result<Vec<InAction>, ControlError> {
        if self.state != InState::Receiving {
            return Ok(Vec::new());
        }
        let i = self.file(file)?;
        let f = &mut self.files[i];
        if block >= f.blocks {
            return Err(ControlError::Internal(format!(
                "a digest of block {block} of a file of {}",
                f.blocks
            )));
        }
        f.landing.remove(&block);
        if f.is_verified(block) {
            return Ok(Vec::new());
        }
        if !f.ours.contains_key(&block) {
            f.landed += f.block_length(block);
        }
        f.ours.insert(block, digest.to_owned());
        // At most HELD blocks of all files together; none newly for a
        // file that has to be read back anyway.
        if let Some(data) = data {
            if let Some(h) = f.held.get_mut(&block) {
                *h = data;
            } else if self.held_blocks < HELD && block >= f.hashed_to && f.read_back_from.is_none()
            {
                f.held.insert(block, data);
                self.held_blocks += 1;
            }
        }
        Ok(self.check(i, block))
    }

    fn check(&mut self, i: usize, b: u64) -> Vec<InAction> {
        let f = &mut self.files[i];
        let (Some(ours), Some(theirs)) = (f.ours.get(&b), f.theirs.get(&b)) else {
            return Vec::new();
        };
        if f.is_verified(b) {
            return Vec::new();
        }
        if ours != theirs {
            // Caught at once: only this block comes again.
            f.ours.remove(&b);
            f.landed -= f.block_length(b);
            if f.held.remove(&b).is_some() {
                self.held_blocks -= 1;
            }
            return vec![InAction::Send(Message::Want {
                id: self.id.clone().unwrap_or_default(),
                file: i as u32,
                blocks: vec![b],
            })];
        }
        f.mark_verified(b);
        f.ours.remove(&b);
        f.theirs.remove(&b);
        self.ahead -= 1;
        self.feed_hash(i);
        self.finish_file(i)
    }

    fn feed_hash(&mut self, i: usize) {
        let f = &mut self.files[i];
        let h = self.hashers.entry(i as u32).or_default();
        while f.read_back_from.is_none() && f.hashed_to < f.blocks && f.is_verified(f.hashed_to) {
            let Some(data) = f.held.remove(&f.hashed_to) else {
                f.read_back_from = Some(f.hashed_to * BLOCK); // the rest comes from the sink
                break;
            };
            h.update(&data);
            self.held_blocks -= 1;
            f.hashed_to += 1;
        }
    }

    fn finish_file(&mut self, i: usize) -> Vec<InAction> {
        let f = &mut self.files[i];
        if f.done || f.sent.is_none() || f.n_verified() < f.blocks {
            return Vec::new();
        }
        if let Some(from) = f.read_back_from {
            if f.reading_back {
                return Vec::new();
            }
            f.reading_back = true;
            return vec![InAction::ReadBack {
                file: i as u32,
                from,
            }];
        }
        self.complete(i)
    }

    /// Bytes of the file read back, in order from the `ReadBack`'s `from`.
    pub fn read_back(&mut self, file: u32, data: &[u8]) {
        self.hashers.entry(file).or_default().update(data);
    }

    /// The read-back reached the file's end.
    pub fn read_back_done(&mut self, file: u32) -> Result<Vec<InAction>, ControlError> {
        let i = self.file(file)?;
        let f = &mut self.files[i];
        if !f.reading_back || f.done {
            return Err(ControlError::Internal(format!(
                "read_back_done for file {file}, which was not being read back"
            )));
        }
        f.read_back_from = None;
        f.hashed_to = f.blocks;
        Ok(self.complete(i))
    }

    fn complete(&mut self, i: usize) -> Vec<InAction> {
        let ours = hex::encode(
            self.hashers
                .remove(&(i as u32))
                .unwrap_or_default()
                .finalize(),
        );
        let f = &mut self.files[i];
        let ok = f.sent.as_deref() == Some(ours.as_str());
        f.done = true;
        f.sha256 = ours.clone();
        self.held_blocks -= f.held.len();
        f.held.clear();
        self.done_files += 1;
        let id = self.id.clone().unwrap_or_default();
        let mut out = vec![
            InAction::Send(Message::Got {
                id: id.clone(),
                file: i as u32,
                ok,
                sha256: ours.clone(),
            }),
            InAction::FileDone {
                file: i as u32,
                ok,
                sha256: ours,
            },
        ];
        if !ok {
            out.push(InAction::Send(Message::Cancel {
                id,
                reason: format!("file {i} arrived damaged"),
            }));
            out.extend(self.stop(
                format!(
                    "file {} arrived damaged (its SHA-256 does not match)",
                    i + 1
                ),
                By::Us,
            ));
            return out;
        }
        if self.done_files == self.files.len() {
            self.state = InState::Done;
            out.push(InAction::Done);
        }
        out
    }

    /// A new data channel opened: a cancel or decline of ours goes again;
    /// while receiving, `resume` tells the sender what we hold. The window
    /// starts afresh: nothing received, finished or acknowledged.
    pub fn on_channel(&mut self) -> Vec<InAction> {
        self.received = 0;
        self.finished = 0;
        self.last_ack = 0;
        if self.state == InState::Stopped && self.stopped_by == Some(By::Us) {
            if let Some(w) = &self.final_word {
                return vec![InAction::Send(w.clone())];
            }
        }
        if self.state == InState::Offering {
            self.parts.clear();
        }
        self.resume()
    }

    /// What we hold, for the sender to skip. A block half received is
    /// dropped; it comes again whole.
    fn resume(&mut self) -> Vec<InAction> {
        if self.state != InState::Receiving {
            return Vec::new();
        }
        let mut files = Vec::new();
        self.partial = None;
        for (i, f) in self.files.iter_mut().enumerate() {
            f.current = None;
            if f.done || files.len() >= MAX_RANGES {
                continue;
            }
            let mut have: Vec<[u64; 2]> = Vec::new();
            if f.verified_to > 0 {
                have.push([0, f.verified_to]);
            }
            let held: BTreeSet<u64> = f
                .ours
                .keys()
                .chain(f.verified_above.iter())
                .chain(f.landing.iter())
                .copied()
                .collect();
            // As the web client: a block extends the last range; once
            // MAX_RANGES ranges exist, the first that would start another
            // ends the scan.
            for b in held {
                if b >= f.blocks {
                    break;
                }
                let n = have.len();
                match have.last_mut() {
                    Some(last) if last[1] > b => {}
                    Some(last) if last[1] == b => last[1] = b + 1,
                    _ if n < MAX_RANGES => have.push([b, b + 1]),
                    _ => break,
                }
            }
            if !have.is_empty() {
                files.push(crate::control::Holding {
                    file: i as u32,
                    have,
                });
            }
        }
        vec![InAction::Send(Message::Resume {
            id: self.id.clone().unwrap_or_default(),
            files,
        })]
    }

    pub fn progress(&self) -> Progress {
        Progress {
            done: self
                .files
                .iter()
                .map(|f| if f.done { f.size } else { f.landed })
                .sum(),
            total: self.offer.as_ref().map_or(0, |o| o.total),
            files: self.done_files,
            count: self.files.len(),
        }
    }
}
