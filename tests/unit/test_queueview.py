"""The snapshot's queue section: what it keeps between snapshots (monitor/queueview.py) equals working it out
afresh, as rows change, queues come and go, and the clock moves the longest waits."""

from __future__ import annotations

import random
from typing import Any

from callpulse import catalogue as cat
from callpulse.settings import LIVE_QUEUE_KPIS, Settings, load_thresholds
from monitor.queueview import SectionMemo, campaign_section, queue_section
from streams import campaigns, queues
from streams import windows as w
from streams.alerts import iso, level
from streams.queuestore import CampaignRow, QueueRow

T0 = 1_704_067_200_000
WINDOW_S = 900
SETTINGS = Settings(
    **load_thresholds(
        "[queue_kpi.service_level]\nwarning_below = 0.9\ncritical_below = 0.7\nmin_samples = 3\n"
        "[queue.vip.kpi.service_level]\nwarning_below = 0.95\n",
        source="t.toml",
    )
)


def _row(rng: random.Random, name: str) -> QueueRow:
    offered = rng.randrange(0, 40)
    sums = {f: rng.randrange(0, offered + 1) for f in cat.QUEUE_FIELDS}
    sums[cat.QUEUE_FIELDS[0]] = offered
    waiting = rng.choice((0, 0, 1, 4, 12))
    oldest = T0 - rng.randrange(0, 1_200_000) if waiting else None
    return QueueRow(name, {WINDOW_S: sums}, waiting, oldest)


def _expected_entry(row: QueueRow, now_ms: int) -> dict[str, Any]:
    """A queue's entry worked out from the contract, with nothing kept."""
    sums = row.sums[WINDOW_S]
    windowed = queues.kpis_from_sums(sums)
    longest = None if row.oldest_entry_ms is None else max(0, now_ms - row.oldest_entry_ms) / 1000
    breaches, levels = [], {}
    for kpi, value in {**windowed, "waiting": row.waiting, "longest_wait_seconds": longest}.items():
        rule = SETTINGS.queue_rule_for(kpi, row.queue)
        samples = row.waiting if kpi in LIVE_QUEUE_KPIS else queues.samples(sums, kpi)
        hit = None if rule is None or value is None or samples < rule.min_samples else level(rule, value)
        if hit is not None:
            breaches.append(kpi)
            levels[kpi] = hit[0]
    return {
        "queue": row.queue,
        "kpis": windowed,
        "waiting": row.waiting,
        "longest_wait_seconds": longest,
        "oldest_entry": None if row.oldest_entry_ms is None else iso(row.oldest_entry_ms),
        "sl_threshold_s": SETTINGS.queue(row.queue).sl_threshold_s,
        "breaches": breaches,
        "levels": levels,
    }


def test_the_kept_queue_section_equals_a_fresh_one_as_rows_change_and_time_passes() -> None:
    rng = random.Random(5)
    names = [f"q{i}" for i in range(30)] + ["vip"]
    rows = {n: _row(rng, n) for n in names}
    memo: SectionMemo = {}
    now = T0
    breached = reused = 0
    ordered: list[QueueRow] = []
    for _step in range(200):
        changes = rng.randrange(0, 4)
        for _ in range(changes):  # some queues change (a new row object), some go, some come
            name = rng.choice([*names, "new1", "new2"])
            if rng.random() < 0.15:
                rows.pop(name, None)
            else:
                rows[name] = _row(rng, name)
        now += rng.choice((0, 7, 400, 10_000, 95_000))
        if changes or not ordered:
            ordered = [rows[n] for n in sorted(rows)]
        else:  # no queue changed: the group cache hands back the same rows, and only longest waits move
            reused += 1
        entries, floor = queue_section(ordered, window_s=WINDOW_S, settings=SETTINGS, now_ms=now, memo=memo)
        assert entries == [_expected_entry(r, now) for r in ordered]
        total = w.total(r.sums[WINDOW_S] for r in ordered)
        assert floor["kpis"] == {k: v for k, v in queues.kpis_from_sums(total).items() if k not in LIVE_QUEUE_KPIS}
        breached += sum(1 for e in entries if "longest_wait_seconds" in e["breaches"])
    assert breached > 0  # the clock moved some longest waits past their threshold
    assert reused > 0  # and the kept entries were worked out again only where the clock moves them


def _campaign(rng: random.Random, name: str) -> CampaignRow:
    sums = {f: rng.randrange(0, 50) for f in campaigns.CAMPAIGN_FIELDS}
    return CampaignRow(name, {"15m": sums, "24h": dict(sums), "30d": dict(sums)})


def test_the_kept_campaign_section_equals_a_fresh_one_as_campaigns_change() -> None:
    rng = random.Random(9)
    settings = Settings(
        **load_thresholds('[campaign_kpi.outbound_abandon_rate]\nwarning_above = 0.02\nwindow = "24h"\n', source="t")
    )
    memo: SectionMemo = {}
    names = [f"c{i}" for i in range(12)]
    rows = {n: _campaign(rng, n) for n in names}
    listed: list[CampaignRow] = []
    reused = 0
    for _step in range(60):
        changes = rng.randrange(0, 3)
        for _ in range(changes):
            rows[rng.choice(names)] = _campaign(rng, rng.choice(names))
        if changes or not listed:
            listed = [rows[n] for n in sorted(rows)]
        else:  # nothing changed: the group cache hands back the same rows
            reused += 1
        kept = campaign_section(listed, window_s=WINDOW_S, settings=settings, memo=memo)
        assert kept == campaign_section(list(listed), window_s=WINDOW_S, settings=settings)
    assert reused > 0
