"""HTTP methods on a real `callpulse monitor` process: GET and HEAD are answered, anything else gets 405 with
`Allow: GET` (contract 2e), with or without a request body, on every path, and the server keeps serving."""

from __future__ import annotations

import http.client

import orjson
import pytest

from callpulse.embedded import EmbeddedRedis, free_port
from callpulse.settings import Settings
from tests.conftest import Stack

pytestmark = pytest.mark.integration

TOKEN = "t0ken"
PATHS = ("/", "/api/snapshot", "/api/audit", "/api/openapi.json", "/ws", "/metrics", "/metrics/agents", "/healthz",
         "/static/wallboard.js", "/nowhere")  # fmt: skip


@pytest.fixture
def monitor_settings(redis_server: EmbeddedRedis, topic_prefix: str, stack: Stack) -> Settings:
    """A running monitor process (token set) on this test's Redis."""
    settings = Settings(kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix),
                        http_host="127.0.0.1", http_port=free_port(), token=TOKEN)  # fmt: skip
    stack.monitor(settings)
    return settings


def request(settings: Settings, method: str, path: str, body: bytes | None = None) -> http.client.HTTPResponse:
    """One request on a fresh connection; the response with its body read."""
    conn = http.client.HTTPConnection(settings.http_host, settings.http_port, timeout=5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_other_methods_get_405_with_allow_get_on_every_path(monitor_settings: Settings, method: str) -> None:
    for path in PATHS:
        resp = request(monitor_settings, method, path)
        assert resp.status == 405, (method, path, resp.status)
        assert resp.getheader("Allow") == "GET", (method, path)


def test_post_with_a_body_gets_405_not_a_dropped_connection(monitor_settings: Settings) -> None:
    conn = http.client.HTTPConnection(monitor_settings.http_host, monitor_settings.http_port, timeout=5)
    conn.request("POST", "/api/snapshot", body=orjson.dumps({"window": "15m"}),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    resp = conn.getresponse()
    body = orjson.loads(resp.read())
    conn.close()
    assert (resp.status, resp.getheader("Allow")) == (405, "GET")
    assert "POST" in body["error"] and "GET" in body["error"], body
    assert TOKEN not in body["error"], "the error must not echo the request's query (it may hold a token)"


def test_a_large_body_gets_405_too(monitor_settings: Settings) -> None:
    resp = request(monitor_settings, "PUT", "/api/snapshot", body=b"x" * 200_000)
    assert (resp.status, resp.getheader("Allow")) == (405, "GET")


def test_head_answers_like_get_without_a_body(monitor_settings: Settings) -> None:
    for path in ("/", "/api/snapshot", "/healthz", "/api/openapi.json"):
        get = request(monitor_settings, "GET", path)
        conn = http.client.HTTPConnection(monitor_settings.http_host, monitor_settings.http_port, timeout=5)
        conn.request("HEAD", path, headers={"Authorization": f"Bearer {TOKEN}"})
        head = conn.getresponse()
        assert head.read() == b""
        conn.close()
        assert head.status == get.status == 200, path
        assert head.getheader("Content-Type") == get.getheader("Content-Type"), path


def test_the_server_keeps_serving_get_after_refused_methods(monitor_settings: Settings) -> None:
    for method in ("POST", "DELETE"):
        assert request(monitor_settings, method, "/api/snapshot", body=b"{}").status == 405
    assert request(monitor_settings, "GET", "/api/snapshot").status == 200
