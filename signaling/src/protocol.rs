//! The v1 wire protocol of `/signal`: JSON text frames, each with a `type`.
//!
//! docs/PROTOCOL.md is the reference for clients; this module is the only
//! place that turns frames into values and back, so the two stay in step.

use serde::{Deserialize, Serialize};

/// Protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes the server uses (RFC 6455 §7.4 and the 4000-4999
/// private range). Documented in docs/PROTOCOL.md.
pub mod close {
    /// Frame larger than the hard transport cap.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Server going away for a restart: reconnect (elsewhere) and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Server stopping with its sessions (in-memory presence): they end.
    pub const GOING_AWAY: u16 = 1001;
    /// Server at its connection limit: try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Policy violation (a client that keeps ignoring limits).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// No frame (not even a pong) within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// Another connection resumed this seat.
    pub const SUPERSEDED: u16 = 4001;
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Open a session and get a nameplate for it.
    Create {},
    /// Take the second seat of the session behind `nameplate`.
    Join { nameplate: String },
    /// Forward `body` to the peer. `seq` counts this seat's sends from 1.
    Send { seq: u64, body: String },
    /// The opening message of the peer handshake, sent by the creator as its
    /// first message (seq 1). Forwarded like `send` once the server has
    /// checked its suite and ML-KEM-768 encapsulation key.
    Hello { seq: u64, body: String },
    /// Every `message` up to `seq` has been received; the server may drop them.
    Ack { seq: u64 },
    /// Leave the session for good; the peer is told.
    Leave {},
    /// Reclaim a seat after a disconnect. `last_seq` is the highest `message`
    /// seq this client received.
    Resume { token: String, last_seq: u64 },
    /// Open a named room; `display_name` is how the other members see
    /// this one. The creator's client appends secret words to the
    /// nameplate it gets back; they never reach the server.
    RoomCreate {
        #[serde(default)]
        name: String,
        display_name: String,
        #[serde(default)]
        max_members: Option<usize>,
        #[serde(default)]
        ttl_secs: Option<u64>,
    },
    /// Enter the named room behind `nameplate`.
    RoomJoin {
        nameplate: String,
        display_name: String,
    },
    /// Become visible to the clients that reach the server from the same
    /// public address (opt-in).
    NearbyJoin { display_name: String },
    /// Take a room membership back after a disconnect.
    RoomResume { token: String },
    /// Leave the room for good; the others are told.
    RoomLeave {},
    /// End the room for everyone (its owner only).
    RoomClose {},
    /// Open one pairwise session with each of `to` (member ids).
    RoomInvite { to: Vec<u32> },
    /// Application-level liveness check, answered with `pong`.
    Ping {
        #[serde(default)]
        id: Option<u64>,
    },
}

/// Type names clients may send, to tell `unknown_type` from `bad_message`.
const CLIENT_TYPES: &[&str] = &[
    "create",
    "join",
    "send",
    "hello",
    "ack",
    "leave",
    "resume",
    "ping",
    "room_create",
    "room_join",
    "nearby_join",
    "room_resume",
    "room_leave",
    "room_close",
    "room_invite",
];

/// Limits announced in `welcome`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AnnouncedLimits {
    pub max_frame_bytes: usize,
    pub max_messages_per_sec: u32,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub resume_grace_secs: u64,
    pub nameplate_ttl_secs: u64,
    pub max_queued_messages: usize,
    pub room_max_members: usize,
    pub room_ttl_secs: u64,
    pub room_max_ttl_secs: u64,
}

/// One entry of an RTCConfiguration `iceServers` list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// One member as the others see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomMember {
    pub member: u32,
    pub name: String,
    /// Connected now (an away member may come back within the grace).
    pub present: bool,
}

/// Messages the server sends.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        version: u32,
        server_id: String,
        limits: AnnouncedLimits,
    },
    Created {
        session: String,
        nameplate: String,
        seat: u8,
        resume_token: String,
        expires_in_secs: u64,
    },
    Joined {
        session: String,
        seat: u8,
        resume_token: String,
    },
    Paired {
        session: String,
        seat: u8,
        ice_servers: Vec<IceServer>,
    },
    Message {
        seq: u64,
        body: String,
    },
    /// Every `send` up to `seq` is stored for the peer.
    Ack {
        seq: u64,
    },
    Resumed {
        session: String,
        seat: u8,
        paired: bool,
        /// Highest `send` seq the server holds from this seat: resend after it.
        last_received: u64,
        resume_token: String,
        /// When paired: what `paired` carries, for a client that was away
        /// when its peer joined.
        #[serde(skip_serializing_if = "Option::is_none")]
        ice_servers: Option<Vec<IceServer>>,
    },
    RoomCreated {
        room: String,
        nameplate: String,
        member: u32,
        resume_token: String,
        expires_in_secs: u64,
    },
    RoomJoined {
        room: String,
        kind: String,
        member: u32,
        resume_token: String,
    },
    RoomResumed {
        room: String,
        kind: String,
        member: u32,
        resume_token: String,
    },
    /// The whole room as this member may see it.
    RoomState {
        room: String,
        kind: String,
        name: String,
        owner: Option<u32>,
        you: u32,
        max_members: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_in_secs: Option<u64>,
        members: Vec<RoomMember>,
    },
    RoomMemberJoined {
        member: u32,
        name: String,
    },
    RoomMemberLeft {
        member: u32,
        reason: String,
    },
    RoomMemberAway {
        member: u32,
    },
    RoomMemberBack {
        member: u32,
    },
    /// Ownership passed to `member` (the owner left).
    RoomOwner {
        member: u32,
    },
    /// Member `from` opened a session with this one: take seat 1 with
    /// `resume` under `resume_token`.
    RoomInvite {
        from: u32,
        session: String,
        resume_token: String,
    },
    /// The session this member opened with `to`: take seat 0 with
    /// `resume` under `resume_token`.
    RoomInvited {
        to: u32,
        session: String,
        resume_token: String,
    },
    RoomClosed {
        reason: String,
    },
    /// This connection is no longer in its room.
    RoomLeft {
        reason: String,
    },
    PeerAway {},
    PeerBack {},
    PeerLeft {
        reason: String,
    },
    Left {},
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    Error {
        code: ErrorCode,
        message: String,
        retryable: bool,
    },
}

impl ServerMsg {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            code,
            message: message.into(),
            retryable: code.retryable(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys,
        // no floats.
        serde_json::to_string(self).expect("server messages serialize")
    }
}

/// Stable error codes. Clients match on these strings; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    BadMessage,
    FrameTooLarge,
    RateLimited,
    TooManySessions,
    TooManyFailedJoins,
    TooManyConnections,
    ServerFull,
    OriginNotAllowed,
    UnknownNameplate,
    SessionFull,
    AlreadyInSession,
    NoSession,
    NotPaired,
    BadSequence,
    MailboxFull,
    InvalidResumeToken,
    NameplateExpired,
    PresenceUnavailable,
    PqRequired,
    BadPqKey,
    UnknownRoom,
    RoomFull,
    NotRoomOwner,
    AlreadyInRoom,
    NoRoom,
    TooManyRooms,
    UnknownMember,
    TooManyInvites,
    BadRequest,
    TurnUnavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadMessage,
        ErrorCode::FrameTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::TooManySessions,
        ErrorCode::TooManyFailedJoins,
        ErrorCode::TooManyConnections,
        ErrorCode::ServerFull,
        ErrorCode::OriginNotAllowed,
        ErrorCode::UnknownNameplate,
        ErrorCode::SessionFull,
        ErrorCode::AlreadyInSession,
        ErrorCode::NoSession,
        ErrorCode::NotPaired,
        ErrorCode::BadSequence,
        ErrorCode::MailboxFull,
        ErrorCode::InvalidResumeToken,
        ErrorCode::NameplateExpired,
        ErrorCode::PresenceUnavailable,
        ErrorCode::PqRequired,
        ErrorCode::BadPqKey,
        ErrorCode::UnknownRoom,
        ErrorCode::RoomFull,
        ErrorCode::NotRoomOwner,
        ErrorCode::AlreadyInRoom,
        ErrorCode::NoRoom,
        ErrorCode::TooManyRooms,
        ErrorCode::UnknownMember,
        ErrorCode::TooManyInvites,
        ErrorCode::BadRequest,
        ErrorCode::TurnUnavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::TooManyFailedJoins => "too_many_failed_joins",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::UnknownNameplate => "unknown_nameplate",
            ErrorCode::SessionFull => "session_full",
            ErrorCode::AlreadyInSession => "already_in_session",
            ErrorCode::NoSession => "no_session",
            ErrorCode::NotPaired => "not_paired",
            ErrorCode::BadSequence => "bad_sequence",
            ErrorCode::MailboxFull => "mailbox_full",
            ErrorCode::InvalidResumeToken => "invalid_resume_token",
            ErrorCode::NameplateExpired => "nameplate_expired",
            ErrorCode::PresenceUnavailable => "presence_unavailable",
            ErrorCode::PqRequired => "pq_required",
            ErrorCode::BadPqKey => "bad_pq_key",
            ErrorCode::UnknownRoom => "unknown_room",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::NotRoomOwner => "not_room_owner",
            ErrorCode::AlreadyInRoom => "already_in_room",
            ErrorCode::NoRoom => "no_room",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::UnknownMember => "unknown_member",
            ErrorCode::TooManyInvites => "too_many_invites",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TurnUnavailable => "turn_unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the same request may succeed later without change.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::TooManySessions
                | ErrorCode::TooManyFailedJoins
                | ErrorCode::TooManyConnections
                | ErrorCode::ServerFull
                | ErrorCode::MailboxFull
                | ErrorCode::PresenceUnavailable
                | ErrorCode::TooManyRooms
                | ErrorCode::TooManyInvites
                | ErrorCode::Internal
        )
    }
}

/// Why a text frame could not be decoded into a [`ClientMsg`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid JSON: {0}")]
    BadJson(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid {ty:?} message: {detail}")]
    BadMessage { ty: String, detail: String },
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::BadJson(_) => ErrorCode::BadJson,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::BadMessage { .. } => ErrorCode::BadMessage,
        }
    }
}

/// Decode one text frame. The common case parses once; only a failure pays
/// for a second parse to say precisely what was wrong.
pub fn decode(text: &str) -> Result<ClientMsg, DecodeError> {
    match serde_json::from_str::<ClientMsg>(text) {
        Ok(msg) => Ok(msg),
        Err(err) => Err(classify(text, err)),
    }
}

fn classify(text: &str, err: serde_json::Error) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return DecodeError::BadJson(e.to_string()),
    };
    let ty = match value.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => {
            return DecodeError::BadMessage {
                ty: String::new(),
                detail: "`type` must be a string".into(),
            }
        }
        None if value.is_object() => {
            return DecodeError::BadMessage {
                ty: String::new(),
                detail: "missing `type`".into(),
            }
        }
        None => {
            return DecodeError::BadMessage {
                ty: String::new(),
                detail: "a message must be a JSON object".into(),
            }
        }
    };
    if !CLIENT_TYPES.contains(&ty.as_str()) {
        // Bound what we echo back: the type came from the client.
        let shown: String = ty.chars().take(64).collect();
        return DecodeError::UnknownType(shown);
    }
    DecodeError::BadMessage {
        ty,
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_message() {
        assert_eq!(decode(r#"{"type":"create"}"#), Ok(ClientMsg::Create {}));
        assert_eq!(
            decode(r#"{"type":"join","nameplate":"42"}"#),
            Ok(ClientMsg::Join {
                nameplate: "42".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"send","seq":1,"body":"x","extra":true}"#),
            Ok(ClientMsg::Send {
                seq: 1,
                body: "x".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"ack","seq":9}"#),
            Ok(ClientMsg::Ack { seq: 9 })
        );
        assert_eq!(decode(r#"{"type":"leave"}"#), Ok(ClientMsg::Leave {}));
        assert_eq!(
            decode(r#"{"type":"resume","token":"t","last_seq":0}"#),
            Ok(ClientMsg::Resume {
                token: "t".into(),
                last_seq: 0
            })
        );
        assert_eq!(
            decode(r#"{"type":"ping"}"#),
            Ok(ClientMsg::Ping { id: None })
        );
    }

    #[test]
    fn classifies_bad_frames() {
        assert_eq!(decode("{").unwrap_err().code(), ErrorCode::BadJson);
        assert_eq!(decode("").unwrap_err().code(), ErrorCode::BadJson);
        assert_eq!(
            decode(r#"{"type":"teleport"}"#).unwrap_err().code(),
            ErrorCode::UnknownType
        );
        assert_eq!(
            decode(r#"{"type":7}"#).unwrap_err().code(),
            ErrorCode::BadMessage
        );
        assert_eq!(
            decode(r#"{"seq":1}"#).unwrap_err().code(),
            ErrorCode::BadMessage
        );
        assert_eq!(decode("[1,2]").unwrap_err().code(), ErrorCode::BadMessage);
        assert_eq!(
            decode(r#"{"type":"send","seq":-1,"body":"x"}"#)
                .unwrap_err()
                .code(),
            ErrorCode::BadMessage
        );
        assert_eq!(
            decode(r#"{"type":"join"}"#).unwrap_err().code(),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn server_messages_carry_their_type() {
        let json = ServerMsg::error(ErrorCode::NotPaired, "wait for a peer").to_json();
        assert_eq!(
            json,
            r#"{"type":"error","code":"not_paired","message":"wait for a peer","retryable":false}"#
        );
        assert_eq!(ServerMsg::PeerAway {}.to_json(), r#"{"type":"peer_away"}"#);
    }
}
