"""Queues, agent states and campaigns end to end on real processes: Kafka -> `callpulse worker` -> Redis ->
`callpulse monitor`.

A shuffled simulator trace with duplicates on four partitions must give exactly the oracle's queue KPIs,
waiting and longest wait (at the snapshot's as_of), seconds in state and occupancy per agent, and outbound
abandonment per campaign; a caller left waiting fires the longest-wait alert with no further event, and the
answer resolves it.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from callpulse.kafka import ensure_topics
from callpulse.settings import Settings, load_thresholds
from callpulse.simulate import generate
from tests import reference
from tests.helpers import async_wait_for
from tests.integration import tracegen
from tests.integration.test_alerts_e2e import Feed, agent_state, api_snapshot, feed_url, has_agent, produce_calls

pytestmark = pytest.mark.integration


def as_of(snap: dict[str, Any]) -> float:
    return datetime.fromisoformat(snap["as_of"]).timestamp()


def problems(snap: dict[str, Any], events: list[dict[str, Any]], window_s: int, max_wait_s: int) -> list[str]:
    """Differences between a snapshot and the oracle at the snapshot's own as_of."""
    now = as_of(snap)
    out: list[str] = []
    want_q = reference.queue_kpis(events, now, window_s)
    got_q = {q["queue"]: q for q in snap["queues"]}
    for queue, want in want_q.items():
        if queue == "*":
            got = snap["floor"]["queue"]["kpis"]
        elif queue not in got_q:
            out.append(f"queue {queue} missing")
            continue
        else:
            got = got_q[queue]["kpis"]
        out += [f"{queue} {k}: {got[k]} != {v}" for k, v in want.items() if not reference.close(got[k], v)]
    for queue, (n, longest) in reference.queue_waiting(events, now, max_wait_s=max_wait_s).items():
        got = got_q[queue]
        if (got["waiting"], got["longest_wait_seconds"]) != (n, longest):
            out.append(f"{queue} waiting {got['waiting']}/{got['longest_wait_seconds']} != {n}/{longest}")
    agents = {a["agent_id"]: a for a in snap["agents"]}
    current = reference.current_states(events)
    for agent, secs in reference.state_seconds(events, now, window_s).items():
        got_a = agents[agent]
        for state, v in secs.items():
            if not reference.close(got_a["state_seconds"][state], v):
                out.append(f"{agent} {state} seconds {got_a['state_seconds'][state]} != {v}")
        if not reference.close(got_a["kpis"]["occupancy"], reference.occupancy(secs)):
            out.append(f"{agent} occupancy {got_a['kpis']['occupancy']} != {reference.occupancy(secs)}")
        state, since, reason = current[agent]
        if (got_a["state"], as_epoch(got_a["state_since"]), got_a["reason"]) != (state, since, reason):
            out.append(f"{agent} state {got_a['state']} {got_a['state_since']} {got_a['reason']} != {current[agent]}")
    rates = reference.campaign_abandon_rates(events, now, window_s)
    got_c = {c["campaign"]: c for c in snap["campaigns"]}
    for campaign, rate in rates.items():
        got_rate = (
            snap["floor"]["kpis"]["outbound_abandon_rate"]
            if campaign == "*"
            else got_c[campaign]["kpis"]["outbound_abandon_rate"]
        )
        if not reference.close(got_rate, rate):
            out.append(f"campaign {campaign}: {got_rate} != {rate}")
    return out


def as_epoch(ts: str | None) -> float | None:
    return None if ts is None else datetime.fromisoformat(ts).timestamp()


async def test_shuffled_trace_with_duplicates_gives_exact_queues_states_and_campaigns(
    settings: Settings, stack: Any
) -> None:
    now = time.time()
    # One hour of a 20-agent floor near its natural pace: real waits, abandons, breaks and dropped dials.
    events = [e for _, e in generate(agents=20, rate=1.0, duration_s=3600, seed=4, start_s=now - 3600)]
    pairs = [("tickets" if e["type"].startswith(("ticket", "survey")) else "calls", e) for e in events]
    messages, copies = tracegen.with_duplicates(
        tracegen.to_messages(tracegen.shuffled(pairs, seed=5)), share=0.2, seed=6
    )
    assert copies > 100
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, messages)

    # The widest rolling window holds the whole hour (`today` would not, for an hour after midnight).
    widest = max((n for n in settings.window_names if n != "today"), key=settings.window_s)

    async def counted() -> bool:
        snap = await api_snapshot(settings, widest)
        return sum(q["kpis"]["offered"] for q in snap["queues"]) == sum(e["type"] == "call.queued" for e in events)

    await async_wait_for(counted, timeout_s=120, message="every call.queued counted")
    # All offered calls are in; give the last answers the same chance by waiting on the oracle itself.
    for window in settings.window_names:
        window_s = settings.window_s(window)

        async def exact(window: str = window, window_s: int = window_s) -> bool:
            found = problems(await api_snapshot(settings, window), events, window_s, settings.max_wait_s)
            assert not found, "; ".join(found[:5])
            return True

        await async_wait_for(exact, timeout_s=60, message=f"the {window} snapshot matching the oracle")
    snap = await api_snapshot(settings, "1h")
    assert {q["queue"] for q in snap["queues"]} == {e["queue"] for e in events if e["type"] == "call.queued"}
    assert sum(q["kpis"]["abandoned"] + q["kpis"]["short_abandoned"] for q in snap["queues"]) > 0
    assert {c["campaign"] for c in snap["campaigns"]} == {e["campaign"] for e in events if "campaign" in e}
    assert sum(snap["floor"]["states"].values()) == len(snap["agents"])


async def test_longest_wait_alert_fires_with_no_event_after_the_callers_entry(
    settings: Settings, stack: Any, tmp_path: Path
) -> None:
    toml = "[queue_kpi.longest_wait_seconds]\nwarning_above = 3\ncritical_above = 6\n"
    config = tmp_path / "thresholds.toml"
    config.write_text(toml)
    settings = settings.replace(config_path=str(config), **load_thresholds(toml))
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    async with Feed(feed_url(settings)) as feed:
        await feed.wait(lambda f: f.of_type("snapshot"), what="the initial snapshot")
        # The worker is consuming once a probe shows up; only then does the caller enter the queue.
        await produce_calls(settings, [agent_state("probe", 0, ts=time.time())])
        await async_wait_for(lambda: has_agent(settings, "probe"), message="the worker consuming")
        entry = time.time()
        queued = {"event_id": "lw-q1", "type": "call.queued", "ts": round(entry, 3), "call_id": "lw-1",
                  "queue": "billing"}  # fmt: skip
        await produce_calls(settings, [queued])
        # No event from here on: only the sweep sees the caller waiting ever longer.
        fired = await feed.wait(lambda f: f.alerts(scope="queue", kpi="longest_wait_seconds"), timeout_s=30,
                                what="the longest-wait alert")  # fmt: skip
        fired_after = time.time() - entry
        alert = fired[0]
        assert (alert["queue"], alert["severity"], alert["threshold"], alert["window"]) == (
            "billing",
            "warning",
            3.0,
            "live",
        )
        assert alert["value"] > 3
        print(f"longest-wait alert fired {fired_after:.2f} s after the entry (threshold 3 s)")
        assert fired_after < 3 + 2.5, f"fired {fired_after:.1f} s after the entry"
        critical = await feed.wait(lambda f: f.alerts(scope="queue", severity="critical"), timeout_s=30,
                                   what="the escalation past 6 s")  # fmt: skip
        assert critical[0]["id"] == alert["id"]
        snap = await api_snapshot(settings)
        billing = next(q for q in snap["queues"] if q["queue"] == "billing")
        assert billing["waiting"] == 1
        assert billing["longest_wait_seconds"] == pytest.approx(as_of(snap) - round(entry, 3), abs=0.002)
        assert billing["levels"]["longest_wait_seconds"] == "critical"
        answered = {"event_id": "lw-a1", "type": "call.answered", "ts": round(time.time(), 3), "call_id": "lw-1",
                    "queue": "billing", "agent_id": "ag-1"}  # fmt: skip
        await produce_calls(settings, [answered])
        resolved = await feed.wait(lambda f: f.alerts(scope="queue", status="resolved"), timeout_s=30,
                                   what="the resolve once the caller is answered")  # fmt: skip
        assert resolved[0]["id"] == alert["id"]
        assert resolved[0]["value"] is None
        snap = await api_snapshot(settings)
        billing = next(q for q in snap["queues"] if q["queue"] == "billing")
        assert (billing["waiting"], billing["longest_wait_seconds"], billing["kpis"]["answered"]) == (0, None, 1)
        assert orjson.dumps(snap)  # the snapshot stays JSON
