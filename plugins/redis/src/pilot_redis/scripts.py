"""The Lua scripts that make store writes atomic on the server.

Every script gets the key prefix as ``ARGV[1]`` and an idempotency token as ``ARGV[2]`` (empty
for none). A script called with a token saves its answer under ``<prefix>tok:<token>`` for
``TOKEN_TTL`` seconds and, called again with the same token (a retry after a lost reply), returns
that answer without doing anything: so a claim or a conditional update retried after a dropped
connection is never applied twice and never lost.

Keys (``P`` is the prefix): ``P u:<id>`` a unit hash (``seq`` plus its fields), ``P p:<id>`` a
pilot hash, ``P s:<id>`` a service (JSON), ``P l:<parent>`` links (sorted set). Unit indexes,
sorted sets of unit ids scored by ``seq`` (submission order), kept by ``reindex``: ``all``,
``cu:<cds>``, ``ca:<cds>`` (active), ``cf:<cds>`` (unbound and queued), ``pu:<pilot>``,
``pa:<pilot>`` (active), ``pm:<pilot>`` (active and needing more than one slot), ``pq:<pilot>``
(claimable: Pending, unclaimed). Each unit change costs one ``redis.call`` per index it enters or
leaves, so there are only the indexes the core's queries need (it always filters by service or
pilot); a query without either scans ``all``.
"""

from __future__ import annotations

TOKEN_TTL = 120

_PRELUDE = """
local P = ARGV[1]
local TOK = ARGV[2]
local ACTIVE = {New=true, Pending=true, Staging=true, Running=true}
local QUEUED = {New=true, Pending=true}
local function snap(key)
  return redis.call('HMGET', key, 'cds_id', 'pilot_id', 'state', 'claimed', 'seq', 'slots')
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
    if state == 'Pending' and claimed ~= '1' then s[P .. 'pq:' .. pilot] = true end
  elseif state and QUEUED[state] and cds then
    s[P .. 'cf:' .. cds] = true
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
local function expected(i)
  -- reads '<n>, s1..sn' at ARGV[i] (n = -1: any state); returns the set (or nil) and the next index
  local n = tonumber(ARGV[i])
  if n < 0 then return nil, i + 1 end
  local e = {}
  for j = 1, n do e[ARGV[i + j]] = true end
  return e, i + 1 + n
end
""".replace("TOKEN_TTL", str(TOKEN_TTL))

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
    for k in pairs(sets({f.cds_id, f.pilot_id, f.state, f.claimed, seq, f.slots})) do index_op(k, id, seq) end
  end
end
flush_index()
return count
"""

#: ARGV: P, token, count, then per update: id, pilot condition ('' none), expect (see
#: ``expected``), n, field/value pairs, m, fields to delete. Returns the ids where it applied.
UPDATE_UNITS = _PRELUDE + """
local c = cached()
if c then return c end
local out = {}
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
    out[#out + 1] = id
  end
end
flush_index()
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
    reindex(id, old, {old[1], pilot, old[3], old[4], old[5], old[6]})
    out[#out + 1] = id
  end
end
flush_index()
return remember(out)
"""

#: ARGV: P, token, pilot id. Hands the pilot's queued service units back (unbound, unclaimed).
UNBIND_UNITS = _PRELUDE + """
local c = cached()
if c then return c end
local pilot = ARGV[3]
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'pa:' .. pilot, 0, -1)) do
  local key = P .. 'u:' .. id
  local old = snap(key)
  if old[1] and old[2] == pilot and old[3] and QUEUED[old[3]] then
    redis.call('HDEL', key, 'pilot_id')
    redis.call('HSET', key, 'claimed', '0')
    reindex(id, old, {old[1], false, old[3], '0', old[5], old[6]})
    out[#out + 1] = id
  end
end
flush_index()
return remember(out)
"""

#: ARGV: P, token, pilot id, limit. Claims the oldest claimable units; returns their ids.
CLAIM_UNITS = _PRELUDE + """
local c = cached()
if c then return c end
local q = P .. 'pq:' .. ARGV[3]
local ids = redis.call('ZRANGE', q, 0, tonumber(ARGV[4]) - 1)
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  for j = i, last do redis.call('HSET', P .. 'u:' .. ids[j], 'claimed', '1') end
  redis.call('ZREM', q, unpack(ids, i, last))
end
return remember(ids)
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

#: ARGV: P, '', index key, cds ('' any), pilot ('' any), states ('-' any, else comma separated),
#: unbound '1'/'0', cancel_requested '1'/'0', limit (-1 none), fields (none: every field).
#: Returns one array per match: HMGET values of the fields, or HGETALL.
FIND_UNITS = _PRELUDE + """
local base, cds, pilot = ARGV[3], ARGV[4], ARGV[5]
local st
if ARGV[6] ~= '-' then
  st = {}
  for s in string.gmatch(ARGV[6], '[^,]+') do st[s] = true end
end
local unbound, cancel, limit = ARGV[7] == '1', ARGV[8] == '1', tonumber(ARGV[9])
local fields = {}
for j = 10, #ARGV do fields[#fields + 1] = ARGV[j] end
local out = {}
local start = 0
local chunk = 1000
if limit >= 0 and limit < chunk then chunk = math.max(limit, 16) end
while limit < 0 or #out < limit do
  local ids = redis.call('ZRANGE', base, start, start + chunk - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local key = P .. 'u:' .. id
    local v = redis.call('HMGET', key, 'cds_id', 'pilot_id', 'state', 'cancel_requested', unpack(fields))
    if (cds == '' or v[1] == cds) and (pilot == '' or v[2] == pilot) and (not st or (v[3] and st[v[3]]))
        and (not unbound or not v[2]) and (not cancel or v[4] == '1') then
      if #fields > 0 then out[#out + 1] = {unpack(v, 5, 4 + #fields)}
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
return remember({'1'})
"""

#: ARGV: P, '', pilot id, time. Records the heartbeat; returns the pilot (HGETALL) or nil.
HEARTBEAT = _PRELUDE + """
local key = P .. 'p:' .. ARGV[3]
if redis.call('EXISTS', key) == 0 then return false end
redis.call('HSET', key, 'heartbeat', ARGV[4])
return redis.call('HGETALL', key)
"""

#: ARGV: P, '', parent, child. Links once, in link order.
LINK = _PRELUDE + """
local key = P .. 'l:' .. ARGV[3]
if redis.call('ZSCORE', key, ARGV[4]) then return 0 end
redis.call('ZADD', key, redis.call('INCR', P .. 'lseq'), ARGV[4])
return 1
"""
