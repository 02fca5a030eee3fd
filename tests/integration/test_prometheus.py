"""A real Prometheus scraping a real worker and monitor: the rules load, every dashboard query finds data.

Debian's `prometheus` binary (what CI installs from `.ci/run`) runs on a free port with a generated config
that scrapes the monitor and the worker every second and loads the committed `prometheus/rules.yml`. A short
simulated shift goes through Kafka and the worker; then every panel query of every committed Grafana dashboard
is asked of Prometheus, and the KPI gauges Prometheus stored are compared with the monitor's own snapshots.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from callpulse import provisioning, simulate
from callpulse.embedded import free_port
from callpulse.processes import Proc
from callpulse.settings import Settings, load_thresholds, window_name
from tests.conftest import Stack
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "prometheus" / "rules.yml"
OPERATIONS = ROOT / "prometheus" / "operations.yml"
DASHBOARDS = ROOT / "grafana" / "dashboards"
SCRAPE_INTERVAL_S = 1
# The monitor serves per-agent series on their own path, scraped as a job of their own (docs/metrics in README).
METRICS_PATHS = {"callpulse-monitor-agents": "/metrics/agents"}
RULE_GROUPS = {
    "callpulse-agent",
    "callpulse-team",
    "callpulse-floor",
    "callpulse-queue",
    "callpulse-campaign",
    "callpulse-operations",
}
# Half an hour of a 30-agent floor (18 inbound agents in two teams, 12 outbound in one) at 20 events/s:
# about 35 000 events, enough for every KPI that applies to a team (inbound or outbound) in its windows.
SHIFT_AGENTS, SHIFT_RATE, SHIFT_S, SHIFT_SEED = 30, 20.0, 1800.0, 3


def _prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus not found: run .ci/run, or apt-get install -y prometheus (Debian's package)")
    return path


def _get(url: str, params: Mapping[str, str] | list[tuple[str, str]] | None = None, timeout_s: float = 5) -> bytes:
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return resp.read()


def _answers(url: str) -> bool:
    try:
        _get(url, timeout_s=1)
    except (urllib.error.URLError, OSError):
        return False
    return True


class Prometheus:
    """One Prometheus server on a free loopback port, with its own config and TSDB in `workdir`."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.proc: Proc | None = None

    def start(self, scrape: Mapping[str, list[str]], rule_files: list[Path]) -> Prometheus:
        """Scrape each job's `host:port` targets every second, evaluate `rule_files`; wait until ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
            },
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": METRICS_PATHS.get(job, "/metrics"),
                    "static_configs": [{"targets": targets}],
                }
                for job, targets in scrape.items()
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        argv = [
            self.binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc = Proc("prometheus", [], os.environ, self.log_path, argv=argv).start()

        def ready() -> bool:
            if self.proc is not None and not self.proc.alive():
                code = self.proc.popen.returncode if self.proc.popen else None
                raise RuntimeError(f"prometheus exited with {code}:\n{self.log_tail()}")
            return _answers(f"{self.url}/-/ready")

        wait_for(ready, timeout_s=30, interval_s=0.1, message="prometheus /-/ready")
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None:
            self.proc.stop(timeout_s=10)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of Prometheus' log, for failure messages."""
        return self.proc.log_tail(chars) if self.proc is not None else ""

    def api(self, path: str, params: Mapping[str, str] | list[tuple[str, str]] | None = None) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer."""
        try:
            body = json.loads(_get(f"{self.url}/api/v1/{path}", params))
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"/api/v1/{path} {params}: HTTP {exc.code}: {exc.read().decode()}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: its vector (or scalar, as one sample)."""
        data = self.api("query", {"query": promql})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, promql: str) -> float | None:
        """The value of a query that yields one sample; None when it yields nothing."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql} gave {len(result)} series, expected at most one"
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """A Prometheus for this test (not started: call `.start(...)`); stopped at teardown."""
    server = Prometheus(_prometheus_bin(), tmp_path / "prometheus")
    try:
        yield server
    finally:
        server.stop()


def _scrape_text(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from a /metrics page."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(_get(url).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _snapshot(settings: Settings, window: str) -> dict[str, Any]:
    url = f"http://{settings.http_host}:{settings.http_port}/api/snapshot"
    return json.loads(_get(url, {"window": window}))


# (scope, agent or team or "", kpi, window) -> value
Gauges = dict[tuple[str, str, str, str], float]


def _prometheus_gauges(prom: Prometheus) -> Gauges:
    out: Gauges = {}
    for scope, metric in provisioning.METRICS.items():
        for series in prom.query(metric):
            labels = series["metric"]
            subject = labels["agent"] if scope == "agent" else labels["team"] if scope == "team" else ""
            out[(scope, subject, labels["kpi"], labels["window"])] = float(series["value"][1])
    return out


def _snapshot_gauges(settings: Settings, known: Mapping[str, set[str]]) -> Gauges:
    """What /metrics should hold according to the monitor's snapshots, one per window.

    A snapshot lists only agents with an event in its window; an agent or team that /metrics still exports
    (it had an event in the longest window) has no event in a shorter one, so only its counts, at 0.
    """
    counts = {"calls_handled": 0, "dials": 0}
    out: Gauges = {}
    team_windows = {window_name(s) for s in settings.team_metrics_s}  # [windows] team_metrics
    for window in settings.window_names:
        snap = _snapshot(settings, window)
        subjects = {
            "agent": {a["agent_id"]: a["kpis"] for a in snap["agents"]},
            "team": {t["team"]: t["kpis"] for t in snap["teams"]},
            "floor": {"": snap["floor"]["kpis"]},
        }
        if window not in team_windows:
            del subjects["team"]
        for scope, by_subject in subjects.items():
            for subject in known[scope] | set(by_subject):
                for kpi, value in by_subject.get(subject, counts).items():
                    if value is not None:
                        out[(scope, subject, kpi, window)] = float(value)
    return out


# KPIs of the current state's time up to the read (occupancy): a scrape and a snapshot a moment apart see a
# slightly different now, so they agree to within what a few seconds of state time can move a ratio.
LIVE_KPI_TOLERANCE = {"occupancy": 0.01}


def _same(kpi: str, got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=LIVE_KPI_TOLERANCE.get(kpi, 0.0))


def _gauges_agree(prom: Prometheus, settings: Settings) -> bool:
    """Every KPI gauge in Prometheus equals the snapshot's value, and a null KPI has no series at all."""
    # The floor's outbound abandonment over the regulators' 24h and 30d comes from campaign hours, not from a
    # snapshot window (test_queue_core checks it against the oracle).
    stored = {k: v for k, v in _prometheus_gauges(prom).items() if k[3] in settings.window_names}
    known = {scope: {subject for (s, subject, _, _) in stored if s == scope} for scope in provisioning.METRICS}
    expected = _snapshot_gauges(settings, known)
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    differ = sorted(k for k in set(stored) & set(expected) if not _same(k[2], stored[k], expected[k]))
    # Rolling windows move in 10 s steps, so a scrape and a snapshot taken a moment apart can differ: retry.
    assert not (missing or extra or differ), (
        f"missing in Prometheus: {missing[:10]}; absent from snapshots: {extra[:10]}; "
        f"different: {[(k, stored[k], expected[k]) for k in differ[:10]]}"
    )
    return True


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def _variable_values(prom: Prometheus, query: str, variables: Mapping[str, str]) -> set[str]:
    """What Grafana would offer for a `label_values(selector, label)` variable."""
    parsed = _LABEL_VALUES.match(query)
    assert parsed, f"variable query {query!r} is not label_values(selector, label)"
    params = []
    if parsed["match"]:
        match = parsed["match"]
        for name, value in variables.items():
            match = match.replace(f"${name}", value)
        params.append(("match[]", match))
    return set(prom.api(f"label/{parsed['label']}/values", params))


def test_prometheus_scrapes_rules_load_and_every_panel_has_data(
    settings: Settings, stack: Stack, prometheus: Prometheus
) -> None:
    # The committed dashboards are generated with the example scorecard (`make grafana`): score panels too.
    example = ROOT / "callpulse" / "scorecard.example.toml"
    settings = settings.replace(config_path=str(example), **load_thresholds(example.read_text(encoding="utf-8")))
    web_port = free_port()
    worker = stack.worker(settings, web_port=web_port)
    stack.monitor(settings)
    monitor_metrics = f"http://{settings.http_host}:{settings.http_port}/metrics"
    worker_metrics = f"http://127.0.0.1:{web_port}/metrics"

    def worker_up() -> bool:
        assert worker.alive(), f"worker exited:\n{worker.log_tail()}"
        return _answers(worker_metrics)

    wait_for(worker_up, timeout_s=60, interval_s=0.1, message="worker /metrics")

    # Scraping starts before the shift is sent, so the counters and the lag histogram have a rate.
    prometheus.start(
        {
            "callpulse-monitor": [f"{settings.http_host}:{settings.http_port}"],
            "callpulse-monitor-agents": [f"{settings.http_host}:{settings.http_port}"],
            "callpulse-worker": [f"127.0.0.1:{web_port}"],
        },
        [RULES, OPERATIONS],
    )

    def targets_up() -> bool:
        active = prometheus.api("targets")["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in active}
        want = {"callpulse-monitor": ("up", ""), "callpulse-monitor-agents": ("up", ""), "callpulse-worker": ("up", "")}
        assert health == want, health
        return True

    wait_for(targets_up, timeout_s=20, interval_s=0.2, message="both scrape targets up")

    now = time.time()
    shift = simulate.generate(
        agents=SHIFT_AGENTS, rate=SHIFT_RATE, duration_s=SHIFT_S, seed=SHIFT_SEED, start_s=now - SHIFT_S
    )
    events = list(shift)
    sent = asyncio.run(simulate.produce(settings, events, realtime=False))
    assert sent == len(events)

    # Counted once each as ok in the monitor, and every record consumed by the worker. (On an empty Redis the
    # worker's first batch rebuilds the windows from the earliest offsets; what it consumes after that counts as
    # duplicates, so the total of all results may exceed what was sent.)
    def processed() -> bool:
        assert worker.alive(), f"worker exited:\n{worker.log_tail()}"
        ok = sum(
            v
            for labels, v in _scrape_text(monitor_metrics).get("callpulse_events_total", [])
            if labels["result"] == "ok"
        )
        consumed = sum(v for _, v in _scrape_text(worker_metrics).get("callpulse_worker_events_total", []))
        assert (ok, consumed) == (sent, sent), f"ok {ok}, consumed {consumed}, sent {sent}"
        return True

    wait_for(processed, timeout_s=60, interval_s=0.2, message=f"{sent} events processed")

    def scraped_final_counts() -> bool:
        queries = ('sum(callpulse_events_total{result="ok"})', "sum(callpulse_worker_events_total)")
        counts = {q: prometheus.value(q) for q in queries}
        assert counts == dict.fromkeys(counts, sent), f"{counts}, sent {sent}"
        return True

    wait_for(scraped_final_counts, timeout_s=10, interval_s=0.2, message="Prometheus to scrape the final counts")

    # The worker's own health metrics, scraped by Prometheus.
    by_topic = {s["metric"]["topic"]: float(s["value"][1]) for s in prometheus.query("callpulse_worker_events_total")}
    assert by_topic == {
        "calls": sum(1 for topic, _ in events if topic == "calls"),
        "tickets": sum(1 for topic, _ in events if topic == "tickets"),
    }
    assert (prometheus.value("sum(callpulse_batch_seconds_count)") or 0) > 0
    assert len(prometheus.query("callpulse_batch_seconds_bucket")) >= 10
    wait_for(
        lambda: prometheus.query("callpulse_consumer_lag") and prometheus.value("sum(callpulse_consumer_lag)") == 0,
        timeout_s=10,
        interval_s=0.2,
        message="callpulse_consumer_lag series, summing to 0 once everything is consumed",
    )
    lag_topics = {s["metric"]["topic"] for s in prometheus.query("callpulse_consumer_lag")}
    assert lag_topics == {settings.topic("calls"), settings.topic("tickets")}

    # The monitor's event counters and lag histogram.
    results = {(s["metric"]["topic"], s["metric"]["result"]) for s in prometheus.query("callpulse_events_total")}
    assert results == {(t, r) for t in ("calls", "tickets") for r in ("ok", "duplicate", "invalid", "late")}
    assert prometheus.value('sum(callpulse_events_total{result=~"invalid|late"})') == 0
    assert len(prometheus.query("callpulse_event_lag_seconds_bucket")) >= 10

    # The committed rules load and evaluate.
    def rules_ok() -> bool:
        groups = prometheus.api("rules")["groups"]
        assert {g["name"] for g in groups} == RULE_GROUPS, [g["name"] for g in groups]
        bad = [(r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
        assert not bad, bad
        return True

    wait_for(rules_ok, timeout_s=15, interval_s=0.2, message="every callpulse rule evaluated with health ok")
    loaded = sum(len(g["rules"]) for g in prometheus.api("rules")["groups"])
    committed = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in (RULES, OPERATIONS)]
    assert loaded == sum(len(g["rules"]) for rules in committed for g in rules["groups"])
    # A healthy pipeline fires none of the operational alerts.
    alerts = prometheus.api("alerts")["alerts"]
    firing = [
        a["labels"]["alertname"] for a in alerts if a["labels"].get("scope") == "pipeline" and a["state"] == "firing"
    ]
    assert firing == [], firing

    # Prometheus holds the monitor's numbers: every gauge equals the snapshot's, and a null KPI has no series.
    wait_for(lambda: _gauges_agree(prometheus, settings), timeout_s=15, interval_s=0.5, message="gauges = snapshots")

    def floor_calls_agree() -> bool:
        stored = prometheus.value('callpulse_floor_kpi{kpi="calls_handled",window="15m"}')
        shown = _snapshot(settings, "15m")["floor"]["kpis"]["calls_handled"]
        assert stored == shown > 0, f"Prometheus {stored}, snapshot {shown}"
        return True

    wait_for(floor_calls_agree, timeout_s=15, interval_s=0.5, message="floor calls_handled 15m = the snapshot's")

    # callpulse_alerts_active counts the monitor's active alerts (the sweep moves them, so compare until equal).
    def alerts_agree() -> bool:
        stored = {
            (s["metric"]["kpi"], s["metric"]["severity"], s["metric"]["scope"]): float(s["value"][1])
            for s in prometheus.query("callpulse_alerts_active > 0")
        }
        active: dict[tuple[str, str, str], float] = {}
        for alert in _snapshot(settings, "15m")["alerts"]:
            key = (alert["kpi"], alert["severity"], alert["scope"])
            active[key] = active.get(key, 0) + 1
        assert stored == active, f"Prometheus {stored} != snapshot {active}"
        return True

    wait_for(alerts_agree, timeout_s=15, interval_s=0.5, message="callpulse_alerts_active = the snapshot's alerts")

    # Variables from the data: a real team, and one of its agents, from the snapshot of the widest rolling window
    # (the agents /metrics exports; `today` would miss the shift's agents for a while after midnight).
    snap = _snapshot(settings, max((n for n in settings.window_names if n != "today"), key=settings.window_s))
    teams = sorted(t["team"] for t in snap["teams"])
    assert len(teams) == 3, teams
    members = {team: sorted(a["agent_id"] for a in snap["agents"] if a["team"] == team) for team in teams}
    queues = sorted(q["queue"] for q in snap["queues"])
    assert queues, "the shift has no queued calls"
    candidates = [
        {"team": team, "agent": agent, "window": "15m", "queue": queue}
        for team in teams
        for agent in members[team]
        for queue in queues
    ]
    primary = candidates[0]

    # The dashboards' variables offer exactly the real teams, and the agents of the chosen team.
    committed_dashboards = {
        path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS.glob("*.json"))
    }
    assert set(committed_dashboards) == set(provisioning.dashboards(settings))
    for name, dashboard in committed_dashboards.items():
        for variable in dashboard["templating"]["list"]:
            offered = _variable_values(prometheus, variable["query"], primary)
            wanted = {"team": set(teams), "queue": set(queues)}.get(variable["name"], set(members[primary["team"]]))
            assert offered == wanted, f"{name} ${variable['name']} offers {sorted(offered)}, expected {sorted(wanted)}"

    # Every panel query of every dashboard returns data: with the primary team and agent where the KPI
    # applies to them (an inbound team has no connect rate), else with another real team and agent.
    empty: list[str] = []
    for name, dashboard in committed_dashboards.items():
        per_candidate = [provisioning.panel_queries(dashboard, variables) for variables in candidates]
        assert per_candidate[0], f"{name} has no panel queries"
        for i, query in enumerate(per_candidate[0]):
            found = False
            for queries in per_candidate:
                result = prometheus.query(queries[i])
                if result:
                    # A stat or time series of one team or agent: one series, a real number. A panel split by a
                    # label (agents by state, queues, campaigns) has one series per value.
                    split = "sum by (" in queries[i] or name == "queues.json"
                    assert split or len(result) == 1, f"{name}: {queries[i]} gave {len(result)} series: {result}"
                    assert all(math.isfinite(float(r["value"][1])) for r in result), (
                        f"{name}: {queries[i]} gave {result}"
                    )
                    found = True
                    break
            # The longest wait has no series while nobody waits (a dash on the board), as the snapshot says.
            nobody_waits = all(q["longest_wait_seconds"] is None for q in snap["queues"])
            if not found and not (nobody_waits and "callpulse_queue_longest_wait_seconds" in query):
                empty.append(f"{name}: {query}")
    assert not empty, "panel queries with no data for any real team/agent:\n" + "\n".join(empty)
