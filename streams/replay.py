"""Rebuild every window from the earliest retained offsets, with a plain consumer and the same core.

Used by `callpulse replay`, and by the worker when it finds Redis empty (restarted without its
data). A raw aiokafka consumer reads far faster than a Faust agent, and the processor (dedupe
included) makes the result identical to what the agents would have built.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from callpulse.cancelling import reraise_if_cancelling
from callpulse.connections import check_kafka, kafka_options, redis_options
from callpulse.kafka import partitions_of
from callpulse.settings import Settings
from streams.processor import Processor, Record
from streams.store import WindowStore, namespace

log = logging.getLogger("callpulse.replay")


async def _no_deadletter(dead: Sequence[tuple[Record, str]]) -> None:
    """Replayed invalid records were dead-lettered when first seen; don't send them again."""


def raw_consumer(settings: Settings, *, max_poll_records: int = 5000) -> AIOKafkaConsumer:
    """A group-less consumer for reading whole topics fast from the earliest offsets (assign, then getmany)."""
    return AIOKafkaConsumer(
        **kafka_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=max_poll_records,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )


async def replay_into(
    settings: Settings,
    processor: Processor,
    *,
    batch_max: int = 5000,
    idle_s: float = 1.0,
    floor: Mapping[TopicPartition, int] | None = None,
) -> int:
    """Read calls and tickets from the earliest offsets to their end through `processor`; return the count.

    The end is each partition's high watermark as the last fetch reported it, and never before `floor`
    (offsets that must be read, e.g. the group's committed ones) nor the end offset listed at the start
    (see `_caught_up`).
    """
    bases = {settings.topic("calls"): "calls", settings.topic("tickets"): "tickets"}
    consumer = raw_consumer(settings, max_poll_records=batch_max)
    await consumer.start()
    count = 0
    started = time.perf_counter()
    try:
        parts = await partitions_of(consumer, bases)
        if not parts:
            return 0
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        while True:
            got = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=batch_max)
            by_base: dict[str, list[Record]] = {}
            for tp, messages in got.items():
                base = bases[tp.topic]
                by_base.setdefault(base, []).extend(
                    Record(base, tp.partition, m.offset, m.key, m.value) for m in messages
                )
            for records in by_base.values():
                await processor.process(records)
                count += len(records)
            if await _caught_up(consumer, parts, ends, floor or {}, idle=not got):
                break
    finally:
        await consumer.stop()
    log.info("replayed %d records in %.1f s", count, time.perf_counter() - started)
    return count


async def _caught_up(
    consumer: AIOKafkaConsumer,
    parts: Sequence[TopicPartition],
    ends: Mapping[TopicPartition, int],
    floor: Mapping[TopicPartition, int],
    *,
    idle: bool,
) -> bool:
    """Every partition read up to its high watermark from the last fetch, and at least to the end offset listed
    when the replay started and to `floor`.

    Where no fetch answered yet for a partition, only an empty poll lets the listed end stand in (some brokers,
    Tansu, under-report it). Checked after every poll, so a steady trickle of new events cannot keep a rebuild
    going forever.
    """
    for tp in parts:
        high = consumer.highwater(tp)
        if high is None:
            if not idle:
                return False
            high = ends[tp]
        need = max(high, ends[tp])
        if not idle:  # an empty poll is the end whatever the floor says (a topic re-created shorter, say)
            need = max(need, floor.get(tp, 0))
        if await consumer.position(tp) < need:
            return False
    return True


async def replay(settings: Settings) -> int:
    """The `callpulse replay` command: rebuild all windows in Redis from Kafka."""
    await check_kafka(settings)
    client = aioredis.Redis.from_url(settings.redis_url, **redis_options(settings))
    try:
        store = WindowStore(client, namespace(settings.topic_prefix))
        processor = Processor(settings, store, _no_deadletter)
        processor.check_epoch = False
        count = await replay_into(settings, processor)
        await store.mark_initialised()
        return count
    finally:
        await client.aclose()


REPLAY_LOCK_TTL_S = 10


async def _keep_lock(client: aioredis.Redis, lock: str, token: str) -> None:
    """Extend our replay lock while the replay runs, so it lapses soon after a crash (kill -9) instead of in minutes."""
    while True:
        await asyncio.sleep(REPLAY_LOCK_TTL_S / 3)
        try:
            await client.set(lock, token, xx=True, ex=REPLAY_LOCK_TTL_S)
        except Exception as exc:  # Redis trouble: the replay itself will retry; the lock may lapse meanwhile
            reraise_if_cancelling()
            log.warning("could not extend the replay lock: %s", exc)


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The worker group's committed offsets on calls and tickets (empty for a group that never committed)."""
    group = f"{settings.topic_prefix}{settings.consumer_group}"
    # A consumer that never subscribes only fetches the group's offsets; it joins nothing.
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out: dict[TopicPartition, int] = {}
        for tp in await partitions_of(consumer, [settings.topic("calls"), settings.topic("tickets")]):
            offset = await consumer.committed(tp)
            if offset is not None and offset >= 0:
                out[tp] = offset
        return out
    finally:
        await consumer.stop()


async def rebuild_if_empty(settings: Settings, store: WindowStore, *, clock: Callable[[], float] = time.time) -> bool:
    """If the store has lost its data (no epoch marker), replay Kafka into it; True when this call did.

    One worker replays under a lock it keeps extending; the others wait, and take over when the lock lapses
    because its holder died mid-replay (the replay is idempotent, so starting over is safe). If Redis loses its
    data again during the replay (the lock goes with it), the replay starts over instead of opening a
    generation over half the windows.
    """
    lock = store.replay_lock_key
    while True:
        if await store.initialised():
            return False
        token = uuid.uuid4().hex
        if not await store.client.set(lock, token, nx=True, ex=REPLAY_LOCK_TTL_S):
            await asyncio.sleep(0.2)  # another worker is replaying
            continue
        keeper = asyncio.create_task(_keep_lock(store.client, lock, token))
        try:
            log.warning("Redis holds no callpulse data: rebuilding every window from the earliest Kafka offsets")
            started = time.perf_counter()
            processor = Processor(settings, store, _no_deadletter, clock=clock)
            processor.check_epoch = False
            # Read at least to the group's committed offsets and to every partition's end as the rebuild starts:
            # whatever a worker applied before the wipe lies below both, and its consumer will not read it again.
            n = await replay_into(settings, processor, floor=await committed_offsets(settings))
            if await store.mark_rebuilt(lock, token):
                log.warning("rebuilt windows from %d records in %.1f s", n, time.perf_counter() - started)
                return True
            log.warning("Redis lost its data again during the rebuild: starting over")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):  # if Redis is away the lock simply lapses
                if await store.client.get(lock) == token.encode():
                    await store.client.delete(lock)
