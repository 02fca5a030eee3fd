"""Shared fixtures: real servers on free ports, started only for the tests that ask for them.

`broker` is one Apache Kafka (KRaft, the version tools/kafka/pom.xml pins, or $KAFKA_VERSION) per session;
tests keep apart through `topic_prefix`. `private_broker` is a Kafka of the test's own, which it may restart
(data kept) or kill. `tansu` is the embedded Tansu broker the demo falls back to, for the tests of the demo.
`redis_server` is a fresh redis-server per test, which the test may kill, restart or pause. Unit tests request
none of them, so they never start a process.
"""

from __future__ import annotations

import itertools
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from callpulse.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from callpulse.localkafka import LocalKafka, default_version
from callpulse.processes import Proc, env_for, worker_args
from callpulse.settings import Settings
from tests import hangdump
from tests.helpers import wait_for

_prefix_numbers = itertools.count(1)


class TopicPrefix(str):
    """A topic prefix unique in this session, e.g. 't7-'; call it for another fresh one."""

    def __call__(self) -> str:
        return _new_prefix()


def _new_prefix() -> str:
    return f"t{next(_prefix_numbers)}-"


@pytest.fixture(scope="session")
def kafka_version() -> str:
    """The Apache Kafka version the suite runs: $KAFKA_VERSION (the Makefile sets it), else the pinned one."""
    return default_version(os.environ)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, kafka_version: str) -> Iterator[LocalKafka]:
    """One Apache Kafka for the whole session; do not kill or restart it (use `private_broker`)."""
    server = LocalKafka(log_dir=tmp_path_factory.mktemp("kafka"), version=kafka_version)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_broker(tmp_path: Path, kafka_version: str) -> Iterator[LocalKafka]:
    """An Apache Kafka of this test's own, which it may kill or restart (the log dir, and so the data, is kept)."""
    server = LocalKafka(log_dir=tmp_path / "kafka", version=kafka_version)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """The embedded, memory-only Tansu broker of `callpulse demo`, for this test alone."""
    server = EmbeddedBroker(log_dir=tmp_path / "tansu")
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
def settings(broker: LocalKafka, redis_server: EmbeddedRedis, topic_prefix: TopicPrefix) -> Settings:
    """Settings pointing at the session broker and this test's Redis, with its own topics, group and HTTP port."""
    return Settings(
        kafka=broker.bootstrap,
        redis_url=redis_server.url,
        topic_prefix=str(topic_prefix),
        # Consumer groups are broker-wide: a shared group name would rebalance across tests.
        consumer_group=f"{topic_prefix}callpulse",
        http_host="127.0.0.1",
        http_port=free_port(),
        session_timeout_s=6.0,
    )


class Stack:
    """Start callpulse processes (worker, monitor, simulator) for one test; all stopped at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self._n = itertools.count(1)

    def worker(self, settings: Settings, *, web_port: int | None = None) -> Proc:
        """Start `callpulse worker`; it creates the topics and joins the consumer group."""
        n = next(self._n)
        port = web_port or free_port()
        proc = Proc(f"worker{n}", worker_args(settings, web_port=port), env_for(settings),
                    self.tmp_path / f"worker{n}.log")  # fmt: skip
        proc.web_port = port  # type: ignore[attr-defined]
        self.procs.append(proc.start())
        return proc

    def monitor(self, settings: Settings) -> Proc:
        """Start `callpulse monitor` and wait until /healthz answers."""
        n = next(self._n)
        proc = Proc(f"monitor{n}", ["monitor"], env_for(settings), self.tmp_path / f"monitor{n}.log").start()
        self.procs.append(proc)
        url = f"http://{settings.http_host}:{settings.http_port}/healthz"

        def up() -> bool:
            if not proc.alive():
                raise AssertionError(f"monitor exited:\n{proc.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, OSError):
                return False

        wait_for(up, timeout_s=30, message="monitor /healthz")
        return proc

    def stop_all(self) -> None:
        """Stop every process this stack started (SIGTERM, then SIGKILL), all at once, and wait for them."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.procs))) as pool:
            self.stop_in(pool)

    def stop_in(self, pool: ThreadPoolExecutor) -> None:
        """Stop every process this stack started (SIGTERM, then SIGKILL after 10 s) on `pool`'s threads."""
        for proc in self.procs:
            pool.submit(proc.stop, 10)


@pytest.fixture(scope="session")
def reaper() -> Iterator[ThreadPoolExecutor]:
    """Threads that stop the processes of finished tests while the next test runs; the session waits for them all.

    A worker's graceful stop takes about 2 s, nearly all of it mode's shutdown sleeps (it gathers tasks for up to
    1 s, then sleeps 1 s more before closing its loop): waiting for that at each teardown would cost minutes.
    """
    pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="reaper")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)


@pytest.fixture
def stack(tmp_path: Path, reaper: ThreadPoolExecutor) -> Iterator[Stack]:
    """Factory for callpulse processes bound to this test; logs land in the test's tmp dir. At teardown each gets
    SIGTERM (SIGKILL 10 s later if still there) and the next test starts meanwhile."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop_in(reaper)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm the pending-task print (tests/hangdump.py) ahead of pytest-timeout's own timer, which still runs."""
    item.stash[_HANGDUMP] = hangdump.arm(item.nodeid, float(settings.timeout or 0))


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = item.stash.get(_HANGDUMP, None)
    if timer is not None:
        timer.cancel()


_HANGDUMP = pytest.StashKey[Any]()
