"""A local Apache Kafka (KRaft, one combined broker+controller) from Maven Central, for the tests and `make kafka`.

`fetch_kafka` resolves the pinned release with `mvn` (tools/kafka/pom.xml) into build/kafka/<version>/libs once;
`LocalKafka` formats a KRaft storage dir, starts `kafka.Kafka` on free ports with a small heap and replication
factors 1, waits until it answers, stops it cleanly, and restarts it on the same log dir (data kept). An optional
SASL_SSL listener (a `SecureListener`: SCRAM and PLAIN users, a PEM key and certificate) serves the security tests.
Needs java (17+) on PATH, and mvn the first time a version is fetched. Run it in the foreground with
`python -m callpulse.localkafka --port N` (`make kafka KAFKA_PORT=N`).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from callpulse.embedded import HOST, _api_versions_answers, _ServerProcess, free_port
from callpulse.exceptions import CallpulseError

__all__ = ["LocalKafka", "SecureListener", "default_version", "fetch_kafka", "kafka_libs"]

REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "tools" / "kafka" / "pom.xml"
CACHE = REPO_ROOT / "build" / "kafka"
_VERSION_RE = re.compile(r"<kafka\.version>([^<]+)</kafka\.version>")
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
"""


def default_version(env: Mapping[str, str]) -> str:
    """The Kafka version to run: $KAFKA_VERSION when set, else the one tools/kafka/pom.xml pins."""
    override = env.get("KAFKA_VERSION", "").strip()
    if override:
        return override
    match = _VERSION_RE.search(POM.read_text(encoding="utf-8"))
    if match is None:
        raise CallpulseError(f"{POM} names no <kafka.version>: restore the property")
    return match.group(1)


def kafka_libs(version: str) -> Path:
    """The directory holding the jars of Kafka `version` (it exists once fetch_kafka ran)."""
    return CACHE / version / "libs"


def class_archive(version: str) -> Path:
    """The class-data archive (AppCDS) of Kafka `version`: classes parsed once, so a start takes half the time."""
    return CACHE / version / "kafka.jsa"


def fetch_kafka(version: str, *, quiet: bool = True) -> Path:
    """Resolve Kafka `version` and its runtime dependencies with mvn into build/kafka/<version>/libs, once.

    The jars land in a temporary directory first and are renamed into place, so an interrupted fetch leaves
    nothing that looks complete. Then one start and stop of the broker records the class-data archive.
    """
    libs = kafka_libs(version)
    if not (libs / f"kafka_2.13-{version}.jar").is_file():
        _resolve(version, libs, quiet=quiet)
    if not class_archive(version).is_file():
        _record_class_archive(version)
    return libs


def _resolve(version: str, libs: Path, *, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise CallpulseError("mvn is not on PATH: install Maven (apt-get install maven) to fetch Apache Kafka")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    argv = [mvn, "-B", *(["-q"] if quiet else []), "-f", str(POM), f"-Dkafka.version={version}",
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip()[-1500:]
        raise CallpulseError(f"fetching Apache Kafka {version} with mvn failed (is the version published?): {tail}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)


def _record_class_archive(version: str) -> None:
    """Start and stop one broker with -XX:ArchiveClassesAtExit: the JVM writes the classes it loaded at exit."""
    target = class_archive(version)
    partial = target.with_suffix(".jsa.partial")
    partial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="callpulse-kafka-cds-") as workdir:
        node = LocalKafka(log_dir=workdir, version=version, stop_timeout_s=120.0)
        node.archive_out = partial
        node.start()
        node.stop()
    if partial.is_file():
        partial.rename(target)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka's Uuid prints them."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener: the server's PEM key and certificate chain, and the users it accepts.

    `scram_users` get SCRAM-SHA-256 and SCRAM-SHA-512 credentials (written when the storage is formatted);
    `plain_users` are accepted with SASL/PLAIN. Passwords go only into files readable by their owner.
    """

    cert_pem: Path
    key_pem: Path
    scram_users: Mapping[str, str] = field(default_factory=dict)
    plain_users: Mapping[str, str] = field(default_factory=dict)


class LocalKafka(_ServerProcess):
    """One Apache Kafka node in KRaft mode on 127.0.0.1 (PLAINTEXT, CONTROLLER and optionally SASL_SSL listeners).

    The log dir outlives stop() and restart() when the caller gave it; a restart keeps topics, records and the
    consumer groups' committed offsets, and listens on the same ports.
    """

    name = "kafka"

    def __init__(
        self,
        *,
        port: int | None = None,
        log_dir: str | Path | None = None,
        version: str | None = None,
        secure: SecureListener | None = None,
        heap_mb: int = 384,
        log_level: str = "WARN",
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        """Prepare (not start) a node; `port` None picks free ports, `log_dir` None uses a temp dir removed on stop."""
        super().__init__(port=port, workdir=log_dir, start_timeout_s=start_timeout_s, stop_timeout_s=stop_timeout_s)
        self.version = version if version is not None else default_version(os.environ)
        self.secure = secure
        self.heap_mb = heap_mb
        self.log_level = log_level
        self.archive_out: Path | None = None  # set only while recording the class-data archive
        self.controller_port: int | None = None
        self.secure_port: int | None = None
        self._java = shutil.which("java")
        if self._java is None:
            raise CallpulseError("java is not on PATH: install a JDK 17 or newer (apt-get install openjdk-17-jdk)")

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers of the PLAINTEXT listener: '127.0.0.1:PORT'."""
        return f"{HOST}:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """Bootstrap servers of the SASL_SSL listener (only with `secure`)."""
        if self.secure is None or self.secure_port is None:
            raise CallpulseError("this local Kafka has no SASL_SSL listener: pass secure=SecureListener(...)")
        return f"{HOST}:{self.secure_port}"

    @property
    def data_dir(self) -> Path:
        """The KRaft metadata and partition logs."""
        return self.workdir / "data"

    # -- what _ServerProcess asks of a server
    def _prepare(self, workdir: Path, port: int) -> None:
        libs = kafka_libs(self.version) if self.archive_out is not None else fetch_kafka(self.version)
        if self.controller_port is None:
            self.controller_port = free_port()
        if self.secure is not None and self.secure_port is None:
            self.secure_port = free_port()
        config = workdir / "server.properties"
        _write_private(config, self._server_properties(port))
        (workdir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level), encoding="utf-8")
        if not (self.data_dir / "meta.properties").is_file():
            self._format(libs, config)

    def _command(self, port: int) -> list[str]:
        assert self._java is not None
        return [*self._jvm(kafka_libs(self.version)), "kafka.Kafka", str(self.workdir / "server.properties")]

    def _answers(self, port: int, timeout_s: float) -> bool:
        # The broker opens its client listener only once it is unfenced, so an answer means it takes requests.
        return _api_versions_answers(HOST, port, timeout_s)

    # -- internals
    def _jvm(self, libs: Path) -> list[str]:
        assert self._java is not None
        archive = class_archive(self.version)
        if self.archive_out is not None:
            cds = [f"-XX:ArchiveClassesAtExit={self.archive_out}"]
        else:
            # An archive from another JVM build is ignored with a warning (-Xshare:auto is the default).
            cds = [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else []
        return [
            self._java,
            f"-Xmx{self.heap_mb}m",
            "-Xms64m",
            "-XX:+UseSerialGC",  # one small node: the serial collector starts fastest and uses least memory
            "-XX:TieredStopAtLevel=1",  # C1 only: starts in half the time; a test broker never needs C2's peak
            *cds,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
        ]

    def _format(self, libs: Path, config: Path) -> None:
        # --cluster-id=ID, not "-t ID": a random id may start with "-" and read as an option.
        cluster = f"--cluster-id={new_cluster_id()}"
        argv = [*self._jvm(libs), "kafka.tools.StorageTool", "format", cluster, "-c", str(config)]
        if self.secure is not None:
            for user, password in self.secure.scram_users.items():
                for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                    argv += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=self.workdir)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-1500:]
            raise CallpulseError(f"formatting the KRaft storage in {self.data_dir} failed: {tail}")

    def _server_properties(self, port: int) -> str:
        listeners = [f"PLAINTEXT://{HOST}:{port}", f"CONTROLLER://{HOST}:{self.controller_port}"]
        advertised = [f"PLAINTEXT://{HOST}:{port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{self.controller_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.data_dir}",
            "num.partitions=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",  # 50 by default: the first group would wait for 50 leaders
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # The fault tests run consumers with a 3 s session timeout (a dead worker's partitions move in seconds);
            # the broker's floor is 6 s by default.
            "group.min.session.timeout.ms=1000",
            "auto.create.topics.enable=false",  # callpulse creates its topics; a typo must not make a new one
        ]
        if self.secure is not None:
            listeners.append(f"SASL_SSL://{HOST}:{self.secure_port}")
            advertised.append(f"SASL_SSL://{HOST}:{self.secure_port}")
            protocols.append("SASL_SSL:SASL_SSL")
            lines += self._secure_properties()
        lines += [
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            f"listener.security.protocol.map={','.join(protocols)}",
        ]
        return "\n".join(lines) + "\n"

    def _secure_properties(self) -> list[str]:
        assert self.secure is not None
        # A PEM file holding the unencrypted PKCS#8 key and then the certificate chain (no keytool needed).
        keystore = self.workdir / "server-keystore.pem"
        _write_private(
            keystore,
            self.secure.key_pem.read_text(encoding="utf-8") + self.secure.cert_pem.read_text(encoding="utf-8"),
        )
        prefix = "listener.name.sasl_ssl"
        plain = " ".join(f'user_{u}="{_jaas_quote(p)}"' for u, p in self.secure.plain_users.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain_module = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return [
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            f"{prefix}.ssl.keystore.type=PEM",
            f"{prefix}.ssl.keystore.location={keystore}",
            f"{prefix}.ssl.client.auth=none",
            f"{prefix}.scram-sha-256.sasl.jaas.config={scram}",
            f"{prefix}.scram-sha-512.sasl.jaas.config={scram}",
            f"{prefix}.plain.sasl.jaas.config={plain_module} required {plain};",
        ]


def _jaas_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold passwords or a private key)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


# --- `make kafka`: one node in the foreground --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m callpulse.localkafka",
        description="Run one Apache Kafka node (KRaft) in the foreground with a fresh log dir; Ctrl-C stops it.",
    )
    p.add_argument("--port", type=int, default=9092, help="PLAINTEXT port on 127.0.0.1 (default 9092)")
    p.add_argument("--version", default=None, help="Kafka version (default: $KAFKA_VERSION, else tools/kafka/pom.xml)")
    p.add_argument("--fetch-only", action="store_true", help="only fetch the jars with mvn, then exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch Kafka if needed, start it, print 'kafka ready at 127.0.0.1:PORT', stop on SIGINT or SIGTERM."""
    args = _parser().parse_args(argv)
    version = args.version or default_version(os.environ)
    try:
        if args.fetch_only:
            print(f"kafka {version} jars in {fetch_kafka(version, quiet=False)}", flush=True)
            return 0
        fetch_kafka(version)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        kafka = LocalKafka(port=args.port, version=version, log_level="INFO")
        try:
            started = time.monotonic()
            kafka.start()
            took = time.monotonic() - started
            print(f"kafka ready at {kafka.bootstrap}", flush=True)
            print(f"(Apache Kafka {version}, up in {took:.1f} s; log {kafka.log_path}; Ctrl-C stops it)", flush=True)
            while not stop.wait(0.5):
                if not kafka.running:
                    print(f"kafka exited by itself: {kafka._log_tail()}", file=sys.stderr)
                    return 1
            print("stopping kafka", flush=True)
        finally:
            kafka.stop()
    except CallpulseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
