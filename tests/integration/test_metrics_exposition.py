"""The monitor's /metrics on a real Redis: null KPIs absent, idle agents gone, counters, lag histogram, alerts.

Events go through the worker's `Processor` straight into a test Redis (no Kafka), with a clock that places
them in time; an in-process `Monitor` on a free port serves the exposition that Prometheus would scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from callpulse import catalogue
from callpulse.embedded import EmbeddedRedis
from callpulse.settings import Settings, load_thresholds
from monitor.server import Monitor
from streams import windows as w
from streams.batch import LAG_BOUNDS_S
from streams.processor import Processor, Record
from streams.store import WindowStore, namespace

pytestmark = pytest.mark.integration

WINDOWS = ("15m", "1h", "8h")
# Counts and sums are 0, never absent: every catalogue KPI without a denominator.
ZERO_COUNTS = {k.key: 0.0 for k in catalogue.CATALOGUE if not k.is_ratio}
TOPICS = ("calls", "tickets")
RESULTS = ("ok", "duplicate", "invalid", "late")
SCOPES = ("agent", "team", "floor")
SEVERITIES = ("warning", "critical")
# Past the 8h window but inside the 20 min the worker keeps an agent on the floor list beyond it, so the
# monitor's own window filter (not the worker's pruning) is what must drop the agent.
GONE_AGO_S = 8 * 3600 + 5 * 60
RECENT_AGO_S = 45  # a lag of 45 s: in the (30, 60] bucket of the event-lag histogram


Samples = list[tuple[str, dict[str, str], float]]


@dataclass
class Floor:
    """A Redis, a monitor on it, and a way to process events as of some time."""

    settings: Settings
    client: aioredis.Redis
    monitor: Monitor
    now: float
    dead: list[tuple[Record, str]] = field(default_factory=list)
    _offsets: dict[str, int] = field(default_factory=dict)

    async def process(self, topic: str, values: Sequence[bytes], *, at: float) -> None:
        """Run `values` through a Processor whose clock says `at` (epoch seconds), as one batch."""
        store = WindowStore(self.client, namespace(self.settings.topic_prefix))

        async def deadletter(dead: Sequence[tuple[Record, str]]) -> None:
            self.dead.extend(dead)

        processor = Processor(self.settings, store, deadletter, clock=lambda: at)
        records = []
        for value in values:
            offset = self._offsets.get(topic, 0)
            self._offsets[topic] = offset + 1
            records.append(Record(topic, 0, offset, None, value))
        await processor.process(records)

    async def scrape(self) -> Samples:
        """GET /metrics and /metrics/agents from the monitor and parse both: (sample name, labels, value)."""
        return [*await self.scrape_path("/metrics"), *await self.scrape_path("/metrics/agents")]

    async def scrape_path(self, path: str) -> Samples:
        """GET one exposition path from the monitor and parse it."""
        url = f"http://127.0.0.1:{self.monitor.port}{path}"

        def get() -> str:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return resp.read().decode()

        text = await asyncio.to_thread(get)
        return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


@pytest.fixture
async def floor(redis_server: EmbeddedRedis) -> AsyncIterator[Floor]:
    # Rolling windows only (calendar = []): the scenario puts its old and late calls around the 8 h edge.
    async with _floor(redis_server, "x-") as made:
        yield made


@contextlib.asynccontextmanager
async def _floor(redis_server: EmbeddedRedis, prefix: str, **config: Any) -> AsyncIterator[Floor]:
    settings = Settings(redis_url=redis_server.url, http_host="127.0.0.1", http_port=0, topic_prefix=prefix)
    settings = dataclasses.replace(settings, **{"windows_s": (900, 3600, 28800), **config})
    client = aioredis.Redis.from_url(redis_server.url)
    monitor = Monitor(settings, client)
    await monitor.start()
    try:
        yield Floor(settings, client, monitor, now=time.time())
    finally:
        await monitor.stop()
        await client.aclose()


def _call(event_id: str, ts: float, agent: str, team: str, *, direction: str, connected: bool, **fields: Any) -> bytes:
    event = {
        "event_id": event_id,
        "type": "call.ended",
        "ts": ts,
        "call_id": f"call-{event_id}",
        "agent_id": agent,
        "team": team,
        "direction": direction,
        "connected": connected,
        "talk_seconds": 0,
    }
    event.update(fields)
    return orjson.dumps(event)


def _named(samples: Samples, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [
        (lab, value)
        for sample, lab, value in samples
        if sample == name and all(lab.get(k) == v for k, v in labels.items())
    ]


def _kpis(samples: Samples, metric: str, **labels: str) -> dict[tuple[str, str], float]:
    """(kpi, window) -> value of one agent, team or the floor."""
    return {(lab["kpi"], lab["window"]): value for lab, value in _named(samples, metric, **labels)}


def _every_window(values: dict[str, float]) -> dict[tuple[str, str], float]:
    return {(kpi, window): value for kpi, value in values.items() for window in WINDOWS}


def _in_windows(values: dict[tuple[str, str], float], windows: Sequence[str]) -> dict[tuple[str, str], float]:
    return {(kpi, window): value for (kpi, window), value in values.items() if window in windows}


async def _shift(floor: Floor) -> None:
    """Two agents now, one whose only event is past the longest window, plus a duplicate, a late and a bad record."""
    recent = floor.now - RECENT_AGO_S
    gone = floor.now - GONE_AGO_S
    # Accepted then (the worker's clock said so), outside every window now.
    await floor.process(
        "calls",
        [_call("g1", gone, "gone", "night", direction="inbound", connected=True, talk_seconds=100, customer_id="c9")],
        at=gone,
    )
    dialled = _call("d1", recent, "dialer", "sales", direction="outbound", connected=False)
    answered = _call(
        "h1", recent, "helper", "support", direction="inbound", connected=True,
        talk_seconds=100, hold_seconds=20, wrap_seconds=30, resolved=True, customer_id="c1",
    )  # fmt: skip
    await floor.process(
        "calls",
        [
            dialled,
            answered,
            dialled,  # a redelivered copy
            _call("l1", gone, "late", "night", direction="inbound", connected=True, talk_seconds=60),
            b'{"event_id": "bad", "type": "call.ended"',
        ],
        at=floor.now,
    )
    await floor.process(
        "tickets",
        [
            orjson.dumps({"event_id": "t1", "type": "ticket.created", "ts": recent - 200, "ticket_id": "T1"}),
            orjson.dumps(
                {"event_id": "t2", "type": "ticket.replied", "ts": recent, "ticket_id": "T1", "agent_id": "helper"}
            ),
        ],
        at=floor.now,
    )


async def test_null_kpis_are_absent_and_true_zeros_are_present(floor: Floor) -> None:
    await _shift(floor)
    samples = await floor.scrape()

    # One unanswered dial: connect rate is a real 0 and calls_handled a count of 0; every ratio without a
    # denominator (AHT with no connected call, conversion, FCR, CSAT, ...) has no series at all.
    dialer = _kpis(samples, "callpulse_agent_kpi", agent="dialer")
    assert dialer == _every_window({**ZERO_COUNTS, "connect_rate": 0.0, "dials": 1.0})
    assert {lab["team"] for lab, _ in _named(samples, "callpulse_agent_kpi", agent="dialer")} == {"sales"}

    helper = _kpis(samples, "callpulse_agent_kpi", agent="helper")
    expected = {**ZERO_COUNTS, "aht_seconds": 150.0, "fcr": 1.0, "response_seconds": 200.0, "calls_handled": 1.0}
    expected["complaint_rate"] = 0.0  # no complaint in one interaction
    assert helper == _every_window(expected)

    # Team series come in the two shortest windows by default ([windows] team_metrics).
    assert _kpis(samples, "callpulse_team_kpi", team="sales") == _in_windows(dialer, ("15m", "1h"))
    assert _kpis(samples, "callpulse_team_kpi", team="support") == _in_windows(helper, ("15m", "1h"))
    # The floor sums numerators and denominators: AHT from the one connected call, connect rate 0 of 1 dial.
    floor_expected = {**expected, "connect_rate": 0.0, "dials": 1.0}
    assert _kpis(samples, "callpulse_floor_kpi") == _every_window(floor_expected)
    assert not [s for s in samples if s[0].endswith("_kpi") and s[1]["kpi"] in ("csat", "escalation_rate")]


async def test_team_series_come_in_the_windows_team_metrics_names(redis_server: EmbeddedRedis) -> None:
    config = load_thresholds('[windows]\nrolling = ["15m", "1h", "8h"]\ncalendar = []\nteam_metrics = ["15m", "8h"]')
    async with _floor(redis_server, "tm-", **config) as floor:
        await _shift(floor)
        samples = await floor.scrape()
    windows = {lab["window"] for lab, _ in _named(samples, "callpulse_team_kpi")}
    assert windows == {"15m", "8h"}
    # The floor's series keep every window.
    assert {lab["window"] for lab, _ in _named(samples, "callpulse_floor_kpi")} == set(WINDOWS)


async def test_an_agent_without_an_event_in_the_longest_window_drops_out(floor: Floor) -> None:
    await _shift(floor)
    store = WindowStore(floor.client, namespace(floor.settings.topic_prefix))
    # The old call was accepted at its time, and the agent is still on the worker's floor list...
    then = await store.read_windows(int((floor.now - GONE_AGO_S) * 1000), [900], only=["gone"])
    assert [(r.agent_id, w.kpis_from_sums(r.sums[900])["calls_handled"]) for r in then] == [("gone", 1)]
    assert await floor.client.zscore(f"{store.ns}agents", "gone") is not None

    # ...but by real now it is outside every window: no series for the agent, nor for its team.
    samples = await floor.scrape()
    agents = {lab["agent"] for lab, _ in _named(samples, "callpulse_agent_kpi")}
    assert agents == {"dialer", "helper"}
    assert {lab["team"] for lab, _ in _named(samples, "callpulse_team_kpi")} == {"sales", "support"}
    assert _named(samples, "callpulse_floor_agents") == [({}, 2.0)]


async def test_event_counters_by_topic_and_result(floor: Floor) -> None:
    await _shift(floor)
    samples = await floor.scrape()
    counts = {(lab["topic"], lab["result"]): value for lab, value in _named(samples, "callpulse_events_total")}
    expected = dict.fromkeys(((t, r) for t in TOPICS for r in RESULTS), 0.0)
    # calls: the old call (accepted at its time), the dial and the inbound call; the copy; the late call; the bad one.
    expected.update({("calls", "ok"): 3.0, ("calls", "duplicate"): 1.0, ("calls", "late"): 1.0})
    expected.update({("calls", "invalid"): 1.0, ("tickets", "ok"): 2.0})
    assert counts == expected
    assert [record.value for record, _ in floor.dead] == [b'{"event_id": "bad", "type": "call.ended"']


async def test_event_lag_histogram_has_buckets(floor: Floor) -> None:
    await _shift(floor)
    samples = await floor.scrape()
    buckets = {lab["le"]: value for lab, value in _named(samples, "callpulse_event_lag_seconds_bucket")}
    assert list(buckets) == [*(repr(float(b)) for b in LAG_BOUNDS_S), "+Inf"]
    values = list(buckets.values())
    assert values == sorted(values), "buckets must be cumulative"
    # Applied about 45 s after their ts: the dial, the inbound call, the reply; 245 s: the ticket's creation;
    # 8 h: the old call. The copy, the late and the bad record are not applied, so not timed.
    assert buckets["30.0"] == 0
    assert buckets["60.0"] == 3
    assert buckets["300.0"] == 4
    assert buckets["+Inf"] == 5
    assert _named(samples, "callpulse_event_lag_seconds_count") == [({}, 5.0)]
    [(_, total_s)] = _named(samples, "callpulse_event_lag_seconds_sum")
    least_s = GONE_AGO_S + 3 * RECENT_AGO_S + (RECENT_AGO_S + 200)
    assert least_s <= total_s < least_s + 5 * 30


async def test_idle_floor(floor: Floor) -> None:
    samples = await floor.scrape()
    # No agents: no agent or team series; the floor's counts are 0 and its ratios absent.
    assert not _named(samples, "callpulse_agent_kpi")
    assert not _named(samples, "callpulse_team_kpi")
    assert _kpis(samples, "callpulse_floor_kpi") == _every_window(ZERO_COUNTS)
    # Alerts: a 0 series for every KPI with a rule, severity and scope, so a panel reads 0 rather than nothing.
    active = {(lab["kpi"], lab["severity"], lab["scope"]): v for lab, v in _named(samples, "callpulse_alerts_active")}
    kpis = set(floor.settings.rules)
    want = {(k, sev, scope): 0.0 for k in kpis for sev in SEVERITIES for scope in SCOPES}
    want |= {(k, sev, "queue"): 0.0 for k in floor.settings.queue_rules for sev in SEVERITIES}
    want |= {(k, sev, "campaign"): 0.0 for k in floor.settings.campaign_rules for sev in SEVERITIES}
    assert active == want
    counts = {(lab["topic"], lab["result"]): value for lab, value in _named(samples, "callpulse_events_total")}
    assert counts == {(t, r): 0.0 for t in TOPICS for r in RESULTS}
    buckets = _named(samples, "callpulse_event_lag_seconds_bucket")
    assert len(buckets) == len(LAG_BOUNDS_S) + 1 and all(value == 0 for _, value in buckets)
    assert _named(samples, "callpulse_floor_agents") == [({}, 0.0)]


async def test_per_agent_series_are_on_their_own_path_and_team_floor_series_on_metrics(floor: Floor) -> None:
    at = floor.now
    await floor.process(
        "calls",
        [
            _call("p1", at - 60, "ann", "north", direction="inbound", connected=True, talk_seconds=100),
            _call("p2", at - 50, "bob", "north", direction="inbound", connected=True, talk_seconds=200),
        ],
        at=at,
    )
    main = await floor.scrape_path("/metrics")
    agents = await floor.scrape_path("/metrics/agents")
    assert not [n for n, _, _ in main if n.startswith("callpulse_agent_")]
    assert {labels["agent"] for n, labels, _ in agents if n == "callpulse_agent_kpi"} == {"ann", "bob"}
    aht = {(labels["team"], labels["window"]): v for n, labels, v in main
           if n == "callpulse_team_kpi" and labels["kpi"] == "aht_seconds"}  # fmt: skip
    assert aht[("north", "15m")] == 150.0
    assert ("callpulse_floor_agents", {}, 2.0) in main
