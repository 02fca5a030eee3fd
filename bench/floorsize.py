"""The floor-size sweep: the same event mix on floors of 100, 1,000 and 10,000 agents, one worker each.

The worker's cost per event must not grow with the floor (issue 11): the sweep and the alert checks touch only
agents whose values can have changed. Each size gets its own topics, pre-filled from the simulator with the
same seed and count, and a fresh Redis. Two figures per size: events/s from the first applied record to the
last (or to the cap, when a size does not finish), and the CPU the worker and Redis spent per event, which a
busy machine disturbs less than a rate. The ratios compare the largest floor with the smallest.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from bench.rig import Bench, distinct, fresh_redis, prefill, say, stats_counts
from callpulse.settings import Settings
from streams.store import namespace

FLOOR_SIZES: tuple[int, ...] = (100, 1_000, 10_000)
CAP_S = 150.0  # a size that has not finished by then is measured on what it did


async def floor_run(b: Bench, settings: Settings, client: aioredis.Redis, n: int) -> dict[str, Any]:
    """One worker on a pre-filled topic until `n` records are applied or CAP_S passed."""
    await fresh_redis(client, settings)
    ns = namespace(settings.topic_prefix)
    redis_cpu0 = b.cpu(b.redis)
    worker = b.worker(settings)
    t_spawn = time.perf_counter()
    t_first: float | None = None
    c_first = cpu_first = redis_first = 0.0
    done = 0
    try:
        while True:
            done = distinct(await stats_counts(client, ns))
            now = time.perf_counter()
            if t_first is None and done > 0:
                t_first, c_first, cpu_first, redis_first = now, done, worker.cpu_s(), b.cpu(b.redis)
            if done >= n or now - t_spawn > CAP_S:
                break
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited while processing:\n{worker.log_tail()}")
            await asyncio.sleep(0.05)
        cpu, redis_cpu = worker.cpu_s(), b.cpu(b.redis)
    finally:
        worker.stop()
    if t_first is None or done <= c_first:
        return {"events": done, "finished": False, "rate": 0.0, "worker_us": None, "redis_us": None}
    timed = done - c_first
    return {
        "events": done,
        "finished": done >= n,
        "rate": timed / (now - t_first),
        "worker_us": 1e6 * (cpu - cpu_first) / timed,
        "redis_us": 1e6 * (redis_cpu - redis_first) / timed,
        "redis_us_all": 1e6 * (redis_cpu - redis_cpu0) / max(1, done),
    }


async def floor_sweep(b: Bench, client: aioredis.Redis, n: int, sizes: tuple[int, ...] = FLOOR_SIZES) -> dict[str, Any]:
    """Events/s and CPU per event of one worker on each floor size, and the largest floor's against the smallest."""
    runs: dict[int, dict[str, Any]] = {}
    for agents in sizes:
        settings = b.settings(f"fl{agents}")
        fill = await prefill(settings, n, agents=agents, seed=11)
        run = await floor_run(b, settings, client, fill["produced"])
        runs[agents] = run
        cost = "n/a"
        if run["worker_us"] is not None:
            cost = f"{run['worker_us']:.0f} µs worker + {run['redis_us']:.0f} µs Redis"
        left = "" if run["finished"] else f" (cap reached at {run['events']:,} of {fill['produced']:,})"
        say(f"  {agents:,} agents: {run['rate']:,.0f} events/s, {cost} per event{left}")
    small, large = runs[min(sizes)], runs[max(sizes)]
    rate_ratio = large["rate"] / small["rate"] if small["rate"] else float("nan")
    cost_ratio = float("nan")
    if small["worker_us"] and large["worker_us"]:
        cost_ratio = (small["worker_us"] + small["redis_us"]) / (large["worker_us"] + large["redis_us"])
    return {"events": n, "runs": runs, "ratio": rate_ratio, "cost_ratio": cost_ratio}


# --- the report --------------------------------------------------------------------------------------------------

TARGET_RATIO = 0.90


def summary_row(results: dict[str, Any]) -> tuple[str, str, str, str, str] | None:
    """Row 9 of the summary table: the ratios of this run."""
    fl = results.get("floor")
    if not fl:
        return None
    fig = (
        f"{max(fl['runs']):,} vs {min(fl['runs']):,} agents: {fl['ratio']:.2f}x the events/s, "
        f"{fl['cost_ratio']:.2f}x the events per CPU-second"
    )
    ok = fl["ratio"] >= TARGET_RATIO
    return ("10", "floor-size sweep, one worker", fig, "≥ 0.90x events/s", "**met**" if ok else "**not met**")


def _table(fl: dict[str, Any]) -> list[str]:
    out = [
        "  | agents | events/s | worker CPU per event | Redis CPU per event | finished |",
        "  |---|---|---|---|---|",
    ]
    for agents, r in sorted(fl["runs"].items()):
        worker = "n/a" if r["worker_us"] is None else f"{r['worker_us']:.0f} µs"
        redis = "n/a" if r["redis_us"] is None else f"{r['redis_us']:.0f} µs"
        done = "yes" if r["finished"] else f"no: {r['events']:,} of {fl['events']:,} in {CAP_S:.0f} s"
        out.append(f"  | {agents:,} | {r['rate']:,.0f} | {worker} | {redis} | {done} |")
    out.append(
        f"  | **{max(fl['runs']):,} vs {min(fl['runs']):,}** | **{fl['ratio']:.2f}x** | "
        f"**{fl['cost_ratio']:.2f}x events per CPU-second (worker + Redis)** | | |"
    )
    return out


def section(results: dict[str, Any]) -> list[str]:
    """The floor-size section of BENCHMARKS.md: this run, and the run on the code before, when given."""
    fl = results.get("floor")
    if not fl:
        return []
    lines = ["## Floor-size sweep (10)", ""]
    lines.append(
        f"The same simulator mix (`generate(agents=N, seed=11)`, {fl['events']:,} events of a two-hour history) on "
        f"floors of {', '.join(f'{n:,}' for n in sorted(fl['runs']))} agents, one worker and a fresh Redis each, in "
        "one run: events/s from the first applied record to the last, and the CPU the worker and Redis spent per "
        "event. The goal: events/s at 10,000 agents ≥ 90 % of those at 100 (issue 11). Compare the ratios, "
        "measured in one run, rather than the rates across runs: the machine is shared."
    )
    lines.append("")
    before = results.get("floor_before")
    if before:
        lines += [f"- **Before** ({before.get('label', 'the code before the incremental sweep')}):", ""]
        lines += _table(before)
        lines += ["", "- **After** (this code):", ""]
    lines += _table(fl)
    lines.append("")
    return lines
