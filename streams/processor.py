"""Process a batch of raw Kafka records: decode, dead-letter the bad ones, plan, apply atomically.

Shared by the Faust agents and the replay path, so both produce identical windows. The
caller acks offsets only after `process` returns: by then every record is either applied in
Redis or in the deadletter topic.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.exceptions

from callpulse.cancelling import reraise_if_cancelling
from callpulse.exceptions import InvalidEvent, ShuttingDown
from callpulse.settings import Settings
from streams import batch, events, keys, queues
from streams.events import Event
from streams.store import WindowStore, namespace

log = logging.getLogger("callpulse.worker")

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


@dataclass(slots=True)
class Record:
    """One Kafka message as the worker saw it; `topic` is the base name ('calls' or 'tickets')."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Outcome:
    """What a processed batch did."""

    ok: int = 0
    late: int = 0
    invalid: int = 0
    applied: int = 0
    duplicates: int = 0
    agents: set[str] = field(default_factory=set)  # whose counters it changed
    timed: set[str] = field(default_factory=set)  # whose time in state it changed
    conflicts: int = 0


DeadLetterSink = Callable[[Sequence[tuple[Record, str]]], Awaitable[None]]


DEADLETTER_MAX_ORIGINAL_BYTES = 64 * 1024


def deadletter_value(record: Record, reason: str, *, source_topic: str) -> bytes:
    """The JSON a dead-lettered message carries: the reason, where it came from, and the original bytes.

    A key or value over 64 KiB is cut to its first 64 KiB (`key_truncated`/`value_truncated` and the original
    `key_bytes`/`value_bytes` say so): base64 of a 900 KB pill would exceed Kafka's 1 MB message limit, the send
    would fail for ever, and the partition behind it would stall.
    """
    letter: dict[str, object] = {
        "reason": reason,
        "source": {"topic": source_topic, "partition": record.partition, "offset": record.offset},
    }
    for name, data in (("key", record.key), ("value", record.value)):
        if data is None:
            letter[f"{name}_b64"] = None
            continue
        letter[f"{name}_b64"] = base64.b64encode(data[:DEADLETTER_MAX_ORIGINAL_BYTES]).decode()
        if len(data) > DEADLETTER_MAX_ORIGINAL_BYTES:
            letter[f"{name}_truncated"] = True
            letter[f"{name}_bytes"] = len(data)
    return orjson.dumps(letter)


def params_for(settings: Settings) -> batch.Params:
    """Store layout and retention from settings."""
    return batch.Params(
        ns=namespace(settings.topic_prefix),
        longest_ms=settings.longest_window_s * 1000,
        repeat_ms=settings.repeat_window_s * 1000,
        rules_for=queue_rules(settings),
        max_wait_ms=settings.max_wait_s * 1000,
    )


def queue_rules(settings: Settings) -> queues.RulesFor:
    """Each queue's SL threshold, short-abandon limit and max wait from settings, in milliseconds."""

    def rules_for(queue: str) -> queues.QueueRules:
        q = settings.queue(queue)
        return queues.QueueRules(round(q.sl_threshold_s * 1000), round(q.short_abandon_s * 1000), q.max_wait_s * 1000)

    return rules_for


class Processor:
    """Turns batches of records into one atomic store write each; retries Redis until it answers."""

    def __init__(
        self,
        settings: Settings,
        store: WindowStore,
        deadletter: DeadLetterSink,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = 200_000,
    ) -> None:
        self.settings = settings
        self.store = store
        self.deadletter = deadletter
        self.clock = clock
        self.params = params_for(settings)
        self._cache: dict[str, tuple[int, Any]] = {}
        self._cache_size = cache_size
        self.redis_down_since: float | None = None
        self.generation: str | None = None  # the store generation the cached states were read in
        self.check_epoch = True
        self.busy = False  # inside process(): its own retries own redis_down_since then
        self.stopping: Callable[[], bool] = lambda: False
        self.on_empty: Callable[[], Awaitable[Any]] | None = None

    def decode(self, records: Sequence[Record], now_ms: int) -> tuple[list[batch.Item], list[tuple[Record, str]]]:
        """Validate each record; invalid ones become dead letters (their dedupe key is their offset)."""
        items: list[batch.Item] = []
        dead: list[tuple[Record, str]] = []
        max_future_ms = self.settings.max_future_s * 1000
        longest_ms = self.params.longest_ms
        ns = self.params.ns
        for r in records:
            e: Event | None = None
            try:
                e = events.decode(r.value, topic=r.topic, now_ms=now_ms, max_future_ms=max_future_ms)
            except InvalidEvent as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not stop the floor: dead-letter the record and say so
                log.exception("error decoding %s[%d]@%d", r.topic, r.partition, r.offset)
                reason = f"internal error decoding event: {exc!r}"
            if e is None:
                dead.append((r, reason))
                items.append(
                    batch.Item(r.topic, None, keys.offset_mark_key(ns, r.topic, r.partition, r.offset), "invalid")
                )
                continue
            source = keys.record_mark(r.topic, r.partition, r.offset)
            mark, digest = keys.dedupe_mark(ns, e.event_id, e.ts_ms)
            result = batch.classify(e, now_ms, longest_ms)
            items.append(batch.Item(r.topic, e, mark, result, source, digest))
        return items, dead

    async def process(self, records: Sequence[Record]) -> Outcome:
        """Apply a batch; returns only once it is in Redis (retrying while Redis is away)."""
        self.busy = True
        try:
            return await self._process(records)
        finally:
            self.busy = False

    async def _process(self, records: Sequence[Record]) -> Outcome:
        now_ms = int(self.clock() * 1000)
        items, dead = self.decode(records, now_ms)
        if dead:
            for r, reason in dead:
                log.warning("dead-lettered %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
            await self._retry(lambda: self.deadletter(dead), "deadletter topic")
        out = Outcome(invalid=len(dead))
        for it in items:
            if it.result == "ok":
                out.ok += 1
            elif it.result == "late":
                out.late += 1
        keys = batch.state_keys(items, self.params.ns)
        # States and the generation they were read in travel together: a plan from another generation's
        # states would pass the version check by chance after a wipe (versions start again from 1).
        gen = self.generation
        states = {k: self._cache[k] for k in keys if k in self._cache}
        for attempt in range(20):
            if gen != self.generation:  # another batch learned that the store changed while this one waited
                gen, states = self.generation, {}
            p = batch.plan(items, states, now_ms, self.params)
            p.payload["ce"] = self.check_epoch
            p.payload["gen"] = gen or ""
            result = await self._retry(functools.partial(self.store.apply, p.payload), "Redis")
            if result.empty:
                self.adopt_generation(None)
                if self.on_empty is not None:
                    await self._retry(self.on_empty, "Redis")
                else:
                    await self._retry(self.store.mark_initialised, "Redis")
                continue
            if result.stale:
                self.adopt_generation(result.generation)
                continue
            if result.ok:
                self._remember(p.new_states, gen)
                out.applied, out.duplicates, out.agents = result.applied, result.duplicates, p.agents
                out.timed = p.timed
                return out
            out.conflicts += 1
            for key, raw in result.conflicts.items():
                states[key] = batch.decode_state(self.params.ns, key, raw or None)
            if attempt >= 2:
                fresh = await self._retry(lambda: self.store.read_states(keys), "Redis")
                states = {k: batch.decode_state(self.params.ns, k, v) for k, v in fresh.items()}
        raise RuntimeError("customer/ticket state kept changing under this worker for 20 attempts")

    def adopt_generation(self, generation: str | None) -> None:
        """Follow the store into another generation (None: it lost its data); cached states are from the old one."""
        if generation != self.generation or generation is None:
            self.generation = generation
            self.forget()

    def forget(self) -> None:
        """Drop cached states (after Redis lost its data, say)."""
        self._cache.clear()

    def _remember(self, new_states: dict[str, tuple[int, Any]], generation: str | None) -> None:
        if generation != self.generation:
            return  # written in a generation the store has since left: the states are not current
        if len(self._cache) + len(new_states) > self._cache_size:
            for key in list(self._cache)[: self._cache_size // 2]:
                del self._cache[key]
        self._cache.update(new_states)

    async def _retry(self, call: Callable[[], Awaitable[Any]], what: str) -> Any:
        delay = 0.1
        while True:
            try:
                result = await call()
            except redis.exceptions.NoScriptError:
                continue
            except Exception as exc:
                reraise_if_cancelling()
                if what == "Redis" and not isinstance(exc, (*REDIS_ERRORS, OSError, redis.exceptions.ResponseError)):
                    raise
                if self.redis_down_since is None and what == "Redis":
                    self.redis_down_since = self.clock()
                if self.stopping():
                    raise ShuttingDown(
                        f"{what} unavailable ({exc}) while stopping; the batch stays uncommitted"
                    ) from exc
                log.error("%s unavailable (%s); retrying in %.1f s, offsets held back", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if what == "Redis" and self.redis_down_since is not None:
                log.warning("Redis is back after %.1f s", self.clock() - self.redis_down_since)
                self.redis_down_since = None
                self.forget()
            return result
