"""Property tests of queues, agent states and campaigns against a real Redis: any trace of queued calls, state
changes and dials, in any order and batching, with duplicates and two workers, gives exactly what the contract's
brute-force reference computes — queue KPIs per window, waiting and longest wait, seconds in state, occupancy,
outbound abandonment over the rolling windows and over 24h/30d."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import event, given
from hypothesis import strategies as st

from callpulse.embedded import EmbeddedRedis
from streams import campaigns, queues
from streams import windows as w
from streams.queuestore import QueueStore
from streams.store import AgentWindows, WindowStore, namespace
from tests import reference
from tests.integration.test_core_property import (
    EDGES_MS,
    HYPOTHESIS,
    NOW,
    NOW_MS,
    SETTINGS,
    Dead,
    deliveries,
    feed,
)

pytestmark = pytest.mark.integration

QUEUES = ["billing", "sales"]
AGENTS = ["a1", "a2", "a3"]
CAMPAIGNS = ["spring", "autumn"]
# Entries spread over the last 3 h and around the window edges; waits on the SL and short-abandon edges.
entry_ago_ms = st.one_of(
    st.integers(0, 3 * 3_600_000), st.sampled_from(EDGES_MS), st.integers(-2_000, 130_000), st.sampled_from([7_250_000])
)
waits_ms = st.one_of(st.sampled_from([0, 4_999, 5_000, 19_999, 20_000, 20_001]), st.integers(0, 400_000))


@st.composite
def queued_calls(draw: st.DrawFn, i: int) -> list[dict[str, Any]]:
    """One call's queue events: an entry (sometimes missing), then an answer, an abandon or nothing yet."""
    queue, call_id = draw(st.sampled_from(QUEUES)), f"q{i}"
    entry = NOW_MS - draw(entry_ago_ms)
    out: list[dict[str, Any]] = []
    if draw(st.integers(0, 7)):
        body = {"type": "call.queued", "call_id": call_id, "queue": queue, "ts": entry / 1000}
        out.append({"event_id": f"qq{i}", **body})
    end = min(NOW_MS, entry + draw(waits_ms))
    roll = draw(st.integers(0, 9))
    if roll < 5:
        body = {"type": "call.answered", "call_id": call_id, "queue": queue, "agent_id": draw(st.sampled_from(AGENTS))}
        out.append({"event_id": f"qa{i}", "ts": end / 1000, **body})
    elif roll < 8:
        out.append(
            {"event_id": f"qb{i}", "type": "call.abandoned", "call_id": call_id, "queue": queue, "ts": end / 1000}
        )
    return out


@st.composite
def state_changes(draw: st.DrawFn, i: int) -> dict[str, Any]:
    ago = draw(st.one_of(st.integers(0, 3 * 3_600_000), st.sampled_from(EDGES_MS)))
    body = {
        "type": "agent.state",
        "agent_id": draw(st.sampled_from(AGENTS)),
        "state": draw(st.sampled_from(reference.STATES)),
    }
    if body["state"] == "break":
        body["reason"] = draw(st.sampled_from(["lunch", "training"]))
    return {"event_id": f"s{i}", "ts": (NOW_MS - max(0, ago)) / 1000, **body}


@st.composite
def dials(draw: st.DrawFn, i: int) -> dict[str, Any]:
    ago = draw(st.one_of(st.integers(0, 8 * 3_600_000 - 20_000), st.sampled_from(EDGES_MS)))
    outcome = draw(st.sampled_from(["connected", "connected", "no_answer", "dropped"]))
    body: dict[str, Any] = {
        "type": "call.ended",
        "call_id": f"d{i}",
        "agent_id": draw(st.sampled_from(AGENTS)),
        "direction": "outbound",
        "connected": outcome == "connected",
        "talk_seconds": 60 if outcome == "connected" else 0,
    }
    if outcome == "dropped":
        body["abandoned"] = True
    if draw(st.integers(0, 4)):
        body["campaign"] = draw(st.sampled_from(CAMPAIGNS))
    return {"event_id": f"d{i}", "ts": (NOW_MS - max(0, ago)) / 1000, **body}


@st.composite
def floor_traces(draw: st.DrawFn) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(draw(st.integers(3, 14))):
        events += draw(queued_calls(i))
    events += [draw(state_changes(i)) for i in range(draw(st.integers(1, 12)))]
    events += [draw(dials(i)) for i in range(draw(st.integers(0, 12)))]
    return events


async def read_all(client: aioredis.Redis) -> tuple[list[AgentWindows], Any, Any]:
    ns = namespace(SETTINGS.topic_prefix)
    rows = await WindowStore(client, ns).read_windows(NOW_MS, SETTINGS.windows_s)
    qs = QueueStore(client, ns)
    queue_rows = await qs.queues(
        NOW_MS,
        SETTINGS.windows_s,
        longest_s=SETTINGS.longest_window_s,
        max_wait_ms=lambda q: SETTINGS.queue(q).max_wait_s * 1000,
        lookback_ms=SETTINGS.max_wait_s * 1000,
    )
    campaign_rows = await qs.campaigns(NOW_MS, SETTINGS.windows_s)
    return rows, queue_rows, campaign_rows


def check_queues(delivered: Sequence[dict[str, Any]], queue_rows: Sequence[Any]) -> None:
    got = {r.queue: r for r in queue_rows}
    for window_s in SETTINGS.windows_s:
        want = reference.queue_kpis(delivered, NOW, window_s)
        for queue in QUEUES:
            values = queues.kpis_from_sums(got[queue].sums[window_s]) if queue in got else None
            if queue not in want:
                assert values is None or not any(values[k] for k in ("offered", "answered", "abandoned"))
                continue
            assert values is not None, f"queue {queue} missing"
            for k, v in want[queue].items():
                assert reference.close(values[k], v), (window_s, queue, k, values[k], v)
    waiting = reference.queue_waiting(delivered, NOW, max_wait_s=SETTINGS.max_wait_s)
    for queue, (n, longest) in waiting.items():
        row = got[queue]
        live = queues.live([row.oldest_entry_ms] if row.oldest_entry_ms is not None else [], NOW_MS, 7_200_000)
        assert (row.waiting, live[1]) == (n, longest), queue


def check_states(delivered: Sequence[dict[str, Any]], rows: Sequence[AgentWindows]) -> None:
    current = reference.current_states(delivered)
    by_agent = {r.agent_id: r for r in rows}
    for window_s in SETTINGS.windows_s:
        want = reference.state_seconds(delivered, NOW, window_s)
        for agent, secs in want.items():
            sums = by_agent[agent].sums[window_s]
            for state, fld in (
                ("available", w.AVAILABLE_MS),
                ("on_call", w.ON_CALL_MS),
                ("wrap", w.WRAP_MS),
                ("break", w.BREAK_MS),
                ("offline", w.OFFLINE_MS),
            ):
                assert reference.close(sums[fld] / 1000, secs[state]), (window_s, agent, state, sums[fld], secs)
            assert reference.close(w.kpis_from_sums(sums)["occupancy"], reference.occupancy(secs))
    for agent, (state, since, reason) in current.items():
        row = by_agent[agent]
        assert (row.state, row.since_ms, row.reason) == (state, round(since * 1000), reason)


def check_campaigns(delivered: Sequence[dict[str, Any]], rows: Sequence[AgentWindows], campaign_rows: Any) -> None:
    named, floor = campaign_rows
    got = {r.campaign: r for r in named}
    for window_s in SETTINGS.windows_s:
        want = reference.campaign_abandon_rates(delivered, NOW, window_s)
        name = SETTINGS.window_names[SETTINGS.windows_s.index(window_s)]
        for c in CAMPAIGNS:
            value = campaigns.abandon_rate(got[c].sums[name]) if c in got else None
            assert reference.close(value, want.get(c)), (name, c, value, want.get(c))
        floor_value = w.kpis_from_sums(w.total(r.sums[window_s] for r in rows))["outbound_abandon_rate"]
        assert reference.close(floor_value, want.get("*")), (name, floor_value, want)
    for name, window_s in campaigns.COARSE_WINDOWS_S.items():
        want = reference.campaign_abandon_rates(delivered, NOW, window_s, bucket_s=3600)
        for c in CAMPAIGNS:
            value = campaigns.abandon_rate(got[c].sums[name]) if c in got else None
            assert reference.close(value, want.get(c)), (name, c, value, want.get(c))
        assert reference.close(campaigns.abandon_rate(floor.sums[name]), want.get("*")), name


@given(data=st.data())
@HYPOTHESIS
def test_any_floor_trace_in_any_order_gives_the_reference_queues_states_and_campaigns(
    redis_server: EmbeddedRedis, data: st.DataObject
) -> None:
    events = data.draw(floor_traces(), label="events")
    batches = data.draw(deliveries(events), label="batches")
    workers = data.draw(st.lists(st.integers(0, 1), min_size=len(batches), max_size=len(batches)), label="workers")
    delivered = [e for b in batches for e in b if isinstance(e, dict)]
    event(f"answer before its entry: {_answer_first(batches)}")

    async def run() -> tuple[list[AgentWindows], Any, Any]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            outcomes = await feed(client, batches, Dead(), workers)
            assert sum(o.applied for o in outcomes) == len(events)
            return await read_all(client)
        finally:
            await client.aclose()

    rows, queue_rows, campaign_rows = asyncio.run(run())
    check_queues(delivered, queue_rows)
    check_states(delivered, rows)
    check_campaigns(delivered, rows, campaign_rows)


def _answer_first(batches: Sequence[Sequence[Any]]) -> bool:
    seen: set[str] = set()
    for b in batches:
        for e in b:
            if isinstance(e, dict) and e["type"] == "call.queued":
                seen.add(e["call_id"])
            elif isinstance(e, dict) and e["type"] == "call.answered" and e["call_id"] not in seen:
                return True
    return False
