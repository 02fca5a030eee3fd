"""The embedded Tansu broker and Redis of `callpulse demo`: real processes on free ports, probed, restarted, killed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from callpulse.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    answers_kafka,
    answers_redis,
    find_broker_bin,
    free_port,
)
from callpulse.exceptions import CallpulseError
from callpulse.kafka import create_topics
from tests.helpers import async_wait_for

pytestmark = pytest.mark.integration


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def _gone(pid: int) -> bool:
    """True when no process (not even an unreaped zombie) has this pid."""
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return False


async def test_tansu_round_trips_a_message(tansu: EmbeddedBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}calls"
    await create_topics(tansu.bootstrap, [topic], partitions=4)
    await create_topics(tansu.bootstrap, [topic], partitions=4)  # idempotent
    producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
    await producer.start()
    try:
        assert await producer.partitions_for(topic) == {0, 1, 2, 3}
        sent = await producer.send_and_wait(topic, b'{"event_id": "e1"}', key=b"a1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=tansu.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert (record.partition, record.offset, record.key, record.value) == (
        sent.partition,
        sent.offset,
        b"a1",
        b'{"event_id": "e1"}',
    )
    assert answers_kafka(tansu.bootstrap, 2.0)


async def test_tansu_restart_is_empty_on_the_same_port(tansu: EmbeddedBroker) -> None:
    await create_topics(tansu.bootstrap, ["before-restart"])
    assert "before-restart" in await _list_topics(tansu.bootstrap)
    port, old_pid = tansu.port, tansu.pid
    assert old_pid is not None

    await asyncio.to_thread(tansu.restart)

    assert tansu.port == port
    assert tansu.pid not in (None, old_pid)
    assert _gone(old_pid)
    assert "before-restart" not in await _list_topics(tansu.bootstrap)


async def test_tansu_kill_then_start(tansu: EmbeddedBroker) -> None:
    pid = tansu.pid
    assert pid is not None
    tansu.kill()
    assert tansu.pid is None and _gone(pid)
    assert not answers_kafka(tansu.bootstrap, 0.5)
    await asyncio.to_thread(tansu.start)
    assert answers_kafka(tansu.bootstrap, 2.0)


def test_answers_kafka_is_false_without_a_broker() -> None:
    assert not answers_kafka(f"127.0.0.1:{free_port()}", 0.5)
    assert not answers_kafka("not-a-server", 0.5)


def test_answers_kafka_is_false_for_a_redis(redis_server: EmbeddedRedis) -> None:
    assert not answers_kafka(f"127.0.0.1:{redis_server.port}", 0.3)


def test_broker_bin_override_must_be_executable(tmp_path: Path) -> None:
    with pytest.raises(CallpulseError, match="CALLPULSE_BROKER_BIN"):
        find_broker_bin({"CALLPULSE_BROKER_BIN": str(tmp_path / "missing"), "PATH": ""})


def test_redis_password_is_required(tmp_path: Path) -> None:
    with EmbeddedRedis(password="s3cret pw", data_dir=tmp_path) as server:
        assert server.url == f"redis://:s3cret%20pw@127.0.0.1:{server.port}/0"
        assert answers_redis(server.url, 1.0)
        assert not answers_redis(f"redis://:wrong@127.0.0.1:{server.port}/0", 1.0)
        assert not answers_redis(f"redis://127.0.0.1:{server.port}/0", 1.0)
        with (
            redis.Redis(host="127.0.0.1", port=server.port, password="wrong", retry=None) as client,
            pytest.raises(redis.AuthenticationError),
        ):
            client.ping()
        with redis.Redis(host="127.0.0.1", port=server.port, password="s3cret pw") as client:
            assert client.set("k", "v") and client.get("k") == b"v"
        pid = server.pid
        assert pid is not None
    assert _gone(pid)


def test_redis_pause_and_resume(redis_server: EmbeddedRedis) -> None:
    redis_server.pause()
    try:
        with (
            redis.Redis.from_url(redis_server.url, socket_timeout=0.3, retry=None) as client,
            pytest.raises(redis.TimeoutError),
        ):
            client.ping()
    finally:
        redis_server.resume()
    with redis.Redis.from_url(redis_server.url, socket_timeout=2.0) as client:
        assert client.ping()


def test_redis_restart_is_empty_on_the_same_port(redis_server: EmbeddedRedis) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        client.set("k", "v")
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.dbsize() == 0


def test_redis_kill_leaves_no_process(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path).start()
    pid = server.pid
    assert pid is not None
    server.kill()
    assert _gone(pid) and not answers_redis(server.url, 0.5)
    server.stop()


async def test_async_wait_for_reports_the_message() -> None:
    with pytest.raises(AssertionError, match="never true"):
        await async_wait_for(lambda: False, timeout_s=0.1, message="never true")
