//! A connection's room: requests (`room_*`, `nearby_join`), and keeping the
//! client's picture of its room in line with the store. A connection holds
//! either one session seat or one room membership. The store's record is
//! the truth; the connection remembers what it last told its client and,
//! whenever it is woken (a notice, a tick), reads the record and tells the
//! difference, so a lost notice only delays news until the next tick.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{new_token, Conn, Flow, Gone};
use crate::presence::{PresenceError, RoomKey};
use crate::protocol::{close, ErrorCode, RoomMember, ServerMsg};
use crate::room::{MemberId, NewMember, Room, RoomError, RoomKind};
use crate::rooms::{update, Change, RoomOpError};

/// Display names and room names: characters, not bytes.
const MAX_DISPLAY_NAME: usize = 40;
const MAX_ROOM_NAME: usize = 60;
/// Fresh nameplates tried for one `room_create` before giving up.
const NAMEPLATE_TRIES: usize = 12;

pub(super) struct Membership {
    room: String,
    member: MemberId,
    token: String,
    /// What the client was last told: `None` until its first `room_state`.
    view: Option<View>,
}

#[derive(Clone, PartialEq, Eq)]
struct View {
    owner: Option<MemberId>,
    /// Member -> (name, present).
    members: BTreeMap<MemberId, (String, bool)>,
}

impl View {
    fn of(room: &Room) -> View {
        View {
            owner: room.owner,
            members: room
                .members
                .iter()
                .map(|(id, m)| (*id, (m.name.clone(), m.owner.is_some())))
                .collect(),
        }
    }
}

/// A name a person chose, checked: trimmed, not too long, and free of
/// control and direction-changing characters (which could disguise it as
/// another member's).
fn clean_name(raw: &str, max: usize, required: bool) -> Result<String, String> {
    let name = raw.trim();
    // Zero-width spaces and the word joiner show nothing (the joiners
    // U+200C/D stay: emoji and several scripts need them).
    let invisible = |c: char| matches!(c, '\u{200b}' | '\u{2060}' | '\u{feff}');
    if required && name.chars().all(invisible) {
        return Err("a display name is required".into());
    }
    if name.chars().count() > max {
        return Err(format!("a name has at most {max} characters"));
    }
    // Controls, line and paragraph separators, every bidirectional mark,
    // embedding and isolate (U+061C is the Arabic letter mark), and the
    // deprecated format controls U+206A-F.
    let bad = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{206f}'
            )
    };
    if name.chars().any(bad) {
        return Err("a name may not hold control or direction characters".into());
    }
    Ok(name.to_owned())
}

impl Conn {
    fn owner_str(&self) -> String {
        format!("{}|{}", self.owner.node, self.owner.conn)
    }

    fn new_member(&self, name: String, token: String) -> NewMember {
        NewMember {
            name,
            token,
            ip: self.ip.to_string(),
            owner: self.owner_str(),
        }
    }

    /// Refuse a room request from a connection that holds a seat or a room.
    async fn may_enter_room(&mut self) -> Result<bool, Gone> {
        if self.seat.is_some() {
            self.error(
                ErrorCode::AlreadyInSession,
                "this connection holds a session; use another one for the room",
            )
            .await?;
            return Ok(false);
        }
        if self.room.is_some() {
            self.error(ErrorCode::AlreadyInRoom, "leave the current room first")
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    pub(super) async fn on_room_create(
        &mut self,
        name: &str,
        display_name: &str,
        max_members: Option<usize>,
        ttl_secs: Option<u64>,
    ) -> Result<(), Gone> {
        if !self.may_enter_room().await? {
            return Ok(());
        }
        let cfg = self.st.rooms;
        let (name, display) = match (
            clean_name(name, MAX_ROOM_NAME, false),
            clean_name(display_name, MAX_DISPLAY_NAME, true),
        ) {
            (Ok(n), Ok(d)) => (n, d),
            (Err(e), _) | (_, Err(e)) => return self.error(ErrorCode::BadMessage, e).await,
        };
        let max = max_members.unwrap_or(cfg.max_members);
        if !(2..=cfg.max_members).contains(&max) {
            let msg = format!("max_members must be 2 to {}", cfg.max_members);
            return self.error(ErrorCode::BadMessage, msg).await;
        }
        let ttl = ttl_secs.unwrap_or(cfg.default_ttl.as_secs());
        if !(1..=cfg.max_ttl.as_secs()).contains(&ttl) {
            let msg = format!("ttl_secs must be 1 to {}", cfg.max_ttl.as_secs());
            return self.error(ErrorCode::BadMessage, msg).await;
        }
        if !self.settle_room_limbo().await? {
            return Ok(());
        }
        let token = new_token();
        let me = self.owner_str();
        let mut outcome = Err(RoomOpError::Taken);
        for attempt in 0..NAMEPLATE_TRIES {
            // Six digits at least: a room's nameplate lives for hours, and
            // whoever guesses it sees the members' display names (not the
            // words, which no one can test offline), so it must not be
            // within reach of the failed-join limit. Longer ones once
            // those keep colliding.
            let digits = (6 + (attempt / 3) as u32).min(9);
            let nameplate = rand::random_range(10u32.pow(digits - 1)..10u32.pow(digits));
            let id = super::random_id();
            let creator = self.new_member(display.clone(), token.clone());
            outcome = update(
                &*self.st.presence,
                &cfg,
                &RoomKey::Id(id.clone()),
                Some(&me),
                |_, now| {
                    let room = Room::named(
                        id.clone(),
                        nameplate,
                        name.clone(),
                        max,
                        now + ttl * 1000,
                        creator.clone(),
                    );
                    Ok(Change::Write(Some(room), (id.clone(), nameplate)))
                },
            )
            .await;
            if !matches!(outcome, Err(RoomOpError::Taken)) {
                break;
            }
        }
        match outcome {
            Ok((room, nameplate)) => {
                self.st.metrics.rooms_created.inc();
                self.room = Some(Membership {
                    room: room.clone(),
                    member: 1,
                    token: token.clone(),
                    view: None,
                });
                self.send(&ServerMsg::RoomCreated {
                    room,
                    nameplate: nameplate.to_string(),
                    member: 1,
                    resume_token: token,
                    expires_in_secs: ttl,
                })
                .await?;
                self.room_sync(true).await.map(drop)
            }
            Err(e) => {
                self.room_limbo_on(&e, &token);
                self.room_error(e).await
            }
        }
    }

    pub(super) async fn on_room_join(
        &mut self,
        nameplate: &str,
        display_name: &str,
    ) -> Result<(), Gone> {
        if !self.may_enter_room().await? {
            return Ok(());
        }
        let display = match clean_name(display_name, MAX_DISPLAY_NAME, true) {
            Ok(d) => d,
            Err(e) => return self.error(ErrorCode::BadMessage, e).await,
        };
        // A guess at a room code costs like a guess at a session code.
        let Some(n) = self
            .reserve_join(
                nameplate,
                ErrorCode::UnknownRoom,
                "a room nameplate is 1 to 9 digits without a leading zero",
            )
            .await?
        else {
            return Ok(());
        };
        if !self.settle_room_limbo().await? {
            self.st
                .lock_ip_limits()
                .settle_join(self.ip, false, Instant::now());
            return Ok(());
        }
        let token = new_token();
        let me = self.owner_str();
        let joining = self.new_member(display, token.clone());
        let res = update(
            &*self.st.presence,
            &self.st.rooms,
            &RoomKey::Nameplate(n),
            Some(&me),
            |room, _| {
                let mut room = room.ok_or(RoomError::UnknownRoom)?;
                let id = room.join(joining.clone())?;
                let out = (room.id.clone(), id);
                Ok(Change::Write(Some(room), out))
            },
        )
        .await;
        let failed = matches!(
            res,
            Err(RoomOpError::Room(
                RoomError::UnknownRoom | RoomError::Closed
            ))
        );
        self.st
            .lock_ip_limits()
            .settle_join(self.ip, failed, Instant::now());
        match res {
            Ok((room, member)) => self.entered(room, member, token, RoomKind::Named).await,
            Err(e) => {
                self.room_limbo_on(&e, &token);
                self.room_error(e).await
            }
        }
    }

    pub(super) async fn on_nearby_join(&mut self, display_name: &str) -> Result<(), Gone> {
        if !self.may_enter_room().await? {
            return Ok(());
        }
        let display = match clean_name(display_name, MAX_DISPLAY_NAME, true) {
            Ok(d) => d,
            Err(e) => return self.error(ErrorCode::BadMessage, e).await,
        };
        if !self.settle_room_limbo().await? {
            return Ok(());
        }
        let token = new_token();
        let me = self.owner_str();
        let joining = self.new_member(display, token.clone());
        let key = self.ip.to_string();
        let cfg = self.st.rooms;
        let mut res = Err(RoomOpError::Taken);
        // Taken: another client of this address made the room at the same
        // moment; join that one.
        for _ in 0..3 {
            res = update(
                &*self.st.presence,
                &cfg,
                &RoomKey::Nearby(key.clone()),
                Some(&me),
                |room, now| {
                    let (room, id) = match room {
                        Some(mut r) => {
                            let id = r.join(joining.clone())?;
                            (r, id)
                        }
                        None => {
                            let r = Room::nearby(
                                super::random_id(),
                                key.clone(),
                                cfg.nearby_max_members,
                                joining.clone(),
                                now,
                                &cfg.rules,
                            );
                            (r, 1)
                        }
                    };
                    let out = (room.id.clone(), id);
                    Ok(Change::Write(Some(room), out))
                },
            )
            .await;
            if !matches!(res, Err(RoomOpError::Taken)) {
                break;
            }
        }
        match res {
            Ok((room, member)) => self.entered(room, member, token, RoomKind::Nearby).await,
            Err(e) => {
                self.room_limbo_on(&e, &token);
                self.room_error(e).await
            }
        }
    }

    async fn entered(
        &mut self,
        room: String,
        member: MemberId,
        token: String,
        kind: RoomKind,
    ) -> Result<(), Gone> {
        self.room = Some(Membership {
            room: room.clone(),
            member,
            token: token.clone(),
            view: None,
        });
        self.send(&ServerMsg::RoomJoined {
            room,
            kind: kind.as_str().to_owned(),
            member,
            resume_token: token,
        })
        .await?;
        self.room_sync(true).await.map(drop)
    }

    pub(super) async fn on_room_resume(&mut self, token: &str) -> Result<(), Gone> {
        if !self.may_enter_room().await? {
            return Ok(());
        }
        if !self.settle_room_limbo().await? {
            return Ok(());
        }
        let me = self.owner_str();
        let here = self.ip.to_string();
        let res = update(
            &*self.st.presence,
            &self.st.rooms,
            &RoomKey::Token(token.to_owned()),
            Some(&me),
            |room, now| {
                let mut room = room.ok_or(RoomError::InvalidToken)?;
                room.resumable_from(&here)?;
                let (member, _) = room.resume(token, &me, now)?;
                let out = (room.id.clone(), member, room.kind);
                Ok(Change::Write(Some(room), out))
            },
        )
        .await;
        match res {
            Ok((room, member, kind)) => {
                self.room = Some(Membership {
                    room: room.clone(),
                    member,
                    token: token.to_owned(),
                    view: None,
                });
                self.send(&ServerMsg::RoomResumed {
                    room,
                    kind: kind.as_str().to_owned(),
                    member,
                    resume_token: token.to_owned(),
                })
                .await?;
                self.room_sync(true).await.map(drop)
            }
            Err(e) => {
                // A resume that may have landed is let go at the end like
                // any membership of this connection.
                self.room_error(e).await
            }
        }
    }

    /// Leave the room. Idempotent: without a room there is nothing to leave.
    pub(super) async fn on_room_leave(&mut self) -> Result<(), Gone> {
        let Some(m) = &self.room else {
            return self
                .send(&ServerMsg::RoomLeft {
                    reason: "left".to_owned(),
                })
                .await;
        };
        let (room, member, token) = (m.room.clone(), m.member, m.token.clone());
        let me = self.owner_str();
        let res = update(
            &*self.st.presence,
            &self.st.rooms,
            &RoomKey::Id(room),
            Some(&me),
            |room, now| {
                let Some(mut room) = room else {
                    return Ok(Change::Keep(()));
                };
                if room.check(member, &me) == Err(RoomError::Detached) {
                    room.resume(&token, &me, now)?;
                }
                match room.leave(member, &me) {
                    Ok(()) => Ok(Change::Write(Some(room), ())),
                    Err(_) => Ok(Change::Keep(())),
                }
            },
        )
        .await;
        match res {
            Ok(()) => {
                self.room = None;
                self.send(&ServerMsg::RoomLeft {
                    reason: "left".to_owned(),
                })
                .await
            }
            Err(e) => self.room_error(e).await,
        }
    }

    pub(super) async fn on_room_close(&mut self) -> Result<(), Gone> {
        let Some(m) = &self.room else {
            return self.error(ErrorCode::NoRoom, "not in a room").await;
        };
        let (room, member) = (m.room.clone(), m.member);
        let me = self.owner_str();
        let res = update(
            &*self.st.presence,
            &self.st.rooms,
            &RoomKey::Id(room),
            Some(&me),
            |room, now| {
                let mut room = room.ok_or(RoomError::Closed)?;
                if room.kind == RoomKind::Nearby {
                    return Err(RoomError::NotRoomOwner);
                }
                room.close(member, &me, now)?;
                Ok(Change::Write(Some(room), ()))
            },
        )
        .await;
        match res {
            Ok(()) => {
                self.room = None;
                self.send(&ServerMsg::RoomClosed {
                    reason: "closed".to_owned(),
                })
                .await
            }
            Err(e) => self.room_error(e).await,
        }
    }

    pub(super) async fn on_room_invite(&mut self, to: Vec<u32>) -> Result<(), Gone> {
        let Some(m) = &self.room else {
            return self.error(ErrorCode::NoRoom, "not in a room").await;
        };
        let (room_id, member) = (m.room.clone(), m.member);
        let mut targets = to;
        targets.sort_unstable();
        targets.dedup();
        let cfg = self.st.rooms;
        if targets.is_empty() || targets.len() > cfg.max_members.max(cfg.nearby_max_members) {
            return self
                .error(ErrorCode::BadMessage, "`to` lists one or more member ids")
                .await;
        }
        let me = self.owner_str();
        // Checked before any session is made; checked again when stored.
        match self
            .st
            .presence
            .room_get(&RoomKey::Id(room_id.clone()))
            .await
        {
            Ok((Some(r), now)) => match r.may_invite(member, &me, &targets, now, &cfg.rules) {
                Ok(()) => {}
                Err(e) => return self.room_error(e.into()).await,
            },
            Ok((None, _)) => return self.room_error(RoomError::Closed.into()).await,
            Err(e) => return self.room_error(e.into()).await,
        };
        // The inviter's address pays for both seats of each session: a
        // member must not be able to spend another's quota by inviting it.
        // A refusal part-way still delivers the sessions already made.
        let mut made = Vec::new();
        let mut refused = None;
        for t in &targets {
            let (mine, theirs) = (new_token(), new_token());
            match self
                .st
                .presence
                .create_pair([mine.clone(), theirs.clone()], [self.ip, self.ip])
                .await
            {
                Ok(session) => made.push((*t, session, mine, theirs)),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if made.is_empty() {
            if let Some(e) = refused {
                return self.presence_error(e).await;
            }
        }
        let stored: Vec<(MemberId, String, String)> = made
            .iter()
            .map(|(t, s, _, theirs)| (*t, s.clone(), theirs.clone()))
            .collect();
        let res = update(
            &*self.st.presence,
            &cfg,
            &RoomKey::Id(room_id),
            Some(&me),
            |room, now| {
                let mut room = room.ok_or(RoomError::Closed)?;
                room.invite(member, &me, &stored, now, &cfg.rules)?;
                Ok(Change::Write(Some(room), ()))
            },
        )
        .await;
        if let Err(e) = res {
            // The sessions made are never claimed and end with the grace.
            return self.room_error(e).await;
        }
        self.st.metrics.room_invites.inc_by(made.len() as u64);
        for (to, session, mine, _) in made {
            self.send(&ServerMsg::RoomInvited {
                to,
                session,
                resume_token: mine,
            })
            .await?;
        }
        match refused {
            Some(e) => self.presence_error(e).await,
            None => Ok(()),
        }
    }

    /// Read the room and tell the client what changed since it was last
    /// told: members joined, left, away or back, a new owner, invitations,
    /// or the end of its membership. `solicited`: a request waits on this.
    pub(super) async fn room_sync(&mut self, solicited: bool) -> Result<Flow, Gone> {
        for _ in 0..2 {
            let Some(m) = &self.room else {
                return Ok(Flow::Continue);
            };
            let (room_id, member, token) = (m.room.clone(), m.member, m.token.clone());
            let me = self.owner_str();
            let (room, now) = match self.st.presence.room_get(&RoomKey::Id(room_id)).await {
                Ok(r) => r,
                Err(e) => {
                    if solicited {
                        self.room_error(e.into()).await?;
                    }
                    return Ok(Flow::Continue);
                }
            };
            let Some(room) = room else {
                self.room = None;
                self.send(&ServerMsg::RoomClosed {
                    reason: "gone".to_owned(),
                })
                .await?;
                return Ok(Flow::Continue);
            };
            if let Some((why, _)) = room.closed {
                self.room = None;
                self.send(&ServerMsg::RoomClosed {
                    reason: why.as_str().to_owned(),
                })
                .await?;
                return Ok(Flow::Continue);
            }
            let Some(mine) = room.members.get(&member) else {
                self.room = None;
                let why = room.departure_of(member).map_or("gone", |d| d.as_str());
                self.send(&ServerMsg::RoomLeft {
                    reason: why.to_owned(),
                })
                .await?;
                return Ok(Flow::Continue);
            };
            match mine.owner.as_deref() {
                Some(o) if o == me => {
                    let invites = !mine.invites.is_empty();
                    self.tell_changes(&room, now).await?;
                    if invites {
                        self.hand_invites(&room.id, member).await?;
                    }
                    return Ok(Flow::Continue);
                }
                Some(_) => {
                    self.room = None;
                    return Ok(Flow::Close(
                        close::SUPERSEDED,
                        "room membership resumed by another connection",
                    ));
                }
                None => {
                    // The store let go of us (our node was taken for dead):
                    // claim the membership back, then read again.
                    let res = update(
                        &*self.st.presence,
                        &self.st.rooms,
                        &RoomKey::Id(room.id.clone()),
                        Some(&me),
                        |room, now| {
                            let Some(mut room) = room else {
                                return Ok(Change::Keep(()));
                            };
                            room.resume(&token, &me, now)?;
                            Ok(Change::Write(Some(room), ()))
                        },
                    )
                    .await;
                    if let Err(RoomOpError::Presence(_)) = res {
                        return Ok(Flow::Continue);
                    }
                }
            }
        }
        Ok(Flow::Continue)
    }

    async fn tell_changes(&mut self, room: &Room, now: u64) -> Result<(), Gone> {
        let Some(m) = self.room.as_mut() else {
            return Ok(());
        };
        let new = View::of(room);
        let old = m.view.replace(new.clone());
        let Some(old) = old else {
            let you = m.member;
            let msg = ServerMsg::RoomState {
                room: room.id.clone(),
                kind: room.kind.as_str().to_owned(),
                name: room.name.clone(),
                owner: room.owner,
                you,
                max_members: room.max_members,
                expires_in_secs: (room.kind == RoomKind::Named)
                    .then(|| room.expires_ms.saturating_sub(now) / 1000),
                members: new
                    .members
                    .iter()
                    .map(|(id, (name, present))| RoomMember {
                        member: *id,
                        name: name.clone(),
                        present: *present,
                    })
                    .collect(),
            };
            return self.send(&msg).await;
        };
        if old == new {
            return Ok(());
        }
        let mut out = Vec::new();
        for (id, (name, present)) in &new.members {
            match old.members.get(id) {
                None => {
                    out.push(ServerMsg::RoomMemberJoined {
                        member: *id,
                        name: name.clone(),
                    });
                    if !present {
                        out.push(ServerMsg::RoomMemberAway { member: *id });
                    }
                }
                Some((_, was)) if was != present => out.push(if *present {
                    ServerMsg::RoomMemberBack { member: *id }
                } else {
                    ServerMsg::RoomMemberAway { member: *id }
                }),
                Some(_) => {}
            }
        }
        for id in old.members.keys() {
            if !new.members.contains_key(id) {
                let why = room.departure_of(*id).map_or("gone", |d| d.as_str());
                out.push(ServerMsg::RoomMemberLeft {
                    member: *id,
                    reason: why.to_owned(),
                });
            }
        }
        if let (Some(owner), true) = (new.owner, new.owner != old.owner) {
            out.push(ServerMsg::RoomOwner { member: owner });
        }
        for msg in out {
            self.send(&msg).await?;
        }
        Ok(())
    }

    async fn hand_invites(&mut self, room: &str, member: MemberId) -> Result<(), Gone> {
        let me = self.owner_str();
        let res = update(
            &*self.st.presence,
            &self.st.rooms,
            &RoomKey::Id(room.to_owned()),
            Some(&me),
            |room, now| {
                let Some(mut room) = room else {
                    return Ok(Change::Keep(Vec::new()));
                };
                let taken = room.take_invites(member, &me, now)?;
                Ok(Change::Write(Some(room), taken))
            },
        )
        .await;
        // Not handed now: the next sync tries again.
        let Ok(invites) = res else { return Ok(()) };
        for i in invites {
            self.send(&ServerMsg::RoomInvite {
                from: i.from,
                session: i.session,
                resume_token: i.token,
            })
            .await?;
        }
        Ok(())
    }

    /// The connection is gone: keep the membership for the grace period. A
    /// detach the store cannot take now is done by the node's orphan check.
    pub(super) async fn leave_room_for_now(&mut self) {
        if let Some(token) = self.room_limbo.take() {
            // Not settled now: the orphan check lets it go later.
            let _ = self.abandon_room(&token).await;
        }
        let Some(m) = self.room.take() else { return };
        let me = self.owner_str();
        let _ = update(
            &*self.st.presence,
            &self.st.rooms,
            &RoomKey::Id(m.room),
            Some(&me),
            |room, now| {
                let Some(mut room) = room else {
                    return Ok(Change::Keep(()));
                };
                if room.detach(m.member, &me, now, &self.st.rooms.rules) {
                    Ok(Change::Write(Some(room), ()))
                } else {
                    Ok(Change::Keep(()))
                }
            },
        )
        .await;
    }

    /// A room request failed because the store did not answer: it may
    /// still have landed. Remember its token to let it go.
    fn room_limbo_on(&mut self, e: &RoomOpError, token: &str) {
        if matches!(e, RoomOpError::Presence(PresenceError::Unavailable(_))) {
            self.room_limbo = Some(token.to_owned());
        }
    }

    /// Let go of a membership a failed request may have made. `false` when
    /// the store still cannot answer: the client has been told to retry.
    async fn settle_room_limbo(&mut self) -> Result<bool, Gone> {
        let Some(token) = self.room_limbo.clone() else {
            return Ok(true);
        };
        match self.abandon_room(&token).await {
            Err(e) => {
                self.room_error(e).await?;
                Ok(false)
            }
            Ok(()) => {
                self.room_limbo = None;
                Ok(true)
            }
        }
    }

    async fn abandon_room(&mut self, token: &str) -> Result<(), RoomOpError> {
        let me = self.owner_str();
        update(
            &*self.st.presence,
            &self.st.rooms,
            &RoomKey::Token(token.to_owned()),
            Some(&me),
            |room, _| {
                let Some(mut room) = room else {
                    return Ok(Change::Keep(()));
                };
                let Some(id) = room.member_by_token(token) else {
                    return Ok(Change::Keep(()));
                };
                match room.leave(id, &me) {
                    Ok(()) => Ok(Change::Write(Some(room), ())),
                    Err(_) => Ok(Change::Keep(())),
                }
            },
        )
        .await
    }

    async fn room_error(&mut self, e: RoomOpError) -> Result<(), Gone> {
        let (code, msg) = match e {
            RoomOpError::Presence(p) => return self.presence_error(p).await,
            RoomOpError::Room(r) => {
                let code = match r {
                    RoomError::UnknownRoom | RoomError::Closed => ErrorCode::UnknownRoom,
                    RoomError::Full(_) => ErrorCode::RoomFull,
                    RoomError::NotMember | RoomError::NotOwner => ErrorCode::NoRoom,
                    RoomError::Detached => ErrorCode::PresenceUnavailable,
                    RoomError::NotRoomOwner => ErrorCode::NotRoomOwner,
                    RoomError::InvalidToken => ErrorCode::InvalidResumeToken,
                    RoomError::UnknownMember(_) => ErrorCode::UnknownMember,
                    RoomError::SelfInvite => ErrorCode::BadMessage,
                    RoomError::TooManyInvites(_) | RoomError::InvitesPending(_) => {
                        ErrorCode::TooManyInvites
                    }
                };
                (code, r.to_string())
            }
            RoomOpError::TooManyRooms(_) => (ErrorCode::TooManyRooms, e.to_string()),
            RoomOpError::Taken => (ErrorCode::ServerFull, "no free room code; retry".into()),
            RoomOpError::Contended => (ErrorCode::PresenceUnavailable, e.to_string()),
        };
        self.error(code, msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::clean_name;

    #[test]
    fn names_are_trimmed_bounded_and_free_of_disguises() {
        assert_eq!(clean_name("  Ada  ", 40, true).as_deref(), Ok("Ada"));
        assert!(clean_name("", 40, true).is_err());
        assert_eq!(clean_name("", 40, false).as_deref(), Ok(""));
        assert!(clean_name(&"é".repeat(41), 40, true).is_err());
        assert!(clean_name(&"é".repeat(40), 40, true).is_ok());
        assert!(clean_name("Eve\u{202e}txt.exe", 40, true).is_err());
        assert!(clean_name("a\nb", 40, true).is_err());
        assert!(clean_name("a\u{2067}b", 40, true).is_err());
    }

    #[test]
    fn every_direction_mark_and_line_break_is_refused() {
        // The Arabic letter mark is a direction mark like U+200F; the
        // deprecated format controls U+206A-F change shaping and mirroring.
        for c in ['\u{061c}', '\u{2028}', '\u{2029}', '\u{206a}', '\u{206f}'] {
            assert!(clean_name(&format!("Ada{c}x"), 40, true).is_err(), "{c:?}");
        }
        // A name of nothing visible is no name.
        for c in ['\u{200b}', '\u{2060}', '\u{feff}'] {
            assert!(clean_name(&c.to_string(), 40, true).is_err(), "{c:?}");
        }
        // Joiners are part of emoji and of several scripts.
        assert!(clean_name("\u{1f469}\u{200d}\u{1f4bb}", 40, true).is_ok());
        assert!(clean_name(
            "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}",
            40,
            true
        )
        .is_ok());
    }
}
