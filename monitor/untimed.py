"""What is made of a subject's counters, kept between reads while the counters hold.

Most KPIs change only when an event is applied: an agent's row or a team's counters change. The KPIs made of
time in state (occupancy) change with the clock. The snapshot's agents and teams and `/metrics`' team lines
therefore keep what they make of the other KPIs (values, breaches, text lines) under a token that says what
it was made from (a row's version, a team's counters and mutes), and work out only the KPIs made of time in
state at each read (`timed_values`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

from streams import states
from streams import windows as w

T = TypeVar("T")
# key -> (token, what was made while the token held). What is kept is shared between reads: nothing may change it.
Held = dict[Hashable, tuple[Any, Any]]
HELD_LIMIT = 200_000  # entries; past it the memo starts again (subjects that left the floor leave their entries)


def kept(held: Held | None, key: Hashable, token: Any, make: Callable[[], T]) -> T:
    """What `make()` made for `key` when the token was equal to `token`, or `make()` now (and kept).

    A None `held` or `token` keeps nothing. The token is kept as given: the caller must not change it later.
    """
    if held is None or token is None:
        return make()
    hit = held.get(key)
    if hit is not None and hit[0] == token:
        return cast(T, hit[1])
    if len(held) > HELD_LIMIT:
        held.clear()
    out = make()
    held[key] = (token, out)
    return out


def timed_values(sums: w.Sums) -> dict[str, Any]:
    """The KPIs made of time in state, worked out from `sums` (which carry the time up to now)."""
    return {kpi.key: kpi.result(sums) for kpi in states.TIMED_KPIS}


def is_timed(kpi: str) -> bool:
    """Whether a KPI is made of time in state (moves with the clock)."""
    return kpi in states.TIMED_KEYS
