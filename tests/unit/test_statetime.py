"""Unit tests of the floor's time in state: kept as change points, equal to the sum of its agents' tallies."""

from __future__ import annotations

import random
from datetime import UTC

from monitor import statetime
from monitor.statetime import CODES, FloorClosed
from streams import states as st
from streams.store import AgentWindows

T0 = 1_704_067_200_000


def history(rnd: random.Random, n: int) -> st.History:
    marks = [st.Mark(T0 + rnd.randrange(0, 7_200_000), f"e{i}", rnd.choice(st.STATES)) for i in range(n)]
    return st.merge(st.History(), marks, T0 - 1)


def test_the_floors_closed_time_is_the_sum_of_its_agents_at_every_bucket_edge() -> None:
    rnd = random.Random(3)
    floor = FloorClosed()
    held: dict[int, st.Tally] = {}
    for _ in range(300):
        agent = rnd.randrange(12)
        new = st.tally(history(rnd, rnd.randrange(1, 15))) if rnd.random() < 0.85 else None
        floor.change(held.pop(agent, None), new)
        if new is not None:
            held[agent] = new
        edge = T0 + rnd.randrange(-6, 730) * 10_000
        want = [sum(x.closed_ms(edge)[i] for x in held.values()) for i in range(len(CODES))]
        assert list(floor.closed_ms(edge)) == want


def test_pruned_points_still_count_in_later_edges() -> None:
    rnd = random.Random(5)
    floor = FloorClosed()
    tallies = [st.tally(history(rnd, 10)) for _ in range(5)]
    for t in tallies:
        floor.change(None, t)
    edge = T0 + 7_300_000
    before = floor.closed_ms(edge)
    floor.prune(T0 + 3_600_000)
    assert floor.closed_ms(edge) == before


def test_an_empty_floor_has_no_time_in_state() -> None:
    assert FloorClosed().closed_ms(T0) == (0,) * len(CODES)


def test_open_time_of_entered_agents_equals_the_sum_over_them_at_any_start_and_now() -> None:
    # OpenSince keeps n * now - k per window start while nobody changes state: it must equal the plain sum of
    # now - max(since, start) over the agents who entered before now, for starts and nows before, among and after
    # the entries, as agents enter and leave in between
    rnd = random.Random(5)
    held = statetime.OpenSince()
    entries: list[int] = []
    for _ in range(400):
        if entries and rnd.random() < 0.3:
            gone = rnd.choice(entries)
            entries.remove(gone)
            held.remove(gone)
        else:
            since = rnd.randrange(0, 10_000)
            entries.append(since)
            held.add(since)
        for _ in range(3):
            start, now = rnd.randrange(-100, 10_100), rnd.randrange(-100, 10_100)
            expected = sum(now - max(s, start) for s in entries if s < now) if now >= start else 0
            assert held.open_ms(start, now) == expected, (start, now)


def _row(rnd: random.Random, agent: str, team: str) -> tuple[AgentWindows, int]:
    """An agent's row as the floor cache holds it: its tally, and its current state since its last mark."""
    h = history(rnd, rnd.randrange(1, 12))
    tally = st.tally(h)
    last = h.marks[-1]
    row = AgentWindows(agent, team, last.state, last.ts_ms, {900: {}, 3600: {}}, since_ms=last.ts_ms, tally=tally)
    return row, last.ts_ms


def test_a_teams_time_in_state_is_the_sum_of_its_agents_at_every_moment_as_members_change() -> None:
    # The team's time is kept as a line in now between member changes and window edges: at nows running forward
    # (within a bucket, across edges, before and after a member's last state change) and with agents put, put
    # again and dropped in between, it must equal the sum of its agents' own time in state.
    rnd = random.Random(11)
    held = statetime.StateTime(UTC)
    members: dict[str, AgentWindows] = {}
    now = T0
    for _ in range(600):
        roll = rnd.random()
        if roll < 0.15:
            agent = f"a{rnd.randrange(8)}"
            row, _ = _row(rnd, agent, rnd.choice(["t1", "t2"]))
            held.put(row, horizon_ms=T0 - 86_400_000)
            members[agent] = row
        elif roll < 0.2 and members:
            agent = rnd.choice(sorted(members))
            held.drop(agent)
            del members[agent]
        now += rnd.choice([1, 7, 400, 3_000, 10_000, 95_000])
        for team in ("t1", "t2"):
            for window_s in (900, 3600):
                want: dict[str, int] = {}
                for agent, row in members.items():
                    if row.team == team:
                        for code, ms in held.agent_ms(agent, now, window_s).items():
                            want[code] = want.get(code, 0) + ms
                assert held.team_ms(team, now, window_s) == {k: v for k, v in want.items() if v}, (team, now)
