"""Floor-size figures without Kafka: Redis bytes per event by key kind, snapshot and /metrics cost at N agents.

Feeds the simulator's floor straight through `streams.processor.Processor` (the worker's own batch path)
into a fresh redis-server on a free port, then measures:
- Redis memory after the events, per retained event, by key kind (SCAN + MEMORY USAGE on a sample);
- `/api/snapshot` built in-process by `monitor.server.Monitor.snapshot` for the full floor, one team and
  `agents=false`: median ms and JSON bytes;
- `/metrics` rendered by the monitor's collector: ms, bytes and series.

    python -m bench.floor --agents 10000 --events 1000000 --out /tmp/floor.json

Events are spread at the floor's `--rate` (default 200 events/s, a 10,000-seat floor's: 1,000,000 events span
83 minutes) or over `--hours` hours (inside the 24 h horizon of `today`, so every one is retained). The reads are
then timed while the floor stays live: events keep arriving at `--rate` and the monitor's floor cache follows
them in the background, as in production; `live` reports how many agents it re-read per second and the share
of the time its refreshes took. The events come from a child process (`--feed`), as from a worker in
production: the monitor's event loop is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.phases import key_breakdown

try:
    from callpulse import gcpolicy
except ImportError:  # older code, measured for "before" (its monitor had no heap policy)
    gcpolicy = None  # type: ignore[assignment]
from callpulse.demo import SCORECARD_EXAMPLE
from callpulse.embedded import redis_tuning_args
from callpulse.settings import Settings, load_thresholds
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


class Feed:
    """The simulator's floor sent straight through the worker's batch path: a backlog up to now, then more."""

    def __init__(self, settings: Settings, client: aioredis.Redis, *, agents: int, events: int, hours: float) -> None:
        self.store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
        self.proc = Processor(settings, self.store, _no_deadletter)
        self.batch_max = settings.batch_max
        duration_s = hours * 3600
        now_s = time.time()
        self.rate = events / duration_s
        # The stream goes on for an hour past now: the live part sends each event when the clock reaches its ts.
        self.events = generate(agents=agents, rate=self.rate, duration_s=duration_s + 3600, seed=11,
                               start_s=now_s - duration_s)  # fmt: skip
        self.pending: tuple[str, dict[str, Any]] | None = None
        self.offsets = {"calls": 0, "tickets": 0}
        self.sent = 0

    async def send(self, n: int, *, until_s: float | None = None) -> int:
        """Send the next `n` events, stopping at the first with a ts after `until_s`; returns how many were sent."""
        batch: list[Record] = []
        done = 0
        while done < n:
            nxt = self.pending or next(self.events, None)
            self.pending = None
            if nxt is None:
                break
            topic, event = nxt
            if until_s is not None and _ts_s(event["ts"]) > until_s:
                self.pending = nxt
                break
            key = event.get("agent_id") or event.get("ticket_id")
            batch.append(Record(topic, 0, self.offsets[topic], key.encode() if key else None, orjson.dumps(event)))
            self.offsets[topic] += 1
            done += 1
            if len(batch) >= self.batch_max:
                await self.proc.process(batch)
                PROGRESS.note(f"sent {self.sent + done} events")
                batch = []
        if batch:
            await self.proc.process(batch)
        self.sent += done
        return done


def _ts_s(ts: float | str) -> float:
    """Epoch seconds of an event ts (the simulator writes numbers or RFC 3339 strings)."""
    return datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else float(ts)


class Progress:
    """When the bench last got on; a watchdog reports a stall (every task's stack, Redis's refused commands)."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.step = "start"

    def note(self, step: str) -> None:
        """The bench got on to `step`."""
        self.at, self.step = time.monotonic(), step


PROGRESS = Progress()


async def _watchdog(client: aioredis.Redis, stall_s: float) -> None:
    """Fail the run with what every task is waiting on when nothing got on for `stall_s` seconds."""
    while True:
        await asyncio.sleep(min(10.0, stall_s))
        idle = time.monotonic() - PROGRESS.at
        if idle < stall_s:
            continue
        print(f"bench stalled: nothing got on for {idle:.0f} s after {PROGRESS.step!r}; tasks:", file=sys.stderr)
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        with contextlib.suppress(Exception):
            print(f"redis errorstats: {await client.info('errorstats')}", file=sys.stderr)
            stats = await client.info("commandstats")
            failed = {k: v for k, v in stats.items() if v.get("failed_calls") or v.get("rejected_calls")}
            print(f"redis commands that failed: {failed}", file=sys.stderr)
        raise RuntimeError(f"bench stalled after {PROGRESS.step!r} (stacks above)")


class GcClock:
    """Seconds this process spent in garbage collection since it started counting (gc.callbacks)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._started = 0.0

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._tick)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._started


def _cache_figures(cache: Any) -> tuple[int, float]:
    """(agents re-read, seconds of refresh) of the monitor's floor cache so far (0s for code without one)."""
    return getattr(cache, "reads", 0), getattr(cache, "refresh_s", 0.0)


async def timed(make: Any, repeat: int, between: Any = None, cache: Any = None) -> dict[str, Any]:
    """`repeat` calls of `make()`: their median, 90th percentile, slowest and each in ms, and the JSON/text size of
    the last result in bytes; `between()` runs before each call, untimed (new events, so a read never just repeats
    the one before). Per call also what explains a slow one: the agents the floor cache `cache` re-read meanwhile
    and its refreshes' ms (the background ones included: they hold the loop too), and the ms of garbage collection.
    """
    times: list[float] = []
    per_call: list[dict[str, float]] = []
    size = 0
    with GcClock() as gc_clock:
        for _ in range(repeat):
            PROGRESS.note(f"timed call {len(times) + 1} of {repeat}")
            if between is not None:
                await between()
            (reads0, refresh0), gc0 = _cache_figures(cache), gc_clock.total_s
            t0 = time.perf_counter()
            out = await make()
            body = out if isinstance(out, bytes) else orjson.dumps(out)
            times.append((time.perf_counter() - t0) * 1000)
            size = len(body)
            reads1, refresh1 = _cache_figures(cache)
            per_call.append({"ms": round(times[-1], 1), "agents_reread": reads1 - reads0,
                             "refresh_ms": round((refresh1 - refresh0) * 1000, 1),
                             "gc_ms": round((gc_clock.total_s - gc0) * 1000, 1)})  # fmt: skip
    p90 = statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]
    return {"median_ms": round(statistics.median(times), 1), "p90_ms": round(p90, 1), "max_ms": round(max(times), 1),
            "bytes": size, "calls": per_call}  # fmt: skip


async def _pause() -> None:
    await asyncio.sleep(0.2)


async def _keep_sending(feed: Feed) -> None:
    """The floor's events in real time: every 0.1 s, those whose ts the clock has reached. The first send is the
    backlog that came due while the floor loaded and the monitor started: `caught-up <events>` says it is in."""
    first = True
    while True:
        t0 = time.perf_counter()
        n = await feed.send(10**9, until_s=time.time())
        if first:
            print(f"caught-up {n}", flush=True)
            first = False
        await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - t0)))


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Load the floor and take every figure, failing with every task's stack if it stalls."""
    client = aioredis.Redis.from_url(url)
    measuring = asyncio.create_task(_measure(args, url))
    watchdog = asyncio.create_task(_watchdog(client, args.stall_s))
    try:
        await asyncio.wait({measuring, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if watchdog.done():
            measuring.cancel()
            watchdog.result()  # raises the stall
        return measuring.result()
    finally:
        watchdog.cancel()
        await client.aclose()


def _settings(args: argparse.Namespace, url: str) -> Settings:
    settings = Settings(redis_url=url, topic_prefix="floor.")
    if args.config:  # windows, rules and scorecard of a config file (default: the demo's telesales scorecard)
        text = args.config.read_text(encoding="utf-8")
        settings = replace(settings, config_path=str(args.config), **load_thresholds(text))
    return settings


def _hours(args: argparse.Namespace) -> float:
    return float(args.hours if args.hours else args.events / args.rate / 3600)


async def feed_floor(args: argparse.Namespace, url: str) -> None:
    """The child's part (`--feed`): load the floor, print `loaded <events> <seconds>`, wait for a line on stdin,
    then send the floor's events in real time until killed. A process of its own, as the worker is in
    production, so the monitor's event loop and CPU share are its own."""
    client = aioredis.Redis.from_url(url)
    feed = Feed(_settings(args, url), client, agents=args.agents, events=args.events, hours=_hours(args))
    await feed.store.mark_initialised()  # as a worker does on start (its windows are complete)
    t0 = time.perf_counter()
    sent = 0
    while sent < args.events:
        n = await feed.send(min(feed.batch_max, args.events - sent), until_s=time.time())
        if not n:
            break
        sent += n
        print(f"sent {sent}", flush=True)
    print(f"loaded {sent} {time.perf_counter() - t0:.3f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await _keep_sending(feed)


async def _measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = _settings(args, url)
    client = aioredis.Redis.from_url(url)
    ns = namespace(settings.topic_prefix)
    mem0 = (await client.info("memory"))["used_memory"]
    hours = _hours(args)
    PROGRESS.note("loading the floor")
    cmd = [sys.executable, "-m", "bench.floor", "--feed", url, *_feed_args(args)]
    feeder = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        return await _measure_fed(args, settings, client, ns, mem0, hours, feeder)
    finally:
        if feeder.returncode is None:
            feeder.kill()
        await feeder.wait()
        await client.aclose()


def _feed_args(args: argparse.Namespace) -> list[str]:
    out = ["--agents", str(args.agents), "--events", str(args.events), "--rate", str(args.rate)]
    out += ["--hours", str(args.hours), "--config", str(args.config)] if args.config else ["--hours", str(args.hours)]
    return out


async def _measure_fed(
    args: argparse.Namespace,
    settings: Settings,
    client: aioredis.Redis,
    ns: str,
    mem0: int,
    hours: float,
    feeder: asyncio.subprocess.Process,
) -> dict[str, Any]:
    assert feeder.stdin is not None
    loaded = await _feeder_says(feeder, "loaded", "before loading the floor")
    sent, load_s = int(loaded[1]), float(loaded[2])
    mem1 = (await client.info("memory"))["used_memory"]
    PROGRESS.note("Redis memory by key kind")
    kinds = await key_breakdown(client, ns, sample=300)
    out: dict[str, Any] = {
        "agents": args.agents,
        "events": sent,
        "hours": round(hours, 2),
        "load_s": round(load_s, 1),
        "load_events_per_s": round(sent / load_s),
        "redis_used_bytes": mem1 - mem0,
        "bytes_per_event": round((mem1 - mem0) / sent, 1),
        "kinds": {k: {"keys": v["keys"], "bytes_per_event": round(v["est_bytes"] / sent, 1)} for k, v in kinds.items()},
    }
    monitor = Monitor(settings, client)
    PROGRESS.note("the monitor's first snapshot")
    some_team = await _a_team(monitor)
    # Reads while the floor is live: the feeding process sends events at the floor's rate (in tenths of a second)
    # and the monitor's own refresher follows them, as in production; each read is timed alone.
    feeder.stdin.write(b"live\n")
    await feeder.stdin.drain()
    # The events that came due while the floor loaded arrive at once: a catch-up, not the steady state the reads
    # below measure. Its first read is a figure of its own; the timed reads start once the cache has taken it in.
    backlog = int((await _feeder_says(feeder, "caught-up", "before it caught up"))[1])
    t0 = time.perf_counter()
    await monitor.snapshot(args.window, agents=False)
    out["backlog"] = {"events": backlog, "first_read_ms": round((time.perf_counter() - t0) * 1000, 1)}
    # (A monitor from before the floor cache has neither refresher nor cache figures: run against it for "before".)
    cache = getattr(monitor, "floor", None)
    refresher = asyncio.create_task(monitor._refresh_loop() if cache is not None else asyncio.sleep(0))
    # as `callpulse monitor` does (monitor.server.serve_forever); code from before the heap policy has none
    heap = asyncio.create_task(gcpolicy.keep() if gcpolicy is not None else asyncio.sleep(0))
    (reads0, cache_s0), t_live = _cache_figures(cache), time.perf_counter()
    profiler = cProfile.Profile() if args.profile else None
    try:
        for label, kwargs in (("full", {}), ("team", {"team": some_team}), ("agents_false", {"agents": False})):
            if profiler is not None and label in args.profile_reads.split(","):
                profiler.enable()
            out[f"snapshot_{label}"] = await timed(
                lambda kw=kwargs: monitor.snapshot(args.window, **kw), args.repeat, _pause, cache
            )
            if profiler is not None:
                profiler.disable()
        if profiler is not None:
            profiler.dump_stats(args.profile)
        scrapes = await timed(monitor.collector.scrape, max(1, args.repeat // 2), _pause, cache)
        PROGRESS.note("the last scrape")
        body = await monitor.collector.scrape()
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        out["metrics"] = {**scrapes, "series": series}
    finally:
        feeder.kill()
        refresher.cancel()
        heap.cancel()
        await asyncio.gather(refresher, heap, return_exceptions=True)
    live_s = time.perf_counter() - t_live
    reads1, cache_s1 = _cache_figures(cache)
    out["live"] = {
        "seconds": round(live_s, 1),
        "events_per_s": args.rate,
        "agents_read_per_s": round((reads1 - reads0) / live_s, 1),
        "cache_refresh_share": round((cache_s1 - cache_s0) / live_s, 3),
    }
    return out


async def _feeder_says(feeder: asyncio.subprocess.Process, word: str, before: str) -> list[str]:
    """The feeding process's next line that starts with `word`, split (`loaded <events> <seconds>`, `caught-up
    <events>`); RuntimeError naming the moment (`before`) if it ends first."""
    assert feeder.stdout is not None
    while True:
        line = (await feeder.stdout.readline()).decode().split()
        if not line:
            raise RuntimeError(f"the feeding process ended (exit {await feeder.wait()}) {before}")
        PROGRESS.note(" ".join(line))
        if line[0] == word:
            return line


async def _a_team(monitor: Monitor) -> str | None:
    snap = await monitor.snapshot(monitor.settings.window_names[0])
    teams = [t["team"] for t in snap["teams"]]
    return teams[len(teams) // 2] if teams else None


def main(argv: Sequence[str] | None = None) -> None:
    """Start a redis-server on a free port, measure, print JSON (and write it to --out)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--rate", type=float, default=200.0, help="the floor's events/s: the events span events/rate (default)"
    )
    parser.add_argument("--hours", type=float, default=0.0, help="spread the events over this many hours instead")
    parser.add_argument("--window", default="15m")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--stall-s", type=float, default=300.0, help="fail with every task's stack after this long idle"
    )
    parser.add_argument("--config", type=Path, default=SCORECARD_EXAMPLE, help="settings file (windows, scorecard)")
    parser.add_argument(
        "--profile", type=Path, help="write a cProfile of the monitor's process while it serves the reads named "
        "by --profile-reads (the refresher's work in that time included) to this file"
    )  # fmt: skip
    parser.add_argument(
        "--profile-reads", default="team,agents_false", help="comma-separated: full, team, agents_false"
    )
    parser.add_argument("--feed", metavar="REDIS_URL", help=argparse.SUPPRESS)  # the feeding child (feed_floor)
    args = parser.parse_args(argv)
    if args.feed:
        asyncio.run(feed_floor(args, args.feed))
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
                *redis_tuning_args(),
            ],
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
