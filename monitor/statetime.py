"""Time in state per agent, team and floor for any window at any moment, from the agents' state histories.

The store writes closed intervals of time in state into 10-second buckets, so a window's seconds in state change
every 10 s as buckets leave it: re-reading them would put every agent of the floor on the floor cache's
schedule every 10 s. The history (streams/states.py) holds the same intervals, so the buckets of a window
(lo, hi] are `Tally.window_ms((lo + 1) * 10 s, (hi + 1) * 10 s)`, exactly, plus the open interval up to now
(as states.add_open). A team's members' tallies are summed into one function of time (`GroupTally`), so a
team costs two lookups and the floor one per team, whatever their size. Where an agent's history does not
reach back to a window's start (an agent flapping more than states.MAX_MARKS times in the longest window), its
own row uses the buckets as last read instead; its team's total keeps the history's view.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import tzinfo

from streams import states
from streams import windows as w
from streams.store import AgentWindows

STATE_CODES = frozenset(states.STATE_FIELDS.values())
CODES: tuple[str, ...] = tuple(states.STATE_FIELDS.values())
_INDEX = {f: i for i, f in enumerate(CODES)}
_ZERO = (0,) * len(CODES)


@dataclass(frozen=True, slots=True)
class GroupTally:
    """The members' closed time in each state, summed, as a function of time: at each breakpoint the cumulated
    ms and how many members are in each state (a closed interval) from there on."""

    ts: tuple[int, ...]
    values: tuple[tuple[int, ...], ...]
    slopes: tuple[tuple[int, ...], ...]

    def closed_ms(self, t_ms: int) -> tuple[int, ...]:
        """Summed closed-interval ms per state up to t_ms."""
        k = bisect.bisect_right(self.ts, t_ms) - 1
        if k < 0:
            return _ZERO
        dt = t_ms - self.ts[k]
        return tuple(v + s * dt for v, s in zip(self.values[k], self.slopes[k], strict=True))


def group_tally(tallies: Iterable[states.Tally]) -> GroupTally:
    """Sum members' tallies: a sweep over their interval starts and ends."""
    changes: dict[int, list[int]] = {}
    for t in tallies:
        for i in range(len(t.ts) - 1):
            if t.fields[i]:
                j = _INDEX[t.fields[i]]
                changes.setdefault(t.ts[i], [0] * len(CODES))[j] += 1
                changes.setdefault(t.ts[i + 1], [0] * len(CODES))[j] -= 1
    ts: list[int] = []
    values: list[tuple[int, ...]] = []
    slopes: list[tuple[int, ...]] = []
    value, slope, prev = list(_ZERO), list(_ZERO), None
    for at in sorted(changes):
        if prev is not None:
            value = [v + s * (at - prev) for v, s in zip(value, slope, strict=True)]
        slope = [s + d for s, d in zip(slope, changes[at], strict=True)]
        ts.append(at)
        values.append(tuple(value))
        slopes.append(tuple(slope))
        prev = at
    return GroupTally(tuple(ts), tuple(values), tuple(slopes))


class StateTime:
    """The floor's agents (their tallies and current states) and each team's summed tally, kept as rows change."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._rows: dict[str, AgentWindows] = {}
        self._tallies: dict[str, states.Tally] = {}
        self._members: dict[str | None, set[str]] = {}
        self._groups: dict[str | None, GroupTally] = {}  # built when asked for, dropped when a member changes

    def put(self, row: AgentWindows) -> None:
        """Hold an agent's row as read (with its history)."""
        self.drop(row.agent_id)
        self._rows[row.agent_id] = row
        if row.history is not None:
            self._tallies[row.agent_id] = states.tally(row.history)
        self._members.setdefault(row.team, set()).add(row.agent_id)
        self._groups.pop(row.team, None)

    def drop(self, agent: str) -> None:
        """Forget an agent (it left the floor, or is put again)."""
        old = self._rows.pop(agent, None)
        self._tallies.pop(agent, None)
        if old is not None:
            self._groups.pop(old.team, None)
            members = self._members.get(old.team)
            if members is not None:
                members.discard(agent)
                if not members:
                    del self._members[old.team]

    def edges(self, now_ms: int, window_s: int) -> tuple[int, int]:
        """[start, end) in ms of the window's buckets ending now."""
        lo, hi = w.window_buckets(now_ms, window_s, self.tz)
        return (lo + 1) * w.BUCKET_MS, (hi + 1) * w.BUCKET_MS

    def agent_ms(self, agent: str, now_ms: int, window_s: int) -> w.Sums:
        """An agent's ms per state field in the window ending now (zeros left out)."""
        row = self._rows[agent]
        start, end = self.edges(now_ms, window_s)
        tally = self._tallies.get(agent)
        if tally is not None and tally.clip_ms <= start:
            ms = tally.window_ms(start, end)
        else:
            ms = {k: v for k, v in row.sums[window_s].items() if v and k in STATE_CODES}
        _add_open(ms, row, start, now_ms)
        return ms

    def team_ms(self, team: str | None, now_ms: int, window_s: int) -> w.Sums:
        """A team's summed ms per state field in the window ending now (None: the agents with no team)."""
        start, end = self.edges(now_ms, window_s)
        group = self._groups.get(team)
        if group is None:
            members = self._members.get(team, ())
            group = self._groups[team] = group_tally(self._tallies[a] for a in members if a in self._tallies)
        a, b = group.closed_ms(start), group.closed_ms(end)
        ms = {f: b[i] - a[i] for i, f in enumerate(CODES) if b[i] != a[i]}
        for agent in self._members.get(team, ()):
            _add_open(ms, self._rows[agent], start, now_ms)
        return ms

    def floor_ms(self, now_ms: int, window_s: int) -> w.Sums:
        """The floor's summed ms per state field in the window ending now."""
        out: w.Sums = {}
        for team in list(self._members):
            for k, v in self.team_ms(team, now_ms, window_s).items():
                out[k] = out.get(k, 0) + v
        return out


def _add_open(ms: w.Sums, row: AgentWindows, start_ms: int, now_ms: int) -> None:
    """The current state's time from the window's start (or its own) up to now, into `ms` (as states.add_open)."""
    field = states.STATE_FIELDS.get(row.state or "")
    if field is not None and row.since_ms is not None:
        open_ms = now_ms - max(row.since_ms, start_ms)
        if open_ms > 0:
            ms[field] = ms.get(field, 0) + open_ms
