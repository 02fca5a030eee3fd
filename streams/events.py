"""Events in: decode and validate the contract's event types into `Event` records.

The field rules are declarations (`streams.eventtypes`), read here and by the JSON Schema generator.
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
from streams.eventtypes import BY_NAME, COMMON, MAX_SECONDS, SELF_CHECKED, TOPIC_TYPES, EventType, Field

MAX_EVENT_BYTES = 64 * 1024
ALL_TYPES: frozenset[str] = frozenset(BY_NAME)
AGENT_STATES = frozenset(BY_NAME["agent.state"].field("state").choices)
DIRECTIONS = frozenset(BY_NAME["call.ended"].field("direction").choices)
_TABLE_COMMON = tuple(f for f in COMMON if f.name not in SELF_CHECKED)


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
    if value > MAX_SECONDS:
        raise _fail(f"{name} is {value!r}, must be at most a week ({MAX_SECONDS} s)", raw)
    return round(value * 1000)


def _number(raw: dict[str, Any], f: Field) -> int | float | None:
    """A `milli` or `integer` field within its bounds; None when optional and absent."""
    value = raw.get(f.name)
    if value is None:
        if f.required:
            raise _fail(f"{f.name} is missing, it is required for {raw.get('type')}", raw)
        return None
    integral = f.kind == "integer"
    span = f"from {f.minimum:g} to {f.maximum:g}" if f.minimum is not None and f.maximum is not None else ""
    what = f.what or (f"an integer {span}" if integral else "a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"{f.name} is {value!r}, must be {what}", raw)
    if integral and value != int(value):
        raise _fail(f"{f.name} is {value!r}, must be {what}", raw)
    if integral and f.minimum is not None and f.maximum is not None and not f.minimum <= value <= f.maximum:
        raise _fail(f"{f.name} is {value!r}, must be {span}", raw)
    if f.minimum is not None and value < f.minimum:
        raise _fail(f"{f.name} is {value!r}, must be >= {f.minimum:g}", raw)
    if f.exclusive_minimum is not None and value <= f.exclusive_minimum:
        raise _fail(f"{f.name} is {value!r}, must be > {f.exclusive_minimum:g}", raw)
    if f.maximum is not None and value > f.maximum:
        raise _fail(f"{f.name} is {value!r}, must be at most {f.maximum:g}", raw)
    return int(value) if integral else round(value * 1000)


def _text(raw: dict[str, Any], f: Field) -> str | None:
    value = raw.get(f.name)
    if value is None:
        if f.required:
            raise _fail(f"{f.name} is missing, it is required for {raw.get('type')}", raw)
        return None
    if not isinstance(value, str) or (f.max_chars is not None and len(value) > f.max_chars):
        limit = f" of at most {f.max_chars} characters" if f.max_chars is not None else ""
        raise _fail(f"{f.name} is {value!r}, must be a string{limit}", raw)
    return value


def _enum(raw: dict[str, Any], f: Field) -> str | None:
    value = raw.get(f.name)
    if value is None:
        if f.required:
            raise _fail(f"{f.name} is missing, it is required for {raw.get('type')}", raw)
        return None
    if value not in f.choices:
        if len(f.choices) == 2:
            allowed = f"'{f.choices[0]}' or '{f.choices[1]}'"
        else:
            allowed = "one of " + ", ".join(sorted(f.choices))
        raise _fail(f"{f.name} is {value!r}, must be {allowed}", raw)
    return value


def _value(raw: dict[str, Any], f: Field) -> Any:
    """The checked value of field `f` as Event keeps it (None when optional and absent)."""
    if f.kind == "id":
        return _ident(raw, f.name, required=f.required)
    if f.kind == "bool":
        return None if raw.get(f.name) is None and not f.required else _bool(raw, f.name, default=None)
    if f.kind == "seconds":
        return _seconds_ms(raw, f.name, required=f.required) if raw.get(f.name) is not None or f.required else None
    if f.kind in ("milli", "integer"):
        return _number(raw, f)
    if f.kind == "enum":
        return _enum(raw, f)
    return _text(raw, f)


def _build(spec: EventType, raw: dict[str, Any], event_id: str, ts_ms: int) -> Event:
    """Check every declared field of `spec` in order, then the one-of group and cross-field checks."""
    attrs: dict[str, Any] = {}
    for f in (*_TABLE_COMMON, *spec.fields):
        value = _value(raw, f)
        if f.attr is None or value is None:
            continue
        attrs[f.attr] = attrs.get(f.attr, 0) + value if f.kind == "seconds" else value
    if spec.one_of and all(raw.get(name) is None for name in spec.one_of):
        names = " and ".join(spec.one_of) if len(spec.one_of) == 2 else ", ".join(spec.one_of)
        raise _fail(f"{names} are {'both' if len(spec.one_of) == 2 else 'all'} missing, {spec.name} needs one of them",
                    raw)  # fmt: skip
    for check in spec.checks:
        reason = check.reason(raw)
        if reason is not None:
            raise _fail(reason, raw)
    attrs["team"] = attrs.get("team") or None
    return Event(event_id, spec.name, ts_ms, **attrs)


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
    return _build(BY_NAME[etype], raw, event_id, ts_ms)
