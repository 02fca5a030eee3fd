"""Kafka helpers shared by the commands: create the contract's topics when they are missing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

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


async def ensure_topics(settings: Settings, *, partitions: int = 4, timeout_s: float = 60.0) -> None:
    """Create the contract topics (with the prefix) when missing; retry until the broker answers.

    Refused credentials or an untrusted certificate stop at once with a KafkaAuthError naming the setting.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    names = [settings.topic(t) for t in TOPICS]
    security = kafka_security_options(settings)
    while True:
        try:
            await check_kafka(settings)
            await create_topics(settings.kafka, names, partitions=partitions, timeout_s=10.0, security=security)
            return
        except KafkaAuthError:
            raise
        except (KafkaError, OSError, CallpulseError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("Kafka at %s not ready (%s); retrying", settings.kafka, exc)
            await asyncio.sleep(1.0)
