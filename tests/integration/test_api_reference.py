"""The OpenAPI document a real `callpulse monitor` serves, checked with openapi-spec-validator, and real replies and
websocket messages of that monitor checked against the schemas the document declares."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from websockets.asyncio.client import connect

from callpulse.embedded import EmbeddedRedis, free_port
from callpulse.settings import Settings, load_thresholds
from monitor import openapi
from tests.conftest import Stack
from tests.integration.test_roles import SUPERVISOR, VIEWER, aget, feed, firing_alert, recv_until

pytestmark = pytest.mark.integration


@pytest.fixture
def api_settings(redis_server: EmbeddedRedis, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings of a monitor with both tokens and windows of its own (from a thresholds file), on this test's Redis."""
    config = tmp_path / "thresholds.toml"
    config.write_text('[windows]\nrolling = ["5m", "1h"]\n', encoding="utf-8")
    return Settings(
        kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix), http_host="127.0.0.1",
        http_port=free_port(), token=VIEWER, supervisor_token=SUPERVISOR, config_path=str(config),
        **load_thresholds(config.read_text(encoding="utf-8")),
    )  # fmt: skip


def conforms(document: dict[str, Any], schema_name: str, value: Any) -> list[str]:
    """Errors of `value` against `#/components/schemas/<schema_name>` of `document` (empty when it conforms)."""
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]


async def test_served_document_is_valid_openapi_3_1_without_a_token(api_settings: Settings, stack: Stack) -> None:
    stack.monitor(api_settings)
    status, document = await aget(api_settings, "/api/openapi.json")
    assert status == 200
    validate(document)
    assert document == orjson.loads(orjson.dumps(openapi.document(api_settings)))
    [window] = [p for p in document["paths"]["/api/snapshot"]["get"]["parameters"] if p["name"] == "window"]
    assert window["schema"]["enum"] == list(api_settings.window_names), "this deployment's windows"
    assert window["schema"]["enum"][:2] == ["5m", "1h"]


async def test_live_replies_conform_to_the_served_document(api_settings: Settings, stack: Stack) -> None:
    stack.monitor(api_settings)
    document = (await aget(api_settings, "/api/openapi.json"))[1]
    await firing_alert(api_settings)
    async with feed(api_settings, SUPERVISOR) as ws:
        await ws.send(orjson.dumps({"type": "snooze", "kpi": "aht_seconds", "agent_id": "a7", "minutes": 5,
                                    "by": "Dana"}).decode())  # fmt: skip
        await recv_until(ws, "snooze")
    replies = {
        "Snapshot": await aget(api_settings, "/api/snapshot?window=1h", VIEWER),
        "Role": await aget(api_settings, "/api/role", VIEWER),
        "Health": await aget(api_settings, "/healthz"),
        "Error": await aget(api_settings, "/api/snapshot?window=2d", VIEWER),
    }
    status, entries = await aget(api_settings, "/api/audit", SUPERVISOR)
    assert status == 200 and len(entries) == 1
    assert conforms(document, "AuditEntry", entries[0]) == []
    snapshot = replies["Snapshot"][1]
    assert snapshot["alerts"] and snapshot["snoozes"], "the reply exercises the alert and snooze schemas"
    for schema, (_status, body) in replies.items():
        assert conforms(document, schema, body) == [], schema


async def test_websocket_messages_conform_to_the_feed_schemas(api_settings: Settings, stack: Stack) -> None:
    stack.monitor(api_settings)
    document = (await aget(api_settings, "/api/openapi.json"))[1]
    alert_id = await firing_alert(api_settings)
    ack = {"type": "ack", "id": alert_id, "by": "Dana"}
    snooze = {"type": "snooze", "kpi": "aht_seconds", "team": "north", "minutes": 30}
    assert conforms(document, "AckRequest", ack) == [] and conforms(document, "SnoozeRequest", snooze) == []
    url = f"ws://{api_settings.http_host}:{api_settings.http_port}/ws?token={VIEWER}"
    async with connect(url) as viewer, feed(api_settings, SUPERVISOR) as supervisor:
        first = orjson.loads(await viewer.recv())
        assert conforms(document, "SnapshotMessage", first) == []
        assert conforms(document, "Alert", first["alerts"][0]) == []
        await viewer.send(orjson.dumps(ack).decode())
        assert conforms(document, "ErrorMessage", await recv_until(viewer, "error")) == []
        await supervisor.send(orjson.dumps(ack).decode())
        assert conforms(document, "AckMessage", await recv_until(viewer, "ack")) == []
        await supervisor.send(orjson.dumps(snooze).decode())
        assert conforms(document, "SnoozeMessage", await recv_until(viewer, "snooze")) == []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a later snapshot carries the ack and the snooze
            later = await recv_until(viewer, "snapshot")
            if later["snoozes"]:
                break
        assert conforms(document, "SnapshotMessage", later) == []
