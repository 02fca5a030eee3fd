"""When an agent's rule windows next change by time alone, and the floor as the alert sweep last read it.

Pure: no Redis, no clock. The alert sweep reads only the agents an apply touched since its last round and those
whose schedule came due, so its cost follows what changes, not the size of the floor. A window of W seconds
ending at T holds the buckets lo < b <= hi (streams.windows); a bucket b leaves it at b * BUCKET_MS + W s,
the calendar window `today` empties at the next local midnight, and an agent leaves the floor (for alerts)
when its latest event falls out of the longest rule window.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo

from streams import windows as w


def next_midnight_ms(now_ms: int, tz: tzinfo) -> int:
    """The first instant of the local day after now's (a day lasts 23 to 25 hours)."""
    return w.day_start_ms(w.day_start_ms(now_ms, tz) + w.LONGEST_DAY_S * 1000, tz)


def next_change_ms(
    first_buckets: Mapping[int, int | None],
    *,
    now_ms: int,
    last_ts_ms: int,
    span_ms: int,
    tz: tzinfo,
) -> int:
    """The earliest time after now at which an agent's windows or its presence can change without an event.

    `first_buckets` maps each rule window (seconds, or windows.TODAY) to the first bucket in it holding a
    count (None: the window is empty); `span_ms` is how far back the longest rule window reaches, so the agent
    leaves the floor at `last_ts_ms + span_ms`. An agent with events ahead of now is looked at again each bucket.
    """
    times = [last_ts_ms + span_ms]
    if last_ts_ms > now_ms:
        times.append(now_ms + w.BUCKET_MS)
    for window_s, first in first_buckets.items():
        if window_s == w.TODAY:
            times.append(next_midnight_ms(now_ms, tz))
        elif first is not None:
            times.append(first * w.BUCKET_MS + window_s * 1000)
    return max(now_ms + 1, min(times))


@dataclass
class Schedule:
    """Agents by the time they are next due; setting an agent again replaces its time."""

    _due: dict[str, int] = field(default_factory=dict)
    _heap: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._due)

    def set(self, agent: str, due_ms: int) -> None:
        """Make `agent` due at `due_ms`."""
        if self._due.get(agent) == due_ms:
            return
        self._due[agent] = due_ms
        heapq.heappush(self._heap, (due_ms, agent))
        if len(self._heap) > 4 * len(self._due) + 64:  # replaced entries pile up: rebuild now and then
            self._heap = [(t, a) for a, t in self._due.items()]
            heapq.heapify(self._heap)

    def drop(self, agent: str) -> None:
        """Forget `agent` (it left the floor)."""
        self._due.pop(agent, None)

    def next_due_ms(self) -> int | None:
        """When the next agent is due (None: none is)."""
        return min(self._due.values(), default=None)

    def due_between(self, after_ms: int, until_ms: int) -> list[str]:
        """Agents due after `after_ms` and at or before `until_ms`, left in the schedule."""
        return [agent for agent, t in self._due.items() if after_ms < t <= until_ms]

    def pop_due(self, now_ms: int) -> list[str]:
        """Agents due at or before now, removed from the schedule."""
        out: list[str] = []
        while self._heap and self._heap[0][0] <= now_ms:
            t, agent = heapq.heappop(self._heap)
            if self._due.get(agent) == t:
                del self._due[agent]
                out.append(agent)
        return out


@dataclass
class Member:
    """One agent as the sweep last read it: its team and its sums per rule window."""

    team: str | None
    sums: dict[int, w.Sums]


class FloorView:
    """Agents, team totals and the floor total of the rule windows, kept up to date one agent at a time.

    Team and floor values come from summed numerators and denominators (the contract), so a total is changed
    by taking an agent's old sums out and its new ones in: exact, integer arithmetic.
    """

    def __init__(self, windows_s: Iterable[int], generation: str, since_us: int) -> None:
        self.windows_s = tuple(windows_s)
        self.generation = generation  # the store generation it was read in
        self.since_us = since_us  # Redis time (µs) of the read it is current to: applies since then are news
        self.members: dict[str, Member] = {}
        self.team_sizes: dict[str, int] = {}
        self.teams: dict[str, dict[int, w.Sums]] = {}
        self.floor: dict[int, w.Sums] = {ws: w.empty_sums() for ws in self.windows_s}
        self.schedule = Schedule()
        self.read_us: dict[str, int] = {}  # Redis time of the read each member's sums come from
        # Changed by reads outside a sweep round (the per-batch checks): to evaluate in the next round.
        self.pending_teams: set[str] = set()
        self.floor_pending = False

    def fresh(self, agent: str, applied_us: int) -> bool:
        """Whether the agent's sums were read after an apply at `applied_us` (Redis time), so already hold it."""
        return self.read_us.get(agent, -1) >= applied_us

    def note_absent(self, agent: str, read_us: int) -> None:
        """Note a read of an agent that is not on the floor (its latest event is older than the rule windows)."""
        if self.read_us.get(agent, -1) < read_us:
            self.read_us[agent] = read_us

    def put(self, agent: str, team: str | None, sums: Mapping[int, w.Sums], read_us: int = 0) -> set[str] | None:
        """Record an agent's team and sums read at `read_us`; returns the teams whose totals changed (old and new).

        None when the view already holds a later read of the agent (two reads in flight came back out of order).
        """
        if read_us and self.read_us.get(agent, -1) > read_us:
            return None
        new = Member(team, {ws: dict(sums[ws]) for ws in self.windows_s})
        old = self.members.get(agent)
        self.members[agent] = new
        self.read_us[agent] = read_us
        if old is not None and old.team == team:
            self._add_change(old, new)  # the same team: only what changed moves (a re-read changes a few counts)
        else:
            if old is not None:
                self._add(old, -1)
            self._add(new, 1)
        return {t for t in (old.team if old else None, team) if t is not None}

    def _add_change(self, old: Member, new: Member) -> None:
        totals = self.teams.get(new.team) if new.team is not None else None
        for ws in self.windows_s:
            before, after = old.sums[ws], new.sums[ws]
            delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
            for k, v in before.items():
                if v and k not in after:
                    delta[k] = -v
            if delta:
                if totals is not None:
                    w.add_scaled(totals[ws], delta, 1)
                w.add_scaled(self.floor[ws], delta, 1)

    def remove(self, agent: str) -> set[str]:
        """Take an agent off the floor; returns its team (empty set if it had none or was not on it)."""
        old = self.members.pop(agent, None)
        self.schedule.drop(agent)
        self.read_us.pop(agent, None)
        if old is None:
            return set()
        self._add(old, -1)
        return {old.team} if old.team is not None else set()

    def team_size(self, team: str) -> int:
        """How many agents on the floor are in `team` now."""
        return self.team_sizes.get(team, 0)

    def _add(self, m: Member, sign: int) -> None:
        if m.team is not None:
            size = self.team_sizes.get(m.team, 0) + sign
            if size:
                self.team_sizes[m.team] = size
                totals = self.teams.setdefault(m.team, {ws: w.empty_sums() for ws in self.windows_s})
                for ws in self.windows_s:
                    w.add_scaled(totals[ws], m.sums[ws], sign)
            else:
                self.team_sizes.pop(m.team, None)
                self.teams.pop(m.team, None)
        for ws in self.windows_s:
            w.add_scaled(self.floor[ws], m.sums[ws], sign)
