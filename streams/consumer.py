"""The worker's Kafka consumer: whole fetches into the Faust agents, offsets committed per applied batch.

Faust delivers one record at a time (consumer thread -> conductor -> channel queue -> stream -> one Event and
one ack each); at ~100 µs a record that, not callpulse, limited the worker. `BatchConsumer` keeps Faust's app,
agents, group membership, rebalance callbacks and commit machinery, and changes two things:

- delivery: each fetch is handed to the agents as one message per (topic, partition) whose value is a
  `FetchBatch` of that partition's records and whose offset is the batch's last offset;
- commits: `FetchLedger` keeps, per partition, the batches delivered in order; the commit point is the end of
  the longest prefix the agent has marked applied (after Redis applied it). Seeks, revokes and assignments
  clear it, so a batch fetched before one of them can never move a commit after it.

Both override private Faust methods (faust-streaming 0.15, `transport/consumer.py`): `_drain_messages` and
`_new_offset`, plus `seek`, `perform_seek` and the partition callbacks to clear the ledger.
`tests/unit/test_faust_internals.py` fails when any of them, or what they rely on, changes upstream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage, Message
from mode import Service, ServiceT


@dataclass(slots=True, eq=False)
class FetchBatch:
    """One partition's records from one fetch, oldest first; `applied` is set once Redis holds them."""

    topic: str
    partition: int
    records: Sequence[Any]  # aiokafka ConsumerRecords: .offset, .key, .value
    applied: bool = False

    @property
    def first_offset(self) -> int:
        """Offset of the first record."""
        return int(self.records[0].offset)

    @property
    def last_offset(self) -> int:
        """Offset of the last record: the offset of the message that carries the batch."""
        return int(self.records[-1].offset)


@dataclass
class FetchLedger:
    """Per partition, the batches delivered and not yet committed, in delivery order.

    Pure bookkeeping (no Kafka): `committable` pops the longest prefix of applied batches and returns the
    offset to commit (the next one to read), or None when the oldest delivered batch is not applied yet.
    """

    _delivered: dict[TP, deque[FetchBatch]] = field(default_factory=dict)

    def delivered(self, tp: TP, batch: FetchBatch) -> None:
        """Note a batch handed to the agents."""
        self._delivered.setdefault(tp, deque()).append(batch)

    def committable(self, tp: TP) -> int | None:
        """The offset to commit for `tp`: one past the longest applied prefix; None if nothing new."""
        pending = self._delivered.get(tp)
        offset = None
        while pending and pending[0].applied:
            offset = pending.popleft().last_offset + 1
        return offset

    def pending(self, tp: TP) -> int:
        """Batches delivered on `tp` and not yet committable."""
        return len(self._delivered.get(tp, ()))

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop what was delivered on these partitions (they were sought, revoked or reassigned)."""
        for tp in tps:
            self._delivered.pop(tp, None)

    def clear(self) -> None:
        """Drop everything."""
        self._delivered.clear()


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust hard-codes fetch_max_wait_ms=1500, about a second of latency per event: take it from the app."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "callpulse_fetch_max_wait_ms", 1500)
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer delivering one `FetchBatch` per (topic, partition, fetch); see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ledger = FetchLedger()
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # --- delivery --------------------------------------------------------------------------------------------

    def batch_message(self, tp: TP, records: Sequence[Any]) -> ConsumerMessage:
        """The message that carries `records` (one partition's, oldest first) to the agents."""
        last = records[-1]
        timestamp = last.timestamp / 1000.0 if last.timestamp is not None else cast(float, None)
        batch = FetchBatch(tp.topic, tp.partition, records)
        return ConsumerMessage(
            tp.topic,
            tp.partition,
            last.offset,
            timestamp,
            last.timestamp_type,
            None,
            None,
            cast(bytes, batch),
            None,
            0,
            sum(r.serialized_value_size for r in records),
            tp,
            generation_id=self.app.consumer_generation_id,
        )

    async def getbatches(self, timeout: float) -> AsyncIterator[tuple[TP, ConsumerMessage]]:
        """Fetch once; yield one batch message per partition with records (Faust's `getmany`, per batch).

        Kept from `getmany`: the flow-control check (and the seek back to committed offsets when a fetch
        returns while flow is stopped), the generation check before each delivery, the active/buffered
        partition filter and `track_tp_end_offset`.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("fetch returned while flow not active: seek back to committed offsets")
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        for tp, batch in records.items():
            if not batch:
                continue
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, self.batch_message(tp, batch)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop, one callback per batch instead of per record; runs as the Fetcher's task."""
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batches = self.getbatches(timeout=1.0)
                # getmany can return at once in a loop: let the event loop run in between.
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in batches:
                        batch = cast(FetchBatch, message.value)
                        r_offset = read_offset[tp]
                        if r_offset is not None and batch.last_offset < r_offset:
                            self.log.dev("dropped batch %r@%r: before the read offset", tp, batch.last_offset)
                            continue
                        if r_offset is not None and batch.first_offset < r_offset:
                            batch.records = [r for r in batch.records if r.offset >= r_offset]
                        self.ledger.delivered(tp, batch)
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        read_offset[tp] = batch.last_offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    # --- commits ---------------------------------------------------------------------------------------------

    def _new_offset(self, tp: TP) -> int | None:
        """One past the longest prefix of applied batches on `tp` (Faust's version wants consecutive offsets)."""
        # Faust's ack path appends each acked batch's last offset here; only the ledger decides what is
        # committable, so drop them rather than let them pile up.
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        return self.ledger.committable(tp)

    async def seek(self, partition: TP, offset: int) -> None:
        """Seek, forgetting the batches delivered on that partition: they are read again."""
        self.ledger.forget([partition])
        await super().seek(partition, offset)

    async def perform_seek(self) -> None:
        """Seek every partition to its committed offset, forgetting every delivered batch."""
        self.ledger.clear()
        await super().perform_seek()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Revoked partitions: commit what is applied, let Faust finish and commit the batch in hand, forget them."""
        if revoked:
            # Faust drops its acked offsets of revoked partitions before its own commit, which then only
            # covers partitions with a batch still in hand: commit the applied ones first, or they are re-read.
            await self.commit(revoked)
        await super().on_partitions_revoked(revoked)
        self.ledger.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """A new assignment starts from the committed offsets: nothing delivered before it counts."""
        self.ledger.clear()
        await super().on_partitions_assigned(assigned, generation_id)


class FetchSchema(faust.Schema):
    """The value of a batch message is its `FetchBatch` as the consumer built it: nothing to deserialise."""

    def loads_key(self, app: Any, message: Message, *, loads: Any = None, serializer: Any = None) -> Any:
        """Batches have no key."""
        return None

    def loads_value(self, app: Any, message: Message, *, loads: Any = None, serializer: Any = None) -> Any:
        """The `FetchBatch` itself."""
        return message.value


class BatchTransport(faust_aiokafka.Transport):
    """The aiokafka transport with `BatchConsumer`."""

    Consumer = BatchConsumer
