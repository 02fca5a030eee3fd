"""Outbound abandonment per dialer campaign, pure: `call.ended` in, campaign counter deltas out.

outbound_abandon_rate = outbound call.ended with `abandoned: true` / (those + connected outbound calls).

The rolling windows use the fine 10 s buckets (streams/windows.py). The regulators' windows `24h` (UK practice)
and `30d` (US Telemarketing Sales Rule) use coarse one-hour buckets, per campaign and for the floor only: this
state grows with campaigns, not with agents, so keeping it 31 days costs a few hundred bytes per campaign-hour.
A coarse window of W ending at T holds the hours h with (T - W) // 1 h < h <= T // 1 h: exact to an hour at the
edges. Only events that arrive within the longest rolling window are counted (older ones are `late`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from callpulse import catalogue as cat
from streams import windows as w

ABANDONED_OUT = cat.code("out_abandoned")  # outbound call.ended with abandoned: true
CONNECTED_OUT = cat.code("out_connected")  # connected outbound call.ended
CAMPAIGN_FIELDS: tuple[str, ...] = cat.CAMPAIGN_FIELDS
FLOOR = ""  # the subject of the floor's totals (a campaign name is never empty)
COARSE_MS = 3_600_000
COARSE_WINDOWS_S: dict[str, int] = {"24h": 86_400, "30d": 30 * 86_400}
COARSE_KEEP_S = 31 * 86_400

CampaignDelta = tuple[str, int, str, int]  # (campaign or FLOOR, bucket (fine or coarse), field, delta)


class OutboundCall(Protocol):
    """What the counters read of a call.ended event."""

    @property
    def ts_ms(self) -> int: ...
    @property
    def direction(self) -> str | None: ...
    @property
    def connected(self) -> bool: ...
    @property
    def abandoned(self) -> bool: ...
    @property
    def campaign(self) -> str | None: ...


def _fields(e: OutboundCall) -> list[tuple[str, int]]:
    if e.direction != "outbound":
        return []
    if e.abandoned:
        return [(ABANDONED_OUT, 1)]
    if e.connected:
        return [(CONNECTED_OUT, 1)]
    return []


def _subjects(e: OutboundCall) -> list[str]:
    return [FLOOR] if e.campaign is None else [e.campaign, FLOOR]


def fine_deltas(e: OutboundCall) -> list[CampaignDelta]:
    """Deltas on 10 s buckets for the campaign of an outbound call.ended and for the floor."""
    b = w.bucket_of(e.ts_ms)
    return [(s, b, f, d) for f, d in _fields(e) for s in _subjects(e)]


def coarse_deltas(e: OutboundCall) -> list[CampaignDelta]:
    """Deltas on one-hour buckets, for the 24h and 30d windows."""
    h = coarse_of(e.ts_ms)
    return [(s, h, f, d) for f, d in _fields(e) for s in _subjects(e)]


def coarse_of(ts_ms: int) -> int:
    """Index of the one-hour bucket holding an event time."""
    return ts_ms // COARSE_MS


def coarse_buckets(now_ms: int, window_s: int) -> tuple[int, int]:
    """(lo, hi): a coarse window ending at now holds the hours h with lo < h <= hi."""
    return (now_ms - window_s * 1000) // COARSE_MS, now_ms // COARSE_MS


def sum_coarse(hours: Mapping[int, Mapping[str, int]], now_ms: int, window_s: int) -> dict[str, int]:
    """Sum per-hour counters (hour -> field -> count) over a coarse window."""
    lo, hi = coarse_buckets(now_ms, window_s)
    out = dict.fromkeys(CAMPAIGN_FIELDS, 0)
    for h, fields in hours.items():
        if lo < h <= hi:
            for f, v in fields.items():
                out[f] = out.get(f, 0) + int(v)
    return out


def samples(s: Mapping[str, int]) -> int:
    """The sample count behind outbound_abandon_rate: dropped plus connected outbound calls."""
    return cat.BY_KEY["outbound_abandon_rate"].samples(s)


def abandon_rate(s: Mapping[str, int]) -> float | None:
    """outbound_abandon_rate from counters; None with neither dropped nor connected outbound calls."""
    return cat.BY_KEY["outbound_abandon_rate"].result(s)


def kpis_from_sums(s: Mapping[str, int]) -> dict[str, float | int | None]:
    """A campaign's KPIs (the catalogue's CAMPAIGN_CATALOGUE) from its counters."""
    return {k.key: k.result(s) for k in cat.CAMPAIGN_CATALOGUE}


def total(sums: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sum many counter sets."""
    out = dict.fromkeys(CAMPAIGN_FIELDS, 0)
    for s in sums:
        for f, v in s.items():
            out[f] = out.get(f, 0) + v
    return out
