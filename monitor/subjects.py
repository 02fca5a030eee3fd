"""One subject's window sums (an agent, a queue, a campaign) kept between reads and moved by what changed.

Pure but for `bring_to_now`, which runs a read through the reader it is given; no clock. A window ending at now
holds the buckets lo < b <= hi (streams.windows). The sums
are kept in two parts split at an edge bucket E: the old part, buckets lo < b <= E, and the recent part,
b > E, with E at least LATE_CHUNKS + 1 chunks before now's (`recent_edge`). A write to a chunk that old marks
the subject `late` (the apply script), so an old part changes only

- when a window's start passes buckets of it (`sub`: those buckets are read and taken out), or
- when the edge moves forward (`add`: the chunks it passes move from the recent part to the old),

and a late mark newer than the subject's last read means reading it whole again. The recent part is read
afresh each time the subject is read: a few chunks. So a subject an event touched costs a read of the chunks
near now, and one whose window start passed a count costs the buckets it passed, whatever the length of its
windows (8 h, `today`).

Each part keeps per window its first bucket holding a count (or an earlier one), so `firsts` says when the
windows next change by time alone (streams.schedule.next_change_ms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from streams import keys
from streams import windows as w
from streams.rangeread import Ask, Range, RangeRead, RangeReader

Sums = w.Sums


def recent_edge(now_ms: int) -> int:
    """E at now: the last bucket before the chunks that are read again whenever the subject is (see module doc)."""
    return (w.chunk_of(now_ms // w.BUCKET_MS) - keys.LATE_CHUNKS - 1) * w.CHUNK_BUCKETS - 1


@dataclass
class Kept:
    """A subject's sums per window as of its last read, in two parts (see the module doc)."""

    edge: int
    day_ms: int  # the local day `today` was read for
    lo: dict[int, int]  # per window, the start the old part runs from
    old: dict[int, Sums]
    recent: dict[int, Sums]
    first_old: dict[int, int | None]
    first_recent: dict[int, int | None]
    read_us: int  # Redis time of the read: the old part holds every write before it
    _sums: dict[int, Sums] | None = field(default=None, repr=False, compare=False)

    def sums(self) -> dict[int, Sums]:
        """Per window, the counters (nonzero ones); worked out once (a Kept is replaced, never changed: callers
        must not change what this returns)."""
        if self._sums is None:
            self._sums = {ws: _plus(self.old[ws], self.recent[ws]) for ws in self.lo}
        return self._sums

    def firsts(self) -> dict[int, int | None]:
        """Per window, the first bucket holding a count, or an earlier one (None: none)."""
        return {ws: _min(self.first_old[ws], self.first_recent[ws]) for ws in self.lo}


@dataclass
class Step:
    """What to read for one subject, and what each range is for: ('old' | 'recent' | 'sub' | 'add' | 'first',
    window). A full step reads the subject whole."""

    full: bool
    edge: int
    day_ms: int
    lo: dict[int, int]
    ranges: list[Range] = field(default_factory=list)  # each range once (windows often share one)
    roles: list[tuple[str, int, int]] = field(default_factory=list)  # (role, window, index in ranges)

    def want(self, role: str, window_s: int, lo: int, hi: int) -> None:
        if lo < hi:
            if (lo, hi) in self.ranges:
                i = self.ranges.index((lo, hi))
            else:
                i = len(self.ranges)
                self.ranges.append((lo, hi))
            self.roles.append((role, window_s, i))


_AT: dict[tuple[int, tuple[int, ...], tzinfo], tuple[int, int, dict[int, tuple[int, int]]]] = {}


def _at(now_ms: int, windows_s: Sequence[int], tz: tzinfo) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """(edge, local day start, window bounds) at now: worked out once for every subject a refresh reads."""
    key = (now_ms, tuple(windows_s), tz)
    out = _AT.get(key)
    if out is None:
        if len(_AT) > 16:
            _AT.clear()
        out = _AT[key] = (
            recent_edge(now_ms),
            w.day_start_ms(now_ms, tz),
            {ws: w.window_buckets(now_ms, ws, tz) for ws in windows_s},
        )
    return out


def plan(kept: Kept | None, now_ms: int, windows_s: Sequence[int], tz: tzinfo) -> Step:
    """The ranges that bring `kept` to now (or read the subject whole: nothing kept, or a new day)."""
    edge, day_ms, bounds = _at(now_ms, windows_s, tz)
    lows = {ws: lo for ws, (lo, _) in bounds.items()}
    new_day = kept is not None and w.TODAY in bounds and kept.day_ms != day_ms
    if kept is None or new_day or set(kept.lo) != set(windows_s):
        step = Step(True, edge, day_ms, lows)
        for ws, (lo, hi) in bounds.items():
            step.want("old", ws, lo, min(hi, edge))
            step.want("recent", ws, max(lo, edge), hi)
        return step
    step = Step(False, max(edge, kept.edge), day_ms, lows)
    for ws, (lo, hi) in bounds.items():
        lo_at, first = kept.lo[ws], kept.first_old[ws]
        if lo < kept.edge and lo_at < lo and first is not None and first <= lo:
            step.want("sub", ws, lo_at, lo)
            # where the old part's counts now start: read in the chunk the window now starts in
            step.want("first", ws, lo, min(kept.edge, (w.chunk_of(lo + 1) + 1) * w.CHUNK_BUCKETS - 1))
        step.want("add", ws, max(lo, kept.edge), step.edge)
        step.want("recent", ws, max(lo, step.edge), hi)
    return step


def settle(step: Step, kept: Kept | None, read: RangeRead) -> Kept | None:
    """`kept` brought to the read (or built from it, for a full step); None when the read shows the old part may
    be wrong (a late write since the last read): read the subject whole then."""
    parts = {(role, ws): (read.sums[i], read.firsts[i], step.ranges[i]) for role, ws, i in step.roles}
    recent = {ws: dict(parts[("recent", ws)][0]) if ("recent", ws) in parts else {} for ws in step.lo}
    first_recent = {ws: parts[("recent", ws)][1] if ("recent", ws) in parts else None for ws in step.lo}
    if step.full:
        old = {ws: dict(parts[("old", ws)][0]) if ("old", ws) in parts else {} for ws in step.lo}
        first_old = {ws: parts[("old", ws)][1] if ("old", ws) in parts else None for ws in step.lo}
        return Kept(step.edge, step.day_ms, dict(step.lo), old, recent, first_old, first_recent, read.read_us)
    assert kept is not None
    if read.late_us > kept.read_us:
        return None
    old, first_old = {}, {}
    for ws, lo in step.lo.items():
        sums, first = kept.old[ws], kept.first_old[ws]
        if lo >= kept.edge:
            sums, first = {}, None  # the window starts past the old part: none of it is left in the window
        elif ("sub", ws) in parts:
            sums = _minus(sums, parts[("sub", ws)][0])
            _, found, (_, hi) = parts[("first", ws)]
            # none in the chunk the window starts in: the next count is in a later chunk of the old part, if any
            first = found if found is not None else (hi + 1 if hi < kept.edge else None)
        if ("add", ws) in parts:
            add, add_first, _ = parts[("add", ws)]
            sums, first = _plus(sums, add), _min(first, add_first)
        if lo >= step.edge:
            sums, first = {}, None
        old[ws], first_old[ws] = sums, first
    return Kept(step.edge, step.day_ms, dict(step.lo), old, recent, first_old, first_recent, read.read_us)


async def bring_to_now(
    reader: RangeReader,
    kept: dict[str, Kept],
    names: Sequence[str],
    now_ms: int,
    windows_s: Sequence[int],
    tz: tzinfo,
    ask: Callable[[str, Step], Ask],
) -> tuple[list[tuple[RangeRead, Kept]], int, int]:
    """Bring each subject's `kept` sums to now (updated in place) with one read of what moved (`ask` makes a
    subject's read from its step); a subject written late since its last read is read whole in a second read.
    Returns each subject's read and new sums, and how many were read whole and how many read again."""
    out: list[tuple[RangeRead, Kept]] = []
    whole = again_n = 0
    steps = {n: plan(kept.get(n), now_ms, windows_s, tz) for n in names}
    for _ in range(2):
        whole += sum(1 for n in names if steps[n].full)
        again: list[str] = []
        for read in await reader.read([ask(n, steps[n]) for n in names]):
            new = settle(steps[read.name], kept.get(read.name), read)
            if new is None:
                again.append(read.name)
                continue
            kept[read.name] = new
            out.append((read, new))
        if not again:
            break
        names, again_n = again, again_n + len(again)
        steps = {n: plan(None, now_ms, windows_s, tz) for n in names}
    return out, whole, again_n


def _plus(a: Mapping[str, int], b: Mapping[str, int]) -> Sums:
    out = dict(a)
    for k, v in b.items():
        n = out.get(k, 0) + v
        if n:
            out[k] = n
        else:
            out.pop(k, None)
    return out


def _minus(a: Mapping[str, int], b: Mapping[str, int]) -> Sums:
    return _plus(a, {k: -v for k, v in b.items()})


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
