"""Brute-force recomputation of every KPI straight from the contract's definitions.

Deliberately naive and independent of `streams`: it looks at the whole set of (valid, unique)
events at once, so arrival order cannot matter to it. Tests compare the system against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

BUCKET_S = 10
TODAY = 0  # the window key of the calendar window `today`


def ts_of(event: Mapping[str, Any]) -> float:
    """Event time in epoch seconds."""
    ts = event["ts"]
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp()
    return float(ts)


def in_window(ts: float, now: float, window_s: int, tz: tzinfo = UTC) -> bool:
    """The contract's T - W < ts <= T, on 10 s buckets as the system documents.

    `window_s` 0 is the calendar window `today`: the local date of ts (in `tz`) is the local date of T,
    and ts is not past T's bucket.
    """
    now_ms = round(now * 1000)
    b = round(ts * 1000) // (BUCKET_S * 1000)
    hi = now_ms // (BUCKET_S * 1000)
    if window_s == TODAY:
        same_day = datetime.fromtimestamp(ts, tz).date() == datetime.fromtimestamp(now, tz).date()
        return same_day and b <= hi
    lo = (now_ms - window_s * 1000) // (BUCKET_S * 1000)
    return lo < b <= hi


def reaches_back_to(now: float, window_s: int, tz: tzinfo = UTC) -> float:
    """The earliest ts (exclusive) a window can hold: T - W, or just before the first instant of T's local date."""
    if window_s != TODAY:
        return now - window_s
    day = datetime.fromtimestamp(now, tz).date()
    # Step back in whole seconds to the last one of the previous local date (dates change on whole seconds).
    t = math.floor(now)
    while datetime.fromtimestamp(t - 1, tz).date() == day:
        t -= 60 if datetime.fromtimestamp(t - 60, tz).date() == day else 1
    return t - 0.001


def unique(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """First copy of each event_id."""
    seen: dict[str, Mapping[str, Any]] = {}
    for e in events:
        seen.setdefault(e["event_id"], e)
    return list(seen.values())


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def agent_sums(
    events: Sequence[Mapping[str, Any]], now: float, window_s: int, repeat_s: int, tz: tzinfo = UTC
) -> dict[str, dict]:
    """Per agent numerators and denominators in the window."""
    evs = unique(events)
    out: dict[str, dict[str, float]] = {}

    def acc(agent: str, key: str, value: float) -> None:
        out.setdefault(agent, {}).setdefault(key, 0.0)
        out[agent][key] += value

    for e in evs:
        if e.get("agent_id") is None or not in_window(ts_of(e), now, window_s, tz):
            continue
        agent, t = e["agent_id"], e["type"]
        if t == "call.ended":
            if e["connected"]:
                acc(agent, "handle", e["talk_seconds"] + e.get("hold_seconds", 0) + e.get("wrap_seconds", 0))
                acc(agent, "connected", 1)
            if e["direction"] == "outbound":
                acc(agent, "dials", 1)
                if e["connected"]:
                    acc(agent, "out_connected", 1)
                    if e.get("outcome") == "sale":
                        acc(agent, "sales", 1)
                        if e.get("amount") is not None:
                            acc(agent, "revenue", e["amount"])
                            acc(agent, "priced_sales", 1)
                    elif e.get("outcome") == "appointment":
                        acc(agent, "appointments", 1)
        elif t == "survey.csat":
            acc(agent, "csat_n", 1)
            acc(agent, "csat_good", 1 if e["score"] >= 4 else 0)
        elif t == "ticket.escalated":
            acc(agent, "escalated", 1)
            acc(agent, "closed", 1)
        elif t == "ticket.resolved":
            acc(agent, "closed", 1)
        elif t == "survey.nps":
            acc(agent, "nps_n", 1)
            acc(agent, "promoters", 1 if e["score"] >= 9 else 0)
            acc(agent, "detractors", 1 if e["score"] <= 6 else 0)
        elif t == "qa.scored":
            acc(agent, "qa_points", e["score"])
            acc(agent, "qa_max", e["max_score"])
            acc(agent, "qa_reviews", 1)
            if e.get("compliant") is not None:
                acc(agent, "qa_checked", 1)
                acc(agent, "qa_compliant", 1 if e["compliant"] else 0)
        elif t == "complaint.logged":
            acc(agent, "complaints", 1)
    # FCR: all connected calls with a customer, whatever their window
    calls: dict[str, list[Mapping[str, Any]]] = {}
    for e in evs:
        if e["type"] == "call.ended" and e["connected"] and e.get("customer_id") is not None:
            calls.setdefault(str(e["customer_id"]), []).append(e)
    for cs in calls.values():
        cs.sort(key=lambda c: (round(ts_of(c) * 1000), c["event_id"]))
        for i, c in enumerate(cs):
            tc = round(ts_of(c) * 1000)
            if not in_window(ts_of(c), now, window_s, tz):
                continue
            before = any(tc - round(ts_of(d) * 1000) < repeat_s * 1000 for d in cs[:i])
            if before:
                continue
            after = any(round(ts_of(d) * 1000) - tc < repeat_s * 1000 for d in cs[i + 1 :])
            acc(c["agent_id"], "first", 1)
            acc(c["agent_id"], "resolved_first", 1 if (c.get("resolved", False) and not after) else 0)
    # first response time
    created: dict[str, tuple[int, str]] = {}
    replies: dict[str, tuple[int, str, str]] = {}
    for e in evs:
        key = (round(ts_of(e) * 1000), e["event_id"])
        if e["type"] == "ticket.created":
            tid = str(e["ticket_id"])
            if tid not in created or key < created[tid]:
                created[tid] = key
        elif e["type"] == "ticket.replied":
            tid = str(e["ticket_id"])
            if tid not in replies or key < replies[tid][:2]:
                replies[tid] = (*key, e["agent_id"])
    for tid, (rts, _, agent) in replies.items():
        if tid in created and in_window(rts / 1000, now, window_s, tz):
            acc(agent, "response", max(0, rts - created[tid][0]) / 1000)
            acc(agent, "responses", 1)
    return out


def kpis(s: Mapping[str, float]) -> dict[str, float | int | None]:
    """KPI values from summed numerators/denominators."""
    g = lambda k: s.get(k, 0)  # noqa: E731
    return {
        "aht_seconds": _ratio(g("handle"), g("connected")),
        "connect_rate": _ratio(g("out_connected"), g("dials")),
        "fcr": _ratio(g("resolved_first"), g("first")),
        "response_seconds": _ratio(g("response"), g("responses")),
        "calls_handled": int(g("connected")),
        "dials": int(g("dials")),
        "conversion_rate": _ratio(g("sales"), g("out_connected")),
        "csat": _ratio(g("csat_good"), g("csat_n")),
        "escalation_rate": _ratio(g("escalated"), g("closed")),
        "sales": int(g("sales")),
        "revenue": g("revenue"),
        "aov": _ratio(g("revenue"), g("priced_sales")),
        "appointment_rate": _ratio(g("appointments"), g("out_connected")),
        "tickets_handled": int(g("closed")),
        "nps": None if g("nps_n") == 0 else 100 * (g("promoters") - g("detractors")) / g("nps_n"),
        "qa_score": _ratio(g("qa_points"), g("qa_max")),
        "compliance_rate": _ratio(g("qa_compliant"), g("qa_checked")),
        "complaint_rate": _ratio(g("complaints"), g("connected") + g("closed")),
    }


def teams_of(events: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each agent's team: the `team` of its latest event (by ts, then event_id) that names one."""
    best: dict[str, tuple[int, str, str]] = {}
    for e in unique(events):
        if e.get("agent_id") is None or not e.get("team"):
            continue
        key = (round(ts_of(e) * 1000), e["event_id"], e["team"])
        if e["agent_id"] not in best or key[:2] > best[e["agent_id"]][:2]:
            best[e["agent_id"]] = key
    return {a: k[2] for a, k in best.items()}


def expected(
    events: Sequence[Mapping[str, Any]],
    now: float,
    window_s: int,
    *,
    longest_s: int = 28800,
    repeat_s: int = 86400,
    tz: tzinfo = UTC,
    since: float | None = None,
) -> dict[str, Any]:
    """{'agents': {id: kpis}, 'teams': {team: kpis}, 'floor': kpis} as the snapshot should show them.

    The agents are those with an event after `since` (default now - longest_s): the roster the rows were read for.
    """
    sums = agent_sums(events, now, window_s, repeat_s, tz)
    since = now - longest_s if since is None else since
    active = {e["agent_id"] for e in unique(events) if e.get("agent_id") and ts_of(e) > since}
    teams = teams_of(events)
    agents = {a: kpis(sums.get(a, {})) for a in sorted(active)}
    team_sums: dict[str, dict[str, float]] = {}
    floor: dict[str, float] = {}
    for a in active:
        for k, v in sums.get(a, {}).items():
            floor[k] = floor.get(k, 0) + v
            if a in teams:
                team_sums.setdefault(teams[a], {})
                team_sums[teams[a]][k] = team_sums[teams[a]].get(k, 0) + v
        if a in teams:
            team_sums.setdefault(teams[a], {})
    return {
        "agents": agents,
        "teams": {t: kpis(s) for t, s in team_sums.items()},
        "floor": kpis(floor),
        "agent_teams": {a: teams.get(a) for a in active},
    }


def points(spec: Mapping[str, Any], value: float | None) -> float:
    """The contract's points for one KPI: null earns 0; target (higher or lower is better) or target_range."""
    weight = spec["weight"]
    if value is None:
        return 0.0
    if "target_range" in spec:
        lo, hi = spec["target_range"]
        if value < lo:
            return weight * max(value, 0) / lo
        return weight if value <= hi else weight * hi / value
    if spec.get("better", "higher") == "lower":
        return weight if value == 0 else weight * min(1, spec["target"] / value)
    return weight * max(0, min(1, value / spec["target"]))


def scores(
    events: Sequence[Mapping[str, Any]],
    now: float,
    window_s: int,
    card: Mapping[str, Mapping[str, Any]],
    *,
    repeat_s: int = 86400,
    tz: tzinfo = UTC,
    since: float,
) -> dict[str, Any]:
    """{'agents': {id: score}, 'teams': {team: mean}, 'floor': mean} over the scorecard's window.

    Teams and the floor average the agents that have at least one event (naming them) in the window.
    """
    exp = expected(events, now, window_s, repeat_s=repeat_s, tz=tz, since=since)
    agent_scores = {a: sum(points(spec, k[key]) for key, spec in card.items()) for a, k in exp["agents"].items()}
    present = {e["agent_id"] for e in unique(events) if e.get("agent_id") and in_window(ts_of(e), now, window_s, tz)}
    by_team: dict[str, list[float]] = {}
    for a in present & set(agent_scores):
        team = exp["agent_teams"].get(a)
        if team is not None:
            by_team.setdefault(team, []).append(agent_scores[a])
    eligible = [agent_scores[a] for a in present & set(agent_scores)]
    return {
        "agents": agent_scores,
        "teams": {t: sum(v) / len(v) for t, v in by_team.items()},
        "floor": sum(eligible) / len(eligible) if eligible else None,
    }


def diff_scores(snap: Mapping[str, Any], exp: Mapping[str, Any]) -> list[str]:
    """Differences between a snapshot's scores and the expected ones (empty when exact)."""
    problems = [
        f"agent {a['agent_id']} score: got {a.get('score')} want {exp['agents'].get(a['agent_id'])}"
        for a in snap["agents"]
        if not close(a.get("score"), exp["agents"].get(a["agent_id"]))
    ]
    problems += [
        f"team {t['team']} score: got {t.get('score')} want {exp['teams'].get(t['team'])}"
        for t in snap["teams"]
        if not close(t.get("score"), exp["teams"].get(t["team"]))
    ]
    if not close(snap["floor"].get("score"), exp["floor"]):
        problems.append(f"floor score: got {snap['floor'].get('score')} want {exp['floor']}")
    return problems


def close(a: Any, b: Any) -> bool:
    """Equal KPI values (None only equals None; floats to 1e-9 relative)."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def diff_snapshot(snap: Mapping[str, Any], exp: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a snapshot and the expectation (empty when exact)."""
    problems: list[str] = []
    got_agents = {a["agent_id"]: a for a in snap["agents"]}
    if set(got_agents) != set(exp["agents"]):
        missing, extra = set(exp["agents"]) - set(got_agents), set(got_agents) - set(exp["agents"])
        problems.append(f"agents differ: missing {missing}, extra {extra}")
    for aid, want in exp["agents"].items():
        got = got_agents.get(aid)
        if got is None:
            continue
        if got["team"] != exp["agent_teams"].get(aid):
            problems.append(f"agent {aid} team {got['team']!r} != {exp['agent_teams'].get(aid)!r}")
        for k, v in want.items():
            if not close(got["kpis"][k], v):
                problems.append(f"agent {aid} {k}: got {got['kpis'][k]} want {v}")
    got_teams = {t["team"]: t for t in snap["teams"]}
    if set(got_teams) != set(exp["teams"]):
        problems.append(f"teams differ: {sorted(got_teams)} vs {sorted(exp['teams'])}")
    for team, want in exp["teams"].items():
        got = got_teams.get(team)
        if got is None:
            continue
        for k, v in want.items():
            if not close(got["kpis"][k], v):
                problems.append(f"team {team} {k}: got {got['kpis'][k]} want {v}")
    for k, v in exp["floor"].items():
        if not close(snap["floor"]["kpis"][k], v):
            problems.append(f"floor {k}: got {snap['floor']['kpis'][k]} want {v}")
    return problems
