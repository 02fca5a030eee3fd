"""Authenticated, encrypted brokers: Apache Kafka's SASL_SSL listener (SCRAM and PLAIN users, a CA made by the test)
and redis-server's TLS port, used by the worker, monitor, replay and simulator through the CALLPULSE_* settings."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from callpulse.connections import KafkaAuthError, check_kafka, kafka_options
from callpulse.embedded import EmbeddedRedis, RedisTls, free_port
from callpulse.kafka import ensure_topics
from callpulse.localkafka import LocalKafka, SecureListener
from callpulse.processes import env_for
from callpulse.settings import Settings
from tests.conftest import Stack, TopicPrefix
from tests.helpers import async_wait_for, result_counts
from tests.tls import TlsFiles, make_ca

pytestmark = pytest.mark.integration

SCRAM_PASSWORD = "scram-pw-7Hq2x"
PLAIN_PASSWORD = "plain-pw-4Rk9v"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1, made for this module."""
    return make_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles, kafka_version: str) -> Iterator[LocalKafka]:
    """Apache Kafka with a SASL_SSL listener: user alice (SCRAM-SHA-256/512) and bob (PLAIN)."""
    listener = SecureListener(
        cert_pem=tls.cert_pem,
        key_pem=tls.key_pem,
        scram_users={"alice": SCRAM_PASSWORD},
        plain_users={"bob": PLAIN_PASSWORD},
    )
    server = LocalKafka(log_dir=tmp_path_factory.mktemp("secure-kafka"), version=kafka_version, secure=listener)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path, tls: TlsFiles) -> Iterator[EmbeddedRedis]:
    """A redis-server listening on a TLS port only, with the module's certificate."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis", tls=RedisTls(tls.cert_pem, tls.key_pem, tls.ca_pem))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def secure_settings(kafka: LocalKafka, tls: TlsFiles, prefix: str, **changes: Any) -> Settings:
    """Settings for the SASL_SSL listener as alice with SCRAM-SHA-512, trusting the test CA."""
    settings = Settings(
        kafka=kafka.secure_bootstrap,
        kafka_security="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_username="alice",
        kafka_password=SCRAM_PASSWORD,
        kafka_ca=str(tls.ca_pem),
        topic_prefix=prefix,
        consumer_group=f"{prefix}callpulse",
        http_host="127.0.0.1",
        http_port=free_port(),
        session_timeout_s=6.0,
    )
    return settings.replace(**changes)


def run_cli(settings: Settings, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `callpulse ARGS` with the settings in its environment; stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "callpulse.cli", *args],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [("SCRAM-SHA-256", "alice", SCRAM_PASSWORD), ("SCRAM-SHA-512", "alice", SCRAM_PASSWORD),
     ("PLAIN", "bob", PLAIN_PASSWORD)],
)  # fmt: skip
async def test_each_sasl_mechanism_round_trips_a_message_over_tls(
    secure_kafka: LocalKafka, tls: TlsFiles, topic_prefix: TopicPrefix, mechanism: str, user: str, password: str
) -> None:
    settings = secure_settings(
        secure_kafka, tls, topic_prefix, kafka_sasl_mechanism=mechanism, kafka_username=user, kafka_password=password
    )
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**kafka_options(settings))
    await producer.start()
    try:
        sent = await producer.send_and_wait(settings.topic("calls"), b'{"event_id": "e1"}', partition=2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(settings.topic("calls"), **kafka_options(settings), auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.partition, record.offset, record.value) == (sent.partition, sent.offset, b'{"event_id": "e1"}')


async def test_wrong_password_is_refused_with_the_setting_named(
    secure_kafka: LocalKafka, tls: TlsFiles, topic_prefix: TopicPrefix
) -> None:
    settings = secure_settings(secure_kafka, tls, topic_prefix, kafka_password="not-the-password")
    with pytest.raises(KafkaAuthError, match="CALLPULSE_KAFKA_PASSWORD") as caught:
        await check_kafka(settings)
    assert "not-the-password" not in str(caught.value)


async def test_untrusted_certificate_is_refused_with_the_ca_setting_named(
    secure_kafka: LocalKafka, tls: TlsFiles, topic_prefix: TopicPrefix
) -> None:
    settings = secure_settings(secure_kafka, tls, topic_prefix, kafka_ca=None)  # the system store lacks the test CA
    with pytest.raises(KafkaAuthError, match="CALLPULSE_KAFKA_CA"):
        await ensure_topics(settings)


@pytest.mark.parametrize(
    "command", [["simulate", "--backfill", "--duration", "60"], ["worker", "--web-port", "0"], ["replay"]]
)
def test_commands_with_a_wrong_password_print_one_line_naming_the_setting(
    secure_kafka: LocalKafka, tls: TlsFiles, topic_prefix: TopicPrefix, command: list[str]
) -> None:
    settings = secure_settings(secure_kafka, tls, topic_prefix, kafka_password="wrong-pw-Xy3")
    done = run_cli(settings, *command)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 1, done.stdout
    assert len(lines) == 1, done.stdout
    assert re.fullmatch(
        r"callpulse: Kafka at 127\.0\.0\.1:\d+ refused SASL SCRAM-SHA-512 login of user 'alice': check "
        r"CALLPULSE_KAFKA_PASSWORD .*",
        lines[0],
    ), lines[0]
    assert "wrong-pw-Xy3" not in done.stdout


async def test_worker_monitor_simulator_and_replay_over_sasl_ssl_and_rediss(
    secure_kafka: LocalKafka, tls_redis: EmbeddedRedis, tls: TlsFiles, topic_prefix: TopicPrefix, stack: Stack,
    tmp_path: Path,
) -> None:  # fmt: skip
    settings = secure_settings(secure_kafka, tls, topic_prefix, redis_url=tls_redis.url, redis_ca=str(tls.ca_pem))
    assert settings.redis_url.startswith("rediss://")
    await ensure_topics(settings)
    stack.monitor(settings)
    worker = stack.worker(settings)
    simulate = run_cli(settings, "simulate", "--backfill", "--duration", "900", "--agents", "6", "--rate", "2")
    assert simulate.returncode == 0, simulate.stdout
    sent = int(re.findall(r"sent (\d+) events", simulate.stdout)[-1])

    async def all_counted() -> bool:
        assert worker.alive(), worker.log_tail()
        counts = await result_counts(settings)
        return counts["ok"] == sent

    await async_wait_for(all_counted, timeout_s=90, interval_s=0.5, message=f"{sent} events counted over TLS")
    replay = run_cli(settings, "replay")
    assert replay.returncode == 0, replay.stdout
    assert int(re.findall(r"replayed (\d+) records", replay.stdout)[-1]) >= sent

    # Neither the monitor's /metrics nor any process's output carries the password.
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.http_port}/metrics", timeout=10) as resp:
        exposition = resp.read().decode()
    assert "callpulse_events_total" in exposition
    logs = [p.read_text(errors="replace") for p in tmp_path.glob("*.log")]
    for text in [exposition, simulate.stdout, replay.stdout, *logs]:
        assert SCRAM_PASSWORD not in text
