"""JSON Schemas (draft 2020-12) of the event types, generated from the validator's declarations (`eventtypes`).

What a schema cannot state is written into its description and checked by the validator alone: `ts` at most
5 minutes in the future, a message of at most 64 KiB, the type's topic, and each type's cross-field checks.
"""

from __future__ import annotations

from typing import Any

from streams.eventtypes import COMMON, EVENT_TYPES, MAX_ID_CHARS, MAX_SECONDS, EventType, Field

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_URI = "urn:callpulse:events:"
# RFC 3339 date-time with a UTC offset ("T"/"Z" in either case, as section 5.6 allows).
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


def _value_schema(f: Field) -> dict[str, Any]:
    """The schema of a present, non-null value of `f`."""
    if f.kind == "id":
        return {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_ID_CHARS,
                "description": "a string, or an integer taken as its decimal string"}  # fmt: skip
    if f.kind == "bool":
        return {"type": "boolean"}
    if f.kind == "seconds":
        return {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}
    if f.kind in ("milli", "integer"):
        out: dict[str, Any] = {"type": "integer" if f.kind == "integer" else "number"}
        for key, value in (("minimum", f.minimum), ("maximum", f.maximum), ("exclusiveMinimum", f.exclusive_minimum)):
            if value is not None:
                out[key] = value
        return out
    if f.kind == "enum":
        return {"enum": list(f.choices)}
    out = {"type": "string"}
    if f.max_chars is not None:
        out["maxLength"] = f.max_chars
    return out


def _field_schema(f: Field) -> dict[str, Any]:
    """`f`'s schema in an event: an optional field may also be null (the same as absent)."""
    schema = _value_schema(f)
    if not f.required:
        schema = {"anyOf": [schema, {"type": "null"}]}
    if f.doc:
        schema["description"] = f.doc
    if f.default is not None:
        schema["default"] = f.default
    return schema


def _common(spec: EventType) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in COMMON:
        if f.name == "event_id":
            props[f.name] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "description": f.doc}
        elif f.name == "type":
            props[f.name] = {"const": spec.name, "description": f.doc}
        elif f.name == "ts":
            props[f.name] = {
                "anyOf": [
                    {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN},
                    {"type": "number", "minimum": 0},
                ],
                "description": f.doc,
            }
        else:
            props[f.name] = _field_schema(f)
    return props


def event_schema(spec: EventType) -> dict[str, Any]:
    """The JSON Schema of one event type."""
    props = _common(spec)
    for f in spec.fields:
        props[f.name] = _field_schema(f)
    required = [f.name for f in (*COMMON, *spec.fields) if f.required]
    notes = [
        f"Topic `{spec.topic}`.",
        "`ts` may be at most 5 minutes in the future, and a message at most 64 KiB.",
        *[c.doc for c in spec.checks],
        "Fields not listed are ignored.",
    ]
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": f"{BASE_URI}{spec.name}",
        "title": spec.name,
        "description": f"{spec.doc[0].upper()}{spec.doc[1:]}. " + " ".join(notes),
        "type": "object",
        "required": required,
        "properties": props,
    }
    if spec.one_of:
        schema["anyOf"] = [{"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                           for name in spec.one_of]  # fmt: skip
    stated = [dict(c.schema) for c in spec.checks if c.schema is not None]
    if stated:
        schema["allOf"] = stated
    unstated = [c.doc for c in spec.checks if c.schema is None]
    if unstated:
        schema["x-callpulse-checks"] = unstated  # checked by the validator only
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every event type's schema, by type name, in declaration order."""
    return {spec.name: event_schema(spec) for spec in EVENT_TYPES}
