"""The measurements: each starts what it needs through the rig and returns its figures as a dict."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from aiokafka import TopicPartition

from bench import load, profile
from bench.procs import Child
from bench.rig import (
    REPO,
    Bench,
    batch_figures,
    distinct,
    fresh_redis,
    prefill,
    redis_eval_stats,
    say,
    stats_counts,
    wait_processed,
    worker_metrics,
)
from bench.stats import histogram_quantile, percentile, span
from callpulse.kafka import ensure_topics
from callpulse.processes import env_for
from callpulse.settings import Settings
from callpulse.simulate import generate, produce
from streams.alerts import Alert
from streams.engine import AlertEngine
from streams.processor import Processor, Record
from streams.replay import raw_consumer, replay_into
from streams.store import WindowStore, namespace

# --- the measurements ------------------------------------------------------------------------------------------


async def raw_ceiling(settings: Settings, n: int) -> dict[str, Any]:
    """(1) A plain aiokafka consumer reading both topics from the start and JSON-decoding each value."""
    consumer = raw_consumer(settings, max_poll_records=5000)
    await consumer.start()
    try:
        parts = [
            TopicPartition(settings.topic(t), p)
            for t in ("calls", "tickets")
            for p in sorted(consumer.partitions_for_topic(settings.topic(t)) or ())
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen = 0
        t_first = None
        t_start = time.perf_counter()
        while seen < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in got.values():
                for m in messages:
                    orjson.loads(m.value)
                seen += len(messages)
            if t_first is None and seen:
                t_first, c_first = time.perf_counter(), seen
            if time.perf_counter() - t_start > 300:
                raise TimeoutError(f"raw consumer read only {seen} of {n}")
        t_done = time.perf_counter()
    finally:
        await consumer.stop()
    assert t_first is not None
    return {"events": seen, "rate": (seen - c_first) / (t_done - t_first), "seconds": t_done - t_first}


async def naive_baseline(b: Bench, settings: Settings, client: aioredis.Redis, n: int) -> dict[str, Any]:
    """(2) A minimal Faust app (bench/naive_app.py) awaiting one Redis HINCRBY per event."""
    await client.flushall()
    count_key = "naive:processed"
    env = dict(os.environ)
    env.update(
        BENCH_KAFKA=settings.kafka,
        BENCH_REDIS=settings.redis_url,
        BENCH_TOPICS=f"{settings.topic('calls')},{settings.topic('tickets')}",
        BENCH_GROUP=f"{settings.topic_prefix}naive",
        BENCH_COUNT_KEY=count_key,
        BENCH_DATADIR=str(b.workdir / "naive-data"),
        PYTHONUNBUFFERED="1",
    )
    child = b.cleanup.child(
        Child("naive", [sys.executable, str(REPO / "bench" / "naive_app.py")], env, b.workdir / "naive.log")
    )
    t_spawn = time.perf_counter()
    cpu0 = 0.0
    t_first = None
    c_first = 0
    deadline = t_spawn + max(120.0, n / 500)
    while True:
        done = int(await client.get(count_key) or 0)
        now = time.perf_counter()
        if t_first is None and done > 0:
            t_first, c_first, cpu0 = now, done, child.cpu_s()
        if done >= n:
            break
        if not child.alive():
            raise RuntimeError(f"naive app exited:\n{child.log_tail()}")
        if now > deadline and t_first is not None:
            break  # a busy machine: time it over what it did (`events` says how many)
        if now > deadline:
            raise TimeoutError(f"naive app processed nothing in {now - t_spawn:.0f} s")
        await asyncio.sleep(0.02)
    cpu = child.cpu_s() - cpu0
    child.stop()
    assert t_first is not None
    rate = (done - c_first) / (now - t_first)
    return {"events": done, "rate": rate, "startup_s": t_first - t_spawn, "cpu_us_per_event": 1e6 * cpu / done}


async def callpulse_run(
    b: Bench,
    settings: Settings,
    client: aioredis.Redis,
    n: int,
    *,
    workers: int,
    label: str,
    check: bool = False,
    code: Path | None = None,
    time_cap_s: float | None = None,
) -> dict[str, Any]:
    """(3)/(8) `callpulse worker` x `workers` on the pre-filled topic until every record is in the stats hash.

    With `check`, also the memory figures of what it built and the replay identity check (6); with `code`, the
    worker from that directory (the "before" of (3)); with `time_cap_s`, stop there and time what was done.
    """
    await fresh_redis(client, settings)
    mem0 = (await client.info("memory"))["used_memory"]
    ns = namespace(settings.topic_prefix)
    redis_cpu0, broker_cpu0 = b.cpu(b.redis), b.cpu(b.broker)
    t_spawn = time.perf_counter()
    procs = [b.worker(settings, code=code) for _ in range(workers)]
    if time_cap_s is None:
        prog = await wait_processed(client, ns, n, procs, timeout_s=max(180.0, n / 1000))
    else:
        prog = await wait_processed(client, ns, n, procs, timeout_s=time_cap_s, partial=True)
    metrics = [await worker_metrics(p) for p in procs]
    cpu = sum(p.cpu_s() for p in procs)
    redis_cpu, broker_cpu = b.cpu(b.redis) - redis_cpu0, b.cpu(b.broker) - broker_cpu0
    evals = await redis_eval_stats(client)
    extra: dict[str, Any] = {}
    if check:
        say("  memory and key counts of what the worker built")
        extra["memory"] = await memory_figures(client, settings, mem0)
        say("  wipe, replay, compare")
        extra["identity"] = await identity_check(b, settings, client, procs)
        say("  alert engine costs on that state")
        extra["engine"] = await engine_costs(settings, client)
    for p in procs:
        p.stop()
    merged: dict[str, float] = {}
    for m in metrics:
        for k, v in m.items():
            merged[k] = merged.get(k, 0.0) + v
    out = {
        "label": label,
        "workers": workers,
        "events": n,
        "counts": prog.counts,
        "processed": prog.done,
        "time_cap_s": time_cap_s,
        "rate": prog.rate(),
        "rate_with_startup": prog.done / (prog.t_done - t_spawn),
        "startup_s": prog.t_first - t_spawn,
        "seconds": prog.t_done - prog.t_first,
        "worker_cpu_us_per_event": 1e6 * cpu / n,  # includes start-up (imports, group join): small against n
        "redis_cpu_us_per_event": 1e6 * redis_cpu / n,
        "broker_cpu_us_per_event": 1e6 * broker_cpu / n,
        "lua_us_per_event": evals["eval_usec"] / n,
        "per_worker_events": [batch_figures(m)["events"] for m in metrics],
        "batch": batch_figures(merged),
        **extra,
    }
    return out


async def steady_load(
    b: Bench, settings: Settings, client: aioredis.Redis, *, code: Path | None = None
) -> dict[str, Any]:
    """(4)/(5) A running worker and monitor, 2,000 events/s, lag probes and alert probes (worker from `code`)."""
    s = b.sizes
    await ensure_topics(settings, partitions=4)
    await fresh_redis(client, settings)
    ns = namespace(settings.topic_prefix)
    worker = b.worker(settings, code=code)
    monitor = b.cleanup.child(Child.callpulse("monitor", ["monitor"], env_for(settings), b.workdir / "monitor.log"))
    base = f"http://{settings.http_host}:{settings.http_port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    # Ready when the monitor answers and a marker event has made it through the worker.
    deadline = time.monotonic() + 90
    marker = {"event_id": "warmup-marker", "type": "agent.state", "ts": time.time(), "agent_id": "warmup-marker"}
    marker["state"] = "available"
    await produce(settings, [("calls", marker)], realtime=False)
    while not (await asyncio.to_thread(healthy) and await client.zscore(f"{ns}agents", "warmup-marker") is not None):
        for p in (worker, monitor):
            if not p.alive():
                raise RuntimeError(f"{p.name} exited:\n{p.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError("worker or monitor not ready after 90 s")
        await asyncio.sleep(0.1)
    cpu_w0, cpu_m0, cpu_r0, cpu_b0 = worker.cpu_s(), monitor.cpu_s(), b.cpu(b.redis), b.cpu(b.broker)
    cpu_self0 = time.process_time()
    t0 = time.perf_counter()
    res = await load.run_load(
        settings,
        ws_url=f"ws://{settings.http_host}:{settings.http_port}/ws?window=15m",
        rate_per_s=2000.0,
        agents=s.agents,
        warmup_s=s.load_warmup_s,
        duration_s=s.load_s,
        lag_probes=s.lag_probes,
        alert_interval_s=s.alert_interval_s,
    )
    elapsed = time.perf_counter() - t0
    raw = cast("dict[bytes, bytes]", await client.hgetall(f"{ns}stats"))  # bytes: not decode_responses
    stats = {k.decode(): int(v) for k, v in raw.items()}
    out: dict[str, Any] = {
        "rate": res.background_rate_per_s,
        "duration_s": res.duration_s,
        "lag_n": len(res.lag_s),
        "lag_lost": res.lag_lost,
        "lag_p50": percentile(res.lag_s, 0.5),
        "lag_p99": percentile(res.lag_s, 0.99),
        "lag_max": max(res.lag_s) if res.lag_s else None,
        "ack_p50": percentile(res.ack_s, 0.5),
        "ack_p99": percentile(res.ack_s, 0.99),
        "visible_p50": percentile(res.visible_s, 0.5),
        "visible_p99": percentile(res.visible_s, 0.99),
        "backlog_at_end": res.backlog_at_end,
        "poll_s": res.poll_interval_s,
        "alert_n": len(res.alert_s),
        "alert_lost": res.alert_lost,
        "alert_p50": percentile(res.alert_s, 0.5),
        "alert_p99": percentile(res.alert_s, 0.99),
        "alert_max": max(res.alert_s) if res.alert_s else None,
        "alert_eval_p50": percentile(res.alert_eval_s, 0.5),
        "alert_eval_p99": percentile(res.alert_eval_s, 0.99),
        "hist_p50": histogram_quantile(stats, 0.5),
        "hist_p99": histogram_quantile(stats, 0.99),
        "hist_n": stats.get("lag|n", 0),
        "send_errors": res.send_errors,
        "ws_messages": res.ws_messages,
        "ws_snapshot_mb": res.ws_snapshot_bytes / 1e6,
        "worker_cpu_share": (worker.cpu_s() - cpu_w0) / elapsed,
        "monitor_cpu_share": (monitor.cpu_s() - cpu_m0) / elapsed,
        "redis_cpu_share": (b.cpu(b.redis) - cpu_r0) / elapsed,
        "broker_cpu_share": (b.cpu(b.broker) - cpu_b0) / elapsed,
        "bench_cpu_share": (time.process_time() - cpu_self0) / elapsed,
    }
    out["batch"] = batch_figures(await worker_metrics(worker))
    worker.stop()
    monitor.stop()
    return out


KEY_KINDS = {
    "e:": "dedupe marks, one key per event (before) e:*",
    "d:": "dedupe shards d:*",
    "o:": "invalid-offset marks o:*",
    "b:": "agent chunks b:*",
    "t:": "team chunks t:* (before)",
    "f:": "floor chunks f:* (before)",
    "tm:": "team rosters tm:* (before)",
    "s:c:": "customer states s:c:*",
    "s:t:": "ticket states s:t:*",
    "s:q:": "queued-call states s:q:*",
    "s:a:": "agent state histories s:a:*",
    "m:": "agent meta m:*",
    "qb:": "queue chunks qb:*",
    "qw:": "waiting calls qw:*",
    "cb:": "campaign chunks cb:*",
    "cc:": "campaign days cc:*, cz:*",
    "cz:": "campaign days cc:*, cz:*",
}


async def key_breakdown(client: aioredis.Redis, ns: str, *, sample: int = 200) -> dict[str, dict[str, float]]:
    """Count keys by kind (SCAN) and estimate each kind's bytes from MEMORY USAGE on a sample of its keys."""
    counts: dict[str, int] = {}
    samples: dict[str, list[bytes]] = {}
    async for key in client.scan_iter(count=10_000):
        text = key.decode(errors="replace")
        rest = text[len(ns) :] if text.startswith(ns) else "\0"
        kind = next((label for pre, label in KEY_KINDS.items() if rest.startswith(pre)), "other keys")
        counts[kind] = counts.get(kind, 0) + 1
        if len(samples.setdefault(kind, [])) < sample:
            samples[kind].append(key)
    out: dict[str, dict[str, float]] = {}
    for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        async with client.pipeline(transaction=False) as pipe:
            for key in samples[kind]:
                pipe.memory_usage(key, samples=0)
            usage = [u for u in await pipe.execute() if u is not None]
        mean = sum(usage) / len(usage) if usage else 0.0
        out[kind] = {"keys": n, "mean_bytes": mean, "est_bytes": mean * n}
    return out


async def _no_deadletter(dead: Sequence[tuple[Record, str]]) -> None:
    """Replayed invalid records were dead-lettered when first seen."""


async def replay_timed(
    b: Bench, settings: Settings, client: aioredis.Redis, *, profile_s: float = 0.0
) -> dict[str, Any]:
    """Rebuild every window from the earliest offsets with `streams.replay.replay_into`, in this process.

    Also what it cost: this process's CPU, Redis CPU and time inside the apply script; with `profile_s`,
    a py-spy profile of this process during the replay.
    """
    ns = namespace(settings.topic_prefix)
    replay_client = aioredis.Redis.from_url(settings.redis_url)
    await client.config_resetstat()
    redis_cpu0 = b.cpu(b.redis)
    prof_task = None
    if profile_s:

        async def profile_self() -> profile.Profile:
            await asyncio.sleep(1.0)
            return await profile.record(os.getpid(), profile_s, b.workdir / "replay-profile.txt")

        prof_task = asyncio.create_task(profile_self())
    try:
        processor = Processor(settings, WindowStore(replay_client, ns), _no_deadletter)
        processor.check_epoch = False
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        replayed = await replay_into(settings, processor)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        redis_cpu = b.cpu(b.redis) - redis_cpu0
        evals = await redis_eval_stats(client)
        await WindowStore(replay_client, ns).mark_initialised()
        prof = await prof_task if prof_task is not None else None
    finally:
        if prof_task is not None and not prof_task.done():
            prof_task.cancel()
        await replay_client.aclose()
    return {
        "replayed": replayed,
        "seconds": seconds,
        "rate": replayed / seconds,
        "cpu_share": cpu / seconds,
        "redis_cpu_share": redis_cpu / seconds,
        "lua_s": evals["eval_usec"] / 1e6,
        "batches": evals["eval_calls"],
        "profile": prof,
    }


async def engine_costs(settings: Settings, client: aioredis.Redis, *, sample: int = 100) -> dict[str, Any]:
    """Time the alert engine's reads on the current state, in this process (nothing else running)."""
    store = WindowStore(client, namespace(settings.topic_prefix))

    async def publish(alert: Alert) -> None:
        """Transitions are not sent anywhere from here."""

    engine = AlertEngine(settings, store, publish)
    now_ms = int(time.time() * 1000)
    agents = sorted(await store.active_agents(now_ms, settings.longest_window_s))
    some = random.Random(3).sample(agents, min(sample, len(agents)))

    async def timed(coro: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        value = await coro
        return time.perf_counter() - t0, value

    await engine.sweep()  # settle: transitions the replayed state implies happen here, not in the timings
    current_s, current = await timed(engine.current())
    read_some_s, _ = await timed(store.read_windows(now_ms, engine.rule_windows_s, only=some))
    check_some_s, _ = await timed(engine.check_agents(some))
    read_all_s, _ = await timed(store.read_windows(now_ms, engine.rule_windows_s))
    sweep_s, _ = await timed(engine.sweep())
    return {
        "agents": len(agents),
        "sample": len(some),
        "active_alerts": len(current),
        "current_ms": 1000 * current_s,
        "read_some_ms": 1000 * read_some_s,
        "check_some_ms": 1000 * check_some_s,
        "read_all_ms": 1000 * read_all_s,
        "sweep_ms": 1000 * sweep_s,
        "rule_windows": [w // 60 for w in engine.rule_windows_s],
    }


async def memory_figures(client: aioredis.Redis, settings: Settings, mem0: int) -> dict[str, Any]:
    """used_memory growth per active agent-window, and what the keys are."""
    ns = namespace(settings.topic_prefix)
    mem1 = (await client.info("memory"))["used_memory"]
    now_ms = int(time.time() * 1000)
    active = len(await WindowStore(client, ns).active_agents(now_ms, settings.longest_window_s))
    delta = mem1 - mem0
    n_windows = len(settings.windows_s)
    return {
        "mem_delta_bytes": delta,
        "active_agents": active,
        "windows": n_windows,
        "bytes_per_agent_window": delta / (active * n_windows) if active else float("nan"),
        "kinds": await key_breakdown(client, ns),
    }


async def identity_check(
    b: Bench, settings: Settings, client: aioredis.Redis, procs: Sequence[Child]
) -> dict[str, Any]:
    """(6) Windows as the worker built them, then wipe, replay, and the same read at the same instant."""
    store = WindowStore(client, namespace(settings.topic_prefix))
    now_ms = int(time.time() * 1000)
    before = await store.read_windows(now_ms, settings.windows_s)
    for p in procs:
        p.stop()
    await client.flushall()
    rep = await replay_timed(b, settings, client)
    after = await store.read_windows(now_ms, settings.windows_s)
    by_agent = {a.agent_id: a for a in after}
    diffs: list[str] = []
    mismatched = 0
    for x in before:
        y = by_agent.pop(x.agent_id, None)
        if y == x:
            continue
        mismatched += 1
        if len(diffs) < 5:
            diffs.append(_describe_diff(x, y))
    for y in by_agent.values():
        mismatched += 1
        if len(diffs) < 5:
            diffs.append(f"{y.agent_id}: only after the replay")
    for d in diffs:
        say(f"  differs: {d}")
    return {
        "agents_compared": len(before),
        "identical": mismatched == 0,
        "mismatched": mismatched,
        "diffs": diffs,
        "replay": rep,
    }


def _describe_diff(x: Any, y: Any) -> str:
    if y is None:
        return f"{x.agent_id}: missing after the replay"
    parts = []
    for name in ("team", "state", "last_ts_ms"):
        if getattr(x, name) != getattr(y, name):
            parts.append(f"{name} {getattr(x, name)!r} -> {getattr(y, name)!r}")
    for ws, sums in x.sums.items():
        other = y.sums.get(ws, {})
        fields = {k: (v, other.get(k)) for k, v in sums.items() if other.get(k) != v}
        if fields:
            parts.append(f"{ws // 60}m {fields}")
    return f"{x.agent_id}: " + "; ".join(parts)


async def million(b: Bench, settings: Settings, client: aioredis.Redis) -> dict[str, Any]:
    """(6)/(7) + profile: a worker on N events (py-spy attached, RSS sampled), then a timed replay of all N."""
    s = b.sizes
    n = s.replay_events
    say(f"  pre-filling {n:,} events")
    fill = await prefill(settings, n, agents=s.agents, seed=23)
    say(f"  {fill['produced']:,} events in {fill['produce_s']:.0f} s")
    await fresh_redis(client, settings)
    ns = namespace(settings.topic_prefix)
    t_spawn = time.perf_counter()
    worker = b.worker(settings)
    rss: list[tuple[int, float]] = []

    async def profile_when_busy() -> profile.Profile:
        while distinct(await stats_counts(client, ns)) < min(n // 20, 20_000):
            await asyncio.sleep(0.05)
        say(f"  profiling the worker (pid {worker.pid}) for {s.profile_s:.0f} s")
        return await profile.record(worker.pid, s.profile_s, b.workdir / "worker-profile.txt")

    async def sample_rss() -> None:
        while True:
            rss.append((distinct(await stats_counts(client, ns)), worker.rss_bytes() / 2**20))
            await asyncio.sleep(2.0)

    prof_task = asyncio.create_task(profile_when_busy())
    rss_task = asyncio.create_task(sample_rss())
    finished = True
    try:
        try:
            prog = await wait_processed(client, ns, n, [worker], timeout_s=s.worker_cap_s)
        except TimeoutError:
            finished = False
        prof = await prof_task
    finally:
        for t in (prof_task, rss_task):
            t.cancel()
    counts = await stats_counts(client, ns)
    processed = distinct(counts)
    elapsed = time.perf_counter() - t_spawn
    rss.append((processed, worker.rss_bytes() / 2**20))
    cpu = worker.cpu_s()
    worker.stop()
    out: dict[str, Any] = {
        "events": n,
        "produce_s": fill["produce_s"],
        "worker_finished": finished,
        "worker_processed": processed,
        "worker_cap_s": s.worker_cap_s,
        "worker_counts": counts,
        "worker_rate": (n - prog.c_first) / (prog.t_done - prog.t_first) if finished else None,
        "worker_rate_with_startup": processed / elapsed,
        "worker_cpu_us_per_event": 1e6 * cpu / max(1, processed),
        "rss_mb": rss[-1][1],
        "rss_samples": rss,
        "profile": prof,
    }
    # The replay: an empty Redis rebuilt from all N records; its memory is what the worker would have built
    # (the identity check on the first topic shows replay and worker agree).
    await client.flushall()
    mem0 = (await client.info("memory"))["used_memory"]
    say("  replaying into an empty Redis")
    rep = await replay_timed(b, settings, client, profile_s=s.profile_s)
    out["replay"] = rep
    out["replay_1m_s"] = 1_000_000 / rep["rate"]
    say("  counting keys by kind")
    out["memory"] = await memory_figures(client, settings, mem0)
    return out


async def catch_up(b: Bench, settings: Settings, client: aioredis.Redis) -> dict[str, Any]:
    """(9) A worker started on a backlog: the last hour of a large floor, from an empty Redis, py-spy attached.

    The floor sends `catchup_rate` events/s over `catchup_s` seconds ending now (10,000 seats at 200 events/s
    for an hour: ~720k events); the clock runs from the worker's spawn to the last record applied.
    """
    s = b.sizes
    say(f"  pre-filling {s.catchup_seats:,} seats x {span(s.catchup_s)} at {s.catchup_rate:g} events/s")
    await ensure_topics(settings, partitions=4)
    events = generate(
        agents=s.catchup_seats, rate=s.catchup_rate, duration_s=s.catchup_s, seed=31, start_s=time.time() - s.catchup_s
    )
    t0 = time.perf_counter()
    n = await produce(settings, events, realtime=False)
    produce_s = time.perf_counter() - t0
    say(f"  {n:,} events in {produce_s:.0f} s")
    await fresh_redis(client, settings)
    ns = namespace(settings.topic_prefix)
    redis_cpu0 = b.cpu(b.redis)
    t_spawn = time.perf_counter()
    worker = b.worker(settings)

    async def profile_when_busy() -> profile.Profile:
        while distinct(await stats_counts(client, ns)) < min(n // 20, 20_000):
            await asyncio.sleep(0.05)
        say(f"  profiling the worker (pid {worker.pid}) for {s.profile_s:.0f} s")
        return await profile.record(worker.pid, s.profile_s, b.workdir / "catchup-profile.txt")

    prof_task = asyncio.create_task(profile_when_busy())
    try:
        prog = await wait_processed(client, ns, n, [worker], timeout_s=max(600.0, n / 1000), partial=True)
        prof = await prof_task
    finally:
        if not prof_task.done():
            prof_task.cancel()
    cpu = worker.cpu_s()
    metrics = await worker_metrics(worker)
    worker.stop()
    return {
        "seats": s.catchup_seats,
        "history_s": s.catchup_s,
        "events": n,
        "produce_s": produce_s,
        "counts": prog.counts,
        "startup_s": prog.t_first - t_spawn,
        "processed": prog.done,
        "seconds": prog.t_done - t_spawn,
        "rate": prog.rate(),
        "worker_cpu_us_per_event": 1e6 * cpu / n,
        "redis_cpu_us_per_event": 1e6 * (b.cpu(b.redis) - redis_cpu0) / n,
        "batch": batch_figures(metrics),
        "profile": prof,
    }
