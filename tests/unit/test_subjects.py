"""Kept window sums (monitor/subjects.py) equal the true sums at every moment, read only when written or due.

A subject's buckets are written at random moments, mostly near now and sometimes late (a chunk far behind
now's, which marks the subject late as the apply script does). The reader re-reads it only when it was written
or when its schedule (streams.schedule.next_change_ms on its `firsts`) says a window changes by time; at every
step its sums must equal the sums of the buckets in each window. The reads here answer as the range script
does, including its early `firsts` for chunks read by their totals.
"""

from __future__ import annotations

import random
from datetime import UTC

import pytest

from monitor import subjects
from streams import keys
from streams import windows as w
from streams.rangeread import RangeRead
from streams.schedule import next_change_ms

WINDOWS = (900, 3600, 28800, w.TODAY)
FIELDS = ("a", "b")


def _truth(buckets: dict[int, dict[str, int]], lo: int, hi: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for b, fields in buckets.items():
        if lo < b <= hi:
            for f, v in fields.items():
                out[f] = out.get(f, 0) + v
    return {f: v for f, v in out.items() if v}


def _first(buckets: dict[int, dict[str, int]], lo: int, hi: int) -> int | None:
    """As the range script: the first bucket holding a count, a whole chunk's first bucket for a chunk inside."""
    found: list[int] = []
    for c in range(w.chunk_of(lo + 1), w.chunk_of(hi) + 1):
        first, last = c * w.CHUNK_BUCKETS, c * w.CHUNK_BUCKETS + w.CHUNK_BUCKETS - 1
        held = [b for b in range(first, last + 1) if lo < b <= hi and any(buckets.get(b, {}).values())]
        if not held:
            continue
        whole = first > lo and last <= hi
        found.append(first if whole else min(held))
    return min(found) if found else None


def _read(step: subjects.Step, buckets: dict[int, dict[str, int]], late_us: int, now_us: int) -> RangeRead:
    return RangeRead(
        "s",
        [_truth(buckets, lo, hi) for lo, hi in step.ranges],
        [_first(buckets, lo, hi) for lo, hi in step.ranges],
        late_us,
        0,
        now_us,
    )


@pytest.mark.parametrize("seed", range(8))
def test_kept_sums_equal_the_buckets_in_each_window_at_every_step(seed: int) -> None:
    rnd = random.Random(seed)
    now_ms = 1_764_500_000_000 + rnd.randrange(86_400_000)
    buckets: dict[int, dict[str, int]] = {}
    kept: subjects.Kept | None = None
    due_ms = 0
    late_us = 0
    written = True
    reads = whole = 0
    for _ in range(600):
        now_ms += rnd.choice([1_000, 9_000, 10_000, 60_000, 290_000, 600_000, 1_900_000])
        if rnd.random() < 0.5:
            back = rnd.choice([0, 0, 0, 5_000, 200_000, 1_500_000, 4_000_000])  # some late
            b = (now_ms - back) // w.BUCKET_MS
            cell = buckets.setdefault(b, {})
            f = rnd.choice(FIELDS)
            cell[f] = cell.get(f, 0) + rnd.choice([1, 1, 2, -1])
            if w.chunk_of(b) < w.chunk_of(now_ms // w.BUCKET_MS) - keys.LATE_CHUNKS:
                late_us = now_ms * 1000
            written = True
        if written or now_ms >= due_ms:
            step = subjects.plan(kept, now_ms, WINDOWS, UTC)
            new = subjects.settle(step, kept, _read(step, buckets, late_us, now_ms * 1000 + 1))
            if new is None:
                step = subjects.plan(None, now_ms, WINDOWS, UTC)
                new = subjects.settle(step, None, _read(step, buckets, late_us, now_ms * 1000 + 1))
            assert new is not None
            kept, written = new, False
            reads += 1
            whole += step.full
            last_ts = max(buckets, default=0) * w.BUCKET_MS
            due_ms = next_change_ms(kept.firsts(), now_ms=now_ms, last_ts_ms=last_ts, span_ms=10**12, tz=UTC)
        assert kept is not None
        for ws in WINDOWS:
            lo, hi = w.window_buckets(now_ms, ws, UTC)
            assert kept.sums()[ws] == _truth(buckets, lo, hi), (ws, now_ms)
    assert whole < reads / 2  # most reads are of what moved, not of the whole subject
