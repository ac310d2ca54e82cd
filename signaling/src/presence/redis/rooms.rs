//! Rooms in Redis: each room one hash (`r:<id>`: version `v` and the JSON
//! record `b`), its indexes plain keys and sets, and one generic
//! compare-and-set script that writes a record with the index changes
//! computed in Rust (`room::changes`). The room logic itself runs in the
//! node (`rooms.rs`), the same for both stores; Redis only guarantees that
//! a write lands on the version it was computed from.

use redis::Script;

use super::{RedisPresence, PRELUDE};
use crate::client_addr::IpKey;
use crate::presence::{PresenceError, RoomKey, RoomPut, RoomWrite, RoomsDue};
use crate::room::{IndexOp, Room};

/// Read a room through one of its keys; replies the clock too.
const ROOM_GET: &str = r#"
local kind, v = ARGV[1], ARGV[2]
local now = now_ms()
local id = v
if kind ~= 'id' then
  id = redis.call('GET', P .. kind .. v)
  if not id then return {'ok', int(now), ''} end
end
return {'ok', int(now), redis.call('HGET', P .. 'r:' .. id, 'b') or ''}
"#;

/// Write a room record if it is still at the expected version, with its
/// index operations (claims and limits checked first) and wake-ups.
const ROOM_PUT: &str = r#"
local id, expected, newver, blob = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, deadline, nops = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local rk = P .. 'r:' .. id
if (redis.call('HGET', rk, 'v') or '') ~= expected then return {'err', 'conflict'} end
local function op(i) return ARGV[8 + 3 * i], P .. ARGV[9 + 3 * i], ARGV[10 + 3 * i] end
for i = 0, nops - 1 do
  local o, k, v = op(i)
  if o == 'claim' then
    local held = redis.call('GET', k)
    if held and held ~= v then return {'err', 'taken'} end
  elseif o == 'limit' then
    -- Memberships whose room is gone (every node died) no longer count.
    for _, t in ipairs(redis.call('SMEMBERS', k)) do
      if redis.call('EXISTS', P .. 'rtok:' .. t) == 0 then redis.call('SREM', k, t) end
    end
    if redis.call('SCARD', k) >= tonumber(v) then return {'err', 'limit'} end
  end
end
local function keep(k)
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
for i = 0, nops - 1 do
  local o, k, v = op(i)
  if o == 'claim' or o == 'set' then
    redis.call('SET', k, v, 'PX', ttl)
  elseif o == 'del' then
    if redis.call('GET', k) == v then redis.call('DEL', k) end
  elseif o == 'sadd' then
    redis.call('SADD', k, v)
    keep(k)
  elseif o == 'srem' then
    redis.call('SREM', k, v)
  end
end
if newver == '' then
  redis.call('DEL', rk)
  redis.call('ZREM', P .. 'rdl', id)
else
  redis.call('HSET', rk, 'v', newver, 'b', blob)
  redis.call('PEXPIRE', rk, ttl)
  if deadline == '' then
    redis.call('ZREM', P .. 'rdl', id)
  else
    redis.call('ZADD', P .. 'rdl', deadline, id)
    keep(P .. 'rdl')
  end
end
for i = 8 + 3 * nops, #ARGV do notify(ARGV[i], id, 'room') end
return {'ok'}
"#;

/// Rooms due for a sweep, and those with members on nodes taken for dead
/// (by the rule of the session sweep: only once this node has beaten
/// without a gap for a whole node TTL).
const ROOMS_DUE: &str = r#"
local me, node_ttl, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local now = now_ms()
local dead, rooms = {}, {}
if may_judge(me, now, node_ttl, interval) then
  local beats = redis.call('HGETALL', P .. 'beats')
  for i = 1, #beats, 2 do
    if beats[i] ~= me and now - tonumber(beats[i + 1]) > node_ttl then
      table.insert(dead, beats[i])
      local k = P .. 'rns:' .. beats[i]
      for _, id in ipairs(redis.call('SRANDMEMBER', k, batch)) do
        if redis.call('EXISTS', P .. 'r:' .. id) == 1 then
          table.insert(rooms, id)
        else
          redis.call('SREM', k, id)
        end
      end
    end
  end
end
-- A record gone without a sweep (its key expired while no node ran) has
-- nothing left to do: drop its deadline, or the earliest of these would
-- fill every batch and keep live rooms from being swept.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'rdl', '-inf', now, 'LIMIT', 0, batch)) do
  if redis.call('EXISTS', P .. 'r:' .. id) == 1 then
    table.insert(rooms, id)
  else
    redis.call('ZREM', P .. 'rdl', id)
  end
end
local out = {'ok', tostring(#dead)}
for _, d in ipairs(dead) do table.insert(out, d) end
for _, r in ipairs(rooms) do table.insert(out, r) end
return out
"#;

/// A session with both seats reserved and unclaimed (a room invitation).
const CREATE_PAIR: &str = r#"
local sid, t0, t1, ip0, ip1 = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local grace, key_ttl, max = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local now = now_ms()
if ip0 == ip1 then
  if not ip_has_room(ip0, max - 1) then return {'err', 'too_many_sessions', tostring(max)} end
elseif not (ip_has_room(ip0, max) and ip_has_room(ip1, max)) then
  return {'err', 'too_many_sessions', tostring(max)}
end
local a = int(now + grace)
redis.call('HSET', skey(sid), 'paired', '1',
  't0', t0, 'o0', '', 'a0', a, 'in0', 0, 'last0', 0, 'ack0', 0, 'b0', 0, 'ip0', ip0,
  't1', t1, 'o1', '', 'a1', a, 'in1', 0, 'last1', 0, 'ack1', 0, 'b1', 0, 'ip1', ip1)
ip_take(ip0, sid, 0, key_ttl)
ip_take(ip1, sid, 1, key_ttl)
redis.call('SET', P .. 'tok:' .. t0, sid .. '|0', 'PX', key_ttl)
redis.call('SET', P .. 'tok:' .. t1, sid .. '|1', 'PX', key_ttl)
set_deadline(sid, key_ttl)
touch(sid, key_ttl, now)
return {'ok'}
"#;

pub(super) struct RoomScripts {
    get: Script,
    put: Script,
    due: Script,
    create_pair: Script,
}

impl RoomScripts {
    pub(super) fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        RoomScripts {
            get: s(ROOM_GET),
            put: s(ROOM_PUT),
            due: s(ROOMS_DUE),
            create_pair: s(CREATE_PAIR),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

impl RedisPresence {
    pub(super) async fn do_create_pair(
        &self,
        tokens: [String; 2],
        ips: [IpKey; 2],
    ) -> Result<String, PresenceError> {
        let sid = super::random_id();
        let mut inv = self.rooms.create_pair.prepare_invoke();
        inv.arg(&sid)
            .arg(&tokens[0])
            .arg(&tokens[1])
            .arg(ips[0].to_string())
            .arg(ips[1].to_string())
            .arg(Self::ms(self.cfg.resume_grace))
            .arg(Self::ms(self.key_ttl))
            .arg(self.cfg.max_seats_per_ip);
        self.run(&mut inv).await?;
        Ok(sid)
    }

    pub(super) async fn do_room_get(
        &self,
        key: &RoomKey,
    ) -> Result<(Option<Room>, u64), PresenceError> {
        let (kind, v) = match key {
            RoomKey::Id(id) => ("id".to_owned(), id.clone()),
            RoomKey::Nameplate(n) => ("rnp:".to_owned(), n.to_string()),
            RoomKey::Token(t) => ("rtok:".to_owned(), t.clone()),
            RoomKey::Nearby(k) => ("near:".to_owned(), k.clone()),
        };
        let mut inv = self.rooms.get.prepare_invoke();
        inv.arg(kind).arg(v);
        let reply = self.run(&mut inv).await?;
        let now = reply
            .get(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| unavailable("room read without a clock"))?;
        let room = match reply.get(2).map(String::as_str) {
            None | Some("") => None,
            // A record this version cannot read (written by another version
            // during a rolling upgrade, say) is as good as absent here: no
            // request can act on it, and the sweep goes on to the next room.
            Some(json) => match serde_json::from_str(json) {
                Ok(room) => Some(room),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable room record ignored");
                    None
                }
            },
        };
        Ok((room, now))
    }

    pub(super) async fn do_room_put(&self, w: &RoomWrite<'_>) -> Result<RoomPut, PresenceError> {
        let mut inv = self.rooms.put.prepare_invoke();
        let blob = match w.room {
            Some(r) => serde_json::to_string(r).map_err(unavailable)?,
            None => String::new(),
        };
        inv.arg(w.id)
            .arg(w.expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(w.room.map(|r| r.version.to_string()).unwrap_or_default())
            .arg(blob)
            .arg(w.ttl_ms.max(1))
            .arg(w.deadline.map(|d| d.to_string()).unwrap_or_default())
            .arg(w.ops.len());
        for op in &w.ops {
            let (name, k, v) = match op {
                IndexOp::Claim(k, v) => ("claim", k, v.clone()),
                IndexOp::Set(k, v) => ("set", k, v.clone()),
                IndexOp::Del(k, v) => ("del", k, v.clone()),
                IndexOp::SAdd(k, v) => ("sadd", k, v.clone()),
                IndexOp::SRem(k, v) => ("srem", k, v.clone()),
                IndexOp::Limit(k, max) => ("limit", k, max.to_string()),
            };
            inv.arg(name).arg(k).arg(v);
        }
        for o in &w.notify {
            inv.arg(o);
        }
        let reply = self.run_raw(&mut inv).await?;
        match (
            reply.first().map(String::as_str),
            reply.get(1).map(String::as_str),
        ) {
            (Some("ok"), _) => Ok(RoomPut::Saved),
            (Some("err"), Some("conflict")) => Ok(RoomPut::Conflict),
            (Some("err"), Some("taken")) => Ok(RoomPut::Taken),
            (Some("err"), Some("limit")) => Ok(RoomPut::Limit),
            _ => Err(unavailable(format!(
                "unexpected room write reply {reply:?}"
            ))),
        }
    }

    pub(super) async fn do_rooms_due(
        &self,
        node: &str,
        max: usize,
    ) -> Result<RoomsDue, PresenceError> {
        let mut inv = self.rooms.due.prepare_invoke();
        inv.arg(node)
            .arg(Self::ms(super::NODE_TTL))
            .arg(max.max(1))
            .arg(Self::ms(super::NODE_HEARTBEAT));
        let reply = self.run(&mut inv).await?;
        let n: usize = reply.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        let dead_nodes: Vec<String> = reply.iter().skip(2).take(n).cloned().collect();
        let mut rooms: Vec<String> = Vec::new();
        for id in reply.iter().skip(2 + n) {
            if !rooms.contains(id) {
                rooms.push(id.clone());
            }
        }
        Ok(RoomsDue { rooms, dead_nodes })
    }

    pub(super) async fn do_rooms_of(&self, node: &str) -> Result<Vec<String>, PresenceError> {
        let mut conn = self.conn.clone();
        redis::cmd("SMEMBERS")
            .arg(format!("tallow:rns:{node}"))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}
