"""Reads that follow the scope, on a real Redis and an in-process monitor: `team=`, `agents=false`, /ws deltas.

Events go through the worker's own batch path (`Processor`), so the team and floor totals are the ones the
apply script keeps as it applies them.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from callpulse.embedded import EmbeddedRedis, free_port
from callpulse.settings import Settings
from monitor.server import Monitor
from streams.processor import Processor, Record
from streams.store import WindowStore, namespace

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(redis_server: EmbeddedRedis, topic_prefix: str) -> Settings:
    return Settings(kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix),
                    http_host="127.0.0.1", http_port=free_port())  # fmt: skip


@pytest.fixture
async def monitor(settings: Settings) -> AsyncIterator[Monitor]:
    client = aioredis.Redis.from_url(settings.redis_url)
    mon = Monitor(settings, client)
    await mon.start()
    try:
        yield mon
    finally:
        await mon.stop()
        await client.aclose()


class Sender:
    """Applies events through a Processor, numbering their records like one partition."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
        self.processor = Processor(settings, store, self._dead)
        self.offset = 0

    async def _dead(self, dead: Sequence[tuple[Record, str]]) -> None:
        raise AssertionError(f"dead-lettered: {dead}")

    async def send(self, *events: dict[str, Any]) -> None:
        records = []
        for e in events:
            records.append(Record("calls", 0, self.offset, None, orjson.dumps(e)))
            self.offset += 1
        await self.processor.process(records)


def call(n: int, agent: str, team: str, talk_seconds: int, ago_s: float = 60) -> dict[str, Any]:
    return {"event_id": f"c{n}", "type": "call.ended", "ts": time.time() - ago_s, "call_id": f"call-{n}",
            "agent_id": agent, "team": team, "direction": "inbound", "connected": True,
            "talk_seconds": talk_seconds}  # fmt: skip


def snapshot(settings: Settings, query: str) -> dict[str, Any]:
    url = f"http://{settings.http_host}:{settings.http_port}/api/snapshot?{query}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return orjson.loads(resp.read())  # type: ignore[no-any-return]


async def get_snapshot(settings: Settings, query: str) -> dict[str, Any]:
    return await asyncio.to_thread(snapshot, settings, query)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]


async def test_team_scope_holds_only_its_agents_and_the_same_team_and_floor(
    settings: Settings, monitor: Monitor
) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(call(1, "ann", "north", 100), call(2, "bob", "north", 300), call(3, "cat", "south", 50))
    full = await get_snapshot(settings, "window=15m")
    team = await get_snapshot(settings, "window=15m&team=north")
    assert [a["agent_id"] for a in team["agents"]] == ["ann", "bob"]
    assert team["teams"] == [t for t in full["teams"] if t["team"] == "north"]
    assert team["teams"][0]["kpis"]["aht_seconds"] == 200.0
    assert team["floor"] == full["floor"]


async def test_agents_false_has_no_agent_rows_and_the_same_teams_and_floor(
    settings: Settings, monitor: Monitor
) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(call(1, "ann", "north", 100), call(2, "cat", "south", 50))
    full = await get_snapshot(settings, "window=1h")
    bare = await get_snapshot(settings, "window=1h&agents=false")
    assert bare["agents"] == []
    assert (bare["teams"], bare["floor"]) == (full["teams"], full["floor"])
    assert bare["floor"]["agents"] == 2


async def test_an_agent_changing_team_takes_its_counts_along(settings: Settings, monitor: Monitor) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(call(1, "ann", "north", 100, ago_s=120), call(2, "bob", "north", 300))
    await sender.send(call(3, "ann", "south", 200, ago_s=30))
    teams = {t["team"]: t for t in (await get_snapshot(settings, "window=15m&agents=false"))["teams"]}
    assert (teams["north"]["agents"], teams["north"]["kpis"]["calls_handled"]) == (1, 1)
    assert (teams["south"]["agents"], teams["south"]["kpis"]["calls_handled"]) == (1, 2)
    assert teams["south"]["kpis"]["aht_seconds"] == 150.0


async def test_bad_agents_flag_is_refused_naming_the_values(settings: Settings, monitor: Monitor) -> None:
    url = f"http://{settings.http_host}:{settings.http_port}/api/snapshot?agents=maybe"
    with pytest.raises(urllib.error.HTTPError) as err:
        await asyncio.to_thread(urllib.request.urlopen, url, None, 5)
    assert err.value.code == 400
    assert b"must be true or false" in err.value.read()


async def test_a_full_floor_client_gets_a_snapshot_then_deltas_of_the_changed_agents(
    settings: Settings, monitor: Monitor
) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(call(1, "ann", "north", 100), call(2, "bob", "north", 300))
    async with connect(f"ws://{settings.http_host}:{settings.http_port}/ws?delta=true") as ws:
        first = await recv(ws)
        assert first["type"] == "snapshot"
        assert {a["agent_id"] for a in first["agents"]} == {"ann", "bob"}
        await sender.send(call(3, "bob", "north", 500))
        while True:
            msg = await recv(ws)
            if msg["type"] == "delta" and msg["changed"]:
                break
        assert [a["agent_id"] for a in msg["changed"]] == ["bob"]
        assert msg["changed"][0]["kpis"]["calls_handled"] == 2
        assert msg["removed"] == []
        assert msg["teams"][0]["kpis"]["calls_handled"] == 3


async def test_an_agents_false_client_gets_snapshots_without_agent_rows(settings: Settings, monitor: Monitor) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(call(1, "ann", "north", 100))
    async with connect(f"ws://{settings.http_host}:{settings.http_port}/ws?agents=false") as ws:
        first = await recv(ws)
        assert (first["type"], first["agents"], first["floor"]["agents"]) == ("snapshot", [], 1)


async def test_a_full_floor_client_without_delta_keeps_getting_whole_snapshots(
    settings: Settings, monitor: Monitor
) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(call(1, "ann", "north", 100), call(2, "bob", "north", 300))
    async with connect(f"ws://{settings.http_host}:{settings.http_port}/ws") as ws:
        assert (await recv(ws))["type"] == "snapshot"
        await sender.send(call(3, "bob", "north", 500))
        while True:
            msg = await recv(ws)
            assert msg["type"] == "snapshot"
            if msg["floor"]["kpis"]["calls_handled"] == 3:
                break
        assert {a["agent_id"] for a in msg["agents"]} == {"ann", "bob"}
