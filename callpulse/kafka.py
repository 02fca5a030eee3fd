"""Kafka helpers shared by the commands: create the contract's topics when they are missing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.admin import DeleteGroupsRequest

from callpulse.connections import KafkaAuthError, check_kafka, kafka_security_options
from callpulse.exceptions import CallpulseError
from callpulse.settings import Settings

log = logging.getLogger("callpulse")
TOPICS: tuple[str, ...] = ("calls", "tickets", "alerts", "deadletter")
_TOPIC_ALREADY_EXISTS = 36


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: int = 4,
    timeout_s: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Create topics with `partitions` partitions; one that already exists is left as it is.

    `security` holds aiokafka's security options (callpulse.connections.kafka_security_options); None: PLAINTEXT.

    The broker's per-topic error codes are checked: some brokers answer "already exists" in the response
    instead of raising, and any other code is an error worth stopping on.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **dict(security or {})
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        response = await asyncio.wait_for(
            admin.create_topics([NewTopic(name, partitions, 1) for name in wanted]), timeout_s
        )
    except TimeoutError as exc:
        raise CallpulseError(f"creating topics {wanted} on {bootstrap} took more than {timeout_s} s") from exc
    finally:
        await admin.close()
    for topic_error in response.topic_errors:
        name, code, detail = topic_error[0], topic_error[1], topic_error[-1]
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise CallpulseError(f"creating topic {name!r} on {bootstrap} failed: Kafka error {code} ({detail})")


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics` (a topic that does not exist has none), fetching their metadata first.

    A started consumer that has neither subscribed nor been assigned knows no topic on Apache Kafka 4.x: its
    bootstrap asks for the metadata of no topic (Tansu answers with every topic, so this went unnoticed), and
    `partitions_for_topic` alone finds nothing. aiokafka has no public call that fetches one topic's metadata
    into a consumer, hence its client's `set_topics`.
    """
    names = list(topics)
    await consumer._client.set_topics(names)
    return [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]


class _Quiet(logging.Filter):
    """Drop a library's own connection errors while callpulse reports them once, with the fix, itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger, quiet = logging.getLogger(logger_name), _Quiet()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaConnectionError):
        return "no broker answers"
    return str(exc) or type(exc).__name__


async def ensure_topics(
    settings: Settings, *, partitions: int = 4, timeout_s: float | None = 60.0, backoff_max_s: float = 30.0
) -> None:
    """Create the contract topics (with the prefix) when missing, waiting for the broker to answer (`with_backoff`)."""
    names = [settings.topic(t) for t in TOPICS]

    async def create() -> None:
        await check_kafka(settings)
        await create_topics(
            settings.kafka, names, partitions=partitions, timeout_s=10.0, security=kafka_security_options(settings)
        )

    await with_backoff(settings, create, timeout_s=timeout_s, backoff_max_s=backoff_max_s)


async def wait_for_broker(settings: Settings, *, timeout_s: float | None = None) -> None:
    """Return once the broker answers (`with_backoff`): what producers and replay do before they start."""

    async def connect() -> None:
        await check_kafka(settings)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka, request_timeout_ms=10_000, **kafka_security_options(settings)
        )
        try:
            await asyncio.wait_for(admin.start(), 10.0)
        except TimeoutError as exc:
            raise CallpulseError("no answer within 10 s") from exc
        finally:
            await admin.close()

    await with_backoff(settings, connect, timeout_s=timeout_s)


async def with_backoff(
    settings: Settings,
    action: Callable[[], Awaitable[None]],
    *,
    timeout_s: float | None = 60.0,
    backoff_max_s: float = 30.0,
) -> None:
    """Run `action` until the broker lets it succeed.

    While it does not, one line says so, naming the setting and the fix, and the next try waits twice as long
    as the last (from 1 s up to `backoff_max_s`). `timeout_s` None waits for ever; else a CallpulseError
    after that many seconds. Refused credentials or an untrusted certificate (KafkaAuthError) stop at once.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    delay_s = 1.0
    while True:
        try:
            with _quiet("aiokafka"):
                await action()
            return
        except KafkaAuthError:
            raise
        except (KafkaError, OSError, CallpulseError) as exc:
            where = f"Kafka at {settings.kafka} (CALLPULSE_KAFKA, --kafka)"
            fix = "start the broker, or point CALLPULSE_KAFKA at one that runs"
            if deadline is not None and loop.time() + delay_s > deadline:
                raise CallpulseError(f"{where} did not answer within {timeout_s:g} s ({_reason(exc)}): {fix}") from exc
            log.warning("%s: %s; %s. Retrying in %g s", where, _reason(exc), fix, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, backoff_max_s)


async def remove_deployment(settings: Settings, *, timeout_s: float = 15.0) -> list[str]:
    """Delete a deployment's topics (its prefix's) and its consumer group; returns the topics deleted.

    The demo calls this on exit when it ran under its own prefix on a broker it did not start.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka, request_timeout_ms=int(timeout_s * 1000), **kafka_security_options(settings)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        present = set(await admin.list_topics())
        names = [settings.topic(t) for t in TOPICS if settings.topic(t) in present]
        if names:
            await asyncio.wait_for(admin.delete_topics(names), timeout_s)
        group = f"{settings.topic_prefix}{settings.consumer_group}"
        try:
            # aiokafka's admin has no delete_consumer_groups: send DeleteGroups to the group's coordinator.
            coordinator = await admin.find_coordinator(group)
            await asyncio.wait_for(admin._send_request(DeleteGroupsRequest([group]), coordinator), timeout_s)
        except KafkaError as exc:
            log.info("could not delete consumer group %s: %s", group, exc)
        return names
    finally:
        await admin.close()
