"""Events in: decode and validate the contract's event types into `Event` records.

Anything that is not a valid event raises `InvalidEvent` with a reason naming the field
and the rule, so the worker can dead-letter it and carry on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from callpulse.exceptions import InvalidEvent

MAX_EVENT_BYTES = 64 * 1024
TOPIC_TYPES: dict[str, frozenset[str]] = {
    "calls": frozenset({"call.ended", "agent.state", "call.queued", "call.answered", "call.abandoned"}),
    "tickets": frozenset(
        {
            "ticket.created",
            "ticket.replied",
            "ticket.resolved",
            "ticket.escalated",
            "ticket.reopened",
            "survey.csat",
            "survey.nps",
            "qa.scored",
            "complaint.logged",
        }
    ),
}
ALL_TYPES: frozenset[str] = TOPIC_TYPES["calls"] | TOPIC_TYPES["tickets"]
AGENT_STATES = frozenset({"available", "on_call", "wrap", "break", "offline"})
DIRECTIONS = frozenset({"inbound", "outbound"})


@dataclass(slots=True, frozen=True)
class Event:
    """One validated event; times are integer milliseconds so window sums are exact in any order."""

    event_id: str
    type: str
    ts_ms: int
    agent_id: str | None = None
    team: str | None = None
    call_id: str | None = None
    direction: str | None = None
    connected: bool = False
    handle_ms: int = 0
    resolved: bool = False
    customer_id: str | None = None
    outcome: str | None = None
    state: str | None = None
    ticket_id: str | None = None
    score: int = 0  # survey.csat 1-5, survey.nps 0-10
    amount_milli: int | None = None  # call.ended: order value in thousandths; None when not given
    score_milli: int = 0  # qa.scored: points in thousandths
    max_score_milli: int = 0  # qa.scored: maximum points in thousandths
    compliant: bool | None = None  # qa.scored: None when the review does not say
    queue: str | None = None  # call.queued/answered/abandoned; inbound call.ended
    campaign: str | None = None  # outbound call.ended
    abandoned: bool = False  # outbound call.ended the dialer dropped
    reason: str | None = None  # agent.state


def _fail(reason: str, raw: dict[str, Any]) -> InvalidEvent:
    etype = raw.get("type") if isinstance(raw.get("type"), str) else None
    eid = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    return InvalidEvent(reason, event_type=etype, event_id=eid)


def _req(raw: dict[str, Any], name: str) -> Any:
    if name not in raw or raw[name] is None:
        raise _fail(f"{name} is missing, it is required for {raw.get('type')}", raw)
    return raw[name]


def _ident(raw: dict[str, Any], name: str, *, required: bool) -> str | None:
    """An id field: a non-empty string (an integer is accepted and turned into one)."""
    value = raw.get(name)
    if value is None:
        if required:
            raise _fail(f"{name} is missing, it is required for {raw.get('type')}", raw)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _fail(f"{name} is {value!r}, must be a string", raw)
    text = str(value)
    if not text or len(text) > 200:
        raise _fail(f"{name} is {text[:40]!r}, must be a non-empty string of at most 200 characters", raw)
    return text


def _bool(raw: dict[str, Any], name: str, *, default: bool | None) -> bool:
    value = raw.get(name)
    if value is None:
        if default is None:
            raise _fail(f"{name} is missing, it is required for {raw.get('type')}", raw)
        return default
    if not isinstance(value, bool):
        raise _fail(f"{name} is {value!r}, must be true or false", raw)
    return value


def _seconds_ms(raw: dict[str, Any], name: str, *, required: bool) -> int:
    value = raw.get(name)
    if value is None:
        if required:
            raise _fail(f"{name} is missing, it is required for {raw.get('type')}", raw)
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"{name} is {value!r}, must be a number of seconds", raw)
    if value < 0:
        raise _fail(f"{name} is {value!r}, must be >= 0", raw)
    if value > 7 * 86400:
        raise _fail(f"{name} is {value!r}, must be at most a week (604800 s)", raw)
    return round(value * 1000)


MAX_AMOUNT = 1e12  # no single order is worth more; also keeps thousandths exact in Redis' doubles


def _milli(raw: dict[str, Any], name: str, *, what: str, required: bool, limit: float = MAX_AMOUNT) -> int | None:
    """A non-negative number (an amount, QA points) as integer thousandths; None when optional and absent."""
    value = raw.get(name)
    if value is None:
        if required:
            raise _fail(f"{name} is missing, it is required for {raw.get('type')}", raw)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"{name} is {value!r}, must be {what}", raw)
    if value < 0:
        raise _fail(f"{name} is {value!r}, must be >= 0", raw)
    if value > limit:
        raise _fail(f"{name} is {value!r}, must be at most {limit:g}", raw)
    return round(value * 1000)


def _integer_score(raw: dict[str, Any], lo: int, hi: int) -> int:
    score = _req(raw, "score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or score != int(score):
        raise _fail(f"score is {score!r}, must be an integer from {lo} to {hi}", raw)
    if not lo <= score <= hi:
        raise _fail(f"score is {score!r}, must be from {lo} to {hi}", raw)
    return int(score)


def _subject(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """(ticket_id, call_id) of a survey, review or complaint: at least one is required."""
    ticket_id = _ident(raw, "ticket_id", required=False)
    call_id = _ident(raw, "call_id", required=False)
    if ticket_id is None and call_id is None:
        raise _fail(f"ticket_id and call_id are both missing, {raw.get('type')} needs one of them", raw)
    return ticket_id, call_id


def _feedback(raw: dict[str, Any], event_id: str, etype: str, ts_ms: int, team: str | None) -> Event:
    """survey.csat, survey.nps, qa.scored and complaint.logged: about one agent and one ticket or call."""
    agent_id = _ident(raw, "agent_id", required=True)
    score = score_milli = max_milli = 0
    compliant: bool | None = None
    if etype == "survey.csat":
        score = _integer_score(raw, 1, 5)
    elif etype == "survey.nps":
        score = _integer_score(raw, 0, 10)
    elif etype == "qa.scored":
        score_milli = _milli(raw, "score", what="a number of points >= 0", required=True) or 0
        max_milli = _milli(raw, "max_score", what="a number of points > 0", required=True) or 0
        if max_milli == 0:
            raise _fail(f"max_score is {raw['max_score']!r}, must be > 0", raw)
        if score_milli > max_milli:
            raise _fail(f"score is {raw['score']!r}, must be <= max_score ({raw['max_score']!r})", raw)
        if raw.get("compliant") is not None:
            compliant = _bool(raw, "compliant", default=None)
    ticket_id, call_id = _subject(raw)
    return Event(
        event_id,
        etype,
        ts_ms,
        agent_id=agent_id,
        team=team,
        ticket_id=ticket_id,
        call_id=call_id,
        score=score,
        score_milli=score_milli,
        max_score_milli=max_milli,
        compliant=compliant,
    )


def parse_ts_ms(value: Any) -> int:
    """Turn an RFC 3339 string with offset, or epoch seconds, into epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"ts is {value!r}, must be RFC 3339 with offset or epoch seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ts is {value!r}, must be epoch seconds >= 0")
        return round(value * 1000)
    if isinstance(value, str):
        try:
            # RFC 3339 allows a lower-case "z"; fromisoformat takes only "Z".
            parsed = datetime.fromisoformat(value[:-1] + "Z" if value.endswith("z") else value)
        except ValueError:
            raise ValueError(f"ts is {value[:40]!r}, must be RFC 3339 with offset or epoch seconds") from None
        if parsed.tzinfo is None:
            raise ValueError(f"ts is {value[:40]!r}, has no UTC offset; add one such as 'Z' or '+00:00'")
        return round(parsed.timestamp() * 1000)
    raise ValueError(f"ts is {value!r}, must be RFC 3339 with offset or epoch seconds")


def decode(value: bytes | None, *, topic: str, now_ms: int, max_future_ms: int = 300_000) -> Event:
    """Decode one Kafka message value from `topic` ('calls' or 'tickets') into an Event."""
    if value is None:
        raise InvalidEvent("value is null, must be a JSON object")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"value is {len(value)} bytes, must be at most {MAX_EVENT_BYTES}")
    try:
        raw = orjson.loads(value)  # orjson checks UTF-8 too; tell the two apart only on failure
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise InvalidEvent(f"value is not UTF-8 (byte {uexc.start}), must be UTF-8 JSON") from None
        raise InvalidEvent(f"value is not valid JSON ({exc}), must be one JSON object") from None
    if not isinstance(raw, dict):
        raise InvalidEvent(f"value is a JSON {type(raw).__name__}, must be a JSON object")
    return validate(raw, topic=topic, now_ms=now_ms, max_future_ms=max_future_ms)


def validate(raw: dict[str, Any], *, topic: str, now_ms: int, max_future_ms: int = 300_000) -> Event:
    """Check one decoded event against the contract and build its Event record."""
    event_id = raw.get("event_id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 200:
        raise _fail(f"event_id is {event_id!r}, must be a non-empty string of at most 200 characters", raw)
    etype = raw.get("type")
    if not isinstance(etype, str) or etype not in ALL_TYPES:
        raise _fail(f"type is {etype!r}, must be one of {', '.join(sorted(ALL_TYPES))}", raw)
    allowed = TOPIC_TYPES.get(topic, ALL_TYPES)
    if etype not in allowed:
        raise _fail(f"type {etype!r} does not belong on topic {topic!r}, only {', '.join(sorted(allowed))}", raw)
    try:
        ts_ms = parse_ts_ms(_req(raw, "ts"))
    except ValueError as exc:
        raise _fail(str(exc), raw) from None
    if ts_ms > now_ms + max_future_ms:
        ahead = (ts_ms - now_ms) / 1000
        raise _fail(f"ts is {ahead:.0f} s in the future, must be at most {max_future_ms // 1000} s ahead", raw)
    team = raw.get("team")
    if team is not None and (not isinstance(team, str) or len(team) > 200):
        raise _fail(f"team is {team!r}, must be a string", raw)
    team = team or None
    if etype == "call.ended":
        direction = _req(raw, "direction")
        if direction not in DIRECTIONS:
            raise _fail(f"direction is {direction!r}, must be 'inbound' or 'outbound'", raw)
        outcome = raw.get("outcome")
        if outcome is not None and not isinstance(outcome, str):
            raise _fail(f"outcome is {outcome!r}, must be a string", raw)
        handle_ms = (
            _seconds_ms(raw, "talk_seconds", required=True)
            + _seconds_ms(raw, "hold_seconds", required=False)
            + _seconds_ms(raw, "wrap_seconds", required=False)
        )
        _seconds_ms(raw, "wait_seconds", required=False)
        abandoned = _bool(raw, "abandoned", default=False)
        connected = _bool(raw, "connected", default=None)
        if abandoned and direction != "outbound":
            raise _fail("abandoned is true on an inbound call, only outbound calls can be dropped by the dialer", raw)
        if abandoned and connected:
            raise _fail("abandoned is true with connected true, a dropped call has connected: false", raw)
        amount_milli = _milli(raw, "amount", what="a number (the order value)", required=False)
        return Event(
            event_id,
            etype,
            ts_ms,
            agent_id=_ident(raw, "agent_id", required=True),
            team=team,
            call_id=_ident(raw, "call_id", required=True),
            direction=direction,
            connected=connected,
            handle_ms=handle_ms,
            resolved=_bool(raw, "resolved", default=False),
            customer_id=_ident(raw, "customer_id", required=False),
            outcome=outcome,
            queue=_ident(raw, "queue", required=False),
            campaign=_ident(raw, "campaign", required=False),
            abandoned=abandoned,
            amount_milli=amount_milli,
        )
    if etype == "agent.state":
        state = _req(raw, "state")
        if state not in AGENT_STATES:
            raise _fail(f"state is {state!r}, must be one of {', '.join(sorted(AGENT_STATES))}", raw)
        agent_id = _ident(raw, "agent_id", required=True)
        reason = _ident(raw, "reason", required=False)
        return Event(event_id, etype, ts_ms, agent_id=agent_id, team=team, state=state, reason=reason)
    if etype in ("call.queued", "call.answered", "call.abandoned"):
        return Event(
            event_id,
            etype,
            ts_ms,
            agent_id=_ident(raw, "agent_id", required=etype == "call.answered"),
            team=team,
            call_id=_ident(raw, "call_id", required=True),
            queue=_ident(raw, "queue", required=True),
            customer_id=_ident(raw, "customer_id", required=False),
        )
    if etype in ("survey.csat", "survey.nps", "qa.scored", "complaint.logged"):
        return _feedback(raw, event_id, etype, ts_ms, team)
    # ticket.*
    ticket_id = _ident(raw, "ticket_id", required=True)
    needs_agent = etype in ("ticket.replied", "ticket.resolved", "ticket.escalated")
    agent_id = _ident(raw, "agent_id", required=needs_agent)
    customer_id = _ident(raw, "customer_id", required=False) if etype == "ticket.created" else None
    channel = raw.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise _fail(f"channel is {channel!r}, must be a string", raw)
    return Event(event_id, etype, ts_ms, agent_id=agent_id, team=team, ticket_id=ticket_id, customer_id=customer_id)
