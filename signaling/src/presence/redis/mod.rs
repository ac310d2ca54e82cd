//! The Redis presence store: several nodes share sessions, seats and
//! mailboxes through one Redis, and reach each other's connections through
//! pub/sub.
//!
//! Every operation is one Lua script (atomic on the server), built from the
//! shared prelude in `prelude.lua` and a body here. Notices are published by
//! the scripts themselves to `tallow:ch:<node>`, so a state change and its
//! notice cannot be separated. A lost notice (pub/sub is fire-and-forget) is
//! harmless: messages wait in Redis until fetched, connections fetch on
//! every heartbeat tick, and a node that resubscribes tells all its
//! connections to fetch.
//!
//! Key layout and TTLs are documented in DEVOPS.md ("Redis presence").

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use rand::RngExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio::sync::mpsc;

use super::{
    Counts, Created, Event, Joined, LeftReason, Notice, Owner, Presence, PresenceConfig,
    PresenceError, PushOutcome, RegistryError, Resumed, RoomKey, RoomPut, RoomWrite, RoomsDue,
    Seat, SeatStatus,
};
use crate::client_addr::IpKey;
use crate::mailbox::Envelope;
use crate::nameplate;
use crate::room::Room;

mod rooms;

const PRELUDE: &str = include_str!("prelude.lua");

/// Nameplate candidates drawn per digit length for one `create`.
const CANDIDATES: usize = 16;
/// How often a node proves it is alive, and how long that proof lasts.
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(1);
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// Seats and deadlines one sweep script handles, and scripts per sweep:
/// Redis is never blocked for long, and a flood of expiries is still worked
/// off within a tick or a few.
const SWEEP_BATCH: usize = 256;
const SWEEP_CALLS: usize = 64;
/// Sessions a heartbeat refreshes at least (more when a node holds so many
/// that a slice this size would not cover them within a quarter key TTL).
const REFRESH_MIN_BATCH: usize = 64;
/// Round-trip bound for every Redis command, so an outage turns into a
/// prompt `presence_unavailable` rather than a hung connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

const CREATE: &str = r#"
local sid, token, owner = ARGV[1], ARGV[2], ARGV[3]
local np_ttl, key_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local ip, max_seats = ARGV[6], tonumber(ARGV[7])
local now = now_ms()
if abandoned(token, owner) then return {'err', 'abandoned'} end
if not ip_has_room(ip, max_seats) then return {'err', 'too_many_sessions', tostring(max_seats)} end
local per = tonumber(ARGV[8])
for d = 1, 9 do
  local z = P .. 'npz:' .. d
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  local size = 9 * 10 ^ (d - 1)
  if redis.call('ZCARD', z) * 2 < size then
    for k = 1, per do
      local n = ARGV[8 + (d - 1) * per + k]
      if redis.call('EXISTS', P .. 'np:' .. n) == 0 then
        local expires = now + np_ttl
        redis.call('SET', P .. 'np:' .. n, sid, 'PX', np_ttl)
        redis.call('ZADD', z, expires, n)
        redis.call('PEXPIRE', z, key_ttl)
        redis.call('DEL', P .. 'npp:' .. n)
        redis.call('HSET', skey(sid), 'np', n, 'npx', int(expires), 't0', token, 'o0', owner,
          'in0', 0, 'last0', 0, 'ack0', 0, 'b0', 0, 'ip0', ip)
        ip_take(ip, sid, 0, key_ttl)
        redis.call('SET', P .. 'tok:' .. token, sid .. '|0', 'PX', key_ttl)
        own(sid, 0, owner, key_ttl)
        set_deadline(sid, key_ttl)
        touch(sid, key_ttl, now)
        return {'ok', n}
      end
    end
  end
end
return {'err', 'exhausted'}
"#;

const JOIN: &str = r#"
local n, token, owner = ARGV[1], ARGV[2], ARGV[3]
local np_ttl, key_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local ip, max_seats = ARGV[6], tonumber(ARGV[7])
local now = now_ms()
if abandoned(token, owner) then return {'err', 'abandoned'} end
local sid = redis.call('GET', P .. 'np:' .. n)
if not sid then
  local done = redis.call('GET', P .. 'npp:' .. n)
  if not done then return {'err', 'unknown_nameplate'} end
  -- A retry of a join that landed after the client gave up on it (a Redis
  -- stall): the seat is this connection's, with the token it was given.
  local s = skey(done)
  if redis.call('HGET', s, 'o1') == owner then
    return {'ok', done, (redis.call('HGET', s, 'o0') or '') ~= '' and '1' or '0',
      redis.call('HGET', s, 't1')}
  end
  return {'err', 'session_full'}
end
local s = skey(sid)
if redis.call('EXISTS', s) == 0 then return {'err', 'unknown_nameplate'} end
if redis.call('HGET', s, 'paired') == '1' then return {'err', 'session_full'} end
if tonumber(redis.call('HGET', s, 'npx')) <= now then return {'err', 'unknown_nameplate'} end
if not ip_has_room(ip, max_seats) then return {'err', 'too_many_sessions', tostring(max_seats)} end
redis.call('HSET', s, 'paired', '1', 't1', token, 'o1', owner, 'in1', 0, 'last1', 0, 'ack1', 0,
  'b1', 0, 'ip1', ip)
ip_take(ip, sid, 1, key_ttl)
redis.call('HDEL', s, 'np', 'npx')
release_nameplate(n)
redis.call('SET', P .. 'npp:' .. n, sid, 'PX', np_ttl)
redis.call('SET', P .. 'tok:' .. token, sid .. '|1', 'PX', key_ttl)
own(sid, 1, owner, key_ttl)
set_deadline(sid, key_ttl)
touch(sid, key_ttl, now)
local creator = redis.call('HGET', s, 'o0') or ''
notify(creator, sid, 'paired')
return {'ok', sid, creator ~= '' and '1' or '0', token}
"#;

const RESUME: &str = r#"
local token, owner, key_ttl, last_seq = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
if abandoned(token, owner) then return {'err', 'abandoned'} end
local v = redis.call('GET', P .. 'tok:' .. token)
if not v then return {'err', 'invalid_resume_token'} end
local sid, seat = string.match(v, '^(.*)|(%d)$')
seat = tonumber(seat)
local s = skey(sid)
if redis.call('EXISTS', s) == 0 then return {'err', 'invalid_resume_token'} end
local away = tonumber(redis.call('HGET', s, 'a' .. seat) or '')
if away and away <= now then return {'err', 'invalid_resume_token'} end
local last = tonumber(redis.call('HGET', s, 'last' .. seat) or '0')
if last_seq > last then return {'err', 'resume_beyond', tostring(last)} end
local old = redis.call('HGET', s, 'o' .. seat) or ''
local peer = redis.call('HGET', s, 'o' .. (1 - seat)) or ''
if old ~= '' and old ~= owner then
  notify(old, sid, 'superseded')
  disown(sid, seat, old)
end
redis.call('HSET', s, 'o' .. seat, owner)
redis.call('HDEL', s, 'a' .. seat)
own(sid, seat, owner, key_ttl)
set_deadline(sid, key_ttl)
touch(sid, key_ttl, now)
if old == '' then notify(peer, sid, 'back') end
local paired = redis.call('HGET', s, 'paired') == '1' and '1' or '0'
local present = peer ~= '' and '1' or '0'
local peer_left = redis.call('HGET', s, 'l' .. (1 - seat)) == '1' and '1' or '0'
return {'ok', sid, tostring(seat), paired, redis.call('HGET', s, 'in' .. seat), present, peer_left}
"#;

const PUSH: &str = r#"
local sid, seat, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local seq, body = tonumber(ARGV[4]), ARGV[5]
local key_ttl, cap, cap_bytes = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local bad = check_owner(sid, seat, owner)
if bad then return bad end
local s = skey(sid)
if redis.call('HGET', s, 'paired') ~= '1' then return {'err', 'not_paired'} end
local last_in = tonumber(redis.call('HGET', s, 'in' .. seat))
if redis.call('HGET', s, 'l' .. (1 - seat)) == '1' then return {'err', 'unknown_session'} end
if seq <= last_in then return {'dup'} end
if seq ~= last_in + 1 then return {'err', 'bad_sequence', tostring(last_in + 1)} end
local peer = 1 - seat
local mb = mbkey(sid, peer)
local held = redis.call('LLEN', mb)
if held >= cap then return {'err', 'mailbox_full', tostring(held)} end
local bytes = tonumber(redis.call('HGET', s, 'b' .. peer) or '0')
if bytes + string.len(body) > cap_bytes then return {'err', 'mailbox_full', tostring(held)} end
redis.call('RPUSH', mb, body)
redis.call('HINCRBY', s, 'b' .. peer, string.len(body))
redis.call('HINCRBY', s, 'last' .. peer, 1)
redis.call('HSET', s, 'in' .. seat, seq)
touch(sid, key_ttl, now_ms())
notify(redis.call('HGET', s, 'o' .. peer), sid, 'mail')
return {'ok'}
"#;

const STATUS: &str = r#"
local sid, seat, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local bad = check_owner(sid, seat, owner)
if bad then return bad end
local s = skey(sid)
if redis.call('HGET', s, 'l' .. (1 - seat)) == '1' then return {'err', 'unknown_session'} end
local paired = redis.call('HGET', s, 'paired') == '1' and '1' or '0'
local peer = redis.call('HGET', s, 'o' .. (1 - seat)) or ''
return {'ok', paired, peer ~= '' and '1' or '0'}
"#;

const FETCH: &str = r#"
local sid, seat, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local after, max = tonumber(ARGV[4]), tonumber(ARGV[5])
local bad = check_owner(sid, seat, owner)
if bad then return bad end
local acked = tonumber(redis.call('HGET', skey(sid), 'ack' .. seat))
local start = after - acked
if start < 0 then start = 0 end
local items = redis.call('LRANGE', mbkey(sid, seat), start, start + max - 1)
return {'ok', tostring(acked + start + 1), unpack(items)}
"#;

const ACK: &str = r#"
local sid, seat, owner, seq = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local bad = check_owner(sid, seat, owner)
if bad then return bad end
local s = skey(sid)
local acked = tonumber(redis.call('HGET', s, 'ack' .. seat))
local last = tonumber(redis.call('HGET', s, 'last' .. seat))
if seq > last then seq = last end
if seq > acked then
  local freed = 0
  for _, body in ipairs(redis.call('LRANGE', mbkey(sid, seat), 0, seq - acked - 1)) do
    freed = freed + string.len(body)
  end
  redis.call('HINCRBY', s, 'b' .. seat, -freed)
  redis.call('LTRIM', mbkey(sid, seat), seq - acked, -1)
  redis.call('HSET', s, 'ack' .. seat, seq)
end
return {'ok'}
"#;

const DETACH: &str = r#"
local sid, seat, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local grace, key_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', skey(sid)) == 1 then
  detach(sid, seat, owner, grace, key_ttl, now_ms())
end
return {'ok'}
"#;

const LEAVE: &str = r#"
local sid, seat, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local grace, key_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local bad = check_owner(sid, seat, owner)
if bad then return bad end
leave_seat(sid, seat, owner, grace, key_ttl)
return {'ok'}
"#;

const ABANDON: &str = r#"
local token, owner, leave = ARGV[1], ARGV[2], ARGV[3]
local grace, key_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('SET', gone_key(token, owner), '1', 'PX', key_ttl)
local v = redis.call('GET', P .. 'tok:' .. token)
if not v then return {'ok'} end
local sid, seat = string.match(v, '^(.*)|(%d)$')
seat = tonumber(seat)
if redis.call('HGET', skey(sid), 'o' .. seat) ~= owner then return {'ok'} end
if leave == '1' then
  leave_seat(sid, seat, owner, grace, key_ttl)
else
  detach(sid, seat, owner, grace, key_ttl, now_ms())
end
return {'ok'}
"#;

/// Expire nameplates and resume grace periods, and hand the seats of nodes
/// that stopped beating to the grace period as if they had detached. Two
/// rules keep a stall of Redis itself from looking like dead nodes: the
/// sweeping node never judges itself, and it judges others only once it
/// has itself beaten without a gap for a whole node TTL, so that every live
/// node has had the chance to beat since the store came back. Each call
/// handles at most `batch` seats and deadlines and says whether more wait.
const SWEEP: &str = r#"
local me, grace, key_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local node_ttl, batch = tonumber(ARGV[4]), tonumber(ARGV[5])
local interval = tonumber(ARGV[6])
local now = now_ms()
local budget = batch
local more = '0'
if may_judge(me, now, node_ttl, interval) then
  local beats = redis.call('HGETALL', P .. 'beats')
  for i = 1, #beats, 2 do
    local node, beat = beats[i], tonumber(beats[i + 1])
    if node ~= me and now - beat > node_ttl and budget > 0 then
      local ns = P .. 'ns:' .. node
      for _, m in ipairs(redis.call('SPOP', ns, budget)) do
        budget = budget - 1
        local sid, seat = string.match(m, '^(.*)|(%d)$')
        local owner = redis.call('HGET', skey(sid), 'o' .. seat)
        if owner and owner_node(owner) == node then
          detach(sid, tonumber(seat), owner, grace, key_ttl, now)
        end
      end
      -- A dead node's beat stays while rooms still list its members, so
      -- that the room sweep can tell them away too.
      if redis.call('SCARD', ns) == 0 and redis.call('EXISTS', P .. 'rns:' .. node) == 0 then
        redis.call('HDEL', P .. 'beats', node)
        redis.call('HDEL', P .. 'streaks', node)
      else
        more = '1'
      end
    end
  end
end
if budget <= 0 then return {'ok', '1'} end
local due = redis.call('ZRANGEBYSCORE', P .. 'dl', '-inf', now, 'LIMIT', 0, budget)
if #due == budget then more = '1' end
for _, sid in ipairs(due) do
  local s = skey(sid)
  if redis.call('EXISTS', s) == 0 then
    redis.call('ZREM', P .. 'dl', sid)
  elseif redis.call('HGET', s, 'paired') ~= '1'
      and tonumber(redis.call('HGET', s, 'npx')) <= now then
    notify(redis.call('HGET', s, 'o0'), sid, 'expired')
    remove_session(sid)
  else
    local gone = false
    for seat = 0, 1 do
      local a = tonumber(redis.call('HGET', s, 'a' .. seat) or '')
      if not gone and a and a <= now then
        -- A seat that left told its peer already, unless the peer was away.
        local reason = redis.call('HGET', s, 'l' .. seat) == '1' and 'left:left' or 'left:timeout'
        notify(redis.call('HGET', s, 'o' .. (1 - seat)), sid, reason)
        remove_session(sid)
        gone = true
      end
    end
    if not gone then set_deadline(sid, key_ttl) end
  end
end
redis.call('ZREMRANGEBYSCORE', P .. 'sl', '-inf', now - key_ttl)
return {'ok', more}
"#;

/// Prove this node alive, and refresh the TTLs of one slice of the sessions
/// its connections hold: a slice sized so that the whole set is covered a
/// few times per key TTL, whatever its size, instead of all of it at once.
/// Replies whether this node had been taken for dead (its beat was gone),
/// so that its connections re-assert their seats.
const HEARTBEAT: &str = r#"
local node, interval, key_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local min_batch, cursor = tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local beats, streaks = P .. 'beats', P .. 'streaks'
local prev = tonumber(redis.call('HGET', beats, node) or '')
if not prev or now - prev > 2 * interval then redis.call('HSET', streaks, node, now) end
redis.call('HSET', beats, node, now)
redis.call('PEXPIRE', beats, key_ttl)
redis.call('PEXPIRE', streaks, key_ttl)
local ns = P .. 'ns:' .. node
local next_cursor = '0'
redis.call('PEXPIRE', P .. 'rns:' .. node, key_ttl)
if redis.call('EXISTS', ns) == 1 then
  redis.call('PEXPIRE', ns, key_ttl)
  local card = redis.call('SCARD', ns)
  local batch = math.max(min_batch, math.ceil(card * interval * 4 / key_ttl))
  local r = redis.call('SSCAN', ns, cursor, 'COUNT', batch)
  next_cursor = r[1]
  for _, m in ipairs(r[2]) do
    local sid = string.match(m, '^(.*)|%d$')
    if redis.call('EXISTS', skey(sid)) == 1 then
      touch(sid, key_ttl, now)
      touch_ips(sid, key_ttl)
    end
  end
end
return {'ok', next_cursor, prev and '0' or '1'}
"#;

const COUNTS: &str = r#"
local now = now_ms()
local nameplates = 0
for d = 1, 9 do
  local z = P .. 'npz:' .. d
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  nameplates = nameplates + redis.call('ZCARD', z)
end
-- Every live room has a deadline (its expiry at the latest).
return {'ok', tostring(redis.call('ZCARD', P .. 'sl')), tostring(nameplates),
  tostring(redis.call('ZCARD', P .. 'rdl'))}
"#;

struct Scripts {
    create: Script,
    join: Script,
    resume: Script,
    push: Script,
    status: Script,
    fetch: Script,
    ack: Script,
    detach: Script,
    leave: Script,
    abandon: Script,
    sweep: Script,
    heartbeat: Script,
    counts: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            create: s(CREATE),
            join: s(JOIN),
            resume: s(RESUME),
            push: s(PUSH),
            status: s(STATUS),
            fetch: s(FETCH),
            ack: s(ACK),
            detach: s(DETACH),
            leave: s(LEAVE),
            abandon: s(ABANDON),
            sweep: s(SWEEP),
            heartbeat: s(HEARTBEAT),
            counts: s(COUNTS),
        }
    }
}

pub struct RedisPresence {
    client: Client,
    conn: ConnectionManager,
    scripts: Scripts,
    rooms: rooms::RoomScripts,
    cfg: PresenceConfig,
    /// TTL of every session key: long enough to outlive the nameplate and
    /// the resume grace even when no node refreshes it.
    key_ttl: Duration,
    /// SSCAN cursor over this node's seats for the TTL refresh.
    refresh_cursor: std::sync::Mutex<String>,
    beats: std::sync::atomic::AtomicU64,
    /// The last heartbeat failed: when one succeeds again, connections must
    /// check their seats.
    beat_failed: std::sync::atomic::AtomicBool,
    /// This node's notice channel, to tell its connections to resync.
    notices: std::sync::Mutex<Option<(Arc<str>, mpsc::UnboundedSender<Notice>)>>,
    /// Whether this node's notice subscription is up; without it the node
    /// cannot hear its peers and must not count as ready.
    subscribed: Arc<std::sync::atomic::AtomicBool>,
}

impl RedisPresence {
    /// Set up the store for `url` (`redis://`, `rediss://`, with password if
    /// any). No connection is made yet: the server starts, and reports not
    /// ready, while Redis is down.
    pub fn new(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        cfg: PresenceConfig,
    ) -> Result<Self, PresenceError> {
        // rediss:// runs on rustls; pick its crypto provider once per process
        // (an error only means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match ca_pem {
            Some(pem) => Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
            None => Client::open(url),
        }
        .map_err(|e| PresenceError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| PresenceError::Unavailable(e.to_string()))?;
        let key_ttl = cfg.nameplate_ttl.max(cfg.resume_grace) + Duration::from_secs(10);
        Ok(RedisPresence {
            client,
            conn,
            scripts: Scripts::new(),
            rooms: rooms::RoomScripts::new(),
            cfg,
            key_ttl,
            refresh_cursor: std::sync::Mutex::new("0".to_owned()),
            beats: std::sync::atomic::AtomicU64::new(0),
            beat_failed: std::sync::atomic::AtomicBool::new(false),
            notices: std::sync::Mutex::new(None),
            subscribed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Run a script; its reply as it came, refusals included.
    async fn run_raw(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
    ) -> Result<Vec<String>, PresenceError> {
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| PresenceError::Unavailable(e.to_string()))
    }

    async fn run(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
    ) -> Result<Vec<String>, PresenceError> {
        let reply = self.run_raw(inv).await?;
        match reply.first().map(String::as_str) {
            Some("ok") | Some("dup") => Ok(reply),
            Some("err") => Err(PresenceError::Rejected(rejection(&reply))),
            _ => Err(PresenceError::Unavailable(format!(
                "unexpected script reply {reply:?}"
            ))),
        }
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// Tell every connection of this node to check its seat against the
    /// store (after an outage, or after being taken for dead).
    fn resync(&self) {
        let guard = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((node, tx)) = guard.as_ref() {
            let _ = tx.send(Notice {
                to: Owner {
                    node: node.clone(),
                    conn: 0,
                },
                session: String::new(),
                event: Event::Resync,
            });
        }
    }
}

fn rejection(reply: &[String]) -> RegistryError {
    let detail = reply.get(2).and_then(|d| d.parse().ok()).unwrap_or(0);
    match reply.get(1).map(String::as_str) {
        Some("unknown_nameplate") => RegistryError::UnknownNameplate,
        Some("session_full") => RegistryError::SessionFull,
        Some("exhausted") => RegistryError::NameplatesExhausted,
        Some("invalid_resume_token") => RegistryError::InvalidResumeToken,
        Some("not_owner") => RegistryError::NotOwner,
        Some("detached") => RegistryError::Detached,
        Some("too_many_sessions") => RegistryError::TooManySessions(detail as usize),
        Some("resume_beyond") => RegistryError::ResumeBeyond { last: detail },
        // Only a request its own connection gave up on (and told the store
        // so) meets this; for a resume token it is as good as expired.
        Some("abandoned") => RegistryError::InvalidResumeToken,
        Some("not_paired") => RegistryError::NotPaired,
        Some("bad_sequence") => RegistryError::BadSequence { expected: detail },
        Some("mailbox_full") => RegistryError::MailboxFull(detail as usize),
        _ => RegistryError::UnknownSession,
    }
}

fn owner_str(o: &Owner) -> String {
    format!("{}|{}", o.node, o.conn)
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// `node|conn|sid|event` published by the scripts, back into a notice.
fn parse_notice(node: &Arc<str>, payload: &str) -> Option<Notice> {
    let mut it = payload.splitn(3, '|');
    let conn = it.next()?.parse().ok()?;
    let session = it.next()?.to_owned();
    let event = match it.next()? {
        "paired" => Event::Paired,
        "mail" => Event::Mail,
        "away" => Event::PeerAway,
        "back" => Event::PeerBack,
        "left:left" => Event::PeerLeft(LeftReason::Left),
        "left:timeout" => Event::PeerLeft(LeftReason::Timeout),
        "expired" => Event::NameplateExpired,
        "superseded" => Event::Superseded,
        "room" => Event::Room,
        _ => return None,
    };
    Some(Notice {
        to: Owner {
            node: node.clone(),
            conn,
        },
        session,
        event,
    })
}

/// Subscribe to this node's channel for as long as the receiver lives,
/// reconnecting with backoff; after every reconnect all local connections
/// are told to fetch what they may have missed.
async fn subscription(
    client: Client,
    node: Arc<str>,
    tx: mpsc::UnboundedSender<Notice>,
    up: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let channel = format!("tallow:ch:{node}");
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    while !tx.is_closed() {
        let attempt = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = match tokio::time::timeout(RESPONSE_TIMEOUT, attempt).await {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis subscription failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tracing::warn!("redis subscription timed out; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        up.store(true, Ordering::Relaxed);
        if !first {
            tracing::info!("redis subscription restored");
            let resync = Notice {
                to: Owner {
                    node: node.clone(),
                    conn: 0,
                },
                session: String::new(),
                event: Event::Resync,
            };
            if tx.send(resync).is_err() {
                return;
            }
        }
        first = false;
        let mut messages = ps.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            if let Some(n) = parse_notice(&node, &payload) {
                if tx.send(n).is_err() {
                    return;
                }
            }
        }
        up.store(false, Ordering::Relaxed);
        tracing::warn!("redis subscription lost; reconnecting");
    }
}

#[async_trait]
impl Presence for RedisPresence {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn durable(&self) -> bool {
        true
    }

    async fn create(
        &self,
        owner: &Owner,
        token: &str,
        ip: IpKey,
    ) -> Result<Created, PresenceError> {
        let session = random_id();
        let candidates: Vec<u32> = {
            let mut rng = rand::rng();
            (1..=nameplate::MAX_DIGITS)
                .flat_map(|digits| {
                    let (lo, hi) = nameplate::range(digits);
                    (0..CANDIDATES).map(move |_| (lo, hi))
                })
                .map(|(lo, hi)| rng.random_range(lo..=hi))
                .collect()
        };
        let mut inv = self.scripts.create.prepare_invoke();
        inv.arg(&session)
            .arg(token)
            .arg(owner_str(owner))
            .arg(Self::ms(self.cfg.nameplate_ttl))
            .arg(Self::ms(self.key_ttl))
            .arg(ip.to_string())
            .arg(self.cfg.max_seats_per_ip)
            .arg(CANDIDATES);
        for n in candidates {
            inv.arg(n);
        }
        let reply = self.run(&mut inv).await?;
        let n = reply
            .get(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| PresenceError::Unavailable("create: bad reply".into()))?;
        Ok(Created {
            session,
            nameplate: n,
        })
    }

    async fn join(
        &self,
        nameplate: u32,
        owner: &Owner,
        token: &str,
        ip: IpKey,
    ) -> Result<Joined, PresenceError> {
        let mut inv = self.scripts.join.prepare_invoke();
        inv.arg(nameplate)
            .arg(token)
            .arg(owner_str(owner))
            .arg(Self::ms(self.cfg.nameplate_ttl))
            .arg(Self::ms(self.key_ttl))
            .arg(ip.to_string())
            .arg(self.cfg.max_seats_per_ip);
        let reply = self.run(&mut inv).await?;
        Ok(Joined {
            session: reply.get(1).cloned().unwrap_or_default(),
            seat: 1,
            peer_present: reply.get(2).is_some_and(|v| v == "1"),
            token: reply.get(3).cloned().unwrap_or_else(|| token.to_owned()),
        })
    }

    async fn resume(
        &self,
        token: &str,
        owner: &Owner,
        last_seq: u64,
    ) -> Result<Resumed, PresenceError> {
        let mut inv = self.scripts.resume.prepare_invoke();
        inv.arg(token)
            .arg(owner_str(owner))
            .arg(Self::ms(self.key_ttl))
            .arg(last_seq);
        let r = self.run(&mut inv).await?;
        let field = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        Ok(Resumed {
            session: field(1).to_owned(),
            seat: field(2).parse().unwrap_or(0),
            paired: field(3) == "1",
            last_received: field(4).parse().unwrap_or(0),
            peer_present: field(5) == "1",
            peer_left: field(6) == "1",
        })
    }

    async fn push(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
        body: Arc<str>,
    ) -> Result<PushOutcome, PresenceError> {
        let mut inv = self.scripts.push.prepare_invoke();
        inv.arg(session)
            .arg(seat)
            .arg(owner_str(owner))
            .arg(seq)
            .arg(&*body)
            .arg(Self::ms(self.key_ttl))
            .arg(self.cfg.mailbox_cap)
            .arg(self.cfg.mailbox_bytes);
        let reply = self.run(&mut inv).await?;
        Ok(if reply[0] == "dup" {
            PushOutcome::Duplicate
        } else {
            PushOutcome::Stored
        })
    }

    async fn status(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
    ) -> Result<SeatStatus, PresenceError> {
        let mut inv = self.scripts.status.prepare_invoke();
        inv.arg(session).arg(seat).arg(owner_str(owner));
        let r = self.run(&mut inv).await?;
        Ok(SeatStatus {
            paired: r.get(1).is_some_and(|v| v == "1"),
            peer_present: r.get(2).is_some_and(|v| v == "1"),
        })
    }

    async fn fetch(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        after: u64,
        max: usize,
    ) -> Result<Vec<Envelope>, PresenceError> {
        let mut inv = self.scripts.fetch.prepare_invoke();
        inv.arg(session)
            .arg(seat)
            .arg(owner_str(owner))
            .arg(after)
            .arg(max);
        let mut reply = self.run(&mut inv).await?.into_iter().skip(1);
        let first: u64 = reply
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| PresenceError::Unavailable("fetch: bad reply".into()))?;
        Ok(reply
            .enumerate()
            .map(|(i, body)| Envelope {
                seq: first + i as u64,
                body: Arc::from(body),
            })
            .collect())
    }

    async fn ack(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
    ) -> Result<(), PresenceError> {
        let mut inv = self.scripts.ack.prepare_invoke();
        inv.arg(session).arg(seat).arg(owner_str(owner)).arg(seq);
        self.run(&mut inv).await.map(drop)
    }

    async fn detach(&self, session: &str, seat: Seat, owner: &Owner) -> Result<(), PresenceError> {
        let mut inv = self.scripts.detach.prepare_invoke();
        inv.arg(session)
            .arg(seat)
            .arg(owner_str(owner))
            .arg(Self::ms(self.cfg.resume_grace))
            .arg(Self::ms(self.key_ttl));
        self.run(&mut inv).await.map(drop)
    }

    async fn leave(&self, session: &str, seat: Seat, owner: &Owner) -> Result<(), PresenceError> {
        let mut inv = self.scripts.leave.prepare_invoke();
        inv.arg(session)
            .arg(seat)
            .arg(owner_str(owner))
            .arg(Self::ms(self.cfg.resume_grace))
            .arg(Self::ms(self.key_ttl));
        self.run(&mut inv).await.map(drop)
    }

    async fn abandon(&self, token: &str, owner: &Owner, leave: bool) -> Result<(), PresenceError> {
        let mut inv = self.scripts.abandon.prepare_invoke();
        inv.arg(token)
            .arg(owner_str(owner))
            .arg(if leave { "1" } else { "0" })
            .arg(Self::ms(self.cfg.resume_grace))
            .arg(Self::ms(self.key_ttl));
        self.run(&mut inv).await.map(drop)
    }

    async fn create_pair(
        &self,
        tokens: [String; 2],
        ips: [IpKey; 2],
    ) -> Result<String, PresenceError> {
        self.do_create_pair(tokens, ips).await
    }

    async fn room_get(&self, key: &RoomKey) -> Result<(Option<Room>, u64), PresenceError> {
        self.do_room_get(key).await
    }

    async fn room_put(&self, w: &RoomWrite<'_>) -> Result<RoomPut, PresenceError> {
        self.do_room_put(w).await
    }

    async fn rooms_due(&self, node: &str, max: usize) -> Result<RoomsDue, PresenceError> {
        self.do_rooms_due(node, max).await
    }

    async fn rooms_of(&self, node: &str) -> Result<Vec<String>, PresenceError> {
        self.do_rooms_of(node).await
    }

    fn subscribe(&self, node: &str) -> mpsc::UnboundedReceiver<Notice> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.notices.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::from(node), tx.clone()));
        tokio::spawn(subscription(
            self.client.clone(),
            Arc::from(node),
            tx,
            self.subscribed.clone(),
        ));
        rx
    }

    async fn heartbeat(&self, node: &str) -> Result<(), PresenceError> {
        use std::sync::atomic::Ordering;
        let cursor = self
            .refresh_cursor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.arg(node)
            .arg(Self::ms(NODE_HEARTBEAT))
            .arg(Self::ms(self.key_ttl))
            .arg(REFRESH_MIN_BATCH)
            .arg(&cursor);
        let reply = match self.run(&mut inv).await {
            Ok(r) => r,
            Err(e) => {
                self.beat_failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        if let Some(next) = reply.get(1) {
            *self
                .refresh_cursor
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = next.clone();
        }
        let first = self.beats.fetch_add(1, Ordering::Relaxed) == 0;
        let was_dead = reply.get(2).is_some_and(|v| v == "1") && !first;
        let was_failing = self.beat_failed.swap(false, Ordering::Relaxed);
        if was_dead || was_failing {
            tracing::info!(
                taken_for_dead = was_dead,
                "presence store reachable again; connections re-check their seats"
            );
            self.resync();
        }
        Ok(())
    }

    async fn sweep(&self, node: &str) -> Result<(), PresenceError> {
        for _ in 0..SWEEP_CALLS {
            let mut inv = self.scripts.sweep.prepare_invoke();
            inv.arg(node)
                .arg(Self::ms(self.cfg.resume_grace))
                .arg(Self::ms(self.key_ttl))
                .arg(Self::ms(NODE_TTL))
                .arg(SWEEP_BATCH)
                .arg(Self::ms(NODE_HEARTBEAT));
            let reply = self.run(&mut inv).await?;
            if reply.get(1).is_none_or(|m| m != "1") {
                break;
            }
            // Let other commands through between batches.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        if !self.subscribed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(PresenceError::Unavailable(
                "not subscribed to this node's notice channel".into(),
            ));
        }
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| PresenceError::Unavailable(e.to_string()))
    }

    async fn counts(&self) -> Result<Counts, PresenceError> {
        let r = self.run(&mut self.scripts.counts.prepare_invoke()).await?;
        Ok(Counts {
            sessions: r.get(1).and_then(|s| s.parse().ok()).unwrap_or(0),
            nameplates: r.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
            rooms: r.get(3).and_then(|s| s.parse().ok()).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_back() {
        let node: Arc<str> = Arc::from("n|1");
        let n = parse_notice(&node, "42|abc|left:timeout").unwrap();
        assert_eq!(n.to.conn, 42);
        assert_eq!(&*n.to.node, "n|1");
        assert_eq!(n.session, "abc");
        assert_eq!(n.event, Event::PeerLeft(LeftReason::Timeout));
        assert!(parse_notice(&node, "x|abc|mail").is_none());
        assert!(parse_notice(&node, "1|abc|teleport").is_none());
    }

    #[test]
    fn rejections_map_to_registry_errors() {
        let r = |v: &[&str]| rejection(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            r(&["err", "bad_sequence", "7"]),
            RegistryError::BadSequence { expected: 7 }
        );
        assert_eq!(
            r(&["err", "mailbox_full", "3"]),
            RegistryError::MailboxFull(3)
        );
        assert_eq!(r(&["err", "session_full"]), RegistryError::SessionFull);
    }
}
