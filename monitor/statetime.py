"""Time in state per agent, team and floor for any window at any moment, from the agents' state histories.

The store writes closed intervals of time in state into 10-second buckets, so a window's seconds in state change
every 10 s as buckets leave it: re-reading them would put every agent of the floor on the floor cache's
schedule every 10 s. The history (streams/states.py) holds the same intervals, so the buckets of a window
(lo, hi] are `Tally.window_ms((lo + 1) * 10 s, (hi + 1) * 10 s)`, exactly, plus the open interval up to now
(as states.add_open). A team sums its members; the floor keeps its closed time as change points summed per
bucket and chunk (`FloorClosed`), so its cost follows what changes. Where an agent's history does not reach
back to a window's start (an agent flapping more than states.MAX_MARKS times in the longest window), its own
row and team use the buckets as last read instead; the floor keeps the history's view.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo

from streams import states
from streams import windows as w
from streams.store import AgentWindows

STATE_CODES = states.STATE_CODES
CODES: tuple[str, ...] = tuple(states.STATE_FIELDS.values())
_INDEX = {f: i for i, f in enumerate(CODES)}
_ZERO = (0,) * len(CODES)


class FloorClosed:
    """The floor's closed time in state as a function of time, kept as agents' tallies change.

    Each closed interval is two change points: from its start one more agent is in its state, from its end one
    fewer. Summed per 10 s bucket (and per chunk of buckets) as Σd and Σd·t, the closed ms up to a bucket edge
    T = k * BUCKET_MS is T * Σd - Σd·t over the points before T: a query reads a chunk's worth of sums, and an
    agent's new tally changes only the points it adds or removes. Points older than the longest window are
    folded into a base, so the sums stay bounded.
    """

    def __init__(self) -> None:
        self._buckets: dict[int, list[int]] = {}  # bucket -> [Σd per state..., Σd·t per state...]
        self._chunks: dict[int, list[int]] = {}
        self._base = [0] * (2 * len(CODES))

    def change(self, old: states.Tally | None, new: states.Tally | None) -> None:
        """Replace an agent's intervals `old` by `new` (either may be None)."""
        # A new tally usually extends the old one: only the intervals from where they part differ.
        start = max(0, states.shared_marks(old, new.ts, new.fields) - 1) if new is not None else 0
        points = _points(new, start)
        for key, d in _points(old, start).items():
            points[key] = points.get(key, 0) - d
        for (t, i), d in points.items():
            if d:
                for cell in (
                    self._buckets.setdefault(t // w.BUCKET_MS, [0] * (2 * len(CODES))),
                    self._chunks.setdefault(w.chunk_of(t // w.BUCKET_MS), [0] * (2 * len(CODES))),
                ):
                    cell[i] += d
                    cell[len(CODES) + i] += d * t

    def closed_ms(self, edge_ms: int) -> tuple[int, ...]:
        """Closed ms per state up to `edge_ms`, a bucket edge."""
        k = edge_ms // w.BUCKET_MS
        acc = list(self._base)
        chunk = w.chunk_of(k)
        for c, cell in self._chunks.items():
            if c < chunk:
                _add_into(acc, cell)
        for b in range(chunk * w.CHUNK_BUCKETS, k):
            part = self._buckets.get(b)
            if part is not None:
                _add_into(acc, part)
        n = len(CODES)
        return tuple(edge_ms * acc[i] - acc[n + i] for i in range(n))

    def prune(self, before_ms: int) -> None:
        """Fold the points of chunks wholly before `before_ms` into the base (no query reaches back that far)."""
        first = w.chunk_of(before_ms // w.BUCKET_MS)
        for c in [c for c in self._chunks if c < first]:
            _add_into(self._base, self._chunks.pop(c))
            for b in range(c * w.CHUNK_BUCKETS, (c + 1) * w.CHUNK_BUCKETS):
                self._buckets.pop(b, None)


def _points(t: states.Tally | None, start: int = 0) -> dict[tuple[int, int], int]:
    """The change points of a tally's intervals from the `start`-th on."""
    out: dict[tuple[int, int], int] = {}
    if t is None:
        return out
    for i in range(start, len(t.ts) - 1):
        if t.fields[i]:
            j = _INDEX[t.fields[i]]
            out[(t.ts[i], j)] = out.get((t.ts[i], j), 0) + 1
            out[(t.ts[i + 1], j)] = out.get((t.ts[i + 1], j), 0) - 1
    return out


def _add_into(acc: list[int], cell: list[int]) -> None:
    for i, v in enumerate(cell):
        acc[i] += v


class OpenSince:
    """When each agent in one state entered it, sorted: the floor's open time in that state from any window start
    to now in O(log n) (`open_ms`), instead of a loop over the floor."""

    def __init__(self) -> None:
        self._since: list[int] = []
        self._prefix: list[int] | None = None
        # window start -> (n, k): the open ms is n * now - k once now is past every entry (the usual case), so a
        # team's open time costs a multiplication per read until one of its agents changes state
        self._linear: dict[int, tuple[int, int]] = {}

    def add(self, since_ms: int) -> None:
        bisect.insort(self._since, since_ms)
        self._prefix = None
        self._linear = {}

    def remove(self, since_ms: int) -> None:
        i = bisect.bisect_left(self._since, since_ms)
        if i < len(self._since) and self._since[i] == since_ms:
            del self._since[i]
            self._prefix = None
            self._linear = {}

    def count(self) -> int:
        """How many agents are in the state."""
        return len(self._since)

    def last_ms(self) -> int:
        """The latest time an agent entered the state (-1: nobody is in it)."""
        return self._since[-1] if self._since else -1

    def open_ms(self, start_ms: int, now_ms: int) -> int:
        """Σ over the agents of now - max(since, start), for those who entered before now (as _add_open)."""
        since = self._since
        if not since:
            return 0
        if now_ms > since[-1] and now_ms >= start_ms:
            # every agent entered before now: Σ = i * (now - start) + Σ_{k >= i} (now - since_k) = n * now - k
            held = self._linear.get(start_ms)
            if held is None:
                if len(self._linear) > 8:  # starts of past moments
                    self._linear = {}
                i = bisect.bisect_left(since, start_ms)
                tail = sum(since[i:])
                held = self._linear[start_ms] = (len(since), i * start_ms + tail)
            return held[0] * now_ms - held[1]
        if self._prefix is None:
            self._prefix = [0, *itertools.accumulate(self._since)]
        i = bisect.bisect_left(self._since, start_ms)
        j = bisect.bisect_left(self._since, now_ms)
        if j < i:  # a window starting after now holds no open time
            return 0
        return i * max(0, now_ms - start_ms) + (j - i) * now_ms - (self._prefix[j] - self._prefix[i])


@dataclass(frozen=True)
class _TeamLine:
    """A team's time in state in one window as `base + n * now` per state field, for now in (after_ms, end)
    while the window's edges are (start, end) and no member changes."""

    start: int
    end: int
    after_ms: int  # the latest time a member entered its current state
    terms: tuple[tuple[str, int, int], ...]  # (state field, base, agents in it)


class StateTime:
    """The floor's agents (their tallies and current states) and each team's summed tally, kept as rows change."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._rows: dict[str, AgentWindows] = {}
        self._tallies: dict[str, states.Tally] = {}
        self._members: dict[str | None, set[str]] = {}
        self._floor = FloorClosed()
        self._open = {f: OpenSince() for f in CODES}
        self._team_open: dict[str | None, dict[int, OpenSince]] = {}  # team -> state index -> its members' entries
        self._closed: dict[str | None, dict[tuple[int, int, int], tuple[int, ...]]] = {}  # team -> window edges -> ms
        # team -> window -> _TeamLine: its time in state as `base + n * now` per state while its members and the
        # window's edges hold (dropped when a member changes), so a team's time costs a few multiplications per read
        self._lines: dict[str | None, dict[int, _TeamLine]] = {}
        self._edges: dict[tuple[int, int], tuple[int, int]] = {}
        # agent -> window -> (tally, start, end, closed ms): an agent's closed time in a window changes only at
        # bucket edges and with a new tally, so a read between them adds only the open state's time
        self._agent_closed: dict[str, dict[int, tuple[states.Tally, int, int, w.Sums]]] = {}

    def put(self, row: AgentWindows, *, horizon_ms: int) -> None:
        """Hold an agent's row as read (with its history's tally); `horizon_ms`: no window reaches back before it."""
        old = self._tallies.get(row.agent_id)
        held = self._rows.get(row.agent_id)
        if held is not None and row.tally is old and _same_intervals(held, row):
            self._rows[row.agent_id] = row  # read again for its counters (a bucket left a window): time in state,
            return  # its team's and the floor's, is as it was, and so are the kept sums and sorted entries
        self.drop(row.agent_id, keep_floor=True)
        self._rows[row.agent_id] = row
        self._open_change(row, OpenSince.add)
        self._lines.pop(row.team, None)
        new = row.tally
        if new is not None:
            self._tallies[row.agent_id] = new
        self._move_closed(row, new, 1)
        if new is not old:  # the same tally object: its history's version did not move
            self._floor.change(old, new)
            self._floor.prune(horizon_ms)
        self._members.setdefault(row.team, set()).add(row.agent_id)

    def drop(self, agent: str, *, keep_floor: bool = False) -> None:
        """Forget an agent (it left the floor, or is put again)."""
        old = self._rows.pop(agent, None)
        self._agent_closed.pop(agent, None)
        tally = self._tallies.pop(agent, None)
        if old is not None:
            self._open_change(old, OpenSince.remove)
            self._move_closed(old, tally, -1)
            self._lines.pop(old.team, None)
        if not keep_floor:
            self._floor.change(tally, None)
        if old is not None:
            members = self._members.get(old.team)
            if members is not None:
                members.discard(agent)
                if not members:
                    del self._members[old.team]

    def _open_change(self, row: AgentWindows, change: Callable[[OpenSince, int], None]) -> None:
        field = states.STATE_FIELDS.get(row.state or "")
        if field is not None and row.since_ms is not None:
            change(self._open[field], row.since_ms)
            team = self._team_open.setdefault(row.team, {})
            change(team.setdefault(_INDEX[field], OpenSince()), row.since_ms)

    def edges(self, now_ms: int, window_s: int) -> tuple[int, int]:
        """[start, end) in ms of the window's buckets ending now (worked out once per now and window)."""
        key = (now_ms, window_s)
        out = self._edges.get(key)
        if out is None:
            if len(self._edges) > 64:
                self._edges.clear()
            lo, hi = w.window_buckets(now_ms, window_s, self.tz)
            out = self._edges[key] = ((lo + 1) * w.BUCKET_MS, (hi + 1) * w.BUCKET_MS)
        return out

    def agent_ms(self, agent: str, now_ms: int, window_s: int) -> w.Sums:
        """An agent's ms per state field in the window ending now (zeros left out)."""
        row = self._rows[agent]
        start, end = self.edges(now_ms, window_s)
        tally = self._tallies.get(agent)
        if tally is not None and tally.clip_ms <= start:
            by_window = self._agent_closed.setdefault(agent, {})
            held = by_window.get(window_s)
            if held is None or held[0] is not tally or held[1] != start or held[2] != end:
                held = by_window[window_s] = (tally, start, end, tally.window_ms(start, end))
            ms = dict(held[3])
        else:
            ms = {k: v for k, v in row.sums[window_s].items() if v and k in STATE_CODES}
        _add_open(ms, row, start, now_ms)
        return ms

    def team_ms(self, team: str | None, now_ms: int, window_s: int) -> w.Sums:
        """A team's summed ms per state field in the window ending now (None: the agents with no team)."""
        start, end = self.edges(now_ms, window_s)
        by_window = self._lines.get(team)
        line = by_window.get(window_s) if by_window is not None else None
        if line is not None and line.start == start and line.end == end and now_ms > line.after_ms:
            return {code: base + n * now_ms for code, base, n in line.terms if base + n * now_ms}
        acc = list(self._team_closed(team, window_s, start, end))
        for i, held in self._team_open.get(team, {}).items():
            acc[i] += held.open_ms(start, now_ms)
        line = self._line(team, start, end, now_ms, acc)
        if line is not None:
            self._lines.setdefault(team, {})[window_s] = line
        return {code: acc[i] for i, code in enumerate(CODES) if acc[i]}

    def _line(self, team: str | None, start: int, end: int, now_ms: int, acc: list[int]) -> _TeamLine | None:
        """The team's time in state at `now_ms` (`acc`, per state) as a line in now, valid while every member
        entered its state before now and the window started before now (OpenSince.open_ms: n * now - k)."""
        if now_ms < start:
            return None
        open_by_state = self._team_open.get(team, {})
        after = max((held.last_ms() for held in open_by_state.values()), default=-1)
        if now_ms <= after:
            return None
        n = [0] * len(CODES)
        for i, held in open_by_state.items():
            n[i] = held.count()
        terms = tuple((code, acc[i] - n[i] * now_ms, n[i]) for i, code in enumerate(CODES) if acc[i] or n[i])
        return _TeamLine(start, end, after, terms)

    def _team_closed(self, team: str | None, window_s: int, start: int, end: int) -> tuple[int, ...]:
        """A team's closed time per state in [start, end): summed over its members once per window edges, then
        moved one member at a time as members change (`put`, `drop`: `_move_closed`)."""
        held = self._closed.setdefault(team, {})
        key = (window_s, start, end)
        out = held.get(key)
        if out is not None:
            return out
        acc = [0] * len(CODES)
        for agent in self._members.get(team, ()):
            _add_closed(acc, self._rows[agent], self._tallies.get(agent), key, 1)
        if len(held) > 16:  # edges of past moments
            held.clear()
        out = held[key] = tuple(acc)
        return out

    def _move_closed(self, row: AgentWindows, tally: states.Tally | None, sign: int) -> None:
        """Add (1) or take out (-1) one member's closed time in the team's kept sums, for every window's edges
        kept: a member's change costs its own intervals, not a new sum over the team."""
        held = self._closed.get(row.team)
        if held is None:
            return
        for key, kept in held.items():
            acc = list(kept)
            _add_closed(acc, row, tally, key, sign)
            held[key] = tuple(acc)

    def floor_ms(self, now_ms: int, window_s: int) -> w.Sums:
        """The floor's summed ms per state field in the window ending now: its closed time from the kept sums,
        and every agent's open state (from the sorted times they entered it)."""
        start, end = self.edges(now_ms, window_s)
        a, b = self._floor.closed_ms(start), self._floor.closed_ms(end)
        out = {f: b[i] - a[i] for i, f in enumerate(CODES) if b[i] != a[i]}
        for f, held in self._open.items():
            open_ms = held.open_ms(start, now_ms)
            if open_ms:
                out[f] = out.get(f, 0) + open_ms
        return out


def _add_closed(
    acc: list[int], row: AgentWindows, tally: states.Tally | None, key: tuple[int, int, int], sign: int
) -> None:
    """An agent's closed time per state in a window's [start, end) (`key`: window, start, end) times `sign`, into
    `acc`: from its history where that reaches the start, else from its buckets as read."""
    window_s, start, end = key
    if tally is not None and tally.clip_ms <= start:
        a, b = tally.closed_ms(start), tally.closed_ms(end)
        for i in range(len(CODES)):
            acc[i] += sign * (b[i] - a[i])
    else:
        sums = row.sums[window_s]
        for i, code in enumerate(CODES):
            acc[i] += sign * sums.get(code, 0)


def _same_intervals(held: AgentWindows, row: AgentWindows) -> bool:
    """Whether two reads of an agent (with the same tally) give the same time in state: same team, current state
    and its start, and the same state sums per window (used where the history does not reach a window's start)."""
    if (held.team, held.state, held.since_ms) != (row.team, row.state, row.since_ms):
        return False
    if held.sums.keys() != row.sums.keys():
        return False
    return all(held.sums[ws].get(c) == sums.get(c) for ws, sums in row.sums.items() for c in STATE_CODES)


def _add_open(ms: w.Sums, row: AgentWindows, start_ms: int, now_ms: int) -> None:
    """The current state's time from the window's start (or its own) up to now, into `ms` (as states.add_open)."""
    field = states.STATE_FIELDS.get(row.state or "")
    if field is not None and row.since_ms is not None:
        open_ms = now_ms - max(row.since_ms, start_ms)
        if open_ms > 0:
            ms[field] = ms.get(field, 0) + open_ms
