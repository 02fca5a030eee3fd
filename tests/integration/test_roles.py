"""Roles and the audit log (contract 2e) on a real `callpulse monitor` process, a real Redis and real websocket clients.

With `CALLPULSE_SUPERVISOR_TOKEN` set, `CALLPULSE_TOKEN` is read-only: it opens the board, the API and /metrics,
but an ack or a snooze sent with it gets `{"type": "error", "error": ...}` and changes nothing. The supervisor
token opens everything, and every ack and snooze lands in `GET /api/audit` with the role and the name sent.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from callpulse.embedded import EmbeddedRedis, free_port
from callpulse.exceptions import SettingsError
from callpulse.settings import Settings, from_env
from monitor import audit
from streams.alerts import Alert
from streams.store import namespace
from tests.conftest import Stack

pytestmark = pytest.mark.integration

VIEWER = "wallboard-token"
SUPERVISOR = "supervisor-token"


@pytest.fixture
def role_settings(redis_server: EmbeddedRedis, topic_prefix: str) -> Settings:
    """A monitor with both tokens on this test's Redis; no broker is contacted."""
    return Settings(
        kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix), http_host="127.0.0.1",
        http_port=free_port(), token=VIEWER, supervisor_token=SUPERVISOR,
    )  # fmt: skip


def http(settings: Settings, path: str, token: str | None = None) -> tuple[int, Any]:
    """GET `path` with `token` as a Bearer header; the status and the decoded JSON body."""
    request = urllib.request.Request(f"http://{settings.http_host}:{settings.http_port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body


async def aget(settings: Settings, path: str, token: str | None = None) -> tuple[int, Any]:
    return await asyncio.to_thread(http, settings, path, token)


@asynccontextmanager
async def feed(settings: Settings, token: str) -> AsyncIterator[ClientConnection]:
    """A websocket client with `token`, past its first snapshot."""
    url = f"ws://{settings.http_host}:{settings.http_port}/ws?token={token}"
    async with connect(url) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        yield ws


async def recv(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))  # type: ignore[no-any-return]


async def recv_until(ws: ClientConnection, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The next message of type `kind`, skipping snapshots on the way."""
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await recv(ws, max(0.01, deadline - time.monotonic()))
        if msg.get("type") == kind:
            return msg


@asynccontextmanager
async def redis_of(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def firing_alert(settings: Settings, agent: str = "a7") -> str:
    """Store one firing agent alert as the worker's engine does; return its id."""
    now_ms = int(time.time() * 1000)
    alert = Alert("al0001", "firing", "aht_seconds", "agent", agent, "15m", 600.0, 480.0, "critical", now_ms, now_ms)
    async with redis_of(settings) as client:
        await client.hset(f"{namespace(settings.topic_prefix)}alerts", alert.key, orjson.dumps(alert.to_state()))
    return alert.id


async def snapshot_alert(settings: Settings, token: str) -> dict[str, Any]:
    status, snap = await aget(settings, "/api/snapshot", token)
    assert status == 200, snap
    [alert] = snap["alerts"]
    return alert  # type: ignore[no-any-return]


SNOOZE = {"type": "snooze", "kpi": "aht_seconds", "agent_id": "a7", "minutes": 15}


# --- who reads what -------------------------------------------------------------------------------------------------


async def test_read_only_token_opens_the_board_the_api_and_metrics(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    for path in ("/", "/api/snapshot", "/metrics"):
        assert (await aget(role_settings, path, VIEWER))[0] == 200, path
    assert await aget(role_settings, "/api/role", VIEWER) == (200, {"role": "viewer", "may_act": False})
    async with feed(role_settings, VIEWER):
        pass


async def test_supervisor_token_opens_everything_the_read_only_one_does(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    for path in ("/", "/api/snapshot", "/metrics", "/api/audit"):
        assert (await aget(role_settings, path, SUPERVISOR))[0] == 200, path
    assert await aget(role_settings, "/api/role", SUPERVISOR) == (200, {"role": "supervisor", "may_act": True})
    async with feed(role_settings, SUPERVISOR):
        pass


async def test_a_wrong_token_opens_nothing(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    for path in ("/", "/api/snapshot", "/metrics", "/api/audit", "/api/role"):
        assert (await aget(role_settings, path, "guess"))[0] == 401, path
        assert (await aget(role_settings, path))[0] == 401, path


# --- refused actions ------------------------------------------------------------------------------------------------


async def test_read_only_ack_is_refused_and_changes_nothing(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    alert_id = await firing_alert(role_settings)
    async with feed(role_settings, VIEWER) as viewer:
        await viewer.send(orjson.dumps({"type": "ack", "id": alert_id, "by": "Mallory"}).decode())
        error = await recv_until(viewer, "error")
    assert "CALLPULSE_SUPERVISOR_TOKEN" in error["error"], error
    assert (await snapshot_alert(role_settings, SUPERVISOR))["acknowledged"] is False
    assert await aget(role_settings, "/api/audit", SUPERVISOR) == (200, [])


async def test_read_only_snooze_is_refused_and_changes_nothing(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    await firing_alert(role_settings)
    async with feed(role_settings, VIEWER) as viewer:
        await viewer.send(orjson.dumps(SNOOZE).decode())
        error = await recv_until(viewer, "error")
    assert "supervisor token" in error["error"], error
    status, snap = await aget(role_settings, "/api/snapshot", SUPERVISOR)
    assert status == 200
    assert snap["snoozes"] == [] and snap["alerts"][0]["muted"] is False
    assert await aget(role_settings, "/api/audit", SUPERVISOR) == (200, [])


async def test_read_only_token_cannot_read_the_audit_log(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    status, body = await aget(role_settings, "/api/audit", VIEWER)
    assert status == 403 and "CALLPULSE_SUPERVISOR_TOKEN" in body["error"], body


# --- supervisor actions and the audit log ---------------------------------------------------------------------------


async def test_supervisor_ack_reaches_every_client_and_is_audited_with_the_name(
    role_settings: Settings, stack: Stack
) -> None:
    stack.monitor(role_settings)
    alert_id = await firing_alert(role_settings)
    async with feed(role_settings, VIEWER) as viewer, feed(role_settings, SUPERVISOR) as supervisor:
        await supervisor.send(orjson.dumps({"type": "ack", "id": alert_id, "by": "Dana"}).decode())
        assert await recv_until(viewer, "ack") == {"type": "ack", "id": alert_id, "acknowledged": True}
    assert (await snapshot_alert(role_settings, VIEWER))["acknowledged"] is True
    status, entries = await aget(role_settings, "/api/audit", SUPERVISOR)
    assert status == 200
    [entry] = entries
    assert {k: entry[k] for k in ("action", "id", "by", "role", "name")} == {
        "action": "ack", "id": alert_id, "by": "supervisor:Dana", "role": "supervisor", "name": "Dana"
    }  # fmt: skip
    assert abs(time.time() - datetime.fromisoformat(entry["ts"]).timestamp()) < 60


async def test_supervisor_snooze_is_audited_with_kpi_agent_and_minutes(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    await firing_alert(role_settings)
    async with feed(role_settings, SUPERVISOR) as supervisor:
        await supervisor.send(orjson.dumps(SNOOZE | {"by": "Dana"}).decode())
        assert (await recv_until(supervisor, "snooze"))["agent_id"] == "a7"
    [entry] = (await aget(role_settings, "/api/audit", SUPERVISOR))[1]
    assert {k: entry[k] for k in ("action", "kpi", "agent_id", "minutes", "by")} == {
        "action": "snooze", "kpi": "aht_seconds", "agent_id": "a7", "minutes": 15, "by": "supervisor:Dana"
    }  # fmt: skip
    assert (await snapshot_alert(role_settings, VIEWER))["muted"] is True


async def test_an_action_without_a_name_is_audited_with_the_role_alone(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    async with feed(role_settings, SUPERVISOR) as supervisor:
        await supervisor.send(orjson.dumps({"type": "snooze", "kpi": "csat", "team": "north", "minutes": 30}).decode())
        await recv_until(supervisor, "snooze")
    [entry] = (await aget(role_settings, "/api/audit", SUPERVISOR))[1]
    assert (entry["by"], entry["name"], entry["team"]) == ("supervisor", None, "north")


async def test_audit_lists_newest_first_and_honours_the_limit(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    async with feed(role_settings, SUPERVISOR) as supervisor:
        for n in range(5):
            await supervisor.send(orjson.dumps({"type": "ack", "id": f"al{n}", "by": "Dana"}).decode())
            await recv_until(supervisor, "ack")
    status, entries = await aget(role_settings, "/api/audit?limit=3", SUPERVISOR)
    assert status == 200 and [e["id"] for e in entries] == ["al4", "al3", "al2"]
    assert [e["id"] for e in (await aget(role_settings, "/api/audit", SUPERVISOR))[1]] == [
        f"al{n}" for n in (4, 3, 2, 1, 0)
    ]
    for bad in ("0", "1001", "x", "-1"):
        status, body = await aget(role_settings, f"/api/audit?limit={bad}", SUPERVISOR)
        assert status == 400 and "limit" in body["error"], bad


async def test_audit_entries_older_than_30_days_are_dropped(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    ns = namespace(role_settings.topic_prefix)
    old_ms = int(time.time() * 1000) - (audit.RETENTION_S + 3600) * 1000
    async with redis_of(role_settings) as client:
        async with client.pipeline(transaction=True) as pipe:
            entry = audit.new_entry("ack", "supervisor", "Old", old_ms)
            entry["id"] = "ancient"
            audit.record(pipe, ns, entry, old_ms)
            await pipe.execute()
        assert await client.zcard(audit.key(ns)) == 1
        assert (await aget(role_settings, "/api/audit", SUPERVISOR))[1] == [], "older than 30 days: not listed"
        async with feed(role_settings, SUPERVISOR) as supervisor:
            await supervisor.send(orjson.dumps({"type": "ack", "id": "fresh"}).decode())
            await recv_until(supervisor, "ack")
        assert await client.zcard(audit.key(ns)) == 1, "the next write trims what is past 30 days"
        assert 0 < await client.ttl(audit.key(ns)) <= audit.RETENTION_S
    assert [e["id"] for e in (await aget(role_settings, "/api/audit", SUPERVISOR))[1]] == ["fresh"]


async def test_a_name_that_is_not_a_short_printable_string_is_refused(role_settings: Settings, stack: Stack) -> None:
    stack.monitor(role_settings)
    async with feed(role_settings, SUPERVISOR) as supervisor:
        for bad in (["Dana"], "x" * 65, "Dana\x07"):
            await supervisor.send(orjson.dumps({"type": "ack", "id": "al1", "by": bad}).decode())
            assert "by is" in (await recv_until(supervisor, "error"))["error"]
    assert (await aget(role_settings, "/api/audit", SUPERVISOR))[1] == []


# --- first-edition behaviour without a supervisor token -------------------------------------------------------------


async def test_without_a_supervisor_token_the_token_may_ack_as_operator(role_settings: Settings, stack: Stack) -> None:
    settings = role_settings.replace(supervisor_token=None)
    stack.monitor(settings)
    alert_id = await firing_alert(settings)
    assert await aget(settings, "/api/role", VIEWER) == (200, {"role": "operator", "may_act": True})
    async with feed(settings, VIEWER) as ws:
        await ws.send(orjson.dumps({"type": "ack", "id": alert_id, "by": "Sam"}).decode())
        await recv_until(ws, "ack")
    assert (await snapshot_alert(settings, VIEWER))["acknowledged"] is True
    [entry] = (await aget(settings, "/api/audit", VIEWER))[1]
    assert entry["by"] == "operator:Sam"


def test_supervisor_token_equal_to_the_read_only_token_is_refused() -> None:
    env = {"CALLPULSE_TOKEN": "same", "CALLPULSE_SUPERVISOR_TOKEN": "same"}
    with pytest.raises(SettingsError, match="CALLPULSE_SUPERVISOR_TOKEN is the same as CALLPULSE_TOKEN"):
        from_env(env)
    assert from_env({"CALLPULSE_TOKEN": "a", "CALLPULSE_SUPERVISOR_TOKEN": "b"}).supervisor_token == "b"
