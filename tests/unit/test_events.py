"""Unit tests of event validation: every contract event type decodes, every bad one names field and rule."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from callpulse.exceptions import InvalidEvent
from streams.events import MAX_EVENT_BYTES, Event, decode, parse_ts_ms

NOW_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NOW_S = NOW_MS / 1000

VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "call.ended": (
        "calls",
        {
            "event_id": "e1",
            "type": "call.ended",
            "ts": NOW_S,
            "call_id": "c1",
            "agent_id": "a1",
            "team": "sales",
            "direction": "inbound",
            "connected": True,
            "talk_seconds": 200,
            "hold_seconds": 30,
            "wrap_seconds": 70,
            "resolved": True,
            "customer_id": "cu1",
            "outcome": "sale",
            "wait_seconds": 12,
        },
    ),
    "agent.state": ("calls", {"event_id": "e2", "type": "agent.state", "ts": NOW_S, "agent_id": "a1", "state": "wrap"}),
    "ticket.created": (
        "tickets",
        {"event_id": "e3", "type": "ticket.created", "ts": NOW_S, "ticket_id": "t1", "customer_id": "cu1"},
    ),
    "ticket.replied": (
        "tickets",
        {"event_id": "e4", "type": "ticket.replied", "ts": NOW_S, "ticket_id": "t1", "agent_id": "a1"},
    ),
    "ticket.resolved": (
        "tickets",
        {"event_id": "e5", "type": "ticket.resolved", "ts": NOW_S, "ticket_id": "t1", "agent_id": "a1"},
    ),
    "ticket.escalated": (
        "tickets",
        {"event_id": "e6", "type": "ticket.escalated", "ts": NOW_S, "ticket_id": "t1", "agent_id": "a1"},
    ),
    "ticket.reopened": ("tickets", {"event_id": "e7", "type": "ticket.reopened", "ts": NOW_S, "ticket_id": "t1"}),
    "survey.csat": (
        "tickets",
        {"event_id": "e8", "type": "survey.csat", "ts": NOW_S, "agent_id": "a1", "score": 4, "call_id": "c1"},
    ),
    "survey.nps": (
        "tickets",
        {"event_id": "e9", "type": "survey.nps", "ts": NOW_S, "agent_id": "a1", "score": 0, "ticket_id": "t1"},
    ),
    "qa.scored": (
        "tickets",
        {
            "event_id": "e10",
            "type": "qa.scored",
            "ts": NOW_S,
            "agent_id": "a1",
            "score": 87.5,
            "max_score": 100,
            "compliant": False,
            "call_id": "c1",
        },
    ),
    "complaint.logged": (
        "tickets",
        {"event_id": "e11", "type": "complaint.logged", "ts": NOW_S, "agent_id": "a1", "call_id": "c1"},
    ),
}


def call(**changes: Any) -> dict[str, Any]:
    """A valid call.ended with some fields changed (a value of ... removes the field)."""
    raw = dict(VALID["call.ended"][1])
    for key, value in changes.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def of_type(kind: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    topic, raw = VALID[kind]
    raw = dict(raw)
    for key, value in changes.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return topic, raw


def reason(value: bytes | None, topic: str = "calls") -> str:
    """The InvalidEvent reason decoding `value` gives."""
    with pytest.raises(InvalidEvent) as info:
        decode(value, topic=topic, now_ms=NOW_MS)
    return info.value.reason


def reason_of(raw: dict[str, Any], topic: str = "calls") -> str:
    return reason(orjson.dumps(raw), topic)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_event_type_decodes_on_its_topic(kind: str) -> None:
    topic, raw = VALID[kind]
    event = decode(orjson.dumps(raw), topic=topic, now_ms=NOW_MS)
    assert event.type == kind
    assert event.event_id == raw["event_id"]
    assert event.ts_ms == NOW_MS


def test_call_ended_fields_are_kept_with_handle_time_in_ms() -> None:
    event = decode(orjson.dumps(VALID["call.ended"][1]), topic="calls", now_ms=NOW_MS)
    assert event == Event(
        "e1",
        "call.ended",
        NOW_MS,
        agent_id="a1",
        team="sales",
        call_id="c1",
        direction="inbound",
        connected=True,
        handle_ms=300_000,
        resolved=True,
        customer_id="cu1",
        outcome="sale",
    )


def test_call_ended_optional_fields_take_their_defaults() -> None:
    raw = call(
        hold_seconds=..., wrap_seconds=..., resolved=..., customer_id=..., outcome=..., team=..., wait_seconds=...
    )
    event = decode(orjson.dumps(raw), topic="calls", now_ms=NOW_MS)
    assert (event.handle_ms, event.resolved, event.customer_id, event.outcome, event.team) == (
        200_000,
        False,
        None,
        None,
        None,
    )


def test_fractional_seconds_are_kept_to_the_millisecond() -> None:
    event = decode(orjson.dumps(call(talk_seconds=12.3, hold_seconds=0.25, wrap_seconds=1.001)), topic="calls",
                   now_ms=NOW_MS)  # fmt: skip
    assert event.handle_ms == 13_551


def test_survey_score_given_as_whole_float_is_an_integer() -> None:
    topic, raw = of_type("survey.csat", score=4.0)
    assert decode(orjson.dumps(raw), topic=topic, now_ms=NOW_MS).score == 4


def test_not_json_is_invalid() -> None:
    assert "value is not valid JSON" in reason(b'{"event_id": "e1", "type": ')


def test_not_utf8_is_invalid() -> None:
    assert reason(b'{"event_id": "\xff\xfe"}') == "value is not UTF-8 (byte 14), must be UTF-8 JSON"


def test_json_array_is_not_an_object() -> None:
    assert reason(b"[1, 2]") == "value is a JSON list, must be a JSON object"


def test_json_string_is_not_an_object() -> None:
    assert reason(b'"call.ended"') == "value is a JSON str, must be a JSON object"


def test_json_null_body_is_not_an_object() -> None:
    assert "must be a JSON object" in reason(b"null")


def test_null_kafka_value_is_invalid() -> None:
    assert reason(None) == "value is null, must be a JSON object"


def test_null_required_field_counts_as_missing() -> None:
    assert reason_of(call(talk_seconds=None)) == "talk_seconds is missing, it is required for call.ended"


def test_value_over_64_kb_is_invalid() -> None:
    value = orjson.dumps(call(outcome="x" * MAX_EVENT_BYTES))
    assert reason(value) == f"value is {len(value)} bytes, must be at most 65536"


def test_value_of_exactly_64_kb_is_accepted() -> None:
    base = orjson.dumps(call(outcome=""))
    value = orjson.dumps(call(outcome="x" * (MAX_EVENT_BYTES - len(base))))
    assert len(value) == MAX_EVENT_BYTES
    assert decode(value, topic="calls", now_ms=NOW_MS).outcome == "x" * (MAX_EVENT_BYTES - len(base))


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("call.ended", "call_id"),
        ("call.ended", "agent_id"),
        ("call.ended", "direction"),
        ("call.ended", "connected"),
        ("call.ended", "talk_seconds"),
        ("call.ended", "ts"),
        ("agent.state", "agent_id"),
        ("agent.state", "state"),
        ("ticket.created", "ticket_id"),
        ("ticket.replied", "agent_id"),
        ("ticket.resolved", "agent_id"),
        ("ticket.escalated", "agent_id"),
        ("ticket.reopened", "ticket_id"),
        ("survey.csat", "agent_id"),
        ("survey.csat", "score"),
        ("survey.nps", "agent_id"),
        ("survey.nps", "score"),
        ("qa.scored", "agent_id"),
        ("qa.scored", "score"),
        ("qa.scored", "max_score"),
        ("complaint.logged", "agent_id"),
    ],
)
def test_missing_required_field_names_it(kind: str, field: str) -> None:
    topic, raw = of_type(kind, **{field: ...})
    assert f"{field} is missing, it is required for {kind}" in reason_of(raw, topic)


def test_missing_event_id_is_invalid() -> None:
    assert "event_id is None, must be a non-empty string" in reason_of(call(event_id=...))


def test_survey_without_ticket_or_call_is_invalid() -> None:
    topic, raw = of_type("survey.csat", call_id=...)
    assert "ticket_id and call_id are both missing" in reason_of(raw, topic)


@pytest.mark.parametrize("kind", ["survey.nps", "qa.scored", "complaint.logged"])
def test_feedback_without_ticket_or_call_names_the_type(kind: str) -> None:
    topic, raw = of_type(kind, call_id=..., ticket_id=...)
    assert f"ticket_id and call_id are both missing, {kind} needs one of them" in reason_of(raw, topic)


def test_sale_amount_is_kept_in_thousandths() -> None:
    event = decode(orjson.dumps(call(amount=129.99)), topic="calls", now_ms=NOW_MS)
    assert event.amount_milli == 129_990


def test_call_without_amount_has_none() -> None:
    assert decode(orjson.dumps(call()), topic="calls", now_ms=NOW_MS).amount_milli is None


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (-0.01, "amount is -0.01, must be >= 0"),
        ("12", "amount is '12', must be a number (the order value)"),
        (True, "amount is True, must be a number (the order value)"),
        (2e12, "amount is 2000000000000.0, must be at most 1e+12"),
    ],
)
def test_impossible_amount_is_invalid(amount: Any, expected: str) -> None:
    assert expected in reason_of(call(amount=amount))


def test_qa_review_keeps_points_in_thousandths_and_compliance() -> None:
    topic, raw = VALID["qa.scored"]
    event = decode(orjson.dumps(raw), topic=topic, now_ms=NOW_MS)
    assert (event.score_milli, event.max_score_milli, event.compliant) == (87_500, 100_000, False)


def test_qa_review_without_compliant_says_nothing_about_compliance() -> None:
    topic, raw = of_type("qa.scored", compliant=...)
    assert decode(orjson.dumps(raw), topic=topic, now_ms=NOW_MS).compliant is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"score": -1}, "score is -1, must be >= 0"),
        ({"score": 101}, "score is 101, must be <= max_score (100)"),
        ({"max_score": 0}, "max_score is 0, must be > 0"),
        ({"max_score": -5}, "max_score is -5, must be >= 0"),
        ({"score": "high"}, "score is 'high', must be a number of points >= 0"),
        ({"compliant": "yes"}, "compliant is 'yes', must be true or false"),
    ],
)
def test_impossible_qa_review_is_invalid(changes: dict[str, Any], expected: str) -> None:
    topic, raw = of_type("qa.scored", **changes)
    assert expected in reason_of(raw, topic)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (-1, "score is -1, must be from 0 to 10"),
        (11, "score is 11, must be from 0 to 10"),
        (9.5, "score is 9.5, must be an integer from 0 to 10"),
        (False, "score is False, must be an integer from 0 to 10"),
    ],
)
def test_impossible_nps_score_is_invalid(score: Any, expected: str) -> None:
    topic, raw = of_type("survey.nps", score=score)
    assert expected in reason_of(raw, topic)


@pytest.mark.parametrize("score", [0, 10])
def test_nps_scores_zero_and_ten_are_valid(score: int) -> None:
    topic, raw = of_type("survey.nps", score=score)
    assert decode(orjson.dumps(raw), topic=topic, now_ms=NOW_MS).score == score


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"event_id": 5}, "event_id is 5, must be a non-empty string"),
        ({"event_id": ""}, "event_id is '', must be a non-empty string"),
        ({"connected": "yes"}, "connected is 'yes', must be true or false"),
        ({"resolved": 1}, "resolved is 1, must be true or false"),
        ({"talk_seconds": "12"}, "talk_seconds is '12', must be a number of seconds"),
        ({"hold_seconds": True}, "hold_seconds is True, must be a number of seconds"),
        ({"agent_id": [1]}, "agent_id is [1], must be a string"),
        ({"agent_id": True}, "agent_id is True, must be a string"),
        ({"team": 3}, "team is 3, must be a string"),
        ({"outcome": 1}, "outcome is 1, must be a string"),
        ({"ts": True}, "ts is True, must be RFC 3339 with offset or epoch seconds"),
        ({"ts": [1]}, "ts is [1], must be RFC 3339 with offset or epoch seconds"),
        ({"ts": "yesterday"}, "ts is 'yesterday', must be RFC 3339 with offset or epoch seconds"),
    ],
)
def test_wrong_type_names_field_and_rule(changes: dict[str, Any], expected: str) -> None:
    assert expected in reason_of(call(**changes))


@pytest.mark.parametrize("field", ["talk_seconds", "hold_seconds", "wrap_seconds", "wait_seconds"])
def test_negative_seconds_are_invalid(field: str) -> None:
    assert f"{field} is -4, must be >= 0" in reason_of(call(**{field: -4}))


def test_negative_epoch_ts_is_invalid() -> None:
    assert "ts is -1, must be epoch seconds >= 0" in reason_of(call(ts=-1))


def test_unknown_type_lists_the_known_ones() -> None:
    msg = reason_of(call(type="call.started"))
    assert "type is 'call.started', must be one of agent.state, call.abandoned, call.answered, call.ended" in msg


@pytest.mark.parametrize("kind", sorted(VALID))
def test_type_on_the_wrong_topic_is_invalid(kind: str) -> None:
    topic, raw = VALID[kind]
    other = "tickets" if topic == "calls" else "calls"
    assert f"type {kind!r} does not belong on topic {other!r}" in reason_of(raw, other)


def test_unknown_direction_is_invalid() -> None:
    assert "direction is 'sideways', must be 'inbound' or 'outbound'" in reason_of(call(direction="sideways"))


def test_unknown_agent_state_is_invalid() -> None:
    topic, raw = of_type("agent.state", state="lunch")
    assert "state is 'lunch', must be one of available, break, offline, on_call, wrap" in reason_of(raw, topic)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0, "score is 0, must be from 1 to 5"),
        (6, "score is 6, must be from 1 to 5"),
        (3.5, "score is 3.5, must be an integer from 1 to 5"),
        (True, "score is True, must be an integer from 1 to 5"),
        ("4", "score is '4', must be an integer from 1 to 5"),
    ],
)
def test_impossible_survey_score_is_invalid(score: Any, expected: str) -> None:
    topic, raw = of_type("survey.csat", score=score)
    assert expected in reason_of(raw, topic)


def test_ts_more_than_five_minutes_ahead_is_invalid() -> None:
    assert "ts is 301 s in the future, must be at most 300 s ahead" in reason_of(call(ts=NOW_S + 301))


def test_ts_exactly_five_minutes_ahead_is_accepted() -> None:
    assert decode(orjson.dumps(call(ts=NOW_S + 300)), topic="calls", now_ms=NOW_MS).ts_ms == NOW_MS + 300_000


def test_rfc3339_without_offset_is_invalid() -> None:
    msg = reason_of(call(ts="2024-01-01T00:00:00"))
    assert "ts is '2024-01-01T00:00:00', has no UTC offset" in msg


@pytest.mark.parametrize(
    "ts",
    [
        1_704_067_199.5,
        "2023-12-31T23:59:59.500Z",
        "2023-12-31T23:59:59.5+00:00",
        "2024-01-01T01:59:59.500+02:00",
        "2023-12-31T18:29:59.500-05:30",
    ],
)
def test_epoch_and_rfc3339_with_offsets_parse_to_the_same_ms(ts: float | str) -> None:
    assert parse_ts_ms(ts) == 1_704_067_199_500
    assert decode(orjson.dumps(call(ts=ts)), topic="calls", now_ms=NOW_MS).ts_ms == 1_704_067_199_500


def test_rfc3339_lowercase_t_and_z_are_accepted() -> None:
    # RFC 3339 section 5.6: "T" and "Z" may alternatively be lower case.
    assert parse_ts_ms("2023-12-31t23:59:59.500z") == 1_704_067_199_500


def test_integer_ids_are_turned_into_strings() -> None:
    event = decode(orjson.dumps(call(agent_id=17, customer_id=42)), topic="calls", now_ms=NOW_MS)
    assert (event.agent_id, event.customer_id) == ("17", "42")


def test_empty_team_means_no_team() -> None:
    assert decode(orjson.dumps(call(team="")), topic="calls", now_ms=NOW_MS).team is None


def test_invalid_event_message_names_type_id_and_reason() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(orjson.dumps(call(talk_seconds=-4)), topic="calls", now_ms=NOW_MS)
    assert (info.value.event_type, info.value.event_id) == ("call.ended", "e1")
    assert str(info.value) == "invalid event 'call.ended' (event_id=e1): talk_seconds is -4, must be >= 0"
