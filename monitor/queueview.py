"""The snapshot's queue, campaign and agent-state parts, pure: rows read from the store in, JSON-ready dicts out.

queues:    [{"queue", "kpis": {...windowed KPIs}, "waiting", "longest_wait_seconds", "oldest_entry",
             "breaches", "levels"}]   and the floor's totals in floor["queue"]
campaigns: [{"campaign", "kpis": {"outbound_abandon_rate", ...}, "regulatory": {"24h": {...}, "30d": {...}},
             "breaches", "levels"}]
agents:    state_since (RFC 3339), reason, state_seconds ({state: seconds} in the window)
teams, floor: states ({state: agents in it})
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from callpulse.settings import LIVE_QUEUE_KPIS, Rule, Settings, window_name
from streams import campaigns, queues, states
from streams import windows as w
from streams.alerts import iso, level
from streams.queuestore import CampaignRow, QueueRow
from streams.store import AgentWindows

Levels = tuple[list[str], dict[str, str]]


def _levels(values: Mapping[str, Any], rule_for: Callable[[str], Rule | None], samples: Callable[[str], int]) -> Levels:
    breaches: list[str] = []
    out: dict[str, str] = {}
    for kpi, value in values.items():
        rule = rule_for(kpi)
        if rule is None or value is None or samples(kpi) < rule.min_samples:
            continue
        hit = level(rule, value)
        if hit is not None:
            breaches.append(kpi)
            out[kpi] = hit[0]
    return breaches, out


def _in_order(order: Sequence[str], keys: Sequence[str]) -> list[str]:
    """`keys` in the order of `order` (once each)."""
    wanted = set(keys)
    return list(dict.fromkeys(k for k in order if k in wanted))


def queue_values(sums: Mapping[str, int], waiting: int, oldest_entry_ms: int | None, now_ms: int) -> dict[str, Any]:
    """A queue's KPIs: the windowed ones from its sums, `waiting` and `longest_wait_seconds` at now."""
    values = queues.kpis_from_sums(sums)
    values["waiting"] = waiting
    values["longest_wait_seconds"] = None if oldest_entry_ms is None else max(0, now_ms - oldest_entry_ms) / 1000
    return values


def queue_samples(sums: Mapping[str, int], waiting: int) -> Callable[[str], int]:
    """The sample count behind each queue KPI (what `min_samples` compares with)."""

    def samples(kpi: str) -> int:
        if kpi in LIVE_QUEUE_KPIS:
            return waiting
        return queues.samples(sums, kpi)

    return samples


# Entries worked out from a row, kept while the caller hands in the same row object (the monitor's caches keep a
# row while nothing in it changed): ('campaign', name, window) -> (row, what else it depends on, entry), and
# ('queue entries', '', window) -> (None, None, {queue: (row, what its entry keeps)}).
# The entries are shared between snapshots: nothing may change them.
SectionMemo = dict[tuple[str, str, int], tuple[object, Any, dict[str, Any]]]


def _memo_get(memo: SectionMemo | None, key: tuple[str, str, int], row: object, token: Any) -> dict[str, Any] | None:
    held = memo.get(key) if memo is not None else None
    return held[2] if held is not None and held[0] is row and held[1] == token else None


def queue_section(
    rows: Sequence[QueueRow],
    *,
    window_s: int,
    settings: Settings,
    now_ms: int,
    memo: SectionMemo | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(queues, floor totals) for the snapshot.

    A queue's entry is kept while its row object is the same (the windowed KPIs, `waiting` and their levels):
    whole when nobody waits in the queue (nothing in it moves with the clock), else all but the longest wait and
    its level, worked out at now. Kept entries are shared between snapshots: nothing may change them."""
    key = ("queue entries", "", window_s)
    held = memo.get(key) if memo is not None else None
    before: dict[str, tuple[QueueRow, dict[str, Any]]] = held[2] if held is not None else {}
    kept: dict[str, tuple[QueueRow, dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    waiting, oldest = 0, None
    for row in rows:
        pair = before.get(row.queue)
        if pair is None or pair[0] is not row:
            pair = (row, _queue_held(row, window_s, settings))
        kept[row.queue] = pair
        waiting += row.waiting
        if row.oldest_entry_ms is None:
            out.append(pair[1]["entry"])
            continue
        out.append(_with_longest_wait(pair[1], row.oldest_entry_ms, now_ms))
        oldest = row.oldest_entry_ms if oldest is None else min(oldest, row.oldest_entry_ms)
    if memo is not None:
        memo[key] = (None, None, kept)
    total = _floor_total(rows, window_s, memo)
    values = queue_values(total, waiting, oldest, now_ms)
    breaches, levels = _levels(values, lambda kpi: settings.queue_rule_for(kpi, None), queue_samples(total, waiting))
    floor = {
        "kpis": {k: v for k, v in values.items() if k not in LIVE_QUEUE_KPIS},
        "waiting": waiting,
        "longest_wait_seconds": values["longest_wait_seconds"],
        "breaches": breaches,
        "levels": levels,
    }
    return out, floor


def _with_longest_wait(held: dict[str, Any], oldest_entry_ms: int, now_ms: int) -> dict[str, Any]:
    """A waited-in queue's entry at now: its kept entry with the longest wait and that wait's level."""
    longest = max(0, now_ms - oldest_entry_ms) / 1000
    entry = dict(held["entry"], longest_wait_seconds=longest)
    rule = held["longest_rule"]
    hit = level(rule, longest) if rule is not None else None
    if hit is not None:  # the longest wait comes last in a queue's KPIs: its breach goes last
        entry["breaches"] = [*entry["breaches"], "longest_wait_seconds"]
        entry["levels"] = {**entry["levels"], "longest_wait_seconds": hit[0]}
    return entry


def _queue_held(row: QueueRow, window_s: int, settings: Settings) -> dict[str, Any]:
    """What a queue's entry keeps while its row is the same: the entry without the longest wait's level."""
    sums = row.sums.get(window_s, {})
    rule_for = functools.partial(settings.queue_rule_for, queue=row.queue)
    samples = queue_samples(sums, row.waiting)
    every = queues.kpis_from_sums(sums)
    windowed = {k: v for k, v in every.items() if k not in LIVE_QUEUE_KPIS}
    order = [*every, "waiting", "longest_wait_seconds"]
    breaches, levels = _levels({**windowed, "waiting": row.waiting}, rule_for, samples)
    entry = {
        "queue": row.queue,
        "kpis": windowed,
        "waiting": row.waiting,
        "longest_wait_seconds": None,
        "oldest_entry": iso(row.oldest_entry_ms) if row.oldest_entry_ms is not None else None,
        "sl_threshold_s": settings.queue(row.queue).sl_threshold_s,
        "breaches": _in_order(order, breaches),
        "levels": levels,
    }
    longest_rule = rule_for("longest_wait_seconds")
    if longest_rule is not None and samples("longest_wait_seconds") < longest_rule.min_samples:
        longest_rule = None
    return {"longest_rule": longest_rule, "entry": entry}


def _floor_total(rows: Sequence[QueueRow], window_s: int, memo: SectionMemo | None) -> w.Sums:
    """The floor's summed queue counters, kept and changed by the rows that changed (sums are exact integers)."""
    key = ("queues total", "", window_s)
    held = memo.get(key) if memo is not None else None
    if held is None:
        by_name = {r.queue: r for r in rows}
        total = w.total(r.sums.get(window_s, {}) for r in by_name.values())
        if memo is not None:
            memo[key] = (None, by_name, total)
        return total
    _none, by_name, total = held
    seen = set()
    for row in rows:
        seen.add(row.queue)
        old = by_name.get(row.queue)
        if old is not row:
            if old is not None:
                w.add_scaled(total, old.sums.get(window_s, {}), -1)
            w.add_scaled(total, row.sums.get(window_s, {}), 1)
            by_name[row.queue] = row
    for gone in [q for q in by_name if q not in seen]:
        w.add_scaled(total, by_name.pop(gone).sums.get(window_s, {}), -1)
    return total


def campaign_values(row: CampaignRow, window: str) -> dict[str, Any]:
    """A campaign's KPIs over one window name (rolling, 24h or 30d)."""
    return campaigns.kpis_from_sums(row.sums.get(window, {}))


def campaign_section(
    rows: Sequence[CampaignRow], *, window_s: int, settings: Settings, memo: SectionMemo | None = None
) -> list[dict[str, Any]]:
    """The snapshot's campaigns: KPIs over the snapshot's window and over the regulators' 24h and 30d."""
    name = window_name(window_s)
    out: list[dict[str, Any]] = []
    for row in rows:
        key = ("campaign", row.campaign, window_s)
        entry = _memo_get(memo, key, row, None)
        if entry is not None:
            out.append(entry)
            continue
        breaches: list[str] = []
        levels: dict[str, str] = {}
        for kpi, rule in settings.campaign_rules.items():
            sums = row.sums.get(rule.window, {})
            value = campaigns.kpis_from_sums(sums).get(kpi)
            if value is None or campaigns.samples(sums) < rule.min_samples:
                continue
            hit = level(rule, value)
            if hit is not None:
                breaches.append(kpi)
                levels[kpi] = hit[0]
        out.append(
            {
                "campaign": row.campaign,
                "kpis": campaign_values(row, name),
                "regulatory": {c: campaign_values(row, c) for c in campaigns.COARSE_WINDOWS_S},
                "breaches": breaches,
                "levels": levels,
            }
        )
        if memo is not None:
            memo[key] = (row, None, out[-1])
    return out


def agent_state_fields(row: AgentWindows, window_s: int) -> dict[str, Any]:
    """An agent's state_since, reason and seconds in each state in the window (current state up to now)."""
    sums = row.sums.get(window_s, {})
    return {
        "state_since": iso(row.since_ms) if row.since_ms is not None else None,
        "reason": row.reason,
        "state_seconds": {s: sums.get(f, 0) / 1000 for s, f in states.STATE_FIELDS.items()},
    }


def state_counts(rows: Sequence[AgentWindows]) -> dict[str, int]:
    """Agents in each state."""
    return states.counts_by_state([r.state for r in rows])
