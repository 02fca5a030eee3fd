"""The Redis window store: one atomic, idempotent write per batch, pipelined window reads.

The key layout is in `streams.keys` (the scripts below build the same names from the namespace). Team and
floor totals are not stored: readers keep them as they read agents (monitor/floorcache.py for the monitor,
streams/schedule.FloorView for the alert sweep), one agent's old sums out and new ones in.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from streams import keys, states
from streams import windows as w
from streams.batch import LAG_BOUNDS_S

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
    redis.call('HSET', g[1], f, cur .. string.sub(src, 2))
  else
    redis.call('APPEND', g[1], string.sub(src, 2))
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
  -- The mark lists the records ('|c:3:17|') that carried this id: the first counts, another record is a
  -- duplicate, and the same record read again (after a crash or a rebuild) counts nothing.
  local src = '|' .. g[6] .. '|'
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
    if not string.find(cur, src, 1, true) then
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


_WINDOW_SUMS_LUA = r"""
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
-- with_history (0/1), then the subjects. Quiet fields count in the sums but not for `firsts` (a reader that
-- follows them another way: time in state, from the agent's state history).
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
local with_history = ARGV[i] == '1'; i = i + 1
"""
    + _WINDOW_SUMS_LUA
    + r"""
local out = {}
"""
)

READ_LUA = (
    _READ_HEAD_LUA
    + r"""
-- Subjects: agents. Returns Redis's time of the read (µs), then per agent: team, state, since (ms), reason,
-- nwin * nfields sums (window-major), then per window the first bucket holding a count (see window_sums), then
-- with_history: the agent's state history (streams/states.py encode; '' when none).
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
  if with_history then out[#out + 1] = redis.call('GET', ns .. 's:a:' .. agent) or '' end
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
READ_AGENTS_PER_CALL = 100
READ_META = 4  # team, state, since, reason ahead of each row's sums

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


def read_head(
    ns: str,
    now_ms: int,
    windows_s: Sequence[int],
    tz: tzinfo,
    fields: Sequence[str],
    *,
    quiet: Sequence[str] = (),
    history: bool = False,
) -> list[Any]:
    """The read scripts' leading arguments (READ_LUA, READ_GROUPS_LUA): chunk range, window bounds in buckets,
    field names, the fields `firsts` ignores, and whether to return each agent's state history."""
    bounds = [w.window_buckets(now_ms, ws, tz) for ws in windows_s]
    lo = min(b_lo for b_lo, _ in bounds)
    hi = now_ms // w.BUCKET_MS
    head: list[Any] = [ns, w.chunk_of(lo + 1), w.chunk_of(hi), w.CHUNK_BUCKETS, len(bounds)]
    for b_lo, b_hi in bounds:
        head += [b_lo, b_hi]
    return [*head, len(fields), *fields, len(quiet), *quiet, 1 if history else 0]


def new_generation() -> str:
    """A fresh store generation: when it started, and a random part so two rebuilds never share one."""
    return f"{int(time.time())}-{uuid.uuid4().hex[:12]}"


@dataclass
class ApplyResult:
    """What one apply did: ok=False means state conflicts (key -> current raw value), nothing written."""

    ok: bool
    empty: bool = False
    stale: bool = False  # the plan's generation is not the store's: `generation` is the store's
    generation: str | None = None
    applied: int = 0
    duplicates: int = 0
    conflicts: dict[str, str] = field(default_factory=dict)


@dataclass
class AgentWindows:
    """One agent as read from the store: team, state and counter sums per window (seconds -> sums)."""

    agent_id: str
    team: str | None
    state: str | None
    last_ts_ms: int
    sums: dict[int, w.Sums]
    since_ms: int | None = None  # when the current state began (its agent.state ts)
    reason: str | None = None  # the current state's reason
    # Per window, the first bucket in it holding a count (None: empty), or an earlier one: when the window next
    # changes by time alone (streams.schedule.next_change_ms).
    first_buckets: dict[int, int | None] = field(default_factory=dict)
    # Redis's time of the read (µs): the applies scored in `dirty` up to it are in these sums.
    read_us: int = field(default=0, compare=False)
    # Set by a reader that keeps rows between reads (monitor.floorcache): equal versions, equal written sums.
    version: int = field(default=0, compare=False)
    history: states.History | None = field(default=None, compare=False)  # read_windows(history=True)


@dataclass
class TeamWindows:
    """One team: how many agents on the floor are in it now and its counter sums per window."""

    team: str
    agents: int
    sums: dict[int, w.Sums]
    # The counters alone (no time in state) when the reader keeps them: equal counters, equal KPIs not made of
    # time in state (the snapshot reuses those).
    counters: dict[int, w.Sums] | None = None


def namespace(topic_prefix: str) -> str:
    """The Redis key namespace for a deployment (topic prefixes keep test runs apart)."""
    return f"cp:{topic_prefix}"


class WindowStore:
    """Redis access for windows, states and stats; the client is injected."""

    def __init__(self, client: aioredis.Redis, ns: str, *, tz: tzinfo = UTC) -> None:
        self.client = client
        self.ns = ns
        self.tz = tz  # where the calendar window `today` starts
        self._apply = client.register_script(APPLY_LUA)
        self._read = client.register_script(READ_LUA)
        self._mark_rebuilt = client.register_script(MARK_REBUILT_LUA)
        self._lease = client.register_script(LEASE_LUA)

    async def read_states(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Current raw values of customer/ticket state keys (None when absent)."""
        keys = list(keys)
        if not keys:
            return {}
        # redis-py types replies as bytes | str (it cannot see decode_responses); our clients never decode
        values = cast("list[bytes | None]", await self.client.mget(keys))
        return dict(zip(keys, values, strict=True))

    async def apply(self, payload: Mapping[str, Any]) -> ApplyResult:
        """Run one batch's plan atomically; on a state conflict nothing is written."""
        raw = await self._apply(args=[orjson.dumps(payload)])
        if int(raw[0]) == 2:
            return ApplyResult(False, empty=True)
        if int(raw[0]) == 3:
            return ApplyResult(False, stale=True, generation=_s(raw[1]))
        if int(raw[0]) == 0:
            flat = raw[1]
            conflicts = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
            return ApplyResult(False, conflicts=conflicts)
        return ApplyResult(True, applied=int(raw[1]), duplicates=int(raw[2]))

    async def active_agents(self, now_ms: int, window_s: float) -> dict[str, int]:
        """Agents with an event in the `window_s` seconds ending now -> their latest event ts."""
        rows = await self.client.zrangebyscore(
            f"{self.ns}agents", f"({now_ms - round(window_s * 1000)}", "+inf", withscores=True
        )
        return {_s(agent): int(score) for agent, score in cast("list[tuple[bytes, float]]", rows)}  # withscores pairs

    async def read_windows(
        self,
        now_ms: int,
        windows_s: Sequence[int],
        only: Iterable[str] | None = None,
        *,
        open_state: bool = True,
        history: bool = False,
        quiet_states: bool = False,
    ) -> list[AgentWindows]:
        """Active agents (all, or those in `only`) with counter sums for each window, in one pipelined read.

        The current state's time up to now is in the sums unless `open_state` is False (what is written only).
        With `history`, each row also carries the agent's state history. With `history` or `quiet_states`, its
        `first_buckets` ignore time in state (for a reader that computes it from the history at any time, or
        does not use it: it needs no re-read when time in state slides out of a window).
        """
        bounds = [w.window_buckets(now_ms, ws, self.tz) for ws in windows_s]
        if only is None:
            agents = await self.active_agents(now_ms, max(w.span_s(now_ms, ws, self.tz) for ws in windows_s))
        else:
            names = sorted(set(only))
            scores = await self.client.zmscore(f"{self.ns}agents", names) if names else []
            agents = {a: int(sc) for a, sc in zip(names, scores, strict=True) if sc is not None}
        if not agents:
            return []
        # Summed inside Redis: whole chunks by their totals, the chunks a window edge cuts by their buckets.
        quiet = tuple(states.STATE_FIELDS.values()) if history or quiet_states else ()
        head = self._read_head(now_ms, windows_s, quiet=quiet, history=history)
        names = sorted(agents)
        groups = [names[i : i + READ_AGENTS_PER_CALL] for i in range(0, len(names), READ_AGENTS_PER_CALL)]
        # One script call per group, in turn: each blocks Redis only briefly, so batch writes slip in between.
        results = [await self._read(args=[*head, *group]) for group in groups]
        out: list[AgentWindows] = []
        nf = len(w.FIELDS)
        nwin = len(bounds)
        step = READ_META + nwin * nf + nwin + (1 if history else 0)
        for group, reply in zip(groups, results, strict=True):
            read_us, flat = int(reply[0]), reply[1:]
            for k, agent in enumerate(group):
                row = flat[k * step : (k + 1) * step]
                team, state, since, reason = _s(row[0]), _s(row[1]), _s(row[2]), _s(row[3])
                since_ms = int(since) if since else None
                sums = {
                    ws: dict(zip(w.FIELDS, row[READ_META + j * nf : READ_META + (j + 1) * nf], strict=True))
                    for j, ws in enumerate(windows_s)
                }
                for ws, window_sums in sums.items() if open_state else ():  # the current state counts up to now
                    states.add_open(window_sums, state or None, since_ms, now_ms, ws, self.tz)
                tail = row[READ_META + nwin * nf :]
                firsts = {ws: (None if int(tail[j]) < 0 else int(tail[j])) for j, ws in enumerate(windows_s)}
                # The history is stored as 'version|json' (a versioned state, streams/batch.py).
                kept = states.decode(bytes(tail[nwin]).partition(b"|")[2]) if history and tail[nwin] else None
                out.append(
                    AgentWindows(
                        agent,
                        team or None,
                        state or None,
                        agents[agent],
                        sums,
                        since_ms,
                        reason or None,
                        firsts,
                        read_us,
                        history=kept,
                    )
                )
        return out

    async def changed_since(self, since_us: int) -> tuple[dict[str, int], int]:
        """Agents an apply touched at or after `since_us` (Redis time, µs) with the time of it, and Redis's time now.

        The time is read first: an apply that runs in between is listed now and again next time, never missed.
        """
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrangebyscore(keys.dirty_key(self.ns), since_us, "+inf", withscores=True)
            (secs, micros), rows = await pipe.execute()
        return {_s(a): int(score) for a, score in rows}, int(secs) * 1_000_000 + int(micros)

    async def redis_time_us(self) -> int:
        """Redis's clock now (µs): the clock `dirty` is scored by."""
        secs, micros = await self.client.time()
        return int(secs) * 1_000_000 + int(micros)

    async def hold_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        """Take the lease `name` if free, or renew it if `token` holds it; False while another holds it."""
        return bool(await self._lease(keys=[f"{self.ns}{name}"], args=[token, ttl_ms]))

    def _read_head(
        self, now_ms: int, windows_s: Sequence[int], *, quiet: Sequence[str] = (), history: bool = False
    ) -> list[Any]:
        return read_head(self.ns, now_ms, windows_s, self.tz, w.FIELDS, quiet=quiet, history=history)

    async def initialised(self) -> bool:
        """Whether this Redis holds callpulse data (False after a restart without persistence)."""
        return bool(await self.client.exists(f"{self.ns}epoch"))

    async def generation(self) -> str | None:
        """The store's generation (a new one after each rebuild), None while it holds no complete windows."""
        raw = await self.client.get(f"{self.ns}epoch")
        return None if raw is None else _s(raw)

    async def mark_initialised(self) -> str:
        """Record that the windows are complete up to what Kafka retained; return the store's generation."""
        await self.client.set(f"{self.ns}epoch", new_generation(), nx=True)
        return await self.generation() or ""

    async def mark_rebuilt(self, lock: str, token: str) -> bool:
        """Open a new generation if the rebuild holding `lock` with `token` still owns it.

        False when Redis lost its data again during the rebuild (the lock went with it): what was replayed
        before that is gone, and the rebuild must start over.
        """
        return bool(await self._mark_rebuilt(keys=[lock, f"{self.ns}epoch"], args=[token, new_generation()]))

    @property
    def replay_lock_key(self) -> str:
        """The key a rebuild holds while it replays Kafka into this store."""
        return f"{self.ns}replay-lock"

    async def rebuilding(self) -> bool:
        """Whether a rebuild holds the replay lock now."""
        return bool(await self.client.exists(self.replay_lock_key))

    async def agent_team(self, agent: str) -> str | None:
        """The agent's current team (of its latest event naming one), or None."""
        team = await self.client.hget(keys.meta_key(self.ns, agent), "team")
        return _s(team) or None if team is not None else None

    async def notified_hooks(self, alert_id: str) -> set[int]:
        """Indexes of the webhooks already told of this alert episode."""
        return {int(_s(i)) for i in await self.client.smembers(keys.notified_key(self.ns, alert_id))}

    async def note_notified(self, alert_id: str, hooks: Iterable[int], *, keep_s: int) -> None:
        """Remember for `keep_s` seconds that these webhooks were told of the episode."""
        hooks = list(hooks)
        if hooks:
            key = keys.notified_key(self.ns, alert_id)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.sadd(key, *hooks)
                pipe.expire(key, keep_s)
                await pipe.execute()

    async def forget_notified(self, alert_id: str) -> None:
        """The episode is over: drop its record of told webhooks."""
        await self.client.delete(keys.notified_key(self.ns, alert_id))

    async def read_stats(self) -> dict[str, int]:
        """Event counters (topic|result) and the raw lag histogram fields."""
        raw = await self.client.hgetall(f"{self.ns}stats")
        return {_s(k): int(v) for k, v in raw.items()}


async def remove_namespace(client: aioredis.Redis, ns: str) -> int:
    """Delete every key under a namespace (the demo's own, on exit); returns how many were deleted."""
    removed = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{ns}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += await client.unlink(*batch)
            batch = []
    if batch:
        removed += await client.unlink(*batch)
    return removed


def lag_histogram(stats: Mapping[str, int]) -> tuple[list[tuple[str, int]], int, float]:
    """Cumulative (le, count) buckets, count and sum in seconds of the event-lag histogram."""
    buckets: list[tuple[str, int]] = []
    running = 0
    for i, bound in enumerate(LAG_BOUNDS_S, start=1):
        running += stats.get(f"lag|{i}", 0)
        buckets.append((repr(bound), running))
    running += stats.get(f"lag|{len(LAG_BOUNDS_S) + 1}", 0)
    buckets.append(("+Inf", running))
    return buckets, stats.get("lag|n", 0), stats.get("lag|sum_ms", 0) / 1000


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
