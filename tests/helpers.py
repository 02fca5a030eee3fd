"""Test helpers: wait on a condition with a deadline instead of sleeping a fixed time; read the event counters."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from callpulse.connections import redis_options
from callpulse.settings import Settings
from monitor.metrics import RESULTS, TOPICS
from streams.store import WindowStore, namespace

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.05, message: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy and return that; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except AssertionError as exc:  # a predicate may assert; keep polling and report the last failure
            last_exc, value = exc, None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last: {last_exc})" if last_exc is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {message}{detail}")
        time.sleep(interval_s)


async def async_wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll a sync or async `predicate` until it returns something truthy; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                # Bound a hanging check by the deadline too, so the helper never waits past timeout_s.
                value = await asyncio.wait_for(value, max(deadline - time.monotonic(), interval_s))
        except (AssertionError, TimeoutError) as exc:
            last_exc, value = exc, None
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            detail = f" (last: {last_exc})" if last_exc is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {message}{detail}")
        await asyncio.sleep(interval_s)


async def stop_task(task: asyncio.Task[Any], what: str, *, timeout_s: float = 30.0) -> None:
    """Cancel a background task and return once it has ended; its own error (other than the cancel) is raised.

    One cancel is not always enough. A library may turn a cancel into an error of its own (redis-py inside a
    command: callpulse/cancelling.py), which a polling loop that logs errors and goes on then swallows; Python
    3.11's `asyncio.wait_for` swallows one whole when it lands in the turn the awaited result arrives. So the
    cancel is repeated each second; AssertionError naming `what` if the task still runs after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while not task.done():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} still ran {timeout_s} s after it was cancelled")
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.result()


async def result_counts(settings: Settings, client: aioredis.Redis | None = None) -> dict[str, int]:
    """`callpulse_events_total` as the workers store it in Redis, summed over calls and tickets, by result.

    Pass `client` to poll through one connection: a new client per call costs ~15 ms of CPU (redis-py reads its
    package metadata for every new connection), which a tight polling loop takes from the worker under test.
    """
    own = client is None
    if client is None:
        client = redis_client(settings)
    try:
        stats = await WindowStore(client, namespace(settings.topic_prefix)).read_stats()
    finally:
        if own:
            await client.aclose()
    counts = dict.fromkeys(RESULTS, 0)
    for key, value in stats.items():
        topic, _, result = key.partition("|")
        if topic in TOPICS and result in counts:
            counts[result] += value
    return counts


def redis_client(settings: Settings, *, timeout_s: float = 5) -> aioredis.Redis:
    """An asyncio Redis client for `settings.redis_url` (TLS and password as the settings say); aclose() it."""
    return aioredis.Redis.from_url(settings.redis_url, socket_timeout=timeout_s, **redis_options(settings))
