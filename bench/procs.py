"""Child processes the benchmark starts, and the one place that stops them all (also on Ctrl-C or an error)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from callpulse.processes import Proc


class Child(Proc):
    """A benchmark child: `callpulse.processes.Proc` for any argv, plus CPU and memory readings."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(name, [], env, log_path, argv=argv)
        self.web_port: int | None = None  # a worker's /metrics port (set by bench.rig.Bench.worker)

    @classmethod
    def callpulse(cls, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> Child:
        """A `python -m callpulse.cli ARGS` child (the same command `callpulse` runs)."""
        return cls(name, [sys.executable, "-m", "callpulse.cli", *args], env, log_path)

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far (0 when gone)."""
        try:
            t = psutil.Process(self.pid).cpu_times()
        except (psutil.Error, AssertionError):
            return 0.0
        return t.user + t.system

    def rss_bytes(self) -> int:
        """Resident set size now (0 when gone)."""
        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except (psutil.Error, AssertionError):
            return 0


class Cleanup:
    """Stops registered things in reverse order; `close` is idempotent and never raises."""

    def __init__(self) -> None:
        self._stack: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, stop: Callable[[], object]) -> None:
        """Register something to stop."""
        self._stack.append((what, stop))

    def child(self, child: Child) -> Child:
        """Start a child and register it; returns it."""
        self.push(child.name, child.stop)
        return child.start()

    def close(self) -> None:
        """Stop everything still registered, newest first."""
        while self._stack:
            what, stop = self._stack.pop()
            try:
                stop()
            except BaseException as exc:  # keep going: the rest must stop too
                print(f"bench: stopping {what} failed: {exc!r}", file=sys.stderr)
