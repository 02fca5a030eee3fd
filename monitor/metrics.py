"""Prometheus exposition: KPI gauges, alerts and event counters, current at scrape time.

Two collectors, each rendering the registry it is registered in (injected, never the global default):
- `KpiCollector` for `/metrics`: team, floor, queue and pipeline series. Team and floor values come from
  the monitor's floor cache (monitor/floorcache.py), which keeps them as agents change, so its size follows
  the number of teams, not of agents.
- `AgentCollector` for `/metrics/agents`: the per-agent series (`callpulse_agent_kpi`,
  `callpulse_agent_score`), one per agent, KPI and window; scrape it less often (every 30 s in our
  prometheus.yml) — at 10,000 agents it is ~150k series.
Each `scrape()` refreshes the floor cache (reading what changed since), then renders.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from callpulse import catalogue, gcpolicy
from callpulse.settings import Settings, window_name
from monitor import queueview, untimed
from monitor.exposition import Family, TextGauge, render
from monitor.floorcache import FloorCache
from monitor.snapshot import Scores
from streams import campaigns, queues
from streams import windows as w
from streams.store import WindowStore, lag_histogram

TOPICS = ("calls", "tickets")
RESULTS = ("ok", "duplicate", "invalid", "late")


_AGENT_KPIS = tuple(k.key for k in catalogue.CATALOGUE)  # the order kpis_from_sums gives


def _untimed_lines(family: TextGauge, labels: list[str], window: str, sums: w.Sums) -> dict[str, str]:
    """The text lines of the KPIs of `sums` not made of time in state, by KPI."""
    return {
        kpi: family.line([*labels, kpi, window], value)
        for kpi, value in w.kpis_from_sums(sums).items()
        if value is not None and not untimed.is_timed(kpi)
    }


def _score_families(rows: list[Any], scores: Scores, settings: Settings, *, agents: bool) -> Iterator[Family]:
    """callpulse_agent_score (agents=True), or callpulse_team_score and callpulse_floor_score."""
    card, window_s = settings.scorecard, settings.score_window_s
    if card is None or window_s is None:
        return
    name = window_name(window_s)
    if agents:
        agent = TextGauge(
            "callpulse_agent_score",
            "Scorecard points of an agent (of the scorecard's total)",
            labels=["agent", "team", "window"],
        )
        for row in rows:
            if row.agent_id in scores.agents:
                agent.add_metric([row.agent_id, row.team or "", name], scores.agents[row.agent_id][1])
        yield agent
        return
    team = TextGauge("callpulse_team_score", "Mean score of a team's agents with an event in the window",
                             labels=["team", "window"])  # fmt: skip
    floor = TextGauge("callpulse_floor_score", "Mean score of the floor's agents with an event in the window",
                              labels=["window"])  # fmt: skip
    for team_name, value in sorted(scores.teams.items()):
        if value is not None:
            team.add_metric([team_name, name], value)
    if scores.floor is not None:
        floor.add_metric([name], scores.floor)
    yield team
    yield floor


class AgentCollector:
    """Yields the per-agent families (`/metrics/agents`) from data fetched by the current scrape."""

    def __init__(self, settings: Settings, store: WindowStore, registry: CollectorRegistry, floor: FloorCache) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.floor = floor
        self._rows: list[Any] | None = None
        self._scores = Scores()
        registry.register(self)  # type: ignore[arg-type]  # it also yields TextGauge (monitor.exposition renders it)

    async def scrape(self) -> bytes:
        """Every agent on the floor now (from the floor cache, refreshed first), rendered as exposition text."""
        now_ms = await self.floor.refresh()
        self._rows = self.floor.agents_at(now_ms, list(self.settings.windows_s))
        self._scores = self.floor.scores_at(now_ms, self.settings)
        try:
            with gcpolicy.paused():  # a text line or two per series, no cycles: see monitor.server's snapshot
                return render(self.registry)
        finally:
            self._rows = None

    def collect(self) -> Iterator[Family]:
        """prometheus_client hook: yield the families for the data of this scrape."""
        rows = self._rows
        if rows is None:
            return
        agent = TextGauge(
            "callpulse_agent_kpi", "KPI per agent and rolling window", labels=["agent", "team", "kpi", "window"]
        )
        names = {ws: window_name(ws) for ws in self.settings.windows_s}
        for row in rows:
            for ws, name in names.items():
                for kpi, value in w.kpis_from_sums(row.sums[ws]).items():
                    if value is not None:
                        agent.add_metric([row.agent_id, row.team or "", kpi, name], value)
        yield agent
        yield from _score_families(rows, self._scores, self.settings, agents=True)


class KpiCollector:
    """Yields callpulse_* families from data fetched by the current scrape."""

    def __init__(self, settings: Settings, store: WindowStore, registry: CollectorRegistry, floor: FloorCache) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.floor = floor
        self._data: dict[str, Any] | None = None
        self._team_memo: untimed.Held = {}  # (team, window) -> the lines of KPIs not made of time in state
        self.clients = lambda: 0
        registry.register(self)  # type: ignore[arg-type]  # it also yields TextGauge (monitor.exposition renders it)

    async def scrape(self) -> bytes:
        """Read Redis now and render the exposition text."""
        now_ms = await self.floor.refresh()
        windows_s = list(self.settings.windows_s)
        teams = self.floor.teams_at(now_ms, self.settings.team_metrics_s)
        floor_agents, floor_sums = self.floor.floor_at(now_ms, windows_s)
        scores = self.floor.scores_at(now_ms, self.settings)
        stats = await self.store.read_stats()
        raw_alerts = await self.store.client.hvals(f"{self.store.ns}alerts")
        settings = self.settings
        presence = self.floor.state_counts_by_team()
        groups = self.floor.groups
        assert groups is not None, "the monitor's floor cache keeps its queues and campaigns"
        queue_rows = groups.queues_at(now_ms, windows_s, lambda q: settings.queue(q).max_wait_s * 1000)
        named, floor_campaign = groups.campaigns_at(now_ms, windows_s)
        self._data = {
            "teams": teams,
            "floor_agents": floor_agents,
            "floor": floor_sums,
            "stats": stats,
            "alerts": raw_alerts,
            "windows": windows_s,
            "scores": scores,
            "presence": presence,
            "queues": queue_rows,
            "campaigns": named,
            "floor_campaign": floor_campaign,
            "now_ms": now_ms,
        }
        try:
            with gcpolicy.paused():  # a text line or two per series, no cycles: see monitor.server's snapshot
                return render(self.registry)
        finally:
            self._data = None

    def collect(self) -> Iterator[Family]:
        """prometheus_client hook: yield the families for the data of this scrape."""
        data = self._data
        if data is None:
            return
        team = TextGauge("callpulse_team_kpi", "KPI per team and rolling window", labels=["team", "kpi", "window"])
        floor = TextGauge("callpulse_floor_kpi", "KPI for the floor and rolling window", labels=["kpi", "window"])
        names = {ws: window_name(ws) for ws in data["windows"]}
        for t in data["teams"]:
            for ws in self.settings.team_metrics_s:
                counters = t.counters.get(ws) if t.counters is not None else None
                team.lines += self._team_lines(team, t.team, ws, names[ws], counters, t.sums[ws])
        for ws in data["windows"]:
            for kpi, value in w.kpis_from_sums(data["floor"][ws]).items():
                if value is not None:
                    floor.add_metric([kpi, window_name(ws)], value)
        for name, sums in data["floor_campaign"].sums.items():  # the regulators' 24h and 30d
            value = campaigns.abandon_rate(sums)
            if value is not None:
                floor.add_metric(["outbound_abandon_rate", name], value)
        yield team
        yield floor
        yield from _score_families([], data["scores"], self.settings, agents=False)
        yield from self._queue_families(data)
        active = TextGauge(
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
        scoped = [(k, "queue") for k in self.settings.queue_rules] + [
            (k, "campaign") for k in self.settings.campaign_rules
        ]
        for kpi, scope in scoped:
            for sev in ("warning", "critical"):
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
        agents.add_metric([], data["floor_agents"])
        yield agents

    def _team_lines(
        self, family: TextGauge, team: str, window_s: int, name: str, counters: w.Sums | None, sums: w.Sums
    ) -> list[str]:
        """A team's KPI lines in one window: those of its counters kept while the counters are the same
        (monitor/untimed.py), those made of time in state (which moves with the clock) worked out again."""
        held = untimed.kept(
            self._team_memo, (team, window_s), counters, lambda: _untimed_lines(family, [team], name, sums)
        )
        lines = dict(held)
        for kpi, value in untimed.timed_values(sums).items():
            if value is not None:
                lines[kpi] = family.line([team, kpi, name], value)
        return [lines[k] for k in _AGENT_KPIS if k in lines]

    def _queue_families(self, data: dict[str, Any]) -> Iterator[Family]:
        """Queue KPIs, waiting calls and longest wait, agents by state, campaign KPIs."""
        queue_kpi = TextGauge(
            "callpulse_queue_kpi", "Queue KPI per queue and rolling window", labels=["queue", "kpi", "window"]
        )
        waiting = TextGauge("callpulse_queue_waiting", "Calls waiting in the queue now", labels=["queue"])
        longest = TextGauge(
            "callpulse_queue_longest_wait_seconds",
            "Seconds the longest-waiting caller has waited now (absent when nobody waits)",
            labels=["queue"],
        )
        for row in data["queues"]:
            for ws in data["windows"]:
                for kpi, value in queues.kpis_from_sums(row.sums.get(ws, {})).items():
                    if value is not None:
                        queue_kpi.add_metric([row.queue, kpi, window_name(ws)], value)
            values = queueview.queue_values({}, row.waiting, row.oldest_entry_ms, data["now_ms"])
            waiting.add_metric([row.queue], row.waiting)
            if values["longest_wait_seconds"] is not None:
                longest.add_metric([row.queue], values["longest_wait_seconds"])
        yield queue_kpi
        yield waiting
        yield longest
        in_state = TextGauge("callpulse_agents_in_state", "Agents in each state now, by team", labels=["team", "state"])
        for team_name, counts in sorted(data["presence"].items(), key=lambda tc: tc[0] or ""):
            for state, n in counts.items():
                in_state.add_metric([team_name or "", state], n)
        yield in_state
        campaign = TextGauge(
            "callpulse_campaign_kpi",
            "Outbound KPIs per dialer campaign over the rolling windows and the regulators' 24h and 30d",
            labels=["campaign", "kpi", "window"],
        )
        for row in data["campaigns"]:
            for name, sums in row.sums.items():
                for kpi, value in campaigns.kpis_from_sums(sums).items():
                    if value is not None:
                        campaign.add_metric([row.campaign, kpi, name], value)
        yield campaign
