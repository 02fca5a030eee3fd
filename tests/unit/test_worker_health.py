"""The worker's health: the Redis-down state its two writers share, and what /healthz and /metrics say."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from callpulse.settings import Settings
from streams.health import WorkerHealth
from streams.processor import Processor, Record
from streams.store import WindowStore


async def no_deadletter(dead: Sequence[tuple[Record, str]]) -> None:
    """Nothing is dead-lettered here."""


@pytest.fixture
async def health() -> AsyncIterator[WorkerHealth]:
    """A worker's health over a processor whose Redis is never reached; the clock reads 1000.0 s."""
    client = aioredis.Redis.from_url("redis://127.0.0.1:9/0")
    processor = Processor(Settings(), WindowStore(client, "unit:"), no_deadletter, clock=lambda: 1000.0)
    yield WorkerHealth(CollectorRegistry(), processor, lambda: None, clock=lambda: 1000.0)
    await client.aclose()


def metric(health: WorkerHealth, name: str) -> float:
    for family in text_string_to_metric_families(health.metrics_text().decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def test_healthz_is_200_while_redis_answers(health: WorkerHealth) -> None:
    assert health.healthz() == ({"ok": True, "redis_down_s": None}, 200)
    assert metric(health, "callpulse_worker_redis_up") == 1


def test_a_failed_sweep_marks_redis_down_and_healthz_says_for_how_long(health: WorkerHealth) -> None:
    health.processor.redis_down_since = 987.5
    health.sweep_failed_on_redis()  # already down: the first failure's time stays
    assert health.healthz() == ({"ok": False, "redis_down_s": 12.5}, 503)
    assert metric(health, "callpulse_worker_redis_up") == 0


def test_an_idle_worker_learns_of_the_outage_from_the_sweep(health: WorkerHealth) -> None:
    health.sweep_failed_on_redis()
    assert health.redis_down_since == 1000.0


def test_a_sweep_that_reaches_redis_clears_the_state_unless_a_batch_is_retrying(health: WorkerHealth) -> None:
    health.sweep_failed_on_redis()
    health.processor.busy = True  # a batch's own retries own the state while it runs
    health.sweep_succeeded()
    assert health.redis_down_since == 1000.0
    health.processor.busy = False
    health.sweep_succeeded()
    assert health.redis_down_since is None


def test_an_applied_batch_counts_its_records_and_moves_the_partition_position(health: WorkerHealth) -> None:
    health.applied("calls", "p-calls", 2, 1500, 500, 0.02)
    health.applied("calls", "p-calls", 2, 2000, 500, 0.03)
    assert metric(health, "callpulse_worker_events_total") == 1000
    assert metric(health, "callpulse_batch_seconds_count") == 2
    assert health.positions[("p-calls", 2)] == 2000
