"""The Faust app: one agent each on `calls` and `tickets`, fed whole fetches, applying them through the processor.

The wiring only. The consumer that hands the agents one batch per (topic, partition, fetch) and commits the
applied ones is `streams.consumer`; the worker's metrics, `/healthz` and Redis-down state are
`streams.health`; decoding, KPI math and the store are the processor's.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from callpulse.cancelling import reraise_if_cancelling
from callpulse.connections import faust_credentials, redis_options
from callpulse.exceptions import ShuttingDown
from callpulse.settings import Settings
from streams.alerts import Alert
from streams.consumer import BatchTransport, FetchBatch, FetchSchema
from streams.engine import AlertEngine
from streams.health import METRICS_CONTENT_TYPE, WorkerHealth
from streams.notify import Notifier, StoreEpisodeMemory
from streams.processor import REDIS_ERRORS, Processor, Record, deadletter_value
from streams.replay import rebuild_if_empty
from streams.store import WindowStore, namespace

log = logging.getLogger("callpulse.worker")

# Batches the agents' buffer holds per topic (each up to `batch_max` records): enough to keep the agent busy
# while the next fetch is on its way; a rebalance drops what is buffered and waits only for the batch in hand.
BUFFERED_BATCHES = 16

# On SIGTERM, how long the batch in hand may take to finish so its offsets are committed on the way out.
FINISH_IN_FLIGHT_S = 5.0


class CallpulseApp(faust.App):
    """faust.App with the batch consumer and without Faust's per-record stats sensor."""

    callpulse_fetch_max_wait_ms: int = 1500
    callpulse_stopping: bool = False

    async def on_stop(self) -> None:
        """Note the shutdown first, so a batch stuck retrying Redis gives up instead of holding it forever."""
        self.callpulse_stopping = True
        await super().on_stop()

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)

    def on_init_dependencies(self) -> Any:
        """Drop Faust's built-in stats sensor: it runs on every message, and the worker keeps its own metrics."""
        deps = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return deps


def faust_app(settings: Settings, *, web_host: str, web_port: int) -> CallpulseApp:
    """The Faust app and its consumer settings; nothing connects until the worker starts."""
    app = CallpulseApp(
        f"{settings.topic_prefix}{settings.consumer_group}",
        broker=[f"kafka://{host.strip()}" for host in settings.kafka.split(",")],
        broker_credentials=faust_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=4,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 4),
        broker_commit_interval=0.5,
        # Bounds a fetch, hence a batch: small enough to finish inside Faust's wait on a rebalance.
        broker_max_poll_records=settings.batch_max,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=BUFFERED_BATCHES,
        web_enabled=True,
        web_host=web_host,
        web_bind=web_host,
        web_port=web_port,
        producer_acks=-1,
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Faust wants a data directory even without tables; keep it out of the working directory.
        datadir=str(Path(tempfile.gettempdir()) / "callpulse-faust"),
    )
    app.callpulse_fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app


class AlertChecks:
    """Agent alerts evaluated off the consume path: batches only note which agents changed."""

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine
        self.pending: set[str] = set()
        self.wake = asyncio.Event()

    def changed(self, agents: set[str]) -> None:
        """Note agents whose counters a batch changed."""
        if agents:
            self.pending.update(agents)
            self.wake.set()

    async def run(self) -> None:
        """Check the noted agents whenever there are some; on failure keep them and retry in 0.5 s."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            agents = set(self.pending)
            self.pending.clear()
            try:
                await self.engine.check_agents(agents)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reraise_if_cancelling()
                log.warning("alert check failed for %d agents: %s", len(agents), exc)
                self.pending.update(agents)
                await asyncio.sleep(0.5)
                self.wake.set()


class Ingest:
    """The agents' body: apply each fetched batch through the processor, then mark it applied and ack it."""

    def __init__(self, app: CallpulseApp, processor: Processor, health: WorkerHealth, alerts: AlertChecks) -> None:
        self.app = app
        self.processor = processor
        self.health = health
        self.alerts = alerts

    async def consume(self, stream: Any, base: str) -> None:
        """Apply the batches of one topic (`base` is 'calls' or 'tickets') until the stream ends."""
        async for event in stream.noack().events():
            batch: FetchBatch = event.value
            records = [Record(base, batch.partition, r.offset, r.key, r.value) for r in batch.records]
            started = time.perf_counter()
            task = asyncio.ensure_future(self.processor.process(records))
            try:
                outcome = await asyncio.shield(task)
            except ShuttingDown as exc:
                self._forget_unacked()
                log.warning("stopping with %d records unapplied (%s): they stay uncommitted", len(records), exc)
                return
            except asyncio.CancelledError:
                await self._finish_before_stopping(task, len(records))
                await self._applied(stream, event, base, len(records), started)
                raise
            except Exception as exc:
                log.critical(
                    "batch %s[%d]@%d..%d failed, stopping the worker so it restarts from the last committed offset",
                    base,
                    batch.partition,
                    batch.first_offset,
                    batch.last_offset,
                    exc_info=True,
                )
                await self.app.crash(exc)
                raise
            await self._applied(stream, event, base, len(records), started)
            # Time in state matters to alerts only when a rule watches a KPI made of it (occupancy).
            self.alerts.changed(outcome.agents | outcome.timed if self.alerts.engine.states_matter else outcome.agents)

    async def _applied(self, stream: Any, event: Any, base: str, n: int, started: float) -> None:
        """The batch is in Redis: only now may its offsets be committed (`FetchLedger`); the ack tells Faust."""
        batch: FetchBatch = event.value
        batch.applied = True
        await stream.ack(event)
        self.health.applied(base, batch.topic, batch.partition, batch.last_offset + 1, n, time.perf_counter() - started)

    async def _finish_before_stopping(self, task: asyncio.Future[Any], n: int) -> None:
        """Cancelled (shutting down): finish the batch in hand, unless Redis is away; then it stays uncommitted.

        Returns normally only when the batch was applied; the caller marks it applied and re-raises.
        """
        try:
            if self.processor.redis_down_since is not None:
                raise TimeoutError
            await asyncio.wait_for(task, FINISH_IN_FLIGHT_S)
        except (TimeoutError, asyncio.CancelledError, Exception):
            task.cancel()
            self._forget_unacked()
            log.warning("stopping with %d records unapplied: they stay uncommitted", n)
            raise asyncio.CancelledError from None
        log.info("finished the in-flight batch of %d records before stopping", n)

    def _forget_unacked(self) -> None:
        # Faust's shutdown waits for every unacked message, which must not hang on a batch that cannot be
        # applied now. Unapplied, it is never committed (`FetchLedger`) and is read again after a restart.
        unacked = getattr(self.app.consumer, "_unacked_messages", None)
        if unacked is not None:
            unacked.clear()


async def alert_sweep(
    engine: AlertEngine, health: WorkerHealth, store: WindowStore, rebuild: Callable[[], Awaitable[Any]]
) -> None:
    """The 1 s sweep of every agent's alerts; also how an idle worker learns whether Redis answers.

    If Redis came back without its data, `rebuild` it first: now, not when the next record happens to arrive.
    """
    try:
        if not await store.initialised():
            await rebuild()
        await engine.sweep()
    except REDIS_ERRORS as exc:
        reraise_if_cancelling()
        health.sweep_failed_on_redis()
        log.warning("alert sweep failed, Redis unavailable: %s", exc)
        return
    except Exception as exc:
        reraise_if_cancelling()
        log.warning("alert sweep failed: %s", exc)
        return
    health.sweep_succeeded()


def build_app(settings: Settings, *, web_host: str = "127.0.0.1", web_port: int = 6066) -> faust.App:
    """Build the worker's Faust app from settings; nothing connects until the worker starts."""
    app = faust_app(settings, web_host=web_host, web_port=web_port)
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=5, **redis_options(settings)
    )
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    deadletter_topic = settings.topic("deadletter")
    alerts_topic = settings.topic("alerts")

    async def send_deadletter(dead: Sequence[tuple[Record, str]]) -> None:
        futures = []
        for record, reason in dead:
            value = deadletter_value(record, reason, source_topic=settings.topic(record.topic))
            futures.append(await app.producer.send(deadletter_topic, record.key, value, None, None, None))
        for fut in futures:
            await fut

    def alert_sent(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("could not publish an alert to %s: %s", alerts_topic, fut.exception())

    registry = CollectorRegistry()  # the worker's /metrics: health and notifications
    notifier = Notifier(settings, registry, team_of=store.agent_team, memory=StoreEpisodeMemory(store))

    async def publish_alert(alert: Alert) -> None:
        notifier.submit(alert.to_message())  # never waits: a background task POSTs to the webhooks
        # Queue it for Kafka without waiting for the broker's ack: websocket clients already have it (Redis
        # pub/sub), and one slow ack must not hold up the alerts evaluated after it.
        value = orjson.dumps(alert.to_message())
        fut = await app.producer.send(alerts_topic, alert.id.encode(), value, None, None, None)
        asyncio.ensure_future(fut).add_done_callback(alert_sent)

    processor = Processor(settings, store, send_deadletter)
    processor.on_empty = lambda: rebuild_if_empty(settings, store)
    processor.stopping = lambda: app.callpulse_stopping
    engine = AlertEngine(settings, store, publish_alert)
    health = WorkerHealth(registry, processor, lambda: getattr(app, "_consumer", None))
    alerts = AlertChecks(engine)
    ingest = Ingest(app, processor, health, alerts)
    app.callpulse_engine = engine  # type: ignore[attr-defined]
    app.callpulse_processor = processor  # type: ignore[attr-defined]
    app.callpulse_store = store  # type: ignore[attr-defined]
    app.callpulse_health = health  # type: ignore[attr-defined]

    for base in ("calls", "tickets"):
        topic = app.topic(settings.topic(base), schema=FetchSchema())
        app.agent(topic, name=base)(_agent_body(ingest, base))

    @app.task
    async def alert_checks() -> None:
        await alerts.run()

    @app.task
    async def deliver_notifications() -> None:
        await notifier.run()

    async def rebuild() -> None:
        await rebuild_if_empty(settings, store)

    @app.timer(settings.sweep_interval_s)
    async def sweep() -> None:
        await alert_sweep(engine, health, store, rebuild)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type=, so the header is given whole.
        return web.bytes(health.metrics_text(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        body, status = health.healthz()
        return web.json(body, status=status)

    @app.on_before_shutdown.connect  # mode calls handlers as fun(sender, *args, signal=..., **kwargs)
    async def close_redis(app: faust.App, /, *args: Any, **kwargs: Any) -> None:
        await client.aclose()

    return app


def _agent_body(ingest: Ingest, base: str) -> Any:
    """The agent function for one topic (Faust names agents by function, so each gets its own)."""

    async def agent(stream: Any) -> None:
        await ingest.consume(stream, base)

    agent.__name__ = agent.__qualname__ = f"{base}_agent"
    return agent
