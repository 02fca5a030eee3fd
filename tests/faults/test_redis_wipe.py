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

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _trace(seed: int) -> list[h.Msg]:
    now = time.time()
    events = h.small_trace(now, seed=seed, agents=13, calls_per_agent=14, tickets=80, customers=50)
    return h.with_copies(h.messages(h.shuffled(events, seed=seed + 1)), share=0.06, seed=seed + 2)


async def _exact_within(settings: Settings, ledger: h.Ledger, timeout_s: float) -> float:
    watch = h.Stopwatch()
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
        raise AssertionError(f"not exact after {timeout_s} s: {last[0] if last else '?'}") from None
    return watch()


async def _wipe(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any, *, seed: int, second_after_s: float | None
) -> dict[str, Any]:
    rng = random.Random(seed)
    ledger = h.Ledger(settings.topic_prefix)
    msgs = _trace(seed)
    cut = rng.randrange(len(msgs) // 3, len(msgs) * 2 // 3)
    first, second = msgs[:cut], msgs[cut:]
    await ensure_topics(settings)
    stack.monitor(settings)
    stack.worker(settings)
    async with h.Producer(settings, ledger, seed=seed + 3) as producer:
        await producer.send(first)
        await h.wait_settled(settings, ledger, timeout_s=60)
        redis_server.kill()
        await asyncio.sleep(rng.uniform(0.5, 3.0))  # the outage: how long Redis stays away (seeded)
        redis_server.start()
        back = h.Stopwatch()
        if second_after_s is not None:
            await asyncio.sleep(second_after_s)
            await producer.send(second)
    exact_s = await _exact_within(settings, ledger, timeout_s=60)
    return {"events": len(ledger.valid), "exact_after_s": round(back(), 1), "checked_in_s": exact_s}


@pytest.mark.parametrize("seed", [11, 12])
async def test_events_arriving_during_the_rebuild_are_exact(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any, seed: int
) -> None:
    await _wipe(settings, redis_server, stack, seed=seed, second_after_s=random.Random(seed).uniform(0, 0.5))


async def test_events_arriving_after_the_rebuild_are_exact(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any
) -> None:
    await _wipe(settings, redis_server, stack, seed=21, second_after_s=8)


async def test_redis_back_empty_is_rebuilt_without_new_events(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any
) -> None:
    await _wipe(settings, redis_server, stack, seed=31, second_after_s=None)
