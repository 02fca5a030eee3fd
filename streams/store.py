"""The Redis window store: one atomic, idempotent write per batch, pipelined window reads.

Key layout (all under a namespace `cp:<topic prefix>`):
  b:<agent>:<chunk>  hash of bucket counters (`<field>.<offset>`) and chunk totals (`<field>`)
  e:<event_id>       dedupe mark, expires once the event would be late anyway
  s:c:<customer>     'version|json' call history for FCR;  s:t:<ticket> the same for response time
  m:<agent>          team, state, since (ms) and reason, each kept with the (ts, event_id) that set it
  s:q:<call_id>      'version|json' queue entries, answers and abandons of a call (queue KPIs)
  s:a:<agent>        'version|json' state history of an agent (time in state)
  qb:<queue>:<chunk> a queue's bucket counters;  qw:<queue> its waiting calls (call_id -> entry ts)
  cb:<campaign>:<chunk>  a campaign's 10 s buckets;  cc:<campaign>:<day>, cz:<day> (floor) its hours, 31 days
  queues, campaigns  sorted sets: name -> latest event ts
  agents             sorted set: agent -> latest event ts (who is on the floor)
  stats              event counters by topic|result and the event-lag histogram
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any

import orjson
import redis.asyncio as aioredis

from streams import states
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
local function apply(ops)
  for i = 1, #ops, 4 do
    local k = ops[i]
    redis.call('HINCRBY', k, ops[i + 2] .. '.' .. ops[i + 1], ops[i + 3])
    redis.call('HINCRBY', k, ops[i + 2], ops[i + 3])
    touched[k] = true
  end
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stats = {}
local lag = {}
local lag_sum, lag_n = 0, 0
local bounds = p.lb
local applied, dups = 0, 0
for _, g in ipairs(p.g) do
  -- The mark lists the records ('|c:3:17|') that carried this id: the first counts, another record is a
  -- duplicate, and the same record read again (after a crash or a rebuild) counts nothing.
  local src = '|' .. g[6] .. '|'
  if redis.call('SET', g[1], src, 'NX', 'EX', p.te) then
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
    local cur = redis.call('GET', g[1]) or ''
    if not string.find(cur, src, 1, true) then
      redis.call('APPEND', g[1], string.sub(src, 2))
      local f = g[2] .. '|duplicate'
      stats[f] = (stats[f] or 0) + 1
      dups = dups + 1
    end
  end
end
apply(p.u)
for _, s in ipairs(p.s) do
  if s[3] == '' then redis.call('DEL', s[1]) else redis.call('SET', s[1], s[3], 'EX', s[4]) end
end
for _, m in ipairs(p.m) do
  local cur = redis.call('HGET', m[1], m[2])
  if (not cur) or cur < m[4] then redis.call('HSET', m[1], m[2], m[4], m[3], m[5]) end
  redis.call('EXPIRE', m[1], p.tm)
end
-- Waiting calls (queue -> call_id by entry ts), derived from the versioned call states above; callers who
-- waited past max_wait (their hang-up never came) are dropped an hour later.
for _, z in ipairs(p.z or {}) do
  if z[3] < 0 then redis.call('ZREM', z[1], z[2]) else redis.call('ZADD', z[1], z[3], z[2]) end
  redis.call('ZREMRANGEBYSCORE', z[1], '-inf', p.wp)
  redis.call('EXPIRE', z[1], p.tz)
end
-- Queues and campaigns on the floor -> their latest event ts.
for _, r in ipairs(p.r or {}) do
  redis.call('ZADD', r[1], 'GT', r[3], r[2])
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


READ_LUA = r"""
-- ARGV: ns, first_chunk, last_chunk, chunk_buckets, nwin, lo1, hi1, ..., nfields, f1..fn, agent1, agent2, ...
-- Returns per agent: team, state, since (ms), reason, then nwin * nfields sums (window-major).
local ns = ARGV[1]
local c0, c1, cb = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nwin = tonumber(ARGV[5])
local lo, hi = {}, {}
local i = 6
for w = 1, nwin do lo[w] = tonumber(ARGV[i]); hi[w] = tonumber(ARGV[i + 1]); i = i + 2 end
local nf = tonumber(ARGV[i]); i = i + 1
local fields, index = {}, {}
for f = 1, nf do fields[f] = ARGV[i]; index[ARGV[i]] = f; i = i + 1 end
local out = {}
for a = i, #ARGV do
  local agent = ARGV[a]
  local meta = redis.call('HMGET', ns .. 'm:' .. agent, 'team', 'state', 'since', 'reason')
  local sums = {}
  for k = 1, nwin * nf do sums[k] = 0 end
  for c = c0, c1 do
    local first, last = c * cb, c * cb + cb - 1
    local cut = false
    for w = 1, nwin do
      if (first <= lo[w] and lo[w] < last) or (first <= hi[w] and hi[w] < last) then cut = true end
    end
    local key = ns .. 'b:' .. agent .. ':' .. c
    if cut then
      local flat = redis.call('HGETALL', key)
      for j = 1, #flat, 2 do
        local name = flat[j]
        local dot = string.find(name, '.', 1, true)
        if dot then
          local f = index[string.sub(name, 1, dot - 1)]
          local b = first + tonumber(string.sub(name, dot + 1))
          local v = tonumber(flat[j + 1])
          if f then
            for w = 1, nwin do
              if lo[w] < b and b <= hi[w] then sums[(w - 1) * nf + f] = sums[(w - 1) * nf + f] + v end
            end
          end
        end
      end
    else
      local totals = redis.call('HMGET', key, unpack(fields))
      for w = 1, nwin do
        if first > lo[w] and last <= hi[w] then
          for f = 1, nf do
            if totals[f] then sums[(w - 1) * nf + f] = sums[(w - 1) * nf + f] + tonumber(totals[f]) end
          end
        end
      end
    end
  end
  out[#out + 1] = meta[1] or ''
  out[#out + 1] = meta[2] or ''
  out[#out + 1] = meta[3] or ''
  out[#out + 1] = meta[4] or ''
  for k = 1, nwin * nf do out[#out + 1] = sums[k] end
end
return out
"""
READ_AGENTS_PER_CALL = 100
READ_META = 4  # team, state, since, reason ahead of each row's sums

MARK_REBUILT_LUA = r"""
-- KEYS: replay lock, epoch; ARGV: the rebuild's lock token, the new generation.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'NX')
return 1
"""


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

    async def read_states(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Current raw values of customer/ticket state keys (None when absent)."""
        keys = list(keys)
        if not keys:
            return {}
        values = await self.client.mget(keys)
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
        return {_s(agent): int(score) for agent, score in rows}

    async def read_windows(
        self, now_ms: int, windows_s: Sequence[int], only: Iterable[str] | None = None
    ) -> list[AgentWindows]:
        """Active agents (all, or those in `only`) with counter sums for each window, in one pipelined read."""
        bounds = [w.window_buckets(now_ms, ws, self.tz) for ws in windows_s]
        lo = min(b_lo for b_lo, _ in bounds)
        hi = now_ms // w.BUCKET_MS
        if only is None:
            agents = await self.active_agents(now_ms, max(w.span_s(now_ms, ws, self.tz) for ws in windows_s))
        else:
            names = sorted(set(only))
            scores = await self.client.zmscore(f"{self.ns}agents", names) if names else []
            agents = {a: int(sc) for a, sc in zip(names, scores, strict=True) if sc is not None}
        if not agents:
            return []
        # Summed inside Redis: whole chunks by their totals, the chunks a window edge cuts by their buckets.
        head = [self.ns, w.chunk_of(lo + 1), w.chunk_of(hi), w.CHUNK_BUCKETS, len(bounds)]
        for b_lo, b_hi in bounds:
            head += [b_lo, b_hi]
        head += [len(w.FIELDS), *w.FIELDS]
        names = sorted(agents)
        groups = [names[i : i + READ_AGENTS_PER_CALL] for i in range(0, len(names), READ_AGENTS_PER_CALL)]
        # One script call per group, in turn: each blocks Redis only briefly, so batch writes slip in between.
        results = [await self._read(args=[*head, *group]) for group in groups]
        out: list[AgentWindows] = []
        nf = len(w.FIELDS)
        step = READ_META + len(bounds) * nf
        for group, flat in zip(groups, results, strict=True):
            for k, agent in enumerate(group):
                row = flat[k * step : (k + 1) * step]
                team, state, since, reason = _s(row[0]), _s(row[1]), _s(row[2]), _s(row[3])
                since_ms = int(since) if since else None
                sums = {
                    ws: dict(zip(w.FIELDS, row[READ_META + j * nf : READ_META + (j + 1) * nf], strict=True))
                    for j, ws in enumerate(windows_s)
                }
                for ws, window_sums in sums.items():  # the current state counts up to now
                    states.add_open(window_sums, state or None, since_ms, now_ms, ws, self.tz)
                out.append(
                    AgentWindows(agent, team or None, state or None, agents[agent], sums, since_ms, reason or None)
                )
        return out

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

    async def read_stats(self) -> dict[str, int]:
        """Event counters (topic|result) and the raw lag histogram fields."""
        raw = await self.client.hgetall(f"{self.ns}stats")
        return {_s(k): int(v) for k, v in raw.items()}


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
