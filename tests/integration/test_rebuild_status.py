"""While a worker rebuilds the windows into a Redis that came back empty, the monitor says so."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from callpulse.settings import Settings
from tests.faults.harness import http_get
from tests.helpers import wait_for


def _get(settings: Settings, path: str) -> tuple[int, Any]:
    status, body = http_get(f"http://{settings.http_host}:{settings.http_port}{path}")
    return status, orjson.loads(body)


def test_monitor_reports_rebuilding_while_a_rebuild_holds_the_lock(settings: Settings, stack: Any) -> None:
    stack.monitor(settings)
    client = redis.Redis.from_url(settings.redis_url)
    ns = f"cp:{settings.topic_prefix}"
    try:
        client.set(f"{ns}replay-lock", "a-worker", ex=30)  # what a worker holds while it replays Kafka
        status, body = _get(settings, "/healthz")
        assert (status, body["ok"], body["rebuilding"], body["redis"]) == (503, False, True, True)
        assert _get(settings, "/api/snapshot?window=15m")[1]["status"] == "rebuilding"
        client.set(f"{ns}epoch", "1-done")  # the rebuild finished
        client.delete(f"{ns}replay-lock")
        wait_for(lambda: _get(settings, "/healthz")[0] == 200, timeout_s=10, message="/healthz 200 again")
        assert _get(settings, "/api/snapshot?window=15m")[1]["status"] == "live"
    finally:
        client.close()
