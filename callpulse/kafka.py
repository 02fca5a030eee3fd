"""Kafka helpers shared by the commands: create the contract's topics when they are missing."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from callpulse.settings import Settings

log = logging.getLogger("callpulse")
TOPICS: tuple[str, ...] = ("calls", "tickets", "alerts", "deadletter")


async def ensure_topics(settings: Settings, *, partitions: int = 4, timeout_s: float = 60.0) -> None:
    """Create the contract topics (with the prefix) when missing; retry until the broker answers."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [settings.topic(t) for t in TOPICS if settings.topic(t) not in existing]
            for name in wanted:
                try:
                    await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
                except TopicAlreadyExistsError:
                    pass
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("Kafka at %s not ready (%s); retrying", settings.kafka, exc)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()
