"""Run callpulse commands as child processes: used by `callpulse demo`, the benchmarks and the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

from callpulse.settings import WORKER_FLAGS, Settings


def env_for(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CALLPULSE_* environment that makes a child process see `settings`."""
    env = dict(os.environ if base is None else base)
    env.update(
        CALLPULSE_KAFKA=settings.kafka,
        CALLPULSE_REDIS=settings.redis_url,
        CALLPULSE_HTTP=f"{settings.http_host}:{settings.http_port}",
        CALLPULSE_TOPIC_PREFIX=settings.topic_prefix,
        CALLPULSE_TOKEN=settings.token or "",
        CALLPULSE_SUPERVISOR_TOKEN=settings.supervisor_token or "",
        CALLPULSE_CONFIG=settings.config_path or "",
        CALLPULSE_KAFKA_SECURITY=settings.kafka_security,
        CALLPULSE_KAFKA_SASL_MECHANISM=settings.kafka_sasl_mechanism,
        CALLPULSE_KAFKA_USERNAME=settings.kafka_username or "",
        CALLPULSE_KAFKA_PASSWORD=settings.kafka_password or "",
        CALLPULSE_KAFKA_CA=settings.kafka_ca or "",
        CALLPULSE_REDIS_CA=settings.redis_ca or "",
        PYTHONUNBUFFERED="1",
    )
    return env


def worker_args(settings: Settings, *, web_port: int) -> list[str]:
    """Arguments of `callpulse worker` carrying every tuning field of settings (the table in callpulse.settings)."""
    args = ["worker", "--web-port", str(web_port)]
    for flag in WORKER_FLAGS:
        args += [flag.flag, str(getattr(settings, flag.field))]
    return args


STOP_TIMEOUT_S = 15.0  # how long children get to exit on SIGTERM before SIGKILL


class Proc:
    """One child process running `python -m callpulse.cli ARGS`, logging to a file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        # `argv` runs some other program the same way (the benchmarks' naive baseline, say).
        self.argv = list(argv) if argv is not None else [sys.executable, "-m", "callpulse.cli", *self.args]
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Self:
        """Spawn the process in its own process group (so Ctrl-C reaches only the parent)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the child."""
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait, then SIGKILL the child's whole session; always reaps; returns the exit code."""
        if self.popen is None:
            return None
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever it left behind in its session (it started one of its own) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        code = self.popen.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.popen is not None and self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop_all(procs: Sequence[Proc], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop the children together: SIGTERM to each at once, `timeout_s` for all of them to exit, then SIGKILL
    what is left (each child's whole session). Returns the names of those that had to be killed."""
    for proc in procs:
        if proc.alive():
            proc.signal(signal.SIGCONT)
            proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    killed = []
    for proc in procs:
        was_alive = proc.alive()
        code = proc.stop(max(0.0, deadline - time.monotonic()))
        if was_alive and code == -signal.SIGKILL:
            killed.append(proc.name)
    return killed


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll a zero-argument callable until truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")
