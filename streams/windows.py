"""Window math: 10-second buckets, 10-minute chunks, window sums and KPI values from sums.

An agent's counters live in buckets of `BUCKET_MS`; a window of W seconds ending at T holds
the buckets b with (T - W) // 10 s < b <= T // 10 s, so an event counts when T - W < ts <= T
to within one bucket (10 s) at the edges. The calendar window `today` holds the buckets from local
midnight (in the floor's time zone) to T: exact at midnight, on 23 h and 25 h days too.
Buckets are grouped in chunks of `CHUNK_BUCKETS`
so that a long window reads a few chunk totals plus the fine buckets at its edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, time, tzinfo

from callpulse import catalogue as cat

BUCKET_MS = 10_000
CHUNK_BUCKETS = 60
# Windows are keyed by their length in seconds; the calendar window `today` by this 0.
TODAY = 0
TODAY_NAME = "today"
# The longest a local day lasts (a 25 h day when clocks go back): `today` keeps state this long.
LONGEST_DAY_S = 25 * 3600

# Counter codes, kept to one letter because every bucket stores them; declared in the catalogue.
HANDLE_MS = cat.code("handle_ms")  # sum of talk+hold+wrap over connected calls, ms
CONNECTED = cat.code("connected")  # connected call.ended, both directions (calls_handled)
DIALS = cat.code("dials")  # outbound call.ended
OUT_CONNECTED = cat.code("out_connected")  # connected outbound
OUT_SALES = cat.code("out_sales")  # connected outbound with outcome "sale"
FIRST_CONTACTS = cat.code("first_contacts")
RESOLVED_FIRST = cat.code("resolved_first")
RESPONSE_MS = cat.code("response_ms")  # sum of first-response times, ms
RESPONSES = cat.code("responses")
CSAT_RESPONSES = cat.code("csat_responses")
CSAT_GOOD = cat.code("csat_good")
ESCALATED = cat.code("escalated")
CLOSED = cat.code("closed")  # resolved + escalated
OUT_APPOINTMENTS = cat.code("out_appointments")
REVENUE_MILLI = cat.code("revenue_milli")  # sum of sale amounts, thousandths
PRICED_SALES = cat.code("priced_sales")
NPS_RESPONSES = cat.code("nps_responses")
NPS_NET = cat.code("nps_net")  # promoters - detractors
QA_POINTS_MILLI = cat.code("qa_points_milli")
QA_MAX_MILLI = cat.code("qa_max_milli")
QA_REVIEWS = cat.code("qa_reviews")
QA_COMPLIANT = cat.code("qa_compliant")
QA_CHECKED = cat.code("qa_checked")
COMPLAINTS = cat.code("complaints")
EVENTS = cat.code("events")
OUT_ABANDONED = cat.code("out_abandoned")  # outbound call.ended the dialer dropped
# Time in state, ms (streams/states.py)
AVAILABLE_MS, ON_CALL_MS, WRAP_MS, BREAK_MS, OFFLINE_MS = (
    cat.code(n) for n in ("available_ms", "on_call_ms", "wrap_ms", "break_ms", "offline_ms")
)
FIELDS: tuple[str, ...] = cat.FIELDS
# A field name ending in RUN holds a run: from its bucket to the end of its chunk, every bucket gets the value
# (time in state over long intervals, streams/states.py); the chunk total counts it once per bucket.
RUN = ">"

Sums = dict[str, int]


def bucket_of(ts_ms: int) -> int:
    """Index of the 10 s bucket holding an event time."""
    return ts_ms // BUCKET_MS


def chunk_of(bucket: int) -> int:
    """Index of the chunk holding a bucket."""
    return bucket // CHUNK_BUCKETS


def day_start_ms(now_ms: int, tz: tzinfo) -> int:
    """Epoch ms of the first instant of now's local date in `tz` (local midnight, or the end of a gap over it).

    On a day the clocks change this is still the day's first instant: a 23 h or 25 h day starts at its
    own midnight, and where a zone skips midnight the day starts when the clock jumps.
    """
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    # fold=0 reads a repeated midnight as the earlier one, and a skipped one with the offset before the
    # jump, which is the instant of the jump: either way the day's first instant.
    midnight = datetime.combine(local.date(), time(0), tzinfo=tz)
    return round(midnight.timestamp() * 1000)


def window_buckets(now_ms: int, window_s: int, tz: tzinfo = UTC) -> tuple[int, int]:
    """(lo, hi): a window ending at now holds buckets b with lo < b <= hi.

    `window_s` is a rolling window's length, or `TODAY` for the calendar day of now in `tz`: buckets
    from the one holding local midnight (midnights fall on bucket edges in every zone in use today).
    """
    hi = now_ms // BUCKET_MS
    if window_s == TODAY:
        return day_start_ms(now_ms, tz) // BUCKET_MS - 1, hi
    return (now_ms - window_s * 1000) // BUCKET_MS, hi


def span_s(now_ms: int, window_s: int, tz: tzinfo = UTC) -> float:
    """How far back a window reaches from now, in seconds (for `today`: to just before local midnight)."""
    if window_s == TODAY:
        return (now_ms - day_start_ms(now_ms, tz) + 1) / 1000
    return window_s


def in_window(ts_ms: int, now_ms: int, window_s: int, tz: tzinfo = UTC) -> bool:
    """Whether an event at ts counts in the window ending at now (the bucket rule above)."""
    lo, hi = window_buckets(now_ms, window_s, tz)
    return lo < bucket_of(ts_ms) <= hi


def empty_sums() -> Sums:
    """A zeroed counter set."""
    return dict.fromkeys(FIELDS, 0)


def add_sums(into: Sums, other: Mapping[str, int]) -> Sums:
    """Add `other` into `into` field by field and return `into`."""
    for key, value in other.items():
        into[key] = into.get(key, 0) + value
    return into


def add_scaled(into: Sums, other: Mapping[str, int], sign: int) -> None:
    """Add `other` times `sign` into `into` (sign -1 takes a counter set out of a kept total)."""
    for key, value in other.items():
        into[key] = into.get(key, 0) + sign * int(value)


def sum_chunks(chunks: Mapping[int, Mapping[str, str]], lo: int, hi: int) -> Sums:
    """Sum the counters of buckets lo < b <= hi from chunk hashes (chunk index -> raw hash fields).

    A chunk hash holds `<field>` (chunk total), `<field>.<offset>` (one bucket) and `<field>><offset>` (a run:
    every bucket from the offset to the chunk's end) entries. The read script (streams/lua.py) does the same.
    """
    sums = empty_sums()
    for chunk, fields in chunks.items():
        first = chunk * CHUNK_BUCKETS
        last = first + CHUNK_BUCKETS - 1
        if last <= lo or first > hi:
            continue
        whole = first > lo and last <= hi
        for name, raw in fields.items():
            dot, run = name.find("."), name.find(RUN)
            if whole:
                if dot < 0 and run < 0:
                    sums[name] = sums.get(name, 0) + int(raw)
            elif dot >= 0:
                b = first + int(name[dot + 1 :])
                if lo < b <= hi:
                    key = name[:dot]
                    sums[key] = sums.get(key, 0) + int(raw)
            elif run >= 0:
                n = len(run_buckets(first + int(name[run + 1 :]), lo, hi))
                key = name[:run]
                sums[key] = sums.get(key, 0) + n * int(raw)
    return sums


def run_buckets(start: int, lo: int = -(2**62), hi: int = 2**62) -> range:
    """The buckets a run from bucket `start` covers (to the end of its chunk), within lo < b <= hi."""
    end = (chunk_of(start) + 1) * CHUNK_BUCKETS - 1
    return range(max(start, lo + 1), min(end, hi) + 1)


def kpis_from_sums(s: Mapping[str, int], only: Iterable[str] | None = None) -> dict[str, float | int | None]:
    """Every catalogue KPI (or those in `only`) from one counter set; a zero denominator gives None, counts give 0."""
    if only is not None:
        return {key: cat.BY_KEY[key].result(s) for key in only}
    return {k.key: k.result(s) for k in cat.CATALOGUE}


def samples(s: Mapping[str, int], kpi: str) -> int:
    """The sample count behind a KPI, for `min_samples`."""
    return cat.BY_KEY[kpi].samples(s)


def total(sums: Iterable[Mapping[str, int]]) -> Sums:
    """Sum many counter sets: team and floor values come from summed numerators and denominators."""
    out = empty_sums()
    for s in sums:
        add_sums(out, s)
    return out
