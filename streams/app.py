"""The Faust app: agents on `calls` and `tickets` that batch records into the processor.

Thin on purpose: decoding, KPI math and the store live in their own modules. What is here is
the Kafka side: a consumer that doesn't wait 1.5 s per fetch, batches of up to `batch_max`
records acked only after Redis applied them, and the worker's own health endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from callpulse.exceptions import ShuttingDown
from callpulse.settings import Settings
from streams.alerts import Alert
from streams.engine import AlertEngine
from streams.processor import REDIS_ERRORS, Processor, Record, deadletter_value
from streams.replay import rebuild_if_empty
from streams.store import WindowStore, namespace

log = logging.getLogger("callpulse.worker")


class _FastConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust hard-codes fetch_max_wait_ms=1500, about a second of latency per event: lower it."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "callpulse_fetch_max_wait_ms", 1500)
        return consumer


class _FastConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _FastConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _FastTransport(faust_aiokafka.Transport):
    Consumer = _FastConsumer


class CallpulseApp(faust.App):
    """faust.App using the low-latency consumer."""

    callpulse_fetch_max_wait_ms: int = 1500
    callpulse_stopping: bool = False

    async def on_stop(self) -> None:
        """Note the shutdown first, so a batch stuck retrying Redis gives up instead of holding it forever."""
        self.callpulse_stopping = True
        await super().on_stop()

    def _new_transport(self) -> Any:
        return _FastTransport(self.conf.broker_consumer, self)

    def on_init_dependencies(self) -> Any:
        """Drop Faust's built-in stats sensor: it runs on every record, and the worker keeps its own metrics."""
        deps = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return deps


class WorkerHealth:
    """The worker's own metrics: events, batch latency, consumer lag (read at scrape time)."""

    def __init__(self, app: faust.App, registry: CollectorRegistry) -> None:
        self.app = app
        self.registry = registry
        self.events = Counter(
            "callpulse_worker_events", "Records processed by this worker", ["topic"], registry=registry
        )
        self.batch_seconds = Histogram(
            "callpulse_batch_seconds",
            "Time to process one batch, decode to Redis applied",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.positions: dict[tuple[str, int], int] = {}
        registry.register(self)

    def collect(self) -> Any:
        """Consumer lag per assigned partition: highwater minus the next offset to process."""
        lag = GaugeMetricFamily(
            "callpulse_consumer_lag", "Messages behind the partition end", labels=["topic", "partition"]
        )
        consumer = getattr(self.app, "_consumer", None)
        if consumer is not None:
            try:
                assignment = consumer.assignment()
            except Exception:
                assignment = set()
            for tp in sorted(assignment):
                high = consumer.highwater(tp)
                if high is None:
                    continue
                pos = self.positions.get((tp.topic, tp.partition))
                lag.add_metric([tp.topic, str(tp.partition)], max(0, high - (pos if pos is not None else 0)))
        yield lag
        processor = getattr(self.app, "callpulse_processor", None)
        up = GaugeMetricFamily(
            "callpulse_worker_redis_up", "1 while this worker's Redis writes succeed, 0 while retrying"
        )
        up.add_metric([], 0 if processor is not None and processor.redis_down_since is not None else 1)
        yield up


def build_app(settings: Settings, *, web_host: str = "127.0.0.1", web_port: int = 6066) -> faust.App:
    """Build the worker's Faust app from settings; nothing connects until the worker starts."""
    app = CallpulseApp(
        f"{settings.topic_prefix}{settings.consumer_group}",
        broker=[f"kafka://{host.strip()}" for host in settings.kafka.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=4,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 4),
        broker_commit_interval=0.5,
        broker_max_poll_records=settings.batch_max,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        web_enabled=True,
        web_host=web_host,
        web_port=web_port,
        producer_acks=-1,
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Faust wants a data directory even without tables; keep it out of the working directory.
        datadir=str(Path(tempfile.gettempdir()) / "callpulse-faust"),
    )
    app.callpulse_fetch_max_wait_ms = settings.fetch_max_wait_ms
    registry = CollectorRegistry()
    health = WorkerHealth(app, registry)
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    deadletter_topic = settings.topic("deadletter")

    async def send_deadletter(dead: list[tuple[Record, str]]) -> None:
        futures = []
        for record, reason in dead:
            value = deadletter_value(record, reason, source_topic=settings.topic(record.topic))
            futures.append(await app.producer.send(deadletter_topic, record.key, value, None, None, None))
        for fut in futures:
            await fut

    processor = Processor(settings, store, send_deadletter)
    processor.on_empty = lambda: rebuild_if_empty(settings, store)
    processor.stopping = lambda: app.callpulse_stopping
    alerts_topic = settings.topic("alerts")

    def _alert_sent(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("could not publish an alert to %s: %s", alerts_topic, fut.exception())

    async def publish_alert(alert: Alert) -> None:
        # Queue it for Kafka without waiting for the broker's ack: websocket clients already have it (Redis
        # pub/sub), and one slow ack must not hold up the alerts evaluated after it.
        value = orjson.dumps(alert.to_message())
        fut = await app.producer.send(alerts_topic, alert.id.encode(), value, None, None, None)
        asyncio.ensure_future(fut).add_done_callback(_alert_sent)

    engine = AlertEngine(settings, store, publish_alert)
    app.callpulse_engine = engine  # type: ignore[attr-defined]
    app.callpulse_processor = processor  # type: ignore[attr-defined]
    app.callpulse_store = store  # type: ignore[attr-defined]

    def forget_unacked(events: Any) -> None:
        # Giving up while stopping: these records (and any still buffered behind them) stay unacked, so they
        # are never committed and are read again after a restart. Faust's shutdown waits for every unacked
        # record, which must not hang on records that cannot be applied now.
        unacked = getattr(app.consumer, "_unacked_messages", None)
        if unacked is not None:
            unacked.clear()

    async def consume(stream: Any, base: str) -> None:
        async for events in stream.noack_take(settings.batch_max, within=settings.batch_within_s):
            started = time.perf_counter()
            records = [
                Record(base, ev.message.partition, ev.message.offset, ev.message.key, ev.message.value) for ev in events
            ]
            task = asyncio.ensure_future(processor.process(records))
            try:
                outcome = await asyncio.shield(task)
            except ShuttingDown as exc:
                forget_unacked(events)
                log.warning("stopping with %d records unapplied (%s): they stay uncommitted", len(records), exc)
                return
            except asyncio.CancelledError:
                # Shutting down: finish the in-flight batch so its offsets are committed on the way out.
                # Unless Redis is away: then nothing can finish, and the unacked offsets simply stay uncommitted.
                try:
                    if processor.redis_down_since is not None:
                        raise TimeoutError
                    await asyncio.wait_for(task, 5.0)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    task.cancel()
                    forget_unacked(events)
                    log.warning("stopping with %d records unapplied: they stay uncommitted", len(records))
                    raise
                for ev in events:
                    await stream.ack(ev)
                log.info("finished the in-flight batch of %d records before stopping", len(records))
                raise
            except Exception as exc:
                first, last = records[0], records[-1]
                log.critical(
                    "batch %s[%d]@%d..%d failed, stopping the worker so it restarts from the last committed offset",
                    base,
                    first.partition,
                    first.offset,
                    last.offset,
                    exc_info=True,
                )
                await app.crash(exc)
                raise
            for ev in events:
                await stream.ack(ev)
                health.positions[(ev.message.topic, ev.message.partition)] = ev.message.offset + 1
            health.events.labels(base).inc(len(records))
            health.batch_seconds.observe(time.perf_counter() - started)
            if outcome.agents:
                pending_agents.update(outcome.agents)
                pending_wake.set()

    pending_agents: set[str] = set()
    pending_wake = asyncio.Event()

    @app.task
    async def alert_checks() -> None:
        """Evaluate agent alerts off the consume path: batches only note which agents changed."""
        while True:
            await pending_wake.wait()
            pending_wake.clear()
            agents = set(pending_agents)
            pending_agents.clear()
            try:
                await engine.check_agents(agents)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alert check failed for %d agents: %s", len(agents), exc)
                pending_agents.update(agents)
                await asyncio.sleep(0.5)
                pending_wake.set()

    calls_topic = app.topic(settings.topic("calls"), value_type=bytes, key_type=bytes)
    tickets_topic = app.topic(settings.topic("tickets"), value_type=bytes, key_type=bytes)

    @app.agent(calls_topic, name="calls")
    async def calls_agent(stream: Any) -> None:
        await consume(stream, "calls")

    @app.agent(tickets_topic, name="tickets")
    async def tickets_agent(stream: Any) -> None:
        await consume(stream, "tickets")

    @app.timer(settings.sweep_interval_s)
    async def alert_sweep() -> None:
        try:
            if not await store.initialised():
                # Redis came back without its data: rebuild now, not when the next record happens to arrive.
                await rebuild_if_empty(settings, store)
            await engine.sweep()
        except REDIS_ERRORS as exc:
            # An idle worker learns of a Redis outage here too, so /healthz and redis_up tell the truth.
            if processor.redis_down_since is None:
                processor.redis_down_since = time.time()
            log.warning("alert sweep failed, Redis unavailable: %s", exc)
            return
        except Exception as exc:
            log.warning("alert sweep failed: %s", exc)
            return
        if processor.redis_down_since is not None and not processor.busy:
            processor.redis_down_since = None

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type=, so the header is given whole.
        return web.bytes(
            generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        down = processor.redis_down_since
        body = {"ok": down is None, "redis_down_s": None if down is None else round(time.time() - down, 1)}
        return web.json(body, status=200 if down is None else 503)

    @app.on_before_shutdown.connect
    async def close_redis(app: faust.App, **kwargs: Any) -> None:
        await client.aclose()

    return app
