"""Scale-out stays exact: four workers share eight partitions, and one of them dies mid-run without a restart.

The survivors take over the dead worker's partitions from its last committed offsets; its records applied but
not committed are read again and must count nothing twice. The counters equal the ledger and the 15m/1h/8h
snapshots equal the brute-force recomputation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any

import pytest

from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from tests.faults import harness as h
from tests.helpers import async_wait_for, result_counts

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 8
WORKERS = 4


@pytest.mark.fault_row(20)
async def test_four_workers_on_eight_partitions_one_killed_mid_run(settings: Settings, stack: Any, row: Any) -> None:
    rng = random.Random(20)
    ledger = h.Ledger(settings.topic_prefix)
    now = time.time()
    trace = h.small_trace(now, seed=2001, agents=16, calls_per_agent=20)
    msgs = h.with_copies(h.messages(h.shuffled(trace, seed=2)), share=0.05, seed=3)
    msgs = [dataclasses.replace(m, partition=rng.randrange(PARTITIONS)) for m in msgs]  # spread over all eight
    await ensure_topics(settings, partitions=PARTITIONS)
    stack.monitor(settings)
    tuned = settings.replace(batch_max=20)  # small batches: the kill lands between an apply and its commit
    workers = [stack.worker(tuned) for _ in range(WORKERS)]
    # All four in the group, each holding partitions, before any record: the kill hits a worker with work.
    for w in workers:
        await async_wait_for(lambda w=w: _assigned(w), timeout_s=90, message=f"{w.name} holding partitions")
    victim = rng.choice(workers)
    target = rng.randint(len(msgs) // 5, len(msgs) * 3 // 5)
    async with h.Producer(settings, ledger, seed=4) as producer:
        # Sent over several seconds, so the kill lands while records are still arriving.
        sending = asyncio.create_task(producer.trickle(msgs, per_s=len(msgs) / 8))
        await h.wait_counts(settings, lambda c: sum(c.values()) >= target, timeout_s=60, interval_s=0.005)
        victim.kill()
        at_kill = await result_counts(settings)
        await sending
    watch = h.Stopwatch()
    await h.wait_settled(settings, ledger, timeout_s=90)
    for w in workers:
        assert w is victim or w.alive(), w.log_tail()
    counts = await h.assert_exact(settings, ledger)
    row.figure("events", len(ledger.valid))
    row.figure("killed_at", f"{sum(at_kill.values())}/{len(msgs)} records accounted for")
    row.figure("settle_after_kill_s", watch())
    row.figure("duplicates_vs_copies", f"{counts['duplicate']}/{ledger.copies}")
    assert not ledger.counts_done(at_kill), "the kill landed after every record was processed"


async def _assigned(proc: Any) -> bool:
    # The worker exports a lag series per partition it holds: none before its group assignment.
    return await h.worker_metric(proc, "callpulse_consumer_lag") is not None
