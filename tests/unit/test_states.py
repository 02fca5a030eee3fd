"""Unit tests of agent time in state: intervals across window edges, late events splitting intervals, bounds."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import orjson

from streams import states as st
from streams import windows as w
from tests import reference

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, ms (a bucket edge)
LIVE_FROM = T0 - 86_400_000


class Agent:
    """One agent's state events fed through merge/deltas as the worker would."""

    def __init__(self, live_from_ms: int = LIVE_FROM, max_marks: int = st.MAX_MARKS) -> None:
        self.history = st.History()
        self.counters: Counter[tuple[int, str]] = Counter()
        self.live_from_ms = live_from_ms
        self.max_marks = max_marks

    def arrive(self, *marks: st.Mark) -> None:
        new = st.merge(self.history, marks, self.live_from_ms, max_marks=self.max_marks)
        for _agent, b, fld, d in st.deltas("a1", self.history, new):
            self.counters[(b, fld)] += d
        self.history = new

    def seconds(self, now_ms: int, window_s: int) -> dict[str, float]:
        lo, hi = w.window_buckets(now_ms, window_s)
        sums: Counter[str] = Counter()
        for (b, fld), v in self.counters.items():
            if fld.endswith(w.RUN):
                sums[fld[:-1]] += v * len(w.run_buckets(b, lo, hi))
            elif lo < b <= hi:
                sums[fld] += v
        cur = self.history.current
        return st.state_seconds(sums, cur.state if cur else None, cur.ts_ms if cur else None, now_ms, window_s)


def mark(eid: str, ts_ms: int, state: str, reason: str | None = None) -> st.Mark:
    return st.Mark(ts_ms, eid, state, reason)


def test_closed_interval_counts_its_length_in_its_state_and_the_open_one_up_to_now() -> None:
    a = Agent()
    a.arrive(mark("s1", T0, "available"), mark("s2", T0 + 95_000, "on_call"))
    secs = a.seconds(T0 + 120_000, 900)
    assert (secs["available"], secs["on_call"], secs["wrap"]) == (95.0, 25.0, 0.0)


def test_interval_is_split_across_buckets_in_milliseconds() -> None:
    assert st.pieces(T0 + 7_500, T0 + 23_000) == [
        (w.bucket_of(T0), 2_500),
        (w.bucket_of(T0) + 1, 10_000),
        (w.bucket_of(T0) + 2, 3_000),
    ]


def test_window_edge_cuts_a_long_interval_at_the_first_bucket_of_the_window() -> None:
    a = Agent()
    a.arrive(mark("s1", T0, "break", "lunch"), mark("s2", T0 + 3_600_000, "available"))
    now = T0 + 3_600_000 + 300_000 + 5_000  # 15m window starts at bucket edge now - 900 s rounded up
    secs = a.seconds(now, 900)
    # window buckets lo < b <= hi: time from (lo + 1) * 10 s = now - 895 s on
    assert secs["break"] == 3_600.0 - (now - 895_000 - T0) / 1000
    assert secs["available"] == 305.0


def test_open_interval_moves_with_the_clock_without_events() -> None:
    a = Agent()
    a.arrive(mark("s1", T0, "on_call"))
    assert a.seconds(T0 + 1_000, 900)["on_call"] == 1.0
    assert a.seconds(T0 + 61_500, 900)["on_call"] == 61.5


def test_late_event_splits_the_interval_it_falls_in() -> None:
    a = Agent()
    a.arrive(mark("s1", T0, "available"), mark("s3", T0 + 100_000, "wrap"))
    a.arrive(mark("s2", T0 + 40_000, "on_call"))
    secs = a.seconds(T0 + 110_000, 900)
    assert (secs["available"], secs["on_call"], secs["wrap"]) == (40.0, 60.0, 10.0)


def test_late_event_before_the_first_adds_its_interval() -> None:
    a = Agent()
    a.arrive(mark("s2", T0 + 30_000, "on_call"))
    a.arrive(mark("s1", T0, "available"))
    secs = a.seconds(T0 + 50_000, 900)
    assert (secs["available"], secs["on_call"]) == (30.0, 20.0)


def test_late_event_after_the_latest_closes_the_open_interval() -> None:
    a = Agent()
    a.arrive(mark("s1", T0, "available"))
    a.arrive(mark("s2", T0 + 20_000, "break", "training"))
    assert a.history.current == mark("s2", T0 + 20_000, "break", "training")
    secs = a.seconds(T0 + 50_000, 900)
    assert (secs["available"], secs["break"]) == (20.0, 30.0)


def test_redelivered_state_event_changes_nothing() -> None:
    a = Agent()
    a.arrive(mark("s1", T0, "available"), mark("s2", T0 + 20_000, "on_call"))
    before = Counter(a.counters)
    a.arrive(mark("s2", T0 + 20_000, "on_call"), mark("s1", T0, "available"))
    assert a.counters == before


def test_every_arrival_order_gives_the_same_buckets() -> None:
    marks = [
        mark("s1", T0, "available"),
        mark("s2", T0 + 13_000, "on_call"),
        mark("s3", T0 + 200_500, "wrap"),
        mark("s4", T0 + 230_000, "break", "lunch"),
        mark("s5", T0 + 231_000, "available"),
    ]
    seen = set()
    for order in itertools.permutations(marks):
        a = Agent()
        for m in order:
            a.arrive(m)
        seen.add(frozenset((k, v) for k, v in a.counters.items() if v))
    assert len(seen) == 1


def test_time_before_the_first_retained_event_counts_nowhere() -> None:
    a = Agent()
    a.arrive(mark("s1", T0 + 600_000, "available"))
    secs = a.seconds(T0 + 660_000, 3600)
    assert secs == {"available": 60.0, "on_call": 0.0, "wrap": 0.0, "break": 0.0, "offline": 0.0}


def test_history_keeps_the_mark_straddling_live_from_and_drops_older_ones() -> None:
    h = st.merge(
        st.History(),
        [mark("s1", T0, "offline"), mark("s2", T0 + 10_000, "available"), mark("s3", T0 + 50_000, "on_call")],
        T0 + 20_000,
    )
    assert [m.event_id for m in h.marks] == ["s2", "s3"]
    assert h.clip_ms == T0 + 20_000


def test_pruning_keeps_windows_after_live_from_exact_and_earlier_buckets_as_written() -> None:
    a = Agent(live_from_ms=T0)
    a.arrive(mark("s1", T0, "available"), mark("s2", T0 + 30_000, "on_call"))
    a.live_from_ms = T0 + 100_000
    a.arrive(mark("s3", T0 + 130_000, "wrap"))
    assert [m.event_id for m in a.history.marks] == ["s2", "s3"]
    assert a.seconds(T0 + 140_000, 40)["on_call"] == 20.0
    assert a.seconds(T0 + 140_000, 40)["wrap"] == 10.0
    assert a.seconds(T0 + 140_000, 900)["available"] == 30.0


def test_history_is_capped_and_late_marks_before_the_cap_count_nowhere_new() -> None:
    a = Agent(max_marks=3)
    for i in range(5):
        a.arrive(mark(f"s{i}", T0 + i * 10_000, "available" if i % 2 == 0 else "on_call"))
    assert len(a.history.marks) == 3
    assert a.history.clip_ms == T0 + 20_000
    before = Counter(a.counters)
    a.arrive(mark("late", T0 + 5_000, "break"))
    assert a.counters == before


def test_occupancy_is_busy_over_staffed_seconds() -> None:
    secs = {"available": 60.0, "on_call": 120.0, "wrap": 20.0, "break": 600.0, "offline": 0.0}
    assert st.occupancy(secs) == 140 / 200


def test_occupancy_is_none_when_never_staffed() -> None:
    assert st.occupancy({"available": 0.0, "on_call": 0.0, "wrap": 0.0, "break": 30.0, "offline": 5.0}) is None


def test_counts_by_state_lists_every_state() -> None:
    assert st.counts_by_state(["available", "on_call", "available", None]) == {
        "available": 2,
        "on_call": 1,
        "wrap": 0,
        "break": 0,
        "offline": 0,
    }


def test_history_round_trips_through_its_encoding() -> None:
    h = st.merge(st.History(), [mark("s1", T0, "break", "lunch"), mark("s2", T0 + 1, "available")], LIVE_FROM)
    assert st.decode(st.encode(h)) == h


def test_a_history_keeps_about_30_bytes_a_mark_and_round_trips_reasons_and_other_states() -> None:
    marks = [mark(f"ev-d45a9fad-{600000 + i}", T0 + 45_000 * i, st.STATES[i % 5]) for i in range(40)]
    marks += [mark("ev-x1", T0 + 7, "break", "lunch"), mark("ev-x2", T0 + 9, "training")]
    h = st.merge(st.History(), marks, LIVE_FROM)
    assert st.decode(st.encode(h)) == h
    assert st.tally_of(st.encode(h)) == st.tally(h)
    assert len(st.encode(h)) < 32 * len(h.marks)


def test_a_history_stored_in_the_earlier_form_still_reads() -> None:
    h = st.merge(st.History(), [mark("s1", T0, "break", "lunch"), mark("s2", T0 + 1, "available")], LIVE_FROM)
    earlier = orjson.dumps([h.clip_ms, [[m.ts_ms, m.event_id, m.state, m.reason] for m in h.marks]])
    assert st.decode(earlier) == h
    assert st.tally_of(earlier) == st.tally(h)


def test_random_shuffled_histories_match_the_oracle() -> None:
    rng = random.Random(3)
    for _trial in range(40):
        raw = []
        t = T0 + rng.randrange(0, 10_000)
        for i in range(rng.randrange(1, 9)):
            state = rng.choice(reference.STATES)
            raw.append({"event_id": f"s{i}", "type": "agent.state", "ts": t / 1000, "agent_id": "a1", "state": state})
            t += rng.randrange(1, 400_000)
        shuffled = raw + rng.sample(raw, k=len(raw) // 2)
        rng.shuffle(shuffled)
        a = Agent()
        for e in shuffled:
            a.arrive(mark(e["event_id"], round(e["ts"] * 1000), e["state"]))
        now_ms = t + rng.randrange(0, 50_000)
        for window_s in (900, 3600):
            want = reference.state_seconds(raw, now_ms / 1000, window_s)["a1"]
            got = a.seconds(now_ms, window_s)
            assert all(reference.close(got[s], want[s]) for s in reference.STATES), (window_s, got, want)


def test_a_long_interval_costs_the_chunks_it_spans_not_its_buckets() -> None:
    a = Agent()
    a.arrive(mark("s1", T0 + 3_000, "offline"), mark("s2", T0 + 14 * 3_600_000 + 7_000, "available"))
    writes = list(a.counters)
    chunks = 14 * 3_600_000 // (w.BUCKET_MS * w.CHUNK_BUCKETS)
    assert len(writes) <= chunks + 4  # a run mark per chunk, the partial first and last buckets, one run stop
    assert a.seconds(T0 + 14 * 3_600_000 + 7_000, 8 * 3600)["offline"] == 8 * 3600 - 3.0


def test_tally_gives_the_written_buckets_of_any_window_from_the_history() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        a = Agent()
        marks = [
            mark(f"s{i}", T0 + rnd.randrange(0, 3 * 3_600_000), rnd.choice(st.STATES))
            for i in range(rnd.randrange(1, 12))
        ]
        for m in marks:
            a.arrive(m)
        tally = st.tally(a.history)
        assert st.tally_of(st.encode(a.history)) == tally  # the monitor's tally straight from the stored JSON
        assert st.decode(st.encode(a.history)) == a.history
        for _ in range(10):
            lo = w.bucket_of(T0) + rnd.randrange(-100, 1200)
            hi = lo + rnd.randrange(1, 1200)
            want: Counter[str] = Counter()
            for (b, fld), v in a.counters.items():
                if fld.endswith(w.RUN):
                    want[fld[:-1]] += v * len(w.run_buckets(b, lo, hi))
                elif lo < b <= hi:
                    want[fld] += v
            got = tally.window_ms((lo + 1) * w.BUCKET_MS, (hi + 1) * w.BUCKET_MS)
            assert {k: v for k, v in want.items() if v} == got


def test_a_tally_built_on_the_previous_versions_tally_equals_one_built_afresh() -> None:
    # The monitor cumulates only the marks after those a history shares with the version it held: marks added at
    # the end, late marks in the middle, and pruning (a moved clip) must all give the tally of the whole history.
    rnd = random.Random(11)
    for _ in range(200):
        a = Agent(live_from_ms=T0 + rnd.choice([0, 3_600_000]), max_marks=rnd.choice([3, 8, st.MAX_MARKS]))
        held = None
        t = T0
        for i in range(rnd.randrange(1, 20)):
            t += rnd.randrange(0, 900_000)
            late = rnd.random() < 0.2
            a.arrive(mark(f"s{i}", t - rnd.randrange(0, 3_600_000) if late else t, rnd.choice(st.STATES)))
            fresh = st.tally(a.history)
            assert st.tally_of(st.encode(a.history), held) == fresh
            held = fresh
