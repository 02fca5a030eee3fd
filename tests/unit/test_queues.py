"""Unit tests of the pure queue core: exact queue KPIs under any arrival order, waiting and longest wait."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import orjson

from streams import queues as q
from streams import windows as w
from tests import reference

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, ms
LIVE_FROM = T0 - 86_400_000
RULES = q.fixed_rules()


class Floor:
    """Queue events fed through merge/deltas per call as the worker would, accumulating counters per queue."""

    def __init__(self, rules_for: q.RulesFor = RULES) -> None:
        self.rules_for = rules_for
        self.calls: dict[str, q.QueuedCall] = {}
        self.counters: Counter[tuple[str, int, str]] = Counter()
        self.waiting: dict[str, tuple[str, int]] = {}

    def arrive(self, etype: str, call_id: str, ts_ms: int, event_id: str, queue: str = "billing") -> None:
        old = self.calls.get(call_id, q.QueuedCall())
        new = q.merge(old, [(etype, ts_ms, event_id, queue)])
        for queue_name, b, fld, d in q.deltas(old, new, self.rules_for, LIVE_FROM):
            self.counters[(queue_name, b, fld)] += d
        leave, join = q.waiting_changes(old, new)
        if leave is not None:
            del self.waiting[call_id]
        if join is not None:
            self.waiting[call_id] = join
        self.calls[call_id] = new

    def sums(self, queue: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(q.QUEUE_FIELDS, 0)
        for (name, _b, fld), v in self.counters.items():
            if queue in (None, name):
                out[fld] += v
        return out

    def kpis(self, queue: str | None = None) -> dict[str, float | int | None]:
        return q.kpis_from_sums(self.sums(queue))


def test_answer_after_entry_gives_its_wait_as_asa_and_meets_sl_within_threshold() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", T0, "q1")
    f.arrive("call.answered", "c1", T0 + 12_000, "a1")
    assert f.kpis() == {
        "offered": 1,
        "answered": 1,
        "abandoned": 0,
        "short_abandoned": 0,
        "asa_seconds": 12.0,
        "service_level": 1.0,
        "abandon_rate": 0.0,
    }


def test_answer_before_its_queue_entry_arrives_counts_the_same_once_the_entry_lands() -> None:
    f = Floor()
    f.arrive("call.answered", "c1", T0 + 30_000, "a1")
    assert f.kpis()["answered"] == 1
    assert (f.kpis()["asa_seconds"], f.kpis()["service_level"]) == (None, None)
    f.arrive("call.queued", "c1", T0, "q1")
    assert (f.kpis()["asa_seconds"], f.kpis()["service_level"], f.kpis()["offered"]) == (30.0, 0.0, 1)


def test_service_level_counts_a_wait_equal_to_the_threshold_as_met_and_one_ms_more_as_missed() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", T0, "q1")
    f.arrive("call.answered", "c1", T0 + 20_000, "a1")
    f.arrive("call.queued", "c2", T0, "q2")
    f.arrive("call.answered", "c2", T0 + 20_001, "a2")
    assert f.kpis()["service_level"] == 0.5
    assert f.kpis()["asa_seconds"] == 20.0005


def test_abandon_under_five_seconds_is_short_and_leaves_abandon_rate_and_sl_alone() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", T0, "q1")
    f.arrive("call.abandoned", "c1", T0 + 4_999, "b1")
    f.arrive("call.queued", "c2", T0, "q2")
    f.arrive("call.answered", "c2", T0 + 3_000, "a2")
    values = f.kpis()
    assert (values["short_abandoned"], values["abandoned"], values["abandon_rate"], values["service_level"]) == (
        1,
        0,
        0.0,
        1.0,
    )


def test_abandon_at_exactly_five_seconds_is_not_short_and_misses_sl() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", T0, "q1")
    f.arrive("call.abandoned", "c1", T0 + 5_000, "b1")
    f.arrive("call.queued", "c2", T0, "q2")
    f.arrive("call.answered", "c2", T0 + 3_000, "a2")
    values = f.kpis()
    assert (values["short_abandoned"], values["abandoned"], values["abandon_rate"], values["service_level"]) == (
        0,
        1,
        0.5,
        0.5,
    )


def test_abandon_with_unknown_entry_is_not_short_and_stays_out_of_sl() -> None:
    f = Floor()
    f.arrive("call.abandoned", "c1", T0 + 2_000, "b1")
    f.arrive("call.queued", "c2", T0, "q2")
    f.arrive("call.answered", "c2", T0 + 25_000, "a2")
    values = f.kpis()
    assert (values["abandoned"], values["short_abandoned"], values["abandon_rate"], values["service_level"]) == (
        1,
        0,
        0.5,
        0.0,
    )


def test_entry_arriving_after_a_quick_abandon_turns_it_short() -> None:
    f = Floor()
    f.arrive("call.abandoned", "c1", T0 + 2_000, "b1")
    assert (f.kpis()["abandoned"], f.kpis()["short_abandoned"]) == (1, 0)
    f.arrive("call.queued", "c1", T0, "q1")
    assert (f.kpis()["abandoned"], f.kpis()["short_abandoned"], f.kpis()["abandon_rate"]) == (0, 1, None)


def test_redelivered_events_change_nothing() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", T0, "q1")
    f.arrive("call.answered", "c1", T0 + 8_000, "a1")
    before = Counter(f.counters)
    f.arrive("call.answered", "c1", T0 + 8_000, "a1")
    f.arrive("call.queued", "c1", T0, "q1")
    assert f.counters == before


def test_per_queue_thresholds_apply_to_the_queue_of_the_answer() -> None:
    rules = q.fixed_rules(per_queue={"billing": q.QueueRules(sl_threshold_ms=30_000)})
    f = Floor(rules)
    f.arrive("call.queued", "c1", T0, "q1", queue="billing")
    f.arrive("call.answered", "c1", T0 + 25_000, "a1", queue="billing")
    f.arrive("call.queued", "c2", T0, "q2", queue="sales")
    f.arrive("call.answered", "c2", T0 + 25_000, "a2", queue="sales")
    assert (f.kpis("billing")["service_level"], f.kpis("sales")["service_level"]) == (1.0, 0.0)


def test_counters_land_in_the_bucket_of_each_events_own_ts() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", T0 + 9_000, "q1")
    f.arrive("call.answered", "c1", T0 + 15_000, "a1")
    b0, b1 = w.bucket_of(T0 + 9_000), w.bucket_of(T0 + 15_000)
    assert {k: v for k, v in f.counters.items() if v} == {
        ("billing", b0, q.OFFERED): 1,
        ("billing", b1, q.ANSWERED): 1,
        ("billing", b1, q.WAIT_MS): 6_000,
        ("billing", b1, q.WAITED): 1,
        ("billing", b1, q.SL_BASE): 1,
        ("billing", b1, q.SL_MET): 1,
    }


def test_events_before_live_from_count_nowhere() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", LIVE_FROM - 1, "q1")
    f.arrive("call.answered", "c1", LIVE_FROM + 10_000, "a1")
    assert f.kpis()["offered"] == 0
    assert (f.kpis()["answered"], f.kpis()["asa_seconds"]) == (1, 10.001)


def test_every_arrival_order_gives_the_same_counters() -> None:
    events = [
        ("call.queued", "c1", T0, "q1"),
        ("call.answered", "c1", T0 + 21_000, "a1"),
        ("call.queued", "c2", T0 + 1_000, "q2"),
        ("call.abandoned", "c2", T0 + 4_000, "b2"),
        ("call.queued", "c3", T0 + 2_000, "q3"),
        ("call.abandoned", "c3", T0 + 90_000, "b3"),
    ]
    results = set()
    for order in itertools.permutations(events):
        f = Floor()
        for etype, cid, ts, eid in order:
            f.arrive(etype, cid, ts, eid)
        results.add(frozenset((k, v) for k, v in f.counters.items() if v))
        assert f.waiting == {}
    assert len(results) == 1
    values = Floor()
    for etype, cid, ts, eid in events:
        values.arrive(etype, cid, ts, eid)
    assert values.kpis() == {
        "offered": 3,
        "answered": 1,
        "abandoned": 1,
        "short_abandoned": 1,
        "asa_seconds": 21.0,
        "service_level": 0.0,
        "abandon_rate": 0.5,
    }


def test_a_call_waits_from_its_entry_until_it_is_answered() -> None:
    f = Floor()
    f.arrive("call.queued", "c1", T0, "q1")
    assert f.waiting == {"c1": ("billing", T0)}
    f.arrive("call.answered", "c1", T0 + 5_000, "a1")
    assert f.waiting == {}


def test_an_answer_before_the_entry_never_makes_the_call_wait() -> None:
    f = Floor()
    f.arrive("call.answered", "c1", T0 + 5_000, "a1")
    f.arrive("call.queued", "c1", T0, "q1")
    assert f.waiting == {}


def test_live_counts_waiting_calls_and_the_longest_wait_from_the_earliest_entry() -> None:
    assert q.live([T0 + 10_000, T0, T0 + 30_000], T0 + 45_500, 7_200_000) == (3, 45.5)


def test_live_drops_calls_queued_longer_than_max_wait_ago() -> None:
    now = T0 + 7_200_000
    assert q.live([T0, T0 + 1], now, 7_200_000) == (1, 7199.999)


def test_live_is_zero_and_none_when_nobody_waits() -> None:
    assert q.live([], T0, 7_200_000) == (0, None)


def test_live_entry_ahead_of_the_clock_waits_zero_seconds() -> None:
    assert q.live([T0 + 2_000], T0, 7_200_000) == (1, 0.0)


def test_state_round_trips_through_its_encoding() -> None:
    call = q.merge(q.QueuedCall(), [("call.queued", T0, "q1", "billing"), ("call.abandoned", T0 + 9, "b1", "x")])
    assert q.decode(q.encode(call)) == call


def test_a_call_in_one_queue_is_stored_without_repeating_the_queue() -> None:
    call = q.merge(
        q.QueuedCall(), [("call.queued", T0, "ev-1", "billing"), ("call.answered", T0 + 9, "ev-2", "billing")]
    )
    assert q.encode(call) == b'["billing",[%d,"ev-1"],[%d,"ev-2"],[]]' % (T0, T0 + 9)
    assert q.decode(q.encode(call)) == call


def test_a_call_state_stored_in_the_earlier_form_still_reads() -> None:
    call = q.merge(
        q.QueuedCall(), [("call.queued", T0, "ev-1", "billing"), ("call.abandoned", T0 + 9, "ev-2", "sales")]
    )
    earlier = orjson.dumps({"q": [list(m) for m in call.queued], "a": [], "b": [list(m) for m in call.abandons]})
    assert q.decode(earlier) == call
    assert q.decode(q.encode(call)) == call  # marks in two queues keep that form


def test_random_traces_match_the_oracle_in_any_order() -> None:
    rng = random.Random(7)
    for _trial in range(30):
        raw: list[dict] = []
        for i in range(12):
            cid, queue = f"c{i}", rng.choice(["billing", "sales"])
            entry = T0 + rng.randrange(0, 600_000)
            if rng.random() < 0.85:
                raw.append({"event_id": f"q{i}", "type": "call.queued", "ts": entry / 1000, "call_id": cid,
                            "queue": queue})  # fmt: skip
            roll = rng.random()
            end = entry + rng.choice([0, 3_000, 4_999, 5_000, 19_999, 20_000, 20_001, 60_000])
            if roll < 0.6:
                raw.append({"event_id": f"a{i}", "type": "call.answered", "ts": end / 1000, "call_id": cid,
                            "queue": queue, "agent_id": "x"})  # fmt: skip
            elif roll < 0.9:
                raw.append({"event_id": f"b{i}", "type": "call.abandoned", "ts": end / 1000, "call_id": cid,
                            "queue": queue})  # fmt: skip
        shuffled = raw + rng.sample(raw, k=len(raw) // 3)
        rng.shuffle(shuffled)
        f = Floor()
        for e in shuffled:
            f.arrive(e["type"], e["call_id"], round(e["ts"] * 1000), e["event_id"], e["queue"])
        now = (T0 + 700_000) / 1000
        want = reference.queue_kpis(raw, now, 3600)
        for queue in ("billing", "sales"):
            if queue in want:
                got = f.kpis(queue)
                assert all(reference.close(got[k], v) for k, v in want[queue].items()), (queue, got, want[queue])
        waiting = reference.queue_waiting(raw, now)
        for queue, (n, longest) in waiting.items():
            entries = [ts for cid, (qn, ts) in f.waiting.items() if qn == queue]
            assert q.live(entries, round(now * 1000), 7_200_000) == (n, longest)
