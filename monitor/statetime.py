"""Time in state per agent and window at any moment, from each agent's state history: no re-read as time passes.

The store writes closed intervals of time in state into 10-second buckets, so a window's seconds in state change
every 10 s as buckets leave it: re-reading them would put every agent of the floor on the floor cache's
schedule every 10 s. The history (streams/states.py) holds the same intervals, so the buckets of a window
(lo, hi] are `Tally.window_ms((lo + 1) * 10 s, (hi + 1) * 10 s)`, exactly, plus the open interval up to now
(states.add_open). Where the history does not reach back to a window's start (an agent flapping more than
states.MAX_MARKS times in the longest window), the buckets as last read are used instead.
"""

from __future__ import annotations

from datetime import tzinfo

from streams import states
from streams import windows as w
from streams.store import AgentWindows

STATE_CODES = frozenset(states.STATE_FIELDS.values())


class StateTime:
    """Agents' tallies and current states; `at` gives everyone's time in state in a window, memoised per now."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._rows: dict[str, AgentWindows] = {}
        self._tallies: dict[str, states.Tally] = {}
        self._memo: dict[tuple[int, int], dict[str, w.Sums]] = {}

    def put(self, row: AgentWindows) -> None:
        """Hold an agent's row as read (with its history)."""
        self._rows[row.agent_id] = row
        if row.history is not None:
            self._tallies[row.agent_id] = states.tally(row.history)
        else:
            self._tallies.pop(row.agent_id, None)
        self._memo.clear()

    def drop(self, agent: str) -> None:
        """Forget an agent (it left the floor, or is put again)."""
        self._rows.pop(agent, None)
        self._tallies.pop(agent, None)
        self._memo.clear()

    def at(self, now_ms: int, window_s: int) -> dict[str, w.Sums]:
        """Every held agent's ms per state field in the window ending now (zeros left out)."""
        key = (now_ms, window_s)
        out = self._memo.get(key)
        if out is None:
            if len(self._memo) > 16:
                self._memo.clear()
            out = self._memo[key] = self._compute(now_ms, window_s)
        return out

    def _compute(self, now_ms: int, window_s: int) -> dict[str, w.Sums]:
        lo, hi = w.window_buckets(now_ms, window_s, self.tz)
        start, end = (lo + 1) * w.BUCKET_MS, (hi + 1) * w.BUCKET_MS
        out: dict[str, w.Sums] = {}
        for agent, row in self._rows.items():
            tally = self._tallies.get(agent)
            if tally is not None and tally.clip_ms <= start:
                ms = tally.window_ms(start, end)
            else:
                ms = {k: v for k, v in row.sums[window_s].items() if v and k in STATE_CODES}
            field = states.STATE_FIELDS.get(row.state or "")
            if field is not None and row.since_ms is not None:
                open_ms = now_ms - max(row.since_ms, start)
                if open_ms > 0:
                    ms[field] = ms.get(field, 0) + open_ms
            if ms:
                out[agent] = ms
        return out
