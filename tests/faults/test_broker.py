"""The broker goes away and comes back, on Apache Kafka with its log dir kept.

Row 4: a graceful restart mid-stream. Topics, records and the group's committed offsets survive it; the worker
reconnects by itself and resumes from its committed offsets, so nothing is re-produced and nothing re-read.
Row 21: the broker is down for 30 s while `callpulse simulate` keeps producing; the simulator's idempotent
producer retries until the broker is back, so every event reaches Kafka exactly once and the worker counts it once.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from callpulse.kafka import ensure_topics
from callpulse.localkafka import LocalKafka
from callpulse.processes import Proc, env_for
from callpulse.settings import Settings
from tests.faults import harness as h
from tests.helpers import async_wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_S = 30.0


async def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """(base topic, partition) -> the broker's end offset (ListOffsets latest) of calls and tickets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False, request_timeout_ms=10000)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic(base), p) for base in h.BASES for p in range(h.PARTITIONS)]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return {(tp.topic.removeprefix(settings.topic_prefix), tp.partition): off for tp, off in ends.items() if off}


async def read_all(settings: Settings) -> list[Any]:
    """Every record of calls and tickets, from the earliest offset to the end offsets (ListOffsets is exact here)."""
    ends = await end_offsets(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic(base), p) for (base, p) in ends]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[_base_of(tp, settings)]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def _base_of(tp: TopicPartition, settings: Settings) -> tuple[str, int]:
    return tp.topic.removeprefix(settings.topic_prefix), tp.partition


@pytest.mark.fault_row(4)
async def test_broker_restart_keeps_offsets_and_the_worker_resumes(
    settings: Settings, private_broker: LocalKafka, stack: Any, row: Any
) -> None:
    settings = settings.replace(kafka=private_broker.bootstrap)
    ledger = h.Ledger(settings.topic_prefix)
    rng = random.Random(4)
    msgs = h.messages(h.shuffled(h.small_trace(time.time(), seed=401), seed=2))
    split = rng.randint(len(msgs) // 4, 3 * len(msgs) // 4)  # where the restart hits, seeded
    await ensure_topics(settings)
    stack.monitor(settings)
    worker = stack.worker(settings)
    async with h.Producer(settings, ledger, seed=5) as producer:
        await producer.send(msgs[:split])
    await h.wait_settled(settings, ledger, timeout_s=90)
    async with h.OffsetWatch(settings, ledger) as watch:
        await async_wait_for(
            lambda: watch.current == watch.ends(), timeout_s=30, interval_s=0.2, message="the worker to commit"
        )
        committed_before = dict(watch.current)

    await asyncio.to_thread(private_broker.restart)
    restarted = time.monotonic()
    assert await end_offsets(settings) == watch.ends(), "the broker lost records across the restart"
    async with h.OffsetWatch(settings, ledger) as watch:
        # The restarted coordinator loads the offsets topic first; until then OffsetFetch answers for fewer partitions.
        await async_wait_for(
            lambda: _same_offsets(watch, committed_before),
            timeout_s=60,
            interval_s=0.2,
            message="the group's committed offsets from before the restart",
        )
        async with h.Producer(settings, ledger, seed=6) as producer:
            await producer.send(msgs[split:])
        await h.wait_settled(settings, ledger, timeout_s=90)
        recover_s = time.monotonic() - restarted
        await async_wait_for(
            lambda: watch.current == watch.ends(), timeout_s=30, interval_s=0.2, message="the worker to commit again"
        )
    assert not watch.regressions, watch.regressions
    assert worker.alive(), f"the worker died with the broker:\n{worker.log_tail()}"
    # Resumed from the committed offsets: this one worker process consumed every record exactly once.
    consumed = await h.worker_metric(worker, "callpulse_worker_events_total")
    assert consumed == len(msgs), f"the worker consumed {consumed} records for {len(msgs)} produced"
    await h.assert_exact(settings, ledger, duplicates=0)
    row.figure("events", len(ledger.valid))
    row.figure("restart_at", f"{split}/{len(msgs)}")
    row.figure("recover_s", round(recover_s, 1))
    row.figure("consumed", f"{consumed:.0f}/{len(msgs)}")


@pytest.mark.fault_row(21)
async def test_broker_down_30s_while_the_simulator_produces(
    settings: Settings, private_broker: LocalKafka, stack: Any, row: Any, tmp_path: Any
) -> None:
    settings = settings.replace(kafka=private_broker.bootstrap)
    rng = random.Random(15)
    down_after_s = rng.uniform(4.0, 10.0)  # when the outage starts, seeded
    duration_s = down_after_s + OUTAGE_S + 10.0
    await ensure_topics(settings)
    stack.monitor(settings)
    worker = stack.worker(settings)
    argv = ["simulate", "--agents", "8", "--rate", "25", "--duration", f"{duration_s:.0f}", "--seed", "15"]
    simulator = Proc("simulate", argv, env_for(settings), tmp_path / "simulate.log").start()
    stack.procs.append(simulator)
    await async_wait_for(lambda: _has_records(settings), timeout_s=30, message="the simulator's first events")
    await asyncio.sleep(down_after_s)  # the fault's seeded moment, not a wait for a condition
    private_broker.kill()  # a crash: the log dir stays, recovered at the next start
    await asyncio.sleep(OUTAGE_S)  # the outage itself
    assert simulator.alive(), f"the simulator gave up while the broker was down:\n{simulator.log_tail()}"
    await asyncio.to_thread(private_broker.start)
    back = time.monotonic()
    code = await asyncio.to_thread(simulator.popen.wait, 120)  # type: ignore[union-attr]
    assert code == 0, f"the simulator failed:\n{simulator.log_tail()}"
    sent = int(re.findall(r"sent (\d+) events", simulator.log_tail())[-1])

    records = await read_all(settings)
    ledger = h.Ledger(settings.topic_prefix)
    numbers: list[int] = []
    for record in records:
        event = orjson.loads(record.value)
        n = int(event["event_id"].rsplit("-", 1)[1])  # the simulator numbers its events 1, 2, 3...
        numbers.append(n)
        event["seq"] = n
        base = record.topic.removeprefix(settings.topic_prefix)
        ledger.record(h.Msg(base, record.value, event), record.partition, record.offset)
    assert sorted(numbers) == list(range(1, sent + 1)), "Kafka does not hold each simulated event exactly once"
    counts = await h.wait_settled(settings, ledger, timeout_s=90)
    caught_up_s = time.monotonic() - back
    assert worker.alive(), f"the worker died with the broker:\n{worker.log_tail()}"
    await h.assert_exact(settings, ledger)
    row.figure("events", sent)
    row.figure("down_at_s", round(down_after_s, 1))
    row.figure("caught_up_s", round(caught_up_s, 1))
    row.figure("duplicates", counts["duplicate"])


async def _same_offsets(watch: h.OffsetWatch, before: dict[tuple[str, int], int]) -> bool:
    """Poll the committed offsets: none may differ from `before`, and once all are back they equal it."""
    now = await watch.poll()
    changed = {tp: (before.get(tp), off) for tp, off in now.items() if before.get(tp) != off}
    assert not changed, f"committed offsets changed across the restart (before, after): {changed}"
    return now == before


async def _has_records(settings: Settings) -> bool:
    return sum((await end_offsets(settings)).values()) > 0
