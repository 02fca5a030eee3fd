"""The published event JSON Schemas against the validator they are generated from.

Samples come from the declarations themselves: for every type and field, values the rule allows (the schema and the
validator must both accept them) and values it forbids (both must refuse them). The simulator's output must pass
both too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from callpulse.exceptions import InvalidEvent
from callpulse.simulate import generate
from streams.events import decode
from streams.eventtypes import COMMON, EVENT_TYPES, SELF_CHECKED, EventType, Field
from streams.schemas import all_schemas, event_schema

NOW_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NOW_S = NOW_MS / 1000
SCHEMAS = all_schemas()
TEAM = next(f for f in COMMON if f.name == "team")


VALIDATORS = {
    name: Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for name, schema in SCHEMAS.items()
}


def schema_validator(event_type: str) -> Draft202012Validator:
    return VALIDATORS[event_type]


def good_values(f: Field) -> list[Any]:
    """Values field `f`'s rule allows."""
    if f.kind == "id":
        return ["x", 17, "y" * 200]
    if f.kind == "text":
        return ["", "abc"] + (["z" * f.max_chars] if f.max_chars else [])
    if f.kind == "bool":
        return [True, False]
    if f.kind == "seconds":
        return [0, 12.5, 604800]
    if f.kind == "enum":
        return list(f.choices)
    low = f.minimum if f.minimum is not None else 0
    if f.exclusive_minimum is not None:
        low = max(low, f.exclusive_minimum + 0.5)
    high = f.maximum if f.maximum is not None else low + 100
    return [int(low), int(high)] if f.kind == "integer" else [low, high, (low + high) / 2]


def bad_values(f: Field) -> list[Any]:
    """Values field `f`'s rule forbids (null is absent, so it is bad only for a required field)."""
    if f.kind == "id":
        return [True, [1], {"a": 1}, "", "y" * 201, 1.5]
    if f.kind == "text":
        return [5, True, ["a"]] + (["z" * (f.max_chars + 1)] if f.max_chars else [])
    if f.kind == "bool":
        return ["yes", 1, 0]
    if f.kind == "seconds":
        return ["12", True, -4, -0.001, 604800.5]
    if f.kind == "enum":
        return ["nope", 1, True, f.choices[0].upper()]
    out: list[Any] = ["4", True]
    if f.minimum is not None:
        out.append(f.minimum - 1)
    if f.exclusive_minimum is not None:
        out.append(f.exclusive_minimum)
    if f.maximum is not None:
        out.append(f.maximum + 1)
    if f.kind == "integer":
        out.append((f.minimum or 0) + 0.5)
    return out


def minimal(t: EventType) -> dict[str, Any]:
    """A valid event of type `t` with only what is required."""
    raw: dict[str, Any] = {"event_id": f"ev-{t.name}", "type": t.name, "ts": NOW_S}
    for f in t.fields:
        if f.required:
            raw[f.name] = good_values(f)[0]
    if t.one_of:
        raw[t.one_of[0]] = good_values(t.field(t.one_of[0]))[0]
    return raw


def full(t: EventType) -> dict[str, Any]:
    """A valid event of type `t` with every field."""
    raw = minimal(t) | {"team": "north"}
    for f in t.fields:
        raw[f.name] = good_values(f)[-1]
    return raw


def accepted_by_validator(t: EventType, raw: dict[str, Any]) -> bool:
    try:
        decode(orjson.dumps(raw), topic=t.topic, now_ms=NOW_MS)
    except InvalidEvent:
        return False
    return True


def unstated_check_refuses(t: EventType, raw: dict[str, Any]) -> bool:
    """True when a cross-field check that the schema cannot state refuses `raw` (the schema alone would not)."""
    return any(c.schema is None and c.reason(raw) is not None for c in t.checks)


def cases_good() -> Iterator[Any]:
    for case in _cases_good():
        t, raw = case.values
        if not unstated_check_refuses(t, raw):
            yield case


def _cases_good() -> Iterator[Any]:
    for t in EVENT_TYPES:
        yield pytest.param(t, minimal(t), id=f"{t.name}-minimal")
        yield pytest.param(t, full(t), id=f"{t.name}-full")
        for f in (*t.fields, TEAM):
            for n, value in enumerate(good_values(f)):
                yield pytest.param(t, minimal(t) | {f.name: value}, id=f"{t.name}-{f.name}-{n}")
            if not f.required and f.name not in t.one_of:
                yield pytest.param(t, minimal(t) | {f.name: None}, id=f"{t.name}-{f.name}-null")
        for ts in (0, NOW_S - 0.5, "2023-12-31T23:59:59.500Z", "2024-01-01T01:00:00+02:00", "2023-12-31t23:00:00z"):
            yield pytest.param(t, minimal(t) | {"ts": ts}, id=f"{t.name}-ts-{ts}")


def cases_bad() -> Iterator[Any]:
    for t in EVENT_TYPES:
        base = minimal(t)
        for name in SELF_CHECKED:
            yield pytest.param(t, {k: v for k, v in base.items() if k != name}, id=f"{t.name}-no-{name}")
        for event_id in (5, "", "e" * 201, None):
            yield pytest.param(t, base | {"event_id": event_id}, id=f"{t.name}-event_id-{event_id!r:.12}")
        for ts in ("yesterday", "2024-01-01T00:00:00", "2024-01-01", -1, True, [1]):
            yield pytest.param(t, base | {"ts": ts}, id=f"{t.name}-ts-{ts!r}")
        yield pytest.param(t, base | {"type": "call.started"}, id=f"{t.name}-unknown-type")
        for f in (*t.fields, TEAM):
            if f.required:
                yield pytest.param(t, {k: v for k, v in base.items() if k != f.name}, id=f"{t.name}-no-{f.name}")
                yield pytest.param(t, base | {f.name: None}, id=f"{t.name}-{f.name}-null")
            for n, value in enumerate(bad_values(f)):
                yield pytest.param(t, base | {f.name: value}, id=f"{t.name}-{f.name}-bad{n}")
        if t.one_of:
            yield pytest.param(t, {k: v for k, v in base.items() if k not in t.one_of}, id=f"{t.name}-none-of")


def test_every_schema_is_a_valid_2020_12_schema() -> None:
    assert list(SCHEMAS) == [t.name for t in EVENT_TYPES]
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("t", "raw"), list(cases_good()))
def test_allowed_values_pass_both_schema_and_validator(t: EventType, raw: dict[str, Any]) -> None:
    errors = [e.message for e in schema_validator(t.name).iter_errors(raw)]
    assert not errors, (raw, errors)
    assert accepted_by_validator(t, raw), raw


@pytest.mark.parametrize(("t", "raw"), list(cases_bad()))
def test_forbidden_values_fail_both_schema_and_validator(t: EventType, raw: dict[str, Any]) -> None:
    assert not schema_validator(t.name).is_valid(raw), f"the schema accepts {raw}"
    assert not accepted_by_validator(t, raw), f"the validator accepts {raw}"


@pytest.mark.parametrize("seed", [1, 2])
def test_simulator_output_passes_the_schemas_and_the_validator(seed: int) -> None:
    seen: set[str] = set()
    events = list(generate(agents=20, rate=8, duration_s=600, seed=seed, start_s=NOW_S - 900))
    assert len(events) > 2000
    for topic, raw in events:
        errors = [e.message for e in schema_validator(raw["type"]).iter_errors(raw)]
        assert not errors, (raw, errors)
        decode(orjson.dumps(raw), topic=topic, now_ms=NOW_MS)
        seen.add(raw["type"])
    assert {"call.ended", "agent.state", "ticket.created", "survey.csat"} <= seen, seen


def test_schema_of_each_type_requires_exactly_the_declared_required_fields() -> None:
    for t in EVENT_TYPES:
        required = set(event_schema(t)["required"])
        assert required == {"event_id", "type", "ts"} | {f.name for f in t.fields if f.required}, t.name
