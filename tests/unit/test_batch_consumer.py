"""The batch consumer's delivery and commit bookkeeping, without Kafka: a real Faust app that never connects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from callpulse.settings import Settings
from streams.app import build_app
from streams.consumer import BatchConsumer, FetchBatch, FetchLedger

TOPIC = "unit-calls"


def records(first: int, last: int, *, topic: str = TOPIC, partition: int = 0) -> list[ConsumerRecord]:
    """aiokafka records at offsets first..last, as a fetch returns them."""
    return [
        ConsumerRecord(topic, partition, o, 1_700_000_000_000 + o, 0, b"k", b'{"v":%d}' % o, None, 1, 9, ())
        for o in range(first, last + 1)
    ]


def batch(first: int, last: int, *, applied: bool = False) -> FetchBatch:
    return FetchBatch(TOPIC, 0, records(first, last), applied=applied)


TP0 = TP(TOPIC, 0)
TP1 = TP(TOPIC, 1)


def test_ledger_commits_one_past_the_longest_applied_prefix() -> None:
    ledger = FetchLedger()
    for b in (batch(0, 9, applied=True), batch(10, 19, applied=True), batch(20, 29)):
        ledger.delivered(TP0, b)
    assert ledger.committable(TP0) == 20
    assert ledger.pending(TP0) == 1


def test_ledger_holds_everything_behind_an_unapplied_batch() -> None:
    ledger = FetchLedger()
    head = batch(0, 9)
    ledger.delivered(TP0, head)
    ledger.delivered(TP0, batch(10, 19, applied=True))
    assert ledger.committable(TP0) is None
    head.applied = True
    assert ledger.committable(TP0) == 20


def test_ledger_has_nothing_new_after_a_commit_until_another_batch_is_applied() -> None:
    ledger = FetchLedger()
    later = batch(10, 19)
    ledger.delivered(TP0, batch(0, 9, applied=True))
    ledger.delivered(TP0, later)
    assert ledger.committable(TP0) == 10
    assert ledger.committable(TP0) is None
    later.applied = True
    assert ledger.committable(TP0) == 20


def test_ledger_keeps_partitions_apart() -> None:
    ledger = FetchLedger()
    ledger.delivered(TP0, batch(0, 9, applied=True))
    ledger.delivered(TP1, FetchBatch(TOPIC, 1, records(0, 4, partition=1)))
    assert ledger.committable(TP1) is None
    assert ledger.committable(TP0) == 10


def test_ledger_forgets_batches_of_sought_partitions_so_they_cannot_be_committed() -> None:
    ledger = FetchLedger()
    stale = batch(0, 9)
    ledger.delivered(TP0, stale)
    ledger.forget([TP0])
    stale.applied = True  # applied after the seek: its offsets must not move the commit
    assert ledger.committable(TP0) is None
    assert ledger.pending(TP0) == 0


@pytest.fixture
async def consumer() -> AsyncIterator[BatchConsumer]:
    """The consumer of a worker app whose `calls` topic is TOPIC (an acking topic); nothing connects."""
    settings = Settings(kafka="127.0.0.1:9", redis_url="redis://127.0.0.1:9", topic_prefix="unit-")
    app = build_app(settings, web_port=6066)
    for agent in app.agents.values():
        app.topics.add(agent.channel)
    await app.topics._update_indices()  # what subscribing does: the agents' topics become acking topics
    assert app.topics.acks_enabled_for(TOPIC)
    c = app.consumer
    assert isinstance(c, BatchConsumer)
    yield c


async def test_batch_message_carries_the_records_at_the_last_offset(consumer: BatchConsumer) -> None:
    message = consumer.batch_message(TP0, records(100, 104))
    assert message.offset == 104
    assert message.tp == TP0
    b = message.value
    assert isinstance(b, FetchBatch)
    assert [r.offset for r in b.records] == [100, 101, 102, 103, 104]
    assert (b.first_offset, b.last_offset, b.applied) == (100, 104, False)


async def test_faust_ack_alone_commits_nothing_until_the_batch_is_applied(consumer: BatchConsumer) -> None:
    message = consumer.batch_message(TP0, records(0, 49))
    consumer.ledger.delivered(TP0, message.value)
    consumer._unacked_messages.add(message)
    message.incref()
    assert message.ack(consumer)  # Faust's own ack path: the stream acks what it handed out
    assert message not in consumer.unacked
    # Faust's commit selection, with our _new_offset: acked but not applied is not committable.
    assert consumer._filter_committable_offsets(consumer._filter_tps_with_pending_acks()) == {}
    message.value.applied = True
    consumer._acked[TP0].append(message.offset)
    assert consumer._filter_committable_offsets(consumer._filter_tps_with_pending_acks()) == {TP0: 50}
    assert consumer._acked[TP0] == []


async def test_offsets_of_acked_batches_do_not_pile_up(consumer: BatchConsumer) -> None:
    for first in range(0, 1000, 100):
        message = consumer.batch_message(TP0, records(first, first + 99))
        consumer.ledger.delivered(TP0, message.value)
        message.incref()
        message.value.applied = True
        message.ack(consumer)
    assert len(consumer._acked[TP0]) == 10
    assert consumer._new_offset(TP0) == 1000
    assert consumer._acked[TP0] == []
    assert not consumer._acked_index[TP0]
