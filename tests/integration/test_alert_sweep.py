"""The alert sweep on a real redis-server: it reads what can have changed, and alerts still move with time alone.

After its first round the sweeper reads only the agents an apply touched since its last round and those whose
windows' next change (the schedule) has come; team and floor values are kept as totals. The clock is injected,
so "time passes" is a number here, not a wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from callpulse.embedded import EmbeddedRedis
from callpulse.settings import Settings, load_thresholds
from streams.alerts import Alert
from streams.engine import AlertEngine
from streams.processor import Processor, Record
from streams.store import AgentWindows, WindowStore, namespace
from tests.integration.test_core_property import Dead

pytestmark = pytest.mark.integration

NOW_MS = 1_800_000_003_500
NOW = NOW_MS / 1000
TOML = '[windows]\nrolling = ["5m", "1h"]\n\n[kpi.aht_seconds]\nwindow = "5m"\nwarning_above = 360\nmin_samples = 2\n'
SETTINGS = Settings(topic_prefix="sweep-", **load_thresholds(TOML))


class CountingStore(WindowStore):
    """The real store, noting which agents each read asked for (None: the whole floor)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[set[str] | None] = []

    async def read_windows(
        self, now_ms: int, windows_s: Sequence[int], only: Iterable[str] | None = None, **options: Any
    ) -> list[AgentWindows]:
        only = None if only is None else set(only)
        self.reads.append(only)
        return await super().read_windows(now_ms, windows_s, only, **options)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


def call(agent: str, n: int, talk_seconds: float, ts: float, team: str = "north") -> dict[str, Any]:
    return {"event_id": f"{agent}-{n}", "type": "call.ended", "ts": ts, "call_id": f"{agent}-c{n}", "agent_id": agent,
            "team": team, "direction": "inbound", "connected": True, "talk_seconds": talk_seconds}  # fmt: skip


async def apply(store: WindowStore, clock: Clock, events: Sequence[dict[str, Any]], first_offset: int = 0) -> None:
    records = [Record("calls", 0, first_offset + i, None, orjson.dumps(e)) for i, e in enumerate(events)]
    await Processor(SETTINGS, store, Dead(), clock=clock).process(records)


async def setup(client: aioredis.Redis) -> tuple[CountingStore, Clock, AlertEngine, list[Alert]]:
    store = CountingStore(client, namespace(SETTINGS.topic_prefix))
    await store.mark_initialised()
    clock = Clock(NOW)
    published: list[Alert] = []

    async def publish(alert: Alert) -> None:
        published.append(alert)

    return store, clock, AlertEngine(SETTINGS, store, publish, clock=clock), published


async def test_after_its_first_round_the_sweep_reads_only_the_agents_an_apply_touched(client: aioredis.Redis) -> None:
    store, clock, engine, _ = await setup(client)
    await apply(store, clock, [call(f"a{i}", 1, 100, NOW - 30) for i in range(40)])
    await engine.sweep()
    assert store.reads == [None]  # the first round reads the floor
    await apply(store, clock, [call("a7", 2, 100, NOW - 20)], first_offset=100)
    clock.t += 1
    await engine.sweep()
    clock.t += 1
    await engine.sweep()
    assert store.reads == [None, {"a7"}]  # the third round had nothing to read


async def test_an_agent_alert_resolves_when_its_calls_leave_the_window_with_no_event(client: aioredis.Redis) -> None:
    store, clock, engine, published = await setup(client)
    await apply(store, clock, [call("slow", n, 900, NOW - 120 + n) for n in range(3)])  # out of 5m at ~NOW+177 s
    await apply(store, clock, [call(f"ok{i}", 1, 60, NOW - 1) for i in range(20)], first_offset=10)  # at ~NOW+297 s
    await engine.sweep()
    assert [(a.status, a.scope, a.subject) for a in published if a.scope == "agent"] == [("firing", "agent", "slow")]
    # Nothing comes due before the calls leave the 5 m window: no agent is read.
    clock.t = NOW + 170
    await engine.sweep()
    assert store.reads == [None]
    clock.t = NOW + 200
    await engine.sweep()
    assert store.reads == [None, {"slow"}]
    moves = [(a.status, a.subject) for a in published if a.scope == "agent"]
    assert moves == [("firing", "slow"), ("resolved", "slow")]
    assert await client.hget(f"{store.ns}alerts", "agent|slow|aht_seconds|5m") is None


async def test_team_and_floor_alerts_resolve_by_time_alone_from_the_kept_totals(client: aioredis.Redis) -> None:
    store, clock, engine, published = await setup(client)
    await apply(store, clock, [call(f"s{i}", n, 900, NOW - 100 + n, team="south") for i in range(2) for n in range(2)])
    await engine.sweep()
    fired = {(a.scope, a.subject) for a in published if a.status == "firing"}
    assert {("team", "south"), ("floor", None)} <= fired
    clock.t = NOW + 300
    await engine.sweep()
    resolved = {(a.scope, a.subject) for a in published if a.status == "resolved"}
    assert {("team", "south"), ("floor", None), ("agent", "s0"), ("agent", "s1")} <= resolved
    assert await client.hlen(f"{store.ns}alerts") == 0


async def test_a_sweeper_that_lost_the_lease_reads_the_whole_floor_when_it_has_it_again(
    client: aioredis.Redis,
) -> None:
    store, clock, engine, _ = await setup(client)
    await apply(store, clock, [call("a1", 1, 100, NOW - 30)])
    await engine.sweep()
    await client.set(f"{store.ns}sweep-lease", "someone-else")
    assert await engine.sweep() == 0
    await client.delete(f"{store.ns}sweep-lease")
    await engine.sweep()
    assert store.reads == [None, None]


async def test_the_sweep_does_not_read_again_what_the_batch_check_read_after_the_apply(
    client: aioredis.Redis,
) -> None:
    store, clock, engine, published = await setup(client)
    await apply(store, clock, [call(f"a{i}", 1, 100, NOW - 30) for i in range(10)])
    await engine.sweep()
    await apply(store, clock, [call("a3", n, 900, NOW - 20 + n, team="east") for n in range(2, 4)], first_offset=50)
    await engine.check_agents({"a3"})
    await engine.sweep()
    assert store.reads == [None, {"a3"}]  # the check's read only
    # The team the check moved a3 into is still evaluated by the sweep, from the kept totals.
    assert ("firing", "team", "east") in {(a.status, a.scope, a.subject) for a in published}


async def test_an_agent_whose_only_events_are_older_than_the_rule_windows_is_not_read_twice(
    client: aioredis.Redis,
) -> None:
    store, clock, engine, _ = await setup(client)
    await apply(store, clock, [call("a1", 1, 100, NOW - 30)])
    await engine.sweep()
    await apply(store, clock, [call("old", 1, 100, NOW - 2 * 3600)], first_offset=10)  # a backlog's old event
    await engine.check_agents({"old"})
    await engine.sweep()
    assert store.reads == [None, {"old"}]
