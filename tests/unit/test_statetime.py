"""Unit tests of time in state for teams: a team's summed tally is the sum of its members' tallies."""

from __future__ import annotations

import random

from monitor.statetime import CODES, group_tally
from streams import states as st

T0 = 1_704_067_200_000


def history(rnd: random.Random, n: int) -> st.History:
    marks = [st.Mark(T0 + rnd.randrange(0, 7_200_000), f"e{i}", rnd.choice(st.STATES)) for i in range(n)]
    return st.merge(st.History(), marks, T0 - 1)


def test_a_teams_tally_is_the_sum_of_its_members_at_any_time() -> None:
    rnd = random.Random(3)
    for _ in range(50):
        tallies = [st.tally(history(rnd, rnd.randrange(1, 15))) for _ in range(rnd.randrange(1, 8))]
        team = group_tally(tallies)
        for _ in range(20):
            t = T0 + rnd.randrange(-60_000, 7_300_000)
            want = [sum(x.closed_ms(t)[i] for x in tallies) for i in range(len(CODES))]
            assert list(team.closed_ms(t)) == want


def test_an_empty_team_has_no_time_in_state() -> None:
    assert group_tally([]).closed_ms(T0) == (0,) * len(CODES)
