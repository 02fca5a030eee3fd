"""The notifier's delivery against a real local HTTP receiver: retries with a capped, doubling delay, no retry of
a refusal, a bounded queue that drops (and counts) rather than wait, and `submit` that never blocks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from callpulse.settings import Settings, Webhook
from streams.notify import Notifier
from tests.helpers import async_wait_for, stop_task

pytestmark = pytest.mark.integration


class Scripted:
    """A real HTTP receiver answering POSTs with the statuses it is given, in turn (then 200), recording each."""

    def __init__(self, *statuses: int, retry_after: str | None = None) -> None:
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.attempts: list[Any] = []
        self.release = asyncio.Event()
        self.hold = False
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts.append(orjson.loads(await request.read()))
        if self.hold:
            await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after and status == 429 else {}
        return web.Response(status=status, headers=headers)


@contextlib.asynccontextmanager
async def receiver(scripted: Scripted) -> AsyncIterator[Scripted]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    scripted.port = runner.addresses[0][1]
    try:
        yield scripted
    finally:
        scripted.release.set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    task = asyncio.create_task(notifier.run())
    try:
        yield notifier
    finally:
        await stop_task(task, "the notifier")


def alert(n: int = 1) -> dict[str, Any]:
    return {"type": "alert", "id": f"e{n}", "status": "firing", "kpi": "aht_seconds", "scope": "floor",
            "window": "15m", "value": 500.0, "threshold": 480.0, "severity": "critical",
            "ts": "2026-11-30T10:00:00.000+00:00", "since": "2026-11-30T10:00:00.000+00:00"}  # fmt: skip


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def settings_for(port: int, **tuning: Any) -> Settings:
    hook = Webhook(f"http://127.0.0.1:{port}/hooks/secret")
    return Settings(webhooks=(hook,), notify_backoff_s=0.05, notify_backoff_max_s=0.2, **tuning)


async def test_failed_posts_are_retried_until_accepted() -> None:
    async with receiver(Scripted(503, 500, 502)) as rx:
        registry = CollectorRegistry()
        notifier = Notifier(settings_for(rx.port), registry)
        labels = {"hook": "0", "host": f"127.0.0.1:{rx.port}"}
        async with running(notifier):
            notifier.submit(alert())
            await async_wait_for(lambda: sample(registry, "callpulse_notify_sent_total", **labels) == 1,
                                 message="the fourth attempt accepted")  # fmt: skip
        assert rx.attempts == [alert()] * 4
        assert sample(registry, "callpulse_notify_failures_total", **labels) == 3
        assert sample(registry, "callpulse_notify_receiver_up", **labels) == 1
        assert notifier.senders[0].delay_s == 0, "a success resets the backoff"


def next_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delays the sender announced after each failed attempt ('... next in 0.1 s'), in order."""
    return [float(m.group(1)) for r in caplog.records if (m := re.search(r"next in ([\d.]+) s", r.getMessage()))]


async def test_backoff_doubles_up_to_its_cap_and_then_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="callpulse.notify")
    async with receiver(Scripted(*[503] * 5)) as rx:
        registry = CollectorRegistry()
        notifier = Notifier(settings_for(rx.port, notify_max_attempts=5), registry)
        labels = {"hook": "0", "host": f"127.0.0.1:{rx.port}"}
        async with running(notifier):
            notifier.submit(alert())
            await async_wait_for(lambda: sample(registry, "callpulse_notify_dropped_total", reason="gave_up", **labels),
                                 message="giving up after 5 attempts")  # fmt: skip
        assert len(rx.attempts) == 5
        assert sample(registry, "callpulse_notify_receiver_up", **labels) == 0
        assert next_delays(caplog) == [0.05, 0.1, 0.2, 0.2, 0.2], "0.05 s, doubling, capped at 0.2 s"
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, "one line when the receiver starts failing, one when it gives up"


async def test_a_refusal_is_not_retried() -> None:
    async with receiver(Scripted(404)) as rx:
        registry = CollectorRegistry()
        notifier = Notifier(settings_for(rx.port), registry)
        labels = {"hook": "0", "host": f"127.0.0.1:{rx.port}"}
        async with running(notifier):
            notifier.submit(alert(1))
            notifier.submit(alert(2))
            await async_wait_for(lambda: sample(registry, "callpulse_notify_sent_total", **labels) == 1,
                                 message="the next notification delivered")  # fmt: skip
        assert [a["id"] for a in rx.attempts] == ["e1", "e2"], "the 404 was tried once"
        assert sample(registry, "callpulse_notify_dropped_total", reason="rejected", **labels) == 1


async def test_retry_after_sets_the_next_delay_within_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="callpulse.notify")
    async with receiver(Scripted(429, retry_after="3600")) as rx:
        notifier = Notifier(settings_for(rx.port), CollectorRegistry())
        async with running(notifier):
            notifier.submit(alert())
            await async_wait_for(lambda: len(rx.attempts) == 2, message="the retry after a 429")
        assert next_delays(caplog) == [0.2], "Retry-After: 3600 waits the cap (0.2 s), not the first step (0.05 s)"


async def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    scripted = Scripted()
    scripted.hold = True  # the receiver holds the first POST: everything after it queues up
    async with receiver(scripted) as rx:
        registry = CollectorRegistry()
        notifier = Notifier(settings_for(rx.port, notify_queue_size=3), registry)
        labels = {"hook": "0", "host": f"127.0.0.1:{rx.port}"}
        async with running(notifier):
            notifier.submit(alert(0))
            await async_wait_for(lambda: len(rx.attempts) == 1, message="the first POST held")
            for n in range(1, 11):
                notifier.submit(alert(n))  # returns at once, whatever the receiver does
            await async_wait_for(lambda: notifier.inbox.empty(), message="the inbox routed")
            assert sample(registry, "callpulse_notify_dropped_total", reason="queue_full", **labels) == 7
            assert sample(registry, "callpulse_notify_queued", **labels) == 3
            rx.release.set()
            await async_wait_for(lambda: sample(registry, "callpulse_notify_sent_total", **labels) == 4,
                                 message="the held and the queued ones delivered")  # fmt: skip
        assert [a["id"] for a in rx.attempts] == ["e0", "e1", "e2", "e3"], "delivered in order"
