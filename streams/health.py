"""The worker's health: its metrics, the `/healthz` answer, and whether Redis is down.

Redis-down is one state with two writers: the processor while a batch retries Redis, and the alert sweep,
which is how an idle worker learns of an outage (and of the recovery). Both go through `WorkerHealth`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from streams.processor import Processor

BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class WorkerHealth:
    """Metrics (records, batch latency, consumer lag, Redis up) and the health answer of one worker.

    `consumer` returns the Faust consumer once there is one (None before the worker starts); lag is read
    from it at scrape time.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        processor: Processor,
        consumer: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.processor = processor
        self.consumer = consumer
        self.clock = clock
        self.events = Counter(
            "callpulse_worker_events", "Records processed by this worker", ["topic"], registry=registry
        )
        self.batch_seconds = Histogram(
            "callpulse_batch_seconds",
            "Time to process one batch, decode to Redis applied",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=registry,
        )
        self.positions: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to process
        registry.register(self)

    # --- what the worker reports ----------------------------------------------------------------------------

    def applied(self, base: str, topic: str, partition: int, next_offset: int, records: int, seconds: float) -> None:
        """A batch of `records` from `topic[partition]` is in Redis; the partition continues at `next_offset`."""
        self.positions[(topic, partition)] = next_offset
        self.events.labels(base).inc(records)
        self.batch_seconds.observe(seconds)

    @property
    def redis_down_since(self) -> float | None:
        """Unix time Redis stopped answering this worker, None while it answers."""
        return self.processor.redis_down_since

    def sweep_failed_on_redis(self) -> None:
        """The alert sweep could not reach Redis: an idle worker learns of the outage here."""
        if self.processor.redis_down_since is None:
            self.processor.redis_down_since = self.clock()

    def sweep_succeeded(self) -> None:
        """The alert sweep reached Redis: it is up, unless a batch is still retrying (its retries own the state)."""
        if self.processor.redis_down_since is not None and not self.processor.busy:
            self.processor.redis_down_since = None

    # --- what the worker answers ----------------------------------------------------------------------------

    def healthz(self) -> tuple[dict[str, Any], int]:
        """The `/healthz` body and status: 200 while Redis answers, 503 with how long it has not."""
        down = self.redis_down_since
        body = {"ok": down is None, "redis_down_s": None if down is None else round(self.clock() - down, 1)}
        return body, 200 if down is None else 503

    def metrics_text(self) -> bytes:
        """The `/metrics` body."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Consumer lag per assigned partition (highwater minus the next offset to process), and Redis up."""
        lag = GaugeMetricFamily(
            "callpulse_consumer_lag", "Messages behind the partition end", labels=["topic", "partition"]
        )
        consumer = self.consumer()
        if consumer is not None:
            try:
                assignment = consumer.assignment()
            except Exception:  # not started, or stopping: no assignment to report
                assignment = set()
            for tp in sorted(assignment):
                high = consumer.highwater(tp)
                if high is None:
                    continue
                pos = self.positions.get((tp.topic, tp.partition))
                lag.add_metric([tp.topic, str(tp.partition)], max(0, high - (pos if pos is not None else 0)))
        yield lag
        up = GaugeMetricFamily(
            "callpulse_worker_redis_up", "1 while this worker's Redis writes succeed, 0 while retrying"
        )
        up.add_metric([], 0 if self.redis_down_since is not None else 1)
        yield up
