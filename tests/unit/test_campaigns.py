"""Unit tests of outbound abandonment per campaign: fine buckets for the windows, coarse hours for 24h and 30d."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from streams import campaigns as c
from streams import windows as w
from tests import reference

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, ms (an hour edge)
HOUR = 3_600_000
DAY = 24 * HOUR


@dataclass(frozen=True)
class Dial:
    ts_ms: int
    connected: bool = False
    abandoned: bool = False
    campaign: str | None = "spring"
    direction: str | None = "outbound"


def coarse(dials: list[Dial]) -> dict[str, dict[int, dict[str, int]]]:
    out: dict[str, dict[int, Counter[str]]] = {}
    for d in dials:
        for subject, h, fld, n in c.coarse_deltas(d):
            out.setdefault(subject, {}).setdefault(h, Counter())[fld] += n
    return {s: {h: dict(v) for h, v in hours.items()} for s, hours in out.items()}


def test_abandon_rate_is_dropped_live_answers_over_those_plus_connected() -> None:
    dials = [Dial(T0, connected=True)] * 97 + [Dial(T0, abandoned=True)] * 3 + [Dial(T0)] * 50
    sums: Counter[str] = Counter()
    for d in dials:
        for subject, _b, fld, n in c.fine_deltas(d):
            if subject == "spring":
                sums[fld] += n
    assert c.abandon_rate(sums) == 0.03
    assert c.kpis_from_sums(sums) == {"outbound_abandon_rate": 0.03}
    assert c.samples(sums) == 100


def test_call_without_campaign_counts_for_the_floor_only() -> None:
    assert c.fine_deltas(Dial(T0, abandoned=True, campaign=None)) == [(c.FLOOR, w.bucket_of(T0), c.ABANDONED_OUT, 1)]


def test_inbound_and_unanswered_dials_count_nowhere() -> None:
    assert c.fine_deltas(Dial(T0, connected=True, direction="inbound")) == []
    assert c.fine_deltas(Dial(T0)) == []


def test_rate_is_none_with_no_live_answers() -> None:
    assert c.abandon_rate({}) is None


def test_thirty_day_window_holds_the_hours_after_its_start_hour() -> None:
    now = T0 + 30 * DAY + 30 * 60_000  # 30 days and half an hour after T0
    dials = [
        Dial(T0 + 10 * 60_000, abandoned=True),  # hour of T0: outside (lo = that hour)
        Dial(T0 + HOUR, abandoned=True),  # first hour inside
        Dial(T0 + 5 * DAY, connected=True),
        Dial(now, connected=True),
        Dial(now + HOUR, abandoned=True),  # ahead of now: not yet
    ]
    got = c.sum_coarse(coarse(dials)["spring"], now, c.COARSE_WINDOWS_S["30d"])
    assert got == {c.ABANDONED_OUT: 1, c.CONNECTED_OUT: 2}
    assert c.abandon_rate(got) == 1 / 3


def test_coarse_windows_match_the_oracle_on_hour_buckets() -> None:
    now = T0 + 40 * DAY + 1234
    raw = []
    for i in range(200):
        ts = T0 + (i * 7919 * 60_000) % (45 * DAY)
        kind = i % 7
        raw.append(
            {
                "event_id": f"e{i}",
                "type": "call.ended",
                "ts": ts / 1000,
                "direction": "outbound",
                "connected": kind < 4,
                "abandoned": kind == 6,
                "campaign": "spring" if i % 3 else "autumn",
            }
        )
    dials = [Dial(round(e["ts"] * 1000), e["connected"], e["abandoned"], e["campaign"]) for e in raw]
    hours = coarse(dials)
    for name, window_s in c.COARSE_WINDOWS_S.items():
        want = reference.campaign_abandon_rates(raw, now / 1000, window_s, bucket_s=3600)
        for subject, key in (("spring", "spring"), ("autumn", "autumn"), (c.FLOOR, "*")):
            got = c.abandon_rate(c.sum_coarse(hours[subject], now, window_s))
            assert reference.close(got, want.get(key)), (name, subject, got, want)
