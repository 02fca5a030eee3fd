"""`callpulse demo` on a machine with neither Kafka nor Redis answering: it starts the embedded Tansu broker and a
private redis-server, runs worker, monitor and simulator, shows live numbers, and stops everything on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from callpulse.embedded import free_port
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_demo_falls_back_to_tansu_shows_calls_and_stops_everything(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "callpulse.cli", "demo", "--kafka", f"127.0.0.1:{free_port()}",
            "--redis", f"redis://127.0.0.1:{free_port()}/0", "--http", f"127.0.0.1:{free_port()}",
            "--agents", "10", "--rate", "20", "--duration", "240"]  # fmt: skip
    demo = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(
            lambda: any(re.search(r"calls [1-9]", line) for line in lines) or demo.poll() is not None,
            timeout_s=180,
            interval_s=0.5,
            message="a summary line with handled calls",
        )
        assert demo.poll() is None, "".join(lines)
        children = [p.pid for p in psutil.Process(demo.pid).children(recursive=True)]
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 0, "".join(lines)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(10)
    text = "".join(lines)
    assert "started an embedded broker (Tansu)" in text and "started an embedded redis-server" in text, text
    assert "demo stopped; everything it started is down." in text, text
    assert not [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
