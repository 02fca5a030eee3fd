"""Shared fixtures: real servers on free ports, started only for the tests that ask for them.

`broker` is one Tansu per session (tests keep apart through `topic_prefix`); `redis_server` is a fresh
redis-server per test, which the test may kill, restart or pause. Unit tests request neither, so they
never start a process.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from callpulse.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from callpulse.settings import Settings

_prefix_numbers = itertools.count(1)


class TopicPrefix(str):
    """A topic prefix unique in this session, e.g. 't7-'; call it for another fresh one."""

    def __call__(self) -> str:
        return _new_prefix()


def _new_prefix() -> str:
    return f"t{next(_prefix_numbers)}-"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the whole session; do not kill or restart it (use `private_broker`)."""
    server = EmbeddedBroker(log_dir=tmp_path_factory.mktemp("broker"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, which the test may kill or restart."""
    server = EmbeddedBroker(log_dir=tmp_path / "broker")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A fresh, empty redis-server for this test; it may kill, restart, pause or resume it."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def topic_prefix() -> TopicPrefix:
    """A prefix unique to this test (a str such as 't3-'); calling it gives further fresh prefixes."""
    return TopicPrefix(_new_prefix())


@pytest.fixture
def settings(broker: EmbeddedBroker, redis_server: EmbeddedRedis, topic_prefix: TopicPrefix) -> Settings:
    """Settings pointing at the session broker and this test's Redis, with its own topics, group and HTTP port."""
    return Settings(
        kafka=broker.bootstrap,
        redis_url=redis_server.url,
        topic_prefix=str(topic_prefix),
        # Consumer groups are broker-wide: a shared group name would rebalance across tests.
        consumer_group=f"{topic_prefix}callpulse",
        http_host="127.0.0.1",
        http_port=free_port(),
    )
