"""Window math: 10-second buckets, 10-minute chunks, window sums and KPI values from sums.

An agent's counters live in buckets of `BUCKET_MS`; a window of W seconds ending at T holds
the buckets b with (T - W) // 10 s < b <= T // 10 s, so an event counts when T - W < ts <= T
to within one bucket (10 s) at the edges. Buckets are grouped in chunks of `CHUNK_BUCKETS`
so that a long window reads a few chunk totals plus the fine buckets at its edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BUCKET_MS = 10_000
CHUNK_BUCKETS = 60

# Counter fields, kept to one letter because every bucket stores them.
HANDLE_MS = "h"  # sum of talk+hold+wrap over connected calls, ms
CONNECTED = "n"  # connected call.ended, both directions (calls_handled)
DIALS = "d"  # outbound call.ended
OUT_CONNECTED = "c"  # connected outbound
OUT_SALES = "s"  # connected outbound with outcome "sale"
FIRST_CONTACTS = "f"
RESOLVED_FIRST = "r"
RESPONSE_MS = "t"  # sum of first-response times, ms
RESPONSES = "u"
CSAT_RESPONSES = "q"
CSAT_GOOD = "g"
ESCALATED = "e"
CLOSED = "x"  # resolved + escalated
OUT_ABANDONED = "ob"  # outbound call.ended the dialer dropped (abandoned: true)
AVAILABLE_MS, ON_CALL_MS, WRAP_MS, BREAK_MS, OFFLINE_MS = "sa", "so", "sw", "sb", "sf"  # time in state (streams/states)
FIELDS: tuple[str, ...] = (
    *("h", "n", "d", "c", "s", "f", "r", "t", "u", "q", "g", "e", "x"),
    *(OUT_ABANDONED, AVAILABLE_MS, ON_CALL_MS, WRAP_MS, BREAK_MS, OFFLINE_MS),
)

Sums = dict[str, int]


def bucket_of(ts_ms: int) -> int:
    """Index of the 10 s bucket holding an event time."""
    return ts_ms // BUCKET_MS


def chunk_of(bucket: int) -> int:
    """Index of the chunk holding a bucket."""
    return bucket // CHUNK_BUCKETS


def window_buckets(now_ms: int, window_s: int) -> tuple[int, int]:
    """(lo, hi): a window ending at now holds buckets b with lo < b <= hi."""
    return (now_ms - window_s * 1000) // BUCKET_MS, now_ms // BUCKET_MS


def in_window(ts_ms: int, now_ms: int, window_s: int) -> bool:
    """Whether an event at ts counts in the window ending at now (the bucket rule above)."""
    lo, hi = window_buckets(now_ms, window_s)
    return lo < bucket_of(ts_ms) <= hi


def empty_sums() -> Sums:
    """A zeroed counter set."""
    return dict.fromkeys(FIELDS, 0)


def add_sums(into: Sums, other: Mapping[str, int]) -> Sums:
    """Add `other` into `into` field by field and return `into`."""
    for key, value in other.items():
        into[key] = into.get(key, 0) + value
    return into


def sum_chunks(chunks: Mapping[int, Mapping[str, str]], lo: int, hi: int) -> Sums:
    """Sum the counters of buckets lo < b <= hi from chunk hashes (chunk index -> raw hash fields).

    A chunk hash holds `<field>` (chunk total) and `<field>.<offset>` (one bucket) entries.
    """
    sums = empty_sums()
    for chunk, fields in chunks.items():
        first = chunk * CHUNK_BUCKETS
        last = first + CHUNK_BUCKETS - 1
        if last <= lo or first > hi:
            continue
        whole = first > lo and last <= hi
        for name, raw in fields.items():
            dot = name.find(".")
            if whole:
                if dot < 0:
                    sums[name] = sums.get(name, 0) + int(raw)
            elif dot >= 0:
                b = first + int(name[dot + 1 :])
                if lo < b <= hi:
                    key = name[:dot]
                    sums[key] = sums.get(key, 0) + int(raw)
    return sums


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def kpis_from_sums(s: Mapping[str, int]) -> dict[str, float | int | None]:
    """Every contract KPI from one counter set; a zero denominator gives None, counts give 0."""
    connected = s.get(CONNECTED, 0)
    responses = s.get(RESPONSES, 0)
    return {
        "aht_seconds": None if connected == 0 else s.get(HANDLE_MS, 0) / connected / 1000,
        "connect_rate": _ratio(s.get(OUT_CONNECTED, 0), s.get(DIALS, 0)),
        "fcr": _ratio(s.get(RESOLVED_FIRST, 0), s.get(FIRST_CONTACTS, 0)),
        "response_seconds": None if responses == 0 else s.get(RESPONSE_MS, 0) / responses / 1000,
        "calls_handled": connected,
        "dials": s.get(DIALS, 0),
        "conversion_rate": _ratio(s.get(OUT_SALES, 0), s.get(OUT_CONNECTED, 0)),
        "csat": _ratio(s.get(CSAT_GOOD, 0), s.get(CSAT_RESPONSES, 0)),
        "escalation_rate": _ratio(s.get(ESCALATED, 0), s.get(CLOSED, 0)),
        "occupancy": _ratio(s.get(ON_CALL_MS, 0) + s.get(WRAP_MS, 0), _staffed_ms(s)),
        "outbound_abandon_rate": _ratio(s.get(OUT_ABANDONED, 0), s.get(OUT_ABANDONED, 0) + s.get(OUT_CONNECTED, 0)),
    }


def _staffed_ms(s: Mapping[str, int]) -> int:
    return s.get(AVAILABLE_MS, 0) + s.get(ON_CALL_MS, 0) + s.get(WRAP_MS, 0)


SAMPLE_FIELD: dict[str, str] = {
    "aht_seconds": CONNECTED,
    "connect_rate": DIALS,
    "fcr": FIRST_CONTACTS,
    "response_seconds": RESPONSES,
    "calls_handled": CONNECTED,
    "dials": DIALS,
    "conversion_rate": OUT_CONNECTED,
    "csat": CSAT_RESPONSES,
    "escalation_rate": CLOSED,
    "occupancy": ON_CALL_MS,
    "outbound_abandon_rate": OUT_CONNECTED,
}


def samples(s: Mapping[str, int], kpi: str) -> int:
    """The denominator (sample count) behind a KPI, for `min_samples` (occupancy: staffed seconds)."""
    if kpi == "occupancy":
        return _staffed_ms(s) // 1000
    if kpi == "outbound_abandon_rate":
        return s.get(OUT_ABANDONED, 0) + s.get(OUT_CONNECTED, 0)
    return s.get(SAMPLE_FIELD[kpi], 0)


def total(sums: Iterable[Mapping[str, int]]) -> Sums:
    """Sum many counter sets: team and floor values come from summed numerators and denominators."""
    out = empty_sums()
    for s in sums:
        add_sums(out, s)
    return out
