"""Agent states and time in state, pure: an agent's `agent.state` events turned into seconds per state per bucket.

An agent is in the state of an `agent.state` event from its ts until the ts of its next one (by ts, then
event_id); the latest lasts until now. Closed intervals are written into the agent's 10 s buckets as
milliseconds per state; the open one is never written, it is added at read time up to now (`open_ms`), so a
window's seconds in state move with the clock without any event.

A late event splits an interval: the agent's merged history is recomputed and the delta written is
contributions(new) - contributions(old), as for FCR (streams/kpis.py), so any arrival order and any redelivery
give the same buckets.

Bounded state: a history keeps the marks from `clip_ms` on plus the one straddling it (which knows the state at
`clip_ms`), and at most `MAX_MARKS` marks. Contributions count only time at or after `clip_ms`, and `clip_ms`
only moves forward, so dropping a mark never changes what was written. `clip_ms` follows the longest window (an
event older than that is late anyway); an agent flapping more than `MAX_MARKS` times inside it moves `clip_ms` up
to its oldest kept mark: time before is then frozen as written ("before the earliest retained state event is
unknown and counts nowhere" for any late event there).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo

import orjson

from callpulse import catalogue as cat
from streams import windows as w

STATE_FIELDS: dict[str, str] = {
    "available": w.AVAILABLE_MS,
    "on_call": w.ON_CALL_MS,
    "wrap": w.WRAP_MS,
    "break": w.BREAK_MS,
    "offline": w.OFFLINE_MS,
}
STATES: tuple[str, ...] = tuple(STATE_FIELDS)
STATE_CODES = frozenset(STATE_FIELDS.values())  # the counters that hold time in state
# KPIs made of time in state (occupancy): they move with the clock, the others only with events.
TIMED_KPIS: tuple[cat.Kpi, ...] = tuple(k for k in cat.CATALOGUE if k.codes & STATE_CODES)
TIMED_KEYS = frozenset(k.key for k in TIMED_KPIS)
BUSY_STATES: tuple[str, ...] = ("on_call", "wrap")
STAFFED_STATES: tuple[str, ...] = ("available", "on_call", "wrap")
MAX_MARKS = 400

Delta = tuple[str, int, str, int]  # (agent_id, bucket, field, delta): the same shape as streams.kpis.Delta


@dataclass(frozen=True, slots=True, order=True)
class Mark:
    """One `agent.state` event: ordered by (ts, event_id) so ties break the same everywhere."""

    ts_ms: int
    event_id: str
    state: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class History:
    """An agent's retained marks, sorted, and the time before which nothing is recomputed."""

    marks: tuple[Mark, ...] = ()
    clip_ms: int = 0

    @property
    def current(self) -> Mark | None:
        """The latest mark: the agent's state now, since its ts."""
        return self.marks[-1] if self.marks else None


def merge(old: History, new: Iterable[Mark], live_from_ms: int, *, max_marks: int = MAX_MARKS) -> History:
    """The history after adding `new` (copies by event_id collapse), pruned to what `clip_ms` still needs."""
    by_id = {m.event_id: m for m in old.marks}
    for m in new:
        by_id.setdefault(m.event_id, m)
    marks = sorted(by_id.values())
    clip = max(old.clip_ms, live_from_ms)
    if len(marks) > max_marks:
        clip = max(clip, marks[-max_marks].ts_ms)
    # Keep the last mark at or before the clip (it holds the state at clip) and everything after.
    first = 0
    for i, m in enumerate(marks):
        if m.ts_ms <= clip:
            first = i
        else:
            break
    return History(tuple(marks[first:]), clip)


def pieces(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """(bucket, ms) overlaps of the interval [start_ms, end_ms) with the 10 s buckets."""
    out: list[tuple[int, int]] = []
    t = start_ms
    while t < end_ms:
        b = w.bucket_of(t)
        edge = min(end_ms, (b + 1) * w.BUCKET_MS)
        out.append((b, edge - t))
        t = edge
    return out


def runs(first: int, last: int) -> list[tuple[int, int]]:
    """The full buckets first..last as run marks (bucket, per-bucket ms): each chunk the run covers gets one mark
    where the run starts in it (+BUCKET_MS) and, if the run ends before the chunk does, one where it stops
    (-BUCKET_MS). A run's cost is the chunks it spans, not its buckets: a night offline is ~100 marks, not 5,000.
    """
    out: list[tuple[int, int]] = []
    b = first
    while b <= last:
        chunk_last = (w.chunk_of(b) + 1) * w.CHUNK_BUCKETS - 1
        out.append((b, w.BUCKET_MS))
        if last < chunk_last:
            out.append((last + 1, -w.BUCKET_MS))
        b = chunk_last + 1
    return out


def contributions(agent: str, h: History, clip_ms: int) -> dict[tuple[str, int, str], int]:
    """Milliseconds per state of the closed intervals of `h`, counted from `clip_ms` on.

    A partly covered bucket gets its milliseconds as a bucket field (field code); the full buckets between
    are written as runs (field code + `windows.RUN`, see `runs`), which the store expands when it reads.
    """
    out: dict[tuple[str, int, str], int] = {}
    for m, nxt in zip(h.marks, h.marks[1:], strict=False):
        fld = STATE_FIELDS[m.state]
        start, end = max(m.ts_ms, clip_ms), nxt.ts_ms
        if start >= end:
            continue
        b0, b1 = w.bucket_of(start), w.bucket_of(end - 1)
        full_from = b0 if start == b0 * w.BUCKET_MS else b0 + 1
        full_to = b1 if end == (b1 + 1) * w.BUCKET_MS else b1 - 1
        if full_from > full_to:  # no full bucket: at most two partial ones
            for b, ms in pieces(start, end):
                _add(out, (agent, b, fld), ms)
            continue
        if full_from > b0:
            _add(out, (agent, b0, fld), (b0 + 1) * w.BUCKET_MS - start)
        if full_to < b1:
            _add(out, (agent, b1, fld), end - b1 * w.BUCKET_MS)
        for b, per_bucket in runs(full_from, full_to):
            _add(out, (agent, b, fld + w.RUN), per_bucket)
    return out


def _add(out: dict[tuple[str, int, str], int], key: tuple[str, int, str], ms: int) -> None:
    total = out.get(key, 0) + ms
    if total:
        out[key] = total
    else:
        out.pop(key, None)


def deltas(agent: str, old: History, new: History) -> list[Delta]:
    """Bucket deltas when an agent's history goes from `old` to `new` (a late mark splits an interval).

    Only the intervals from the one the earliest new mark falls in onwards can change, so both sides are computed
    from there: appending a mark in order costs one interval, not the whole history.
    """
    known = {m.event_id for m in old.marks}
    added = [m for m in new.marks if m.event_id not in known]
    if not added:
        return []  # pruning alone never changes what was written from the clip on
    first = min(added)
    tail_old = History(old.marks[max(0, bisect.bisect_left(old.marks, first) - 1) :], old.clip_ms)
    tail_new = History(new.marks[max(0, bisect.bisect_left(new.marks, first) - 1) :], new.clip_ms)
    before = contributions(agent, tail_old, new.clip_ms)
    after = contributions(agent, tail_new, new.clip_ms)
    out: list[Delta] = []
    for key in before.keys() | after.keys():
        d = after.get(key, 0) - before.get(key, 0)
        if d:
            out.append((key[0], key[1], key[2], d))
    return sorted(out)


@dataclass(frozen=True, slots=True)
class Tally:
    """An agent's closed time in each state cumulated at each mark (from the history's clip on), so the time in
    state of any stretch [start, end) is two lookups: what the buckets of a window hold, at any time, with no
    read of the buckets (which change every 10 s as the window slides)."""

    clip_ms: int
    ts: tuple[int, ...]  # each mark's ts, no earlier than clip_ms
    fields: tuple[str, ...]  # each mark's state field ('' for a state without one)
    before: tuple[tuple[int, ...], ...]  # closed ms per STATE_FIELDS value up to each mark

    def closed_ms(self, t_ms: int) -> tuple[int, ...]:
        """Closed-interval ms per state from clip_ms to t_ms (the open interval, from the last mark, excluded)."""
        k = bisect.bisect_right(self.ts, t_ms) - 1
        if k < 0:
            return _ZERO
        base = self.before[k]
        if k == len(self.ts) - 1 or not self.fields[k]:
            return base
        i = _FIELD_INDEX[self.fields[k]]
        return (*base[:i], base[i] + t_ms - self.ts[k], *base[i + 1 :])

    def window_ms(self, start_ms: int, end_ms: int) -> dict[str, int]:
        """Closed ms per state field in [start_ms, end_ms): the written buckets of a window (start_ms >= clip_ms)."""
        a, b = self.closed_ms(start_ms), self.closed_ms(end_ms)
        return {f: b[i] - a[i] for i, f in enumerate(_STATE_CODES) if b[i] != a[i]}


_STATE_CODES: tuple[str, ...] = tuple(STATE_FIELDS.values())
_FIELD_INDEX = {f: i for i, f in enumerate(_STATE_CODES)}
_ZERO = (0,) * len(_STATE_CODES)


def tally(h: History) -> Tally:
    """The cumulated closed time of a history (see Tally)."""
    return _tally(h.clip_ms, [(m.ts_ms, m.state) for m in h.marks])


def tally_of(raw: bytes | str, prior: Tally | None = None) -> Tally:
    """The tally of a stored history (`encode`'s JSON), with no Mark built: what a reader of time in state needs.

    The same as `tally(decode(raw))`, several times faster (the monitor reads a history at each state change).
    With the tally of an earlier version of the same history (`prior`), only the marks after the ones both
    share are cumulated again: a history mostly grows at its end.
    """
    clip, rows = _stored_rows(raw)
    return _tally(clip, [(t, s) for t, _, s, _ in rows], prior)


def _tally(clip_ms: int, marks: Sequence[tuple[int, str]], prior: Tally | None = None) -> Tally:
    ts = [max(t, clip_ms) for t, _ in marks]
    fields = [STATE_FIELDS.get(state, "") for _, state in marks]
    k = shared_marks(prior, ts, fields)  # cumulated values depend on the (clipped) ts and fields before them only
    before: list[tuple[int, ...]] = list(prior.before[:k]) if prior is not None and k else []
    acc = list(before[-1]) if before else list(_ZERO)
    for i in range(len(before), len(ts)):
        if i and fields[i - 1]:
            acc[_FIELD_INDEX[fields[i - 1]]] += max(0, ts[i] - ts[i - 1])
        before.append(tuple(acc))
    return Tally(clip_ms, tuple(ts), tuple(fields), tuple(before))


def shared_marks(prior: Tally | None, ts: Sequence[int], fields: Sequence[str]) -> int:
    """How many leading marks (ts and state field) a tally shares with the marks `ts`, `fields` (0 for None)."""
    if prior is None:
        return 0
    n = min(len(prior.ts), len(ts))
    if tuple(ts[:n]) == prior.ts[:n] and tuple(fields[:n]) == prior.fields[:n]:
        return n  # the common case, compared in C: marks only added at the end
    i = 0
    while i < n and ts[i] == prior.ts[i] and fields[i] == prior.fields[i]:
        i += 1
    return i


def open_ms(since_ms: int, now_ms: int, window_s: int, tz: tzinfo = UTC) -> int:
    """Milliseconds of the open interval (current state since `since_ms`) inside the window ending at now.

    The window holds the buckets lo < b <= hi, the current bucket counted up to now (`window_s` may be
    windows.TODAY, the calendar day in `tz`).
    """
    lo, _hi = w.window_buckets(now_ms, window_s, tz)
    start = max(since_ms, (lo + 1) * w.BUCKET_MS)
    return max(0, now_ms - start)


def state_seconds(
    sums: Mapping[str, int],
    current: str | None,
    since_ms: int | None,
    now_ms: int,
    window_s: int,
    tz: tzinfo = UTC,
) -> dict[str, float]:
    """Seconds in each state in the window: the written buckets plus the current state up to now."""
    out = {state: sums.get(fld, 0) / 1000 for state, fld in STATE_FIELDS.items()}
    if current in STATE_FIELDS and since_ms is not None:
        out[current] += open_ms(since_ms, now_ms, window_s, tz) / 1000
    return out


def add_open(
    sums: dict[str, int], current: str | None, since_ms: int | None, now_ms: int, window_s: int, tz: tzinfo = UTC
) -> None:
    """Add the current state's milliseconds up to now into a window's counter sums (in place)."""
    if current in STATE_FIELDS and since_ms is not None:
        fld = STATE_FIELDS[current]
        sums[fld] = int(sums.get(fld, 0)) + open_ms(since_ms, now_ms, window_s, tz)


def occupancy(seconds: Mapping[str, float]) -> float | None:
    """(on_call + wrap) / (available + on_call + wrap); None when the agent was never staffed in the window."""
    staffed = sum(seconds.get(s, 0.0) for s in STAFFED_STATES)
    if staffed <= 0:
        return None
    return sum(seconds.get(s, 0.0) for s in BUSY_STATES) / staffed


_STATE_INDEX = {state: i for i, state in enumerate(STATES)}


def encode(h: History) -> bytes:
    """Serialize a history for the store, compactly (a history is kept for every agent over the longest window):
    `[clip_ms, [dt, event_id, state, ...]]`, one flat triple per mark in order, where dt is the mark's ts less
    the previous mark's (the first's less clip_ms) and state is the state's index in STATES, or
    `[state, reason]` when the mark has a reason or a state outside STATES."""
    flat: list[object] = []
    prev = h.clip_ms
    for m in h.marks:
        code = _STATE_INDEX.get(m.state) if m.reason is None else None
        flat += (m.ts_ms - prev, m.event_id, [m.state, m.reason] if code is None else code)
        prev = m.ts_ms
    return orjson.dumps([h.clip_ms, flat])


def decode(raw: bytes | str) -> History:
    """Read a history back from the store."""
    clip, rows = _stored_rows(raw)
    return History(tuple(Mark(t, i, s, r) for t, i, s, r in rows), clip)


def _stored_rows(raw: bytes | str) -> tuple[int, list[tuple[int, str, str, str | None]]]:
    """(clip_ms, sorted (ts, event_id, state, reason)) of a stored history: `encode`'s form, or the one before
    it (`[clip_ms, [[ts, event_id, state, reason], ...]]`), which a store written by an older version holds."""
    clip, marks = orjson.loads(raw)
    clip = int(clip)
    if marks and isinstance(marks[0], list):
        rows = [(int(t), str(i), str(s), r) for t, i, s, r in marks]
    else:
        ts = itertools.accumulate(marks[0::3], initial=clip)
        next(ts)
        rows = [(t, str(i), *_state_and_reason(c)) for t, i, c in zip(ts, marks[1::3], marks[2::3], strict=True)]
    rows.sort()  # stored sorted (a C-level check); tuples order as Marks do (ts, event_id, state, reason)
    return clip, rows


def _state_and_reason(code: int | list[str | None]) -> tuple[str, str | None]:
    """A stored mark's state: its index in STATES, or `[state, reason]`."""
    return (STATES[code], None) if isinstance(code, int) else (str(code[0]), code[1])


def counts_by_state(states: Sequence[str | None]) -> dict[str, int]:
    """How many agents are in each state (every state present, 0 when none)."""
    out = dict.fromkeys(STATES, 0)
    for s in states:
        if s in out:
            out[s] += 1
    return out
