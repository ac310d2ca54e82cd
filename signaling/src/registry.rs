//! The session table as a pure state machine: nameplates, sessions, seats,
//! mailboxes and their timers. Every method takes the current time and returns
//! the notices that other connections must receive; nothing here does I/O, so
//! the whole protocol core is tested without sockets or sleeps. The in-memory
//! presence store wraps it in a mutex; the Redis store keeps the same records
//! in Redis and must behave the same way.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client_addr::IpKey;
use crate::mailbox::{Envelope, Mailbox};
use crate::nameplate;

/// Where a seat's client is connected: a node and a connection on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub node: Arc<str>,
    pub conn: u64,
}

/// Seats in a session: 0 created it, 1 joined it.
pub type Seat = u8;
pub const SEATS: usize = 2;

fn peer_of(seat: Seat) -> Seat {
    1 - seat
}

/// Something a connection must learn about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The second seat was taken.
    Paired,
    /// New messages wait in the mailbox.
    Mail,
    PeerAway,
    PeerBack,
    PeerLeft(LeftReason),
    /// The nameplate expired before anyone joined; the session is gone.
    NameplateExpired,
    /// Another connection resumed this seat.
    Superseded,
    /// Notices may have been lost (a store reconnected): fetch again.
    /// Addressed to every connection of the node.
    Resync,
    /// The connection's room changed (the notice's `session` is the room
    /// id): read it again.
    Room,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    /// The peer sent `leave`.
    Left,
    /// The peer did not come back within the resume grace period.
    Timeout,
}

impl LeftReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Left => "left",
            LeftReason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub to: Owner,
    pub session: String,
    pub event: Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("no session waits behind this nameplate")]
    UnknownNameplate,
    #[error("this nameplate's session already has two peers")]
    SessionFull,
    #[error("no free nameplate")]
    NameplatesExhausted,
    #[error("resume token is unknown or expired")]
    InvalidResumeToken,
    #[error("the session is gone")]
    UnknownSession,
    #[error("this connection no longer holds the seat")]
    NotOwner,
    /// The seat has no connection (its node was taken for dead, or its
    /// detach landed late); its holder may claim it back with its token.
    #[error("the seat is detached from this connection")]
    Detached,
    #[error("this address already holds its maximum of {0} seats")]
    TooManySessions(usize),
    #[error("last_seq is beyond the last message sent to this seat, {last}")]
    ResumeBeyond { last: u64 },
    #[error("the session has no peer yet")]
    NotPaired,
    #[error("expected send seq {expected}")]
    BadSequence { expected: u64 },
    #[error("the peer's mailbox is full ({0} unacknowledged messages)")]
    MailboxFull(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct RegistryConfig {
    pub nameplate_ttl: Duration,
    pub resume_grace: Duration,
    pub mailbox_cap: usize,
    pub mailbox_bytes: usize,
    /// Seats one address may hold, connected or waiting for a resume.
    pub max_seats_per_ip: usize,
}

#[derive(Debug)]
struct SeatRec {
    token: String,
    /// The address the seat counts against, for as long as it exists.
    ip: IpKey,
    owner: Option<Owner>,
    /// When a detached seat is given up.
    away_until: Option<Instant>,
    /// Highest send seq accepted from this seat.
    last_in: u64,
    /// Messages for this seat.
    inbox: Mailbox,
    /// The seat's client sent `leave`; the seat stays only so the peer can
    /// collect what was sent to it before.
    left: bool,
}

#[derive(Debug)]
struct SessionRec {
    nameplate: Option<u32>,
    nameplate_expires: Instant,
    seats: [Option<SeatRec>; SEATS],
}

impl SessionRec {
    fn paired(&self) -> bool {
        self.seats.iter().all(Option::is_some)
    }

    fn owner_of(&self, seat: Seat) -> Option<&Owner> {
        self.seats[seat as usize].as_ref()?.owner.as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub session: String,
    pub nameplate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub session: String,
    pub seat: Seat,
    /// Whether the creator is connected right now.
    pub peer_present: bool,
    /// The seat's resume token: the one offered, or, when this connection's
    /// earlier join landed after it gave up on it, that join's.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    pub session: String,
    pub seat: Seat,
    pub paired: bool,
    pub last_received: u64,
    /// Whether the peer is connected right now.
    pub peer_present: bool,
    /// Whether the peer has left: the seat only collects what it sent.
    pub peer_left: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatStatus {
    pub paired: bool,
    pub peer_present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Stored for the peer; the notice wakes its connection if it has one.
    Stored { notice: Option<Notice> },
    /// A resend of something already stored: dropped (at most once).
    Duplicate,
}

#[derive(Debug, Default)]
pub struct Registry {
    nameplates: HashMap<u32, String>,
    /// Nameplates released by pairing, remembered for a while only to tell a
    /// late joiner "already paired" rather than "unknown".
    paired_nameplates: HashMap<u32, Instant>,
    sessions: HashMap<String, SessionRec>,
    tokens: HashMap<String, (String, Seat)>,
    /// Live nameplates by number of digits, so allocation needs no scan.
    by_digits: [usize; nameplate::MAX_DIGITS as usize + 1],
    /// Seats per address.
    seats_by_ip: HashMap<IpKey, usize>,
    /// Every deadline set (nameplate expiry, end of a resume grace), earliest
    /// first, so a sweep looks only at what is due. Entries made stale by a
    /// join or a resume are checked against the session and dropped.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    /// `paired_nameplates` in expiry order (one TTL for all, so FIFO).
    paired_order: VecDeque<(Instant, u32)>,
    /// Records looked at by the last sweep, to keep its cost visible.
    sweep_visits: usize,
}

impl Registry {
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn nameplates(&self) -> usize {
        self.nameplates.len()
    }

    /// Seats held by `ip`, connected or not.
    pub fn seats_of(&self, ip: &IpKey) -> usize {
        self.seats_by_ip.get(ip).copied().unwrap_or(0)
    }

    /// How many records the last sweep looked at.
    pub fn sweep_visits(&self) -> usize {
        self.sweep_visits
    }

    fn take_ip_slot(&mut self, cfg: &RegistryConfig, ip: IpKey) -> Result<(), RegistryError> {
        let n = self.seats_by_ip.entry(ip).or_insert(0);
        if *n >= cfg.max_seats_per_ip {
            if *n == 0 {
                self.seats_by_ip.remove(&ip);
            }
            return Err(RegistryError::TooManySessions(cfg.max_seats_per_ip));
        }
        *n += 1;
        Ok(())
    }

    fn free_ip_slot(&mut self, ip: IpKey) {
        if let Some(n) = self.seats_by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.seats_by_ip.remove(&ip);
            }
        }
    }

    /// Open a session with seat 0 held by `owner`. `session` and `token` are
    /// fresh random identifiers chosen by the caller; `random(lo, hi)` draws
    /// nameplates.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        cfg: &RegistryConfig,
        session: String,
        token: String,
        owner: Owner,
        ip: IpKey,
        random: impl FnMut(u32, u32) -> u32,
        now: Instant,
    ) -> Result<Created, RegistryError> {
        if self.seats_of(&ip) >= cfg.max_seats_per_ip {
            return Err(RegistryError::TooManySessions(cfg.max_seats_per_ip));
        }
        let (nameplates, by_digits) = (&self.nameplates, &self.by_digits);
        let n = nameplate::allocate(
            |lo, _| by_digits[nameplate::digits(lo) as usize],
            |n| nameplates.contains_key(&n),
            random,
        )
        .ok_or(RegistryError::NameplatesExhausted)?;
        self.take_ip_slot(cfg, ip)?;
        self.insert_nameplate(n, session.clone());
        self.deadlines
            .push(Reverse((now + cfg.nameplate_ttl, session.clone())));
        self.paired_nameplates.remove(&n);
        self.tokens.insert(token.clone(), (session.clone(), 0));
        self.sessions.insert(
            session.clone(),
            SessionRec {
                nameplate: Some(n),
                nameplate_expires: now + cfg.nameplate_ttl,
                seats: [Some(new_seat(cfg, token, owner, ip)), None],
            },
        );
        Ok(Created {
            session,
            nameplate: n,
        })
    }

    /// Open a session whose two seats are both reserved and unclaimed: an
    /// invitation inside a room. Each seat is taken with `resume` under its
    /// token within `resume_grace`, or the session ends. Both seats count
    /// against their addresses from now on.
    pub fn create_pair(
        &mut self,
        cfg: &RegistryConfig,
        session: String,
        tokens: [String; 2],
        ips: [IpKey; 2],
        now: Instant,
    ) -> Result<String, RegistryError> {
        let taking = if ips[0] == ips[1] { 2 } else { 1 };
        let need = |ip: &IpKey| taking + self.seats_of(ip);
        if ips.iter().any(|ip| need(ip) > cfg.max_seats_per_ip) {
            return Err(RegistryError::TooManySessions(cfg.max_seats_per_ip));
        }
        let until = now + cfg.resume_grace;
        let [t0, t1] = tokens;
        let seat = |token: String, ip: IpKey| SeatRec {
            owner: None,
            away_until: Some(until),
            ..new_seat(
                cfg,
                token,
                Owner {
                    node: Arc::from(""),
                    conn: 0,
                },
                ip,
            )
        };
        for ip in ips {
            *self.seats_by_ip.entry(ip).or_insert(0) += 1;
        }
        self.tokens.insert(t0.clone(), (session.clone(), 0));
        self.tokens.insert(t1.clone(), (session.clone(), 1));
        self.sessions.insert(
            session.clone(),
            SessionRec {
                nameplate: None,
                nameplate_expires: now,
                seats: [Some(seat(t0, ips[0])), Some(seat(t1, ips[1]))],
            },
        );
        self.deadlines.push(Reverse((until, session.clone())));
        Ok(session)
    }

    /// Take seat 1 of the session behind `nameplate`, releasing the nameplate.
    /// The returned notice tells seat 0 it is paired.
    pub fn join(
        &mut self,
        cfg: &RegistryConfig,
        nameplate: u32,
        token: String,
        owner: Owner,
        ip: IpKey,
        now: Instant,
    ) -> Result<(Joined, Option<Notice>), RegistryError> {
        let Some(session_id) = self.nameplates.get(&nameplate).cloned() else {
            return Err(if self.paired_nameplates.contains_key(&nameplate) {
                RegistryError::SessionFull
            } else {
                RegistryError::UnknownNameplate
            });
        };
        let rec = self
            .sessions
            .get_mut(&session_id)
            .ok_or(RegistryError::UnknownNameplate)?;
        // Between expiry and the next sweep the record still exists.
        if rec.nameplate_expires <= now {
            return Err(RegistryError::UnknownNameplate);
        }
        if rec.paired() {
            return Err(RegistryError::SessionFull);
        }
        if self.seats_by_ip.get(&ip).copied().unwrap_or(0) >= cfg.max_seats_per_ip {
            return Err(RegistryError::TooManySessions(cfg.max_seats_per_ip));
        }
        *self.seats_by_ip.entry(ip).or_insert(0) += 1;
        let Some(rec) = self.sessions.get_mut(&session_id) else {
            return Err(RegistryError::UnknownNameplate);
        };
        rec.seats[1] = Some(new_seat(cfg, token.clone(), owner, ip));
        rec.nameplate = None;
        let notice = rec.owner_of(0).cloned().map(|to| Notice {
            to,
            session: session_id.clone(),
            event: Event::Paired,
        });
        let peer_present = notice.is_some();
        self.remove_nameplate(nameplate);
        self.paired_nameplates
            .insert(nameplate, now + cfg.nameplate_ttl);
        self.paired_order
            .push_back((now + cfg.nameplate_ttl, nameplate));
        self.tokens.insert(token.clone(), (session_id.clone(), 1));
        Ok((
            Joined {
                session: session_id,
                seat: 1,
                peer_present,
                token,
            },
            notice,
        ))
    }

    /// Give the seat behind `token` to `owner`. The previous owner, if any, is
    /// told it was superseded; a waiting peer is told this seat is back.
    /// `last_seq` is the highest message seq the client says it has; more
    /// than was ever sent to the seat is refused, not silently skipped.
    pub fn resume(
        &mut self,
        token: &str,
        owner: Owner,
        last_seq: u64,
        now: Instant,
    ) -> Result<(Resumed, Vec<Notice>), RegistryError> {
        let (session_id, seat) = self
            .tokens
            .get(token)
            .cloned()
            .ok_or(RegistryError::InvalidResumeToken)?;
        let rec = self
            .sessions
            .get_mut(&session_id)
            .ok_or(RegistryError::InvalidResumeToken)?;
        let paired = rec.paired();
        let mut notices = Vec::new();
        let peer_owner = rec.owner_of(peer_of(seat)).cloned();
        let peer_left = rec.seats[peer_of(seat) as usize]
            .as_ref()
            .is_some_and(|p| p.left);
        let s = rec.seats[seat as usize]
            .as_mut()
            .ok_or(RegistryError::InvalidResumeToken)?;
        if s.away_until.is_some_and(|t| t <= now) {
            return Err(RegistryError::InvalidResumeToken);
        }
        if last_seq > s.inbox.last_seq() {
            return Err(RegistryError::ResumeBeyond {
                last: s.inbox.last_seq(),
            });
        }
        let was_away = s.owner.is_none();
        let same = s.owner.as_ref() == Some(&owner);
        if let Some(old) = s.owner.replace(owner).filter(|_| !same) {
            notices.push(Notice {
                to: old,
                session: session_id.clone(),
                event: Event::Superseded,
            });
        }
        s.away_until = None;
        let last_received = s.last_in;
        if was_away {
            if let Some(to) = peer_owner.clone() {
                notices.push(Notice {
                    to,
                    session: session_id.clone(),
                    event: Event::PeerBack,
                });
            }
        }
        Ok((
            Resumed {
                session: session_id,
                seat,
                paired,
                last_received,
                peer_present: peer_owner.is_some(),
                peer_left,
            },
            notices,
        ))
    }

    /// Accept send `seq` from `seat` for its peer.
    pub fn push(
        &mut self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
        body: Arc<str>,
    ) -> Result<Pushed, RegistryError> {
        let rec = self
            .sessions
            .get_mut(session)
            .ok_or(RegistryError::UnknownSession)?;
        check_owner(rec, seat, owner)?;
        if !rec.paired() {
            return Err(RegistryError::NotPaired);
        }
        let [a, b] = &mut rec.seats;
        let (from, to) = match seat {
            0 => (a.as_mut(), b.as_mut()),
            _ => (b.as_mut(), a.as_mut()),
        };
        let (Some(from), Some(to)) = (from, to) else {
            return Err(RegistryError::NotPaired);
        };
        if to.left {
            return Err(RegistryError::UnknownSession);
        }
        if seq <= from.last_in {
            return Ok(Pushed::Duplicate);
        }
        if seq != from.last_in + 1 {
            return Err(RegistryError::BadSequence {
                expected: from.last_in + 1,
            });
        }
        to.inbox
            .push(body)
            .map_err(|full| RegistryError::MailboxFull(full.0))?;
        from.last_in = seq;
        let notice = to.owner.clone().map(|to| Notice {
            to,
            session: session.to_owned(),
            event: Event::Mail,
        });
        Ok(Pushed::Stored { notice })
    }

    /// Whether the session of `seat` is paired and its peer connected.
    pub fn status(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
    ) -> Result<SeatStatus, RegistryError> {
        let rec = self
            .sessions
            .get(session)
            .ok_or(RegistryError::UnknownSession)?;
        check_owner(rec, seat, owner)?;
        if rec.seats[peer_of(seat) as usize]
            .as_ref()
            .is_some_and(|p| p.left)
        {
            return Err(RegistryError::UnknownSession);
        }
        Ok(SeatStatus {
            paired: rec.paired(),
            peer_present: rec.owner_of(peer_of(seat)).is_some(),
        })
    }

    /// Messages for `seat` after seq `after`.
    pub fn fetch(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        after: u64,
        max: usize,
    ) -> Result<Vec<Envelope>, RegistryError> {
        let rec = self
            .sessions
            .get(session)
            .ok_or(RegistryError::UnknownSession)?;
        check_owner(rec, seat, owner)?;
        let s = rec.seats[seat as usize]
            .as_ref()
            .ok_or(RegistryError::UnknownSession)?;
        Ok(s.inbox.after(after, max))
    }

    pub fn ack(
        &mut self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
    ) -> Result<(), RegistryError> {
        let rec = self
            .sessions
            .get_mut(session)
            .ok_or(RegistryError::UnknownSession)?;
        check_owner(rec, seat, owner)?;
        if let Some(s) = rec.seats[seat as usize].as_mut() {
            s.inbox.ack(seq);
        }
        Ok(())
    }

    /// The seat's connection went away without `leave`: keep the seat for the
    /// grace period and tell the peer.
    pub fn detach(
        &mut self,
        cfg: &RegistryConfig,
        session: &str,
        seat: Seat,
        owner: &Owner,
        now: Instant,
    ) -> Vec<Notice> {
        let Some(rec) = self.sessions.get_mut(session) else {
            return Vec::new();
        };
        if check_owner(rec, seat, owner).is_err() {
            return Vec::new();
        }
        let peer = rec.owner_of(peer_of(seat)).cloned();
        if let Some(s) = rec.seats[seat as usize].as_mut() {
            s.owner = None;
            s.away_until = Some(now + cfg.resume_grace);
        }
        self.deadlines
            .push(Reverse((now + cfg.resume_grace, session.to_owned())));
        peer.map(|to| Notice {
            to,
            session: session.to_owned(),
            event: Event::PeerAway,
        })
        .into_iter()
        .collect()
    }

    /// End the session at the request of `seat`; the peer is told.
    ///
    /// Messages already sent to the peer are not lost with the session: while
    /// a peer remains, the leaving seat is only marked as left, the peer is
    /// told, collects its mailbox and then leaves too (or its grace runs out).
    pub fn leave(
        &mut self,
        cfg: &RegistryConfig,
        session: &str,
        seat: Seat,
        owner: &Owner,
        now: Instant,
    ) -> Result<Vec<Notice>, RegistryError> {
        let rec = self
            .sessions
            .get_mut(session)
            .ok_or(RegistryError::UnknownSession)?;
        check_owner(rec, seat, owner)?;
        let peer_seat = rec.seats[peer_of(seat) as usize].as_ref();
        let peer_remains = peer_seat.is_some_and(|p| !p.left);
        let peer = rec.owner_of(peer_of(seat)).cloned();
        if !peer_remains {
            self.remove(session);
            return Ok(Vec::new());
        }
        if let Some(s) = rec.seats[seat as usize].as_mut() {
            s.left = true;
            s.owner = None;
            s.away_until = Some(now + cfg.resume_grace);
            let token = s.token.clone();
            self.tokens.remove(&token);
        }
        self.deadlines
            .push(Reverse((now + cfg.resume_grace, session.to_owned())));
        Ok(peer
            .map(|to| Notice {
                to,
                session: session.to_owned(),
                event: Event::PeerLeft(LeftReason::Left),
            })
            .into_iter()
            .collect())
    }

    /// Let go of the seat `token` names if `owner` holds it: see
    /// `Presence::abandon`.
    pub fn abandon(
        &mut self,
        cfg: &RegistryConfig,
        token: &str,
        owner: &Owner,
        leave: bool,
        now: Instant,
    ) -> Vec<Notice> {
        let Some((session, seat)) = self.tokens.get(token).cloned() else {
            return Vec::new();
        };
        if leave {
            self.leave(cfg, &session, seat, owner, now)
                .unwrap_or_default()
        } else {
            self.detach(cfg, &session, seat, owner, now)
        }
    }

    /// Expire nameplates nobody joined and seats not resumed in time. Looks
    /// only at deadlines that are due, not at every session.
    pub fn sweep(&mut self, now: Instant) -> Vec<Notice> {
        while let Some(&(until, n)) = self.paired_order.front() {
            if until > now {
                break;
            }
            self.paired_order.pop_front();
            if self.paired_nameplates.get(&n).is_some_and(|t| *t <= now) {
                self.paired_nameplates.remove(&n);
            }
        }
        let mut notices = Vec::new();
        let mut visits = 0;
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.deadlines.pop() else {
                break;
            };
            visits += 1;
            let Some(rec) = self.sessions.get(&id) else {
                continue;
            };
            if !rec.paired() && rec.nameplate_expires <= now {
                if let Some(to) = rec.owner_of(0) {
                    notices.push(Notice {
                        to: to.clone(),
                        session: id.clone(),
                        event: Event::NameplateExpired,
                    });
                }
                self.remove(&id);
                continue;
            }
            for seat in 0..SEATS as Seat {
                let gone = rec.seats[seat as usize]
                    .as_ref()
                    .and_then(|s| s.away_until)
                    .is_some_and(|t| t <= now);
                if gone {
                    // A seat that left told its peer already, unless the peer
                    // was away then; telling it twice is harmless.
                    let left = rec.seats[seat as usize].as_ref().is_some_and(|s| s.left);
                    let reason = if left {
                        LeftReason::Left
                    } else {
                        LeftReason::Timeout
                    };
                    if let Some(to) = rec.owner_of(peer_of(seat)) {
                        notices.push(Notice {
                            to: to.clone(),
                            session: id.clone(),
                            event: Event::PeerLeft(reason),
                        });
                    }
                    self.remove(&id);
                    break;
                }
            }
        }
        self.sweep_visits = visits;
        notices
    }

    fn insert_nameplate(&mut self, n: u32, session: String) {
        if self.nameplates.insert(n, session).is_none() {
            self.by_digits[nameplate::digits(n) as usize] += 1;
        }
    }

    fn remove_nameplate(&mut self, n: u32) {
        if self.nameplates.remove(&n).is_some() {
            self.by_digits[nameplate::digits(n) as usize] -= 1;
        }
    }

    fn remove(&mut self, session: &str) {
        if let Some(rec) = self.sessions.remove(session) {
            if let Some(n) = rec.nameplate {
                self.remove_nameplate(n);
            }
            for s in rec.seats.into_iter().flatten() {
                self.tokens.remove(&s.token);
                self.free_ip_slot(s.ip);
            }
        }
    }
}

fn new_seat(cfg: &RegistryConfig, token: String, owner: Owner, ip: IpKey) -> SeatRec {
    SeatRec {
        token,
        ip,
        owner: Some(owner),
        away_until: None,
        last_in: 0,
        inbox: Mailbox::new(cfg.mailbox_cap, cfg.mailbox_bytes),
        left: false,
    }
}

fn check_owner(rec: &SessionRec, seat: Seat, owner: &Owner) -> Result<(), RegistryError> {
    match rec.seats[seat as usize].as_ref() {
        Some(s) if s.left => Err(RegistryError::UnknownSession),
        Some(s) => match &s.owner {
            Some(o) if o == owner => Ok(()),
            Some(_) => Err(RegistryError::NotOwner),
            None => Err(RegistryError::Detached),
        },
        None => Err(RegistryError::UnknownSession),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: RegistryConfig = RegistryConfig {
        nameplate_ttl: Duration::from_secs(600),
        resume_grace: Duration::from_secs(60),
        mailbox_cap: 8,
        mailbox_bytes: 1 << 20,
        max_seats_per_ip: 1000,
    };

    fn ip() -> IpKey {
        IpKey::new("198.51.100.1".parse().unwrap(), 64)
    }

    fn owner(conn: u64) -> Owner {
        Owner {
            node: Arc::from("n1"),
            conn,
        }
    }

    fn first(lo: u32, _hi: u32) -> u32 {
        lo
    }

    fn paired(reg: &mut Registry, now: Instant) -> String {
        let c = reg
            .create(&CFG, "s1".into(), "t0".into(), owner(1), ip(), first, now)
            .unwrap();
        let (j, notice) = reg
            .join(&CFG, c.nameplate, "t1".into(), owner(2), ip(), now)
            .unwrap();
        assert_eq!(j.seat, 1);
        assert_eq!(notice.unwrap().event, Event::Paired);
        j.session
    }

    #[test]
    fn nameplate_is_released_once_paired() {
        let now = Instant::now();
        let mut reg = Registry::default();
        paired(&mut reg, now);
        assert_eq!(reg.nameplates(), 0);
        assert_eq!(
            reg.join(&CFG, 1, "t2".into(), owner(3), ip(), now)
                .unwrap_err(),
            RegistryError::SessionFull
        );
        assert_eq!(
            reg.join(&CFG, 2, "t2".into(), owner(3), ip(), now)
                .unwrap_err(),
            RegistryError::UnknownNameplate
        );
        // The released code goes to the next session.
        let c = reg
            .create(&CFG, "s2".into(), "t3".into(), owner(4), ip(), first, now)
            .unwrap();
        assert_eq!(c.nameplate, 1);
    }

    #[test]
    fn messages_flow_in_order_at_most_once() {
        let now = Instant::now();
        let mut reg = Registry::default();
        let s = paired(&mut reg, now);
        for seq in 1..=3 {
            let r = reg.push(&s, 0, &owner(1), seq, Arc::from("x")).unwrap();
            assert!(matches!(r, Pushed::Stored { notice: Some(_) }));
        }
        assert_eq!(
            reg.push(&s, 0, &owner(1), 2, Arc::from("x")).unwrap(),
            Pushed::Duplicate
        );
        assert_eq!(
            reg.push(&s, 0, &owner(1), 5, Arc::from("x")).unwrap_err(),
            RegistryError::BadSequence { expected: 4 }
        );
        let got = reg.fetch(&s, 1, &owner(2), 1, 10).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        // Only the seat's owner reads it.
        assert_eq!(
            reg.fetch(&s, 1, &owner(1), 0, 10).unwrap_err(),
            RegistryError::NotOwner
        );
    }

    #[test]
    fn full_mailbox_refuses_without_consuming_the_seq() {
        let now = Instant::now();
        let mut reg = Registry::default();
        let s = paired(&mut reg, now);
        for seq in 1..=8 {
            reg.push(&s, 1, &owner(2), seq, Arc::from("x")).unwrap();
        }
        assert_eq!(
            reg.push(&s, 1, &owner(2), 9, Arc::from("x")).unwrap_err(),
            RegistryError::MailboxFull(8)
        );
        reg.ack(&s, 0, &owner(1), 4).unwrap();
        assert!(reg.push(&s, 1, &owner(2), 9, Arc::from("x")).is_ok());
    }

    #[test]
    fn resume_within_grace_restores_the_seat_and_its_mail() {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        let s = paired(&mut reg, t0);
        reg.push(&s, 1, &owner(2), 1, Arc::from("a")).unwrap();
        let n = reg.detach(&CFG, &s, 0, &owner(1), t0);
        assert_eq!(n[0].event, Event::PeerAway);
        // Mail for an absent seat is stored without a wake-up.
        assert_eq!(
            reg.push(&s, 1, &owner(2), 2, Arc::from("b")).unwrap(),
            Pushed::Stored { notice: None }
        );
        let t1 = t0 + Duration::from_secs(59);
        let (r, notices) = reg.resume("t0", owner(9), 0, t1).unwrap();
        assert_eq!((r.seat, r.paired, r.peer_present), (0, true, true));
        assert_eq!(notices[0].event, Event::PeerBack);
        let got = reg.fetch(&s, 0, &owner(9), 0, 10).unwrap();
        assert_eq!(&*got[1].body, "b");
        // A second resume of the same token supersedes the first.
        let (_, notices) = reg.resume("t0", owner(10), 0, t1).unwrap();
        assert_eq!(notices[0].to, owner(9));
        assert_eq!(notices[0].event, Event::Superseded);
    }

    #[test]
    fn grace_expiry_ends_the_session() {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        let s = paired(&mut reg, t0);
        reg.detach(&CFG, &s, 1, &owner(2), t0);
        let n = reg.sweep(t0 + Duration::from_secs(60));
        assert_eq!(n[0].to, owner(1));
        assert_eq!(n[0].event, Event::PeerLeft(LeftReason::Timeout));
        assert_eq!(reg.sessions(), 0);
        assert_eq!(
            reg.resume("t1", owner(3), 0, t0).unwrap_err(),
            RegistryError::InvalidResumeToken
        );
    }

    #[test]
    fn unjoined_nameplates_expire() {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        let c = reg
            .create(&CFG, "s".into(), "t".into(), owner(1), ip(), first, t0)
            .unwrap();
        assert!(reg.sweep(t0 + Duration::from_secs(599)).is_empty());
        let n = reg.sweep(t0 + Duration::from_secs(600));
        assert_eq!(n[0].event, Event::NameplateExpired);
        assert_eq!((reg.sessions(), reg.nameplates()), (0, 0));
        assert_eq!(
            reg.join(&CFG, c.nameplate, "u".into(), owner(2), ip(), t0)
                .unwrap_err(),
            RegistryError::UnknownNameplate
        );
    }

    #[test]
    fn leave_tells_the_peer_and_frees_everything() {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        let s = paired(&mut reg, t0);
        reg.push(&s, 1, &owner(2), 1, Arc::from("last words"))
            .unwrap();
        let n = reg.leave(&CFG, &s, 1, &owner(2), t0).unwrap();
        assert_eq!(n[0].event, Event::PeerLeft(LeftReason::Left));
        // The peer still collects what was sent before the leave...
        let got = reg.fetch(&s, 0, &owner(1), 0, 10).unwrap();
        assert_eq!(&*got[0].body, "last words");
        // ...cannot send to the departed seat, and its token is gone.
        assert_eq!(
            reg.push(&s, 0, &owner(1), 1, Arc::from("x")).unwrap_err(),
            RegistryError::UnknownSession
        );
        assert_eq!(
            reg.resume("t1", owner(9), 0, t0).unwrap_err(),
            RegistryError::InvalidResumeToken
        );
        // When the peer leaves too, everything goes.
        assert!(reg.leave(&CFG, &s, 0, &owner(1), t0).unwrap().is_empty());
        assert_eq!(reg.sessions(), 0);
        assert!(reg.tokens.is_empty());
    }

    #[test]
    fn a_detached_seat_still_counts_against_its_address_until_it_ends() {
        let t0 = Instant::now();
        let cfg = RegistryConfig {
            max_seats_per_ip: 2,
            ..CFG
        };
        let mut reg = Registry::default();
        for (i, sid) in ["s1", "s2"].into_iter().enumerate() {
            reg.create(
                &cfg,
                sid.into(),
                format!("t{i}"),
                owner(i as u64),
                ip(),
                first,
                t0,
            )
            .unwrap();
            reg.detach(&cfg, sid, 0, &owner(i as u64), t0);
        }
        assert_eq!(reg.seats_of(&ip()), 2);
        assert_eq!(
            reg.create(&cfg, "s3".into(), "t3".into(), owner(3), ip(), first, t0)
                .unwrap_err(),
            RegistryError::TooManySessions(2)
        );
        // The nameplates expire: the seats end and the address is free.
        reg.sweep(t0 + CFG.nameplate_ttl);
        assert_eq!(reg.seats_of(&ip()), 0);
        assert!(reg
            .create(&cfg, "s3".into(), "t3".into(), owner(3), ip(), first, t0)
            .is_ok());
    }

    #[test]
    fn a_sweep_looks_only_at_what_is_due() {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        let cfg = RegistryConfig {
            max_seats_per_ip: usize::MAX,
            ..CFG
        };
        // A small deterministic generator (xorshift) stands in for rand.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = |lo: u32, hi: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (x % u64::from(hi - lo + 1)) as u32
        };
        for i in 0..10_000u64 {
            reg.create(
                &cfg,
                format!("s{i}"),
                format!("t{i}"),
                owner(i),
                ip(),
                &mut rnd,
                t0,
            )
            .unwrap();
        }
        reg.detach(&CFG, "s7", 0, &owner(7), t0);
        assert!(reg.sweep(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(reg.sweep_visits(), 0);
        // The one seat whose grace ran out, and nothing else, is visited.
        reg.sweep(t0 + CFG.resume_grace);
        assert_eq!(reg.sweep_visits(), 1);
        assert_eq!(reg.sessions(), 9_999);
    }

    #[test]
    fn resume_refuses_a_last_seq_beyond_what_was_sent() {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        let s = paired(&mut reg, t0);
        reg.push(&s, 1, &owner(2), 1, Arc::from("a")).unwrap();
        reg.detach(&CFG, &s, 0, &owner(1), t0);
        assert_eq!(
            reg.resume("t0", owner(9), 2, t0).unwrap_err(),
            RegistryError::ResumeBeyond { last: 1 }
        );
        // Nothing changed: the seat is still away and resumable.
        assert_eq!(
            reg.status(&s, 0, &owner(9)).unwrap_err(),
            RegistryError::Detached
        );
        assert!(reg.resume("t0", owner(9), 1, t0).is_ok());
    }

    #[test]
    fn a_detached_seat_is_told_apart_from_a_taken_one_and_reclaimed_quietly() {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        let s = paired(&mut reg, t0);
        reg.detach(&CFG, &s, 0, &owner(1), t0);
        assert_eq!(
            reg.fetch(&s, 0, &owner(1), 0, 10).unwrap_err(),
            RegistryError::Detached
        );
        // The same connection claims it back: its peer hears it is back,
        // and nobody is told of a takeover.
        let (_, notices) = reg.resume("t0", owner(1), 0, t0).unwrap();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].event, Event::PeerBack);
        let (_, notices) = reg.resume("t0", owner(1), 0, t0).unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        let (_, notices) = reg.resume("t0", owner(5), 0, t0).unwrap();
        assert_eq!(notices[0].event, Event::Superseded);
        assert_eq!(
            reg.fetch(&s, 0, &owner(1), 0, 10).unwrap_err(),
            RegistryError::NotOwner
        );
    }
}
