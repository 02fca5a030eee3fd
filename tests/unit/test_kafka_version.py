"""One Kafka version everywhere: the release tools/kafka/pom.xml pins is the one compose and the docs name."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from callpulse.localkafka import default_version

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_the_kafka_the_tests_run() -> None:
    pinned = default_version({})
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    images = {name: s["image"] for name, s in services.items() if str(s.get("image", "")).startswith("apache/kafka:")}
    assert images, "docker-compose.yml runs no apache/kafka image"
    assert set(images.values()) == {f"apache/kafka:{pinned}"}, images


def test_operations_guide_names_the_pinned_kafka() -> None:
    pinned = default_version({})
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    named = set(re.findall(r"Apache Kafka (\d+\.\d+\.\d+)", text)) | set(re.findall(r"apache/kafka:([\w.]+)", text))
    assert named == {pinned}, f"docs/operations.md names {sorted(named)}, the pom pins {pinned}"


def test_kafka_version_env_overrides_the_pin() -> None:
    assert default_version({"KAFKA_VERSION": "3.9.1"}) == "3.9.1"
