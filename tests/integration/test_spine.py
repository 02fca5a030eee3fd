"""The spine end to end: Kafka -> `callpulse worker` -> Redis -> `callpulse monitor`, on real processes.

A shuffled trace with redelivered copies and hostile messages must give exactly the brute-force recomputation
of `tests.reference`, whatever the order and however the worker dies in between.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from callpulse.embedded import free_port
from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from tests.helpers import async_wait_for, result_counts
from tests.integration import tracegen
from tests.integration.tracegen import Invalid, Message
from tests.reference import diff_snapshot, expected

pytestmark = pytest.mark.integration

WINDOWS = ("15m", "1h", "8h")
RESULTS = ("ok", "duplicate", "invalid", "late")


# --- reading the system's answers ------------------------------------------------------------------------------


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


async def metrics_counts(settings: Settings) -> dict[str, int]:
    """`callpulse_events_total` from the monitor's /metrics, summed over topics, by result."""
    text = (await asyncio.to_thread(_get, f"http://{settings.http_host}:{settings.http_port}/metrics")).decode()
    counts = dict.fromkeys(RESULTS, 0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "callpulse_events_total":
                counts[sample.labels["result"]] += int(sample.value)
    return counts


async def worker_records(worker: Any) -> int:
    """Records the worker's Faust agents have processed (its own /metrics; the startup rebuild is not in it)."""
    try:
        text = (await asyncio.to_thread(_get, f"http://127.0.0.1:{worker.web_port}/metrics")).decode()
    except OSError:
        return 0
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "callpulse_worker_events_total"
    )


async def wait_worker_records(worker: Any, n: int, *, timeout_s: float) -> None:
    """Wait until the worker's Faust agents have processed at least `n` records."""

    async def caught_up() -> bool:
        return await worker_records(worker) >= n

    await async_wait_for(caught_up, timeout_s=timeout_s, interval_s=0.1, message=f"worker to consume {n} records")


async def snapshot(settings: Settings, window: str) -> dict[str, Any]:
    url = f"http://{settings.http_host}:{settings.http_port}/api/snapshot?window={window}"
    return orjson.loads(await asyncio.to_thread(_get, url))


async def assert_snapshots_exact(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Every window's snapshot equals the recomputation at the snapshot's own as_of."""
    for window in WINDOWS:
        snap = await snapshot(settings, window)
        assert snap["window"] == window
        now = datetime.fromisoformat(snap["as_of"]).timestamp()
        want = expected(events, now=now, window_s=settings.window_s(window))
        problems = diff_snapshot(snap, want)
        assert not problems, f"window {window}: {len(problems)} differences, first: " + "\n".join(problems[:15])
        # the windows are not trivially empty: the comparison above means something
        assert snap["floor"]["kpis"]["calls_handled"] > 0


async def wait_counts(
    settings: Settings, done: Any, *, timeout_s: float, interval_s: float = 0.1, source: str = "metrics"
) -> dict[str, int]:
    """Poll the event counters until `done(counts)`; return the last counts."""
    read = metrics_counts if source == "metrics" else result_counts
    last: dict[str, int] = {}

    async def check() -> bool:
        last.update(await read(settings))
        return bool(done(last))

    try:
        await async_wait_for(check, timeout_s=timeout_s, interval_s=interval_s, message="event counters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counters were {last}") from None
    return last


# --- building the input ----------------------------------------------------------------------------------------


def hostile_mix(now: float, *, seed: int) -> tuple[list[dict[str, Any]], list[Message], int, list[Invalid]]:
    """A shuffled trace with ~10 % redelivered copies and the invalid messages spread through it.

    Returns (unique valid events, messages in send order, number of copies, invalid messages).
    """
    trace = tracegen.generate_trace(now, seed=seed)
    messages, copies = tracegen.with_duplicates(
        tracegen.to_messages(tracegen.shuffled(trace.events, seed=seed + 1)), share=0.1, seed=seed + 2
    )
    bad = tracegen.invalid_messages(now, tag=f"bad{seed}")
    rng = random.Random(seed + 3)
    for inv in bad:
        messages.insert(rng.randrange(len(messages) + 1), Message(inv.topic, inv.value, key=inv.key))
    return trace.valid, messages, copies, bad


# --- tests -----------------------------------------------------------------------------------------------------


async def test_snapshot_equals_recomputation_for_shuffled_trace_with_duplicates_and_invalid(
    settings: Settings, stack: Any
) -> None:
    now = time.time()
    valid, messages, copies, bad = hostile_mix(now, seed=11)
    await ensure_topics(settings)
    worker = stack.worker(settings)
    stack.monitor(settings)

    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, messages, seed=5)
    await wait_counts(settings, lambda c: c["ok"] + c["duplicate"] + c["invalid"] >= len(messages), timeout_s=60)
    # and until the worker's own consumer has been through every record, not only its startup rebuild
    await wait_worker_records(worker, len(messages), timeout_s=60)

    assert worker.alive(), worker.log_tail()
    counts = await metrics_counts(settings)
    assert (counts["ok"], counts["invalid"], counts["late"]) == (len(valid), len(bad), 0), counts
    await assert_snapshots_exact(settings, valid)
    assert counts["duplicate"] == copies, f"{copies} redelivered copies were produced, counters say {counts}"


async def test_invalid_events_go_to_deadletter_with_reason_and_source(settings: Settings, stack: Any) -> None:
    now = time.time()
    trace = tracegen.generate_trace(now, seed=21, agents=4, calls_per_agent=10, tickets=20)
    head, tail = trace.events[: len(trace.events) // 2], trace.events[len(trace.events) // 2 :]
    bad = tracegen.invalid_messages(now, tag="dl")
    await ensure_topics(settings)
    worker = stack.worker(settings)

    # valid events before and after the bad ones: the worker must get past them
    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, tracegen.to_messages(head), seed=1)
    sent: dict[str, list[Any]] = {}
    for topic in ("calls", "tickets"):
        mine = [inv for inv in bad if inv.topic == topic]
        metas = await tracegen.produce_raw(settings.kafka, settings.topic(topic), [inv.value for inv in mine],
                                             keys=[inv.key for inv in mine], seed=2)  # fmt: skip
        sent[topic] = list(zip(mine, metas, strict=True))
    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, tracegen.to_messages(tail), seed=3)

    counts = await wait_counts(settings, lambda c: c["ok"] + c["invalid"] >= len(trace.events) + len(bad),
                               timeout_s=60, source="redis")  # fmt: skip
    # (duplicates are test 1's business: records re-read after the startup rebuild may count as such)
    assert (counts["ok"], counts["invalid"], counts["late"]) == (len(trace.events), len(bad), 0), counts
    assert worker.alive(), worker.log_tail()

    dead = await read_topic(settings.kafka, settings.topic("deadletter"), count=len(bad), timeout_s=30)
    by_source = {}
    for record in dead:
        letter = orjson.loads(record.value)
        src = letter["source"]
        by_source[(src["topic"], src["partition"], src["offset"])] = letter
    assert len(by_source) == len(dead) == len(bad), [orjson.loads(r.value)["reason"] for r in dead]
    for topic, pairs in sent.items():
        for inv, meta in pairs:
            letter = by_source.get((settings.topic(topic), meta.partition, meta.offset))
            assert letter is not None, f"no dead letter for {inv} at {topic}[{meta.partition}]@{meta.offset}"
            assert inv.field in letter["reason"], f"reason {letter['reason']!r} does not name {inv.field!r}"
            original = None if inv.value is None else base64.b64encode(inv.value).decode()
            assert letter["value_b64"] == original
            assert letter["key_b64"] == (None if inv.key is None else base64.b64encode(inv.key).decode())
    assert worker.alive(), worker.log_tail()


async def read_topic(bootstrap: str, topic: str, *, count: int, timeout_s: float) -> list[Any]:
    """The first `count` records of `topic` across its partitions, from the earliest offset.

    Reads by count, not to the end offsets: the embedded Tansu answers ListOffsets(latest) with the last
    batch's base offset + 1, short of the real end whenever a batch holds several records.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or range(4))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(records)} of {count} records of {topic} in {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()


async def test_kill_9_mid_trace_then_restart_stays_exact(settings: Settings, stack: Any) -> None:
    now = time.time()
    valid, messages, copies, bad = hostile_mix(now, seed=31)
    warmup, first, rest = messages[:50], messages[50 : len(messages) * 3 // 5], messages[len(messages) * 3 // 5 :]
    await ensure_topics(settings)
    stack.monitor(settings)
    # small batches, so the kill lands with part of the trace applied and later offsets uncommitted
    worker1 = stack.worker(settings.replace(batch_max=20))
    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, warmup, seed=6)
    await wait_worker_records(worker1, len(warmup), timeout_s=45)  # the worker is past startup, consuming live
    before = sum((await result_counts(settings)).values())

    sending = asyncio.create_task(tracegen.produce_messages(settings.kafka, settings.topic_prefix, first, seed=7))
    await wait_counts(settings, lambda c: sum(c.values()) > before, timeout_s=30, interval_s=0.01, source="redis")
    worker1.kill()
    await sending
    at_kill = await result_counts(settings)
    assert sum(at_kill.values()) - before < len(first), f"the kill did not land mid-trace: {at_kill}"

    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, rest, seed=8)
    worker2 = stack.worker(settings)
    await wait_counts(settings, lambda c: c["ok"] >= len(valid) and c["invalid"] >= len(bad), timeout_s=60)
    await wait_worker_records(worker2, 1, timeout_s=30)

    assert worker2.alive(), worker2.log_tail()
    counts = await metrics_counts(settings)
    # records re-read after the crash may count as duplicates, never as a second ok
    assert (counts["ok"], counts["invalid"], counts["late"]) == (len(valid), len(bad), 0), counts
    assert counts["duplicate"] >= copies, counts
    await assert_snapshots_exact(settings, valid)


async def test_kill_9_during_startup_rebuild_then_restart_stays_exact(settings: Settings, stack: Any) -> None:
    """A backlog at first start goes through the worker's rebuild; dying in it must not wedge the next worker."""
    now = time.time()
    valid, messages, _, bad = hostile_mix(now, seed=41)
    first, rest = messages[: len(messages) * 3 // 5], messages[len(messages) * 3 // 5 :]
    await ensure_topics(settings)
    stack.monitor(settings)
    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, first, seed=9)
    worker1 = stack.worker(settings)
    # The rebuild applies the backlog in a batch or two, then reads on until the topics stay idle for a second
    # before marking the store initialised: killing at its first write lands inside it.
    await wait_counts(settings, lambda c: sum(c.values()) > 0, timeout_s=45, interval_s=0.01, source="redis")
    worker1.kill()

    await tracegen.produce_messages(settings.kafka, settings.topic_prefix, rest, seed=10)
    worker2 = stack.worker(settings)
    await wait_counts(settings, lambda c: c["ok"] >= len(valid) and c["invalid"] >= len(bad), timeout_s=45)

    assert worker2.alive(), worker2.log_tail()
    counts = await metrics_counts(settings)
    assert (counts["ok"], counts["invalid"], counts["late"]) == (len(valid), len(bad), 0), counts
    await assert_snapshots_exact(settings, valid)


async def test_first_event_processed_within_seconds_of_worker_start(
    settings: Settings, stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(settings)
    event = {"event_id": "first-1", "type": "call.ended", "ts": round(time.time() - 1, 3), "call_id": "c1",
             "agent_id": "ag1", "direction": "inbound", "connected": True, "talk_seconds": 60}  # fmt: skip
    await tracegen.produce_raw(settings.kafka, settings.topic("calls"), [orjson.dumps(event)], seed=1)

    started = time.monotonic()
    worker = stack.worker(settings)
    await wait_counts(settings, lambda c: c["ok"] >= 1, timeout_s=30, source="redis")
    elapsed_s = time.monotonic() - started

    assert worker.alive(), worker.log_tail()
    with capsys.disabled():
        print(f"\nfirst event in Redis {elapsed_s:.2f} s after the worker process started")
    assert elapsed_s < 20, f"first event took {elapsed_s:.1f} s after worker start"


def _clean_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPULSE_")}
    env.update(changes)
    return env


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "callpulse.cli", *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"callpulse {' '.join(args)} kept running instead of refusing to start") from exc


def test_bad_settings_stop_worker_and_monitor_with_a_clear_message() -> None:
    worker = _run_cli(["worker"], _clean_env(CALLPULSE_REDIS="http://localhost:6379/0"))
    assert worker.returncode != 0
    assert "CALLPULSE_REDIS" in worker.stderr and "redis://" in worker.stderr, worker.stderr
    assert "Traceback" not in worker.stderr, worker.stderr

    port = free_port()
    monitor = _run_cli(
        ["monitor"], _clean_env(CALLPULSE_HTTP=f"0.0.0.0:{port}", CALLPULSE_REDIS="redis://127.0.0.1:1/0")
    )
    assert monitor.returncode != 0
    assert "token" in monitor.stderr.lower() and "CALLPULSE_TOKEN" in monitor.stderr, monitor.stderr
    assert "Traceback" not in monitor.stderr, monitor.stderr
