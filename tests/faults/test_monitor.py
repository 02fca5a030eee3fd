"""Monitor faults: a websocket client that never reads, websocket abuse, and an unsafe bind without a token.

The monitor is driven through the Redis channels it listens to (`cp:<prefix>changed` asks for a snapshot refresh,
at most one a second; `cp:<prefix>alert-feed` messages go to every client at once), with the windows filled by the
worker's own processor, so snapshots have a realistic size.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callpulse.embedded import free_port
from callpulse.processes import env_for
from callpulse.settings import Settings
from streams.alerts import iso
from streams.processor import Processor, Record
from streams.store import WindowStore, namespace
from tests.faults import harness as h
from tests.helpers import async_wait_for, stop_task

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TOKEN = "faults-token-9f2c"
RSS_BOUND_BYTES = 32 * 1024 * 1024  # growth of the monitor under the slow-client load
PER_CONNECTION_BOUND_BYTES = 256 * 1024  # resident memory per idle websocket connection


async def _no_deadletter(dead: Any) -> None:
    raise AssertionError(f"the seed trace has invalid events: {dead}")


async def fill_windows(settings: Settings, *, agents: int = 40) -> int:
    """Apply a trace straight through the worker's processor (no Kafka), as a running floor would have it."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        store = WindowStore(client, namespace(settings.topic_prefix))
        await store.mark_initialised()
        processor = Processor(settings, store, _no_deadletter)
        events = h.seq_trace(time.time(), seed=1001, agents=agents, teams=4, calls_per_agent=20, tickets=120)
        for base in ("calls", "tickets"):
            mine = [e for topic, e in events if topic == base]
            await processor.process([Record(base, 0, i, None, orjson.dumps(e)) for i, e in enumerate(mine)])
        return len(events)
    finally:
        await client.aclose()


def alert_message(n: int, *, sent_at: float) -> bytes:
    """A realistic alert transition as the worker publishes it, stamped with when it was sent."""
    now_ms = int(time.time() * 1000)
    return orjson.dumps(
        {
            "type": "alert",
            "id": f"agent|ag{n % 40 + 1:03d}|aht_seconds|15m|{n}",
            "status": "firing",
            "kpi": "aht_seconds",
            "scope": "agent",
            "agent_id": f"ag{n % 40 + 1:03d}",
            "team": f"team-{'abcd'[n % 4]}",
            "window": "15m",
            "value": 512.25 + n % 7,
            "threshold": 480.0,
            "severity": "critical",
            "ts": iso(now_ms),
            "since": iso(now_ms),
            "samples": 9,
            "sent_at": sent_at,
        }
    )


class Reader:
    """A well-behaved websocket client: reads everything, keeping each alert's delivery latency."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.latencies_s: list[float] = []
        self.snapshots = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                msg = orjson.loads(raw)
                if msg.get("type") == "alert" and "sent_at" in msg:
                    self.latencies_s.append(time.time() - msg["sent_at"])
                elif msg.get("type") == "snapshot":
                    self.snapshots += 1

    def take(self) -> list[float]:
        out, self.latencies_s = self.latencies_s, []
        return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else float("nan"))


@contextlib.asynccontextmanager
async def publishing(settings: Settings, *, per_s: float) -> AsyncIterator[list[int]]:
    """Publish `per_s` snapshot triggers and `per_s` alerts a second until the block ends; yields [count]."""
    ns = namespace(settings.topic_prefix)
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5)
    sent = [0]
    stop = asyncio.Event()

    async def run() -> None:
        start = time.monotonic()
        while not stop.is_set():
            await client.publish(f"{ns}changed", sent[0])
            await client.publish(f"{ns}alert-feed", alert_message(sent[0], sent_at=time.time()))
            sent[0] += 1
            await asyncio.sleep(max(0.0, start + sent[0] / per_s - time.monotonic()))

    task = asyncio.create_task(run())
    try:
        yield sent
    finally:
        stop.set()  # a flag as well as the cancel: the loop ends even if a cancel is swallowed on the way
        await stop_task(task, "the snapshot and alert publisher")
        await client.aclose()


def stalled_client(settings: Settings) -> socket.socket:
    """Open /ws with a tiny receive buffer, read the 101 response, then never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((settings.http_host, settings.http_port))
    request = (
        f"GET /ws?token={TOKEN} HTTP/1.1\r\nHost: {settings.http_host}:{settings.http_port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: stop right at the end of the headers
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def monitor_clients(settings: Settings) -> float | None:
    url = f"http://{settings.http_host}:{settings.http_port}/metrics"
    status, body = await asyncio.to_thread(h.http_get, url, token=settings.token)
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith("callpulse_monitor_clients "):
            return float(line.split()[1])
    return None


@pytest.mark.fault_row(10)
async def test_client_that_never_reads_is_dropped_without_hurting_others(
    settings: Settings, stack: Any, row: Any
) -> None:
    settings = settings.replace(token=TOKEN)
    await fill_windows(settings)
    monitor = stack.monitor(settings)
    url = f"ws://{settings.http_host}:{settings.http_port}/ws?token={TOKEN}"
    async with connect(url, open_timeout=10, max_size=None) as ws:
        good = Reader(ws)
        async with publishing(settings, per_s=50):
            await async_wait_for(lambda: len(good.latencies_s) >= 100, timeout_s=10, message="baseline alerts")
        baseline = good.take()
        snap_size = len(orjson.dumps(await h.snapshot(settings, "15m")))

        rss = h.RssSampler(monitor.pid)
        stalled = await asyncio.to_thread(stalled_client, settings)
        try:
            async with rss, publishing(settings, per_s=50) as sent:
                assert await monitor_clients(settings) == 2
                started = time.monotonic()
                await async_wait_for(
                    lambda: _equals(monitor_clients(settings), 1),
                    timeout_s=60,
                    interval_s=0.2,
                    message="the monitor to drop the client that never reads",
                )
                drop_s = time.monotonic() - started
                loaded = good.take()
                await async_wait_for(lambda: len(good.latencies_s) >= 100, timeout_s=10, message="alerts after")
                after = good.take()
                published = sent[0]
        finally:
            stalled.close()
        assert monitor.alive(), monitor.log_tail()
        assert not good.task.done(), "the well-behaved client was disconnected too"
        assert "disconnecting" in monitor.log_tail(), monitor.log_tail()
        snapshots = good.snapshots
    good.task.cancel()
    loaded_all = loaded + after
    row.figure("snapshot_bytes", snap_size)
    row.figure("published_each", published)
    row.figure("drop_s", round(drop_s, 1))
    row.figure("rss_start_mib", h.mib(rss.start))
    row.figure("rss_peak_mib", h.mib(rss.peak))
    row.figure("p99_latency_ms_baseline", round(p99(baseline) * 1000, 1))
    row.figure("p99_latency_ms_under_load", round(p99(loaded_all) * 1000, 1))
    row.figure("good_client_snapshots", snapshots)
    assert rss.peak - rss.start < RSS_BOUND_BYTES, f"monitor RSS grew by {h.mib(rss.peak - rss.start)} MiB"
    assert p99(loaded_all) < max(0.25, 3 * p99(baseline)), (p99(baseline), p99(loaded_all))
    assert max(loaded_all) < 1.0, max(loaded_all)


async def _equals(value: Any, want: float) -> bool:
    return await value == want


@pytest.mark.fault_row(11)
async def test_websocket_abuse(settings: Settings, stack: Any, row: Any) -> None:
    settings = settings.replace(token=TOKEN)
    await fill_windows(settings, agents=12)
    monitor = stack.monitor(settings)
    base = f"ws://{settings.http_host}:{settings.http_port}/ws"

    # no token, wrong token, foreign Origin: refused with an HTTP status before any upgrade
    statuses = {}
    for name, url, origin in (
        ("no_token", base, None),
        ("wrong_token", f"{base}?token=nope", None),
        ("foreign_origin", f"{base}?token={TOKEN}", "http://evil.example"),
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, open_timeout=10, origin=origin)  # type: ignore[arg-type]
        statuses[name] = refused.value.response.status_code
    assert statuses == {"no_token": 401, "wrong_token": 401, "foreign_origin": 403}, statuses

    # a 2 MiB message: closed with 1009 (message too big)
    async with connect(f"{base}?token={TOKEN}", open_timeout=10, max_size=None) as ws:
        await ws.recv()
        with contextlib.suppress(ConnectionClosed):
            await ws.send("x" * (2 * 1024 * 1024))
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        too_big = ws.close_code
    assert too_big == 1009, too_big

    # 500 idle connections: resident memory per connection
    await asyncio.sleep(0)  # let the closed connection's handler finish before measuring
    before = h.rss_bytes(monitor.pid)
    idle: list[ClientConnection] = []
    try:
        for _ in range(10):
            batch = await asyncio.gather(
                *(connect(f"{base}?token={TOKEN}", open_timeout=30, max_size=None) for _ in range(50))
            )
            idle.extend(batch)
        for ws in idle:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert first["type"] == "snapshot", first
        await async_wait_for(
            lambda: _equals(monitor_clients(settings), len(idle)), timeout_s=10, message="500 clients on the monitor"
        )
        after = h.rss_bytes(monitor.pid)
        status = await h.monitor_health(settings)
    finally:
        await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)
    assert status == 200
    assert monitor.alive(), monitor.log_tail()
    per_connection = (after - before) / len(idle)
    row.figure("refused", statuses)
    row.figure("close_code_2MiB", too_big)
    row.figure("rss_before_mib", h.mib(before))
    row.figure("rss_500_idle_mib", h.mib(after))
    row.figure("kib_per_connection", round(per_connection / 1024, 1))
    assert per_connection < PER_CONNECTION_BOUND_BYTES, f"{per_connection / 1024:.0f} KiB per idle connection"


@pytest.mark.fault_row(12)
def test_monitor_refuses_public_bind_without_token(settings: Settings, row: Any) -> None:
    port = free_port()
    env = env_for(settings.replace(http_host="0.0.0.0", http_port=port, token=None))
    env["CALLPULSE_TOKEN"] = ""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "callpulse.cli", "monitor"], env=env, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the monitor kept running on 0.0.0.0 without a token") from exc
    took_s = time.monotonic() - started
    assert done.returncode != 0, done
    message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert "token" in message.lower() and "CALLPULSE_TOKEN" in message, done.stderr
    assert "0.0.0.0" in message, message
    assert "Traceback" not in done.stderr, done.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port was bound anyway"
    row.figure("exit_code", done.returncode)
    row.figure("exit_s", round(took_s, 1))
    row.figure("message", message[:160])
