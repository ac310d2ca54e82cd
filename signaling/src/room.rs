//! A room as a pure value: its members, owner, expiry and the invitations
//! waiting for its members. Rooms are small (tens of members), so a store
//! keeps each one as a whole record and changes it with compare-and-set:
//! read it, apply one of these operations, write it back if nobody else
//! wrote in between. Both stores therefore run exactly this code; nothing
//! here does I/O or reads a clock (times are milliseconds given by the
//! caller, from the store's clock).
//!
//! Two kinds share the machinery. A *named* room is joined by its code
//! (a nameplate the server allocates plus secret words it never sees), has
//! an owner, an expiry and a member limit. A *nearby* room gathers the
//! clients that reach the server from one public address and chose to be
//! visible; it has no code and no owner. Either kind ends when its last
//! member goes.
//!
//! Members are known to each other only by the small ids the room issues,
//! never by connection or address. The server holds no room secret: members
//! prove they know the code to each other in the pairwise handshake of each
//! transfer (see docs/PROTOCOL.md, "Rooms").

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// A member's id inside one room, issued by the room, never reused there.
pub type MemberId = u32;

/// Departed members remembered, so that the others can be told why.
const DEPARTED_KEPT: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    Named,
    Nearby,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Named => "named",
            RoomKind::Nearby => "nearby",
        }
    }
}

/// Why a member is no longer in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Departure {
    /// It sent `room_leave`.
    Left,
    /// Its connection went and it did not come back within the grace.
    Timeout,
}

impl Departure {
    pub fn as_str(self) -> &'static str {
        match self {
            Departure::Left => "left",
            Departure::Timeout => "timeout",
        }
    }
}

/// Why a room ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Closure {
    /// Its owner closed it.
    Closed,
    /// It reached its expiry.
    Expired,
}

impl Closure {
    pub fn as_str(self) -> &'static str {
        match self {
            Closure::Closed => "closed",
            Closure::Expired => "expired",
        }
    }
}

/// An invitation to a pairwise session, waiting to be handed to its member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub from: MemberId,
    pub session: String,
    /// The invitee's seat token in that session (taken with `resume`).
    pub token: String,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub token: String,
    /// The address the membership counts against (an `IpKey` as text).
    pub ip: String,
    /// The connection holding the membership, `node|conn`; `None` while
    /// away.
    pub owner: Option<String>,
    /// When an away member is given up.
    pub away_until_ms: Option<u64>,
    pub invites: Vec<Invite>,
    /// Invitations sent in the current minute: (window start, count).
    pub sent: (u64, u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub id: String,
    pub kind: RoomKind,
    /// The code's server part (named rooms).
    pub nameplate: Option<u32>,
    /// The address key of a nearby room.
    pub nearby_key: Option<String>,
    pub name: String,
    pub owner: Option<MemberId>,
    pub expires_ms: u64,
    pub max_members: usize,
    pub next_member: MemberId,
    /// Bumped by every change; the store's compare-and-set checks it.
    pub version: u64,
    pub members: BTreeMap<MemberId, Member>,
    pub departed: VecDeque<(MemberId, Departure)>,
    /// Set once the room ended; the record lingers a little so that
    /// members hear why.
    pub closed: Option<(Closure, u64)>,
}

/// Refusals, each mapped to a protocol error code by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("no room has this code")]
    UnknownRoom,
    #[error("the room is full ({0} members)")]
    Full(usize),
    #[error("the room has ended")]
    Closed,
    #[error("this connection is not a member of the room")]
    NotMember,
    /// The membership has no connection (its node was taken for dead):
    /// its holder may claim it back with its token.
    #[error("the membership is detached from this connection")]
    Detached,
    #[error("another connection holds this membership")]
    NotOwner,
    #[error("only the room's owner may do this")]
    NotRoomOwner,
    #[error("resume token is unknown or expired")]
    InvalidToken,
    #[error("no member {0} in this room")]
    UnknownMember(MemberId),
    #[error("a member cannot invite itself")]
    SelfInvite,
    #[error("over {0} invitations a minute")]
    TooManyInvites(u32),
    #[error("member {0} has too many invitations waiting")]
    InvitesPending(MemberId),
}

/// A new member's particulars.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub name: String,
    pub token: String,
    pub ip: String,
    pub owner: String,
}

/// Limits and timers the operations apply.
#[derive(Debug, Clone, Copy)]
pub struct RoomRules {
    /// How long an away member keeps its place.
    pub grace_ms: u64,
    /// How long a nearby room lives past its last sign of life.
    pub nearby_ttl_ms: u64,
    /// How long an ended room's record stays, so members hear why.
    pub linger_ms: u64,
    pub invites_per_min: u32,
    /// Invitations one member may have waiting.
    pub pending_invites: usize,
}

impl Member {
    fn new(m: NewMember) -> Member {
        Member {
            name: m.name,
            token: m.token,
            ip: m.ip,
            owner: Some(m.owner),
            away_until_ms: None,
            invites: Vec::new(),
            sent: (0, 0),
        }
    }
}

impl Room {
    /// A named room with its creator as member 1 and owner.
    pub fn named(
        id: String,
        nameplate: u32,
        name: String,
        max_members: usize,
        expires_ms: u64,
        creator: NewMember,
    ) -> Room {
        let mut room = Room::empty(id, RoomKind::Named, name, max_members, expires_ms);
        room.nameplate = Some(nameplate);
        room.members.insert(1, Member::new(creator));
        room.owner = Some(1);
        room.next_member = 2;
        room
    }

    /// A nearby room for address `key` with `first` as member 1.
    pub fn nearby(
        id: String,
        key: String,
        max_members: usize,
        first: NewMember,
        now: u64,
        rules: &RoomRules,
    ) -> Room {
        let mut room = Room::empty(
            id,
            RoomKind::Nearby,
            String::new(),
            max_members,
            now + rules.nearby_ttl_ms,
        );
        room.nearby_key = Some(key);
        room.members.insert(1, Member::new(first));
        room.next_member = 2;
        room
    }

    fn empty(id: String, kind: RoomKind, name: String, max: usize, expires_ms: u64) -> Room {
        Room {
            id,
            kind,
            nameplate: None,
            nearby_key: None,
            name,
            owner: None,
            expires_ms,
            max_members: max,
            next_member: 1,
            version: 1,
            members: BTreeMap::new(),
            departed: VecDeque::new(),
            closed: None,
        }
    }

    pub fn member_by_token(&self, token: &str) -> Option<MemberId> {
        self.members
            .iter()
            .find(|(_, m)| m.token == token)
            .map(|(id, _)| *id)
    }

    /// Why `member` is gone, if the room remembers.
    pub fn departure_of(&self, member: MemberId) -> Option<Departure> {
        self.departed
            .iter()
            .rev()
            .find(|(m, _)| *m == member)
            .map(|(_, d)| *d)
    }

    /// Whether the record has nothing left to say: an ended room past its
    /// linger, or a room nobody is in. A named room everyone left ends
    /// there too: kept, it would hold its code with no owner to close it,
    /// counted against no address (memberships are what is counted).
    pub fn finished(&self, now: u64, rules: &RoomRules) -> bool {
        match self.closed {
            Some((_, at)) => now >= at + rules.linger_ms,
            None => self.members.is_empty(),
        }
    }

    /// The earliest time a sweep has something to do for this room.
    pub fn next_deadline(&self, rules: &RoomRules) -> u64 {
        if let Some((_, at)) = self.closed {
            return at + rules.linger_ms;
        }
        let away = self.members.values().filter_map(|m| m.away_until_ms);
        let invites = self
            .members
            .values()
            .flat_map(|m| m.invites.iter().map(|i| i.expires_ms));
        away.chain(invites).fold(self.expires_ms, u64::min)
    }

    /// Where the record can be forgotten by a store's own expiry, should no
    /// node be left to sweep it.
    pub fn end_ms(&self, rules: &RoomRules) -> u64 {
        match self.closed {
            Some((_, at)) => at + rules.linger_ms,
            None => self.expires_ms,
        }
    }

    /// Every connection holding a membership, `node|conn`.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.members.values().filter_map(|m| m.owner.as_deref())
    }

    fn open(&self) -> Result<(), RoomError> {
        match self.closed {
            Some(_) => Err(RoomError::Closed),
            None => Ok(()),
        }
    }

    /// Check that `owner` holds `member`.
    pub fn check(&self, member: MemberId, owner: &str) -> Result<&Member, RoomError> {
        self.open()?;
        let m = self.members.get(&member).ok_or(RoomError::NotMember)?;
        match m.owner.as_deref() {
            Some(o) if o == owner => Ok(m),
            Some(_) => Err(RoomError::NotOwner),
            None => Err(RoomError::Detached),
        }
    }

    fn bump(&mut self) {
        self.version += 1;
    }

    fn depart(&mut self, member: MemberId, why: Departure) {
        if self.members.remove(&member).is_none() {
            return;
        }
        self.departed.push_back((member, why));
        while self.departed.len() > DEPARTED_KEPT {
            self.departed.pop_front();
        }
        // Invitations from a member that is gone can no longer be answered.
        for m in self.members.values_mut() {
            m.invites.retain(|i| i.from != member);
        }
        if self.owner == Some(member) {
            // The longest-standing member carries on as owner.
            self.owner = self.members.keys().next().copied();
        }
    }

    /// Add a member; returns its id.
    pub fn join(&mut self, m: NewMember) -> Result<MemberId, RoomError> {
        self.open()?;
        if self.members.len() >= self.max_members {
            return Err(RoomError::Full(self.max_members));
        }
        let id = self.next_member;
        self.next_member += 1;
        self.members.insert(id, Member::new(m));
        self.bump();
        Ok(id)
    }

    /// Whether a connection from address `ip` may resume a membership
    /// here: a nearby room is for the clients at its address only, so its
    /// token is no good elsewhere (a client that moved on to another
    /// network, or a token that left it).
    pub fn resumable_from(&self, ip: &str) -> Result<(), RoomError> {
        match &self.nearby_key {
            Some(key) if key != ip => Err(RoomError::InvalidToken),
            _ => Ok(()),
        }
    }

    /// Give the membership behind `token` to `owner`. Returns the member
    /// and the connection that held it before, if another one did.
    pub fn resume(
        &mut self,
        token: &str,
        owner: &str,
        now: u64,
    ) -> Result<(MemberId, Option<String>), RoomError> {
        self.open()?;
        let id = self.member_by_token(token).ok_or(RoomError::InvalidToken)?;
        let m = self.members.get_mut(&id).ok_or(RoomError::InvalidToken)?;
        if m.away_until_ms.is_some_and(|t| t <= now) {
            return Err(RoomError::InvalidToken);
        }
        let old = m.owner.replace(owner.to_owned()).filter(|o| o != owner);
        m.away_until_ms = None;
        self.bump();
        Ok((id, old))
    }

    /// The member's connection went: keep its place for the grace period.
    /// `false` when `owner` did not hold it (nothing changes).
    pub fn detach(&mut self, member: MemberId, owner: &str, now: u64, rules: &RoomRules) -> bool {
        if self.check(member, owner).is_err() {
            return false;
        }
        if let Some(m) = self.members.get_mut(&member) {
            m.owner = None;
            m.away_until_ms = Some(now + rules.grace_ms);
        }
        self.bump();
        true
    }

    pub fn leave(&mut self, member: MemberId, owner: &str) -> Result<(), RoomError> {
        self.check(member, owner)?;
        self.depart(member, Departure::Left);
        self.bump();
        Ok(())
    }

    /// End the room for everyone: only its owner may.
    pub fn close(&mut self, member: MemberId, owner: &str, now: u64) -> Result<(), RoomError> {
        self.check(member, owner)?;
        if self.owner != Some(member) {
            return Err(RoomError::NotRoomOwner);
        }
        self.closed = Some((Closure::Closed, now));
        self.bump();
        Ok(())
    }

    /// Whether `from` may invite each of `to` now (checked again by
    /// [`Room::invite`] when the invitations are stored).
    pub fn may_invite(
        &self,
        from: MemberId,
        owner: &str,
        to: &[MemberId],
        now: u64,
        rules: &RoomRules,
    ) -> Result<(), RoomError> {
        let m = self.check(from, owner)?;
        let (start, count) = m.sent;
        let count = if now >= start + 60_000 { 0 } else { count };
        if count as usize + to.len() > rules.invites_per_min as usize {
            return Err(RoomError::TooManyInvites(rules.invites_per_min));
        }
        for t in to {
            if *t == from {
                return Err(RoomError::SelfInvite);
            }
            let target = self.members.get(t).ok_or(RoomError::UnknownMember(*t))?;
            let waiting = target.invites.iter().filter(|i| i.expires_ms > now).count();
            if waiting >= rules.pending_invites {
                return Err(RoomError::InvitesPending(*t));
            }
        }
        Ok(())
    }

    /// Store one invitation per target: `(member, session, its token)`.
    pub fn invite(
        &mut self,
        from: MemberId,
        owner: &str,
        to: &[(MemberId, String, String)],
        now: u64,
        rules: &RoomRules,
    ) -> Result<(), RoomError> {
        let ids: Vec<MemberId> = to.iter().map(|(m, _, _)| *m).collect();
        self.may_invite(from, owner, &ids, now, rules)?;
        if let Some(m) = self.members.get_mut(&from) {
            let (start, count) = m.sent;
            m.sent = if now >= start + 60_000 {
                (now, ids.len() as u32)
            } else {
                (start, count + ids.len() as u32)
            };
        }
        for (t, session, token) in to {
            if let Some(m) = self.members.get_mut(t) {
                m.invites.retain(|i| i.expires_ms > now);
                m.invites.push(Invite {
                    from,
                    session: session.clone(),
                    token: token.clone(),
                    expires_ms: now + rules.grace_ms,
                });
            }
        }
        self.bump();
        Ok(())
    }

    /// Hand over the invitations waiting for `member` (each once).
    pub fn take_invites(
        &mut self,
        member: MemberId,
        owner: &str,
        now: u64,
    ) -> Result<Vec<Invite>, RoomError> {
        self.check(member, owner)?;
        let Some(m) = self.members.get_mut(&member) else {
            return Ok(Vec::new());
        };
        let taken: Vec<Invite> = std::mem::take(&mut m.invites)
            .into_iter()
            .filter(|i| i.expires_ms > now)
            .collect();
        self.bump();
        Ok(taken)
    }

    /// Apply what is due at `now`: the room's expiry (a nearby room with
    /// members lives on), away members whose grace ran out, stale
    /// invitations, and members held by `dead` nodes, which go away as if
    /// their connections had closed. Returns whether anything changed.
    pub fn sweep(&mut self, now: u64, dead: &[String], rules: &RoomRules) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let mut changed = false;
        for m in self.members.values_mut() {
            let on_dead = m
                .owner
                .as_deref()
                .and_then(|o| o.rsplit_once('|'))
                .is_some_and(|(node, _)| dead.iter().any(|d| d == node));
            if on_dead {
                m.owner = None;
                m.away_until_ms = Some(now + rules.grace_ms);
                changed = true;
            }
            let before = m.invites.len();
            m.invites.retain(|i| i.expires_ms > now);
            changed |= m.invites.len() != before;
        }
        let gone: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| m.away_until_ms.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.depart(id, Departure::Timeout);
            changed = true;
        }
        if self.expires_ms <= now {
            match self.kind {
                RoomKind::Named => self.closed = Some((Closure::Expired, now)),
                // Alive while anyone is in it; the expiry only catches a
                // room every node forgot.
                RoomKind::Nearby => self.expires_ms = now + rules.nearby_ttl_ms,
            }
            changed = true;
        }
        if changed {
            self.bump();
        }
        changed
    }
}

/// What a room's record implies in a store's indexes: lookup keys (unique
/// names: a claim fails if another room holds one) and set memberships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomIndex {
    /// `(key, value)`: `rnp:<nameplate>`, `near:<address>` and
    /// `rtok:<token>`, each naming the room id.
    pub keys: Vec<(String, String)>,
    /// `(set, member)`: `rip:<address>` holds the tokens of memberships
    /// counted against an address; `rns:<node>` the rooms with a member
    /// connected to that node.
    pub sets: Vec<(String, String)>,
}

impl RoomIndex {
    pub fn of(room: Option<&Room>) -> RoomIndex {
        let mut ix = RoomIndex::default();
        let Some(room) = room.filter(|r| r.closed.is_none()) else {
            return ix;
        };
        if let Some(n) = room.nameplate {
            ix.keys.push((format!("rnp:{n}"), room.id.clone()));
        }
        if let Some(k) = &room.nearby_key {
            ix.keys.push((format!("near:{k}"), room.id.clone()));
        }
        for m in room.members.values() {
            ix.keys.push((format!("rtok:{}", m.token), room.id.clone()));
            // Named rooms count against their members' addresses; a nearby
            // room is one address's by definition, bounded by its size.
            if room.kind == RoomKind::Named {
                ix.sets.push((format!("rip:{}", m.ip), m.token.clone()));
            }
            if let Some((node, _)) = m.owner.as_deref().and_then(|o| o.rsplit_once('|')) {
                let e = (format!("rns:{node}"), room.id.clone());
                if !ix.sets.contains(&e) {
                    ix.sets.push(e);
                }
            }
        }
        ix
    }
}

/// One change to a store's indexes, derived from a room's old and new
/// record by [`changes`]. Keys are logical; a store may prefix them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    /// Set `key` to `value` unless another value holds it: the write fails
    /// as `Taken`.
    Claim(String, String),
    /// Set (or refresh) `key`.
    Set(String, String),
    /// Delete `key` if it still names `value`.
    Del(String, String),
    SAdd(String, String),
    SRem(String, String),
    /// Fail the write as `Limit` unless set `key` has fewer than `max`
    /// live members (checked before `SAdd`s of the same write).
    Limit(String, usize),
}

/// The index changes that take a store from `old` to `new`. A new address
/// membership is checked against `max_per_ip` first.
pub fn changes(old: Option<&Room>, new: Option<&Room>, max_per_ip: usize) -> Vec<IndexOp> {
    let (a, b) = (RoomIndex::of(old), RoomIndex::of(new));
    let mut ops = Vec::new();
    for (set, member) in &b.sets {
        if set.starts_with("rip:") && !a.sets.contains(&(set.clone(), member.clone())) {
            ops.push(IndexOp::Limit(set.clone(), max_per_ip));
        }
    }
    for (k, v) in &a.keys {
        if !b.keys.contains(&(k.clone(), v.clone())) {
            ops.push(IndexOp::Del(k.clone(), v.clone()));
        }
    }
    for e in &a.sets {
        if !b.sets.contains(e) {
            ops.push(IndexOp::SRem(e.0.clone(), e.1.clone()));
        }
    }
    for (k, v) in b.keys {
        let unique = k.starts_with("rnp:") || k.starts_with("near:");
        if unique && !a.keys.contains(&(k.clone(), v.clone())) {
            ops.push(IndexOp::Claim(k, v));
        } else {
            ops.push(IndexOp::Set(k, v));
        }
    }
    for (s, m) in b.sets {
        ops.push(IndexOp::SAdd(s, m));
    }
    ops
}

/// Who must hear about a change: every connection in either version.
pub fn audience(old: Option<&Room>, new: Option<&Room>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in old.into_iter().chain(new).flat_map(Room::owners) {
        if !out.iter().any(|x| x == o) {
            out.push(o.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RoomRules = RoomRules {
        grace_ms: 1_000,
        nearby_ttl_ms: 10_000,
        linger_ms: 500,
        invites_per_min: 4,
        pending_invites: 2,
    };

    fn nm(n: u32) -> NewMember {
        NewMember {
            name: format!("member {n}"),
            token: format!("t{n}"),
            ip: "192.0.2.1".into(),
            owner: format!("node-a|{n}"),
        }
    }

    fn room() -> Room {
        Room::named("r".into(), 42, "team".into(), 3, 100_000, nm(1))
    }

    #[test]
    fn joins_up_to_the_limit_and_never_reuses_ids() {
        let mut r = room();
        assert_eq!(r.join(nm(2)), Ok(2));
        assert_eq!(r.join(nm(3)), Ok(3));
        assert_eq!(r.join(nm(4)), Err(RoomError::Full(3)));
        r.leave(3, "node-a|3").unwrap();
        assert_eq!(r.departure_of(3), Some(Departure::Left));
        assert_eq!(r.join(nm(4)), Ok(4));
    }

    #[test]
    fn only_the_owner_closes_and_ownership_passes_on() {
        let mut r = room();
        r.join(nm(2)).unwrap();
        r.join(nm(3)).unwrap();
        assert_eq!(r.close(2, "node-a|2", 5), Err(RoomError::NotRoomOwner));
        r.leave(1, "node-a|1").unwrap();
        assert_eq!(r.owner, Some(2));
        r.close(2, "node-a|2", 5).unwrap();
        assert_eq!(r.closed, Some((Closure::Closed, 5)));
        assert_eq!(r.join(nm(9)), Err(RoomError::Closed));
        assert!(!r.finished(504, &RULES));
        assert!(r.finished(505, &RULES));
        assert_eq!(RoomIndex::of(Some(&r)), RoomIndex::default());
    }

    #[test]
    fn an_away_member_comes_back_within_the_grace_or_is_dropped() {
        let mut r = room();
        r.join(nm(2)).unwrap();
        assert!(r.detach(2, "node-a|2", 10, &RULES));
        assert!(!r.detach(2, "node-a|2", 10, &RULES), "twice is a no-op");
        assert_eq!(r.check(2, "node-a|2"), Err(RoomError::Detached));
        assert_eq!(r.resume("t2", "node-b|7", 500), Ok((2, None)));
        assert_eq!(r.check(2, "node-b|7").map(|_| ()), Ok(()));
        // Taken over by another connection: the old one is named.
        assert_eq!(
            r.resume("t2", "node-b|8", 600),
            Ok((2, Some("node-b|7".into())))
        );
        assert_eq!(r.check(2, "node-b|7"), Err(RoomError::NotOwner));
        assert!(r.detach(2, "node-b|8", 1_000, &RULES));
        assert!(!r.sweep(1_999, &[], &RULES));
        assert!(r.sweep(2_000, &[], &RULES));
        assert_eq!(r.departure_of(2), Some(Departure::Timeout));
        assert_eq!(
            r.resume("t2", "node-b|9", 2_000),
            Err(RoomError::InvalidToken)
        );
    }

    #[test]
    fn a_nearby_membership_is_resumed_only_from_its_address() {
        let n = Room::nearby("n".into(), "192.0.2.1".into(), 8, nm(1), 0, &RULES);
        assert_eq!(n.resumable_from("192.0.2.1"), Ok(()));
        assert_eq!(
            n.resumable_from("198.51.100.4"),
            Err(RoomError::InvalidToken)
        );
        assert_eq!(room().resumable_from("198.51.100.4"), Ok(()));
    }

    #[test]
    fn members_of_a_dead_node_go_away_then_time_out() {
        let mut r = room();
        let mut b = nm(2);
        b.owner = "node-b|1".into();
        r.join(b).unwrap();
        assert!(r.sweep(50, &["node-b".to_owned()], &RULES));
        assert_eq!(r.members[&2].away_until_ms, Some(1_050));
        assert!(r.members[&1].owner.is_some());
    }

    #[test]
    fn a_named_room_ends_with_its_last_member() {
        let mut r = room();
        r.join(nm(2)).unwrap();
        r.leave(1, "node-a|1").unwrap();
        assert!(!r.finished(0, &RULES));
        assert!(r.detach(2, "node-a|2", 0, &RULES));
        assert!(!r.finished(0, &RULES), "an away member keeps it");
        assert!(r.sweep(1_000, &[], &RULES));
        assert!(r.members.is_empty());
        assert!(r.finished(1_000, &RULES));
    }

    #[test]
    fn a_named_room_expires_and_a_nearby_one_lives_while_occupied() {
        let mut r = room();
        assert!(r.sweep(100_000, &[], &RULES));
        assert_eq!(r.closed, Some((Closure::Expired, 100_000)));
        let mut n = Room::nearby("n".into(), "192.0.2.1".into(), 8, nm(1), 0, &RULES);
        assert!(n.sweep(10_000, &[], &RULES));
        assert_eq!(n.closed, None);
        assert_eq!(n.expires_ms, 20_000);
        n.leave(1, "node-a|1").unwrap();
        assert!(n.finished(10_000, &RULES));
    }

    #[test]
    fn invitations_are_rate_limited_bounded_and_handed_over_once() {
        let mut r = room();
        r.join(nm(2)).unwrap();
        r.join(nm(3)).unwrap();
        let to = |m: MemberId, s: &str| (m, s.to_owned(), format!("tok-{s}"));
        assert_eq!(
            r.invite(1, "node-a|1", &[to(1, "x")], 0, &RULES),
            Err(RoomError::SelfInvite)
        );
        assert_eq!(
            r.invite(1, "node-a|1", &[to(7, "x")], 0, &RULES),
            Err(RoomError::UnknownMember(7))
        );
        r.invite(1, "node-a|1", &[to(2, "s1"), to(3, "s2")], 0, &RULES)
            .unwrap();
        r.invite(1, "node-a|1", &[to(2, "s3")], 0, &RULES).unwrap();
        assert_eq!(
            r.invite(1, "node-a|1", &[to(2, "s4")], 0, &RULES),
            Err(RoomError::InvitesPending(2))
        );
        r.invite(1, "node-a|1", &[to(3, "s5")], 0, &RULES).unwrap();
        assert_eq!(
            r.invite(1, "node-a|1", &[to(3, "s6")], 10, &RULES),
            Err(RoomError::TooManyInvites(4)),
            "four a minute"
        );
        let got = r.take_invites(2, "node-a|2", 5).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].session, "s1");
        assert!(r.take_invites(2, "node-a|2", 5).unwrap().is_empty());
        // A minute later the window opens again; stale ones are not handed.
        r.invite(1, "node-a|1", &[to(2, "s7")], 60_000, &RULES)
            .unwrap();
        assert!(r.take_invites(2, "node-a|2", 61_000).unwrap().is_empty());
        // An invitation from a member that left is withdrawn.
        r.invite(2, "node-a|2", &[to(3, "s8")], 61_000, &RULES)
            .unwrap();
        r.leave(2, "node-a|2").unwrap();
        assert!(r.members[&3].invites.iter().all(|i| i.from != 2));
    }

    #[test]
    fn index_changes_claim_unique_names_and_check_address_limits() {
        let r = room();
        let ops = changes(None, Some(&r), 5);
        assert!(ops.contains(&IndexOp::Claim("rnp:42".into(), "r".into())));
        assert!(ops.contains(&IndexOp::Limit("rip:192.0.2.1".into(), 5)));
        assert!(ops.contains(&IndexOp::SAdd("rns:node-a".into(), "r".into())));
        let mut r2 = r.clone();
        r2.join(nm(2)).unwrap();
        let ops = changes(Some(&r), Some(&r2), 5);
        assert!(ops.contains(&IndexOp::Set("rnp:42".into(), "r".into())));
        assert!(ops.contains(&IndexOp::Set("rtok:t2".into(), "r".into())));
        let mut r3 = r2.clone();
        r3.close(1, "node-a|1", 9).unwrap();
        let ops = changes(Some(&r2), Some(&r3), 5);
        assert!(ops.contains(&IndexOp::Del("rnp:42".into(), "r".into())));
        assert!(ops.contains(&IndexOp::SRem("rip:192.0.2.1".into(), "t2".into())));
        assert_eq!(audience(Some(&r2), Some(&r3)).len(), 2);
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut r = room();
        r.join(nm(2)).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        let back: Room = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
