//! Room records and their indexes in one process's memory: what Redis
//! holds for rooms, as plain maps, with the same compare-and-set write.
//! Pure: the memory store wraps it in a mutex and supplies the clock.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{RoomKey, RoomPut, RoomWrite};
use crate::room::{IndexOp, Room};

#[derive(Debug, Default)]
pub struct RoomTable {
    rooms: HashMap<String, Room>,
    keys: HashMap<String, String>,
    sets: HashMap<String, HashSet<String>>,
    deadlines: BTreeSet<(u64, String)>,
    deadline_of: HashMap<String, u64>,
}

impl RoomTable {
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn get(&self, key: &RoomKey) -> Option<Room> {
        let id = match key {
            RoomKey::Id(id) => id.clone(),
            RoomKey::Nameplate(n) => self.keys.get(&format!("rnp:{n}"))?.clone(),
            RoomKey::Token(t) => self.keys.get(&format!("rtok:{t}"))?.clone(),
            RoomKey::Nearby(k) => self.keys.get(&format!("near:{k}"))?.clone(),
        };
        self.rooms.get(&id).cloned()
    }

    /// Apply `w` if the record is still at `w.expected`. Claims and limits
    /// are checked before anything changes.
    pub fn put(&mut self, w: &RoomWrite<'_>) -> RoomPut {
        if self.rooms.get(w.id).map(|r| r.version) != w.expected {
            return RoomPut::Conflict;
        }
        for op in &w.ops {
            match op {
                IndexOp::Claim(k, v) if self.keys.get(k).is_some_and(|x| x != v) => {
                    return RoomPut::Taken
                }
                IndexOp::Limit(set, max) if self.sets.get(set).map_or(0, HashSet::len) >= *max => {
                    return RoomPut::Limit
                }
                _ => {}
            }
        }
        for op in &w.ops {
            match op {
                IndexOp::Claim(k, v) | IndexOp::Set(k, v) => {
                    self.keys.insert(k.clone(), v.clone());
                }
                IndexOp::Del(k, v) => {
                    if self.keys.get(k) == Some(v) {
                        self.keys.remove(k);
                    }
                }
                IndexOp::SAdd(s, m) => {
                    self.sets.entry(s.clone()).or_default().insert(m.clone());
                }
                IndexOp::SRem(s, m) => {
                    if let Some(set) = self.sets.get_mut(s) {
                        set.remove(m);
                        if set.is_empty() {
                            self.sets.remove(s);
                        }
                    }
                }
                IndexOp::Limit(..) => {}
            }
        }
        if let Some(at) = self.deadline_of.remove(w.id) {
            self.deadlines.remove(&(at, w.id.to_owned()));
        }
        match w.room {
            Some(r) => {
                self.rooms.insert(w.id.to_owned(), r.clone());
                if let Some(at) = w.deadline {
                    self.deadlines.insert((at, w.id.to_owned()));
                    self.deadline_of.insert(w.id.to_owned(), at);
                }
            }
            None => {
                self.rooms.remove(w.id);
            }
        }
        RoomPut::Saved
    }

    /// Rooms whose deadline is at or before `now`, at most `max`.
    pub fn due(&self, now: u64, max: usize) -> Vec<String> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Rooms with a member connected to `node`.
    pub fn of_node(&self, node: &str) -> Vec<String> {
        self.sets
            .get(&format!("rns:{node}"))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Index entries held, to check that nothing is left behind.
    pub fn index_len(&self) -> usize {
        self.keys.len() + self.sets.values().map(HashSet::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{changes, NewMember};

    fn member(n: u32) -> NewMember {
        NewMember {
            name: format!("m{n}"),
            token: format!("t{n}"),
            ip: "192.0.2.9".into(),
            owner: format!("node|{n}"),
        }
    }

    fn write<'a>(old: Option<&Room>, new: Option<&'a Room>, id: &'a str) -> RoomWrite<'a> {
        RoomWrite {
            id,
            expected: old.map(|r| r.version),
            room: new,
            ops: changes(old, new, 2),
            notify: Vec::new(),
            deadline: new.map(|r| r.expires_ms),
            ttl_ms: 1,
        }
    }

    #[test]
    fn compare_and_set_claims_limits_and_leaves_nothing_behind() {
        let mut t = RoomTable::default();
        let a = Room::named("a".into(), 7, String::new(), 4, 100, member(1));
        assert_eq!(t.put(&write(None, Some(&a), "a")), RoomPut::Saved);
        assert_eq!(t.put(&write(None, Some(&a), "a")), RoomPut::Conflict);
        let b = Room::named("b".into(), 7, String::new(), 4, 100, member(5));
        assert_eq!(t.put(&write(None, Some(&b), "b")), RoomPut::Taken);
        assert_eq!(t.get(&RoomKey::Nameplate(7)).unwrap().id, "a");
        assert_eq!(t.get(&RoomKey::Token("t1".into())).unwrap().id, "a");
        let mut a2 = a.clone();
        a2.join(member(2)).unwrap();
        assert_eq!(t.put(&write(Some(&a), Some(&a2), "a")), RoomPut::Saved);
        let mut a3 = a2.clone();
        a3.join(member(3)).unwrap();
        assert_eq!(
            t.put(&write(Some(&a2), Some(&a3), "a")),
            RoomPut::Limit,
            "two memberships per address"
        );
        assert_eq!(t.of_node("node"), vec!["a".to_owned()]);
        assert_eq!(t.due(99, 10), Vec::<String>::new());
        assert_eq!(t.due(100, 10), vec!["a".to_owned()]);
        assert_eq!(t.put(&write(Some(&a2), None, "a")), RoomPut::Saved);
        assert!(t.is_empty());
        assert_eq!(t.index_len(), 0);
        assert!(t.due(1_000, 10).is_empty());
    }
}
