"""The registry's Lua scripts. Each runs atomically in one round trip (EVALSHA).

Times come from the server's ``TIME`` so every registry replica agrees on the clock.
Scripts that touch keys they cannot know in advance (agent hashes of a skill's members,
index sets of an agent's skills) build the names from prefixes passed in ARGV: this works
on a standalone Redis/Valkey (or a single shard), not on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Iterable

from registry.limits import LEASE_CEILING_MS, MAX_CAPACITY, MAX_LOAD
from registry.records import AGENT_FIELDS, AgentState
from registry.redis_client import Script


def _lua_strings(values: Iterable[str]) -> str:
    """Python strings as a comma-separated list of Lua string literals."""
    return ", ".join(f"'{value}'" for value in values)


_PRELUDE = """
-- An integer in [low, high] given as a string; else (not a number, a fraction, inf, nan) the
-- script fails with an error reply naming `what` and the range.
local function checked_int(value, low, high, what)
  local n = tonumber(value)
  if n == nil or n ~= n or n < low or n > high or n ~= math.floor(n) then
    error({err = 'ERR ' .. what .. ' must be an integer in ' .. low .. '..' .. high})
  end
  return n
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function unindex(id, skills, tags, skill_prefix, tag_prefix)
  if skills then
    for _, s in ipairs(cjson.decode(skills)) do redis.call('SREM', skill_prefix .. s, id) end
  end
  if tags then
    for _, t in ipairs(cjson.decode(tags)) do redis.call('SREM', tag_prefix .. t, id) end
  end
end

local function remove_agent(agents, key, id, skill_prefix, tag_prefix)
  local v = redis.call('HMGET', key, 'skills', 'tags')
  unindex(id, v[1], v[2], skill_prefix, tag_prefix)
  redis.call('DEL', key)
  redis.call('SREM', agents, id)
end

-- Give back one lease on an agent; never below zero, never recreates a deleted agent.
-- One call in the common case; repairs the rare underflow (agent re-registered or gone).
local function give_back_one(key)
  if redis.call('HINCRBY', key, 'leased', -1) < 0 then
    if redis.call('HLEN', key) == 1 then redis.call('DEL', key)
    else redis.call('HSET', key, 'leased', 0) end
  end
end

-- The healthy member of a skill set with the most free capacity (ties: lowest id).
-- free: id -> free capacity cache (tentative picks already subtracted); skip: id or nil.
local function pick(members, agent_prefix, now, healthy_ms, ttl_ms, free, skip)
  local best, best_free = nil, 0
  for _, id in ipairs(members) do
    if id ~= skip then
      local f = free[id]
      if f == nil then
        local v = redis.call('HMGET', agent_prefix .. id, 'last_seen', 'capacity', 'leased')
        if v[1] and v[2] and state_of(now - tonumber(v[1]), healthy_ms, ttl_ms) == HEALTHY then
          f = tonumber(v[2]) - (tonumber(v[3]) or 0)
        else
          f = 0
        end
        free[id] = f
      end
      if f > 0 and (best == nil or f > best_free or (f == best_free and id < best)) then
        best, best_free = id, f
      end
    end
  end
  return best, best_free
end

local function log_event(events, maxlen, seq, now, kind, payload)
  return redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'seq', seq, 'ts', now,
    'from', 'registry', 'to', '*', 'kind', kind, 'payload', payload)
end

-- Close an active session: give back its leases exactly once, keep it for retention_ms.
-- Returns -1 when the session does not exist, 0 when it was already closed, 1 when closed.
local function close_session(c, sid, final, now)
  local skey = c.session_prefix .. sid
  local ekey = skey .. c.events_suffix
  local v = redis.call('HMGET', skey, 'state', 'bindings')
  if not v[1] then return -1 end
  if v[1] ~= 'active' then return 0 end
  for _, id in pairs(cjson.decode(v[2])) do give_back_one(c.agent_prefix .. id) end
  local seq = redis.call('HINCRBY', skey, 'seq', 1)
  redis.call('HSET', skey, 'state', final, 'ended', now)
  log_event(ekey, c.events_maxlen, seq, now, 'session.' .. final, cjson.encode({state = final}))
  redis.call('ZREM', c.sessions, sid)
  redis.call('ZADD', c.closed, now, sid)
  redis.call('PEXPIRE', skey, c.retention_ms)
  redis.call('PEXPIRE', ekey, c.retention_ms)
  redis.call('XADD', c.changes, 'MAXLEN', '~', c.changes_maxlen, '*',
    'kind', 'session.' .. final, 'session_id', sid)
  return 1
end
"""


_LIMITS = f"""
local MAX_CAPACITY, MAX_LOAD, MAX_LEASE_MS = {MAX_CAPACITY}, {MAX_LOAD}, {LEASE_CEILING_MS}
"""

#: The one place the healthy/suspect/offline rule is computed (docs/registry.md, "Agent
#: states"): every script that needs a state or the healthy test calls ``state_of``, and
#: Python takes states from the scripts' replies. The names are :class:`AgentState`'s.
_STATE_RULE = f"""
local HEALTHY, SUSPECT, OFFLINE = {_lua_strings(AgentState)}

-- An instance's state from its heartbeat age (ms), the healthy window and the TTL (ms).
local function state_of(age, healthy_ms, ttl_ms)
  if age < healthy_ms then return HEALTHY end
  if age < ttl_ms then return SUSPECT end
  return OFFLINE
end
"""

#: The fields SELECT reads of an agent hash, in :data:`AGENT_FIELDS` order.
_AGENT_FIELDS = f"""
local AGENT_FIELDS = {{{_lua_strings(AGENT_FIELDS)}}}
local LAST_SEEN = {AGENT_FIELDS.index("last_seen") + 1}
"""


def _script(name: str, body: str) -> Script:
    return Script(name, _LIMITS + _STATE_RULE + _AGENT_FIELDS + _PRELUDE + body)


#: KEYS: agent hash, agents set, changes.
#: ARGV: id, card, name, url, capacity, skills (JSON), tags (JSON), skill prefix,
#: tag prefix, changes maxlen, binding, heartbeat TTL ms, healthy ms.
#: Returns {1, now, leased, registered_at}, or {-1, binding} when the id is bound to
#: another binding (card URL) whose record is not offline (nothing changed).
#: A capacity outside 1..MAX_CAPACITY is an error.
REGISTER = _script(
    "register",
    """
local key, id = KEYS[1], ARGV[1]
checked_int(ARGV[5], 1, MAX_CAPACITY, 'capacity')
local now = now_ms()
local old = redis.call('HMGET', key, 'skills', 'tags', 'binding', 'url', 'last_seen')
local bound = old[3] or old[4]
if bound and bound ~= ARGV[11] then
  if old[5] and state_of(now - tonumber(old[5]), tonumber(ARGV[13]), tonumber(ARGV[12]))
      ~= OFFLINE then
    return {-1, bound}
  end
  redis.call('HSET', key, 'registered_at', now)  -- taken over from an offline instance
end
unindex(id, old[1], old[2], ARGV[8], ARGV[9])
redis.call('HSET', key, 'id', id, 'card', ARGV[2], 'name', ARGV[3], 'url', ARGV[4],
  'capacity', ARGV[5], 'skills', ARGV[6], 'tags', ARGV[7], 'load', 0, 'state', HEALTHY,
  'last_seen', now, 'binding', ARGV[11])
redis.call('HSETNX', key, 'leased', 0)
redis.call('HSETNX', key, 'registered_at', now)
redis.call('SADD', KEYS[2], id)
for _, s in ipairs(cjson.decode(ARGV[6])) do redis.call('SADD', ARGV[8] .. s, id) end
for _, t in ipairs(cjson.decode(ARGV[7])) do redis.call('SADD', ARGV[9] .. t, id) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*',
  'kind', 'registered', 'instance_id', id, 'url', ARGV[4])
local v = redis.call('HMGET', key, 'leased', 'registered_at')
return {1, now, tonumber(v[1]), tonumber(v[2])}
""",
)

#: KEYS: agent hash, changes.  ARGV: id, load, changes maxlen.  Returns 1, or 0 if unknown.
#: A load outside 0..MAX_LOAD is an error.
HEARTBEAT = _script(
    "heartbeat",
    """
checked_int(ARGV[2], 0, MAX_LOAD, 'load')
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 0 end
redis.call('HSET', KEYS[1], 'last_seen', now_ms(), 'load', ARGV[2])
if st ~= HEALTHY then
  redis.call('HSET', KEYS[1], 'state', HEALTHY)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
    'kind', 'state', 'instance_id', ARGV[1], 'old', st, 'new', HEALTHY)
end
return 1
""",
)

#: KEYS: agent hash, agents set, changes.
#: ARGV: id, skill prefix, tag prefix, changes maxlen.  Returns 1, or 0 if unknown.
DEREGISTER = _script(
    "deregister",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
remove_agent(KEYS[2], KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
  'kind', 'deregistered', 'instance_id', ARGV[1], 'reason', 'deregistered')
return 1
""",
)

#: KEYS: one set of ids, or two to intersect, or none: then ARGV[5...] are the ids.
#: ARGV: agent prefix, healthy ms, TTL ms, '1' for healthy instances only ('' for all).
#: Returns {now, id, state, <AGENT_FIELDS>..., id, state, ...}; unknown ids are left out.
SELECT = _script(
    "select",
    """
local ids
if #KEYS == 2 then ids = redis.call('SINTER', KEYS[1], KEYS[2])
elseif #KEYS == 1 then ids = redis.call('SMEMBERS', KEYS[1])
else ids = {unpack(ARGV, 5)} end
local now = now_ms()
local healthy, ttl, healthy_only = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local out = {now}
for _, id in ipairs(ids) do
  local v = redis.call('HMGET', ARGV[1] .. id, unpack(AGENT_FIELDS))
  if v[LAST_SEEN] then
    local st = state_of(now - tonumber(v[LAST_SEEN]), healthy, ttl)
    if st == HEALTHY or not healthy_only then
      local n = #out
      out[n + 1], out[n + 2] = id, st
      for i = 1, #AGENT_FIELDS do out[n + 2 + i] = v[i] end
    end
  end
end
return out
""",
)

#: KEYS: agents set, changes.
#: ARGV: agent prefix, skill prefix, tag prefix, healthy ms, ttl ms, purge age ms, maxlen.
#: Returns {{id, old, new, ...}, {removed id, ...}}.
SWEEP = _script(
    "sweep",
    """
local now = now_ms()
local healthy, ttl, purge = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local moved, removed = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  local v = redis.call('HMGET', key, 'last_seen', 'state')
  if not v[1] then
    redis.call('SREM', KEYS[1], id)
  else
    local age = now - tonumber(v[1])
    if age >= purge then
      remove_agent(KEYS[1], key, id, ARGV[2], ARGV[3])
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
        'kind', 'deregistered', 'instance_id', id, 'reason', 'offline')
      removed[#removed + 1] = id
    else
      local st = state_of(age, healthy, ttl)
      local old = v[2] or ''
      if st ~= old then
        redis.call('HSET', key, 'state', st)
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
          'kind', 'state', 'instance_id', id, 'old', old, 'new', st)
        moved[#moved + 1] = id
        moved[#moved + 1] = old
        moved[#moved + 1] = st
      end
    end
  end
end
return {moved, removed}
""",
)

#: KEYS: session hash, sessions zset, changes, session events, skill set per role...
#: ARGV: agent prefix, healthy ms, lease ms, session id, trace id, roles (JSON),
#: changes maxlen, events maxlen, TTL ms, role name per role...
#: Returns {1, created, expires, bindings JSON}, {0, failing role index} or {-1} (id taken).
#: A lease outside 1..MAX_LEASE_MS is an error.
NEGOTIATE = _script(
    "negotiate",
    """
local lease = checked_int(ARGV[3], 1, MAX_LEASE_MS, 'lease (ms)')
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local now = now_ms()
local healthy, ttl = tonumber(ARGV[2]), tonumber(ARGV[9])
local nroles = #KEYS - 4
local free, picks = {}, {}
for i = 1, nroles do
  local best, best_free = pick(redis.call('SMEMBERS', KEYS[4 + i]), ARGV[1], now, healthy,
    ttl, free, nil)
  if not best then return {0, i} end
  free[best] = best_free - 1
  picks[i] = best
end
local bindings = {}
for i = 1, nroles do
  redis.call('HINCRBY', ARGV[1] .. picks[i], 'leased', 1)
  bindings[ARGV[9 + i]] = picks[i]
end
local bj = cjson.encode(bindings)
local expires = now + lease
redis.call('HSET', KEYS[1], 'id', ARGV[4], 'roles', ARGV[6], 'bindings', bj,
  'created', now, 'expires', expires, 'trace_id', ARGV[5], 'state', 'active', 'seq', 1)
redis.call('ZADD', KEYS[2], expires, ARGV[4])
log_event(KEYS[4], ARGV[8], 1, now, 'session.opened',
  '{"roles":' .. ARGV[6] .. ',"bindings":' .. bj .. '}')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*',
  'kind', 'session.opened', 'session_id', ARGV[4], 'bindings', bj)
return {1, now, expires, bj}
""",
)

#: KEYS: session hash, changes, session events.
#: ARGV: agent prefix, skill prefix, healthy ms, role, session id, changes maxlen,
#: events maxlen, TTL ms.  Returns {1, HGETALL}, {0, skill} (no capacity), {-1} (unknown session),
#: {-2, state} (closed), {-3} (unknown role).
REBIND = _script(
    "rebind",
    """
local v = redis.call('HMGET', KEYS[1], 'state', 'roles', 'bindings')
if not v[1] then return {-1} end
if v[1] ~= 'active' then return {-2, v[1]} end
local role = ARGV[4]
local skill = cjson.decode(v[2])[role]
if not skill then return {-3} end
local bindings = cjson.decode(v[3])
local old = bindings[role]
local now = now_ms()
local best = pick(redis.call('SMEMBERS', ARGV[2] .. skill), ARGV[1], now, tonumber(ARGV[3]),
  tonumber(ARGV[8]), {}, old)
if not best then return {0, skill} end
if old then give_back_one(ARGV[1] .. old) end
redis.call('HINCRBY', ARGV[1] .. best, 'leased', 1)
bindings[role] = best
redis.call('HSET', KEYS[1], 'bindings', cjson.encode(bindings))
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
log_event(KEYS[3], ARGV[7], seq, now, 'session.rebound',
  cjson.encode({role = role, old = old or cjson.null, new = best}))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'kind', 'session.rebound',
  'session_id', ARGV[5], 'role', role, 'old', old or '', 'new', best)
return {1, redis.call('HGETALL', KEYS[1])}
""",
)

#: KEYS: session hash, sessions zset.  ARGV: lease ms, session id.
#: Returns {1, HGETALL}, {-1} (unknown) or {-2, state} (closed).
#: A lease outside 1..MAX_LEASE_MS is an error.
RENEW = _script(
    "renew",
    """
local lease = checked_int(ARGV[1], 1, MAX_LEASE_MS, 'lease (ms)')
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {-1} end
if st ~= 'active' then return {-2, st} end
local expires = now_ms() + lease
redis.call('HSET', KEYS[1], 'expires', expires)
redis.call('ZADD', KEYS[2], expires, ARGV[2])
return {1, redis.call('HGETALL', KEYS[1])}
""",
)


def _close_context(first_arg: int) -> str:
    names = (
        "agent_prefix",
        "session_prefix",
        "events_suffix",
        "retention_ms",
        "changes_maxlen",
        "events_maxlen",
    )
    fields = ", ".join(f"{n} = ARGV[{first_arg + i}]" for i, n in enumerate(names))
    return (
        f"local c = {{{fields}, sessions = KEYS[1], closed = KEYS[2], changes = KEYS[3]}}\n"
        "c.retention_ms = tonumber(c.retention_ms)\n"
    )


#: KEYS: sessions zset, closed zset, changes.
#: ARGV: session id, agent prefix, session prefix, events suffix, retention ms,
#: changes maxlen, events maxlen.  Returns -1 (unknown), 0 (already closed) or 1.
RELEASE = _script(
    "release",
    _close_context(2) + "return close_session(c, ARGV[1], 'released', now_ms())\n",
)

#: KEYS: sessions zset, closed zset, changes.
#: ARGV: due time ms ('' = now), batch size, agent prefix, session prefix, events suffix,
#: retention ms, changes maxlen, events maxlen.  Returns the ids it expired.
EXPIRE_DUE = _script(
    "expire_due",
    _close_context(3)
    + """
local now = now_ms()
local due_at = now
if ARGV[1] ~= '' then due_at = tonumber(ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - c.retention_ms)
local out = {}
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', due_at, 'LIMIT', 0,
    tonumber(ARGV[2]))) do
  if close_session(c, sid, 'expired', now) == 1 then out[#out + 1] = sid end
  redis.call('ZREM', KEYS[1], sid)
end
return out
""",
)

#: KEYS: session hash, session events.
#: ARGV: events maxlen, from, to, kind, task id, payload, summary, truncated ('' = absent).
#: Returns {stream id, seq, ts}, or nil when the session does not exist.
APPEND = _script(
    "append",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local now = now_ms()
local f = {'seq', seq, 'ts', now, 'from', ARGV[2], 'to', ARGV[3], 'kind', ARGV[4]}
local optional = {'task_id', 'payload', 'summary', 'truncated'}
for i, name in ipairs(optional) do
  local value = ARGV[4 + i]
  if value ~= '' then
    f[#f + 1] = name
    f[#f + 1] = value
  end
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(f))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {id, seq, now}
""",
)
