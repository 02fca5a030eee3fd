"""The monitor's websocket feed and its guards, against a real Redis (no worker needed).

Most tests run `monitor.server.Monitor` in-process on port 0; the ones about the process (refusing to start,
memory while a client stalls) run `callpulse monitor` as a child.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import orjson
import psutil
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callpulse.embedded import EmbeddedRedis, free_port
from callpulse.processes import env_for
from callpulse.settings import KPI_KEYS, Settings
from monitor.server import Monitor
from streams.alerts import Alert
from streams.store import namespace
from tests.helpers import async_wait_for

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
PADDING = 4096


@pytest.fixture
def ws_settings(redis_server: EmbeddedRedis, topic_prefix: str) -> Settings:
    """Settings for a monitor alone: this test's Redis, its own namespace, a free port; no broker is contacted."""
    return Settings(kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix),
                    http_host="127.0.0.1", http_port=free_port())  # fmt: skip


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Monitor]:
    """An in-process monitor serving `settings` until the block ends."""
    client = aioredis.Redis.from_url(settings.redis_url)
    monitor = Monitor(settings, client)
    await monitor.start()
    try:
        yield monitor
    finally:
        await monitor.stop()
        await client.aclose()


def base_url(settings: Settings, scheme: str = "http") -> str:
    return f"{scheme}://{settings.http_host}:{settings.http_port}"


def http_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(http_status, url, headers)


async def recv_json(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))  # type: ignore[no-any-return]


async def recv_until(ws: ClientConnection, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The next message of type `kind`, skipping snapshots and anything else on the way."""
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg.get("type") == kind:
            return msg


def alert_message(n: int, *, agent: str = "ag1") -> dict[str, Any]:
    """An alert transition as the engine publishes it on the alert-feed channel."""
    now_ms = int(time.time() * 1000)
    return Alert(f"test{n:06d}", "firing", "aht_seconds", "agent", agent, "15m", 900.0, 480.0, "critical",
                 now_ms, now_ms).to_message()  # fmt: skip


# --- tests ---------------------------------------------------------------------------------------------------------


async def test_first_message_is_a_snapshot_with_the_contract_keys(ws_settings: Settings) -> None:
    async with running(ws_settings), connect(base_url(ws_settings, "ws") + "/ws") as ws:
        snap = await recv_json(ws)
        assert snap["type"] == "snapshot"
        assert {"as_of", "window", "agents", "teams", "floor", "alerts"} <= set(snap), sorted(snap)
        assert snap["window"] == "15m"
        assert datetime.fromisoformat(snap["as_of"]).utcoffset() is not None, "as_of is RFC 3339 with an offset"
        assert abs(datetime.fromisoformat(snap["as_of"]).timestamp() - time.time()) < 5
        assert snap["agents"] == [] and snap["teams"] == [] and snap["alerts"] == []
        floor = snap["floor"]["kpis"]
        assert set(floor) == set(KPI_KEYS)
        assert floor["calls_handled"] == 0 and floor["dials"] == 0, "counts are 0, never null"
        assert floor["aht_seconds"] is None and floor["connect_rate"] is None, "no denominator: null, never 0"

    async with running(ws_settings), connect(base_url(ws_settings, "ws") + "/ws?window=1h") as ws:
        assert (await recv_json(ws))["window"] == "1h"
    async with running(ws_settings):
        with pytest.raises(InvalidStatus) as refused:
            await connect(base_url(ws_settings, "ws") + "/ws?window=2h")
        assert refused.value.response.status_code == 400
        assert b"15m" in refused.value.response.body


async def test_token_required_for_feed_and_snapshot_when_set(ws_settings: Settings) -> None:
    settings = ws_settings.replace(token=TOKEN)
    ws_url = base_url(settings, "ws") + "/ws"
    async with running(settings):
        for url in (ws_url, f"{ws_url}?token=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(url)
            assert refused.value.response.status_code == 401, url
            assert b"token" in refused.value.response.body

        async with connect(f"{ws_url}?token={TOKEN}") as ws:
            assert (await recv_json(ws))["type"] == "snapshot"
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert (await recv_json(ws))["type"] == "snapshot"

        api = base_url(settings) + "/api/snapshot"
        assert (await get(api))[0] == 401
        assert (await get(f"{api}?token=wrong"))[0] == 401
        status, body = await get(f"{api}?token={TOKEN}")
        assert status == 200 and orjson.loads(body)["window"] == "15m"
        assert (await get(api, {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
        assert (await get(base_url(settings) + "/"))[0] == 401
        assert (await get(base_url(settings) + f"/?token={TOKEN}"))[0] == 200


async def test_foreign_origin_is_refused(ws_settings: Settings) -> None:
    url = base_url(ws_settings, "ws") + "/ws"
    async with running(ws_settings):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        # the page's own origin (a browser on the wallboard) is welcome
        async with connect(url, origin=base_url(ws_settings)) as ws:  # type: ignore[arg-type]
            assert (await recv_json(ws))["type"] == "snapshot"
    allowed = ws_settings.replace(allowed_origins=("https://wall.example",))
    async with running(allowed), connect(url, origin="https://wall.example") as ws:  # type: ignore[arg-type]
        assert (await recv_json(ws))["type"] == "snapshot"


async def test_message_over_the_max_size_closes_with_1009(ws_settings: Settings) -> None:
    async with running(ws_settings) as monitor, connect(base_url(ws_settings, "ws") + "/ws", max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "snapshot"
        await ws.send("x" * (ws_settings.ws_max_message_bytes + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value
        await async_wait_for(lambda: not monitor.clients, timeout_s=5, message="the client forgotten")


async def test_bad_messages_get_an_error_and_the_connection_stays_open(ws_settings: Settings) -> None:
    async with running(ws_settings), connect(base_url(ws_settings, "ws") + "/ws") as ws:
        assert (await recv_json(ws))["type"] == "snapshot"
        snooze = {"type": "snooze", "kpi": "aht_seconds", "agent_id": "a", "minutes": 5}
        bad = [  # (what, message, a word the error must name)
            ("not json", "{nope", ""),
            ("not an object", "[1, 2]", "object"),
            ("unknown type", _text({"type": "dance"}), "dance"),
            ("no type", "{}", "type"),
            ("ack without id", _text({"type": "ack"}), "id"),
            ("snooze, bad minutes", _text(snooze | {"minutes": -3}), "minutes"),
            ("snooze, unknown kpi", _text(snooze | {"kpi": "mood"}), "mood"),
            ("snooze, nobody", _text({k: v for k, v in snooze.items() if k != "agent_id"}), "agent_id"),
        ]
        for what, text, word in bad:
            await ws.send(text)
            error = await recv_until(ws, "error")
            assert isinstance(error.get("message"), str) and error["message"], what
            assert word in error["message"], (what, error)
        # still open and serving: a valid ack comes back as a broadcast
        await ws.send(orjson.dumps({"type": "ack", "id": "abc123"}).decode())
        assert await recv_until(ws, "ack") == {"type": "ack", "id": "abc123", "acknowledged": True}


def _text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _clean_env(settings: Settings, **changes: str) -> dict[str, str]:
    env = env_for(settings)
    env.update(changes)
    return env


def test_monitor_refuses_a_non_loopback_bind_without_a_token(ws_settings: Settings) -> None:
    env = _clean_env(ws_settings, CALLPULSE_HTTP=f"0.0.0.0:{ws_settings.http_port}", CALLPULSE_TOKEN="")
    done = subprocess.run([sys.executable, "-m", "callpulse.cli", "monitor"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0, done
    assert "0.0.0.0" in done.stderr and "CALLPULSE_TOKEN" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    with pytest.raises(OSError):  # nothing was bound
        socket.create_connection(("127.0.0.1", ws_settings.http_port), timeout=1).close()


def _stalled_client(host: str, port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads: a tiny receive buffer fills at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_stalled_client_does_not_delay_a_fast_one(ws_settings: Settings, stack: Any) -> None:
    monitor = stack.monitor(ws_settings)
    proc = psutil.Process(monitor.pid)
    healthz = base_url(ws_settings) + "/healthz"

    async def clients() -> int:
        return int(orjson.loads((await get(healthz))[1])["clients"])

    received: dict[str, float] = {}
    order: list[str] = []
    async with connect(base_url(ws_settings, "ws") + "/ws") as fast:

        async def read_fast() -> None:
            async for raw in fast:
                msg = orjson.loads(raw)
                if msg.get("type") == "alert":
                    received[msg["id"]] = time.monotonic()
                    order.append(msg["id"])

        reader = asyncio.create_task(read_fast())
        stalled = await asyncio.to_thread(_stalled_client, ws_settings.http_host, ws_settings.http_port)
        try:
            await async_wait_for(lambda: _equals(clients, 2), timeout_s=10, message="both clients connected")
            rss_before = proc.memory_info().rss
            redis = aioredis.Redis.from_url(ws_settings.redis_url)
            channel = f"{namespace(ws_settings.topic_prefix)}alert-feed"
            sent: dict[str, float] = {}
            total, burst = 2000, 40
            try:
                for start in range(0, total, burst):
                    for n in range(start, start + burst):
                        # Padded (the feed passes unknown fields through) so the storm outgrows the kernel's
                        # socket buffers, up to 4 MiB each way on Linux, that would otherwise absorb all of it.
                        msg = alert_message(n, agent=f"ag{n % 50}") | {"padding": "x" * PADDING}
                        await redis.publish(channel, orjson.dumps(msg))
                        sent[msg["id"]] = time.monotonic()
                    await asyncio.sleep(0.05)  # ~800 alerts a second, a storm well beyond a real floor's
            finally:
                await redis.aclose()
            await async_wait_for(lambda: len(received) >= total, timeout_s=15, message="every alert at the fast client")
            lag_s = sorted(received[i] - sent[i] for i in sent)
            print(f"\nfast client: {len(received)} alerts, median lag {lag_s[len(lag_s) // 2] * 1000:.1f} ms, "
                  f"max {lag_s[-1] * 1000:.1f} ms")  # fmt: skip
            assert order == list(sent), "alerts arrive once each, in publish order"
            assert lag_s[-1] < 1.0, f"the fast client waited {lag_s[-1]:.2f} s for an alert"

            await async_wait_for(lambda: _equals(clients, 1), timeout_s=15, message="the stalled client dropped")
            rss_growth_mb = (proc.memory_info().rss - rss_before) / 2**20
            print(f"monitor RSS grew {rss_growth_mb:.1f} MiB")
            assert rss_growth_mb < 50, f"monitor RSS grew {rss_growth_mb:.1f} MiB while a client stalled"
            assert not fast.close_code, "the fast client stays connected"
        finally:
            stalled.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader
    assert monitor.alive(), monitor.log_tail()
    log = monitor.log_path.read_text()
    assert "behind; disconnecting" in log or "stalled" in log, log[-3000:]
    assert "Traceback" not in log, "dropping a client is routine, not an error with a traceback:\n" + log[-3000:]


async def _equals(probe: Callable[[], Any], want: int) -> bool:
    return bool(await probe() == want)
