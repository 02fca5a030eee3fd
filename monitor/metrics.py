"""Prometheus exposition: KPI gauges, alerts and event counters read from Redis at scrape time.

The collector keeps nothing between scrapes: `scrape()` reads the store, then renders the
registry it is registered in (injected, never the global default).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from callpulse.settings import Settings, window_name
from monitor.snapshot import scores as snapshot_scores
from streams import windows as w
from streams.store import WindowStore, lag_histogram

TOPICS = ("calls", "tickets")
RESULTS = ("ok", "duplicate", "invalid", "late")


def _score_families(rows: list[Any], settings: Settings) -> Iterator[Metric]:
    """callpulse_agent_score, callpulse_team_score and callpulse_floor_score over the scorecard's window."""
    card, window_s = settings.scorecard, settings.score_window_s
    if card is None or window_s is None:
        return
    name = window_name(window_s)
    agent = GaugeMetricFamily(
        "callpulse_agent_score",
        "Scorecard points of an agent (of the scorecard's total)",
        labels=["agent", "team", "window"],
    )
    team = GaugeMetricFamily("callpulse_team_score", "Mean score of a team's agents with an event in the window",
                             labels=["team", "window"])  # fmt: skip
    floor = GaugeMetricFamily("callpulse_floor_score", "Mean score of the floor's agents with an event in the window",
                              labels=["window"])  # fmt: skip
    scores = snapshot_scores(rows, settings)
    for row in rows:
        if row.agent_id in scores.agents:
            agent.add_metric([row.agent_id, row.team or "", name], scores.agents[row.agent_id][1])
    for team_name, value in sorted(scores.teams.items()):
        if value is not None:
            team.add_metric([team_name, name], value)
    if scores.floor is not None:
        floor.add_metric([name], scores.floor)
    yield agent
    yield team
    yield floor


class KpiCollector:
    """Yields callpulse_* families from data fetched by the current scrape."""

    def __init__(self, settings: Settings, store: WindowStore, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self._data: dict[str, Any] | None = None
        self.clients = lambda: 0
        registry.register(self)

    async def scrape(self) -> bytes:
        """Read Redis now and render the exposition text."""
        now_ms = int(time.time() * 1000)
        windows_s = list(self.settings.windows_s)
        rows = await self.store.read_windows(now_ms, windows_s)
        stats = await self.store.read_stats()
        raw_alerts = await self.store.client.hvals(f"{self.store.ns}alerts")
        self._data = {"rows": rows, "stats": stats, "alerts": raw_alerts, "windows": windows_s}
        try:
            return generate_latest(self.registry)
        finally:
            self._data = None

    def _scores(self, rows: list[Any]) -> Iterator[Metric]:
        yield from _score_families(rows, self.settings)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client hook: yield the families for the data of this scrape."""
        data = self._data
        if data is None:
            return
        agent = GaugeMetricFamily(
            "callpulse_agent_kpi", "KPI per agent and rolling window", labels=["agent", "team", "kpi", "window"]
        )
        team = GaugeMetricFamily(
            "callpulse_team_kpi", "KPI per team and rolling window", labels=["team", "kpi", "window"]
        )
        floor = GaugeMetricFamily(
            "callpulse_floor_kpi", "KPI for the floor and rolling window", labels=["kpi", "window"]
        )
        teams: dict[str, dict[int, list[w.Sums]]] = {}
        for row in data["rows"]:
            for ws in data["windows"]:
                name = window_name(ws)
                for kpi, value in w.kpis_from_sums(row.sums[ws]).items():
                    if value is not None:
                        agent.add_metric([row.agent_id, row.team or "", kpi, name], value)
                if row.team:
                    teams.setdefault(row.team, {}).setdefault(ws, []).append(row.sums[ws])
        for name_team, by_window in sorted(teams.items()):
            for ws, sums in by_window.items():
                for kpi, value in w.kpis_from_sums(w.total(sums)).items():
                    if value is not None:
                        team.add_metric([name_team, kpi, window_name(ws)], value)
        for ws in data["windows"]:
            for kpi, value in w.kpis_from_sums(w.total(r.sums[ws] for r in data["rows"])).items():
                if value is not None:
                    floor.add_metric([kpi, window_name(ws)], value)
        yield agent
        yield team
        yield floor
        yield from self._scores(data["rows"])
        active = GaugeMetricFamily(
            "callpulse_alerts_active", "Firing alerts by KPI, severity and scope", labels=["kpi", "severity", "scope"]
        )
        counts: dict[tuple[str, str, str], int] = {}
        kpis = set(self.settings.rules)
        for rules in self.settings.team_rules.values():
            kpis |= set(rules)
        for kpi in kpis:
            for sev in ("warning", "critical"):
                for scope in ("agent", "team", "floor"):
                    counts[(kpi, sev, scope)] = 0
        for raw in data["alerts"]:
            a = orjson.loads(raw)
            key = (a["kpi"], a["severity"], a["scope"])
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            active.add_metric(list(key), n)
        yield active
        stats = data["stats"]
        events = CounterMetricFamily(
            "callpulse_events", "Events seen by the workers, by result", labels=["topic", "result"]
        )
        for topic in TOPICS:
            for result in RESULTS:
                events.add_metric([topic, result], stats.get(f"{topic}|{result}", 0))
        yield events
        buckets, _count, total_s = lag_histogram(stats)
        lag = HistogramMetricFamily("callpulse_event_lag_seconds", "Event ts to its window update in Redis, seconds")
        lag.add_metric([], buckets, total_s)
        yield lag
        clients = GaugeMetricFamily("callpulse_monitor_clients", "Websocket clients connected to this monitor")
        clients.add_metric([], self.clients())
        yield clients
        agents = GaugeMetricFamily("callpulse_floor_agents", "Agents with an event in the longest window")
        agents.add_metric([], len(data["rows"]))
        yield agents
