"""Redis faults: killed and restarted empty, frozen for 30 s, and guarded by a password.

While Redis is away the worker must hold its offsets back (nothing committed past what Redis applied), say so on
its /healthz and /metrics, and keep retrying; once Redis is back, the windows must be exact again, rebuilt from
Kafka when Redis came back empty.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from callpulse.embedded import EmbeddedRedis
from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from tests.faults import harness as h
from tests.helpers import async_wait_for, result_counts

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REBUILDING = "rebuilding every window"  # the worker's log line when it replays Kafka into an empty Redis


async def _caught_up(watch: h.OffsetWatch, what: str, timeout_s: float = 20) -> None:
    await async_wait_for(
        lambda: watch.current == watch.ends(),
        timeout_s=timeout_s,
        interval_s=0.2,
        message=f"the worker to commit {what}",
    )


@pytest.mark.fault_row(5)
async def test_redis_killed_and_restarted_empty_rebuilds_from_kafka(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any, row: Any
) -> None:
    ledger = h.Ledger(settings.topic_prefix)
    now = time.time()
    msgs = h.with_copies(h.messages(h.shuffled(h.small_trace(now, seed=501), seed=2)), share=0.05, seed=3)
    first, second = msgs[: len(msgs) * 2 // 3], msgs[len(msgs) * 2 // 3 :]
    await ensure_topics(settings)
    monitor = stack.monitor(settings)
    worker = stack.worker(settings)
    async with h.Producer(settings, ledger, seed=4) as producer:
        await producer.send(first)
        await h.wait_settled(settings, ledger, timeout_s=60)
        async with h.OffsetWatch(settings, ledger) as watch:
            # committed: nothing of the first part will be redelivered, only a rebuild can bring it back
            await _caught_up(watch, "the first part")

        redis_server.kill()
        down = h.Stopwatch()
        await producer.send(second)  # the worker has something to write, and fails

        async def alerting() -> bool:
            status, body = await h.worker_health(worker)
            up = await h.worker_metric(worker, "callpulse_worker_redis_up")
            return status == 503 and body.get("ok") is False and up == 0 and await h.monitor_health(settings) == 503

        await async_wait_for(
            alerting, timeout_s=30, interval_s=0.2, message="worker /healthz 503, redis_up 0 and monitor /healthz 503"
        )
        detect_s = down()
        await asyncio.sleep(2)  # an outage of a few seconds, retried all along
        assert worker.alive(), f"the worker died while Redis was down:\n{worker.log_tail()}"
        assert monitor.alive(), f"the monitor died while Redis was down:\n{monitor.log_tail()}"
        outage_s = down()

        rebuilds = worker.log_tail(1_000_000).count(REBUILDING)
        redis_server.start()  # same port, empty
        back = h.Stopwatch()
        # and the worker dies inside the rebuild: the next one must take it over (and not wait for a stale lock)
        await async_wait_for(
            lambda: worker.log_tail(1_000_000).count(REBUILDING) > rebuilds,
            timeout_s=30,
            interval_s=0.005,
            message="the worker to start rebuilding",
        )
        worker.kill()
        killed_in_rebuild = not await h.initialised(settings)
        worker = stack.worker(settings)
        counts = await h.wait_settled(settings, ledger, timeout_s=60)
        rebuild_s = back()

    async def healthy() -> bool:
        status, _ = await h.worker_health(worker)
        up = await h.worker_metric(worker, "callpulse_worker_redis_up")
        return status == 200 and up == 1 and await h.monitor_health(settings) == 200

    await async_wait_for(healthy, timeout_s=30, interval_s=0.2, message="worker and monitor healthy again")
    assert worker.alive() and monitor.alive()
    assert killed_in_rebuild, "the kill did not land inside the rebuild"
    assert REBUILDING in worker.log_tail(1_000_000), "the second worker did not take the rebuild over"
    await h.assert_exact(settings, ledger)
    row.figure("events", len(ledger.valid))
    row.figure("alerting_after_s", detect_s)
    row.figure("outage_s", outage_s)
    row.figure("kill_9_inside_rebuild", killed_in_rebuild)
    row.figure("rebuilt_after_s", rebuild_s)
    row.figure("duplicates_vs_copies", f"{counts['duplicate']}/{ledger.copies}")


@pytest.mark.fault_row(6)
async def test_redis_paused_30s_holds_offsets_back(
    settings: Settings, redis_server: EmbeddedRedis, stack: Any, row: Any
) -> None:
    ledger = h.Ledger(settings.topic_prefix)
    now = time.time()
    msgs = h.messages(h.shuffled(h.small_trace(now, seed=601), seed=2))
    first, second = msgs[: len(msgs) // 2], msgs[len(msgs) // 2 :]
    await ensure_topics(settings)
    stack.monitor(settings)
    worker = stack.worker(settings)
    async with h.Producer(settings, ledger, seed=4) as producer, h.OffsetWatch(settings, ledger) as watch:
        await producer.send(first)
        await h.wait_settled(settings, ledger, timeout_s=60)
        await _caught_up(watch, "the first part")
        before = dict(watch.current)

        redis_server.pause()
        paused = h.Stopwatch()
        await producer.send(second)
        worker_503_s = None
        while paused() < 30:
            await asyncio.sleep(0.5)
            assert watch.current == before, (
                f"offsets committed while Redis was frozen: {watch.current} (before the pause: {before})"
            )
            if worker_503_s is None and (await h.worker_health(worker))[0] == 503:
                worker_503_s = paused()
        polls_during = watch.polls
        redis_server.resume()
        back = h.Stopwatch()
        await h.wait_settled(settings, ledger, timeout_s=60)
        catch_up_s = back()
        await _caught_up(watch, "everything after the pause")
        await watch.poll()
    assert worker.alive(), worker.log_tail()
    assert not watch.regressions, watch.regressions[:5]
    assert not watch.unapplied, watch.unapplied[:5]
    counts = await h.assert_exact(settings, ledger)
    row.figure("events", len(ledger.valid))
    row.figure("paused_s", round(paused() - back(), 1))
    row.figure("offset_polls_while_paused", polls_during)
    row.figure("worker_503_after_s", worker_503_s)
    row.figure("catch_up_s", catch_up_s)
    row.figure("duplicates_vs_copies", f"{counts['duplicate']}/{ledger.copies}")


@pytest.mark.fault_row(13)
async def test_redis_password_right_and_wrong(settings: Settings, stack: Any, tmp_path: Path, row: Any) -> None:
    password = "pw with spaces/and:colons@"
    guarded = EmbeddedRedis(password=password, data_dir=tmp_path / "guarded-redis").start()
    try:
        right = settings.replace(redis_url=guarded.url)
        wrong = settings.replace(redis_url=guarded.url.replace(guarded.url.split("@")[0], "redis://:not-it"))
        assert wrong.redis_url != right.redis_url and "not-it" in wrong.redis_url
        ledger = h.Ledger(settings.topic_prefix)
        msgs = h.messages(h.shuffled(h.small_trace(time.time(), seed=1301, agents=5), seed=2))
        await ensure_topics(settings)
        stack.monitor(right)
        refused = stack.worker(wrong)
        async with h.Producer(settings, ledger, seed=4) as producer:
            await producer.send(msgs)
        auth_words = ("WRONGPASS", "invalid username-password", "password")
        await async_wait_for(
            lambda: any(w in refused.log_tail(100_000) for w in auth_words),
            timeout_s=30,
            interval_s=0.2,
            message="the worker's log to name the password problem",
        )
        status, body = await h.worker_health(refused)
        assert status == 503, (status, body)
        async with h.OffsetWatch(right, ledger) as watch:
            await asyncio.sleep(3)  # several commit intervals
            held = await watch.poll()
        assert refused.alive(), f"the worker gave up on a wrong password:\n{refused.log_tail()}"
        assert held == {}, f"offsets committed while no event could be written: {held}"
        assert (await result_counts(right))["ok"] == 0
        retries = refused.log_tail(100_000).count("retrying")
        # SIGTERM while every batch is stuck on Redis: Faust waits for the unacked records without a bound, so the
        # worker only goes with the SIGKILL that follows (offsets stay held back either way). Recorded, not asserted.
        sigterm_code = refused.stop(timeout_s=12)

        worker = stack.worker(right)
        await h.wait_settled(right, ledger, timeout_s=60)
        assert worker.alive(), worker.log_tail()
        await h.assert_exact(right, ledger)
        lines = [ln for ln in refused.log_tail(100_000).splitlines() if any(w in ln for w in auth_words)]
        line = next((ln for ln in lines if "retrying" in ln), lines[0])
        row.figure("events", len(ledger.valid))
        row.figure("wrong_password_retries", retries)
        row.figure("sigterm_exit_code", sigterm_code)
        row.figure("log", line.split("] ", 3)[-1][:120])
    finally:
        guarded.stop()
