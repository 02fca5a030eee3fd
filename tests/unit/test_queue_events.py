"""Unit tests of the (2e) queue events and fields: call.queued/answered/abandoned, call.ended queue/campaign/
abandoned, agent.state reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from callpulse.exceptions import InvalidEvent
from streams.events import decode

NOW_MS = 1_704_067_200_000
NOW_S = NOW_MS / 1000
BASE: dict[str, dict[str, Any]] = {
    "call.queued": {"call_id": "c1", "queue": "billing", "customer_id": "cu1"},
    "call.answered": {"call_id": "c1", "queue": "billing", "agent_id": "a1"},
    "call.abandoned": {"call_id": "c1", "queue": "billing"},
}
DIAL = {
    "event_id": "d1",
    "type": "call.ended",
    "ts": NOW_S,
    "call_id": "c9",
    "agent_id": "a1",
    "direction": "outbound",
    "connected": False,
    "talk_seconds": 0,
    "campaign": "spring",
    "abandoned": True,
}


def event(kind: str, **changes: Any) -> dict[str, Any]:
    raw = {"event_id": "e1", "type": kind, "ts": NOW_S, **BASE[kind]}
    for key, value in changes.items():
        if value is ...:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


def reason_of(raw: dict[str, Any], topic: str = "calls") -> str:
    with pytest.raises(InvalidEvent) as info:
        decode(orjson.dumps(raw), topic=topic, now_ms=NOW_MS)
    return info.value.reason


@pytest.mark.parametrize("kind", sorted(BASE))
def test_queue_events_decode_with_call_and_queue(kind: str) -> None:
    e = decode(orjson.dumps(event(kind)), topic="calls", now_ms=NOW_MS)
    assert (e.type, e.call_id, e.queue, e.ts_ms) == (kind, "c1", "billing", NOW_MS)


def test_answered_keeps_its_agent() -> None:
    assert decode(orjson.dumps(event("call.answered")), topic="calls", now_ms=NOW_MS).agent_id == "a1"


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("call.queued", "call_id"),
        ("call.queued", "queue"),
        ("call.answered", "agent_id"),
        ("call.answered", "queue"),
        ("call.abandoned", "call_id"),
    ],
)
def test_missing_queue_event_field_names_it(kind: str, field: str) -> None:
    assert f"{field} is missing, it is required for {kind}" in reason_of(event(kind, **{field: ...}))


def test_queue_must_be_a_string() -> None:
    assert "queue is [1], must be a string" in reason_of(event("call.queued", queue=[1]))


@pytest.mark.parametrize("kind", sorted(BASE))
def test_queue_events_belong_on_the_calls_topic(kind: str) -> None:
    assert f"type {kind!r} does not belong on topic 'tickets'" in reason_of(event(kind), "tickets")


def test_dropped_dial_keeps_campaign_and_abandoned() -> None:
    e = decode(orjson.dumps(DIAL), topic="calls", now_ms=NOW_MS)
    assert (e.campaign, e.abandoned, e.connected, e.queue) == ("spring", True, False, None)


def test_abandoned_defaults_to_false_and_queue_is_kept_on_inbound() -> None:
    raw = {**DIAL, "direction": "inbound", "connected": True, "queue": "billing"}
    del raw["abandoned"], raw["campaign"]
    e = decode(orjson.dumps(raw), topic="calls", now_ms=NOW_MS)
    assert (e.abandoned, e.queue, e.campaign) == (False, "billing", None)


def test_abandoned_inbound_call_is_invalid() -> None:
    assert "abandoned is true on an inbound call" in reason_of({**DIAL, "direction": "inbound"})


def test_abandoned_connected_call_is_invalid() -> None:
    assert "abandoned is true with connected true, a dropped call has connected: false" in reason_of(
        {**DIAL, "connected": True}
    )


def test_abandoned_must_be_a_boolean() -> None:
    assert "abandoned is 'yes', must be true or false" in reason_of({**DIAL, "abandoned": "yes"})


def test_agent_state_keeps_its_reason() -> None:
    raw = {"event_id": "s1", "type": "agent.state", "ts": NOW_S, "agent_id": "a1", "state": "break", "reason": "lunch"}
    assert decode(orjson.dumps(raw), topic="calls", now_ms=NOW_MS).reason == "lunch"


def test_agent_state_reason_must_be_a_string() -> None:
    raw = {"event_id": "s1", "type": "agent.state", "ts": NOW_S, "agent_id": "a1", "state": "break", "reason": 5.5}
    assert "reason is 5.5, must be a string" in reason_of(raw)
