//! Room operations over any presence store: read a record, apply one pure
//! [`Room`] operation, write it back with compare-and-set, retrying when
//! another node wrote in between. The index changes and the connections to
//! wake are derived from the two versions, so every operation keeps the
//! indexes and the notices right in both stores alike.

use std::time::Duration;

use crate::presence::{Presence, PresenceError, RoomKey, RoomPut, RoomWrite};
use crate::room::{self, Room, RoomError, RoomRules};

/// Compare-and-set attempts before an operation gives up as contended.
const ATTEMPTS: usize = 16;
/// How long a store keeps a record past its end without a sweep.
const KEY_MARGIN_MS: u64 = 60_000;

/// Room limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RoomsConfig {
    pub rules: RoomRules,
    /// Members a named room holds at most (and by default).
    pub max_members: usize,
    pub nearby_max_members: usize,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Named-room memberships one address holds at once.
    pub max_per_ip: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RoomOpError {
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// A unique key is held by another room (a nameplate drawn twice, or a
    /// nearby room made at the same moment): try again with a new one.
    #[error("the name is taken")]
    Taken,
    #[error("this address holds its maximum of {0} rooms")]
    TooManyRooms(usize),
    #[error("the room changed too often to update; retry")]
    Contended,
}

/// What an operation does with the record it read.
pub enum Change<T> {
    /// Write this record (`None` deletes it) and return `T`.
    Write(Option<Room>, T),
    /// Leave the record as it is.
    Keep(T),
}

/// Read the room behind `key`, let `f` decide, and write its decision if
/// nobody wrote in between; otherwise read again. `actor` is the
/// connection acting, which needs no wake-up.
pub async fn update<T>(
    store: &dyn Presence,
    cfg: &RoomsConfig,
    key: &RoomKey,
    actor: Option<&str>,
    mut f: impl FnMut(Option<Room>, u64) -> Result<Change<T>, RoomError>,
) -> Result<T, RoomOpError> {
    for _ in 0..ATTEMPTS {
        let (old, now) = store.room_get(key).await?;
        let (new, out) = match f(old.clone(), now)? {
            Change::Keep(out) => return Ok(out),
            Change::Write(new, out) => (new, out),
        };
        let new = new.filter(|r| !r.finished(now, &cfg.rules));
        let Some(id) = new.as_ref().or(old.as_ref()).map(|r| r.id.clone()) else {
            return Ok(out);
        };
        let mut notify = room::audience(old.as_ref(), new.as_ref());
        notify.retain(|o| Some(o.as_str()) != actor);
        let end = new.as_ref().map_or(now, |r| r.end_ms(&cfg.rules));
        let w = RoomWrite {
            id: &id,
            expected: old.as_ref().map(|r| r.version),
            room: new.as_ref(),
            ops: room::changes(old.as_ref(), new.as_ref(), cfg.max_per_ip),
            notify,
            deadline: new.as_ref().map(|r| r.next_deadline(&cfg.rules)),
            ttl_ms: end.saturating_sub(now) + KEY_MARGIN_MS,
        };
        match store.room_put(&w).await? {
            RoomPut::Saved => return Ok(out),
            RoomPut::Conflict => continue,
            RoomPut::Taken => return Err(RoomOpError::Taken),
            RoomPut::Limit => return Err(RoomOpError::TooManyRooms(cfg.max_per_ip)),
        }
    }
    Err(RoomOpError::Contended)
}

/// Apply what is due in `id` (expiry, grace periods, members of dead
/// nodes), and drop a record that has nothing left to say.
pub async fn sweep_one(
    store: &dyn Presence,
    cfg: &RoomsConfig,
    id: &str,
    dead: &[String],
) -> Result<(), RoomOpError> {
    update(
        store,
        cfg,
        &RoomKey::Id(id.to_owned()),
        None,
        |room, now| {
            let Some(mut room) = room else {
                return Ok(Change::Keep(()));
            };
            let changed = room.sweep(now, dead, &cfg.rules);
            if changed || room.finished(now, &cfg.rules) {
                Ok(Change::Write(Some(room), ()))
            } else {
                Ok(Change::Keep(()))
            }
        },
    )
    .await
}

/// Let go of memberships held by connections of `node` that no longer
/// exist (`live` says which do): their detach was lost, or the request
/// that made them was given up while the store stalled.
pub async fn detach_orphans(
    store: &dyn Presence,
    cfg: &RoomsConfig,
    node: &str,
    live: impl Fn(u64) -> bool,
) -> Result<usize, RoomOpError> {
    let mut detached = 0;
    for id in store.rooms_of(node).await? {
        detached += update(store, cfg, &RoomKey::Id(id), None, |room, now| {
            let Some(mut room) = room else {
                return Ok(Change::Keep(0));
            };
            let orphans: Vec<(room::MemberId, String)> = room
                .members
                .iter()
                .filter_map(|(id, m)| {
                    let o = m.owner.as_deref()?;
                    let (n, conn) = o.rsplit_once('|')?;
                    let gone = n == node && conn.parse().is_ok_and(|c| !live(c));
                    gone.then(|| (*id, o.to_owned()))
                })
                .collect();
            if orphans.is_empty() {
                return Ok(Change::Keep(0));
            }
            for (id, owner) in &orphans {
                room.detach(*id, owner, now, &cfg.rules);
            }
            Ok(Change::Write(Some(room), orphans.len()))
        })
        .await?;
    }
    Ok(detached)
}
