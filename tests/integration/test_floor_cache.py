"""The monitor's floor cache (agents, queues, campaigns) agrees with a fresh read of the store, as events arrive and
as time passes.

A simulated floor goes through the worker's own batch path (`Processor`) into a real redis-server. After each
slice of events, and then at random later times with no event (buckets leave windows, agents leave the floor),
every agent, team and floor total the cache serves must equal what reading every agent from the store at that
moment gives (`WindowStore.read_windows`, time in state from the buckets plus the open state up to now), and
the snapshot's agent rows built with values kept between snapshots (`memo`) must equal rows built afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from callpulse.embedded import EmbeddedRedis
from callpulse.settings import Settings, load_thresholds
from callpulse.simulate import generate
from monitor import snapshot
from monitor.floorcache import FloorCache
from monitor.groupcache import GroupCache
from monitor.queueview import SectionMemo
from monitor.snapshot import Memo
from streams import windows as w
from streams.processor import Processor, Record
from streams.queuestore import QueueStore
from streams.store import AgentWindows, WindowStore, namespace

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "callpulse" / "scorecard.example.toml"


async def _no_deadletter(dead: Sequence[tuple[Record, str]]) -> None:
    raise AssertionError(f"dead-lettered: {dead}")


def _nonzero(sums: w.Sums) -> dict[str, int]:
    return {k: int(v) for k, v in sums.items() if v}


async def _fresh(store: WindowStore, now_ms: int, windows_s: Sequence[int], roster_s: int) -> list[AgentWindows]:
    roster = await store.active_agents(now_ms, roster_s)
    return await store.read_windows(now_ms, windows_s, only=roster) if roster else []


def _compare(
    cache: FloorCache,
    fresh: list[AgentWindows],
    now_ms: int,
    windows_s: Sequence[int],
    settings: Settings,
    memo: Memo,
    sections: SectionMemo,
) -> None:
    rows = cache.agents_at(now_ms, windows_s)
    for ws in windows_s:  # snapshots built from the cache, with what it keeps between them, are the ones built afresh
        kept = snapshot.build(
            rows, window_s=ws, settings=settings, now_ms=now_ms, memo=memo, sections=sections,
            teams=cache.teams_at(now_ms, [ws]), floor=cache.floor_at(now_ms, [ws]), state_counts=cache.state_counts,
        )  # fmt: skip
        afresh = snapshot.build(fresh, window_s=ws, settings=settings, now_ms=now_ms)
        # scores worked out again only for the agents that changed, team and floor means from running exact sums
        kept["scores"] = snapshot.build(
            rows, window_s=ws, settings=settings, now_ms=now_ms, include_agents=False,
            scored=cache.scores_at(now_ms, settings), teams=cache.teams_at(now_ms, [ws]),
        )  # fmt: skip
        team_scores = {t["team"]: t["score"] for t in kept["scores"]["teams"]}
        assert team_scores == {t["team"]: t["score"] for t in afresh["teams"]}, ("team scores", ws)
        assert kept["scores"]["floor"]["score"] == afresh["floor"]["score"], ("floor score", ws)
        for part in ("agents", "teams", "floor"):
            assert kept[part] == afresh[part], (part, ws)
    cached = {r.agent_id: r for r in rows}
    assert set(cached) == {r.agent_id for r in fresh}, now_ms
    for row in fresh:
        mine = cached[row.agent_id]
        assert (mine.team, mine.state, mine.since_ms) == (row.team, row.state, row.since_ms)
        for ws in windows_s:
            assert _nonzero(mine.sums[ws]) == _nonzero(row.sums[ws]), (row.agent_id, ws, now_ms)
    by_team: dict[str, list[AgentWindows]] = {}
    for row in fresh:
        if row.team:
            by_team.setdefault(row.team, []).append(row)
    teams = {t.team: t for t in cache.teams_at(now_ms, windows_s)}
    assert set(teams) == set(by_team)
    for team, members in by_team.items():
        assert teams[team].agents == len(members)
        for ws in windows_s:
            assert _nonzero(teams[team].sums[ws]) == _nonzero(w.total(m.sums[ws] for m in members)), (team, ws)
    agents, floor = cache.floor_at(now_ms, windows_s)
    assert agents == len(fresh)
    for ws in windows_s:
        assert _nonzero(floor[ws]) == _nonzero(w.total(r.sums[ws] for r in fresh)), ws


async def _compare_groups(cache: FloorCache, now_ms: int, windows_s: Sequence[int], settings: Settings) -> None:
    """Queues and campaigns from the cache equal a fresh read of every queue and campaign."""
    groups = cache.groups
    assert groups is not None
    fresh_store = QueueStore(cache.store.client, cache.store.ns, tz=settings.tz)

    def max_wait(q: str) -> int:
        return settings.queue(q).max_wait_s * 1000

    fresh = await fresh_store.queues(
        now_ms, windows_s, longest_s=settings.longest_window_s, max_wait_ms=max_wait,
        lookback_ms=settings.max_wait_s * 1000,
    )  # fmt: skip
    assert groups.queues_at(now_ms, windows_s, max_wait) == fresh, now_ms
    named, floor = await fresh_store.campaigns(now_ms, windows_s)
    kept = groups.campaigns_at(now_ms, windows_s)
    assert kept == (named, floor), now_ms


# The example's telesales scorecard over the last hour; with occupancy (time in state) every agent is scored again
# at every read, without it only the agents that changed.
SCORED = (EXAMPLE.read_text(encoding="utf-8")).replace('window = "today"', 'window = "1h"')
SCORED_TIMED = SCORED + "[scorecard.kpi.occupancy]\nweight = 5\ntarget = 0.8\n"


async def _maybe_read_ahead(cache: FloorCache, clock: dict[str, float], rnd: random.Random) -> float | None:
    """Half the time, read ahead a moment before a bucket edge, as the monitor's loop does (the edge where the next
    agent's windows change by time, else the next one), and return a time past the edge to move the clock to:
    mostly in the edge's bucket, where the refresh takes what was read ahead and still holds, sometimes later,
    where it must take none of it. None: no read ahead."""
    if rnd.random() < 0.5:
        return None
    due_ms = cache.view.schedule.next_due_ms() if cache.view is not None else None
    if due_ms is not None and due_ms > clock["now"] * 1000:
        edge_s = due_ms / 1000  # a bucket edge
    else:
        edge_s = (int(clock["now"] * 1000) // w.BUCKET_MS + 1) * w.BUCKET_MS / 1000
    clock["now"] = max(clock["now"], edge_s - rnd.uniform(0.1, 3.9))
    await cache.read_ahead()
    return max(clock["now"], edge_s + rnd.choice([rnd.uniform(0, 9.9), rnd.uniform(10, 30)]))


async def _cancel_a_refresh(cache: FloorCache, rnd: random.Random) -> int:
    """Start a refresh and cancel it after a random number of the loop's turns, as when the request it serves
    is cancelled (or one of its other reads failed); 1 when it was cancelled part way, 0 when it had finished."""
    task = asyncio.create_task(cache.refresh())
    for _ in range(rnd.randrange(1, 30)):
        await asyncio.sleep(0)
    struck = int(not task.done())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return struck


@pytest.mark.parametrize(
    ("seed", "windows", "card"),
    [(1, (900, 3600, w.TODAY), SCORED), (2, (900, 3600, 28800, w.TODAY), SCORED_TIMED), (3, (900, 3600), SCORED)],
)
async def test_floor_cache_equals_a_fresh_read_as_events_arrive_and_time_passes(
    redis_server: EmbeddedRedis, topic_prefix: str, seed: int, windows: tuple[int, ...], card: str
) -> None:
    rnd = random.Random(seed)
    settings = Settings(kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix))
    settings = replace(settings, **load_thresholds(card))
    settings = replace(settings, windows_s=windows)  # without `today` agents leave the floor after an hour
    client = aioredis.Redis.from_url(redis_server.url)
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    await store.mark_initialised()
    processor = Processor(settings, store, _no_deadletter)
    clock = {"now": time.time()}
    groups = GroupCache(
        store, settings.windows_s, longest_s=settings.longest_window_s, lookback_ms=settings.max_wait_s * 1000
    )
    cache = FloorCache(store, settings.windows_s, settings.longest_window_s, clock=lambda: clock["now"], groups=groups)
    windows_s = list(settings.windows_s)
    memo: Memo = {}
    sections: SectionMemo = {}
    events: list[tuple[str, dict[str, Any]]] = list(
        generate(agents=12, rate=2.0, duration_s=1800, seed=seed, start_s=clock["now"] - 1800)
    )
    rnd.shuffle(events)  # any order: late events split state intervals and revise FCR
    try:
        offset = 0
        while offset < len(events):
            size = rnd.randrange(20, 400)
            records = [
                Record(topic, 0, offset + i, None, orjson.dumps(event))
                for i, (topic, event) in enumerate(events[offset : offset + size])
            ]
            after = await _maybe_read_ahead(cache, clock, rnd)  # then the events: applies after a read ahead
            await processor.process(records)
            offset += size
            if after is not None and rnd.random() < 0.5:
                early_ms = await cache.refresh()  # before the edge: the agents the events touched are read again
                if rnd.random() < 0.5:
                    cache.score_ahead(early_ms, settings)  # as the monitor's loop does after its refreshes
            clock["now"] = max(time.time(), after or clock["now"])  # never back: a read ahead may be past real time
            now_ms = await cache.refresh()
            fresh = await _fresh(store, now_ms, windows_s, settings.longest_window_s)
            _compare(cache, fresh, now_ms, windows_s, settings, memo, sections)
            await _compare_groups(cache, now_ms, windows_s, settings)
        struck = 0
        for _ in range(24):  # no more events: windows slide (in and past chunks), agents leave the floor
            after = await _maybe_read_ahead(cache, clock, rnd)
            clock["now"] = after if after is not None else clock["now"] + rnd.choice([3, 11, 97, 400, 601, 1300, 3599])
            if rnd.random() < 0.5:
                struck += await _cancel_a_refresh(cache, rnd)  # a request gone mid-read: the next one loses nothing
            now_ms = await cache.refresh()
            if rnd.random() < 0.5:
                cache.score_ahead(now_ms, settings)  # scored ahead by the monitor's loop, then read
            fresh = await _fresh(store, now_ms, windows_s, settings.longest_window_s)
            _compare(cache, fresh, now_ms, windows_s, settings, memo, sections)
            await _compare_groups(cache, now_ms, windows_s, settings)
        assert cache.ahead_used > 0  # refreshes took reads ahead (and the comparisons held)
        assert struck > 0  # refreshes were cancelled part way (and the comparisons after them held)
    finally:
        await client.aclose()


async def test_what_the_floor_cache_served_holds_still_while_the_cache_moves_on(
    redis_server: EmbeddedRedis, topic_prefix: str
) -> None:
    # A request (a snapshot, a /metrics scrape) reads the cache, awaits Redis for its other parts, and only then
    # builds its reply; the refresh loop moves the cache on meanwhile. What the request was served must not change
    # under it, or a reply mixes two moments (and a memo keyed on the moved counters keeps the old values).
    settings = Settings(kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix))
    client = aioredis.Redis.from_url(redis_server.url)
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    await store.mark_initialised()
    processor = Processor(settings, store, _no_deadletter)
    groups = GroupCache(
        store, settings.windows_s, longest_s=settings.longest_window_s, lookback_ms=settings.max_wait_s * 1000
    )
    cache = FloorCache(store, settings.windows_s, settings.longest_window_s, groups=groups)
    scored = settings.replace(**load_thresholds(EXAMPLE.read_text(encoding="utf-8")))
    windows_s = list(settings.windows_s)
    now = time.time()
    events = [
        Record(topic, 0, i, None, orjson.dumps(event))
        for i, (topic, event) in enumerate(generate(agents=12, rate=2.0, duration_s=1200, seed=7, start_s=now - 1200))
    ]
    try:
        await processor.process(events[: len(events) // 2])
        now_ms = await cache.refresh()

        async def served() -> Any:
            return (
                cache.teams_at(now_ms, windows_s),
                cache.floor_at(now_ms, windows_s),
                cache.agents_at(now_ms, windows_s),
                cache.state_counts_by_team(),
                cache.scores_at(now_ms, scored),
                groups.queues_at(now_ms, windows_s, lambda q: settings.queue(q).max_wait_s * 1000),
                groups.campaigns_at(now_ms, windows_s),
            )

        first = await served()
        held = copy.deepcopy(first)
        await processor.process(events[len(events) // 2 :])
        await cache.refresh()
        assert await served() != held, "the second half of the shift changed nothing: the test proves nothing"
        assert first == held
    finally:
        await client.aclose()


async def test_a_call_stops_waiting_when_it_passes_max_wait_with_no_event_to_say_so(
    redis_server: EmbeddedRedis, topic_prefix: str
) -> None:
    # A caller who waits past the queue's max_wait no longer counts as waiting; nothing is written then, so the
    # group cache must notice by the clock alone (its expiry schedule), each call at its own time, in order.
    settings = Settings(kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix))
    settings = replace(settings, **load_thresholds('[queues]\nmax_wait = "10m"\n', source="t.toml"))
    client = aioredis.Redis.from_url(redis_server.url)
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    await store.mark_initialised()
    clock = {"now": time.time()}
    groups = GroupCache(
        store, settings.windows_s, longest_s=settings.longest_window_s, lookback_ms=settings.max_wait_s * 1000
    )
    cache = FloorCache(store, settings.windows_s, settings.longest_window_s, clock=lambda: clock["now"], groups=groups)
    windows_s = list(settings.windows_s)
    t0 = clock["now"]
    entries = {"support-a": [t0 - 500, t0 - 300, t0 - 100], "support-b": [t0 - 200]}
    events = [
        {"event_id": f"e-{q}-{i}", "type": "call.queued", "call_id": f"c-{q}-{i}", "queue": q, "ts": ts}
        for q, times in entries.items()
        for i, ts in enumerate(times)
    ]
    try:
        records = [Record("calls", 0, i, None, orjson.dumps(e)) for i, e in enumerate(events)]
        await Processor(settings, store, _no_deadletter).process(records)
        seen = []
        for step_s in (0, 50, 101, 60, 150, 250, 1):  # at t0+0, 50, 151, 211, 361, 611, 612 s
            clock["now"] += step_s
            now_ms = await cache.refresh()
            await _compare_groups(cache, now_ms, windows_s, settings)
            rows = groups.queues_at(now_ms, windows_s, lambda q: settings.queue(q).max_wait_s * 1000)
            seen.append({r.queue: r.waiting for r in rows})
        assert [s.get("support-a") for s in seen] == [3, 3, 2, 2, 1, 0, 0]
        assert [s.get("support-b") for s in seen] == [1, 1, 1, 1, 1, 0, 0]
    finally:
        await client.aclose()
