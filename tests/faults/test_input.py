"""Hostile input on one shared worker and monitor: poison pills, redelivery storms, shuffled and late events, and
finally SIGTERM to both.

The rows run in order on the same topics and Redis (a module-scoped pipeline), so each checks the cumulative
ledger: every snapshot must equal the recomputation from all valid events produced so far.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callpulse.embedded import EmbeddedRedis, free_port
from callpulse.kafka import ensure_topics
from callpulse.localkafka import LocalKafka
from callpulse.processes import Proc
from callpulse.settings import Settings
from tests.conftest import Stack
from tests.faults import harness as h
from tests.helpers import async_wait_for, result_counts
from tests.integration import tracegen

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@dataclass
class Pipeline:
    """One worker and one monitor on their own topics and Redis, shared by this module's rows."""

    settings: Settings
    redis: EmbeddedRedis
    stack: Stack
    ledger: h.Ledger
    worker: Proc
    monitor: Proc


@pytest.fixture(scope="module")
def pipeline(broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp: Path = tmp_path_factory.mktemp("input-pipeline")
    redis = EmbeddedRedis(data_dir=tmp / "redis").start()
    prefix = "faults-input-"
    settings = Settings(
        kafka=broker.bootstrap,
        redis_url=redis.url,
        topic_prefix=prefix,
        consumer_group=f"{prefix}callpulse",
        http_host="127.0.0.1",
        http_port=free_port(),
        session_timeout_s=3.0,
    )
    stack = Stack(tmp)
    try:
        asyncio.run(ensure_topics(settings))
        monitor = stack.monitor(settings)
        worker = stack.worker(settings)
        yield Pipeline(settings, redis, stack, h.Ledger(prefix), worker, monitor)
    finally:
        stack.stop_all()
        redis.stop()


def poison_pills(now: float) -> list[tuple[h.Msg, str]]:
    """Messages the worker must dead-letter, each with the word its reason must contain."""
    bad = tracegen.invalid_messages(now, tag="pill")
    pills = [(h.Msg(inv.topic, inv.value, key=inv.key), inv.field) for inv in bad]
    big = {
        "event_id": "pill-900k",
        "type": "call.ended",
        "ts": round(now - 60, 3),
        "call_id": "c-900k",
        "agent_id": "ag001",
        "direction": "inbound",
        "connected": True,
        "talk_seconds": 60,
        "note": "x" * 900_000,
    }
    pills += [
        (h.Msg("calls", orjson.dumps(big)), "bytes"),  # 900 KB: under Kafka's 1 MB limit, far over an event's
        (h.Msg("tickets", b"", key=None), "JSON"),  # null key, empty value (Kafka clients refuse null and null)
        (h.Msg("calls", b'{"event_id": 7, "type": "call.ended"}', key=None), "event_id"),  # null key, wrong type
        (h.Msg("calls", b"\xff\xfe binary", key=b"\xff"), "UTF-8"),
    ]
    return pills


@pytest.mark.fault_row(7)
async def test_poison_pills_go_to_deadletter_with_reasons(pipeline: Pipeline, row: Any) -> None:
    settings, ledger = pipeline.settings, pipeline.ledger
    now = time.time()
    good = h.messages(h.shuffled(h.small_trace(now, seed=701), seed=2))  # every one of them has a null key
    pills = poison_pills(now)
    msgs = h.interleave(good, [m for m, _ in pills], seed=3)
    async with h.Producer(settings, ledger, seed=4) as producer:
        positions = await producer.send(msgs)
    counts = await h.wait_settled(settings, ledger, timeout_s=60)
    assert pipeline.worker.alive(), pipeline.worker.log_tail()

    dead = await h.read_topic(settings, "deadletter", at_least=len(pills), timeout_s=30)
    letters = {}
    for record in dead:
        letter = orjson.loads(record.value)
        src = letter["source"]
        letters[(src["topic"], src["partition"], src["offset"])] = letter
    where = {id(m): pos for m, pos in zip(msgs, positions, strict=True)}
    problems = []
    for msg, word in pills:
        pos = where[id(msg)]
        letter = letters.get((settings.topic(msg.topic), pos.partition, pos.offset))
        if letter is None:
            problems.append(f"no dead letter for {msg.value[:40] if msg.value else None!r} at {pos}")
            continue
        if word not in letter["reason"]:
            problems.append(f"reason {letter['reason'][:120]!r} does not name {word!r}")
        size = len(msg.value or b"")
        if size <= 64 * 1024:
            want = None if msg.value is None else base64.b64encode(msg.value).decode()
            if letter["value_b64"] != want:
                problems.append(f"dead letter at {pos} does not carry the original value")
        elif not (letter.get("value_truncated") and letter.get("value_bytes") == size):
            problems.append(f"dead letter of the {size} B value does not say it was cut: {sorted(letter)}")
    assert not problems, problems
    assert counts["invalid"] == len(pills), counts
    await h.assert_exact(settings, ledger)
    big = max(len(m.value or b"") for m, _ in pills)
    row.figure("pills", len(pills))
    row.figure("good_events", len(good))
    row.figure("largest_pill_bytes", big)
    row.figure("dead_letters", len(dead))


@pytest.mark.fault_row(8)
async def test_same_event_redelivered_many_times_across_partitions(pipeline: Pipeline, row: Any) -> None:
    settings, ledger = pipeline.settings, pipeline.ledger
    before = await result_counts(settings)
    copies_before, valid_before = ledger.copies, len(ledger.valid)
    now = time.time()
    originals = h.messages(h.small_trace(now, seed=801, agents=5, calls_per_agent=12, tickets=30))
    msgs = h.with_copies(h.shuffled(originals, seed=2), share=1.0, seed=3, max_copies=5)
    async with h.Producer(settings, ledger, seed=4) as producer:
        await producer.send(msgs)
    await h.wait_settled(settings, ledger, timeout_s=60)
    counts = await h.assert_exact(settings, ledger)
    copies = ledger.copies - copies_before
    spread = {}
    for pos in ledger.positions[-len(msgs) :]:
        spread.setdefault(pos.mark, set()).add(pos.partition)
    row.figure("events", len(ledger.valid) - valid_before)
    row.figure("copies_sent", copies)
    row.figure("events_on_2+_partitions", sum(len(p) > 1 for p in spread.values()))
    row.figure("ok_delta", counts["ok"] - before["ok"])
    row.figure("duplicate_delta", counts["duplicate"] - before["duplicate"])
    assert counts["ok"] - before["ok"] == len(ledger.valid) - valid_before
    assert counts["duplicate"] - before["duplicate"] >= copies


@pytest.mark.fault_row(9)
async def test_shuffled_with_late_events(pipeline: Pipeline, row: Any) -> None:
    settings, ledger = pipeline.settings, pipeline.ledger
    now = time.time()
    # in-window events spread over 7.5 h, so 15m, 1h and 8h all differ
    timely = h.messages(h.small_trace(now, seed=901, agents=6, span_s=7.5 * 3600))
    # older than the longest window (25 h with `today` on) by 1-2 h: same agents and customers,
    # so counting them would show
    late = h.messages(h.small_trace(now - 26 * 3600, seed=902, agents=6, calls_per_agent=6, tickets=15), late=True)
    msgs = h.shuffled(timely + late, seed=3)
    async with h.Producer(settings, ledger, seed=4) as producer:
        await producer.send(msgs)
    counts = await h.wait_settled(settings, ledger, timeout_s=60)
    await h.assert_exact(settings, ledger)
    row.figure("events", len(timely))
    row.figure("late_sent", len(late))
    row.figure("late_counted", counts["late"])
    assert counts["late"] == len(late)


@pytest.mark.fault_row(14)
async def test_sigterm_worker_and_monitor_is_graceful(pipeline: Pipeline, row: Any) -> None:
    settings, ledger = pipeline.settings, pipeline.ledger
    # The worker has set the store up (run alone, it may still be starting: a rebuild after SIGTERM replays
    # records past the committed offsets, which is harmless but not what this row checks).
    await async_wait_for(lambda: h.initialised(settings), timeout_s=60, message="the worker to set the store up")
    await h.wait_settled(settings, ledger, timeout_s=30)
    async with h.OffsetWatch(settings, ledger) as watch:  # the earlier rows committed: a clean start line
        await async_wait_for(
            lambda: watch.current == watch.ends(),
            timeout_s=20,
            interval_s=0.2,
            message="the worker to commit the earlier rows",
        )
    before = await result_counts(settings)
    msgs = h.messages(
        h.shuffled(h.small_trace(time.time(), seed=1401, agents=4, calls_per_agent=10, tickets=20), seed=2)
    )
    # Freeze Redis, so the batch the worker takes up is still in flight when SIGTERM arrives.
    pipeline.redis.pause()
    try:
        async with h.Producer(settings, ledger, seed=4) as producer:
            await producer.send(msgs)

        async def fetched() -> bool:
            return bool(await h.worker_metric(pipeline.worker, "callpulse_consumer_lag"))

        await async_wait_for(fetched, timeout_s=20, interval_s=0.1, message="the worker to fetch the new records")
        await asyncio.sleep(0.5)  # from fetched to handed to the agent and blocked on Redis: milliseconds
        pipeline.worker.signal(signal.SIGTERM)
        await asyncio.sleep(1.0)  # the worker is now stopping, its batch waiting on Redis
    finally:
        pipeline.redis.resume()
    stopped = h.Stopwatch()
    code = await asyncio.to_thread(_exit_code, pipeline.worker, 30)
    stop_s = stopped()
    log = pipeline.worker.log_tail(200_000)
    assert code == 0, f"worker exit code {code} after SIGTERM:\n{pipeline.worker.log_tail()}"
    at_stop = await result_counts(settings)
    applied_at_stop = at_stop["ok"] - before["ok"]
    # Redis was frozen until after the SIGTERM: whatever is applied now was finished on the way out
    assert applied_at_stop > 0, f"the in-flight batch was not applied:\n{log[-3000:]}"

    # Everything applied is committed: what lies at or past the committed offsets was never applied.
    reader = h.offset_reader(settings)
    await reader.start()
    try:
        committed = await h.committed_offsets(reader, settings)
    finally:
        await reader.stop()
    left = [pos for pos in ledger.positions if pos.offset >= committed.get((pos.topic, pos.partition), 0)]
    applied_left = await h.existing(settings, [pos.mark for pos in left])
    assert not applied_left, f"applied but not committed on SIGTERM: {applied_left[:5]}"

    worker = pipeline.stack.worker(settings)  # a restarted worker must re-read nothing it applied
    pipeline.worker = worker
    # new events after the restart: once they are in, the worker has read everything from its committed offsets
    sentinel = h.messages(h.small_trace(time.time(), seed=1402, agents=2, calls_per_agent=4, tickets=4))
    async with h.Producer(settings, ledger, seed=5) as producer:
        await producer.send(sentinel)
    await h.wait_settled(settings, ledger, timeout_s=60)
    await h.assert_exact(settings, ledger)
    read_again = int(await h.worker_metric(worker, "callpulse_worker_events_total") or 0) - len(sentinel)
    assert read_again == len(left), (
        f"the restarted worker processed {read_again} earlier records, but only {len(left)} were left unapplied"
    )

    url = f"ws://{settings.http_host}:{settings.http_port}/ws"
    clients = [await connect(url, open_timeout=10) for _ in range(3)]
    try:
        for ws in clients:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "snapshot"
        pipeline.monitor.signal(signal.SIGTERM)
        codes = []
        for ws in clients:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            codes.append(ws.close_code)
        monitor_code = await asyncio.to_thread(_exit_code, pipeline.monitor, 15)
    finally:
        for ws in clients:
            await ws.close()
    assert codes == [1001] * len(clients), codes
    assert monitor_code == 0, f"monitor exit code {monitor_code}:\n{pipeline.monitor.log_tail()}"
    row.figure("worker_stop_s", stop_s)
    row.figure("applied_after_sigterm", applied_at_stop)
    row.figure("in_flight_logged", "finished the in-flight batch" in log)
    row.figure("left_for_restart", len(left))
    row.figure("reread_after_restart", read_again - len(left))
    row.figure("ws_close_codes", codes)


def _exit_code(proc: Proc, timeout_s: float) -> int | None:
    """Wait for a process already sent SIGTERM to exit on its own (a second SIGTERM could race its shutdown)."""
    assert proc.popen is not None
    try:
        return proc.popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        proc.stop(timeout_s=5)  # reaps it, closes its log; kills it if it hung
