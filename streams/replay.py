"""Rebuild every window from the earliest retained offsets, with a plain consumer and the same core.

Used by `callpulse replay`, and by the worker when it finds Redis empty (restarted without its
data). A raw aiokafka consumer reads far faster than a Faust agent, and the processor (dedupe
included) makes the result identical to what the agents would have built.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from callpulse.settings import Settings
from streams.processor import Processor, Record
from streams.store import WindowStore, namespace

log = logging.getLogger("callpulse.replay")


async def _no_deadletter(dead: Sequence[tuple[Record, str]]) -> None:
    """Replayed invalid records were dead-lettered when first seen; don't send them again."""


async def replay_into(settings: Settings, processor: Processor, *, batch_max: int = 5000, idle_s: float = 1.0) -> int:
    """Read calls and tickets from the earliest offsets to their current end through `processor`; return count."""
    bases = {settings.topic("calls"): "calls", settings.topic("tickets"): "tickets"}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=batch_max,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    count = 0
    started = time.perf_counter()
    try:
        parts = []
        for topic in bases:
            for p in sorted(consumer.partitions_for_topic(topic) or ()):
                parts.append(TopicPartition(topic, p))
        if not parts:
            return 0
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while True:
            got = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=batch_max)
            if not got:
                positions = {tp: await consumer.position(tp) for tp in parts}
                if all(positions[tp] >= ends[tp] for tp in parts):
                    break
                continue
            by_base: dict[str, list[Record]] = {}
            for tp, messages in got.items():
                base = bases[tp.topic]
                by_base.setdefault(base, []).extend(
                    Record(base, tp.partition, m.offset, m.key, m.value) for m in messages
                )
            for records in by_base.values():
                await processor.process(records)
                count += len(records)
    finally:
        await consumer.stop()
    log.info("replayed %d records in %.1f s", count, time.perf_counter() - started)
    return count


async def replay(settings: Settings) -> int:
    """The `callpulse replay` command: rebuild all windows in Redis from Kafka."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        store = WindowStore(client, namespace(settings.topic_prefix))
        processor = Processor(settings, store, _no_deadletter)
        processor.check_epoch = False
        count = await replay_into(settings, processor)
        await store.mark_initialised()
        return count
    finally:
        await client.aclose()


async def rebuild_if_empty(settings: Settings, store: WindowStore) -> bool:
    """If the store has lost its data (no epoch marker), replay Kafka into it once; True when it did."""
    if await store.initialised():
        return False
    lock = f"{store.ns}replay-lock"
    if await store.client.set(lock, "1", nx=True, ex=600):
        try:
            log.warning("Redis holds no callpulse data: rebuilding every window from the earliest Kafka offsets")
            processor = Processor(settings, store, _no_deadletter)
            processor.check_epoch = False
            n = await replay_into(settings, processor)
            await store.mark_initialised()
            log.warning("rebuilt windows from %d records", n)
            return True
        finally:
            await store.client.delete(lock)
    while not await store.initialised():  # another worker is replaying
        await asyncio.sleep(0.2)
    return False
