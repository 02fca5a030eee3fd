"""The floor-size sweep: the same event mix on floors of 100, 1,000 and 10,000 agents, one worker each.

The worker's cost per event must not grow with the floor (issue 11): the sweep and the alert checks touch only
agents whose values can have changed. Each size gets its own topics, pre-filled from the simulator with the
same seed and count, and a fresh Redis; the figure is events/s first to last record, and the ratio of the
largest floor's rate to the smallest's.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from bench.phases import callpulse_run
from bench.rig import Bench, distinct, prefill, say, stats_counts
from streams.store import namespace

FLOOR_SIZES: tuple[int, ...] = (100, 1_000, 10_000)
CAP_S = 150.0  # a floor size that has not finished by then is reported with what it did


async def floor_sweep(b: Bench, client: aioredis.Redis, n: int, sizes: tuple[int, ...] = FLOOR_SIZES) -> dict[str, Any]:
    """Events/s of one worker on each floor size, and the ratio of the largest floor's rate to the smallest's."""
    runs: dict[int, dict[str, Any]] = {}
    for agents in sizes:
        settings = b.settings(f"fl{agents}")
        fill = await prefill(settings, n, agents=agents, seed=11)
        say(f"  {agents:,} agents: {fill['produced']:,} events pre-filled")
        try:
            run = await callpulse_run(
                b, settings, client, fill["produced"], workers=1, label=f"{agents} agents", timeout_s=CAP_S
            )
            run["finished"] = True
        except TimeoutError:
            done = distinct(await stats_counts(client, namespace(settings.topic_prefix)))
            run = {"label": f"{agents} agents", "events": done, "rate": done / CAP_S, "finished": False}
            say(f"  {agents:,} agents: only {done:,} of {fill['produced']:,} events in {CAP_S:.0f} s")
        runs[agents] = run
        say(f"  {agents:,} agents: {run['rate']:,.0f} events/s")
    small, large = runs[min(sizes)]["rate"], runs[max(sizes)]["rate"]
    return {"events": n, "runs": runs, "ratio": large / small if small else float("nan")}
