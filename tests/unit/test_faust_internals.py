"""Guard the private Faust internals the batch consumer (`streams/consumer.py`) overrides or relies on.

They are not Faust's public API, so a new faust-streaming release may change them without notice. This test
pins each to the source it was written against (a digest of `inspect.getsource`) and to its signature; when
one changes, re-read the new version against `streams/consumer.py` (what it copies from `getmany` and
`_drain_messages`, and what its `_new_offset` assumes about acks), fix the consumer if needed, then update the
digest here. The behaviour the consumer needs from them is checked in `test_batch_consumer.py` and, against a
real broker, by the fault matrix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.app.base import App
from faust.serializers.schemas import Schema
from faust.transport import conductor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerMessage
from faust.types.tuples import Message

from streams.consumer import BatchConsumer, BatchConsumerThread, FetchSchema

C = faust_consumer.Consumer

# Each internal: what it is to the batch consumer, its parameters, and the digest of the source it was checked against.
INTERNALS: dict[str, tuple[Callable[..., Any], str, str, str]] = {
    "Consumer._drain_messages": (
        C._drain_messages,
        "replaced: the fetch loop, per batch",
        "self fetcher",
        "44a2500309e83c63",
    ),
    "Consumer.getmany": (C.getmany, "copied per batch into getbatches", "self timeout", "4b168d84882a70d6"),
    "Consumer._wait_next_records": (C._wait_next_records, "called: one fetch", "self timeout", "6218e1969a636b3f"),
    "Consumer._new_offset": (C._new_offset, "replaced: commit point from the ledger", "self tp", "1d2c7ea89a7ad4f1"),
    "Consumer._filter_committable_offsets": (
        C._filter_committable_offsets,
        "calls _new_offset per tp",
        "self tps",
        "dc5e9baf5d994485",
    ),
    "Consumer._filter_tps_with_pending_acks": (
        C._filter_tps_with_pending_acks,
        "commits only tps in _acked",
        "self topics",
        "f6f9239774234e7e",
    ),
    "Consumer.ack": (C.ack, "appends the acked offset to _acked[tp]", "self message", "5fcf41cf45153475"),
    "Consumer.seek": (
        C.seek,
        "overridden: forget the partition's batches",
        "self partition offset",
        "b86a9fe05f956b30",
    ),
    "Consumer.perform_seek": (C.perform_seek, "overridden: forget every batch", "self", "0e8c130ff4b0afd8"),
    "Consumer.on_partitions_revoked": (
        C.on_partitions_revoked,
        "overridden: forget after Faust's commit",
        "self revoked",
        "d04b7ae72c6fc206",
    ),
    "Consumer.on_partitions_assigned": (
        C.on_partitions_assigned,
        "overridden: forget before",
        "self assigned generation_id",
        "29ce96596f05a18c",
    ),
    "App._on_partitions_revoked": (
        App._on_partitions_revoked,
        "waits for the batch in hand and commits it",
        "self revoked",
        "d5c895bbe57dc73a",
    ),
    "aiokafka.Consumer._to_message": (
        faust_aiokafka.Consumer._to_message,
        "copied into batch_message",
        "self tp record",
        "7c24f6511b2fcef7",
    ),
    "AIOKafkaConsumerThread._create_worker_consumer": (
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer,
        "overridden: fetch_max_wait_ms",
        "self transport",
        "c2701bfc3e6f6cad",
    ),
    "ConductorCompiler.build": (
        conductor.ConductorCompiler.build,
        "delivers a message: schema decode, queue",
        "self conductor tp channels",
        "837cf521368c1ee4",
    ),
    "Schema.compile": (
        Schema.compile,
        "calls loads_key/loads_value",
        "self app on_key_decode_error on_value_decode_error default_propagate",
        "d46eec5ce3195b2c",
    ),
    "Message.ack": (Message.ack, "refcount to zero, then Consumer.ack", "self consumer n", "4751b72c4ed84153"),
    "ConsumerMessage.__init__": (
        ConsumerMessage.__init__,
        "built by batch_message",
        (
            "self topic partition offset timestamp timestamp_type headers key value checksum serialized_key_size "
            "serialized_value_size tp time_in time_out time_total generation_id"
        ),
        "afe1f75975597bc3",
    ),
}

# The compiled stream iterator acks inline (Consumer.ack's bookkeeping, copied): its source ships with Faust.
CYTHON_STREAMS = Path(faust.__file__).parent / "_cython" / "streams.pyx"
CYTHON_AFTER_DIGEST = "0dde43f8a94af6f1"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parameters(fn: Callable[..., Any]) -> str:
    return " ".join(inspect.signature(fn).parameters)


def _cython_after() -> str:
    text = CYTHON_STREAMS.read_text()
    start = text.index("    cpdef object after(")
    return text[start : text.index("    cdef object _prepare_event(", start)]


def test_faust_streaming_is_the_pinned_minor_version() -> None:
    version = importlib.metadata.version("faust-streaming")
    assert version.startswith("0.15."), (
        f"faust-streaming {version} is installed; streams/consumer.py was checked against 0.15.x "
        "(pyproject pins >=0.15,<0.16): review it against the new version first"
    )


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_faust_internal_has_the_parameters_the_batch_consumer_was_written_for(name: str) -> None:
    fn, role, parameters, _ = INTERNALS[name]
    assert _parameters(fn) == parameters, f"{name} ({role}) changed its parameters: review streams/consumer.py"


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_faust_internal_has_the_source_the_batch_consumer_was_checked_against(name: str) -> None:
    fn, role, _, digest = INTERNALS[name]
    now = _digest(inspect.getsource(fn))
    assert now == digest, (
        f"{name} ({role}) changed upstream (source digest {now}, checked against {digest}): re-read it against "
        "streams/consumer.py, fix the consumer if needed, then update the digest in this test"
    )


def test_compiled_stream_iterator_acks_as_the_batch_consumer_was_checked_against() -> None:
    now = _digest(_cython_after())
    assert now == CYTHON_AFTER_DIGEST, (
        f"faust/_cython/streams.pyx StreamIterator.after changed (digest {now}, checked against "
        f"{CYTHON_AFTER_DIGEST}): it acks inline into Consumer._acked; review streams/consumer.py's _new_offset"
    )


def test_the_batch_consumer_still_overrides_what_it_means_to() -> None:
    for name in ("_drain_messages", "_new_offset", "seek", "perform_seek", "on_partitions_revoked"):
        assert name in vars(BatchConsumer), name
    assert "on_partitions_assigned" in vars(BatchConsumer)
    assert "_create_worker_consumer" in vars(BatchConsumerThread)
    assert {"loads_key", "loads_value"} <= set(vars(FetchSchema))
    # The attributes the overrides read and write exist on a Faust consumer as the names they use.
    hints = C.__annotations__
    for attr in ("_acked", "_acked_index", "_read_offset", "_unacked_messages", "_buffered_partitions"):
        assert attr in hints, f"faust Consumer no longer declares {attr}"
    assert faust_consumer.CONSUMER_FETCHING == "FETCHING"
