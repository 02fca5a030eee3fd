"""The generated part of the users' API reference in `docs/`, written from the code's own declarations.

- `docs/openapi.json`: the monitor's HTTP API (`monitor.openapi`, also served at `/api/openapi.json`);
- `docs/events/<type>.schema.json` and `docs/events.md`: every event type, from the validator's table
  (`streams.eventtypes`, through `streams.schemas`);
- `docs/asyncapi.yaml`: the Kafka topics and the monitor's websocket feed.

`make docs` (`python -m callpulse.reference --out .`) rewrites them; a test fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from callpulse.settings import Settings
from monitor import openapi
from streams.eventtypes import COMMON, EVENT_TYPES, SELF_CHECKED, TOPIC_TYPES, EventType, Field
from streams.schemas import all_schemas

OPENAPI_PATH = "docs/openapi.json"
ASYNCAPI_PATH = "docs/asyncapi.yaml"
EVENTS_DIR = "docs/events"
EVENTS_MD = "docs/events.md"


def _json(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


def _message_name(event_type: str) -> str:
    return event_type.replace(".", "_")


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: topics in (events), topics out (alerts, dead letters), and the `/ws` feed."""
    api_ref = "openapi.json#/components/schemas/"
    messages: dict[str, Any] = {
        _message_name(t.name): {
            "name": t.name,
            "title": t.name,
            "summary": t.doc,
            "contentType": "application/json",
            "payload": {"$ref": f"events/{t.name}.schema.json"},
        }
        for t in EVENT_TYPES
    }
    feed = {
        "snapshot": ("SnapshotMessage", "the floor in one window: on connect, then at most once a second"),
        "delta": (
            "DeltaMessage",
            "with `?delta=true` on the full floor: the agents that changed since the last message",
        ),
        "alert": ("Alert", "an alert transition (firing or resolved), sent at once"),
        "ack": ("AckMessage", "an alert was acknowledged, by any client"),
        "snooze": ("SnoozeMessage", "a KPI was snoozed for an agent or a team, by any client"),
        "error": ("ErrorMessage", "the client's message was refused and changed nothing"),
        "ackRequest": ("AckRequest", "acknowledge an alert (supervisor token, when one is set)"),
        "snoozeRequest": ("SnoozeRequest", "mute a KPI for N minutes (supervisor token, when one is set)"),
    }
    for name, (schema, summary) in feed.items():
        messages[name] = {
            "name": name,
            "summary": summary,
            "contentType": "application/json",
            "payload": {"$ref": api_ref + schema},
        }
    messages["deadLetter"] = {
        "name": "deadLetter",
        "summary": "an event that was not counted, with the reason and the original bytes (base64)",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["reason", "source", "key_b64", "value_b64"],
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "names the field and the rule, e.g. "
                    "\"invalid event 'call.ended' (event_id=c-17): talk_seconds is -4, must be >= 0\"",
                },
                "source": {
                    "type": "object",
                    "properties": {
                        "topic": {"type": "string"},
                        "partition": {"type": "integer"},
                        "offset": {"type": "integer"},
                    },
                },
                "key_b64": {"type": ["string", "null"]},
                "value_b64": {"type": ["string", "null"]},
                "key_truncated": {"type": "boolean"},
                "value_truncated": {"type": "boolean"},
                "key_bytes": {"type": "integer"},
                "value_bytes": {"type": "integer"},
            },
        },
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, types in TOPIC_TYPES.items():
        names = [_message_name(t.name) for t in EVENT_TYPES if t.name in types]
        channels[topic] = {
            "address": topic,
            "description": f"Events in (prefixed by CALLPULSE_TOPIC_PREFIX). The worker routes by `agent_id`; "
            f"the Kafka key is not trusted. Types: {', '.join(sorted(types))}.",
            "servers": [{"$ref": "#/servers/kafka"}],
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        operations[f"consume_{topic}"] = {
            "action": "receive",
            "summary": f"the worker consumes `{topic}`",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": [{"$ref": f"#/channels/{topic}/messages/{n}"} for n in names],
        }
    channels["alerts"] = {
        "address": "alerts",
        "description": "Alert transitions, once each however many workers run: the same objects as the feed's.",
        "servers": [{"$ref": "#/servers/kafka"}],
        "messages": {"alert": {"$ref": "#/components/messages/alert"}},
    }
    channels["deadletter"] = {
        "address": "deadletter",
        "description": 'Messages that were not valid events (counted as result="invalid").',
        "servers": [{"$ref": "#/servers/kafka"}],
        "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
    }
    channels["feed"] = {
        "address": "/ws",
        "description": "The monitor's websocket: `?window=` (default the shortest), `?team=` (only that team's "
        "agents), `?agents=false` (no agent rows), `?delta=true` (full floor: deltas after the first snapshot, "
        "docs/reads.md), `?token=` (or an Authorization header). With CALLPULSE_SUPERVISOR_TOKEN set, ack and snooze "
        "need that token; a read-only client gets an error message and nothing changes.",
        "servers": [{"$ref": "#/servers/monitor"}],
        "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in feed},
    }
    for name, channel, msgs in (
        ("send_alerts", "alerts", ["alert"]),
        ("send_deadletters", "deadletter", ["deadLetter"]),
        ("send_feed", "feed", ["snapshot", "delta", "alert", "ack", "snooze", "error"]),
        ("receive_feed_requests", "feed", ["ackRequest", "snoozeRequest"]),
    ):
        operations[name] = {
            "action": "receive" if name.startswith("receive") else "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in msgs],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "callpulse",
            "version": "2",
            "description": "Events in on Kafka, alerts and dead letters out on Kafka, and the monitor's live "
            "websocket feed. The HTTP API is in openapi.json; each event type's JSON Schema in events/.",
        },
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "CALLPULSE_KAFKA (bootstrap servers)",
            },
            "monitor": {"host": "127.0.0.1:8700", "protocol": "ws", "description": "CALLPULSE_HTTP"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _field_row(f: Field) -> str:
    rule = {
        "id": "string (or integer), 1 to 200 characters",
        "text": "string" + (f", at most {f.max_chars} characters" if f.max_chars else ""),
        "bool": "true or false",
        "seconds": "number of seconds, 0 to 604800",
        "enum": " \\| ".join(f"`{c}`" for c in f.choices),
    }.get(f.kind)
    if rule is None:  # integer, milli
        bounds = [
            f">= {f.minimum:g}" if f.minimum is not None else "",
            f"> {f.exclusive_minimum:g}" if f.exclusive_minimum is not None else "",
            f"<= {f.maximum:g}" if f.maximum is not None else "",
        ]
        rule = ("integer" if f.kind == "integer" else "number") + " " + ", ".join(b for b in bounds if b)
    need = (
        "required"
        if f.required
        else (f"default {f.default!r}".replace("False", "false") if f.default is not None else "optional")
    )
    return f"| `{f.name}` | {need} | {rule.strip()} | {f.doc} |"


def events_markdown() -> str:
    """`docs/events.md`: every event type's fields as tables, from the validator's declarations."""
    lines = [
        "# Events in",
        "",
        "<!-- Generated by `make docs` from streams/eventtypes.py, the table the validator reads. Do not edit. -->",
        "",
        "One JSON object (UTF-8, at most 64 KiB) per Kafka message. A message that is not valid JSON, misses a "
        "required field, has a wrong type or an impossible value, or whose `ts` is more than 5 minutes in the future "
        "is not counted: it goes to the `deadletter` topic with the reason. A JSON `null` is the same as an absent "
        "field; fields not listed are ignored. Each type's JSON Schema is in [`events/`](events/).",
        "",
        "Every event:",
        "",
        "| field | | rule | meaning |",
        "|---|---|---|---|",
        "| `event_id` | required | string, 1 to 200 characters | " + COMMON[0].doc + " |",
        "| `type` | required | one of the types below | |",
        "| `ts` | required | RFC 3339 with offset, or epoch seconds | " + COMMON[2].doc + " |",
        *[_field_row(f) for f in COMMON if f.name not in SELF_CHECKED],
        "",
    ]
    for topic, types in TOPIC_TYPES.items():
        lines += [f"## Topic `{topic}`", ""]
        for t in EVENT_TYPES:
            if t.name in types:
                lines += _type_section(t)
    return "\n".join(lines).rstrip() + "\n"


def _type_section(t: EventType) -> list[str]:
    out = [f"### `{t.name}` ([schema](events/{t.name}.schema.json))", "", f"{t.doc[0].upper()}{t.doc[1:]}.", ""]
    out += ["| field | | rule | meaning |", "|---|---|---|---|", *[_field_row(f) for f in t.fields], ""]
    if t.one_of:
        out += [f"At least one of {', '.join(f'`{n}`' for n in t.one_of)} is required.", ""]
    out += [f"{c.doc}" for c in t.checks] + ([""] if t.checks else [])
    return out


def render_all(settings: Settings) -> dict[str, str]:
    """Every generated reference file, by path relative to the repository root."""
    files = {OPENAPI_PATH: _json(openapi.document(settings)), EVENTS_MD: events_markdown()}
    for name, schema in all_schemas().items():
        files[f"{EVENTS_DIR}/{name}.schema.json"] = _json(schema)
    files[ASYNCAPI_PATH] = "# Generated by `make docs` (callpulse/reference.py). Do not edit.\n" + yaml.safe_dump(
        asyncapi(), sort_keys=False, allow_unicode=True, width=120
    )
    return files


def write_all(settings: Settings, root: Path) -> list[Path]:
    """Write every generated reference file under `root`; return the paths written."""
    written = []
    for rel, text in render_all(settings).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m callpulse.reference --out .`: rewrite the generated reference (built-in defaults)."""
    parser = argparse.ArgumentParser(prog="python -m callpulse.reference", description=main.__doc__)
    parser.add_argument("--out", default=".", help="repository root to write into (default: .)")
    args = parser.parse_args(argv)
    for path in write_all(Settings(), Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
