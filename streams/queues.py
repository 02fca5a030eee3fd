"""Queue KPIs, pure: a call's queue entry, answer and abandon merged by `call_id`.

The three events of a queued call may arrive in any order, on different partitions, redelivered. Like first
response time (streams/kpis.py), the counters of a call are computed from its merged state, and the delta of
adding events is contributions(new) - contributions(old): the values depend on event time alone and a
redelivered copy changes nothing.

Per queue and 10 s bucket (streams/windows.py) the counters are:
  offered          call.queued, at its ts
  answered         call.answered, at its ts
  abandoned        call.abandoned that are not short, at its ts
  short_abandoned  call.abandoned whose wait is under the queue's short_abandon_s; unknown entry = not short
  wait_ms/waited   Σ wait and count of answered calls whose entry is known (ASA)
  sl_met/sl_base   answered with wait <= sl_threshold_s / answered with a known wait + abandoned (not short)
                   with a known wait (service level)
A call's entry is its earliest `call.queued` (by ts, then event_id); a wait is the answer's (or abandon's) ts
minus that entry, 0 when the answer's ts is earlier. Each counter goes to the queue named by the event that
carries it. `waiting` and `longest_wait_seconds` are live: `waiting_entry` says whether a call is waiting, and
`live` turns the entries of a queue's waiting calls into the two values at read time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from callpulse import catalogue as cat
from streams import windows as w

QueueDelta = tuple[str, int, str, int]  # (queue, bucket, field, delta)
Mark = tuple[int, str, str]  # (ts_ms, event_id, queue)

# Counter codes of a queue's buckets, declared in the catalogue.
OFFERED = cat.code("offered")
ANSWERED = cat.code("answered")
ABANDONED = cat.code("abandoned")
SHORT_ABANDONED = cat.code("short_abandoned")
WAIT_MS = cat.code("wait_ms")
WAITED = cat.code("waited")
SL_MET = cat.code("sl_met")
SL_BASE = cat.code("sl_base")
QUEUE_FIELDS: tuple[str, ...] = cat.QUEUE_FIELDS
QUEUE_EVENTS = frozenset({"call.queued", "call.answered", "call.abandoned"})


@dataclass(frozen=True, slots=True)
class QueueRules:
    """A queue's settings, in milliseconds: SL threshold (answered within it meets SL), short abandon, max wait."""

    sl_threshold_ms: int = 20_000
    short_abandon_ms: int = 5_000
    max_wait_ms: int = 7_200_000


RulesFor = Callable[[str], QueueRules]


def fixed_rules(rules: QueueRules = QueueRules(), per_queue: Mapping[str, QueueRules] | None = None) -> RulesFor:
    """A rules lookup: `per_queue` overrides, `rules` for every other queue."""
    overrides = dict(per_queue or {})

    def rules_for(queue: str) -> QueueRules:
        return overrides.get(queue, rules)

    return rules_for


@dataclass(frozen=True, slots=True)
class QueuedCall:
    """What the queue KPIs need of one call: its queue entries, answers and abandons, each sorted (ts, event_id)."""

    queued: tuple[Mark, ...] = ()
    answers: tuple[Mark, ...] = ()
    abandons: tuple[Mark, ...] = ()

    @property
    def entry_ms(self) -> int | None:
        """The call's queue entry: the ts of its earliest call.queued, or None while it is unknown."""
        return self.queued[0][0] if self.queued else None


def _add(marks: tuple[Mark, ...], mark: Mark) -> tuple[Mark, ...]:
    if any(m[1] == mark[1] for m in marks):
        return marks  # the same event again (a redelivered copy): it counts once
    return tuple(sorted((*marks, mark)))


def merge(old: QueuedCall, events: Iterable[tuple[str, int, str, str]]) -> QueuedCall:
    """The call after `events`: (type, ts_ms, event_id, queue) of call.queued/answered/abandoned."""
    queued, answers, abandons = old.queued, old.answers, old.abandons
    for etype, ts_ms, event_id, queue in events:
        mark = (ts_ms, event_id, queue)
        if etype == "call.queued":
            queued = _add(queued, mark)
        elif etype == "call.answered":
            answers = _add(answers, mark)
        elif etype == "call.abandoned":
            abandons = _add(abandons, mark)
    return QueuedCall(queued, answers, abandons)


def contributions(call: QueuedCall, rules_for: RulesFor, live_from_ms: int) -> dict[tuple[str, int, str], int]:
    """Counters a call contributes, each at its event's bucket and queue; events before live_from_ms count nowhere."""
    out: dict[tuple[str, int, str], int] = {}

    def put(queue: str, ts_ms: int, name: str, value: int) -> None:
        key = (queue, w.bucket_of(ts_ms), name)
        out[key] = out.get(key, 0) + value

    entry = call.entry_ms
    for ts_ms, _eid, queue in call.queued:
        if ts_ms >= live_from_ms:
            put(queue, ts_ms, OFFERED, 1)
    for ts_ms, _eid, queue in call.answers:
        if ts_ms < live_from_ms:
            continue
        put(queue, ts_ms, ANSWERED, 1)
        if entry is not None:
            wait_ms = max(0, ts_ms - entry)
            put(queue, ts_ms, WAIT_MS, wait_ms)
            put(queue, ts_ms, WAITED, 1)
            put(queue, ts_ms, SL_BASE, 1)
            if wait_ms <= rules_for(queue).sl_threshold_ms:
                put(queue, ts_ms, SL_MET, 1)
    for ts_ms, _eid, queue in call.abandons:
        if ts_ms < live_from_ms:
            continue
        if entry is not None and ts_ms - entry < rules_for(queue).short_abandon_ms:
            put(queue, ts_ms, SHORT_ABANDONED, 1)
            continue
        put(queue, ts_ms, ABANDONED, 1)
        if entry is not None:
            put(queue, ts_ms, SL_BASE, 1)
    return {k: v for k, v in out.items() if v}


def deltas(old: QueuedCall, new: QueuedCall, rules_for: RulesFor, live_from_ms: int) -> list[QueueDelta]:
    """Counter deltas when a call goes from `old` to `new` (an entry that turns up late moves waits and SL)."""
    before = contributions(old, rules_for, live_from_ms)
    after = contributions(new, rules_for, live_from_ms)
    out: list[QueueDelta] = []
    for key in before.keys() | after.keys():
        d = after.get(key, 0) - before.get(key, 0)
        if d:
            out.append((key[0], key[1], key[2], d))
    return sorted(out)


def waiting_entry(call: QueuedCall) -> tuple[str, int] | None:
    """(queue, entry ts) while the call waits: entered, neither answered nor abandoned; else None."""
    if not call.queued or call.answers or call.abandons:
        return None
    ts_ms, _eid, queue = call.queued[0]
    return queue, ts_ms


def waiting_changes(old: QueuedCall, new: QueuedCall) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(leave, join): the waiting entry to remove and the one to add when a call goes from old to new."""
    before, after = waiting_entry(old), waiting_entry(new)
    if before == after:
        return None, None
    return before, after


def live(entries_ms: Iterable[int], now_ms: int, max_wait_ms: int) -> tuple[int, float | None]:
    """(waiting, longest_wait_seconds) from the entry times of a queue's waiting calls, at `now_ms`.

    A call counts while its entry lies within the last `max_wait_ms` (a caller who waited longer is taken as
    lost: its hang-up never arrived). An entry stamped slightly ahead of this clock waits 0 s. None when none wait.
    """
    alive = [ts for ts in entries_ms if ts > now_ms - max_wait_ms]
    if not alive:
        return 0, None
    return len(alive), max(0, now_ms - min(alive)) / 1000


def kpis_from_sums(s: Mapping[str, int]) -> dict[str, float | int | None]:
    """The windowed queue KPIs (the catalogue's QUEUE_CATALOGUE) from one queue's or the floor's summed counters."""
    return {k.key: k.result(s) for k in cat.QUEUE_CATALOGUE}


def encode(call: QueuedCall) -> bytes:
    """Serialize a call's queue state for the store, compactly (one is kept per queued call): when every mark
    names the same queue, `[queue, [ts, event_id, ...] entries, answers, abandons]`; else the marks in full,
    `{"q": [[ts, event_id, queue], ...], "a": [...], "b": [...]}`."""
    groups = (call.queued, call.answers, call.abandons)
    names = {q for marks in groups for _, _, q in marks}
    if len(names) == 1:
        return orjson.dumps([names.pop(), *([x for t, i, _ in marks for x in (t, i)] for marks in groups)])
    return orjson.dumps({"q": [list(m) for m in call.queued], "a": [list(m) for m in call.answers],
                         "b": [list(m) for m in call.abandons]})  # fmt: skip


def _marks(raw: Sequence[Sequence[Any]]) -> tuple[Mark, ...]:  # JSON lists [ts_ms, event_id, queue]
    return tuple(sorted((int(t), str(i), str(q)) for t, i, q in raw))


def _flat_marks(queue: str, flat: Sequence[Any]) -> tuple[Mark, ...]:  # [ts_ms, event_id, ...] of one queue
    return tuple(sorted((int(flat[k]), str(flat[k + 1]), queue) for k in range(0, len(flat), 2)))


def decode(raw: bytes | str) -> QueuedCall:
    """Read a call's queue state back from the store (either of `encode`'s forms)."""
    data = orjson.loads(raw)
    if isinstance(data, list):
        queue, queued, answers, abandons = data
        return QueuedCall(_flat_marks(queue, queued), _flat_marks(queue, answers), _flat_marks(queue, abandons))
    return QueuedCall(_marks(data["q"]), _marks(data["a"]), _marks(data["b"]))


def samples(s: Mapping[str, int], kpi: str) -> int:
    """The sample count behind a windowed queue KPI (for `min_samples`)."""
    return cat.QUEUE_BY_KEY[kpi].samples(s)
