"""The floor as this monitor last read it, kept current by what changed rather than re-read for every request.

A full snapshot of 10,000 agents would read every agent's windows from Redis each second, and team and floor
values would read every team's chunks. The cache reads the whole floor once, then on each refresh only

- the agents an apply touched since its last refresh (the store's `dirty` set, scored by Redis's clock: an
  apply that runs during a refresh is seen by the next one, never missed), and
- the agents whose windows move by time alone: a 10-second bucket leaving a window, `today` at midnight, an
  agent's last event leaving the longest window (a schedule of each agent's next change, streams.schedule).

Team and floor totals are kept by taking an agent's old sums out and its new ones in (exact integers,
streams.schedule.FloorView). What the store holds is cached; the current state's time up to now is added when
a view is asked for (`at`), so state time and occupancy move with the clock while nothing is re-read.

Counts leave windows at 10-second bucket edges, so the agents due by time come in a burst at each edge (at
10,000 agents and 200 events/s about 2,000 every 10 s, two seconds of reads that every request waited behind).
`read_ahead` reads them a few seconds before the edge, outside the lock, as the windows will be at the edge; the
refresh in the edge's bucket takes each of those reads as it is, unless the agent was read again or an apply
touched it since (then it reads it as usual).

A new store generation (Redis lost its data and was rebuilt), a refresh with no generation (rebuilding), or a
gap longer than `dirty` is kept (an hour) reads the whole floor again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from callpulse.cancelling import together
from callpulse.settings import Settings
from monitor import subjects
from monitor.groupcache import GroupCache
from monitor.snapshot import Scores
from monitor.statetime import STATE_CODES, StateTime
from streams import states
from streams import windows as w
from streams.rangeread import Ask, RangeRead, RangeReader
from streams.schedule import FloorView, next_change_ms
from streams.store import AgentWindows, TeamWindows, WindowStore

DIRTY_KEPT_US = 3_000_000_000  # re-read everything when the last refresh is older than this (dirty keeps 1 h)
AHEAD_MS = 4_000  # read_ahead reads the agents due at the next bucket edge from this long before it


@dataclass
class _Ahead:
    """Agents read for the windows at a bucket edge before it came: agent -> (the kept sums the read was planned
    from, the read, the sums it gives at the edge)."""

    edge_ms: int
    generation: str
    reads: dict[str, tuple[subjects.Kept | None, RangeRead, subjects.Kept]]


class FloorCache:
    """Every agent on the floor with its written sums per window, team and floor totals; see the module doc."""

    def __init__(
        self,
        store: WindowStore,
        windows_s: Sequence[int],
        roster_s: int,
        *,
        clock: Callable[[], float] = time.time,
        groups: GroupCache | None = None,
    ) -> None:
        self.store = store
        self.groups = groups  # queues and campaigns, refreshed with the agents
        self.windows_s = tuple(windows_s)
        self.roster_s = roster_s  # on the floor: an event in this many seconds (the settings' longest window)
        self.clock = clock
        self.rows: dict[str, AgentWindows] = {}
        self.by_team: dict[str | None, set[str]] = {}
        self.view: FloorView | None = None
        self.state_time = StateTime(store.tz)
        self._versions = itertools.count(1)
        self._lock = asyncio.Lock()
        # Scorecard results kept between reads: an agent is scored again only when its row changed.
        self._scores: dict[str, tuple[dict[str, float], float]] = {}  # agent -> (points, score)
        self._scored_from: dict[str, tuple[str | None, w.Sums]] = {}  # agent -> (team, counters) it was scored from
        self._counted: dict[str | None, dict[str, float]] = {}  # team -> {agent: score} of agents with an event
        self._counted_in: dict[str, str | None] = {}  # agent -> the team it is counted in
        self._rescore: set[str] = set()
        self._team_scores: dict[str | None, _Mean] = {}  # team -> the scores of its agents counted
        self._floor_score = _Mean()
        self._team_states: dict[str | None, dict[str | None, int]] = {}  # team -> state -> agents in it
        self._floor_states: dict[str | None, int] = {}
        # Each agent's window sums as last read, in the parts that let a refresh read only what moved.
        self._kept: dict[str, subjects.Kept] = {}
        self._tallies: dict[str, tuple[int, states.Tally]] = {}  # agent -> (its state history's version, its tally)
        self.reader = RangeReader(store.client, store.ns, w.FIELDS, quiet=tuple(STATE_CODES))
        self._ahead: _Ahead | None = None
        # team -> a copy of its totals per window, made when a read asked for it and dropped when they change: the
        # refresh moves the view's totals in place, and a request served them may still be using them
        self._team_copies: dict[str, dict[int, w.Sums]] = {}
        self.ahead_used = 0  # agents a refresh took from a read ahead
        self.reads = 0  # agents read from Redis so far (what the cache saved is the rest)
        self.whole_reads = 0  # of which read whole: new on the floor, a new day, or written late (`late_reads`)
        self.late_reads = 0
        self.refresh_s = 0.0  # time spent in refreshes so far

    @property
    def generation(self) -> str | None:
        """The store generation the cache was read in (None before the first refresh)."""
        return self.view.generation if self.view is not None else None

    def settled_before_ms(self, now_ms: int) -> int:
        """Counters for times before this can no longer change: any event for them is late."""
        return now_ms - self.roster_s * 1000 - 600_000

    async def refresh(self) -> int:
        """Bring the cache up to now; returns the now (ms) its rows are current to."""
        async with self._lock:
            t0 = time.perf_counter()
            try:
                generation = await self.store.generation()
                now_ms = int(self.clock() * 1000)
                groups, view = self.groups, self.view
                if groups is not None and view is not None and generation is not None and view.generation == generation:
                    # the agents and the groups (queues, campaigns) are read alongside each other: other keys
                    settled_before_ms = self.settled_before_ms(now_ms)
                    await together(
                        self._refresh(generation, now_ms),
                        groups.refresh(now_ms, generation, settled_before_ms=settled_before_ms),
                    )
                    return now_ms
                await self._refresh(generation, now_ms)
                if groups is not None and self.view is not None:
                    await groups.refresh(now_ms, self.view.generation, settled_before_ms=self.settled_before_ms(now_ms))
                return now_ms
            finally:
                self.refresh_s += time.perf_counter() - t0

    async def _refresh(self, generation: str | None, now_ms: int) -> None:
        view = self.view
        if view is None or generation is None or view.generation != generation:
            await self._read_all(now_ms, generation or "")
            return
        changed, since_us = await self.store.changed_since(view.since_us)
        if since_us - view.since_us > DIRTY_KEPT_US:  # `dirty` may have lost some of what changed since
            await self._read_all(now_ms, generation)
            return
        due = {a for a, applied_us in changed.items() if not view.fresh(a, applied_us)}
        popped = view.schedule.pop_due(now_ms)
        try:
            await self._refresh_due(view, now_ms, since_us, due | set(popped), changed)
        except BaseException:
            for agent in popped:  # a failed or cancelled refresh: they are still due, for the next one to read
                view.schedule.set(agent, now_ms)
            raise

    async def _refresh_due(
        self, view: FloorView, now_ms: int, since_us: int, due: set[str], changed: dict[str, int]
    ) -> None:
        ahead = self._take_ahead(now_ms, due, changed)
        rows = await self._read(now_ms, due - set(ahead)) if len(due) > len(ahead) else []
        for agent, (read, kept) in ahead.items():
            self._kept[agent] = kept
            rows.append(self._row(read, kept))
        present = [r for r in rows if r.last_ts_ms > now_ms - self.roster_s * 1000]
        for agent in due - {r.agent_id for r in present}:
            for team in view.remove(agent):
                self._team_copies.pop(team, None)
            self._drop(agent)
        self._put(present, now_ms)
        view.since_us = since_us

    async def read_ahead(self) -> int:
        """Read the agents due at the next bucket edge, as their windows will be then, when the edge is less than
        AHEAD_MS away (once per edge); outside the lock, so requests go on meanwhile. Returns how many were read."""
        view = self.view
        now_ms = int(self.clock() * 1000)
        edge_ms = (now_ms // w.BUCKET_MS + 1) * w.BUCKET_MS
        if view is None or edge_ms - now_ms > AHEAD_MS:
            return 0
        if self._ahead is not None and (self._ahead.edge_ms, self._ahead.generation) == (edge_ms, view.generation):
            return 0
        names = sorted(view.schedule.due_between(now_ms, edge_ms))
        planned_from = {a: self._kept.get(a) for a in names}  # a refresh that reads an agent replaces its Kept
        kept = {a: k for a, k in planned_from.items() if k is not None}
        read, _, _ = await subjects.bring_to_now(
            self.reader, kept, names, edge_ms, self.windows_s, self.store.tz, self._ask
        )
        self._ahead = _Ahead(edge_ms, view.generation, {r.name: (planned_from[r.name], r, k) for r, k in read})
        return len(read)

    def _take_ahead(
        self, now_ms: int, due: set[str], changed: dict[str, int]
    ) -> dict[str, tuple[RangeRead, subjects.Kept]]:
        """The reads ahead a refresh at now can take as they are: now is in the edge's bucket (the windows are as
        planned), the agent was not read since (its Kept is the one planned from), and every apply that touched
        it since the last refresh came before the read (Redis time)."""
        ahead, view = self._ahead, self.view
        if ahead is None or view is None or now_ms < ahead.edge_ms:
            return {}
        self._ahead = None
        if now_ms >= ahead.edge_ms + w.BUCKET_MS or ahead.generation != view.generation:
            return {}
        out: dict[str, tuple[RangeRead, subjects.Kept]] = {}
        for agent in due:
            held = ahead.reads.get(agent)
            if held is None or held[0] is None or held[0] is not self._kept.get(agent):
                continue
            if changed.get(agent, 0) > held[1].read_us:
                continue
            out[agent] = (held[1], held[2])
        self.ahead_used += len(out)
        return out

    def _ask(self, agent: str, step: subjects.Step) -> Ask:
        version, tally = self._tallies.get(agent, (0, None))
        return Ask(agent, step.ranges, history_version=version, tally=tally)

    async def _read_all(self, now_ms: int, generation: str) -> None:
        self.view = None  # until the whole floor is read: a failed or cancelled read is done again next time
        since_us = await self.store.redis_time_us()  # Redis's time before the read: nothing is missed
        roster = await self.store.active_agents(now_ms, self.roster_s)
        self.rows, self.by_team, self._kept, self._tallies = {}, {}, {}, {}
        self._team_states, self._floor_states = {}, {}
        rows = await self._read(now_ms, roster) if roster else []
        self.state_time = StateTime(self.store.tz)
        self._scores, self._counted, self._counted_in, self._rescore = {}, {}, {}, set()
        self._scored_from = {}
        self._team_scores, self._floor_score = {}, _Mean()
        self.view = FloorView(self.windows_s, generation, since_us)
        self._team_copies = {}
        self._put(rows, now_ms)

    async def _read(self, now_ms: int, agents: Iterable[str]) -> list[AgentWindows]:
        """Bring each agent's kept sums to now, reading only the buckets that moved (monitor/subjects.py); an agent
        with a write to its old chunks since its last read is read whole."""
        read, whole, late = await subjects.bring_to_now(
            self.reader, self._kept, sorted(agents), now_ms, self.windows_s, self.store.tz, self._ask
        )
        self.whole_reads += whole
        self.late_reads += late
        return [self._row(r, kept) for r, kept in read]

    def _row(self, read: RangeRead, kept: subjects.Kept) -> AgentWindows:
        if read.tally is not None:
            self._tallies[read.name] = (read.history_version, read.tally)
        elif read.history_version == 0:
            self._tallies.pop(read.name, None)
        firsts = kept.firsts()
        return AgentWindows(
            read.name,
            read.team,
            read.state,
            read.last_ts_ms if read.last_ts_ms is not None else 0,
            kept.sums(),
            read.since_ms,
            read.reason,
            firsts,
            read.read_us,
            tally=self._tallies.get(read.name, (0, None))[1],
        )

    def _put(self, rows: Iterable[AgentWindows], now_ms: int) -> None:
        view = self.view
        assert view is not None
        span_ms = self.roster_s * 1000
        for row in rows:
            self.reads += 1
            counters = {ws: _without_states(row.sums[ws]) for ws in self.windows_s}
            changed = view.put(row.agent_id, row.team, counters, row.read_us)
            if changed is None:
                continue  # an older read than the one held
            for team in changed:
                self._team_copies.pop(team, None)
            self._drop(row.agent_id, keep_sums=True)
            # Kept with its counters only; time in state is worked out at read time (monitor/statetime.py).
            self.rows[row.agent_id] = replace(row, version=next(self._versions), sums=counters)
            self._count_state(row, 1)
            self.state_time.put(row, horizon_ms=now_ms - span_ms - 3_600_000)
            self.by_team.setdefault(row.team, set()).add(row.agent_id)
            due = next_change_ms(
                row.first_buckets, now_ms=now_ms, last_ts_ms=row.last_ts_ms, span_ms=span_ms, tz=self.store.tz
            )
            view.schedule.set(row.agent_id, due)

    def _drop(self, agent: str, *, keep_sums: bool = False) -> None:
        """Forget an agent's row (it left the floor), or (`keep_sums`) only its row, which is put again: its kept
        sums, history and time in state stay for the new row (StateTime.put replaces what changed)."""
        self._rescore.add(agent)
        if not keep_sums:
            self.state_time.drop(agent)
            self._kept.pop(agent, None)
            self._tallies.pop(agent, None)
        old = self.rows.pop(agent, None)
        if old is not None:
            self._count_state(old, -1)
            members = self.by_team.get(old.team)
            if members is not None:
                members.discard(agent)
                if not members:
                    del self.by_team[old.team]

    def _count_state(self, row: AgentWindows, d: int) -> None:
        for counts in (self._team_states.setdefault(row.team, {}), self._floor_states):
            counts[row.state] = counts.get(row.state, 0) + d

    def state_counts_by_team(self) -> dict[str | None, dict[str, int]]:
        """Agents in each state now, per team with agents on the floor (None: the agents with no team)."""
        out: dict[str | None, dict[str, int]] = {}
        for team, counts in self._team_states.items():
            if any(counts.values()):
                out[team] = {s: counts.get(s, 0) for s in states.STATES}
        return out

    def state_counts(self, team: str | None) -> dict[str, int]:
        """Agents in each state now: a team's, or the whole floor's for None (every state, 0 when none)."""
        counts = self._floor_states if team is None else self._team_states.get(team, {})
        return {s: counts.get(s, 0) for s in states.STATES}

    # --- views at now: the written counters plus time in state up to now ----------------------------------

    def agents_at(
        self, now_ms: int, windows_s: Sequence[int], team: str | None = None, *, every: bool = True
    ) -> list[AgentWindows]:
        """Rows for `windows_s` with time in state up to now (all agents, or `team`'s when every=False)."""
        names = self.rows if every else self.by_team.get(team, set())
        out: list[AgentWindows] = []
        timed = self.state_time.agent_ms
        rows = self.rows
        for name in sorted(names):
            held = rows[name]
            row = _copy_row(held)
            row.sums = {ws: {**held.sums[ws], **timed(name, now_ms, ws)} for ws in windows_s}
            out.append(row)
        return out

    def teams_at(self, now_ms: int, windows_s: Sequence[int], only: Sequence[str] | None = None) -> list[TeamWindows]:
        """Teams on the floor (all, or those in `only`) with their totals and their agents' time in state to now."""
        view = self.view
        if view is None:
            return []
        names = sorted(view.teams) if only is None else [t for t in only if t in view.teams]
        out: list[TeamWindows] = []
        copies, team_ms = self._team_copies, self.state_time.team_ms
        for team in names:
            # A copy: the refresh loop moves the view's totals in place while a request that was served them
            # awaits its other reads (a memo keyed on moved counters would keep the values of the old ones). The
            # same copy while the totals hold, so the snapshot's memo finds its token by identity.
            counters = copies.get(team)
            if counters is None:
                totals = view.teams[team]
                counters = copies[team] = {ws: dict(totals[ws]) for ws in self.windows_s}
            sums = {ws: _plus(counters[ws], team_ms(team, now_ms, ws)) for ws in windows_s}
            out.append(TeamWindows(team, view.team_size(team), sums, counters))
        return out

    def floor_at(self, now_ms: int, windows_s: Sequence[int]) -> tuple[int, dict[int, w.Sums]]:
        """The floor: how many agents are on it and its totals with time in state to now."""
        view = self.view
        if view is None:
            return 0, {ws: w.empty_sums() for ws in windows_s}
        return len(self.rows), {ws: _plus(view.floor[ws], self.state_time.floor_ms(now_ms, ws)) for ws in windows_s}

    def scores_at(self, now_ms: int, settings: Settings, agents: Iterable[str] | None = None) -> Scores:
        """Every agent's scorecard points over its window (or those of `agents`), and team and floor means of the
        agents with an event in it. Only agents whose rows changed since the last call are scored again, unless
        the scorecard reads time in state, which moves with the clock: then every agent is.
        """
        if settings.scorecard is None or settings.score_window_s is None:
            return Scores()
        self.score_changed(now_ms, settings)
        held = self._scores
        return Scores(
            # a copy: the next call changes the kept one while this one is in use
            agents=dict(held) if agents is None else {a: held[a] for a in agents if a in held},
            teams={t: mean.value for t, mean in self._team_scores.items() if t is not None},
            floor=self._floor_score.value,
        )

    def score_ahead(self, now_ms: int, settings: Settings) -> None:
        """Score the agents read since the last call, ahead of the next read (the monitor's background loop calls
        it after each refresh), unless the scorecard reads time in state: then a read scores every agent anyway."""
        if settings.scorecard is not None and settings.score_window_s is not None and not _timed(settings):
            self.score_changed(now_ms, settings)

    def score_changed(self, now_ms: int, settings: Settings) -> None:
        """Score again the agents whose rows changed since the last call (every agent if the scorecard reads
        time in state), keeping team and floor means."""
        card, window_s = settings.scorecard, settings.score_window_s
        if card is None or window_s is None:
            return
        timed = _timed(settings)
        todo = set(self.rows) | self._rescore if timed else self._rescore  # every row put is in _rescore
        self._rescore = set()
        scored_from = self._scored_from
        keys = [k.kpi for k in card.kpis]
        # Team and floor means from exact sums (a float scaled to an integer), kept as agents are scored again:
        # a read costs the agents that changed, and a mean is the correctly rounded mean of its agents' scores.
        for agent in todo:
            row = self.rows.get(agent)
            if not timed and row is not None and scored_from.get(agent) == (row.team, row.sums[window_s]):
                continue  # read again, but its counters in the scorecard's window (and its team) did not move
            scored_from.pop(agent, None)
            self._scores.pop(agent, None)
            if agent in self._counted_in:
                team = self._counted_in.pop(agent)
                members = self._counted[team]
                self._score_add(team, -_scaled(members.pop(agent)), -1)
                if not members:
                    del self._counted[team]
            if row is None:
                continue
            sums = (
                {**row.sums[window_s], **self.state_time.agent_ms(agent, now_ms, window_s)}
                if timed
                else row.sums[window_s]
            )
            points = card.points(w.kpis_from_sums(sums, keys))
            self._scores[agent] = (points, sum(points.values()))
            scored_from[agent] = (row.team, row.sums[window_s])
            if sums.get(w.EVENTS, 0) > 0:
                self._counted.setdefault(row.team, {})[agent] = self._scores[agent][1]
                self._counted_in[agent] = row.team
                self._score_add(row.team, _scaled(self._scores[agent][1]), 1)

    def _score_add(self, team: str | None, score: int, n: int) -> None:
        mean = self._team_scores.setdefault(team, _Mean())
        mean.add(score, n)
        if not mean.n:
            del self._team_scores[team]
        self._floor_score.add(score, n)


@dataclass
class _Mean:
    """A running mean of scores from their exact sum, so correctly rounded: each score is kept as an integer, its
    exact value times 2**_SCALE (`_scaled`), and Python divides integers into the correctly rounded float."""

    total: int = 0
    n: int = 0
    value: float | None = None

    def add(self, score: int, n: int) -> None:
        """Count `n` more scores (negative: fewer) whose scaled sum is `score`."""
        self.total += score
        self.n += n
        self.value = self.total / (self.n << _SCALE) if self.n else None


_SCALE = 1074  # every finite float times 2**1074 is an integer (the smallest subnormal is 2**-1074)


def _copy_row(row: AgentWindows) -> AgentWindows:
    """A shallow copy of a row (as copy.copy, without its generic machinery: one per agent of a full snapshot)."""
    out = AgentWindows.__new__(AgentWindows)
    out.__dict__.update(row.__dict__)
    return out


def _scaled(score: float) -> int:
    """A float's exact value times 2**_SCALE, as an integer."""
    numerator, denominator = score.as_integer_ratio()  # the denominator is a power of two
    return numerator << (_SCALE - denominator.bit_length() + 1)


def _without_states(sums: w.Sums) -> w.Sums:
    """Counters other than time in state, zeros left out."""
    return {k: v for k, v in sums.items() if v and k not in STATE_CODES}


def _plus(totals: w.Sums, part: w.Sums) -> w.Sums:
    """A copy of `totals` with `part` added."""
    out = dict(totals)
    for k, v in part.items():
        out[k] = out.get(k, 0) + v
    return out


def _timed(settings: Settings) -> bool:
    """Whether the scorecard reads time in state (then scores move with the clock and are never reused)."""
    card = settings.scorecard
    return card is not None and any(k.kpi in states.TIMED_KEYS for k in card.kpis)
