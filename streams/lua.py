"""The Redis Lua scripts of the window store (streams/store.py runs them): the atomic, idempotent apply of a batch,
the window reads, the rebuild's mark and the sweep's lease. The key layout they build from the namespace is the
one streams/keys.py names.
"""

APPLY_LUA = r"""
local p = cjson.decode(ARGV[1])
local ns = p.ns
-- The epoch names the store's generation: a new one each time the windows are rebuilt into an empty Redis.
-- A plan made from states read in another generation must not pass: versions start again after a wipe.
if p.ce then
  local gen = redis.call('GET', ns .. 'epoch')
  if not gen then return {2, ''} end
  if gen ~= p.gen then return {3, gen} end
end
local conflicts = {}
for _, s in ipairs(p.s) do
  local cur = redis.call('GET', s[1])
  local v = 0
  if cur then v = tonumber(string.match(cur, '^(%d+)|')) or 0 end
  if v ~= s[2] then
    conflicts[#conflicts + 1] = s[1]
    conflicts[#conflicts + 1] = cur or ''
  end
end
if #conflicts > 0 then return {0, conflicts} end
local touched = {}
-- Readers that keep window sums between reads (monitor/floorcache.py) re-read only the chunks near now: a write
-- to an older chunk marks its subject in `late` (they then read it whole), and a write to a queue's or
-- campaign's chunks or waiting calls marks it in `gdirty` (as `dirty` does agents), by Redis time (µs).
local clock = redis.call('TIME')
local mark_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local late_chunk = math.floor(math.floor(mark_us / 1000 / p.bm) / p.cb) - p.lt
local nsl = #ns
local marked_late = false
local function mark_chunk(k)
  local kind = string.sub(k, nsl + 1, nsl + 3)
  if kind == 'cc:' or kind == 'cz:' then
    -- a campaign's (or the floor's) hours: its readers re-read the day
    local campaign = string.match(string.sub(k, nsl + 4), '^(.*):%d+$')
    redis.call('ZADD', ns .. 'gdirty', mark_us, campaign and ('cb:' .. campaign .. ':') or 'cz:')
    return
  end
  local group = kind == 'qb:' or kind == 'cb:'
  if not group and string.sub(kind, 1, 2) ~= 'b:' then return end
  local prefix, c = string.match(string.sub(k, nsl + 1), '^(.*:)(%d+)$')
  if not c then return end
  if group then redis.call('ZADD', ns .. 'gdirty', mark_us, prefix) end
  if tonumber(c) < late_chunk then
    redis.call('HSET', ns .. 'late', prefix, mark_us)
    marked_late = true
  end
end
-- Counter deltas are summed here per key and field and written once (`flush`): a batch often adds to the same
-- fields many times (a busy agent, a queue), and each redis.call costs more than a sum. Team and floor totals
-- are not kept here: readers sum agents as they read them (monitor/floorcache.py, streams/schedule.py).
local pending = {}
local function add(k, name, d)
  local fields = pending[k]
  if not fields then
    fields = {}
    pending[k] = fields
  end
  fields[name] = (fields[name] or 0) + d
end
local function flush()
  for k, fields in pairs(pending) do
    for name, d in pairs(fields) do
      if d ~= 0 then redis.call('HINCRBY', k, name, d) end
    end
    touched[k] = true
    mark_chunk(k)
  end
  pending = {}
end
local function apply(ops)
  for i = 1, #ops, 4 do
    local k = ops[i]
    local field, d = ops[i + 2], ops[i + 3]
    if string.byte(field, -1) == 62 then
      -- A run ('<code>>'): every bucket from this offset to the chunk's end gets d; the total gets them all.
      add(k, field .. ops[i + 1], d)
      add(k, string.sub(field, 1, -2), d * (p.cb - ops[i + 1]))
    else
      add(k, field .. '.' .. ops[i + 1], d)
      add(k, field, d)
    end
  end
end
local function unhex(h)
  return (string.gsub(h, '..', function(cc) return string.char(tonumber(cc, 16)) end))
end
-- Dedupe marks: g[7] is the digest field in the shard hash g[1] (absent: g[1] is a plain key, an invalid
-- record's offset mark); g[8] how long, in seconds from now, the shard must keep it.
local now_s = tonumber(redis.call('TIME')[1])
local mark_expiry = {}
local function mark_new(g, src)
  if not g[7] then
    return redis.call('SET', g[1], src, 'NX', 'EX', p.te), nil
  end
  local f = unhex(g[7])
  local at = now_s + g[8]
  local prev = mark_expiry[g[1]]
  if (not prev) or prev < at then mark_expiry[g[1]] = at end
  if redis.call('HSETNX', g[1], f, src) == 1 then return true, nil end
  return false, f
end
local function mark_read(g, f)
  if f then return redis.call('HGET', g[1], f) or '' end
  return redis.call('GET', g[1]) or ''
end
local function mark_append(g, f, cur, src)
  if f then
    redis.call('HSET', g[1], f, cur .. '|' .. src)
  else
    redis.call('APPEND', g[1], '|' .. src)
  end
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stats = {}
local lag = {}
local lag_sum, lag_n = 0, 0
local bounds = p.lb
local applied, dups = 0, 0
for _, g in ipairs(p.g) do
  -- The mark lists the records (keys.record_mark, joined by '|') that carried this id: the first counts,
  -- another record is a duplicate, and the same record read again (after a crash or a rebuild) counts nothing.
  local src = g[6]
  local fresh, f = mark_new(g, src)
  if fresh then
    apply(g[5])
    local f = g[2] .. '|' .. g[3]
    stats[f] = (stats[f] or 0) + 1
    if g[3] == 'ok' then
      applied = applied + 1
      local l = now_ms - g[4]
      if l < 0 then l = 0 end
      local i = #bounds + 1
      for j = 1, #bounds do
        if l <= bounds[j] then i = j break end
      end
      lag[i] = (lag[i] or 0) + 1
      lag_sum = lag_sum + l
      lag_n = lag_n + 1
    end
  elseif g[3] ~= 'invalid' then
    local cur = mark_read(g, f)
    if not string.find('|' .. cur .. '|', '|' .. src .. '|', 1, true) then
      mark_append(g, f, cur, src)
      local f = g[2] .. '|duplicate'
      stats[f] = (stats[f] or 0) + 1
      dups = dups + 1
    end
  end
end
for k, at in pairs(mark_expiry) do
  redis.call('EXPIREAT', k, at, 'NX')
  redis.call('EXPIREAT', k, at, 'GT')
end
apply(p.u)
flush()
for _, s in ipairs(p.s) do
  if s[3] == '' then redis.call('DEL', s[1]) else redis.call('SET', s[1], s[3], 'EX', s[4]) end
end
for _, m in ipairs(p.m) do
  local cur = redis.call('HGET', m[1], m[2])
  if (not cur) or cur < m[4] then
    redis.call('HSET', m[1], m[2], m[4], m[3], m[5])
  end
  redis.call('EXPIRE', m[1], p.tm)
end
-- Waiting calls (queue -> call_id by entry ts), derived from the versioned call states above; callers who
-- waited past max_wait (their hang-up never came) are dropped an hour later.
for _, z in ipairs(p.z or {}) do
  if z[3] < 0 then redis.call('ZREM', z[1], z[2]) else redis.call('ZADD', z[1], z[3], z[2]) end
  redis.call('ZADD', ns .. 'gdirty', mark_us, 'qb:' .. string.sub(z[1], nsl + 4) .. ':')
  redis.call('ZREMRANGEBYSCORE', z[1], '-inf', p.wp)
  redis.call('EXPIRE', z[1], p.tz)
end
-- Queues and campaigns on the floor -> their latest event ts.
for _, r in ipairs(p.r or {}) do
  redis.call('ZADD', r[1], 'GT', r[3], r[2])
  local group = (string.sub(r[1], nsl + 1) == 'queues') and 'qb:' or 'cb:'
  redis.call('ZADD', ns .. 'gdirty', mark_us, group .. r[2] .. ':')
  redis.call('ZREMRANGEBYSCORE', r[1], '-inf', r[4])
end
for i = 1, #p.a, 2 do
  redis.call('ZADD', ns .. 'agents', 'GT', p.a[i + 1], p.a[i])
end
if #p.a > 0 then redis.call('ZREMRANGEBYSCORE', ns .. 'agents', '-inf', p.pa) end
for k, _ in pairs(touched) do redis.call('EXPIRE', k, p.tb) end
for _, k in ipairs(p.lk or {}) do
  if touched[k] then redis.call('EXPIRE', k, p.tl) end
end
if p.d and #p.d > 0 then
  -- What the alert sweep reads next round: the agents this apply touched, by Redis time.
  local dk = ns .. 'dirty'
  for _, a in ipairs(p.d) do redis.call('ZADD', dk, now_us, a) end
  redis.call('ZREMRANGEBYSCORE', dk, '-inf', now_us - 3600000000)
end
redis.call('ZREMRANGEBYSCORE', ns .. 'gdirty', '-inf', now_us - 3600000000)
if marked_late then redis.call('EXPIRE', ns .. 'late', p.tb) end
local sk = ns .. 'stats'
for f, n in pairs(stats) do redis.call('HINCRBY', sk, f, n) end
for i, n in pairs(lag) do redis.call('HINCRBY', sk, 'lag|' .. i, n) end
if lag_n > 0 then
  redis.call('HINCRBY', sk, 'lag|n', lag_n)
  redis.call('HINCRBY', sk, 'lag|sum_ms', lag_sum)
end
local seq = redis.call('INCR', ns .. 'seq')
if applied > 0 or next(p.u) ~= nil then redis.call('PUBLISH', ns .. 'changed', seq) end
return {1, applied, dups}
"""


WINDOW_SUMS_LUA = r"""
-- Sum the chunks `prefix .. c` (c0..c1) over each window (lo[w], hi[w]] (upvalues: nf, index, loud, cb):
-- whole chunks by their totals, cut ones by their buckets.
-- Also per window the first bucket in it that holds a count (-1 when none; for a chunk read by its totals,
-- the chunk's first bucket: never later than the true one): when the window next changes by time alone.
local function window_sums(prefix, lo, hi, nwin, c0, c1)
  local sums = {}
  for k = 1, nwin * nf do sums[k] = 0 end
  local firsts = {}
  for w = 1, nwin do firsts[w] = -1 end
  for c = c0, c1 do
    local first, last = c * cb, c * cb + cb - 1
    local cut = false
    for w = 1, nwin do
      if (first <= lo[w] and lo[w] < last) or (first <= hi[w] and hi[w] < last) then cut = true end
    end
    local key = prefix .. c
    if cut then
      -- only the windows that reach into this chunk are looked at for each of its fields
      local near = {}
      for w = 1, nwin do
        if lo[w] < last and hi[w] >= first then near[#near + 1] = w end
      end
      local flat = redis.call('HGETALL', key)
      for j = 1, #flat, 2 do
        local name = flat[j]
        local dot = string.find(name, '.', 1, true)
        local run = (not dot) and string.find(name, '>', 1, true)
        if dot then
          local f = index[string.sub(name, 1, dot - 1)]
          local b = first + tonumber(string.sub(name, dot + 1))
          local v = tonumber(flat[j + 1])
          if f then
            for _, w in ipairs(near) do
              if lo[w] < b and b <= hi[w] then
                sums[(w - 1) * nf + f] = sums[(w - 1) * nf + f] + v
                if v ~= 0 and loud[f] and (firsts[w] < 0 or b < firsts[w]) then firsts[w] = b end
              end
            end
          end
        elseif run then
          -- A run: v in every bucket from its offset to the chunk's end (streams/states.py runs).
          local f = index[string.sub(name, 1, run - 1)]
          local b = first + tonumber(string.sub(name, run + 1))
          local v = tonumber(flat[j + 1])
          if f then
            for _, w in ipairs(near) do
              local s, e = math.max(b, lo[w] + 1), math.min(last, hi[w])
              if s <= e then
                sums[(w - 1) * nf + f] = sums[(w - 1) * nf + f] + v * (e - s + 1)
                if v ~= 0 and loud[f] and (firsts[w] < 0 or s < firsts[w]) then firsts[w] = s end
              end
            end
          end
        end
      end
    else
      local inside = false
      for w = 1, nwin do
        if first > lo[w] and last <= hi[w] then inside = true end
      end
      if inside then
        -- The chunk's totals are its fields without '.' or '>' (a chunk holds a few counters, not all nf:
        -- one HGETALL is cheaper than an HMGET naming every field).
        local flat = redis.call('HGETALL', key)
        for j = 1, #flat, 2 do
          local f = index[flat[j]]
          if f then
            local v = tonumber(flat[j + 1])
            for w = 1, nwin do
              if first > lo[w] and last <= hi[w] then
                sums[(w - 1) * nf + f] = sums[(w - 1) * nf + f] + v
                if v ~= 0 and loud[f] and (firsts[w] < 0 or first < firsts[w]) then firsts[w] = first end
              end
            end
          end
        end
      end
    end
  end
  return sums, firsts
end
"""


_READ_HEAD_LUA = (
    r"""
-- ARGV: ns, first_chunk, last_chunk, chunk_buckets, nwin, lo1, hi1, ..., nfields, f1..fn, nquiet, q1..qn,
-- then the subjects. Quiet fields count in the sums but not for `firsts` (a reader that follows them another
-- way, or does not use them: time in state).
local ns = ARGV[1]
local c0, c1, cb = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nwin = tonumber(ARGV[5])
local lo, hi = {}, {}
local i = 6
for w = 1, nwin do lo[w] = tonumber(ARGV[i]); hi[w] = tonumber(ARGV[i + 1]); i = i + 2 end
local nf = tonumber(ARGV[i]); i = i + 1
local fields, index = {}, {}
for f = 1, nf do fields[f] = ARGV[i]; index[ARGV[i]] = f; i = i + 1 end
local loud = {}
for f = 1, nf do loud[f] = true end
local nq = tonumber(ARGV[i]); i = i + 1
for q = 1, nq do
  if index[ARGV[i]] then loud[index[ARGV[i]]] = false end
  i = i + 1
end
"""
    + WINDOW_SUMS_LUA
    + r"""
local out = {}
"""
)

READ_LUA = (
    _READ_HEAD_LUA
    + r"""
-- Subjects: agents. Returns Redis's time of the read (µs), then per agent: team, state, since (ms), reason,
-- nwin * nfields sums (window-major), then per window the first bucket holding a count (see window_sums).
local t = redis.call('TIME')
out[1] = tonumber(t[1]) * 1000000 + tonumber(t[2])
for a = i, #ARGV do
  local agent = ARGV[a]
  local meta = redis.call('HMGET', ns .. 'm:' .. agent, 'team', 'state', 'since', 'reason')
  local sums, firsts = window_sums(ns .. 'b:' .. agent .. ':', lo, hi, nwin, c0, c1)
  out[#out + 1] = meta[1] or ''
  out[#out + 1] = meta[2] or ''
  out[#out + 1] = meta[3] or ''
  out[#out + 1] = meta[4] or ''
  for k = 1, nwin * nf do out[#out + 1] = sums[k] end
  for w = 1, nwin do out[#out + 1] = firsts[w] end
end
return out
"""
)

READ_GROUPS_LUA = (
    _READ_HEAD_LUA
    + r"""
-- Subjects: chunk key prefixes (a queue's 'qb:<queue>:', a
-- campaign's 'cb:<campaign>:'), without ns.
-- Returns per subject nwin * nfields sums (window-major).
for a = i, #ARGV do
  local sums = window_sums(ns .. ARGV[a], lo, hi, nwin, c0, c1)
  for k = 1, nwin * nf do out[#out + 1] = sums[k] end
end
return out
"""
)

MARK_REBUILT_LUA = r"""
-- KEYS: replay lock, epoch; ARGV: the rebuild's lock token, the new generation.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'NX')
return 1
"""

LEASE_LUA = r"""
-- KEYS: the lease; ARGV: the holder's token, ttl ms. Take it when free, renew it when this holder has it.
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
