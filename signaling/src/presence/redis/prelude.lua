-- Shared prelude of every presence script. Rust prepends it to each script
-- body (presence/redis.rs). Key layout and TTLs: DEVOPS.md, "Redis presence".
--
-- Every script reads the clock with TIME so that all nodes share Redis's.
-- Replies are arrays: {'ok', ...} or {'err', code, detail}.

local P = 'tallow:'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as plain digits: Lua would print large numbers in exponent form.
local function int(x) return string.format('%d', x) end

local function skey(sid) return P .. 's:' .. sid end
local function mbkey(sid, seat) return P .. 'mb:' .. sid .. ':' .. seat end

local function owner_node(owner)
  return string.match(owner, '^(.*)|%d+$')
end

-- Tell the connection `owner` ("node|conn") about `event` in session `sid`.
local function notify(owner, sid, event)
  if owner and owner ~= '' then
    local node, conn = string.match(owner, '^(.*)|(%d+)$')
    if node then
      redis.call('PUBLISH', P .. 'ch:' .. node, conn .. '|' .. sid .. '|' .. event)
    end
  end
end

-- Refresh the TTL of everything a session owns.
local function touch(sid, key_ttl, now)
  local s = skey(sid)
  redis.call('PEXPIRE', s, key_ttl)
  redis.call('PEXPIRE', mbkey(sid, 0), key_ttl)
  redis.call('PEXPIRE', mbkey(sid, 1), key_ttl)
  for seat = 0, 1 do
    local t = redis.call('HGET', s, 't' .. seat)
    if t then redis.call('PEXPIRE', P .. 'tok:' .. t, key_ttl) end
  end
  redis.call('ZADD', P .. 'sl', now, sid)
  redis.call('PEXPIRE', P .. 'sl', key_ttl)
end

local function own(sid, seat, owner, key_ttl)
  local node = owner_node(owner)
  if node then
    local ns = P .. 'ns:' .. node
    redis.call('SADD', ns, sid .. '|' .. seat)
    redis.call('PEXPIRE', ns, key_ttl)
  end
end

local function disown(sid, seat, owner)
  local node = owner_node(owner or '')
  if node then redis.call('SREM', P .. 'ns:' .. node, sid .. '|' .. seat) end
end

-- Keep the session's next deadline (nameplate expiry or end of a resume
-- grace period) in the sweep index.
local function set_deadline(sid, key_ttl)
  local s = skey(sid)
  local dl = P .. 'dl'
  local next = nil
  if redis.call('HGET', s, 'paired') ~= '1' then
    next = tonumber(redis.call('HGET', s, 'npx'))
  end
  for seat = 0, 1 do
    local a = tonumber(redis.call('HGET', s, 'a' .. seat) or '')
    if a and (next == nil or a < next) then next = a end
  end
  if next then
    redis.call('ZADD', dl, next, sid)
    redis.call('PEXPIRE', dl, key_ttl)
  else
    redis.call('ZREM', dl, sid)
  end
end

local function release_nameplate(n)
  redis.call('DEL', P .. 'np:' .. n)
  redis.call('ZREM', P .. 'npz:' .. string.len(n), n)
end

-- Seats per client address: a set of 'sid|seat' per address key, each
-- seat stored with its address in the session hash ('ip0', 'ip1').
local function ipkey(ip) return P .. 'ip:' .. ip end

-- Whether `ip` may take one more seat. Members whose session is gone (its
-- keys expired with every node dead) are dropped here; the set never holds
-- more than `max` live members, so this is O(max).
local function ip_has_room(ip, max)
  local k = ipkey(ip)
  for _, m in ipairs(redis.call('SMEMBERS', k)) do
    local sid, seat = string.match(m, '^(.*)|(%d)$')
    if not sid or redis.call('HGET', skey(sid), 'ip' .. seat) ~= ip then
      redis.call('SREM', k, m)
    end
  end
  return redis.call('SCARD', k) < max
end

local function ip_take(ip, sid, seat, key_ttl)
  local k = ipkey(ip)
  redis.call('SADD', k, sid .. '|' .. seat)
  redis.call('PEXPIRE', k, key_ttl)
end

local function remove_session(sid)
  local s = skey(sid)
  local n = redis.call('HGET', s, 'np')
  if n then release_nameplate(n) end
  for seat = 0, 1 do
    local t = redis.call('HGET', s, 't' .. seat)
    if t then redis.call('DEL', P .. 'tok:' .. t) end
    disown(sid, seat, redis.call('HGET', s, 'o' .. seat))
    local ip = redis.call('HGET', s, 'ip' .. seat)
    if ip then redis.call('SREM', ipkey(ip), sid .. '|' .. seat) end
  end
  redis.call('DEL', s, mbkey(sid, 0), mbkey(sid, 1))
  redis.call('ZREM', P .. 'dl', sid)
  redis.call('ZREM', P .. 'sl', sid)
end

-- The seat's connection is gone: keep the seat for `grace` ms.
local function detach(sid, seat, owner, grace, key_ttl, now)
  local s = skey(sid)
  if redis.call('HGET', s, 'o' .. seat) ~= owner or owner == '' then return end
  redis.call('HSET', s, 'o' .. seat, '', 'a' .. seat, int(now + grace))
  disown(sid, seat, owner)
  set_deadline(sid, key_ttl)
  notify(redis.call('HGET', s, 'o' .. (1 - seat)), sid, 'away')
end

-- A connection gave up on a request under `token` (`Presence::abandon`).
-- Remembered for a key TTL, so that the request, if it reaches Redis only
-- now (sent on another connection before a stall), is refused.
local function gone_key(token, owner) return P .. 'gone:' .. token .. '|' .. owner end
local function abandoned(token, owner)
  return redis.call('EXISTS', gone_key(token, owner)) == 1
end

-- `owner` leaves `seat`. While a peer remains, the session stays so that
-- the peer can collect its mailbox; otherwise it goes.
local function leave_seat(sid, seat, owner, grace, key_ttl)
  local s = skey(sid)
  local peer = 1 - seat
  if redis.call('HEXISTS', s, 't' .. peer) == 1 and redis.call('HGET', s, 'l' .. peer) ~= '1' then
    local t = redis.call('HGET', s, 't' .. seat)
    if t then redis.call('DEL', P .. 'tok:' .. t) end
    disown(sid, seat, owner)
    redis.call('HSET', s, 'l' .. seat, '1', 'o' .. seat, '', 'a' .. seat, int(now_ms() + grace))
    set_deadline(sid, key_ttl)
    notify(redis.call('HGET', s, 'o' .. peer), sid, 'left:left')
  else
    remove_session(sid)
  end
end

-- Keep the seat-per-address sets of session `sid` alive as long as it is.
local function touch_ips(sid, key_ttl)
  local s = skey(sid)
  for seat = 0, 1 do
    local ip = redis.call('HGET', s, 'ip' .. seat)
    if ip then redis.call('PEXPIRE', ipkey(ip), key_ttl) end
  end
end

-- Check that `owner` holds `seat` of live session `sid`: a seat with no
-- connection is 'detached' (its holder may claim it back with its token),
-- one with another connection 'not_owner'.
local function check_owner(sid, seat, owner)
  local s = skey(sid)
  if redis.call('EXISTS', s) == 0 then return {'err', 'unknown_session'} end
  if redis.call('HGET', s, 'l' .. seat) == '1' then return {'err', 'unknown_session'} end
  local o = redis.call('HGET', s, 'o' .. seat)
  if not o then return {'err', 'unknown_session'} end
  if o == '' then return {'err', 'detached'} end
  if o ~= owner then return {'err', 'not_owner'} end
  return nil
end

-- Whether node `me` may judge other nodes dead now: it has beaten without a
-- gap for a whole node TTL (so every live node had the chance to beat since
-- the store came back), and its own last beat is fresh (a sweep that runs
-- before this node's first beat after a stall would otherwise read the
-- streak from before the stall).
local function may_judge(me, now, node_ttl, interval)
  local streak = tonumber(redis.call('HGET', P .. 'streaks', me) or '')
  local beat = tonumber(redis.call('HGET', P .. 'beats', me) or '')
  return streak and beat and now - streak >= node_ttl and now - beat <= 2 * interval
end
