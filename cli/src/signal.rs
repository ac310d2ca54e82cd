//! The /signal v1 client protocol (docs/PROTOCOL.md, "Client messages",
//! "Delivery", "Resume"), sans-IO: it takes the server's text frames and
//! returns events, and queues the frames to send. Numbering our `send`s,
//! keeping them until the server acks them (to send again after a resume),
//! and acking the peer's messages in order, at most once, live here so the
//! WebSocket shell (`ws`) only moves text.

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::{json, Value};

/// One entry of `ice_servers`, as the server sends it (STUN entries carry
/// no credentials).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

/// What the server told us, for the session above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first frame of every connection, with the server's timing.
    Welcome {
        ping_interval_secs: u64,
        resume_grace_secs: u64,
    },
    Created {
        session: String,
        nameplate: String,
    },
    Joined {
        session: String,
    },
    Paired {
        ice_servers: Vec<IceServer>,
    },
    /// A peer's body, new and in order.
    Message(String),
    PeerAway,
    PeerBack,
    PeerLeft {
        reason: String,
    },
    Left,
    Error {
        code: String,
        message: String,
        retryable: bool,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    #[error("the server sent a frame that is not a v1 message: {0}")]
    Malformed(String),
    #[error("the server skipped message {expected} (got {got})")]
    Gap { expected: u64, got: u64 },
}

/// One seat's signaling state.
#[derive(Debug, Default)]
pub struct Signal {
    /// Our last `send` seq (the creator's `hello` is seq 1).
    sent: u64,
    /// Sends the server has not acked yet: (seq, frame type, body).
    unacked: VecDeque<(u64, &'static str, String)>,
    /// The peer's last message seq we took.
    received: u64,
    token: Option<String>,
    paired: bool,
    /// A `resume` went and its `resumed` (or refusal) has not come yet.
    resuming: bool,
    out: VecDeque<String>,
}

impl Signal {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next frame to write, if any.
    pub fn poll_frame(&mut self) -> Option<String> {
        self.out.pop_front()
    }

    pub fn create(&mut self) {
        self.out.push_back(json!({"type": "create"}).to_string());
    }

    /// `nameplate`: the digits before the first `-` of a share code.
    pub fn join(&mut self, nameplate: &str) {
        self.out
            .push_back(json!({"type": "join", "nameplate": nameplate}).to_string());
    }

    /// The creator's opening handshake message: the server checks it.
    pub fn hello(&mut self, body: String) {
        self.push("hello", body);
    }

    pub fn send(&mut self, body: String) {
        self.push("send", body);
    }

    pub fn leave(&mut self) {
        self.out.push_back(json!({"type": "leave"}).to_string());
    }

    /// After a new connection's `welcome`: take the seat back.
    pub fn resume(&mut self) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        self.out.push_back(
            json!({"type": "resume", "token": token, "last_seq": self.received}).to_string(),
        );
        true
    }

    /// A new connection replaces one that dropped: frames queued for the
    /// old one go (our `send`s stay unacked and go again after `resumed`;
    /// nothing may precede `resume`). False before we hold a seat.
    pub fn reconnected(&mut self) -> bool {
        self.out.clear();
        self.resuming = self.resume();
        self.resuming
    }

    /// Between `reconnected` and the server's answer: new frames wait.
    pub fn is_resuming(&self) -> bool {
        self.resuming
    }

    /// Whether we hold a seat the server keeps for us while away.
    pub fn has_seat(&self) -> bool {
        self.token.is_some()
    }

    fn push(&mut self, ty: &'static str, body: String) {
        self.sent += 1;
        let frame = json!({"type": ty, "seq": self.sent, "body": body}).to_string();
        self.unacked.push_back((self.sent, ty, body));
        self.out.push_back(frame);
    }

    /// A text frame from the server.
    pub fn on_text(&mut self, text: &str) -> Result<Vec<Event>, SignalError> {
        let v: Value = serde_json::from_str(text).map_err(|_| SignalError::Malformed(cut(text)))?;
        let ty = v["type"].as_str().unwrap_or_default();
        let s = |k: &str| v[k].as_str().map(str::to_owned);
        let bad = || SignalError::Malformed(cut(text));
        let ice = |v: &Value| -> Result<Vec<IceServer>, SignalError> {
            match v.get("ice_servers") {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(list) => serde_json::from_value(list.clone()).map_err(|_| bad()),
            }
        };
        Ok(match ty {
            "welcome" => {
                let limit = |k: &str, default: u64| v["limits"][k].as_u64().unwrap_or(default);
                vec![Event::Welcome {
                    ping_interval_secs: limit("ping_interval_secs", 25),
                    resume_grace_secs: limit("resume_grace_secs", 120),
                }]
            }
            "created" => {
                self.token = s("resume_token");
                vec![Event::Created {
                    session: s("session").ok_or_else(bad)?,
                    nameplate: s("nameplate").ok_or_else(bad)?,
                }]
            }
            "joined" => {
                self.token = s("resume_token");
                vec![Event::Joined {
                    session: s("session").ok_or_else(bad)?,
                }]
            }
            "paired" => {
                self.paired = true;
                vec![Event::Paired {
                    ice_servers: ice(&v)?,
                }]
            }
            "resumed" => {
                self.resuming = false;
                // Everything the server holds from us after `last_received`
                // goes again; what it holds is acked.
                let last = v["last_received"].as_u64().ok_or_else(bad)?;
                self.on_ack(last);
                for (seq, ty, body) in &self.unacked {
                    self.out
                        .push_back(json!({"type": ty, "seq": seq, "body": body}).to_string());
                }
                if let Some(t) = s("resume_token") {
                    self.token = Some(t);
                }
                // A creator away when its peer joined learns of the pairing here.
                if v["paired"].as_bool() == Some(true) && !self.paired {
                    self.paired = true;
                    vec![Event::Paired {
                        ice_servers: ice(&v)?,
                    }]
                } else {
                    Vec::new()
                }
            }
            "ack" => {
                self.on_ack(v["seq"].as_u64().ok_or_else(bad)?);
                Vec::new()
            }
            "message" => {
                let seq = v["seq"].as_u64().ok_or_else(bad)?;
                let body = s("body").ok_or_else(bad)?;
                if seq <= self.received {
                    return Ok(Vec::new()); // at most once: seen before a resume
                }
                if seq != self.received + 1 {
                    return Err(SignalError::Gap {
                        expected: self.received + 1,
                        got: seq,
                    });
                }
                self.received = seq;
                // Acked at once: bodies are few (a handshake, SDP, candidates).
                self.out
                    .push_back(json!({"type": "ack", "seq": seq}).to_string());
                vec![Event::Message(body)]
            }
            "peer_away" => vec![Event::PeerAway],
            "peer_back" => vec![Event::PeerBack],
            "peer_left" => vec![Event::PeerLeft {
                reason: s("reason").unwrap_or_default(),
            }],
            "left" => vec![Event::Left],
            "error" => {
                self.resuming = false;
                vec![Event::Error {
                    code: s("code").unwrap_or_default(),
                    message: s("message").unwrap_or_default(),
                    retryable: v["retryable"].as_bool().unwrap_or(false),
                }]
            }
            // pong and room messages: nothing for a 1:1 session.
            _ => Vec::new(),
        })
    }

    fn on_ack(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|(s, _, _)| *s <= seq) {
            self.unacked.pop_front();
        }
    }
}

fn cut(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(s: &mut Signal) -> Vec<Value> {
        std::iter::from_fn(|| s.poll_frame())
            .map(|f| serde_json::from_str(&f).unwrap())
            .collect()
    }

    #[test]
    fn creator_numbers_hello_then_sends() {
        let mut s = Signal::new();
        s.create();
        s.hello("h".into());
        s.send("x".into());
        let f = frames(&mut s);
        assert_eq!(f[0], json!({"type": "create"}));
        assert_eq!(f[1], json!({"type": "hello", "seq": 1, "body": "h"}));
        assert_eq!(f[2], json!({"type": "send", "seq": 2, "body": "x"}));
    }

    #[test]
    fn messages_are_taken_once_in_order_and_acked() {
        let mut s = Signal::new();
        let m = |n: u64| json!({"type": "message", "seq": n, "body": format!("b{n}")}).to_string();
        assert_eq!(s.on_text(&m(1)).unwrap(), vec![Event::Message("b1".into())]);
        assert_eq!(frames(&mut s), vec![json!({"type": "ack", "seq": 1})]);
        assert_eq!(s.on_text(&m(1)).unwrap(), vec![]);
        assert_eq!(
            s.on_text(&m(3)),
            Err(SignalError::Gap {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(s.on_text(&m(2)).unwrap(), vec![Event::Message("b2".into())]);
    }

    #[test]
    fn resume_sends_again_what_the_server_lacks() {
        let mut s = Signal::new();
        s.on_text(r#"{"type":"joined","session":"s","seat":1,"resume_token":"tok"}"#)
            .unwrap();
        s.on_text(r#"{"type":"message","seq":1,"body":"hello"}"#)
            .unwrap();
        s.send("a".into());
        s.send("b".into());
        s.send("c".into());
        s.on_text(r#"{"type":"ack","seq":1}"#).unwrap();
        frames(&mut s);
        assert!(s.resume());
        s.on_text(r#"{"type":"resumed","session":"s","seat":1,"paired":true,"last_received":2,"resume_token":"tok2"}"#)
            .unwrap();
        assert_eq!(
            frames(&mut s),
            vec![
                json!({"type": "resume", "token": "tok", "last_seq": 1}),
                json!({"type": "send", "seq": 3, "body": "c"}),
            ]
        );
        assert!(s.resume());
        assert_eq!(
            frames(&mut s),
            vec![json!({"type": "resume", "token": "tok2", "last_seq": 1})]
        );
    }

    #[test]
    fn a_new_connection_drops_what_was_queued_for_the_old_and_resumes_first() {
        let mut s = Signal::new();
        s.send("before".into());
        assert!(!s.reconnected(), "no seat yet: nothing to resume");
        frames(&mut s);
        s.on_text(
            r#"{"type":"created","session":"s","nameplate":"7","seat":0,"resume_token":"tok"}"#,
        )
        .unwrap();
        s.on_text(r#"{"type":"message","seq":1,"body":"m"}"#)
            .unwrap();
        s.send("while away".into());
        assert!(s.reconnected());
        assert!(s.is_resuming());
        assert_eq!(
            frames(&mut s),
            vec![json!({"type": "resume", "token": "tok", "last_seq": 1})],
            "the ack and send queued for the dead socket must not precede resume"
        );
        s.on_text(r#"{"type":"resumed","session":"s","seat":0,"paired":false,"last_received":0}"#)
            .unwrap();
        assert!(!s.is_resuming());
        assert_eq!(
            frames(&mut s),
            vec![
                json!({"type": "send", "seq": 1, "body": "before"}),
                json!({"type": "send", "seq": 2, "body": "while away"}),
            ]
        );
    }

    #[test]
    fn welcome_gives_the_timing_with_defaults() {
        let mut s = Signal::new();
        assert_eq!(
            s.on_text(r#"{"type":"welcome","version":1,"limits":{"ping_interval_secs":5,"resume_grace_secs":30}}"#)
                .unwrap(),
            vec![Event::Welcome { ping_interval_secs: 5, resume_grace_secs: 30 }]
        );
        assert_eq!(
            s.on_text(r#"{"type":"welcome","version":1}"#).unwrap(),
            vec![Event::Welcome {
                ping_interval_secs: 25,
                resume_grace_secs: 120
            }]
        );
    }

    #[test]
    fn paired_carries_ice_servers_and_resumed_pairs_a_creator_once() {
        let mut s = Signal::new();
        let ev = s
            .on_text(r#"{"type":"resumed","session":"s","seat":0,"paired":true,"last_received":0,"resume_token":"t","ice_servers":[{"urls":["stun:h:1"]},{"urls":["turn:h:1?transport=udp"],"username":"u","credential":"c"}]}"#)
            .unwrap();
        let Event::Paired { ice_servers } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(ice_servers[0].username, "");
        assert_eq!(ice_servers[1].credential, "c");
        let again = s
            .on_text(r#"{"type":"resumed","session":"s","seat":0,"paired":true,"last_received":0}"#)
            .unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn errors_and_junk() {
        let mut s = Signal::new();
        assert_eq!(
            s.on_text(
                r#"{"type":"error","code":"unknown_nameplate","message":"m","retryable":false}"#
            )
            .unwrap(),
            vec![Event::Error {
                code: "unknown_nameplate".into(),
                message: "m".into(),
                retryable: false
            }]
        );
        assert!(matches!(s.on_text("nope"), Err(SignalError::Malformed(_))));
        assert!(matches!(
            s.on_text(r#"{"type":"message","seq":1}"#),
            Err(SignalError::Malformed(_))
        ));
    }
}
