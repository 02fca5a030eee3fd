"""The fault matrix's recorder: each test fills its row, and the session writes docs/reliability.md at the end.

A test names its row with `@pytest.mark.fault_row(N)` and adds figures through the `row` fixture
(`row.figure("recover_s", 4.2)`); pass/fail comes from the test's own report. When every row ran, the session
rewrites the table (with CALLPULSE_MATRIX_PARTIAL=1 also after a partial run: rows that did not run say "not run").
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callpulse.embedded import EmbeddedBroker
from callpulse.localkafka import LocalKafka
from callpulse.settings import Settings

ROWS: dict[int, tuple[str, str]] = {
    1: (
        "kill -9 the worker at a random point, restart it; 5 times in one run",
        "KPIs exact; no event lost or counted twice",
    ),
    2: ("rebalance churn: start and stop a second worker 5 times while producing", "exact"),
    3: (
        "a worker paused (SIGSTOP) beyond the session timeout, then resumed",
        "exact; the paused worker commits nothing stale",
    ),
    4: (
        "broker restarted mid-stream at a random point, its log dir kept",
        "records and committed offsets survive; the worker reconnects by itself and resumes from its committed "
        "offsets (consumes each record once, nothing re-produced); exact",
    ),
    5: (
        "Redis killed and restarted empty, then the worker killed -9 inside the rebuild that follows",
        "worker and monitor survive, alerting (worker /healthz 503 and callpulse_worker_redis_up 0, monitor "
        "/healthz 503); windows rebuilt from Kafka by the replay path; exact",
    ),
    6: ("Redis paused (SIGSTOP) 30 s", "no offset committed past unapplied events; exact afterwards"),
    7: (
        "poison pills: bad JSON, wrong types, a 900 KB value, a null key, a null value",
        "all in `deadletter` with reasons; worker up; good events exact",
    ),
    8: ("the same event redelivered many times, across partitions", "counted once"),
    9: ("events shuffled, with late ones (older than the longest window)", "exact; late ones counted as `late`"),
    10: (
        "a websocket client that never reads, while 50 snapshot triggers/s and 50 alerts/s are pushed",
        "monitor RSS bounded; the client dropped; other clients' latency unaffected",
    ),
    11: (
        "websocket abuse: 2 MiB message, 500 idle connections, no token, foreign Origin",
        "close 1009; memory per connection bounded; 401/403 before upgrade",
    ),
    12: ("monitor started on 0.0.0.0 without a token", "refuses to start, with a message saying why"),
    13: (
        "Redis with a password (requirepass)",
        "works when CALLPULSE_REDIS carries it; clear error when wrong (log names the auth problem, keeps "
        "retrying, offsets held)",
    ),
    15: (
        "Redis killed and restarted empty after a random 1-4 s outage, events arriving while it is down and while "
        "the worker rebuilds",
        "exact again (every agent, team and floor KPI in every window) within seconds; `exact_after_s` counts "
        "from Redis's restart",
    ),
    16: ("the same, the next events arriving 10-15 s after Redis came back", "exact again within seconds"),
    17: (
        "the same, with no further event at all",
        "rebuilt by the worker's sweep without waiting for a record; exact again within seconds",
    ),
    20: (
        "scale-out: 4 workers on 8 partitions, one of them killed -9 at a random point mid-run (not restarted)",
        "the other three take its partitions over; KPIs exact; no event lost or counted twice",
    ),
    14: (
        "SIGTERM to worker and monitor",
        "graceful: in-flight batch finished, offsets committed (restart re-reads nothing), clients closed with 1001",
    ),
    18: (
        "kill -9 the worker at 5 random (seeded) points of a ~29k-event catch-up, whole-fetch batches of 2,000",
        "KPIs exact; no commit past an unapplied event or backwards; no event lost or counted twice",
    ),
    21: (
        "broker killed and kept down 30 s while `callpulse simulate` keeps producing",
        "the simulator retries until the broker is back: every event in Kafka exactly once; worker reconnects; exact",
    ),
}

DOC = Path("docs") / "reliability.md"


@dataclass
class RowResult:
    """What one matrix row got in this session."""

    number: int
    test: str = ""
    broker: str = ""
    result: str = "not run"
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    failure: str = ""

    def figure(self, name: str, value: Any) -> None:
        """Record a measured figure (recovery time, RSS, counts) for the table."""
        self.figures[name] = value


@dataclass
class Matrix:
    """Every row's result in this session."""

    rows: dict[int, RowResult] = field(default_factory=lambda: {n: RowResult(n) for n in ROWS})
    started: float = field(default_factory=time.time)
    ran: bool = False


matrix_key = pytest.StashKey[Matrix]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault_row(n): the row of the fault matrix (docs/reliability.md) a test fills")
    config.stash[matrix_key] = Matrix()


def _row_of(item: pytest.Item) -> RowResult | None:
    marker = item.get_closest_marker("fault_row")
    if marker is None:
        return None
    return item.config.stash[matrix_key].rows[int(marker.args[0])]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with a 3 s session timeout: a dead worker's partitions move on within seconds."""
    return settings.replace(session_timeout_s=3.0)


@pytest.fixture
def row(request: pytest.FixtureRequest) -> RowResult:
    """This test's matrix row, to add figures to."""
    result = _row_of(request.node)
    assert result is not None, "a fault test needs @pytest.mark.fault_row(N)"
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    result = _row_of(item)
    if result is None:
        return report
    item.config.stash[matrix_key].ran = True
    result.test = item.name
    if report.when == "setup" and report.failed:
        result.result = "error"
        result.failure = _first_line(report)
    elif report.when == "setup" and report.skipped:
        result.result = "skipped"
    elif report.when == "call":
        result.broker = broker_of(item)
        result.seconds = round(report.duration, 1)
        result.result = "pass" if report.passed else ("skipped" if report.skipped else "FAIL")
        if report.failed:
            result.failure = _first_line(report)
    elif report.when == "teardown" and report.failed and result.result == "pass":
        result.result = "FAIL (teardown)"
        result.failure = _first_line(report)
    return report


def broker_of(item: pytest.Item) -> str:
    """The broker a test ran on, from its fixtures (its own broker first): 'Apache Kafka 4.4.0', 'Tansu' or ''."""
    funcargs = getattr(item, "funcargs", {})
    for name in ("private_broker", "broker", "tansu"):
        server = funcargs.get(name)
        if isinstance(server, LocalKafka):
            return f"Apache Kafka {server.version}"
        if isinstance(server, EmbeddedBroker):
            return "Tansu"
    return ""


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    matrix = session.config.stash.get(matrix_key, None)
    if matrix is None or not matrix.ran:
        return
    if any(r.result == "not run" for r in matrix.rows.values()) and not os.environ.get("CALLPULSE_MATRIX_PARTIAL"):
        # A developer running a few rows must not replace the page of the last whole run with "not run" rows.
        print(f"\nfault matrix: rows did not run, so {DOC} is left as it was (CALLPULSE_MATRIX_PARTIAL=1 writes it)")
        return
    path = session.config.rootpath / DOC
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(matrix, session.config), encoding="utf-8")


def _command(config: pytest.Config) -> str:
    args = " ".join(config.invocation_params.args)
    if os.environ.get("MAKELEVEL"):
        return f"make test (python -m pytest {args})".strip()
    return f"python -m pytest {args}".strip()


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(matrix: Matrix, config: pytest.Config) -> str:
    """The markdown page: how it was run, then the table."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    elapsed = time.time() - matrix.started
    counts: dict[str, int] = {}
    for r in matrix.rows.values():
        counts[r.result] = counts.get(r.result, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    lines = [
        "# Reliability: the fault matrix",
        "",
        "Generated by `tests/faults` (pytest marker `faults`) on real processes on loopback: Apache Kafka (KRaft,",
        "from Maven Central; the broker column names the version each row ran on), redis-server, `callpulse worker`",
        "and `callpulse monitor`. Each row produces a trace with per-agent",
        "sequence numbers (`seq`), breaks something, and compares the final snapshot for 15m, 1h and 8h with a",
        "brute-force recomputation from the produced events (`tests/reference.py`): exact equality, `ok` equal to",
        "the unique valid events, every event's dedupe mark present in Redis (nothing lost), nothing counted twice.",
        "Do not edit by hand: the run rewrites this file.",
        "",
        f"- date: {now}",
        f"- command: `{_command(config)}`",
        f"- session time: {elapsed:.0f} s; rows: {summary}",
        f"- python {sys.version.split()[0]} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "",
        "| # | fault or input | must hold | broker | result | figures | test (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, (fault, must) in sorted(ROWS.items()):
        r = matrix.rows[n]
        figures = "; ".join(f"{k}={v}" for k, v in r.figures.items())
        if r.failure:
            figures = f"{figures}; failure: {r.failure}" if figures else f"failure: {r.failure}"
        took = "" if r.seconds is None else f"{r.seconds:.1f}"
        test = f"`{r.test}` {took}" if r.test else ""
        cells = [str(n), _cell(fault), _cell(must), _cell(r.broker), f"**{r.result}**", _cell(figures), _cell(test)]
        lines.append(f"| {' | '.join(cells)} |")
    lines += [
        "",
        "How the rows are checked:",
        "",
        "- Every exactness check reads `callpulse_events_total` from Redis (`ok` must equal the unique valid events,",
        "  `late` and `invalid` what was sent, `duplicate` at least the copies sent: `duplicates_vs_copies`), checks",
        "  that each valid event's dedupe mark is in Redis (a missing one is reported as agent and `seq`), and diffs",
        "  the monitor's `/api/snapshot` for 15m, 1h and 8h against `tests/reference.py` at the snapshot's `as_of`.",
        "- Committed offsets are read with a consumer in the worker's group that never subscribes (OffsetFetch only;",
        "  on Tansu, `AIOKafkaAdminClient.list_consumer_group_offsets` cannot decode the answer). A background poller",
        "  flags any committed offset that goes backwards (a stale commit) and any commit past a message whose mark",
        "  is not in Redis (committed past unapplied events).",
        "- The fault tests run with a 3 s consumer session timeout (the test broker allows 1 s and up), so a dead",
        "  worker's partitions move within seconds. Rows 4 and 15 run a Kafka of their own with its log dir kept:",
        "  row 4 checks the end offsets and the group's committed offsets are the same after the restart and that",
        "  the worker consumed each record exactly once; row 21 kills the broker at a seeded moment, keeps it down",
        "  30 s while `callpulse simulate` (an idempotent producer) keeps producing, then reads every record back:",
        "  each simulated event (numbered 1..N by the simulator) is in Kafka exactly once, and the worker's counts",
        "  and snapshots equal the recomputation from those records.",
        "- Row 1 kills at random counts (small batches, so most kills land with records fetched but not applied);",
        "  row 5 also kills the worker inside the rebuild from Kafka: its successor must take the rebuild over.",
        "  Row 10's monitor serves 40 agents (a ~13 KB snapshot); `drop_s` is from the stalled client's connect to",
        "  its removal; latencies are publish-to-receive of alerts on a client that reads.",
        "",
        "Figures: `*_s` are seconds measured by the test (time to recover, to rebuild, to drop a client);",
        "`rss_*` are the monitor's resident memory (psutil); counts are `callpulse_events_total` by result.",
        "",
    ]
    return "\n".join(lines)
