"""Alerts end to end on real processes: Kafka -> `callpulse worker` -> Redis -> `callpulse monitor` -> websocket.

Each breach episode must show up once on the `alerts` topic and once as `firing` on every websocket client,
however many workers evaluate it; it resolves with hysteresis, or when only time passes; acks and snoozes
from one client reach every client and the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from callpulse.kafka import ensure_topics
from callpulse.settings import Settings, load_thresholds
from streams.alerts import iso
from streams.store import namespace
from tests.helpers import async_wait_for, stop_task
from tests.integration import tracegen

pytestmark = pytest.mark.integration

PARTITIONS = 4
AHT_CRITICAL = 480.0
AHT_WARNING = 360.0


# --- events in -------------------------------------------------------------------------------------------------


def call_ended(agent: str, n: int, talk_seconds: float, *, ts: float, team: str | None = None) -> dict[str, Any]:
    """A connected inbound `call.ended`; `n` makes the event id unique per agent."""
    event: dict[str, Any] = {
        "event_id": f"{agent}-call-{n}",
        "type": "call.ended",
        "ts": round(ts, 3),
        "call_id": f"{agent}-c{n}",
        "agent_id": agent,
        "direction": "inbound",
        "connected": True,
        "talk_seconds": talk_seconds,
    }
    if team is not None:
        event["team"] = team
    return event


def agent_state(agent: str, n: int, *, ts: float, state: str = "available") -> dict[str, Any]:
    """An `agent.state` event: shows the agent on the board without touching any KPI."""
    return {"event_id": f"{agent}-state-{n}", "type": "agent.state", "ts": round(ts, 3), "agent_id": agent,
            "state": state}  # fmt: skip


async def produce_calls(settings: Settings, events: list[dict[str, Any]], partitions: list[int] | None = None) -> None:
    """Send events to `<prefix>calls`, each to its given partition (default: round robin over all 4)."""
    if partitions is None:
        partitions = [i % PARTITIONS for i in range(len(events))]
    await tracegen.produce_raw(settings.kafka, settings.topic("calls"), [orjson.dumps(e) for e in events],
                               partitions=partitions)  # fmt: skip


# --- reading the system's answers --------------------------------------------------------------------------------


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


async def api_snapshot(settings: Settings, window: str | None = None) -> dict[str, Any]:
    query = f"?window={window}" if window else ""
    url = f"http://{settings.http_host}:{settings.http_port}/api/snapshot{query}"
    return orjson.loads(await asyncio.to_thread(http_get, url))


async def worker_events(worker: Any) -> float:
    """Records this worker processed, from its own /metrics (0 before its web server is up)."""
    try:
        text = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{worker.web_port}/metrics")).decode()
    except OSError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "callpulse_worker_events_total"
    )


async def has_agent(settings: Settings, agent: str, window: str | None = None) -> bool:
    """Whether the snapshot lists `agent` (so the worker is consuming and applied its event)."""
    return any(a["agent_id"] == agent for a in (await api_snapshot(settings, window))["agents"])


class Feed:
    """A websocket client of the monitor that records every message it receives, in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[dict[str, Any]] = []
        self.ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Feed:
        self.ws = await connect(self.url, open_timeout=10)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None and self._task is not None
        await self.ws.close()
        await stop_task(self._task, "the websocket feed's reader")

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self.messages.append(orjson.loads(raw))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(orjson.dumps(message).decode())

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def alerts(self, **match: Any) -> list[dict[str, Any]]:
        """Alert messages whose fields equal every `match` value."""
        return [m for m in self.of_type("alert") if all(m.get(k) == v for k, v in match.items())]

    async def wait(self, predicate: Callable[[Feed], Any], *, timeout_s: float = 30, what: str = "message") -> Any:
        return await async_wait_for(lambda: predicate(self), timeout_s=timeout_s, message=what)


def feed_url(settings: Settings) -> str:
    return f"ws://{settings.http_host}:{settings.http_port}/ws"


class AlertsTopic:
    """Reads `<prefix>alerts` from the beginning in the background, keeping every record's JSON value."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.values: list[dict[str, Any]] = []
        self.keys: list[bytes | None] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AlertsTopic:
        await ensure_topics(self.settings)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka, auto_offset_reset="earliest",
                                          enable_auto_commit=False)  # fmt: skip
        await self._consumer.start()
        topic = self.settings.topic("alerts")
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None and self._task is not None
        await stop_task(self._task, "the alerts-topic reader")
        await self._consumer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self.keys.append(record.key)
                    self.values.append(orjson.loads(record.value))

    def alerts(self, **match: Any) -> list[dict[str, Any]]:
        return [v for v in self.values if all(v.get(k) == m for k, m in match.items())]


def subject(alert: dict[str, Any]) -> tuple[str, str | None, str]:
    """The episode slot an alert belongs to: scope, agent or team, KPI."""
    return alert["scope"], alert.get("agent_id") or alert.get("team"), alert["kpi"]


async def breach(settings: Settings, agents: Iterable[str], *, talk_seconds: float = 900, calls: int = 5,
                 team_of: Callable[[str], str | None] = lambda _a: None, first: int = 0) -> None:  # fmt: skip
    """Produce `calls` long connected calls per agent, each agent's calls spread over all partitions."""
    now = time.time()
    events, partitions = [], []
    for i, agent in enumerate(agents):
        for n in range(calls):
            events.append(call_ended(agent, first + n, talk_seconds, ts=now - 30 + n, team=team_of(agent)))
            partitions.append((i + n) % PARTITIONS)
    await produce_calls(settings, events, partitions)


# --- tests -----------------------------------------------------------------------------------------------------


async def test_breaching_agent_fires_one_alert_on_topic_and_websocket(settings: Settings, stack: Any) -> None:
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    async with Feed(feed_url(settings)) as feed, AlertsTopic(settings) as topic:
        await feed.wait(lambda f: f.of_type("snapshot"), what="the initial snapshot")
        await breach(settings, ["ag-hot"])

        fired = await feed.wait(lambda f: f.alerts(scope="agent", agent_id="ag-hot"), what="the agent's alert")
        alert = fired[0]
        assert alert["status"] == "firing"
        assert alert["severity"] == "critical"
        assert alert["kpi"] == "aht_seconds"
        assert alert["threshold"] == AHT_CRITICAL
        assert alert["value"] == pytest.approx(900.0)
        assert alert["window"] == "15m"
        for key in ("id", "ts"):
            assert alert[key], alert

        on_topic = await async_wait_for(lambda: topic.alerts(id=alert["id"]), message="the alert on the alerts topic")
        record = on_topic[0]
        for key in ("id", "status", "kpi", "scope", "agent_id", "window", "value", "threshold", "severity", "ts"):
            assert record[key] == alert[key], key
        # The floor breaches too (it is this one agent): wait for it, and let the sweep run over both again.
        await feed.wait(lambda f: f.alerts(scope="floor"), what="the floor alert")
        await async_wait_for(lambda: topic.alerts(scope="floor"), message="the floor alert on the topic")
        snap = await api_snapshot(settings)
        assert {a["id"] for a in snap["alerts"]} >= {alert["id"]}
        assert feed.alerts(scope="agent") == [alert], "one breach, one alert message"
        assert len(topic.alerts(scope="agent")) == 1, topic.values


async def test_two_workers_publish_one_alert_per_episode(settings: Settings, stack: Any) -> None:
    await ensure_topics(settings)
    workers = [stack.worker(settings), stack.worker(settings)]
    stack.monitor(settings)

    # The first batch on an empty Redis rebuilds it from Kafka: let that finish before the trickle below, or
    # the rebuild chases the trickle forever (streams/replay.py checks for the end only after an idle second).
    await produce_calls(settings, [agent_state("probe0", 0, ts=time.time())])

    async def first_batch_done() -> bool:
        return sum([await worker_events(w) for w in workers]) > 0

    await async_wait_for(first_batch_done, timeout_s=30, message="the first batch (and the rebuild) done")
    # Both workers are in the group once each has processed something: keep a trickle on every partition.
    n = 1
    deadline = time.monotonic() + 60
    while True:
        events = [agent_state(f"probe{p}", n, ts=time.time()) for p in range(PARTITIONS)]
        await produce_calls(settings, events)
        counts = [await worker_events(w) for w in workers]
        if all(counts):
            break
        assert time.monotonic() < deadline, f"both workers never consumed: {counts}"
        for w in workers:
            assert w.alive(), w.log_tail()
        n += 1
        await asyncio.sleep(0.5)

    agents = [f"ag{i}" for i in range(8)]

    def team_of(agent: str) -> str:
        return "red" if int(agent[2:]) % 2 else "blue"

    async with Feed(feed_url(settings)) as feed, AlertsTopic(settings) as topic:
        await feed.wait(lambda f: f.of_type("snapshot"), what="the initial snapshot")
        before = [await worker_events(w) for w in workers]
        await breach(settings, agents, team_of=team_of)
        expected = {("agent", a, "aht_seconds") for a in agents}
        expected |= {("team", "red", "aht_seconds"), ("team", "blue", "aht_seconds"), ("floor", None, "aht_seconds")}

        await feed.wait(lambda f: {subject(a) for a in f.alerts(status="firing")} >= expected, timeout_s=45,
                        what="every agent, team and floor alert on the websocket")  # fmt: skip
        await async_wait_for(lambda: {subject(a) for a in topic.alerts(status="firing")} >= expected, timeout_s=30,
                             message="every alert on the alerts topic")  # fmt: skip

        # A late sentinel episode: once it is through, both workers have swept the others several times over.
        await breach(settings, ["ag-sentinel"])
        await feed.wait(lambda f: f.alerts(agent_id="ag-sentinel"), what="the sentinel alert")
        await async_wait_for(lambda: topic.alerts(agent_id="ag-sentinel"), message="the sentinel on the topic")
        expected.add(("agent", "ag-sentinel", "aht_seconds"))

        after = [await worker_events(w) for w in workers]
        print(f"records each worker processed during the breach: {[a - b for a, b in zip(after, before, strict=True)]}")
        assert all(a > b for a, b in zip(after, before, strict=True)), f"a worker took no part: {before} -> {after}"
        for name, got in (("websocket", feed.alerts()), ("alerts topic", topic.alerts())):
            per_slot = Counter(subject(a) for a in got)
            assert set(per_slot) == expected, f"{name}: {sorted(per_slot, key=str)}"
            duplicated = {s: c for s, c in per_slot.items() if c != 1}
            assert not duplicated, f"{name} carried an episode more than once: {duplicated}"
            assert all(a["status"] == "firing" and a["severity"] == "critical" for a in got), got
            ids = Counter(a["id"] for a in got)
            assert len(ids) == len(expected), ids
        for w in workers:
            assert w.alive(), w.log_tail()


async def test_alert_resolves_when_value_recovers_with_hysteresis(settings: Settings, stack: Any) -> None:
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    now = time.time()
    async with Feed(feed_url(settings)) as feed:
        await feed.wait(lambda f: f.of_type("snapshot"), what="the initial snapshot")
        await produce_calls(settings, [call_ended("ag-h", n, 900, ts=now - 60 + n) for n in range(5)])
        fired = await feed.wait(lambda f: f.alerts(agent_id="ag-h"), what="the alert firing")
        alert_id = fired[0]["id"]
        assert fired[0]["severity"] == "critical"

        # Ten calls of 75 s: AHT (5 * 900 + 10 * 75) / 15 = 350, under the warning threshold (360) but not by 5 %.
        await produce_calls(settings, [call_ended("ag-h", n, 75, ts=now - 50 + n) for n in range(5, 15)])

        async def aht_is_350() -> bool:
            agents = {a["agent_id"]: a for a in (await api_snapshot(settings))["agents"]}
            return agents.get("ag-h", {}).get("kpis", {}).get("aht_seconds") == pytest.approx(350.0)

        await async_wait_for(aht_is_350, message="AHT 350 s in the snapshot")
        await feed.wait(lambda f: f.alerts(agent_id="ag-h", severity="warning"), what="the de-escalation")
        # Team alerts come only from the sweep, which evaluates agents first: a team alert fired after AHT
        # reached 350 proves the agent was evaluated at 350 since, and stayed firing.
        await produce_calls(settings, [call_ended("ag-sync", n, 900, ts=now - 40 + n, team="sync") for n in range(5)])
        await feed.wait(lambda f: f.alerts(scope="team", team="sync"), what="the sweep's team alert")
        mine = feed.alerts(agent_id="ag-h")
        assert [(a["status"], a["severity"]) for a in mine] == [("firing", "critical"), ("firing", "warning")]
        assert {a["id"] for a in mine} == {alert_id}, "one episode keeps one id while it de-escalates"

        # One more 60 s call: (5250 + 60) / 16 = 331.9 < 360 * 0.95 = 342: resolved.
        await produce_calls(settings, [call_ended("ag-h", 15, 60, ts=now - 20)])
        resolved = await feed.wait(lambda f: f.alerts(agent_id="ag-h", status="resolved"), what="the resolve")
        assert resolved[0]["id"] == alert_id
        assert resolved[0]["value"] == pytest.approx(5310 / 16)
        snap = await api_snapshot(settings)
        assert alert_id not in {a["id"] for a in snap["alerts"]}
        assert len(feed.alerts(agent_id="ag-h", status="resolved")) == 1


async def test_alert_resolves_when_only_time_passes(settings: Settings, stack: Any, tmp_path: Path) -> None:
    toml = '[windows]\nrolling = ["1m", "5m", "1h"]\n\n[kpi.aht_seconds]\nwindow = "1m"\n'
    config = tmp_path / "thresholds.toml"
    config.write_text(toml)
    settings = settings.replace(config_path=str(config), **load_thresholds(toml))
    assert settings.rules["aht_seconds"].window == "1m"
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    async with Feed(feed_url(settings)) as feed:
        first = await feed.wait(lambda f: f.of_type("snapshot"), what="the initial snapshot")
        assert first[0]["window"] == "1m", "the monitor read the thresholds file"
        # The worker is consuming once a probe shows up; only then send calls that are about to age out.
        await produce_calls(settings, [agent_state("probe", 0, ts=time.time())])

        await async_wait_for(lambda: has_agent(settings, "probe"), message="the worker consuming")
        # Windows are exact to 10 s: calls at the start of one 10 s bucket all leave the 1 m window when that
        # start is exactly 60 s old. Pick the bucket 45 to 55 s back, so the wait is 5 to 15 s.
        start = math.ceil((time.time() - 55) / 10) * 10
        await produce_calls(settings, [call_ended("ag-t", n, 900, ts=start + n / 10) for n in range(5)])
        fired = await feed.wait(lambda f: f.alerts(agent_id="ag-t"), what="the alert firing")
        assert fired[0]["window"] == "1m"
        assert time.time() < start + 60, "fired too late to test the resolve"
        # No event arrives from here on: only the sweep can notice the calls leaving the 1 m window.
        resolved = await feed.wait(lambda f: f.alerts(agent_id="ag-t", status="resolved"), timeout_s=40,
                                   what="the resolve once the calls slid out of the window")  # fmt: skip
        age_s = time.time() - start
        assert resolved[0]["id"] == fired[0]["id"]
        assert resolved[0]["value"] is None, "an empty window has no AHT"
        # at 60 s, give or take the 1 s sweep and delivery; never before
        assert 60 <= age_s <= 60 + 3, f"resolved with the calls {age_s:.1f} s old"
        print(f"resolved with the calls {age_s:.2f} s old")
        await feed.wait(lambda f: f.alerts(scope="floor", status="resolved"), what="the floor alert resolving too")
        assert (await api_snapshot(settings))["alerts"] == []


async def _firing_alert(settings: Settings, stack: Any, feed: Feed, agent: str) -> dict[str, Any]:
    await ensure_topics(settings)
    stack.worker(settings)
    await breach(settings, [agent])
    fired = await feed.wait(lambda f: f.alerts(agent_id=agent), what=f"{agent}'s alert")
    return fired[0]  # type: ignore[no-any-return]


async def test_ack_from_one_client_is_seen_by_all(settings: Settings, stack: Any) -> None:
    stack.monitor(settings)
    async with Feed(feed_url(settings)) as a, Feed(feed_url(settings)) as b:
        alert = await _firing_alert(settings, stack, a, "ag-ack")
        await b.wait(lambda f: f.alerts(id=alert["id"]), what="the alert on client B")
        assert alert["acknowledged"] is False

        await a.send({"type": "ack", "id": alert["id"]})
        want = {"type": "ack", "id": alert["id"], "acknowledged": True}
        for client in (a, b):
            await client.wait(lambda f: want in f.of_type("ack"), what="the ack broadcast")

        async def acked_in_snapshot() -> bool:
            alerts = {x["id"]: x for x in (await api_snapshot(settings))["alerts"]}
            return alerts[alert["id"]]["acknowledged"] is True

        await async_wait_for(acked_in_snapshot, message="acknowledged in /api/snapshot")
        # Pushed snapshots carry it too, so a client that connects later sees the ack.
        async with Feed(feed_url(settings)) as late:
            snap = (await late.wait(lambda f: f.of_type("snapshot"), what="a late client's snapshot"))[0]
            assert {x["id"]: x["acknowledged"] for x in snap["alerts"]}[alert["id"]] is True
        assert not a.of_type("error") and not b.of_type("error"), a.of_type("error") + b.of_type("error")


async def test_snooze_is_broadcast_and_reflected_in_snapshot(settings: Settings, stack: Any) -> None:
    stack.monitor(settings)
    async with Feed(feed_url(settings)) as a, Feed(feed_url(settings)) as b:
        alert = await _firing_alert(settings, stack, a, "ag-snz")
        sent_at = time.time()
        await a.send({"type": "snooze", "kpi": "aht_seconds", "agent_id": "ag-snz", "minutes": 15})
        for client in (a, b):
            got = await client.wait(lambda f: f.of_type("snooze"), what="the snooze broadcast")
            assert got[0]["kpi"] == "aht_seconds" and got[0]["agent_id"] == "ag-snz", got
        until = datetime.fromisoformat(a.of_type("snooze")[0]["until"]).timestamp()
        assert sent_at + 15 * 60 - 5 <= until <= time.time() + 15 * 60 + 5

        async def muted_in_snapshot() -> dict[str, Any] | None:
            snap = await api_snapshot(settings)
            alerts = {x["id"]: x for x in snap["alerts"]}
            return snap if alerts[alert["id"]]["muted"] is True else None

        snap = await async_wait_for(muted_in_snapshot, message="the alert muted in /api/snapshot")
        assert [(s["kpi"], s.get("agent_id")) for s in snap["snoozes"]] == [("aht_seconds", "ag-snz")]
        agent = next(x for x in snap["agents"] if x["agent_id"] == "ag-snz")
        assert agent["muted"] == ["aht_seconds"]
        assert "aht_seconds" in agent["breaches"] and "aht_seconds" not in agent["levels"], agent
        await b.wait(lambda f: any(s.get("snoozes") for s in f.of_type("snapshot")),
                     what="a pushed snapshot carrying the snooze")  # fmt: skip


async def test_a_burst_of_alert_transitions_reaches_clients_in_order_with_their_marks(
    settings: Settings, stack: Any
) -> None:
    # A busy floor publishes many transitions at once: the monitor hands them over together (one read of the
    # acknowledged and snooze marks for all), in the order they were published, each with its own marks.
    stack.monitor(settings)
    ns = namespace(settings.topic_prefix)
    client = aioredis.Redis.from_url(settings.redis_url)
    now_ms = int(time.time() * 1000)
    burst = [
        {"type": "alert", "id": f"al-{i}", "status": "firing" if i % 3 else "resolved", "kpi": "aht_seconds",
         "scope": "agent", "agent_id": f"ag-burst-{i}", "window": "15m", "value": 600.0 + i, "threshold": 480.0,
         "severity": "warning", "ts": iso(now_ms), "since": iso(now_ms)}
        for i in range(120)
    ]  # fmt: skip
    try:
        await client.sadd(f"{ns}acked", *[a["id"] for a in burst[::7]])
        await client.hset(f"{ns}snoozes", "aht_seconds|agent|ag-burst-5", now_ms + 600_000)
        async with Feed(feed_url(settings)) as feed:
            await feed.wait(lambda f: f.of_type("snapshot"), what="the initial snapshot")
            async with client.pipeline(transaction=False) as pipe:
                for alert in burst:
                    pipe.publish(f"{ns}alert-feed", orjson.dumps(alert))
                await pipe.execute()
            # a snoozed agent's firing alert is not pushed (it shows muted in snapshots)
            want = [a["id"] for a in burst if a["agent_id"] != "ag-burst-5"]
            got = await feed.wait(lambda f: len(f.of_type("alert")) >= len(want) and f.of_type("alert"),
                                  what="every alert of the burst")  # fmt: skip
        assert [a["id"] for a in got] == want
        assert {a["id"] for a in got if a["acknowledged"]} == {a["id"] for a in burst[::7]} - {"al-5"}
        assert not any(a["muted"] for a in got)
    finally:
        await client.aclose()
