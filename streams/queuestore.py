"""Reads of queues, campaigns and agent presence from Redis (the writes go through the store's apply script).

Queue and campaign buckets are laid out like an agent's (streams/keys.py: `qb:<queue>:<chunk>`,
`cb:<campaign>:<chunk>`), so the store's group read script sums them by their key prefixes. Waiting calls
are sorted sets read at `now`; campaign hours (24h, 30d) are one hash per day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, cast

import redis.asyncio as aioredis

from callpulse.settings import window_name
from streams import campaigns, keys, queues
from streams.lua import READ_GROUPS_LUA
from streams.store import READ_AGENTS_PER_CALL, read_head

Sums = dict[str, int]


@dataclass
class QueueRow:
    """One queue as read: counter sums per window (seconds -> sums) and its live waiting calls."""

    queue: str
    sums: dict[int, Sums]
    waiting: int = 0
    oldest_entry_ms: int | None = None  # entry ts of the longest-waiting call, None when none wait


@dataclass
class CampaignRow:
    """One campaign as read (the floor's totals when `campaign` is campaigns.FLOOR): sums per window name."""

    campaign: str
    sums: dict[str, Sums] = field(default_factory=dict)


@dataclass(frozen=True)
class Presence:
    """An agent's current state details: since when (ms) and why."""

    since_ms: int | None
    reason: str | None


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class QueueStore:
    """Redis reads for the floor's queues and campaigns and the agents' state details; the client is injected."""

    def __init__(self, client: aioredis.Redis, ns: str, *, tz: tzinfo = UTC) -> None:
        self.client = client
        self.ns = ns
        self.tz = tz  # where the calendar window `today` starts
        self._read = client.register_script(READ_GROUPS_LUA)
        # Campaign days that can no longer change (subject, day) -> hourly counters, for one store generation.
        self._settled: dict[tuple[str, int], dict[int, dict[str, int]]] = {}
        self._settled_generation: str | None = None
        self._days: dict[tuple[str, int], dict[int, dict[str, int]]] = {}  # days that still move, with `reread`
        self._complete: dict[str, tuple[int, int, str | None]] = {}  # subject -> days it holds all of
        self._day_reads: dict[str, int] = {}  # subject -> how many of its day reads so far (a row is as they were)
        self._rows: dict[str, tuple[object, tuple[Any, ...], CampaignRow]] = {}  # rows built, by `tokens`

    async def _names(self, kind: str, since_ms: int) -> list[str]:
        # redis-py types replies as bytes | str (it cannot see decode_responses); our clients never decode
        rows = cast(
            "list[bytes]", await self.client.zrangebyscore(keys.registry_key(self.ns, kind), f"({since_ms}", "+inf")
        )
        return sorted(_s(r) for r in rows)

    async def _window_sums(
        self, prefixes: Mapping[str, str], fields: Sequence[str], now_ms: int, windows_s: Sequence[int]
    ) -> dict[str, dict[int, Sums]]:
        """Sums per window of each subject's chunks (`prefixes`: name -> chunk key prefix without the namespace),
        by the store's group read script (its reply: per subject nwin * nfields sums, window-major)."""
        names = list(prefixes)
        if not names or not windows_s:
            return {n: {} for n in names}
        head = read_head(self.ns, now_ms, windows_s, self.tz, fields)
        out: dict[str, dict[int, Sums]] = {}
        nf = len(fields)
        step = len(windows_s) * nf
        for i in range(0, len(names), READ_AGENTS_PER_CALL):
            group = names[i : i + READ_AGENTS_PER_CALL]
            flat = await self._read(args=[*head, *(prefixes[n] for n in group)])
            for k, name in enumerate(group):
                row = flat[k * step : (k + 1) * step]
                out[name] = {
                    ws: dict(zip(fields, map(int, row[j * nf : (j + 1) * nf]), strict=True))
                    for j, ws in enumerate(windows_s)
                }
        return out

    async def queues(
        self,
        now_ms: int,
        windows_s: Sequence[int],
        *,
        longest_s: int,
        max_wait_ms: Callable[[str], int],
        lookback_ms: int,
    ) -> list[QueueRow]:
        """Queues with an event in the longest window (or within `lookback_ms` before it: a caller may still
        wait), their sums and their live waiting calls (entered within the queue's `max_wait_ms`)."""
        names = await self._names("queues", now_ms - longest_s * 1000 - lookback_ms)
        prefixes = {n: keys.queue_chunk_prefix(n) for n in names}
        sums = await self._window_sums(prefixes, queues.QUEUE_FIELDS, now_ms, windows_s)
        raw: list[Any] = []
        if names:
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    key = keys.waiting_key(self.ns, name)
                    since = f"({now_ms - max_wait_ms(name)}"
                    pipe.zcount(key, since, "+inf")
                    pipe.zrangebyscore(key, since, "+inf", start=0, num=1, withscores=True)
                raw = await pipe.execute()
        rows: list[QueueRow] = []
        for i, name in enumerate(names):
            count, first = raw[2 * i], raw[2 * i + 1]
            oldest = int(first[0][1]) if first else None
            rows.append(QueueRow(name, sums[name], int(count), oldest))
        return rows

    async def campaigns(
        self,
        now_ms: int,
        windows_s: Sequence[int],
        coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S,
        *,
        settled_before_ms: int | None = None,
        generation: str | None = None,
        fine: Mapping[str, dict[int, Sums]] | None = None,
        reread: set[str] | None = None,
        tokens: Mapping[str, object] | None = None,
    ) -> tuple[list[CampaignRow], CampaignRow]:
        """Campaigns with a dial in the last 30 days and the floor: sums per rolling window name and for the
        coarse windows (24h, 30d). The floor's rolling windows come from the agents' counters, not from here.

        Days ending before `settled_before_ms` can no longer change (any event for them is late): they are read
        once per store `generation` and kept, so a read costs the days that still move (today, yesterday).
        A caller that follows the writes (monitor/groupcache.py) passes the campaigns' `fine` sums and the
        subjects written since its last call (`reread`, campaigns.FLOOR for the floor): then every day is kept
        and only those subjects' days that still move are read again. With `tokens` (per campaign, an object that
        is the same while its fine sums are), a campaign whose sums, days and hour of now are as at the last call
        gets the same row object back (a reader may reuse what it worked out from it).
        """
        if fine is None:
            names = await self._names("campaigns", now_ms - campaigns.COARSE_KEEP_S * 1000)
            prefixes = {n: keys.campaign_chunk_prefix(n) for n in names}
            fine = await self._window_sums(prefixes, campaigns.CAMPAIGN_FIELDS, now_ms, windows_s)
        else:
            names = sorted(fine)
        longest_coarse = max(coarse.values(), default=0)
        first_day = campaigns.coarse_buckets(now_ms, longest_coarse)[0] // 24
        days = range(first_day, campaigns.coarse_of(now_ms) // 24 + 1)
        subjects = [*names, campaigns.FLOOR]
        if generation != self._settled_generation or settled_before_ms is None:
            self._settled, self._settled_generation, self._days = {}, generation, {}
        if reread is None:
            self._days = {}
        else:
            self._days = {k: v for k, v in self._days.items() if k[0] not in reread and k[1] >= first_day}
        # a subject whose every day is held (and not written since) needs no look at its days
        span = (days.start, days.stop, generation)
        wanted = [
            (sub, day)
            for sub in subjects
            if reread is None or sub in reread or self._complete.get(sub) != span
            for day in days
            if (sub, day) not in self._settled and (sub, day) not in self._days
        ]
        self._complete = {sub: span for sub in subjects} if reread is not None else {}
        async with self.client.pipeline(transaction=False) as pipe:
            for subject, day in wanted:
                pipe.hgetall(keys.coarse_key(self.ns, subject, day))
            raw = await pipe.execute() if wanted else []
        read: dict[tuple[str, int], dict[int, dict[str, int]]] = {}
        for (subject, day), flat in zip(wanted, raw, strict=True):
            self._day_reads[subject] = self._day_reads.get(subject, 0) + 1
            read[(subject, day)] = _coarse_hours(day, flat)
            if settled_before_ms is not None and (day + 1) * 86_400_000 < settled_before_ms:
                self._settled[(subject, day)] = read[(subject, day)]
            elif reread is not None:
                self._days[(subject, day)] = read[(subject, day)]
        rows: dict[str, CampaignRow] = {}
        memo, self._rows = self._rows, {}
        for subject in subjects:
            token = tokens.get(subject) if tokens is not None else None
            key = (tuple(windows_s), campaigns.coarse_of(now_ms), self._day_reads.get(subject), generation)
            held = memo.get(subject)
            if tokens is not None and held is not None and held[0] is token and held[1] == key:
                self._rows[subject], rows[subject] = held, held[2]
                continue
            hours: dict[int, dict[str, int]] = {}
            for day in days:
                hours.update(
                    self._settled.get((subject, day)) or read.get((subject, day)) or self._days.get((subject, day), {})
                )
            row = CampaignRow(subject)
            for ws in windows_s:
                if subject != campaigns.FLOOR:
                    row.sums[window_name(ws)] = fine[subject][ws]
            for name, ws in coarse.items():
                row.sums[name] = campaigns.sum_coarse(hours, now_ms, ws)
            rows[subject] = row
            if tokens is not None:
                self._rows[subject] = (token, key, row)
        floor = rows.pop(campaigns.FLOOR)
        return list(rows.values()), floor

    async def presence(self, agents: Iterable[str]) -> dict[str, Presence]:
        """Since when and why each agent is in its current state (None when no agent.state was seen)."""
        names = list(agents)
        if not names:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for a in names:
                pipe.hmget(keys.meta_key(self.ns, a), "since", "reason")
            raw = await pipe.execute()
        return {
            a: Presence(int(since) if since else None, _s(reason) if reason else None)
            for a, (since, reason) in zip(names, raw, strict=True)
        }

    async def team_states(self, agents: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        """Each agent's current team and state (None when not seen): one HMGET each, pipelined."""
        names = list(agents)
        if not names:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for a in names:
                pipe.hmget(keys.meta_key(self.ns, a), "team", "state")
            raw = await pipe.execute()
        return {
            a: (_s(team) if team else None, _s(state) if state else None)
            for a, (team, state) in zip(names, raw, strict=True)
        }


def _coarse_hours(day: int, flat: Mapping[bytes, bytes]) -> dict[int, dict[str, int]]:
    """A day's hourly campaign counters (`<field>.<hour>`) by absolute hour."""
    hours: dict[int, dict[str, int]] = {}
    for k, v in flat.items():
        name, dot, offset = _s(k).partition(".")
        if dot:
            hours.setdefault(day * 24 + int(offset), {})[name] = int(v)
    return hours
