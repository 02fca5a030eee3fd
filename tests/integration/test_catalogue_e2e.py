"""The catalogue end to end on real processes: Kafka -> `callpulse worker` -> Redis -> `callpulse monitor`.

A simulated floor (sales with amounts, appointments, NPS surveys, QA reviews, complaints) arrives shuffled
with redelivered copies and bad new-event messages; every window's snapshot and every agent's, team's and
the floor's scorecard score must equal the brute-force recomputation of `tests.reference`.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callpulse.kafka import ensure_topics
from callpulse.settings import Settings, load_thresholds
from callpulse.simulate import generate
from tests.helpers import async_wait_for, result_counts
from tests.integration import tracegen
from tests.integration.tracegen import Message
from tests.reference import diff_scores, diff_snapshot, expected, scores

pytestmark = pytest.mark.integration

CARD: dict[str, dict[str, Any]] = {
    "revenue": {"weight": 40, "target": 400},
    "aov": {"weight": 10, "target": 120},
    "appointment_rate": {"weight": 10, "target": 0.05},
    "nps": {"weight": 10, "target": 50},
    "qa_score": {"weight": 10, "target": 0.75},
    "complaint_rate": {"weight": 10, "target": 0.02, "better": "lower"},
    "aht_seconds": {"weight": 10, "target_range": [180, 360]},
}
CONFIG = '[scorecard]\nwindow = "today"\n' + "".join(
    f"[scorecard.kpi.{key}]\n" + "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in spec.items())
    for key, spec in CARD.items()
)


def bad_new_events(now: float) -> list[tuple[str, bytes, str]]:
    """(topic, value, field the reason must name) for impossible values of the new events."""
    ts = round(now - 30, 3)
    base = {"ts": ts, "agent_id": "ag-bad", "call_id": "c-bad"}
    sale = {**base, "type": "call.ended", "direction": "outbound", "connected": True, "talk_seconds": 60}
    cases = [
        ("calls", {**sale, "event_id": "bad-amount", "outcome": "sale", "amount": -5}, "amount"),
        ("tickets", {**base, "event_id": "bad-nps", "type": "survey.nps", "score": 11}, "score"),
        ("tickets", {**base, "event_id": "bad-qa", "type": "qa.scored", "score": 9, "max_score": 5}, "score"),
        ("tickets", {**base, "event_id": "bad-max", "type": "qa.scored", "score": 0, "max_score": 0}, "max_score"),
        (
            "tickets",
            {**base, "event_id": "bad-compl", "type": "qa.scored", "score": 1, "max_score": 2, "compliant": "yes"},
            "compliant",
        ),
        ("tickets", {"event_id": "bad-cmp", "type": "complaint.logged", "ts": ts, "agent_id": "ag-bad"}, "call_id"),
    ]
    return [(topic, orjson.dumps(raw), name) for topic, raw, name in cases]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


async def test_new_kpis_and_scores_equal_the_recomputation_on_real_servers(
    settings: Settings, stack: Any, tmp_path: Path
) -> None:
    config = tmp_path / "callpulse.toml"
    config.write_text(CONFIG)
    settings = settings.replace(config_path=str(config), **load_thresholds(CONFIG))
    now = time.time()
    trace = list(generate(agents=10, rate=0.4, duration_s=2.5 * 3600, seed=9, start_s=now - 2.5 * 3600 - 60))
    kinds = {e["type"] for _, e in trace}
    assert {"survey.nps", "qa.scored", "complaint.logged"} <= kinds
    assert any(e.get("outcome") == "appointment" for _, e in trace) and any("amount" in e for _, e in trace)
    messages, _copies = tracegen.with_duplicates(
        tracegen.to_messages(tracegen.shuffled(trace, seed=2)), share=0.1, seed=3
    )
    bad = bad_new_events(now)
    rng = random.Random(4)
    for topic, value, _ in bad:
        messages.insert(rng.randrange(len(messages) + 1), Message(topic, value))
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, messages, seed=5)

    last: dict[str, int] = {}

    async def settled() -> bool:
        last.update(await result_counts(settings))
        return last.get("ok", 0) + last.get("invalid", 0) >= len(trace) + len(bad)

    await async_wait_for(settled, timeout_s=90, interval_s=0.2, message="every event counted")
    assert (last["ok"], last["invalid"], last.get("late", 0)) == (len(trace), len(bad), 0), last

    valid = [e for _, e in trace]
    base = f"http://{settings.http_host}:{settings.http_port}"
    for window in settings.window_names:
        snap = orjson.loads(await asyncio.to_thread(_get, f"{base}/api/snapshot?window={window}"))
        at = datetime.fromisoformat(snap["as_of"]).timestamp()
        since = at - settings.longest_window_s
        want = expected(valid, at, settings.window_s(window), longest_s=settings.longest_window_s)
        assert diff_snapshot(snap, want) == [], window
        if window == "today":  # the comparison means something: every new KPI has a value
            assert all(v is not None for k, v in snap["floor"]["kpis"].items() if k != "response_seconds"), snap
        want_scores = scores(valid, at, settings.window_s("today"), CARD, since=since)
        assert diff_scores(snap, want_scores) == [], window
    agent_scores = _gauges((await asyncio.to_thread(_get, f"{base}/metrics/agents")).decode(), "callpulse_agent_score")
    assert set(agent_scores) == {(a,) for a in want_scores["agents"]}
    assert all(abs(agent_scores[(a,)] - v) < 1e-6 for a, v in want_scores["agents"].items())
    floor_text = (await asyncio.to_thread(_get, f"{base}/metrics")).decode()
    team_scores = _gauges(floor_text, "callpulse_team_score", label="team")
    assert {t: round(v, 6) for (t,), v in team_scores.items()} == {
        t: round(v, 6) for t, v in want_scores["teams"].items()
    }
    [(_, floor_score)] = _gauges(floor_text, "callpulse_floor_score", label=None).items()
    assert abs(floor_score - want_scores["floor"]) < 1e-6


def _gauges(text: str, name: str, *, label: str | None = "agent") -> dict[tuple[str, ...], float]:
    """One family's samples from Prometheus text, keyed by `label` (or by nothing)."""
    return {
        ((s.labels[label],) if label else ()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }
