"""Redis loses its data while the worker runs: the windows rebuilt from Kafka must be exact again.

Three variants of when new events arrive relative to Redis coming back empty (issue: rebuilt windows wrong):
(a) at once, while the worker finds Redis empty and rebuilds; (b) well after the rebuild; (c) never: the
rebuild must start by itself, not wait for the next record.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from callpulse.embedded import EmbeddedRedis
from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from tests.faults import harness as h
from tests.helpers import async_wait_for
from tests.integration import tracegen

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _trace(seed: int) -> list[h.Msg]:
    """About 470 events of 13 agents in 3 teams over the last hour, 6 % redelivered copies, 10 malformed."""
    now = time.time()
    events = h.small_trace(now, seed=seed, agents=13, calls_per_agent=14, tickets=80, customers=50)
    msgs = h.with_copies(h.messages(h.shuffled(events, seed=seed + 1)), share=0.06, seed=seed + 2)
    junk = h.invalid(tracegen.invalid_messages(now, tag=f"bad{seed}"))[:10]
    return h.interleave(msgs, junk, seed=seed + 4)


async def _exact_within(settings: Settings, ledger: h.Ledger, timeout_s: float) -> None:
    last: list[str] = []

    async def exact() -> bool:
        try:
            await h.assert_exact(settings, ledger)
        except AssertionError as exc:
            last[:] = [str(exc)]
            return False
        except OSError:
            return False
        return True

    try:
        await async_wait_for(exact, timeout_s=timeout_s, interval_s=0.5, message="exact KPIs")
    except AssertionError:
        raise AssertionError(f"not exact {timeout_s} s after Redis came back: {last[0] if last else '?'}") from None


async def _wipe(settings: Settings, redis_server: EmbeddedRedis, stack: Any, row: Any, *, seed: int, then: str) -> None:
    """Produce a first part, wipe Redis (SIGKILL, restart empty after a seeded outage), then the rest per `then`.

    `then`: "during" sends part of the rest while Redis is down and the remainder as it comes back (the worker
    finds Redis empty and rebuilds meanwhile); "after" sends it 10-15 s after; "nothing" sends nothing more.
    """
    rng = random.Random(seed)
    ledger = h.Ledger(settings.topic_prefix)
    msgs = _trace(seed)
    cut = rng.randrange(len(msgs) // 3, len(msgs) * 2 // 3)
    first, second = msgs[:cut], msgs[cut:]
    await ensure_topics(settings)
    stack.monitor(settings)
    worker = stack.worker(settings)
    async with h.Producer(settings, ledger, seed=seed + 5) as producer:
        await producer.send(first)
        await h.wait_settled(settings, ledger, timeout_s=60)
        outage_s = rng.uniform(1.0, 4.0)
        redis_server.kill()
        if then == "during":
            during = rng.randrange(len(second) + 1)
            await producer.send(second[:during])  # the worker has batches in flight while Redis is away
            second = second[during:]
        await asyncio.sleep(outage_s)
        redis_server.start()  # same port, empty
        back = h.Stopwatch()
        if then == "after":
            await asyncio.sleep(rng.uniform(10, 15))
            back = h.Stopwatch()  # from the first new event
        if then != "nothing":
            await producer.send(second)
        await _exact_within(settings, ledger, timeout_s=60)
        exact_after_s = back()
    assert worker.alive(), worker.log_tail()
    row.figure("events", len(ledger.valid))
    row.figure("outage_s", round(outage_s, 1))
    row.figure("exact_after_s" if then != "after" else "exact_after_next_events_s", exact_after_s)


@pytest.mark.fault_row(15)
async def test_redis_wiped_with_events_arriving_during_the_rebuild_is_exact_again(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any, row: Any
) -> None:
    await _wipe(settings, redis_server, stack, row, seed=1501, then="during")


@pytest.mark.fault_row(16)
async def test_redis_wiped_with_events_arriving_after_the_rebuild_is_exact_again(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any, row: Any
) -> None:
    await _wipe(settings, redis_server, stack, row, seed=1601, then="after")


@pytest.mark.fault_row(17)
async def test_redis_wiped_with_no_further_events_is_rebuilt_by_itself(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any, row: Any
) -> None:
    await _wipe(settings, redis_server, stack, row, seed=1701, then="nothing")
