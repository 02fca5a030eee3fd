"""Floor-size figures without Kafka: Redis bytes per event by key kind, snapshot and /metrics cost at N agents.

Feeds the simulator's floor straight through `streams.processor.Processor` (the worker's own batch path)
into a fresh redis-server on a free port, then measures:
- Redis memory after the events, per retained event, by key kind (SCAN + MEMORY USAGE on a sample);
- `/api/snapshot` built in-process by `monitor.server.Monitor.snapshot` for the full floor, one team and
  `agents=false`: median ms and JSON bytes;
- `/metrics` rendered by the monitor's collector: ms, bytes and series.

    python -m bench.floor --agents 10000 --events 1000000 --out /tmp/floor.json

Events are spread over the last `--hours` hours (default 23, inside the 24 h horizon of `today`), so every
one is retained.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.phases import key_breakdown
from callpulse.settings import Settings
from callpulse.simulate import generate
from monitor.server import Monitor
from streams.processor import Processor, Record
from streams.store import WindowStore, namespace


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _no_deadletter(dead: Sequence[tuple[Record, str]]) -> None:
    """The simulator sends no invalid events."""


async def feed(settings: Settings, client: aioredis.Redis, *, agents: int, events: int, hours: float) -> int:
    """Send `events` simulator events (ts within the last `hours`) through the worker's batch path."""
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    proc = Processor(settings, store, _no_deadletter)
    duration_s = hours * 3600
    start_s = time.time() - duration_s - 60
    offsets = {"calls": 0, "tickets": 0}
    batch: list[Record] = []
    sent = 0
    for topic, event in generate(
        agents=agents, rate=events / duration_s, duration_s=duration_s, seed=11, start_s=start_s
    ):
        key = event.get("agent_id") or event.get("ticket_id")
        batch.append(Record(topic, 0, offsets[topic], key.encode() if key else None, orjson.dumps(event)))
        offsets[topic] += 1
        sent += 1
        if len(batch) >= settings.batch_max:
            await proc.process(batch)
            batch = []
        if sent >= events:
            break
    if batch:
        await proc.process(batch)
    return sent


async def timed(make: Any, repeat: int) -> tuple[float, int]:
    """Median ms of `repeat` calls of `make()` and the JSON/text size of the last result in bytes."""
    times: list[float] = []
    size = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = await make()
        body = out if isinstance(out, bytes) else orjson.dumps(out)
        times.append((time.perf_counter() - t0) * 1000)
        size = len(body)
    return statistics.median(times), size


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Load the floor and take every figure."""
    settings = Settings(redis_url=url, topic_prefix="floor.")
    client = aioredis.Redis.from_url(url)
    ns = namespace(settings.topic_prefix)
    mem0 = (await client.info("memory"))["used_memory"]
    t0 = time.perf_counter()
    sent = await feed(settings, client, agents=args.agents, events=args.events, hours=args.hours)
    load_s = time.perf_counter() - t0
    mem1 = (await client.info("memory"))["used_memory"]
    kinds = await key_breakdown(client, ns, sample=300)
    out: dict[str, Any] = {
        "agents": args.agents,
        "events": sent,
        "load_s": round(load_s, 1),
        "load_events_per_s": round(sent / load_s),
        "redis_used_bytes": mem1 - mem0,
        "bytes_per_event": round((mem1 - mem0) / sent, 1),
        "kinds": {k: {"keys": v["keys"], "bytes_per_event": round(v["est_bytes"] / sent, 1)} for k, v in kinds.items()},
    }
    monitor = Monitor(settings, client)
    some_team = await _a_team(monitor)
    window = args.window
    for label, kwargs in (
        ("full", {}),
        ("team", {"team": some_team}),
        ("agents_false", {"agents": False}),
    ):
        try:
            ms, size = await timed(lambda kw=kwargs: monitor.snapshot(window, **kw), args.repeat)
        except TypeError:  # a monitor without agents=False
            continue
        out[f"snapshot_{label}"] = {"median_ms": round(ms, 1), "bytes": size}
    ms, size = await timed(monitor.collector.scrape, max(1, args.repeat // 2))
    body = await monitor.collector.scrape()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    out["metrics"] = {"median_ms": round(ms, 1), "bytes": size, "series": series}
    await client.aclose()
    return out


async def _a_team(monitor: Monitor) -> str | None:
    snap = await monitor.snapshot(monitor.settings.window_names[0])
    teams = [t["team"] for t in snap["teams"]]
    return teams[len(teams) // 2] if teams else None


def main(argv: Sequence[str] | None = None) -> None:
    """Start a redis-server on a free port, measure, print JSON (and write it to --out)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=23.0)
    parser.add_argument("--window", default="15m")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                    break
                time.sleep(0.05)
            result = asyncio.run(measure(args, f"redis://127.0.0.1:{port}/0"))
        finally:
            redis.terminate()
            redis.wait()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
