"""The floor's queues and campaigns as this monitor last read them, kept current by what changed.

Like the floor cache's agents (monitor/floorcache.py): each queue's and campaign's window sums are kept in the
parts of monitor/subjects.py and read again only when an apply wrote them (`gdirty`, scored by Redis's clock)
or when a window's start passes one of their counts (a schedule); a queue's waiting calls are read again when
an apply changed them. Every read (snapshots, /ws, /metrics) then costs what it shows, not a read of every
queue and campaign.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from callpulse.cancelling import together
from monitor import subjects
from monitor.campaigndays import CampaignDays
from streams import campaigns, keys, queues
from streams.queuestore import CampaignRow, QueueRow, QueueStore
from streams.rangeread import Ask, RangeReader
from streams.schedule import Schedule, next_change_ms
from streams.store import WindowStore

_ROSTER = {"qb": "queues", "cb": "campaigns"}
_NEVER = 10**13
_GDIRTY_KEPT_MS = 3_000_000  # the apply script keeps gdirty marks an hour


class GroupCache:
    """Queues (`qb:<queue>:`) and campaigns (`cb:<campaign>:`) by chunk prefix, with their sums per window."""

    def __init__(self, store: WindowStore, windows_s: Sequence[int], *, longest_s: int, lookback_ms: int) -> None:
        self.store = store
        self.windows_s = tuple(windows_s)
        self.longest_s = longest_s  # a queue is listed while it had an event in the longest window...
        self.lookback_ms = lookback_ms  # ...or this long before it (a caller may still wait)
        self._days = CampaignDays(QueueStore(store.client, store.ns, tz=store.tz))  # the campaigns' 24h and 30d
        self._readers = {
            "qb": RangeReader(store.client, store.ns, queues.QUEUE_FIELDS),
            "cb": RangeReader(store.client, store.ns, campaigns.CAMPAIGN_FIELDS),
        }
        self._kept: dict[str, subjects.Kept] = {}
        self._last_ts: dict[str, int] = {}
        self._waiting: dict[str, list[int]] = {}  # queue -> entry ts of its waiting calls, sorted
        self._schedule = Schedule()
        self._coarse_dirty: set[str] = {campaigns.FLOOR}  # campaign subjects whose hours to read again
        self._generation: str | None = None
        self._since_us = 0
        self._listed = False  # the registries were read whole (then followed by what gdirty names)
        self._refreshed_ms = 0
        self._queue_lists: dict[tuple[int, ...], _QueueList] = {}  # by windows (snapshots one, /metrics all)
        self._campaign_lists: dict[tuple[int, ...], _CampaignList] = {}  # by windows

    async def refresh(self, now_ms: int, generation: str, *, settled_before_ms: int) -> None:
        """Bring the groups up to now (called under the floor cache's refresh lock, with its now), the campaigns'
        days included: a read that follows (queues_at, campaigns_at) reads nothing from Redis.

        `settled_before_ms`: days that ended before it can no longer change (kept for the generation)."""
        if generation != self._generation or now_ms - self._refreshed_ms > _GDIRTY_KEPT_MS:
            # a new store generation, or gdirty (an hour) may have lost some of what changed: read everything
            self._kept, self._waiting, self._last_ts, self._schedule = {}, {}, {}, Schedule()
            self._coarse_dirty, self._since_us, self._listed = {campaigns.FLOOR}, 0, False
            self._generation = generation
            self._queue_lists, self._campaign_lists = {}, {}
        async with self.store.client.pipeline(transaction=False) as pipe:  # Redis's time first: nothing is missed
            pipe.time()
            pipe.zrangebyscore(keys.group_dirty_key(self.store.ns), self._since_us, "+inf")
            (secs, micros), raw = await pipe.execute()
        since_us = int(secs) * 1_000_000 + int(micros)
        # redis-py types replies as bytes | str (it cannot see decode_responses); our clients never decode
        written = cast("list[bytes]", raw)
        dirty = {_s(p) for p in written}
        roster = await self._roster(now_ms, dirty)
        gone = [p for p in self._kept if p not in roster]
        for prefix in gone:
            self._forget(prefix)
        self._coarse_dirty |= {p[3:-1] if p != "cz:" else campaigns.FLOOR for p in dirty if p[:3] in ("cb:", "cz:")}
        due = (dirty & roster.keys()) | {p for p in roster if p not in self._kept}
        due |= {p for p in self._schedule.pop_due(now_ms) if p in roster}
        self._last_ts = roster
        reread, self._coarse_dirty = self._coarse_dirty, set()
        self._touch([*due, *gone])
        try:  # the windows, the waiting calls and the campaigns' days alongside each other: other keys
            _, _, days_read = await together(
                self._read(now_ms, sorted(due)),
                self._read_waiting(sorted(p for p in due if p.startswith("qb:"))),
                self._days.read(
                    now_ms, [p[3:-1] for p in roster if p.startswith("cb:")], reread=reread,
                    settled_before_ms=settled_before_ms, generation=self._generation,
                ),
            )  # fmt: skip
            for held in self._campaign_lists.values():
                held.touched.update(days_read)
        except BaseException:
            self._generation = None  # a failed or cancelled refresh lost what it took off the schedule: read all
            self._coarse_dirty |= reread
            raise
        finally:
            self._touch(list(due))  # also after the reads: a reply worked out meanwhile saw some of them unread
        self._since_us, self._refreshed_ms = since_us, now_ms

    async def _roster(self, now_ms: int, dirty: set[str]) -> dict[str, int]:
        """The listed queues and campaigns -> their latest event ts: the registries read whole on a new generation,
        then only the entries of those written since (an apply that moves a registry entry marks it in gdirty)."""
        floors = {
            "qb": now_ms - self.longest_s * 1000 - self.lookback_ms,
            "cb": now_ms - campaigns.COARSE_KEEP_S * 1000,
        }
        roster = dict(self._last_ts)
        if not self._listed:
            for kind, since in floors.items():
                rows = cast(
                    "list[tuple[bytes, float]]",
                    await self.store.client.zrangebyscore(
                        keys.registry_key(self.store.ns, _ROSTER[kind]), f"({since}", "+inf", withscores=True
                    ),
                )
                roster.update((f"{kind}:{_s(name)}:", int(score)) for name, score in rows)
            self._listed = True
        else:
            asked = [(kind, sorted(p for p in dirty if p.startswith(kind + ":"))) for kind in floors]
            asked = [(kind, names) for kind, names in asked if names]
            if asked:
                async with self.store.client.pipeline(transaction=False) as pipe:
                    for kind, names in asked:
                        pipe.zmscore(keys.registry_key(self.store.ns, _ROSTER[kind]), [p[3:-1] for p in names])
                    replies = await pipe.execute()
                for (_kind, names), scores in zip(asked, replies, strict=True):
                    roster.update((p, int(sc)) for p, sc in zip(names, scores, strict=True) if sc is not None)
        return {p: ts for p, ts in roster.items() if ts > floors[p[:2]]}

    async def _read(self, now_ms: int, due: Sequence[str]) -> None:
        """Bring the due queues and campaigns to now, both kinds alongside each other."""
        kinds = [(kind, [p for p in due if p.startswith(kind + ":")]) for kind in self._readers]
        await together(*(self._read_kind(now_ms, kind, names) for kind, names in kinds if names))

    async def _read_kind(self, now_ms: int, kind: str, names: Sequence[str]) -> None:
        tz = self.store.tz
        read, _, _ = await subjects.bring_to_now(
            self._readers[kind], self._kept, names, now_ms, self.windows_s, tz,
            lambda p, step: Ask(p, step.ranges, agent=False),
        )  # fmt: skip
        for r, kept in read:
            # leaving the roster is the registry's to say (read each refresh); events ahead of now count
            due_ms = next_change_ms(
                kept.firsts(), now_ms=now_ms, last_ts_ms=self._last_ts[r.name], span_ms=_NEVER, tz=tz
            )
            self._schedule.set(r.name, due_ms)

    async def _read_waiting(self, prefixes: Sequence[str]) -> None:
        if not prefixes:
            return
        since = "-inf"  # every waiting call still in the set (the apply script drops those long past max wait)
        async with self.store.client.pipeline(transaction=False) as pipe:
            for prefix in prefixes:
                pipe.zrangebyscore(keys.waiting_key(self.store.ns, prefix[3:-1]), since, "+inf", withscores=True)
            raw = await pipe.execute()
        for prefix, rows in zip(prefixes, raw, strict=True):
            self._waiting[prefix] = sorted(int(score) for _, score in rows)

    def _forget(self, prefix: str) -> None:
        self._kept.pop(prefix, None)
        self._waiting.pop(prefix, None)
        self._schedule.drop(prefix)

    def _touch(self, prefixes: Sequence[str]) -> None:
        """Mark queues and campaigns a refresh changed, for the next queues_at and campaigns_at to work out."""
        queue_prefixes = [p for p in prefixes if p.startswith("qb:")]
        for held in self._queue_lists.values():
            held.touched.update(queue_prefixes)
        names = [p[3:-1] for p in prefixes if p.startswith("cb:")]
        for listed in self._campaign_lists.values():
            listed.touched.update(names)

    def queues_at(self, now_ms: int, windows_s: Sequence[int], max_wait_ms: Callable[[str], int]) -> list[QueueRow]:
        """The listed queues with their sums for `windows_s` and the calls waiting now (within max wait).

        `max_wait_ms` is the settings' (the same at every call). Only the queues a refresh changed since the last
        call and those whose oldest waiting call passed its max wait since are worked out again; a queue's row is
        the same object while nothing in it changed (the snapshot reuses what it worked out from it)."""
        listed = self._queue_lists.get(tuple(windows_s))
        if listed is None or now_ms < listed.now_ms:  # first call, or the clock went back: every queue
            listed = self._queue_lists[tuple(windows_s)] = _QueueList()
            todo = {p for p in self._kept if p.startswith("qb:")}
        else:
            todo = listed.touched
            while listed.expiry and listed.expiry[0][0] <= now_ms:
                todo.add(heapq.heappop(listed.expiry)[1])
        listed.touched, listed.now_ms = set(), now_ms
        for prefix in todo:
            kept = self._kept.get(prefix)
            if kept is None:
                if listed.rows.pop(prefix, None) is not None:
                    listed.order = None
                continue
            name = prefix[3:-1]
            entries = self._waiting.get(prefix, [])
            wait_ms = max_wait_ms(name)
            i = bisect.bisect_right(entries, now_ms - wait_ms)
            waiting = len(entries) - i, entries[i] if i < len(entries) else None
            if i < len(entries):  # its oldest waiting call passes max wait then: the row changes
                heapq.heappush(listed.expiry, (entries[i] + wait_ms, prefix))
            held = listed.rows.get(prefix)
            if held is None:
                listed.order = None
            elif held[0] is kept and held[1] == waiting:
                continue
            sums = kept.sums()
            row = QueueRow(name, {ws: _full(sums[ws], queues.QUEUE_FIELDS) for ws in windows_s}, *waiting)
            listed.rows[prefix] = (kept, waiting, row)
        if listed.order is None:
            listed.order = sorted(listed.rows)
        rows = listed.rows
        return [rows[p][2] for p in listed.order]

    def campaigns_at(self, now_ms: int, windows_s: Sequence[int]) -> tuple[list[CampaignRow], CampaignRow]:
        """The campaigns with their rolling sums and coarse windows (their days as the last refresh read them, at
        the same now or in the same hour), and the floor's coarse windows.

        Only the campaigns a refresh changed since the last call (their rolling sums or their days) are worked out
        again, and every campaign once an hour (the coarse windows move by the hour)."""
        hour = campaigns.coarse_of(now_ms)
        listed = self._campaign_lists.get(tuple(windows_s))
        if listed is None or listed.hour != hour:
            listed = self._campaign_lists[tuple(windows_s)] = _CampaignList(hour=hour)
            todo = {p[3:-1] for p in self._kept if p.startswith("cb:")} | {campaigns.FLOOR}
        else:
            todo = listed.touched
        listed.touched = set()
        for name in todo:
            if name == campaigns.FLOOR:  # the floor's rolling windows come from the agents' counters
                listed.floor = self._days.row(name, {}, now_ms, windows_s)
                continue
            kept = self._kept.get(f"cb:{name}:")
            if kept is None:
                if listed.rows.pop(name, None) is not None:
                    listed.order = None
                continue
            if name not in listed.rows:
                listed.order = None
            sums = kept.sums()
            fine = {ws: _full(sums[ws], campaigns.CAMPAIGN_FIELDS) for ws in windows_s}
            listed.rows[name] = self._days.row(name, fine, now_ms, windows_s)
        if listed.order is None:
            listed.order = sorted(listed.rows)
        rows = listed.rows
        floor = listed.floor if listed.floor is not None else self._days.row(campaigns.FLOOR, {}, now_ms, windows_s)
        return [rows[n] for n in listed.order], floor


@dataclass
class _QueueList:
    """The queue rows of one set of windows as last worked out, and what is due again (GroupCache.queues_at)."""

    rows: dict[str, tuple[subjects.Kept, tuple[int, int | None], QueueRow]] = field(default_factory=dict)
    order: list[str] | None = None  # the prefixes sorted (None: to sort again)
    touched: set[str] = field(default_factory=set)  # prefixes a refresh changed since the last call
    expiry: list[tuple[int, str]] = field(default_factory=list)  # heap: when a waiting call passes max wait
    now_ms: int = 0


@dataclass
class _CampaignList:
    """The campaign rows of one set of windows as last worked out (GroupCache.campaigns_at), for one hour."""

    hour: int
    rows: dict[str, CampaignRow] = field(default_factory=dict)
    floor: CampaignRow | None = None
    order: list[str] | None = None  # the names sorted (None: to sort again)
    touched: set[str] = field(default_factory=set)  # campaigns (and campaigns.FLOOR) a refresh changed since


def _full(sums: dict[str, int], fields: Sequence[str]) -> dict[str, int]:
    """Every field, zeros included (as a full read gives)."""
    return {f: sums.get(f, 0) for f in fields}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
