//! The messages of a v2 transfer (docs/PROTOCOL.md, "Transfers (v2)"),
//! sealed in control records (`crate::records`), and the header of its data
//! records. The same checks, in the same order and with the same error
//! kinds, as the web client's `parseTransfer`, `offerParts`, `encodeFrame`
//! and `decodeFrame` (`web/src/control.js`); shared vectors
//! `peer/vectors/transfer-v2.json`. Sans-IO; no input makes it panic.

use serde::Serialize;

use crate::json::{Doc, Node};

/// Bytes per hashed block.
pub const BLOCK: u64 = 1 << 20;
/// Most bytes of file in one data frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes of a data frame's header: file index (u32), offset (u64).
pub const HEADER: usize = 12;
/// Most files in one offer.
pub const MAX_FILES: u64 = 100_000;
/// Most `files` messages one offer takes.
pub const MAX_PARTS: u64 = 4096;
/// Longest offered `path`, in UTF-8 bytes (before sanitising).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most UTF-8 bytes of all of an offer's paths together: what a receiver
/// holds before the person sees the offer.
pub const MAX_OFFER_PATH_BYTES: usize = 16 * 1024 * 1024;
/// Most digests in a `hashes`, block numbers in a `want`.
pub const MAX_LIST: usize = 256;
/// Most files in a `resume`, and ranges per file.
pub const MAX_RANGES: usize = 64;
/// Code points of a `cancel` reason kept.
pub const MAX_REASON: usize = 256;
/// The sender keeps each `files` message under this many bytes of JSON.
pub const PART_BYTES: usize = 32 * 1024;
/// Largest size, offset or block number: 2^53 - 1, the largest integer
/// JavaScript represents exactly.
pub const MAX_SIZE: u64 = (1 << 53) - 1;
/// Flow control ("Flow control"): on each data channel the sender may be at
/// most this many file bytes ahead of the receiver's last `ack`.
pub const WINDOW: u64 = 16 * 1024 * 1024;
/// The receiver sends an `ack` whenever the bytes it finished with on the
/// channel grew by this many since its last one.
pub const ACK_EVERY: u64 = 4 * 1024 * 1024;

/// Blocks in a file of `size` bytes.
pub fn blocks_of(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

/// Why a message or a data frame was refused. `kind()` gives the stable
/// string both implementations use (the reason of the `cancel` sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("malformed transfer message: {0}")]
    Malformed(&'static str),
    #[error("bad size: {0}")]
    BadSize(&'static str),
    #[error("offered path of {0} UTF-8 bytes exceeds {MAX_PATH_BYTES}")]
    BadName(usize),
    #[error(
        "the files' names and folders add up to {0} bytes, over the 16 MiB one offer may hold: \
         offer fewer files at a time"
    )]
    OfferNames(usize),
    #[error("bad digest: {0}")]
    BadDigest(&'static str),
    #[error("unknown transfer message {0:?}")]
    UnknownType(String),
    #[error("bad data frame: {0}")]
    BadFrame(String),
    /// A valid message at the wrong time (the state machines).
    #[error("unexpected: {0}")]
    Unexpected(String),
    #[error("data frame out of turn: {0}")]
    UnexpectedData(String),
    #[error("more bytes than offered: {0}")]
    SizeExceeded(String),
    #[error("fewer bytes than offered: {0}")]
    SizeShort(String),
    /// The caller broke the machine's contract.
    #[error("internal: {0}")]
    Internal(String),
}

impl ControlError {
    /// The stable kind, equal to the web client's `ControlError.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlError::Malformed(_) => "malformed",
            ControlError::BadSize(_) => "bad_size",
            ControlError::BadName(_) | ControlError::OfferNames(_) => "bad_name",
            ControlError::BadDigest(_) => "bad_digest",
            ControlError::UnknownType(_) => "unknown_type",
            ControlError::BadFrame(_) => "bad_frame",
            ControlError::Unexpected(_) => "unexpected",
            ControlError::UnexpectedData(_) => "unexpected_data",
            ControlError::SizeExceeded(_) => "size_exceeded",
            ControlError::SizeShort(_) => "size_short",
            ControlError::Internal(_) => "internal",
        }
    }
}

/// One file of an offer: `path` as sent (not sanitised: see
/// `crate::paths`), `size` in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfferedFile {
    pub path: String,
    pub size: u64,
}

/// The blocks a receiver holds of one file: `[start, end)` ranges, in
/// order, apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holding {
    pub file: u32,
    pub have: Vec<[u64; 2]>,
}

/// A checked transfer message, with only its known fields. Serialises
/// (`to_json`) as the web client's `parseTransfer` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Message {
    /// Part `part` of `parts` of an offer of `count` files, `total` bytes.
    Files {
        id: String,
        part: u32,
        parts: u32,
        count: u32,
        total: u64,
        files: Vec<OfferedFile>,
    },
    Accept {
        id: String,
    },
    Decline {
        id: String,
    },
    /// `reason` as sent, cut to [`MAX_REASON`] code points (an unpaired
    /// surrogate escape, which the web client keeps, is U+FFFD here); not
    /// neutralised: do that before showing it.
    Cancel {
        id: String,
        reason: String,
    },
    /// SHA-256 (hex) of blocks `first`, `first + 1`, ... of `file`.
    Hashes {
        id: String,
        file: u32,
        first: u64,
        sha256: Vec<String>,
    },
    /// SHA-256 (hex) of the whole `file`.
    Sent {
        id: String,
        file: u32,
        sha256: String,
    },
    /// Blocks of `file` to send again.
    Want {
        id: String,
        file: u32,
        blocks: Vec<u64>,
    },
    /// The blocks the receiver holds, on a new data channel.
    Resume {
        id: String,
        files: Vec<Holding>,
    },
    /// `file` is complete; `ok` when its SHA-256 (`sha256`, as the
    /// receiver computed it) equals the sender's `sent`.
    Got {
        id: String,
        file: u32,
        ok: bool,
        sha256: String,
    },
    /// The file bytes the receiver received and finished with on this data
    /// channel ("Flow control"): the sender may start blocks up to
    /// `bytes + WINDOW`.
    Ack {
        id: String,
        bytes: u64,
    },
}

impl Message {
    /// The transfer this message belongs to.
    pub fn id(&self) -> &str {
        match self {
            Message::Files { id, .. }
            | Message::Accept { id }
            | Message::Decline { id }
            | Message::Cancel { id, .. }
            | Message::Hashes { id, .. }
            | Message::Sent { id, .. }
            | Message::Want { id, .. }
            | Message::Resume { id, .. }
            | Message::Got { id, .. }
            | Message::Ack { id, .. } => id,
        }
    }

    /// The `kind` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Files { .. } => "files",
            Message::Accept { .. } => "accept",
            Message::Decline { .. } => "decline",
            Message::Cancel { .. } => "cancel",
            Message::Hashes { .. } => "hashes",
            Message::Sent { .. } => "sent",
            Message::Want { .. } => "want",
            Message::Resume { .. } => "resume",
            Message::Got { .. } => "got",
            Message::Ack { .. } => "ack",
        }
    }

    /// The JSON to seal in a control record.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }
}

/// The kinds [`parse_message`] takes.
pub const TRANSFER_KINDS: [&str; 10] = [
    "files", "accept", "decline", "cancel", "hashes", "sent", "want", "resume", "got", "ack",
];

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A JSON value that JavaScript's `Number.isInteger` takes, in 0..=max
/// (so `5.0`, `5e0` and `-0` count, `1.5`, `1e400` and `2^53` do not).
fn integer(doc: &Doc, v: Option<usize>, max: u64) -> Option<u64> {
    match v.map(|i| doc.node(i)) {
        Some(Node::Num(f)) if f.is_finite() && f.trunc() == *f && *f >= 0.0 && *f <= max as f64 => {
            // Exact: an integral double in range.
            Some(*f as u64)
        }
        _ => None,
    }
}

fn int(
    doc: &Doc,
    obj: usize,
    key: &str,
    max: u64,
    what: &'static str,
) -> Result<u64, ControlError> {
    integer(doc, doc.get(obj, key), max).ok_or(ControlError::Malformed(what))
}

fn index(doc: &Doc, obj: usize, key: &str, what: &'static str) -> Result<u32, ControlError> {
    // MAX_FILES - 1 fits a u32.
    int(doc, obj, key, MAX_FILES - 1, what).map(|n| n as u32)
}

fn string(doc: &Doc, v: Option<usize>) -> Option<(&str, bool)> {
    match v.map(|i| doc.node(i)) {
        Some(Node::Str { s, well_formed }) => Some((s.as_str(), *well_formed)),
        _ => None,
    }
}

/// A string of exactly `len` lowercase hex digits (a string holding an
/// unpaired surrogate never is one).
fn hex_string(doc: &Doc, v: Option<usize>, len: usize) -> Option<String> {
    match string(doc, v) {
        Some((s, true)) if is_hex(s, len) => Some(s.to_owned()),
        _ => None,
    }
}

fn list<'d>(
    doc: &'d Doc,
    obj: usize,
    key: &str,
    max: usize,
    what: &'static str,
) -> Result<&'d [usize], ControlError> {
    match doc.get(obj, key).map(|i| doc.node(i)) {
        Some(Node::Arr(items)) if !items.is_empty() && items.len() <= max => Ok(items),
        _ => Err(ControlError::Malformed(what)),
    }
}

fn is_object(doc: &Doc, v: usize) -> bool {
    // `typeof v === 'object' && v !== null`: arrays count (and have none
    // of the keys read here).
    matches!(doc.node(v), Node::Obj(_) | Node::Arr(_))
}

/// Checks a control record's plaintext as the web client does: UTF-8 (a
/// leading byte-order mark is dropped, as `TextDecoder` does), JSON as
/// `JSON.parse` reads it, then [`parse_value`]. Anything that is not UTF-8
/// or not JSON is `malformed`.
pub fn parse_message(bytes: &[u8]) -> Result<Message, ControlError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|_| ControlError::Malformed("not UTF-8"))?;
    parse_str(text)
}

/// [`parse_message`] for text already decoded (no byte-order mark is
/// dropped here).
pub fn parse_str(text: &str) -> Result<Message, ControlError> {
    let doc = Doc::parse(text).ok_or(ControlError::Malformed("not JSON"))?;
    parse_value(&doc, doc.root)
}

/// The checks of `parseTransfer`, in its order: an object, `id`, then by
/// `kind` the fields of that kind.
fn parse_value(doc: &Doc, m: usize) -> Result<Message, ControlError> {
    if !matches!(doc.node(m), Node::Obj(_)) {
        return Err(ControlError::Malformed("not an object"));
    }
    let id = hex_string(doc, doc.get(m, "id"), 16).ok_or(ControlError::Malformed(
        "id must be 16 lowercase hex digits",
    ))?;
    let kind = match string(doc, doc.get(m, "kind")) {
        Some((k, _)) => k,
        None => {
            return Err(ControlError::UnknownType(match doc.get(m, "kind") {
                None => "undefined".to_owned(),
                Some(_) => "(not a string)".to_owned(),
            }))
        }
    };
    match kind {
        "files" => {
            let parts = int(
                doc,
                m,
                "parts",
                MAX_PARTS,
                "files.parts must be an integer in 0..=4096",
            )?;
            if parts < 1 {
                return Err(ControlError::Malformed("files.parts must be at least 1"));
            }
            let part = int(doc, m, "part", parts - 1, "files.part must be below parts")?;
            let count = int(
                doc,
                m,
                "count",
                MAX_FILES,
                "files.count must be an integer in 0..=100000",
            )?;
            if count < 1 {
                return Err(ControlError::Malformed("an offer holds at least one file"));
            }
            let total = int(
                doc,
                m,
                "total",
                MAX_SIZE,
                "files.total must be an integer in 0..=2^53-1",
            )?;
            // count <= MAX_FILES, so it fits a usize.
            let entries = list(
                doc,
                m,
                "files",
                count as usize,
                "files.files must be a list of 1..=count",
            )?;
            let mut files = Vec::with_capacity(entries.len());
            for &f in entries {
                let path = match is_object(doc, f)
                    .then(|| string(doc, doc.get(f, "path")))
                    .flatten()
                {
                    Some((p, true)) => p,
                    _ => {
                        return Err(ControlError::Malformed(
                            "files[].path must be a well-formed string",
                        ))
                    }
                };
                if path.len() > MAX_PATH_BYTES {
                    return Err(ControlError::BadName(path.len()));
                }
                let size = integer(doc, doc.get(f, "size"), MAX_SIZE).ok_or(
                    ControlError::BadSize("files[].size must be an integer in 0..=2^53-1"),
                )?;
                files.push(OfferedFile {
                    path: path.to_owned(),
                    size,
                });
            }
            Ok(Message::Files {
                id,
                part: part as u32,
                parts: parts as u32,
                count: count as u32,
                total,
                files,
            })
        }
        "accept" => Ok(Message::Accept { id }),
        "decline" => Ok(Message::Decline { id }),
        "cancel" => {
            let reason = string(doc, doc.get(m, "reason")).map_or("", |(s, _)| s);
            Ok(Message::Cancel {
                id,
                reason: reason.chars().take(MAX_REASON).collect(),
            })
        }
        "hashes" => {
            let items = list(
                doc,
                m,
                "sha256",
                MAX_LIST,
                "hashes.sha256 must be a list of 1..=256",
            )?;
            let mut sha256 = Vec::with_capacity(items.len());
            for &d in items {
                sha256.push(hex_string(doc, Some(d), 64).ok_or(ControlError::BadDigest(
                    "hashes.sha256 holds a digest that is not 64 lowercase hex digits",
                ))?);
            }
            let file = index(
                doc,
                m,
                "file",
                "hashes.file must be an integer in 0..=99999",
            )?;
            let first = int(
                doc,
                m,
                "first",
                MAX_SIZE,
                "hashes.first must be an integer in 0..=2^53-1",
            )?;
            Ok(Message::Hashes {
                id,
                file,
                first,
                sha256,
            })
        }
        "sent" => {
            let sha256 = hex_string(doc, doc.get(m, "sha256"), 64).ok_or(
                ControlError::BadDigest("sent.sha256 must be 64 lowercase hex digits"),
            )?;
            let file = index(doc, m, "file", "sent.file must be an integer in 0..=99999")?;
            Ok(Message::Sent { id, file, sha256 })
        }
        "want" => {
            let items = list(
                doc,
                m,
                "blocks",
                MAX_LIST,
                "want.blocks must be a list of 1..=256",
            )?;
            let mut blocks = Vec::with_capacity(items.len());
            for &b in items {
                blocks.push(
                    integer(doc, Some(b), MAX_SIZE).ok_or(ControlError::Malformed(
                        "want.blocks must hold block numbers",
                    ))?,
                );
            }
            let file = index(doc, m, "file", "want.file must be an integer in 0..=99999")?;
            Ok(Message::Want { id, file, blocks })
        }
        "resume" => {
            let entries = match doc.get(m, "files").map(|i| doc.node(i)) {
                Some(Node::Arr(items)) if items.len() <= MAX_RANGES => items,
                _ => {
                    return Err(ControlError::Malformed(
                        "resume.files must be a list of at most 64",
                    ))
                }
            };
            let mut files = Vec::with_capacity(entries.len());
            for &f in entries {
                if !is_object(doc, f) {
                    return Err(ControlError::Malformed("resume.files holds a non-object"));
                }
                let file = index(
                    doc,
                    f,
                    "file",
                    "resume.file must be an integer in 0..=99999",
                )?;
                let ranges = match doc.get(f, "have").map(|i| doc.node(i)) {
                    Some(Node::Arr(items)) if items.len() <= MAX_RANGES => items,
                    _ => {
                        return Err(ControlError::Malformed(
                            "resume.have must be a list of at most 64 ranges",
                        ))
                    }
                };
                let mut have = Vec::with_capacity(ranges.len());
                let mut end: Option<u64> = None;
                for &r in ranges {
                    let range = match doc.node(r) {
                        Node::Arr(pair) if pair.len() == 2 => integer(doc, Some(pair[0]), MAX_SIZE)
                            .zip(integer(doc, Some(pair[1]), MAX_SIZE)),
                        _ => None,
                    };
                    match range {
                        Some((a, b)) if a < b && end.is_none_or(|e| a > e) => {
                            end = Some(b);
                            have.push([a, b]);
                        }
                        _ => {
                            return Err(ControlError::Malformed(
                                "resume.have ranges must be [start, end) in order, apart",
                            ))
                        }
                    }
                }
                files.push(Holding { file, have });
            }
            Ok(Message::Resume { id, files })
        }
        "got" => {
            let ok = match doc.get(m, "ok").map(|i| doc.node(i)) {
                Some(Node::Bool(b)) => *b,
                _ => return Err(ControlError::Malformed("got.ok must be a boolean")),
            };
            let sha256 = hex_string(doc, doc.get(m, "sha256"), 64).ok_or(
                ControlError::BadDigest("got.sha256 must be 64 lowercase hex digits"),
            )?;
            let file = index(doc, m, "file", "got.file must be an integer in 0..=99999")?;
            Ok(Message::Got {
                id,
                file,
                ok,
                sha256,
            })
        }
        "ack" => {
            let bytes = int(
                doc,
                m,
                "bytes",
                MAX_SIZE,
                "ack.bytes must be an integer in 0..=2^53-1",
            )?;
            Ok(Message::Ack { id, bytes })
        }
        other => Err(ControlError::UnknownType(other.chars().take(32).collect())),
    }
}

/// An offer's `files` messages, each part's JSON under [`PART_BYTES`], as
/// the web client's `offerParts` pages them.
pub fn offer_parts(id: &str, files: &[OfferedFile]) -> Result<Vec<Message>, ControlError> {
    let total = files
        .iter()
        .try_fold(0u64, |n, f| {
            n.checked_add(f.size).filter(|t| *t <= MAX_SIZE)
        })
        .ok_or(ControlError::BadSize(
            "the files add up to more than 2^53-1 bytes",
        ))?;
    if files.is_empty() || files.len() as u64 > MAX_FILES {
        return Err(ControlError::Malformed("an offer holds 1..=100000 files"));
    }
    let names: usize = files.iter().map(|f| f.path.len()).sum();
    if names > MAX_OFFER_PATH_BYTES {
        return Err(ControlError::OfferNames(names));
    }
    let mut pages: Vec<Vec<OfferedFile>> = Vec::new();
    let mut page: Vec<OfferedFile> = Vec::new();
    let mut bytes = 0usize;
    for f in files {
        // JSON.stringify({path, size}) and a comma.
        let n = serde_json::to_string(f)
            .expect("plain data serialises")
            .len()
            + 1;
        if !page.is_empty() && bytes + n > PART_BYTES - 256 {
            pages.push(std::mem::take(&mut page));
            bytes = 0;
        }
        page.push(f.clone());
        bytes += n;
    }
    pages.push(page);
    if pages.len() as u64 > MAX_PARTS {
        return Err(ControlError::Malformed(
            "the offer does not fit in its parts",
        ));
    }
    let parts = pages.len() as u32;
    let count = files.len() as u32;
    Ok(pages
        .into_iter()
        .enumerate()
        .map(|(part, files)| Message::Files {
            id: id.to_owned(),
            part: part as u32,
            parts,
            count,
            total,
            files,
        })
        .collect())
}

/// A data frame's header and payload (inside a sealed data record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub file: u32,
    pub offset: u64,
    pub data: &'a [u8],
}

/// A data frame: file index (u32 BE), offset (u64 BE), payload. Not
/// checked (the sender keeps offsets and payloads within bounds).
pub fn encode_frame(file: u32, offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&file.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a data frame; checks only its shape (1..=[`MAX_PAYLOAD`] bytes of
/// payload, offset at most 2^53-1): the receiver checks it against the offer.
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, ControlError> {
    if buf.len() <= HEADER || buf.len() > HEADER + MAX_PAYLOAD {
        return Err(ControlError::BadFrame(format!(
            "a data frame of {} bytes (header {HEADER}, payload 1..={MAX_PAYLOAD})",
            buf.len()
        )));
    }
    let (head, data) = buf.split_at(HEADER);
    let mut file = [0u8; 4];
    file.copy_from_slice(&head[..4]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&head[4..]);
    let offset = u64::from_be_bytes(offset);
    if offset > MAX_SIZE {
        return Err(ControlError::BadFrame(
            "data frame offset beyond 2^53-1".to_owned(),
        ));
    }
    Ok(Frame {
        file: u32::from_be_bytes(file),
        offset,
        data,
    })
}
