"""Errors a person can act on, on real processes: one line naming the setting and the fix, never a traceback;
an unreachable broker is retried with a growing delay; the demo writes into a broker and a Redis it did not
start only when told to, under a prefix it removes on exit."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from callpulse.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from callpulse.processes import Proc, env_for
from callpulse.settings import Settings
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def callpulse(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpulse.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, env=env, check=False)  # fmt: skip


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_monitor_port_in_use_is_one_line_naming_the_setting(taken_port: int) -> None:
    line = one_line(callpulse("monitor", "--http", f"127.0.0.1:{taken_port}"))
    assert line == (
        f"callpulse: CALLPULSE_HTTP (--http) is 127.0.0.1:{taken_port}, which cannot be bound (port in use): "
        f"stop what listens on port {taken_port}, or choose a free port with CALLPULSE_HTTP (--http)"
    )


def test_monitor_bind_to_a_foreign_address_is_one_line_naming_the_fix() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    line = one_line(callpulse("monitor", "--http", f"192.0.2.7:{free_port()}", "--token", "t"))
    assert "CALLPULSE_HTTP (--http) is 192.0.2.7:" in line
    assert "(not an address of this machine): set CALLPULSE_HTTP (--http) to one of its addresses" in line


def test_worker_web_port_in_use_is_one_line_naming_the_flag(taken_port: int) -> None:
    line = one_line(callpulse("worker", "--web-port", str(taken_port), "--kafka", f"127.0.0.1:{free_port()}"))
    assert line.startswith(f"callpulse: --web-host/--web-port is 127.0.0.1:{taken_port}, which cannot be bound")


def test_demo_port_in_use_stops_before_starting_anything(taken_port: int) -> None:
    line = one_line(callpulse("demo", "--http", f"127.0.0.1:{taken_port}"))
    assert f"CALLPULSE_HTTP (--http) is 127.0.0.1:{taken_port}, which cannot be bound (port in use)" in line


@pytest.mark.parametrize("command", ["worker", "simulate"])
def test_unreachable_broker_is_retried_with_a_doubling_delay(command: str, tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    args = ["worker", "--web-port", str(free_port())] if command == "worker" else ["simulate", "--duration", "5"]
    worker = Proc(command, args, env_for(Settings(kafka=nobody)), tmp_path / f"{command}.log").start()
    try:
        text = wait_for(lambda: worker.log_tail() if worker.log_tail().count("Retrying in") >= 3 else "",
                        timeout_s=60, message="three retries")  # fmt: skip
    finally:
        worker.stop()
    lines = [line for line in text.splitlines() if line.strip()]
    assert [re.search(r"Retrying in (\d+) s", line).group(1) for line in lines[:3]] == ["1", "2", "4"], lines  # type: ignore[union-attr]
    for line in lines[:3]:
        assert f"Kafka at {nobody} (CALLPULSE_KAFKA, --kafka): no broker answers; start the broker" in line
    assert "aiokafka" not in text and "Traceback" not in text, "the client library's own errors stay quiet"


def _topics(bootstrap: str) -> set[str]:
    """The broker's topics, less its own (`__consumer_offsets` appears once any group commits: not the demo's)."""

    async def listing() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return {t for t in await admin.list_topics() if not t.startswith("__")}
        finally:
            await admin.close()

    return asyncio.run(listing())


def test_demo_uses_a_given_broker_and_redis_under_a_prefix_it_removes(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("user:key", "kept")
    before = _topics(broker.bootstrap)
    # CALLPULSE_KAFKA and CALLPULSE_REDIS set explicitly: the demo may use them.
    env = env_for(Settings(kafka=broker.bootstrap, redis_url=redis_server.url))
    args = ["demo", "--agents", "5", "--rate", "20", "--http", f"127.0.0.1:{free_port()}"]
    demo = Proc("demo", args, env, tmp_path / "demo.log").start()
    try:
        wait_for(lambda: "wallboard:" in demo.log_tail(100_000) or not demo.alive(), timeout_s=120,
                 message="the demo up")  # fmt: skip
        assert demo.alive(), demo.log_tail()
        out = demo.log_tail(100_000)
        prefix = re.search(r"topic and key prefix: (demo\d+-)", out).group(1)  # type: ignore[union-attr]
        assert f"using the Kafka broker at {broker.bootstrap} (CALLPULSE_KAFKA)" in out
        assert f"using the Redis at {redis_server.url} (CALLPULSE_REDIS)" in out
        logs = re.search(r"^logs: (\S+)", out, re.M).group(1)  # type: ignore[union-attr]
        assert (Path(logs) / "worker.log").exists()
        wait_for(lambda: client.keys(f"cp:{prefix}*"), timeout_s=60, message="the demo's keys in Redis")
        assert {f"{prefix}calls", f"{prefix}tickets"} <= _topics(broker.bootstrap)
    finally:
        demo.signal(signal.SIGINT)
        try:
            # the children get 15 s together, then the clean-up's Kafka admin calls up to 15 s each (start, delete
            # topics, delete the group) and the keys': a busy broker can take all of it
            demo.popen.wait(120)  # type: ignore[union-attr]
        finally:
            demo.stop()  # and if it did not stop on Ctrl-C, nothing it started outlives the test
    out = demo.log_tail(100_000)
    assert f"removed the demo's topics from {broker.bootstrap}: {prefix}calls" in out, out[-2000:]
    assert client.keys(f"cp:{prefix}*") == [], "the demo's keys are gone"
    assert client.get("user:key") == b"kept", "nothing else was touched"
    assert not any(t.startswith(prefix) for t in _topics(broker.bootstrap))
    assert _topics(broker.bootstrap) == before
    client.close()
