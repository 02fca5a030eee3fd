"""Stopping the demo's children (callpulse/processes.py `stop_all`): together, so one that ignores SIGTERM costs
the one timeout, not one per child, and is killed; those that stop on SIGTERM are not."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from callpulse.processes import Proc, stop_all

OBEYS = "import time\nprint('up', flush=True)\ntime.sleep(600)"
IGNORES = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(600)"


def _started(name: str, code: str, tmp_path: Path) -> Proc:
    proc = Proc(name, [], {}, tmp_path / f"{name}.log", argv=[sys.executable, "-c", code]).start()
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / f"{name}.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)  # the child has set its handlers (a SIGTERM before that would end it anyway)
    return proc


def test_children_stop_together_and_only_one_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    procs = [
        _started("stubborn-1", IGNORES, tmp_path),
        _started("worker", OBEYS, tmp_path),
        _started("stubborn-2", IGNORES, tmp_path),
    ]
    t0 = time.monotonic()
    killed = stop_all(procs, timeout_s=2.0)
    took = time.monotonic() - t0
    assert killed == ["stubborn-1", "stubborn-2"]
    assert not any(p.alive() for p in procs)
    assert took < 3.9, f"stopping took {took:.1f} s: the timeout was paid once per stubborn child"
