"""Child processes the benchmark starts, and the one place that stops them all (also on Ctrl-C or an error)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil


class Child:
    """One child process in its own session (so a terminal's Ctrl-C reaches only the benchmark), logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def callpulse(cls, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> Child:
        """A `python -m callpulse.cli ARGS` child (the same command `callpulse` runs)."""
        return cls(name, [sys.executable, "-m", "callpulse.cli", *args], env, log_path)

    def start(self) -> Child:
        """Spawn it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.popen is not None and self.popen.poll() is None

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

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait `timeout_s`, then SIGKILL the whole session; always reaps."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever it left behind in its session (it started one of its own) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Cleanup:
    """Stops registered things in reverse order; `close` is idempotent and never raises."""

    def __init__(self) -> None:
        self._stack: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, stop: Callable[[], None]) -> None:
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
