"""The recovery path against the brute-force reference: Redis wiped at a random point, live records arriving
before, during and after the rebuild, on a real Kafka-protocol broker and a real redis-server.

Two live consumers (the worker's `calls` and `tickets` agents) share one Processor, as in the worker; their
batches interleave, some are redelivered, and one is in flight when Redis dies. The rebuild is started by the
sweep (as the worker does when Redis comes back empty) or by the first batch that finds the store empty. The
windows must come out exactly as the reference computes them from the unique events.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callpulse.embedded import EmbeddedBroker, EmbeddedRedis
from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from monitor import snapshot
from streams.processor import REDIS_ERRORS, Processor, Record
from streams.replay import rebuild_if_empty
from streams.store import WindowStore, namespace
from tests import reference
from tests.integration import test_core_property as core

pytestmark = pytest.mark.integration

PARTITIONS = 4
RECOVERY = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    deadline=None,
    max_examples=10,
)
_examples = iter(range(1, 10**6))


class Plan:
    """What hypothesis chose for one example: the trace, its copies and order, and when the fault hits."""

    def __init__(self, data: st.DataObject) -> None:
        events = data.draw(core.traces(), label="events")
        copies = data.draw(st.lists(st.sampled_from(events), max_size=len(events) // 3), label="copies")
        self.events: list[dict[str, Any]] = events
        self.messages: list[dict[str, Any]] = data.draw(st.permutations(events + copies), label="order")
        self.partitions = data.draw(
            st.lists(st.integers(0, PARTITIONS - 1), min_size=len(self.messages), max_size=len(self.messages)),
            label="partitions",
        )
        # Messages before the cut are in Kafka before Redis dies; the rest are produced during the rebuild.
        self.cut = data.draw(st.integers(1, len(self.messages)), label="cut")
        self.batch_max = data.draw(st.integers(1, 12), label="batch_max")
        self.wiped_after = data.draw(st.integers(0, 20), label="batches applied before the wipe")
        self.pace_s = data.draw(st.sampled_from([0, 0.002, 0.02]), label="pause between a consumer's batches")
        self.in_flight_delay_s = data.draw(st.sampled_from([0, 0.0005, 0.002, 0.01]), label="wipe delay in flight")
        self.outage_s = data.draw(st.sampled_from([0.05, 0.5, 3.0]), label="outage")
        # The worker's 1-second sweep rebuilds an empty store; it may come before or after the live batches do.
        self.sweep_first = data.draw(st.booleans(), label="sweep before the live batches")
        self.redeliver = data.draw(st.integers(0, 3), label="batches redelivered")
        self.seed = data.draw(st.integers(0, 2**16), label="seed")


def _batches(records: Sequence[Record], batch_max: int) -> dict[str, list[list[Record]]]:
    """Each topic's records cut into batches of at most batch_max, in offset order per partition."""
    out: dict[str, list[list[Record]]] = {"calls": [], "tickets": []}
    for topic in out:
        mine = sorted((r for r in records if r.topic == topic), key=lambda r: (r.partition, r.offset))
        for p in range(PARTITIONS):
            part = [r for r in mine if r.partition == p]
            out[topic] += [part[i : i + batch_max] for i in range(0, len(part), batch_max)]
    return out


async def _produce(
    producer: AIOKafkaProducer, cfg: Settings, msgs: Sequence[tuple[dict[str, Any], int]]
) -> list[Record]:
    futures = []
    for event, partition in msgs:
        topic = core.TOPIC[event["type"]]
        futures.append(await producer.send(cfg.topic(topic), orjson.dumps(event), partition=partition))
    metas = await asyncio.gather(*futures)
    return [
        Record(core.TOPIC[e["type"]], m.partition, m.offset, None, orjson.dumps(e))
        for (e, _), m in zip(msgs, metas, strict=True)
    ]


async def _sweep(cfg: Settings, store: WindowStore) -> None:
    """The worker's sweep after Redis came back: rebuild if empty, trying again next round on a Redis error."""
    while True:
        try:
            await rebuild_if_empty(cfg, store, clock=lambda: core.NOW)
            return
        except REDIS_ERRORS:
            await asyncio.sleep(0.1)


async def _read(store: WindowStore, cfg: Settings) -> list[Any]:
    """Read every window; a pooled connection from before the restart fails once, then the pool reconnects."""
    for _ in range(10):
        try:
            return await store.read_windows(core.NOW_MS, cfg.windows_s)
        except REDIS_ERRORS:
            continue
    raise AssertionError("Redis kept refusing the final read")


async def _run(plan: Plan, broker: EmbeddedBroker, redis_server: EmbeddedRedis) -> None:
    prefix = f"rec{next(_examples)}-"
    cfg = Settings(kafka=broker.bootstrap, redis_url=redis_server.url, topic_prefix=prefix,
                   consumer_group=f"{prefix}callpulse", repeat_window_s=core.REPEAT_S)  # fmt: skip
    await ensure_topics(cfg, partitions=PARTITIONS)
    rng = random.Random(plan.seed)
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=10)
    store = WindowStore(client, namespace(prefix))
    processor = Processor(cfg, store, core.Dead(), clock=lambda: core.NOW)
    processor.on_empty = lambda: rebuild_if_empty(cfg, store, clock=lambda: core.NOW)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=-1)
    await producer.start()
    try:
        await client.flushall()
        msgs = list(zip(plan.messages, plan.partitions, strict=True))
        queues = _batches(await _produce(producer, cfg, msgs[: plan.cut]), plan.batch_max)
        applied: list[list[Record]] = []
        strike = asyncio.Event()
        busy: set[str] = set()  # the agents applying a batch right now
        everything_produced = asyncio.Event()

        async def agent(topic: str) -> None:
            """One live consumer: its batches in turn, each applied before the next, paced like fetches."""
            while queues[topic] or not everything_produced.is_set():
                if not queues[topic]:
                    if not any(queues.values()) and not busy and not everything_produced.is_set():
                        strike.set()  # fewer batches than `wiped_after`: the wipe comes once all are applied
                    await asyncio.sleep(0.005)
                    continue
                batch = queues[topic].pop(0)
                busy.add(topic)
                try:
                    await processor.process(batch)
                finally:
                    busy.discard(topic)
                applied.append(batch)
                if len(applied) >= plan.wiped_after:
                    strike.set()
                await asyncio.sleep(plan.pace_s)

        async def fault() -> None:
            """Redis dies while batches are in flight, comes back empty; the rest of the trace arrives meanwhile."""
            await asyncio.wait_for(strike.wait(), 30)
            await asyncio.sleep(plan.in_flight_delay_s)
            redis_server.kill()
            await asyncio.sleep(plan.outage_s)
            redis_server.start()
            sweep = asyncio.ensure_future(_sweep(cfg, store)) if plan.sweep_first else None
            for topic, more in _batches(await _produce(producer, cfg, msgs[plan.cut :]), plan.batch_max).items():
                queues[topic] += more
            # Redelivery: records applied before the wipe, read again (a consumer that restarted, say).
            if applied:
                queues["calls"] += [rng.choice(applied) for _ in range(plan.redeliver)]
            everything_produced.set()
            if sweep is not None:
                await sweep

        await asyncio.gather(agent("calls"), agent("tickets"), fault())
        await _sweep(cfg, store)
        rows = await _read(store, cfg)
    finally:
        await producer.stop()
        await client.aclose()
    for window_s in cfg.windows_s:
        snap = snapshot.build(rows, window_s=window_s, settings=cfg, now_ms=core.NOW_MS)
        want = reference.expected(plan.events, core.NOW, window_s, repeat_s=core.REPEAT_S)
        assert reference.diff_snapshot(snap, want) == [], f"window {window_s}"


@given(data=st.data())
@RECOVERY
def test_windows_rebuilt_after_a_wipe_at_any_point_equal_the_reference(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, data: st.DataObject
) -> None:
    asyncio.run(_run(Plan(data), broker, redis_server))
