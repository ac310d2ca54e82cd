//! The data-channel file framing of docs/PROTOCOL.md ("The data channel"),
//! sans-IO: the caller hands in each frame and the current time and gets
//! back what to do. Nothing here touches a socket, a file or a clock, and no
//! input makes it panic.
//!
//! Control messages are text frames holding one JSON object
//! (`file`, `end`, `received`, `cancel`); file bytes are binary frames.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use crate::names::{has_reserved_stem, is_replaced_char, sanitize_name, MAX_SANITIZED_BYTES};

/// Largest control (text) frame, in UTF-8 bytes.
pub const MAX_CONTROL_BYTES: usize = 16384;
/// Largest data (binary) frame, in bytes.
pub const MAX_DATA_BYTES: usize = 65536;
/// Largest file size a `file` may announce: 2^53 - 1, the largest integer
/// JavaScript represents exactly.
pub const MAX_FILE_SIZE: u64 = (1 << 53) - 1;
/// Longest `name` in a `file`, in UTF-8 bytes (before sanitising).
pub const MAX_NAME_BYTES: usize = 4096;
/// Longest `reason` in a `cancel`, in Unicode scalar values.
pub const MAX_REASON_CHARS: usize = 256;
/// A file that gets no frame for this long is `stalled`.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a frame was refused. `kind()` gives the stable string both
/// implementations use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("control frame of {0} bytes exceeds {MAX_CONTROL_BYTES}")]
    TooLarge(usize),
    #[error("malformed control message: {0}")]
    Malformed(&'static str),
    #[error("unknown control message type {0:?}")]
    UnknownType(String),
    #[error("file size is not an integer in 0..=2^53-1")]
    BadSize,
    #[error("file name of {0} bytes exceeds {MAX_NAME_BYTES}")]
    BadName(usize),
    #[error("sha256 is not 64 lowercase hex characters")]
    BadDigest,
    #[error("unexpected binary frame: {0}")]
    UnexpectedData(&'static str),
    #[error("unexpected control message: {0}")]
    UnexpectedControl(&'static str),
    #[error("more bytes than the {size} announced")]
    SizeExceeded { size: u64 },
    #[error("end after {got} of {size} announced bytes")]
    SizeShort { size: u64, got: u64 },
    #[error("no frame for 30 s while a file is open")]
    Stalled,
}

impl FramingError {
    /// The stable error kind (docs/PROTOCOL.md, "The data channel").
    pub fn kind(&self) -> &'static str {
        match self {
            FramingError::TooLarge(_) => "too_large",
            FramingError::Malformed(_) => "malformed",
            FramingError::UnknownType(_) => "unknown_type",
            FramingError::BadSize => "bad_size",
            FramingError::BadName(_) => "bad_name",
            FramingError::BadDigest => "bad_digest",
            FramingError::UnexpectedData(_) => "unexpected_data",
            FramingError::UnexpectedControl(_) => "unexpected_control",
            FramingError::SizeExceeded { .. } => "size_exceeded",
            FramingError::SizeShort { .. } => "size_short",
            FramingError::Stalled => "stalled",
        }
    }
}

/// A parsed control message. `name` is as sent (not sanitised); digests are
/// 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    File { name: String, size: u64 },
    End { sha256: String },
    Received { ok: bool, sha256: String },
    Cancel { reason: String },
}

impl Control {
    /// The text frame for this message (fields in the documented order).
    pub fn to_json(&self) -> String {
        let q = |s: &str| Value::from(s).to_string();
        match self {
            Control::File { name, size } => {
                format!(r#"{{"t":"file","name":{},"size":{size}}}"#, q(name))
            }
            Control::End { sha256 } => format!(r#"{{"t":"end","sha256":{}}}"#, q(sha256)),
            Control::Received { ok, sha256 } => {
                format!(r#"{{"t":"received","ok":{ok},"sha256":{}}}"#, q(sha256))
            }
            Control::Cancel { reason } => format!(r#"{{"t":"cancel","reason":{}}}"#, q(reason)),
        }
    }
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key)
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    what: &'static str,
) -> Result<&'a str, FramingError> {
    field(obj, key)
        .and_then(Value::as_str)
        .ok_or(FramingError::Malformed(what))
}

fn digest_field(obj: &Map<String, Value>) -> Result<String, FramingError> {
    let d = string_field(obj, "sha256", "sha256 missing or not a string")?;
    if d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(d.to_owned())
    } else {
        Err(FramingError::BadDigest)
    }
}

/// A JSON number as a file size: any number whose value is an integer in
/// 0..=2^53-1 (so `5`, `5.0`, `5e0` and `-0` all qualify, as in JavaScript).
fn size_value(v: &Value) -> Result<u64, FramingError> {
    let Value::Number(n) = v else {
        return Err(FramingError::Malformed("size missing or not a number"));
    };
    if let Some(u) = n.as_u64() {
        return if u <= MAX_FILE_SIZE {
            Ok(u)
        } else {
            Err(FramingError::BadSize)
        };
    }
    if n.is_i64() {
        // A negative integer: as_u64 took every non-negative one.
        return Err(FramingError::BadSize);
    }
    match n.as_f64() {
        Some(f)
            if f.is_finite() && f.fract() == 0.0 && (0.0..=MAX_FILE_SIZE as f64).contains(&f) =>
        {
            // Exact: an integral double in range converts without loss.
            Ok(f as u64)
        }
        _ => Err(FramingError::BadSize),
    }
}

/// Parse one control (text) frame. Checks, in this order: the frame's
/// length, JSON syntax, that it is an object, `t`, then the fields of that
/// type in the order they are documented. Unknown extra fields are ignored.
pub fn parse_control(text: &str) -> Result<Control, FramingError> {
    if text.len() > MAX_CONTROL_BYTES {
        return Err(FramingError::TooLarge(text.len()));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|_| FramingError::Malformed("not JSON"))?;
    let Value::Object(obj) = value else {
        return Err(FramingError::Malformed("not a JSON object"));
    };
    let t = string_field(&obj, "t", "t missing or not a string")?;
    match t {
        "file" => {
            let name = string_field(&obj, "name", "name missing or not a string")?;
            if name.len() > MAX_NAME_BYTES {
                return Err(FramingError::BadName(name.len()));
            }
            let size =
                size_value(field(&obj, "size").ok_or(FramingError::Malformed("size missing"))?)?;
            Ok(Control::File {
                name: name.to_owned(),
                size,
            })
        }
        "end" => Ok(Control::End {
            sha256: digest_field(&obj)?,
        }),
        "received" => {
            let ok = field(&obj, "ok")
                .and_then(Value::as_bool)
                .ok_or(FramingError::Malformed("ok missing or not a boolean"))?;
            Ok(Control::Received {
                ok,
                sha256: digest_field(&obj)?,
            })
        }
        "cancel" => {
            let reason = string_field(&obj, "reason", "reason missing or not a string")?;
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(FramingError::Malformed("reason longer than 256 characters"));
            }
            Ok(Control::Cancel {
                reason: reason.to_owned(),
            })
        }
        other => Err(FramingError::UnknownType(other.to_owned())),
    }
}

/// What the receiving side should do after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Nothing to do (an empty binary frame).
    Nothing,
    /// A file begins: create it under `name` (already sanitised).
    Start { name: String, size: u64 },
    /// Append these bytes to the open file.
    Write(&'a [u8]),
    /// The file is complete. `ok` is whether the SHA-256 of the bytes
    /// received (`actual`) equals the one the sender announced (`expected`);
    /// answer with `Control::Received { ok, sha256: actual }` and keep the
    /// file only if `ok`.
    End {
        expected: String,
        actual: String,
        ok: bool,
    },
    /// The other side cancelled (`file_open`: a file was open and is
    /// abandoned).
    Cancelled { reason: String, file_open: bool },
}

struct Open {
    size: u64,
    got: u64,
    hash: Sha256,
}

/// The receiving side of the data channel, as a state machine. Any error is
/// final: the receiver stays failed and returns the same error for every
/// later call (the caller sends `cancel` with the error's kind as reason and
/// closes the channel).
pub struct Receiver {
    open: Option<Open>,
    last_frame: Option<Instant>,
    failed: Option<FramingError>,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub fn new() -> Self {
        Receiver {
            open: None,
            last_frame: None,
            failed: None,
        }
    }

    /// Whether a file is open (between `file` and `end`/`cancel`).
    pub fn file_open(&self) -> bool {
        self.open.is_some()
    }

    /// Bytes received of the open file, if one is open.
    pub fn received_bytes(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.got)
    }

    /// The error this receiver failed with, if it did.
    pub fn error(&self) -> Option<&FramingError> {
        self.failed.as_ref()
    }

    /// When `poll_timeout` should be called next (None: no file open).
    pub fn next_deadline(&self) -> Option<Instant> {
        match (&self.open, self.last_frame) {
            (Some(_), Some(t)) => t.checked_add(STALL_TIMEOUT),
            _ => None,
        }
    }

    fn fail<T>(&mut self, e: FramingError) -> Result<T, FramingError> {
        self.open = None;
        self.failed = Some(e.clone());
        Err(e)
    }

    fn stalled(&self, now: Instant) -> bool {
        match (&self.open, self.last_frame) {
            (Some(_), Some(t)) => now.saturating_duration_since(t) >= STALL_TIMEOUT,
            _ => false,
        }
    }

    /// Check the clock: `stalled` once a file has been open without a frame
    /// for 30 s. Time running backwards counts as no time.
    pub fn poll_timeout(&mut self, now: Instant) -> Result<(), FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.stalled(now) {
            return self.fail(FramingError::Stalled);
        }
        Ok(())
    }

    /// Before any frame: a failed receiver stays failed, a stall that has
    /// already happened is reported, then the frame counts as activity.
    fn arrive(&mut self, now: Instant) -> Result<(), FramingError> {
        self.poll_timeout(now)?;
        self.last_frame = Some(match self.last_frame {
            Some(t) if t > now => t,
            _ => now,
        });
        Ok(())
    }

    /// A text frame arrived.
    pub fn on_text(&mut self, text: &str, now: Instant) -> Result<Action<'static>, FramingError> {
        self.arrive(now)?;
        let msg = match parse_control(text) {
            Ok(m) => m,
            Err(e) => return self.fail(e),
        };
        match msg {
            Control::File { name, size } => {
                if self.open.is_some() {
                    return self.fail(FramingError::UnexpectedControl("file while a file is open"));
                }
                self.open = Some(Open {
                    size,
                    got: 0,
                    hash: Sha256::new(),
                });
                Ok(Action::Start {
                    name: sanitize_name(&name),
                    size,
                })
            }
            Control::End { sha256 } => {
                let Some(open) = self.open.take() else {
                    return self.fail(FramingError::UnexpectedControl("end with no file open"));
                };
                if open.got < open.size {
                    return self.fail(FramingError::SizeShort {
                        size: open.size,
                        got: open.got,
                    });
                }
                let actual = hex::encode(open.hash.finalize());
                let ok = actual == sha256;
                Ok(Action::End {
                    expected: sha256,
                    actual,
                    ok,
                })
            }
            Control::Received { .. } => self.fail(FramingError::UnexpectedControl(
                "received sent to the receiving side",
            )),
            Control::Cancel { reason } => {
                let file_open = self.open.take().is_some();
                Ok(Action::Cancelled { reason, file_open })
            }
        }
    }

    /// A binary frame arrived.
    pub fn on_binary<'a>(
        &mut self,
        data: &'a [u8],
        now: Instant,
    ) -> Result<Action<'a>, FramingError> {
        self.arrive(now)?;
        if data.len() > MAX_DATA_BYTES {
            return self.fail(FramingError::UnexpectedData(
                "binary frame over 65536 bytes",
            ));
        }
        let Some(open) = self.open.as_mut() else {
            return self.fail(FramingError::UnexpectedData(
                "binary frame with no file open",
            ));
        };
        let left = open.size - open.got;
        if data.len() as u64 > left {
            let size = open.size;
            return self.fail(FramingError::SizeExceeded { size });
        }
        if data.is_empty() {
            return Ok(Action::Nothing);
        }
        open.got += data.len() as u64;
        open.hash.update(data);
        Ok(Action::Write(data))
    }
}
