"""Reads of bucket ranges for readers that keep window sums between reads (monitor/subjects.py).

A reader that holds a subject's sums (an agent, a queue, a campaign) asks only for the ranges that changed:
the buckets near now after a write, the buckets a window's start just passed. One script call reads several
subjects, each with its own ranges, and returns with them what tells the reader whether its held sums still
hold: when an apply last touched the subject (`dirty`, `gdirty`), when one last wrote to its old chunks
(`late`), and for an agent its team, state and state history (the history only when its version moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from streams import states
from streams import windows as w
from streams.lua import WINDOW_SUMS_LUA

RANGES_LUA = (
    r"""
-- ARGV: ns, chunk_buckets, nf, f1..fn, nquiet, q1..qn (fields summed but not looked at for `firsts`), then
-- per subject: kind ('a' an agent | 'g' a group), name (the agent, or
-- the group's chunk prefix without ns), the state-history version the reader holds ('' when none), nranges,
-- lo1, hi1, ... (buckets lo < b <= hi). Returns Redis's time (µs), then per subject: for an agent team, state,
-- since, reason, latest event ts, dirty score, history version, the history ('' when the reader holds that
-- version); for a group its gdirty score; then its late mark, then per range {first bucket or -1, f, v, ...}
-- with the nonzero sums by field number (from 0).
local ns = ARGV[1]
local cb = tonumber(ARGV[2])
local nf = tonumber(ARGV[3])
local index, loud = {}, {}
for f = 1, nf do
  index[ARGV[3 + f]] = f
  loud[f] = true
end
local nq = tonumber(ARGV[4 + nf])
for q = 1, nq do
  local f = index[ARGV[4 + nf + q]]
  if f then loud[f] = false end
end
"""
    + WINDOW_SUMS_LUA
    + r"""
local t = redis.call('TIME')
local out = {tonumber(t[1]) * 1000000 + tonumber(t[2])}
local i = 5 + nf + nq
while i <= #ARGV do
  local kind, name, held, nr = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local lo, hi = {}, {}
  local c0, c1 = nil, nil
  for r = 1, nr do
    lo[r], hi[r] = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    i = i + 2
    local a, b = math.floor((lo[r] + 1) / cb), math.floor(hi[r] / cb)
    if (not c0) or a < c0 then c0 = a end
    if (not c1) or b > c1 then c1 = b end
  end
  local prefix = name
  if kind == 'a' then
    prefix = 'b:' .. name .. ':'
    local meta = redis.call('HMGET', ns .. 'm:' .. name, 'team', 'state', 'since', 'reason')
    for m = 1, 4 do out[#out + 1] = meta[m] or '' end
    out[#out + 1] = redis.call('ZSCORE', ns .. 'agents', name) or ''
    out[#out + 1] = redis.call('ZSCORE', ns .. 'dirty', name) or ''
    local h = redis.call('GET', ns .. 's:a:' .. name)
    local v = (h and string.match(h, '^(%d+)|')) or ''
    out[#out + 1] = v
    if h and v ~= held then out[#out + 1] = h else out[#out + 1] = '' end
  else
    out[#out + 1] = redis.call('ZSCORE', ns .. 'gdirty', name) or ''
  end
  out[#out + 1] = redis.call('HGET', ns .. 'late', prefix) or ''
  if nr > 0 then
    local sums, firsts = window_sums(ns .. prefix, lo, hi, nr, c0, c1)
    for r = 1, nr do
      local row = {firsts[r]}
      for f = 1, nf do
        local v = sums[(r - 1) * nf + f]
        if v ~= 0 then
          row[#row + 1] = f - 1
          row[#row + 1] = v
        end
      end
      out[#out + 1] = row
    end
  end
end
return out
"""
)
SUBJECTS_PER_CALL = 50  # each call blocks Redis while it runs: a few ms at most, so applies slip in between
AGENT_HEAD = 8  # team, state, since, reason, latest ts, dirty, history version, history
GROUP_HEAD = 1  # gdirty

Range = tuple[int, int]  # buckets lo < b <= hi


@dataclass
class Ask:
    """One subject's read: an agent (`agent=True`) or a group by its chunk prefix, and the ranges wanted."""

    name: str
    ranges: list[Range]
    agent: bool = True
    history_version: int = 0  # the state-history version the reader holds (agents): its history is not resent
    # that version's tally: a newer history is cumulated again only after the marks both share
    tally: states.Tally | None = field(default=None, compare=False)


@dataclass
class RangeRead:
    """What a read returned for one subject."""

    name: str
    sums: list[w.Sums]  # per range asked, the nonzero sums
    firsts: list[int | None]  # per range, the first bucket holding a count (or an earlier one: a whole chunk's)
    late_us: int  # Redis time of the last write to one of its old chunks (0: never)
    dirty_us: int  # Redis time of the last apply that touched it (0: none kept)
    read_us: int  # Redis time of this read
    team: str | None = None
    state: str | None = None
    since_ms: int | None = None
    reason: str | None = None
    last_ts_ms: int | None = None  # None: not on the floor's roster
    history_version: int = 0
    # The state history's tally (time in state at any moment); None: the version held, or no history.
    tally: states.Tally | None = field(default=None, compare=False)


class RangeReader:
    """Runs RANGES_LUA for many subjects, SUBJECTS_PER_CALL at a time; the client is injected."""

    def __init__(self, client: aioredis.Redis, ns: str, fields: Sequence[str], *, quiet: Sequence[str] = ()) -> None:
        self.ns = ns
        self.fields = tuple(fields)
        self.quiet = tuple(quiet)  # summed, but not looked at for `firsts` (time in state, for the floor cache)
        self._script = client.register_script(RANGES_LUA)

    async def read(self, asks: Sequence[Ask]) -> list[RangeRead]:
        """Each subject's ranges, in the order asked."""
        out: list[RangeRead] = []
        head = [self.ns, w.CHUNK_BUCKETS, len(self.fields), *self.fields, len(self.quiet), *self.quiet]
        for i in range(0, len(asks), SUBJECTS_PER_CALL):
            group = asks[i : i + SUBJECTS_PER_CALL]
            args: list[Any] = list(head)
            for ask in group:
                args += ["a" if ask.agent else "g", ask.name, ask.history_version or "", len(ask.ranges)]
                for lo, hi in ask.ranges:
                    args += [lo, hi]
            reply = await self._script(args=args)
            out += self._parse(group, reply)
        return out

    def _parse(self, group: Sequence[Ask], reply: list[Any]) -> list[RangeRead]:
        read_us = int(reply[0])
        pos = 1
        out: list[RangeRead] = []
        fields = self.fields
        for ask in group:
            if ask.agent:
                team, state, since, reason, last, dirty, version, raw = reply[pos : pos + AGENT_HEAD]
                pos += AGENT_HEAD
            else:
                (dirty,) = reply[pos : pos + GROUP_HEAD]
                pos += GROUP_HEAD
            late = reply[pos]
            pos += 1
            sums: list[w.Sums] = []
            firsts: list[int | None] = []
            for row in reply[pos : pos + len(ask.ranges)]:
                first = int(row[0])
                firsts.append(None if first < 0 else first)
                sums.append({fields[f]: v for f, v in zip(row[1::2], row[2::2], strict=True)})
            pos += len(ask.ranges)
            read = RangeRead(ask.name, sums, firsts, _us(late), _us(dirty), read_us)
            if ask.agent:
                read.team = _s(team) or None
                read.state = _s(state) or None
                read.since_ms = int(since) if since else None
                read.reason = _s(reason) or None
                read.last_ts_ms = int(float(last)) if last else None
                read.history_version = int(version) if version else 0
                # stored as 'version|json' (a versioned state, streams/batch.py)
                read.tally = states.tally_of(bytes(raw).partition(b"|")[2], ask.tally) if raw else None
            out.append(read)
        return out


def _us(raw: bytes | str) -> int:
    return int(float(raw)) if raw else 0


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
