"""The Lua scripts that make store writes atomic on the server.

Every script gets the key prefix as ``ARGV[1]`` and an idempotency token as ``ARGV[2]`` (empty
for none). A script called with a token saves its answer under ``<prefix>tok:<token>`` for
``TOKEN_TTL`` seconds and, called again with the same token (a retry after a lost reply), returns
that answer without doing anything: so a claim or a conditional update retried after a dropped
connection is never applied twice and never lost.

Keys (``P`` is the prefix): ``P u:<id>`` a unit hash (``seq`` plus its fields), ``P p:<id>`` a
pilot hash, ``P s:<id>`` a service (JSON), ``P l:<parent>`` links (sorted set), ``P changes``
the count of writes that changed something, also published on channel ``P changes`` by every
such write (``pilot_redis.changes``: what ``wait_for_change`` blocks on). Unit indexes,
sorted sets of unit ids scored by ``seq`` (submission order), kept by ``reindex``: ``all``,
``cu:<cds>``, ``ca:<cds>`` (active), ``cf:<cds>`` (unbound and queued: the service's queue),
``cc:<cds>`` (the constrained part of ``cf:``: units with an affinity label or ``input_data``,
usually few; plain units never touch it), ``pu:<pilot>``, ``pa:<pilot>`` (active), ``pm:<pilot>``
(active and needing more than one slot), ``pq:<pilot>`` (claimable: Pending, unclaimed). Each
unit change costs one ``redis.call`` per index it enters or leaves, so there are only the indexes
the core's queries need (it always filters by service or pilot); a query without either scans
``all``.

A claim takes the pilot's ``pq:`` first, then walks the ``cf:`` queue of each of its services
from the oldest unit, skipping the constrained ones (read from ``cc:`` for the stretch walked,
one command per chunk), units still New and units too big for the agent; the walk looks at no
more than ``CLAIM_SCAN`` queue entries per service, so its cost stays bounded however long the
queue is.

The state sets of the prelude (``ACTIVE``, ``QUEUED``, ``CLAIMABLE``) are generated from
``pilot.states``, like every other state set of the code.
"""

from __future__ import annotations

from pilot.states import ACTIVE_UNIT_STATES, CLAIMABLE_STATE, QUEUED_UNIT_STATES, lua_set

TOKEN_TTL = 120
#: Most entries of one service's queue a claim looks at (beyond them, it takes nothing more).
CLAIM_SCAN = 4096

_STATES = "\n".join((lua_set("ACTIVE", ACTIVE_UNIT_STATES), lua_set("QUEUED", QUEUED_UNIT_STATES),
                      f"local CLAIMABLE = '{CLAIMABLE_STATE.value}'"))

_PRELUDE = """
local P = ARGV[1]
local TOK = ARGV[2]
STATES
local function has(x) return x and x ~= '' and x ~= '[]' end
-- a unit's index-relevant fields: cds, pilot, state, claimed, seq, slots, constrained (bool)
local function snap(key)
  local v = redis.call('HMGET', key, 'cds_id', 'pilot_id', 'state', 'claimed', 'seq', 'slots',
                       'datacenter', 'machine', 'input_data')
  local c = (has(v[7]) or has(v[8]) or has(v[9])) and true or false
  return {v[1], v[2], v[3], v[4], v[5], v[6], c}
end
local function sets(v)
  local cds, pilot, state, claimed = v[1], v[2], v[3], v[4]
  local s = {[P .. 'all'] = true}
  local active = state and ACTIVE[state]
  if cds then
    s[P .. 'cu:' .. cds] = true
    if active then s[P .. 'ca:' .. cds] = true end
  end
  if pilot then
    s[P .. 'pu:' .. pilot] = true
    if active then
      s[P .. 'pa:' .. pilot] = true
      if (tonumber(v[6]) or 1) > 1 then s[P .. 'pm:' .. pilot] = true end
    end
    if state == CLAIMABLE and claimed ~= '1' then s[P .. 'pq:' .. pilot] = true end
  elseif state and QUEUED[state] and cds then
    s[P .. 'cf:' .. cds] = true
    if v[7] then s[P .. 'cc:' .. cds] = true end
  end
  return s
end
-- index changes are collected per key (the last change of a member wins) and written by
-- flush_index() in one ZREM and one ZADD per key, not one command per unit and index
local OPS = {}
local function index_op(k, id, score)
  local t = OPS[k]
  if not t then t = {}; OPS[k] = t end
  t[id] = score
end
local function reindex(id, old, new)
  local a, b = sets(old), sets(new)
  for k in pairs(a) do if not b[k] then index_op(k, id, false) end end
  for k in pairs(b) do if not a[k] then index_op(k, id, new[5]) end end
end
local function flush_index()
  for k, t in pairs(OPS) do
    local add, rem = {}, {}
    for id, score in pairs(t) do
      if score then add[#add + 1] = score; add[#add + 1] = id else rem[#rem + 1] = id end
    end
    for i = 1, #rem, 1000 do redis.call('ZREM', k, unpack(rem, i, math.min(i + 999, #rem))) end
    for i = 1, #add, 2000 do redis.call('ZADD', k, unpack(add, i, math.min(i + 1999, #add))) end
  end
  OPS = {}
end
local function cached()
  if TOK == '' then return nil end
  local t = P .. 'tok:' .. TOK
  if redis.call('EXISTS', t) == 1 then return redis.call('LRANGE', t, 1, -1) end
  return nil
end
local function remember(result)
  if TOK == '' then return result end
  local t = P .. 'tok:' .. TOK
  redis.call('RPUSH', t, '#')
  for i = 1, #result, 1000 do
    redis.call('RPUSH', t, unpack(result, i, math.min(i + 999, #result)))
  end
  redis.call('EXPIRE', t, TOKEN_TTL)
  return result
end
-- a change of units, pilots, services or links: count it in ``P changes`` and publish the count
-- on channel ``P changes``, so that ``wait_for_change`` wakes (pilot_redis.changes)
local function changed()
  redis.call('PUBLISH', P .. 'changes', redis.call('INCR', P .. 'changes'))
end
local function expected(i)
  -- reads '<n>, s1..sn' at ARGV[i] (n = -1: any state); returns the set (or nil) and the next index
  local n = tonumber(ARGV[i])
  if n < 0 then return nil, i + 1 end
  local e = {}
  for j = 1, n do e[ARGV[i + j]] = true end
  return e, i + 1 + n
end
""".replace("TOKEN_TTL", str(TOKEN_TTL)).replace("STATES", _STATES)

#: ARGV: P, '', then a JSON array of ``[id, [field1, value1, ...]]`` (all strings; one argument,
#: decoded by cjson, so the client packs one string instead of a dozen per unit). Existing ids are
#: skipped, so a retried insert is harmless. Returns the count.
INSERT_UNITS = _PRELUDE + """
local units = cjson.decode(ARGV[3])
local count = #units
local seq = redis.call('INCRBY', P .. 'seq', count) - count
for _, unit in ipairs(units) do
  local id, pairs_ = unit[1], unit[2]
  local key = P .. 'u:' .. id
  seq = seq + 1
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'seq', seq, unpack(pairs_))
    local f = {}
    for j = 1, #pairs_, 2 do f[pairs_[j]] = pairs_[j + 1] end
    local c = (has(f.datacenter) or has(f.machine) or has(f.input_data)) and true or false
    for k in pairs(sets({f.cds_id, f.pilot_id, f.state, f.claimed, seq, f.slots, c})) do index_op(k, id, seq) end
  end
end
flush_index()
changed()
return count
"""

#: ARGV: P, token, count, then per update: id, pilot condition ('' none), expect (see
#: ``expected``), n, field/value pairs, m, fields to delete. Returns ``id, state before`` pairs,
#: flat, for the units where an update applied (a unit named twice: its first applied update).
UPDATE_UNITS = _PRELUDE + """
local c = cached()
if c then return c end
local out = {}
local seen = {}
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local id, cond = ARGV[i], ARGV[i + 1]
  local expect
  expect, i = expected(i + 2)
  local ns = tonumber(ARGV[i])
  local sbeg = i + 1
  i = i + 1 + 2 * ns
  local nd = tonumber(ARGV[i])
  local dbeg = i + 1
  i = i + 1 + nd
  local key = P .. 'u:' .. id
  local old = snap(key)
  if old[5] and (not expect or (old[3] and expect[old[3]])) and (cond == '' or old[2] == cond) then
    if ns > 0 then redis.call('HSET', key, unpack(ARGV, sbeg, sbeg + 2 * ns - 1)) end
    if nd > 0 then redis.call('HDEL', key, unpack(ARGV, dbeg, dbeg + nd - 1)) end
    reindex(id, old, snap(key))
    if not seen[id] then
      seen[id] = true
      out[#out + 1] = id
      out[#out + 1] = old[3] or ''
    end
  end
end
flush_index()
if #out > 0 then changed() end
return remember(out)
"""

#: ARGV: P, token, then unit id, pilot id pairs. Binds unbound queued units; returns those bound.
BIND_UNITS = _PRELUDE + """
local c = cached()
if c then return c end
local out = {}
for i = 3, #ARGV, 2 do
  local id, pilot = ARGV[i], ARGV[i + 1]
  local key = P .. 'u:' .. id
  local old = snap(key)
  if old[5] and not old[2] and old[3] and QUEUED[old[3]] then
    redis.call('HSET', key, 'pilot_id', pilot)
    reindex(id, old, {old[1], pilot, old[3], old[4], old[5], old[6], old[7]})
    out[#out + 1] = id
  end
end
flush_index()
if #out > 0 then changed() end
return remember(out)
"""

#: ARGV: P, token, pilot id, then unit ids ('*' alone: every unit of the pilot). Hands the
#: pilot's queued service units (among those ids) back: unbound, unclaimed. Returns their ids.
UNBIND_UNITS = _PRELUDE + """
local c = cached()
if c then return c end
local pilot = ARGV[3]
local ids
if ARGV[4] == '*' then ids = redis.call('ZRANGE', P .. 'pa:' .. pilot, 0, -1)
else ids = {unpack(ARGV, 4)} end
local out = {}
for _, id in ipairs(ids) do
  local key = P .. 'u:' .. id
  local old = snap(key)
  if old[1] and old[2] == pilot and old[3] and QUEUED[old[3]] then
    redis.call('HDEL', key, 'pilot_id')
    redis.call('HSET', key, 'claimed', '0')
    reindex(id, old, {old[1], false, old[3], '0', old[5], old[6], old[7]})
    out[#out + 1] = id
  end
end
flush_index()
if #out > 0 then changed() end
return remember(out)
"""

#: ARGV: P, token, pilot id, limit, most slots (-1: any), scan limit, service ids. Claims the
#: pilot's oldest claimable units, then (up to ``limit`` in all) the oldest plain Pending units
#: of the services' queues, binding them to the pilot. Returns one HGETALL per claimed unit,
#: oldest first; a retry with the same token gets their ids instead.
CLAIM_UNITS = _PRELUDE + """
local c = cached()
if c then return c end
local pilot, limit = ARGV[3], tonumber(ARGV[4])
local most, scan = tonumber(ARGV[5]), tonumber(ARGV[6])
local q = P .. 'pq:' .. pilot
local picked = {}
local mine = redis.call('ZRANGE', q, 0, limit - 1, 'WITHSCORES')
for i = 1, #mine, 2 do picked[#picked + 1] = {tonumber(mine[i + 1]), mine[i]} end
for i = 1, #mine, 2000 do
  local ids = {}
  for j = i, math.min(i + 1999, #mine), 2 do
    ids[#ids + 1] = mine[j]
    redis.call('HSET', P .. 'u:' .. mine[j], 'claimed', '1')
  end
  redis.call('ZREM', q, unpack(ids))
end
local left = limit - #picked
local found = {}
for s = 7, #ARGV do
  if left <= 0 then break end
  local cf, cc = P .. 'cf:' .. ARGV[s], P .. 'cc:' .. ARGV[s]
  local got, start, chunk = 0, 0, math.min(left + 16, scan)
  while got < left and start < scan do
    local ids = redis.call('ZRANGE', cf, start, start + chunk - 1, 'WITHSCORES')
    if #ids == 0 then break end
    local skip = {}
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', cc, ids[2], ids[#ids])) do skip[id] = true end
    for i = 1, #ids, 2 do
      local id = ids[i]
      if not skip[id] then
        local v = snap(P .. 'u:' .. id)
        if v[5] and v[1] == ARGV[s] and not v[2] and v[3] == CLAIMABLE and v[4] ~= '1' and not v[7]
            and (most < 0 or (tonumber(v[6]) or 1) <= most) then
          found[#found + 1] = {tonumber(ids[i + 1]), id, v}
          got = got + 1
          if got >= left then break end
        elseif v[7] and v[1] == ARGV[s] and not v[2] and v[3] and QUEUED[v[3]] then
          index_op(cc, id, tonumber(ids[i + 1]))  -- queued by an older version: index it now
        end
      end
    end
    start = start + chunk
    chunk = math.min(4 * chunk, 1000, scan - start)
  end
end
table.sort(found, function(a, b) return a[1] < b[1] end)
for i = 1, math.min(left, #found) do
  local seq, id, v = found[i][1], found[i][2], found[i][3]
  redis.call('HSET', P .. 'u:' .. id, 'pilot_id', pilot, 'claimed', '1')
  reindex(id, v, {v[1], pilot, v[3], '1', v[5], v[6], v[7]})
  picked[#picked + 1] = {seq, id}
end
flush_index()
if #picked > 0 then changed() end
table.sort(picked, function(a, b) return a[1] < b[1] end)
local ids = {}
for i, p in ipairs(picked) do ids[i] = p[2] end
remember(ids)
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('HGETALL', P .. 'u:' .. id) end
return out
"""

#: ARGV: P, '', pilot ids. Slots held by active units of each pilot: one per active unit, plus
#: the extra slots of the few active units that need more than one (``pm:<pilot>``).
COUNT_ACTIVE = _PRELUDE + """
local out = {}
for i = 3, #ARGV do
  local total = redis.call('ZCARD', P .. 'pa:' .. ARGV[i])
  for _, id in ipairs(redis.call('ZRANGE', P .. 'pm:' .. ARGV[i], 0, -1)) do
    total = total + (tonumber(redis.call('HGET', P .. 'u:' .. id, 'slots')) or 1) - 1
  end
  out[#out + 1] = total
end
return out
"""

#: ARGV: P, '', index key, cds ('' any), pilot ('' any). Returns state, count, state, count...
COUNT_UNITS = _PRELUDE + """
local base, cds, pilot = ARGV[3], ARGV[4], ARGV[5]
local counts, out = {}, {}
for _, id in ipairs(redis.call('ZRANGE', base, 0, -1)) do
  local v = redis.call('HMGET', P .. 'u:' .. id, 'state', 'cds_id', 'pilot_id')
  if v[1] and (cds == '' or v[2] == cds) and (pilot == '' or v[3] == pilot) then
    counts[v[1]] = (counts[v[1]] or 0) + 1
  end
end
for state, n in pairs(counts) do
  out[#out + 1] = state
  out[#out + 1] = n
end
return out
"""

#: ARGV: P, '', index key, cds ('' any), pilot ('' any), states ('-' any, else comma separated),
#: unbound '1'/'0', cancel_requested '1'/'0', limit (-1 none), constrained '1'/'0', fields
#: (none: every field). Returns one array per match: HMGET values of the fields, or HGETALL.
FIND_UNITS = _PRELUDE + """
local base, cds, pilot = ARGV[3], ARGV[4], ARGV[5]
local st
if ARGV[6] ~= '-' then
  st = {}
  for s in string.gmatch(ARGV[6], '[^,]+') do st[s] = true end
end
local unbound, cancel, limit = ARGV[7] == '1', ARGV[8] == '1', tonumber(ARGV[9])
local constrained = ARGV[10] == '1'
local get = {'cds_id', 'pilot_id', 'state', 'cancel_requested'}
if constrained then get[5], get[6], get[7] = 'datacenter', 'machine', 'input_data' end
local first = #get + 1
for j = 11, #ARGV do get[#get + 1] = ARGV[j] end
local out = {}
local start = 0
local chunk = 1000
if limit >= 0 and limit < chunk then chunk = math.max(limit, 16) end
while limit < 0 or #out < limit do
  local ids = redis.call('ZRANGE', base, start, start + chunk - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local key = P .. 'u:' .. id
    local v = redis.call('HMGET', key, unpack(get))
    if (cds == '' or v[1] == cds) and (pilot == '' or v[2] == pilot) and (not st or (v[3] and st[v[3]]))
        and (not unbound or not v[2]) and (not cancel or v[4] == '1')
        and (not constrained or has(v[5]) or has(v[6]) or has(v[7])) then
      if first <= #get then out[#out + 1] = {unpack(v, first, #get)}
      else out[#out + 1] = redis.call('HGETALL', key) end
      if limit >= 0 and #out >= limit then break end
    end
  end
  start = start + chunk
  chunk = 1000
end
return out
"""

#: ARGV: P, '', pilot id, service id, field/value pairs. Returns 0 when the id exists.
INSERT_PILOT = _PRELUDE + """
local key = P .. 'p:' .. ARGV[3]
if redis.call('EXISTS', key) == 1 then return 0 end
local seq = redis.call('INCR', P .. 'pseq')
redis.call('HSET', key, 'seq', seq, unpack(ARGV, 5))
redis.call('ZADD', P .. 'pilots', seq, ARGV[3])
if ARGV[4] ~= '' then redis.call('ZADD', P .. 'ps:' .. ARGV[4], seq, ARGV[3]) end
changed()
return 1
"""

#: ARGV: P, token, pilot id, expect, n, field/value pairs, m, fields to delete. Returns {'1'}
#: when applied, {'0'} when not.
UPDATE_PILOT = _PRELUDE + """
local c = cached()
if c then return c end
local key = P .. 'p:' .. ARGV[3]
local expect, i = expected(4)
local state = redis.call('HGET', key, 'state')
if not state or (expect and not expect[state]) then return remember({'0'}) end
local ns = tonumber(ARGV[i])
if ns > 0 then redis.call('HSET', key, unpack(ARGV, i + 1, i + 2 * ns)) end
local nd = tonumber(ARGV[i + 1 + 2 * ns])
if nd > 0 then redis.call('HDEL', key, unpack(ARGV, i + 2 + 2 * ns, i + 1 + 2 * ns + nd)) end
changed()
return remember({'1'})
"""

#: ARGV: P, '', pilot id, time. Records the heartbeat; returns the pilot (HGETALL) or nil.
HEARTBEAT = _PRELUDE + """
local key = P .. 'p:' .. ARGV[3]
if redis.call('EXISTS', key) == 0 then return false end
redis.call('HSET', key, 'heartbeat', ARGV[4])
changed()
return redis.call('HGETALL', key)
"""

#: ARGV: P, '', parent, child. Links once, in link order.
LINK = _PRELUDE + """
local key = P .. 'l:' .. ARGV[3]
if redis.call('ZSCORE', key, ARGV[4]) then return 0 end
redis.call('ZADD', key, redis.call('INCR', P .. 'lseq'), ARGV[4])
changed()
return 1
"""
