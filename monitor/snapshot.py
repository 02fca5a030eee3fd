"""Build the contract's snapshot (agents, teams, floor, alerts, scores) from window rows: pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from callpulse import catalogue
from callpulse.scorecard import mean_score
from callpulse.settings import KPI_KEYS, QUEUE_KPI_KEYS, Rule, Settings, window_name
from monitor import queueview, untimed
from streams import windows as w
from streams.alerts import iso, level
from streams.queuestore import CampaignRow, QueueRow
from streams.store import AgentWindows, TeamWindows

Watched = list[tuple[str, Rule]]  # the KPIs with a rule for a subject, in catalogue order


def _watched(settings: Settings, team: str | None, cache: dict[str | None, Watched]) -> Watched:
    """The (kpi, rule) pairs that apply to a team's agents (team overrides first), computed once per team and
    settings (kept between snapshots: `cache` is this call's, the settings' own outlives it)."""
    out = cache.get(team)
    if out is None:
        kept = _WATCHED.get(id(settings))
        if kept is None or kept[0] is not settings:
            if len(_WATCHED) > 8:
                _WATCHED.clear()
            kept = _WATCHED[id(settings)] = (settings, {})
        out = kept[1].get(team)
        if out is None:
            out = kept[1][team] = [(k, r) for k in KPI_KEYS if (r := settings.rule_for(k, team)) is not None]
        cache[team] = out
    return out


_WATCHED: dict[int, tuple[Settings, dict[str | None, Watched]]] = {}  # id(settings) -> (settings, team -> pairs)


def _levels(
    settings: Settings,
    team: str | None,
    sums: w.Sums,
    values: Mapping[str, Any],
    muted: set[str] | frozenset[str],
    watched: Watched | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Breached KPIs and their severity, by the thresholds (respecting min_samples); muted ones don't colour."""
    breaches: list[str] = []
    levels: dict[str, str] = {}
    if watched is None:
        watched = _watched(settings, team, {})
    for kpi, rule in watched:
        value = values.get(kpi)
        if value is None or w.samples(sums, kpi) < rule.min_samples:
            continue
        hit = level(rule, value)
        if hit is None:
            continue
        breaches.append(kpi)
        if kpi not in muted:
            levels[kpi] = hit[0]
    return breaches, levels


_ORDER = {k: i for i, k in enumerate(KPI_KEYS)}
Memo = untimed.Held  # what agents' and teams' counters make, kept between snapshots (monitor/untimed.py)


def _split(watched: Watched) -> tuple[Watched, Watched]:
    """(those not made of time in state, those made of it) of a subject's watched KPIs, worked out once per list
    (the lists are kept per settings and team by `_watched`)."""
    held = _SPLIT.get(id(watched))
    if held is None or held[0] is not watched:
        if len(_SPLIT) > 4096:
            _SPLIT.clear()
        parts = ([p for p in watched if not untimed.is_timed(p[0])], [p for p in watched if untimed.is_timed(p[0])])
        held = _SPLIT[id(watched)] = (watched, *parts)
    return held[1], held[2]


_SPLIT: dict[int, tuple[Watched, Watched, Watched]] = {}


def _untimed_levels(
    settings: Settings, team: str | None, sums: w.Sums, muted: set[str] | frozenset[str], watched: Watched
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """A subject's KPI values, and the breaches and levels of those not made of time in state."""
    values = w.kpis_from_sums(sums)
    breaches, levels = _levels(settings, team, sums, values, muted, _split(watched)[0])
    return values, breaches, levels


def _kpi_values(
    key: tuple[str, str, int],
    token: Any,
    team: str | None,
    sums: w.Sums,
    settings: Settings,
    muted: set[str] | frozenset[str],
    watched: Watched,
    memo: Memo | None,
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """A subject's KPI values, breaches and levels in a window (before held alerts). Those not made of time in
    state are kept in `memo` under `key` while `token` holds; those made of it are worked out from `sums`. The
    breaches and levels may be the memo's own: a caller that changes them copies them first."""
    held = untimed.kept(memo, key, token, lambda: _untimed_levels(settings, team, sums, muted, watched))
    values = {**held[0], **untimed.timed_values(sums)}
    breaches, levels = held[1], held[2]
    timed = _split(watched)[1]
    if timed:
        timed_breaches, timed_levels = _levels(settings, team, sums, values, muted, timed)
        if timed_breaches:
            breaches = sorted([*breaches, *timed_breaches], key=_ORDER.__getitem__)
            levels = {**levels, **timed_levels}
    return values, breaches, levels


def _rule_json(rule: Rule) -> dict[str, Any]:
    data = {k: v for k, v in asdict(rule).items() if v is not None and k != "kpi"}
    data["direction"] = rule.direction
    return data


def build(
    rows: Sequence[AgentWindows],
    *,
    window_s: int,
    settings: Settings,
    now_ms: int,
    alerts: Iterable[dict[str, Any]] = (),
    snoozes: Mapping[tuple[str, str, str], int] | None = None,
    team_filter: str | None = None,
    teams: Sequence[TeamWindows] | None = None,
    floor: tuple[int, Mapping[int, w.Sums]] | None = None,
    include_agents: bool = True,
    score_rows: Sequence[AgentWindows] | None = None,
    scored: Scores | None = None,
    state_rows: Sequence[AgentWindows] | None = None,
    queue_rows: Sequence[QueueRow] = (),
    campaign_rows: Sequence[CampaignRow] = (),
    memo: Memo | None = None,
    sections: queueview.SectionMemo | None = None,
    state_counts: Callable[[str | None], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """The snapshot for one window; `snoozes` maps (kpi, 'agent'|'team', subject) to until (ms).

    `teams` and `floor` (agent count, sums per window) are kept totals; None sums them from `rows` instead.
    `include_agents=False` leaves the agent rows out (`agents=false`). Scores are `scored` when given, else
    computed from `score_rows` (default `rows`). Agents by state count `state_rows` (default `rows`): the
    whole floor, whatever the scope. `memo` keeps agents' and teams' values between calls, for rows that carry a
    `version` and teams that carry `counters` (the floor cache's): only the KPIs made of time in state are worked
    out again while they hold (monitor/untimed.py).
    """
    snoozes = {k: v for k, v in (snoozes or {}).items() if v > now_ms}
    alerts = list(alerts)
    alert_levels = _alert_levels(alerts)
    agents_out: list[dict[str, Any]] = []
    team_sums: dict[str, w.Sums] = {}
    team_counters: dict[str, w.Sums] = {}
    team_sizes: dict[str, int] = {}
    team_rows: dict[str, list[AgentWindows]] = {}  # the agent rows read, for counts of agents by state
    state_rows = rows if state_rows is None else state_rows
    if state_counts is None:  # counted here from the rows (a caller that keeps counts passes `state_counts`)
        for row in state_rows:
            if row.team:
                team_rows.setdefault(row.team, []).append(row)

    def counts_of(team: str | None) -> dict[str, int]:
        if state_counts is not None:
            return state_counts(team)
        return queueview.state_counts(state_rows if team is None else team_rows.get(team, []))

    if teams is None:
        for row in rows:
            if row.team:
                w.add_sums(team_sums.setdefault(row.team, w.empty_sums()), row.sums[window_s])
                team_sizes[row.team] = team_sizes.get(row.team, 0) + 1
    else:
        for t in teams:
            team_sums[t.team] = t.sums[window_s]
            team_sizes[t.team] = t.agents
            if t.counters is not None:
                team_counters[t.team] = t.counters[window_s]
    watched: dict[str | None, Watched] = {}
    agent_mutes: dict[str, set[str]] = {}
    for kpi, scope, subject in snoozes:
        if scope == "agent":
            agent_mutes.setdefault(subject, set()).add(kpi)
    unmuted: frozenset[str] = frozenset()
    for row in rows if include_agents else ():
        sums = row.sums[window_s]
        if team_filter is not None and row.team != team_filter:
            continue
        muted = agent_mutes.get(row.agent_id, unmuted)
        values, breaches, levels = _kpi_values(
            ("agent", row.agent_id, window_s),
            (row.version, row.team) if row.version else None,  # the floor cache's rows: same version, same counters
            row.team,
            sums,
            settings,
            unmuted,
            _watched(settings, row.team, watched),
            memo,
        )
        firing = alert_levels.get(("agent", row.agent_id))
        if muted or firing:
            levels = {k: v for k, v in levels.items() if k not in muted}
            _hold_alert_levels(levels, firing or {}, muted)
        agents_out.append(
            {
                "agent_id": row.agent_id,
                "team": row.team,
                "state": row.state,
                **queueview.agent_state_fields(row, window_s),
                "kpis": values,
                "breaches": breaches,
                "levels": levels,
                "muted": sorted(muted),
            }
        )
    teams_out: list[dict[str, Any]] = []
    for team in sorted(team_sums):
        if team_filter is not None and team != team_filter:
            continue
        sums = team_sums[team]
        muted = {kpi for (kpi, scope, subject) in snoozes if scope == "team" and subject == team}
        counters = team_counters.get(team)
        values, breaches, levels = _kpi_values(
            ("team", team, window_s),
            (counters, sorted(muted)) if counters is not None else None,  # teams_at's copy, changed by nobody
            team,
            sums,
            settings,
            muted,
            _watched(settings, team, watched),
            memo,
        )
        firing = alert_levels.get(("team", team))
        if firing:
            levels = dict(levels)
            _hold_alert_levels(levels, firing, muted)
        teams_out.append(
            {
                "team": team,
                "agents": team_sizes[team],
                "states": counts_of(team),
                "kpis": values,
                "breaches": breaches,
                "levels": levels,
                "muted": sorted(muted),
            }
        )
    card_scores = scored if scored is not None else scores(rows if score_rows is None else score_rows, settings)
    for agent in agents_out:
        if agent["agent_id"] in card_scores.agents:
            agent["points"], agent["score"] = card_scores.agents[agent["agent_id"]]
    for team_row in teams_out:
        if settings.scorecard is not None:
            team_row["score"] = card_scores.teams.get(team_row["team"])
    if floor is None:
        floor_agents, floor_sums = len(rows), w.total(row.sums[window_s] for row in rows)
    else:
        floor_agents, floor_sums = floor[0], dict(floor[1][window_s])
    floor_values = w.kpis_from_sums(floor_sums)
    floor_breaches, floor_levels = _levels(settings, None, floor_sums, floor_values, set())
    floor_alerts = alert_levels.get(("floor", ""), {})
    _hold_alert_levels(floor_levels, {k: v for k, v in floor_alerts.items() if k in floor_values}, set())
    queues_out, queue_floor = queueview.queue_section(
        queue_rows, window_s=window_s, settings=settings, now_ms=now_ms, memo=sections
    )
    queues_out = [_held_levels(q, alert_levels.get(("queue", q["queue"]))) for q in queues_out]
    _hold_alert_levels(queue_floor["levels"], {k: v for k, v in floor_alerts.items() if k in QUEUE_KPI_KEYS}, set())
    campaigns_out = queueview.campaign_section(campaign_rows, window_s=window_s, settings=settings, memo=sections)
    campaigns_out = [_held_levels(c, alert_levels.get(("campaign", c["campaign"]))) for c in campaigns_out]
    alerts_out = [
        a
        for a in alerts
        if team_filter is None
        or a.get("team") == team_filter
        or a.get("scope") == "floor"
        or _agent_in(a, rows, team_filter)
    ]
    floor_out: dict[str, Any] = {
        "agents": floor_agents,
        "kpis": floor_values,
        "breaches": floor_breaches,
        "levels": floor_levels,
        "states": counts_of(None),
        "queue": queue_floor,
    }
    if settings.scorecard is not None:
        floor_out["score"] = card_scores.floor
    return {
        "as_of": iso(now_ms),
        "window": window_name(window_s),
        "windows": list(settings.window_names),
        "agents": agents_out,
        "teams": teams_out,
        "floor": floor_out,
        "queues": queues_out,
        "campaigns": campaigns_out,
        "alerts": alerts_out,
        "snoozes": [
            {"kpi": kpi, ("agent_id" if scope == "agent" else "team"): subject, "until": iso(until)}
            for (kpi, scope, subject), until in sorted(snoozes.items())
        ],
        "thresholds": {kpi: _rule_json(rule) for kpi, rule in settings.rules.items()},
        "queue_thresholds": {kpi: _rule_json(rule) for kpi, rule in settings.queue_rules.items()},
        "catalogue": catalogue.describe(),
        "scorecard": _scorecard_json(settings),
    }


@dataclass
class Scores:
    """Scorecard results: per agent (points, score), per team and for the floor (mean of eligible agents)."""

    agents: dict[str, tuple[dict[str, float], float]] = field(default_factory=dict)
    teams: dict[str, float | None] = field(default_factory=dict)
    floor: float | None = None


def scores(rows: Sequence[AgentWindows], settings: Settings) -> Scores:
    """Score every agent over the scorecard's window; teams and floor average agents with an event in it."""
    card, window_s = settings.scorecard, settings.score_window_s
    if card is None or window_s is None:
        return Scores()
    scored: list[tuple[AgentWindows, dict[str, float], bool]] = []
    for row in rows:
        sums = row.sums.get(window_s)
        if sums is not None:
            scored.append((row, card.points(w.kpis_from_sums(sums)), int(sums.get(w.EVENTS, 0)) > 0))
    return summarise(scored)


def summarise(scored: Iterable[tuple[AgentWindows, dict[str, float], bool]]) -> Scores:
    """Scores from each agent's points and whether it had an event in the scorecard's window (then it counts
    towards its team's and the floor's mean)."""
    out = Scores()
    eligible: dict[str | None, list[float]] = {}
    for row, points, counted in scored:
        score = sum(points.values())
        out.agents[row.agent_id] = (points, score)
        if counted:
            eligible.setdefault(row.team, []).append(score)
    out.teams = {t: mean_score(s) for t, s in eligible.items() if t is not None}
    out.floor = mean_score(s for team_scores in eligible.values() for s in team_scores)
    return out


def _scorecard_json(settings: Settings) -> dict[str, Any] | None:
    card = settings.scorecard
    if card is None:
        return None
    return {
        "window": card.window,
        "total": card.total_weight,
        "kpis": [{"kpi": k.kpi, "weight": k.weight} for k in card.kpis],
    }


def _alert_levels(alerts: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """(scope, subject) -> {kpi: severity} of the alerts still firing."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for a in alerts:
        if a.get("status", "firing") != "firing":
            continue
        scope = a.get("scope", "")
        subject = a.get({"agent": "agent_id", "team": "team", "queue": "queue", "campaign": "campaign"}.get(scope, ""))
        by_kpi = out.setdefault((scope, subject or ""), {})
        if LEVEL_RANK.get(a.get("severity", ""), 0) > LEVEL_RANK.get(by_kpi.get(a["kpi"], ""), 0):
            by_kpi[a["kpi"]] = a["severity"]
    return out


LEVEL_RANK = {"warning": 1, "critical": 2}


def _hold_alert_levels(levels: dict[str, str], firing: Mapping[str, str], muted: set[str] | frozenset[str]) -> None:
    """A KPI with a firing alert shows the alert's level until the alert resolves (hysteresis included), so a
    tile never turns green while its alert still stands."""
    for kpi, severity in firing.items():
        if kpi not in muted:
            levels[kpi] = severity


def _held_levels(entry: dict[str, Any], firing: Mapping[str, str] | None) -> dict[str, Any]:
    """A queue's or campaign's entry with its firing alerts' levels held (`_hold_alert_levels`): a copy when it
    has any, as the entries are memoised and shared between snapshots, else the entry itself."""
    if not firing:
        return entry
    out = {**entry, "levels": dict(entry["levels"])}
    _hold_alert_levels(out["levels"], firing, set())
    return out


def _agent_in(alert: Mapping[str, Any], rows: Sequence[AgentWindows], team: str) -> bool:
    agent = alert.get("agent_id")
    return agent is not None and any(r.agent_id == agent and r.team == team for r in rows)
