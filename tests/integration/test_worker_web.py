"""The worker's health/metrics server on real processes: it binds the host it is given, nothing wider."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from callpulse.embedded import free_port
from callpulse.processes import Proc, env_for, worker_args
from callpulse.settings import Settings
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_worker_web_server_binds_only_the_given_host(settings: Settings, tmp_path: Path) -> None:
    # 127.0.0.2 is loopback too, but a different address: a 0.0.0.0 bind would answer on 127.0.0.1 as well.
    port = free_port()
    args = [*worker_args(settings, web_port=port), "--web-host", "127.0.0.2"]
    worker = Proc("worker", args, env_for(settings), tmp_path / "worker.log").start()
    try:
        wait_for(lambda: answers(f"http://127.0.0.2:{port}/healthz") or not worker.alive(), timeout_s=60,
                 message="the worker's /healthz on 127.0.0.2")  # fmt: skip
        assert worker.alive(), worker.log_tail()
        assert not answers(f"http://127.0.0.1:{port}/healthz"), "the web server listens beyond --web-host"
    finally:
        worker.stop()
