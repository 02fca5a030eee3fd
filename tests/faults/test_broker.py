"""The broker goes away mid-stream and comes back: the worker must reconnect by itself.

The embedded Tansu keeps nothing across a restart (memory storage): topics, records and the group's offsets are
gone. The test plays the part of a durable broker plus producers with retries: it re-creates the topics and
re-sends its own record of what was produced, to the same partitions in the same order, then the rest.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from callpulse.embedded import EmbeddedBroker
from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from tests.faults import harness as h
from tests.helpers import async_wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.mark.fault_row(4)
async def test_broker_restart_mid_stream_worker_reconnects(
    settings: Settings, private_broker: EmbeddedBroker, stack: Any, row: Any
) -> None:
    settings = settings.replace(kafka=private_broker.bootstrap)
    ledger = h.Ledger(settings.topic_prefix)
    rng = random.Random(4)
    now = time.time()
    # partitions fixed up front, so re-sending the first half rebuilds the same log a durable broker would hold
    msgs = [
        h.Msg(m.topic, m.value, m.event, rng.randrange(h.PARTITIONS))
        for m in h.messages(h.shuffled(h.small_trace(now, seed=401), seed=2))
    ]
    first, second = msgs[: len(msgs) // 2], msgs[len(msgs) // 2 :]
    await ensure_topics(settings)
    stack.monitor(settings)
    worker = stack.worker(settings)
    async with h.Producer(settings, ledger, seed=5) as producer:
        await producer.send(first)
    await h.wait_settled(settings, ledger, timeout_s=60)
    async with h.OffsetWatch(settings, ledger) as watch:
        await async_wait_for(
            lambda: watch.current == watch.ends(),
            timeout_s=20,
            interval_s=0.2,
            message="the worker to commit the first half",
        )

    private_broker.restart()
    restarted = time.monotonic()
    await ensure_topics(settings)
    async with h.Producer(settings, ledger, seed=6) as producer:
        await producer.send(first, record=False)  # what the broker lost
        await producer.send(second)
    counts = await h.wait_settled(settings, ledger, timeout_s=60)
    recover_s = time.monotonic() - restarted
    assert worker.alive(), f"the worker died with the broker:\n{worker.log_tail()}"
    assert worker.popen is not None and worker.popen.returncode is None
    await h.assert_exact(settings, ledger)
    row.figure("events", len(ledger.valid))
    row.figure("recover_s", round(recover_s, 1))
    row.figure("duplicates_vs_copies", f"{counts['duplicate']}/{ledger.copies}")
    assert recover_s < 60, f"the worker needed {recover_s:.0f} s to reconnect"
