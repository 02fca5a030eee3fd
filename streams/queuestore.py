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
        self, now_ms: int, windows_s: Sequence[int], coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S
    ) -> tuple[list[CampaignRow], CampaignRow]:
        """Campaigns with a dial in the last 30 days and the floor: sums per rolling window name and for the
        coarse windows (24h, 30d). The floor's rolling windows come from the agents' counters, not from here.
        (The monitor keeps what it read between calls: monitor/campaigndays.py.)"""
        names = await self._names("campaigns", now_ms - campaigns.COARSE_KEEP_S * 1000)
        prefixes = {n: keys.campaign_chunk_prefix(n) for n in names}
        fine = await self._window_sums(prefixes, campaigns.CAMPAIGN_FIELDS, now_ms, windows_s)
        days = coarse_days(now_ms, coarse)
        subjects = [*names, campaigns.FLOOR]
        read = await self.campaign_days([(sub, day) for sub in subjects for day in days])
        rows = [
            campaign_row(sub, fine.get(sub, {}), [read[(sub, day)] for day in days], now_ms, windows_s, coarse)
            for sub in subjects
        ]
        return rows[:-1], rows[-1]

    async def campaign_days(self, wanted: Sequence[tuple[str, int]]) -> dict[tuple[str, int], dict[int, Sums]]:
        """The hourly counters of each (campaign or campaigns.FLOOR, day) asked for, by absolute hour."""
        async with self.client.pipeline(transaction=False) as pipe:
            for subject, day in wanted:
                pipe.hgetall(keys.coarse_key(self.ns, subject, day))
            raw = await pipe.execute() if wanted else []
        return {(subject, day): _coarse_hours(day, flat) for (subject, day), flat in zip(wanted, raw, strict=True)}

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


def coarse_days(now_ms: int, coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S) -> range:
    """The days (since the epoch, UTC) the coarse windows reach at `now_ms`."""
    first_day = campaigns.coarse_buckets(now_ms, max(coarse.values(), default=0))[0] // 24
    return range(first_day, campaigns.coarse_of(now_ms) // 24 + 1)


def campaign_row(
    subject: str,
    fine: Mapping[int, Sums],
    days: Iterable[Mapping[int, Sums]],
    now_ms: int,
    windows_s: Sequence[int],
    coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S,
) -> CampaignRow:
    """A campaign's row (the floor's for campaigns.FLOOR) from its rolling sums and its days' hourly counters."""
    hours: dict[int, Sums] = {}
    for day in days:
        hours.update(day)
    row = CampaignRow(subject)
    if subject != campaigns.FLOOR:  # the floor's rolling windows come from the agents' counters
        for ws in windows_s:
            row.sums[window_name(ws)] = fine[ws]
    for name, ws in coarse.items():
        row.sums[name] = campaigns.sum_coarse(hours, now_ms, ws)
    return row


def _coarse_hours(day: int, flat: Mapping[bytes, bytes]) -> dict[int, dict[str, int]]:
    """A day's hourly campaign counters (`<field>.<hour>`) by absolute hour."""
    hours: dict[int, dict[str, int]] = {}
    for k, v in flat.items():
        name, dot, offset = _s(k).partition(".")
        if dot:
            hours.setdefault(day * 24 + int(offset), {})[name] = int(v)
    return hours
