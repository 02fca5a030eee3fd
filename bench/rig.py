"""The benchmark rig: sizes, the shared broker and Redis, and helpers to fill topics and watch progress."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import os
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psutil
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Child, Cleanup
from callpulse.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from callpulse.kafka import ensure_topics
from callpulse.processes import env_for, worker_args
from callpulse.settings import Settings
from callpulse.simulate import generate, produce
from streams.store import WindowStore, namespace

REPO = Path(__file__).resolve().parent.parent
RESULTS = ("ok", "late", "duplicate", "invalid")
HISTORY_S = 7200  # pre-filled events span the last two hours: inside every window, none late


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    events: int  # pre-filled topic for (1), (2), (3), (8)
    naive_events: int  # the naive baseline is timed over this many of them
    replay_events: int  # pre-filled topic for (6), (7)
    load_warmup_s: float
    load_s: float
    lag_probes: int
    alert_interval_s: float
    profile_s: float
    worker_cap_s: float  # the worker on the replay topic stops here even if it has not finished
    catchup_s: float  # (9) the backlog's span of time, s, ending now
    agents: int = 2000
    catchup_seats: int = 10_000  # (9) the floor whose backlog a starting worker catches up on
    catchup_rate: float = 200.0  # (9) events/s of that floor
    floor_events: int = 30_000  # (10) per floor size in the floor-size sweep
    reads_events: int = 1_000_000  # (11) events before the reads and memory are measured at 10,000 agents


FULL = Sizes(200_000, 30_000, 1_000_000, 3.0, 25.0, 200, 0.5, 15.0, 200.0, 3600.0)
QUICK = Sizes(20_000, 10_000, 50_000, 2.0, 5.0, 50, 0.5, 4.0, 30.0, 300.0, floor_events=15_000, reads_events=100_000)


class Bench:
    """The shared servers and the bookkeeping of one run."""

    def __init__(self, sizes: Sizes, workdir: Path, cleanup: Cleanup) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.cleanup = cleanup
        self.broker = EmbeddedBroker(log_dir=workdir / "broker")
        self.redis = EmbeddedRedis(data_dir=workdir / "redis")
        self.results: dict[str, Any] = {}
        self.tag = f"b{os.getpid() % 10000}"
        self._names = itertools.count(1)

    def start_servers(self) -> None:
        self.cleanup.push("broker", self.broker.stop)
        self.broker.start()
        self.cleanup.push("redis", self.redis.stop)
        self.redis.start()

    def settings(self, phase: str, **changes: Any) -> Settings:
        prefix = f"{self.tag}-{phase}-"
        base = Settings(
            kafka=self.broker.bootstrap,
            redis_url=self.redis.url,
            topic_prefix=prefix,
            consumer_group="callpulse",
            http_host="127.0.0.1",
            http_port=free_port(),
            session_timeout_s=6.0,
        )
        return base.replace(**changes)

    def worker(self, settings: Settings, *, code: Path | None = None) -> Child:
        """Start `callpulse worker`; with `code`, the one in that directory (see `code_at`) instead of this tree's."""
        n = next(self._names)
        port = free_port()
        env = env_for(settings)
        if code is not None:
            env["PYTHONPATH"] = str(code)  # ahead of the editable install of this tree
        log_path = self.workdir / f"worker{n}.log"
        child = Child.callpulse(f"worker{n}", worker_args(settings, web_port=port), env, log_path)
        child.web_port = port
        return self.cleanup.child(child)

    def cpu(self, what: EmbeddedBroker | EmbeddedRedis) -> float:
        pid = what.pid
        if pid is None:
            return 0.0
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system


# Where the batch consumer came in: the worker just before it is the "before" of the before/after figures.
BATCH_CONSUMER_FILE = "streams/consumer.py"


def before_batch_consumer() -> str | None:
    """The commit before `streams/consumer.py` was added (per-record Faust delivery); None without git history."""
    try:
        added = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%H", "-1", "--", BATCH_CONSUMER_FILE],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{added}^" if added else None


def code_at(rev: str, into: Path) -> Path:
    """The worker's packages (callpulse, streams, monitor) as of git revision `rev`, extracted under `into`."""
    tar = subprocess.run(
        ["git", "archive", "--format=tar", rev, "callpulse", "streams", "monitor"], cwd=REPO, capture_output=True
    )
    if tar.returncode != 0:
        raise RuntimeError(f"git archive {rev} failed: {tar.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into


# --- helpers ---------------------------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


async def prefill(settings: Settings, n: int, *, agents: int, seed: int) -> dict[str, Any]:
    """Create the topics (4 partitions) and send the first `n` simulator events of a two-hour history ending now."""
    await ensure_topics(settings, partitions=4)
    rate = n / HISTORY_S * 1.1
    events = itertools.islice(
        generate(agents=agents, rate=rate, duration_s=HISTORY_S, seed=seed, start_s=time.time() - HISTORY_S), n
    )
    t0 = time.perf_counter()
    sent = await produce(settings, events, realtime=False)
    return {"produced": sent, "produce_s": time.perf_counter() - t0}


async def stats_counts(client: aioredis.Redis, ns: str) -> dict[str, int]:
    raw = cast("dict[bytes, bytes]", await client.hgetall(f"{ns}stats"))  # bytes: not decode_responses
    counts = dict.fromkeys(RESULTS, 0)
    for k, v in raw.items():
        topic, _, result = k.decode().partition("|")
        if topic in ("calls", "tickets") and result in counts:
            counts[result] += int(v)
    return counts


def distinct(counts: dict[str, int]) -> int:
    """Records accounted for once each: a redelivered copy (after a rebalance) shows as a duplicate on top."""
    return counts["ok"] + counts["late"] + counts["invalid"]


@dataclass
class Progress:
    t_first: float
    c_first: int
    t_done: float
    counts: dict[str, int]
    done: int  # records accounted for: n, or fewer when a time cap stopped the wait

    def rate(self) -> float:
        """Records per second from the first processed record to the last."""
        return (self.done - self.c_first) / (self.t_done - self.t_first) if self.t_done > self.t_first else math.nan


async def wait_processed(
    client: aioredis.Redis,
    ns: str,
    n: int,
    procs: Sequence[Child],
    *,
    timeout_s: float,
    interval_s: float = 0.02,
    partial: bool = False,
) -> Progress:
    """Poll the stats hash until `n` records are accounted for; times are time.perf_counter().

    At `timeout_s`, raise TimeoutError; with `partial`, return what was done by then instead (a busy machine).
    """
    deadline = time.perf_counter() + timeout_s
    t_first: float | None = None
    c_first = 0
    while True:
        counts = await stats_counts(client, ns)
        now = time.perf_counter()
        done = distinct(counts)
        if t_first is None and done > 0:
            t_first, c_first = now, done
        if done >= n:
            assert t_first is not None
            return Progress(t_first, c_first, now, counts, done)
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited while processing:\n{p.log_tail()}")
        if now > deadline and partial and t_first is not None:
            return Progress(t_first, c_first, now, counts, done)
        if now > deadline:
            raise TimeoutError(f"only {done} of {n} records processed after {timeout_s:.0f} s")
        await asyncio.sleep(interval_s)


def scrape(port: int) -> dict[str, float]:
    """A worker's own /metrics, flattened to name{labels} -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def worker_metrics(child: Child) -> dict[str, float]:
    if child.web_port is None:
        raise ValueError(f"{child.name} has no web port: only workers started by Bench.worker serve /metrics")
    try:
        return await asyncio.to_thread(scrape, child.web_port)
    except OSError:
        return {}


def batch_figures(metrics: dict[str, float]) -> dict[str, float]:
    count = metrics.get("callpulse_batch_seconds_count", 0.0)
    total = metrics.get("callpulse_batch_seconds_sum", 0.0)
    events = sum(v for k, v in metrics.items() if k.startswith("callpulse_worker_events_total"))
    return {
        "batches": count,
        "mean_batch": events / count if count else 0.0,
        "mean_batch_ms": 1000 * total / count if count else 0.0,
        "events": events,
    }


async def fresh_redis(client: aioredis.Redis, settings: Settings) -> None:
    """Empty Redis and mark the namespace initialised, so a worker does not rebuild it by replay on its first batch."""
    await client.flushall()
    await WindowStore(client, namespace(settings.topic_prefix)).mark_initialised()
    await client.config_resetstat()


async def redis_eval_stats(client: aioredis.Redis) -> dict[str, float]:
    info = await client.info("commandstats")
    calls = usec = 0.0
    for name, row in info.items():
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            calls += row["calls"]
            usec += row["usec"]
    return {"eval_calls": calls, "eval_usec": usec}
