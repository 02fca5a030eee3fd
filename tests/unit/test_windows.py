"""Unit tests of the window math: bucket edges, chunk sums, and team/floor values from summed counters."""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from callpulse.settings import Settings
from monitor import snapshot
from streams import windows as w
from streams.store import AgentWindows

NOW_MS = 1_000_000  # bucket 100, on a bucket boundary
CB = w.CHUNK_BUCKETS


def test_window_buckets_are_open_below_and_closed_above() -> None:
    assert w.window_buckets(NOW_MS, 900) == (10, 100)


def test_window_buckets_round_down_an_unaligned_now() -> None:
    assert w.window_buckets(1_005_000, 900) == (10, 100)


def test_event_exactly_window_ago_is_out() -> None:
    assert not w.in_window(NOW_MS - 900_000, NOW_MS, 900)


def test_event_in_the_first_whole_bucket_after_window_start_is_in() -> None:
    assert w.in_window(NOW_MS - 900_000 + 10_000, NOW_MS, 900)


def test_event_in_the_bucket_of_window_start_is_out_even_when_after_it() -> None:
    # T - W < ts but in the same 10 s bucket as T - W: the documented 10 s edge tolerance.
    assert not w.in_window(1_005_000 - 900_000 + 1, 1_005_000, 900)


def test_event_at_now_is_in() -> None:
    assert w.in_window(NOW_MS, NOW_MS, 900)


def test_event_later_in_nows_bucket_is_in() -> None:
    assert w.in_window(NOW_MS + 9_999, NOW_MS, 900)


def test_event_in_the_bucket_after_now_is_out() -> None:
    assert not w.in_window(NOW_MS + 10_000, NOW_MS, 900)


def test_bucket_and_chunk_indices() -> None:
    assert (w.bucket_of(9_999), w.bucket_of(10_000), w.chunk_of(59), w.chunk_of(60), w.chunk_of(-1)) == (0, 1, 0, 1, -1)


def chunks_from(cells: dict[tuple[int, str], int]) -> dict[int, dict[str, str]]:
    """Chunk hashes as the store keeps them: per-bucket `<field>.<offset>` entries plus chunk totals."""
    out: dict[int, dict[str, str]] = defaultdict(dict)
    totals: dict[tuple[int, str], int] = defaultdict(int)
    for (b, fld), value in cells.items():
        c = w.chunk_of(b)
        out[c][f"{fld}.{b - c * CB}"] = str(value)
        totals[(c, fld)] += value
    for (c, fld), value in totals.items():
        out[c][fld] = str(value)
    return dict(out)


def test_sum_chunks_uses_the_total_of_a_chunk_wholly_inside() -> None:
    # The total disagrees with its buckets on purpose, to show which one is read.
    chunks = {1: {"n": "7", "n.0": "1", "n.59": "1"}}
    assert w.sum_chunks(chunks, CB - 1, 2 * CB - 1)["n"] == 7


def test_sum_chunks_uses_the_buckets_of_a_chunk_cut_by_the_lower_edge() -> None:
    chunks = {1: {"n": "7", "n.0": "1", "n.1": "2", "n.59": "4"}}
    assert w.sum_chunks(chunks, CB, 2 * CB - 1)["n"] == 6


def test_sum_chunks_uses_the_buckets_of_a_chunk_cut_by_the_upper_edge() -> None:
    chunks = {1: {"n": "7", "n.0": "1", "n.1": "2", "n.59": "4"}}
    assert w.sum_chunks(chunks, CB - 1, 2 * CB - 2)["n"] == 3


def test_sum_chunks_skips_chunks_outside_the_window() -> None:
    chunks = {0: {"n": "5", "n.59": "5"}, 2: {"n": "3", "n.0": "3"}}
    assert w.sum_chunks(chunks, CB - 1, 2 * CB - 1)["n"] == 0


def test_sum_chunks_across_chunk_boundaries_takes_edges_fine_and_middle_whole() -> None:
    cells = {
        (CB - 2, "h"): 1_000,  # chunk 0, out (b <= lo)
        (CB - 1, "h"): 2_000,  # chunk 0, in
        (CB, "h"): 30_000,  # chunk 1, whole
        (2 * CB - 1, "h"): 400_000,  # chunk 1, whole
        (2 * CB, "h"): 5_000_000,  # chunk 2, in
        (2 * CB + 1, "h"): 60_000_000,  # chunk 2, out (b > hi)
        (CB, "n"): 3,
    }
    sums = w.sum_chunks(chunks_from(cells), CB - 2, 2 * CB)
    assert sums["h"] == 5_432_000
    assert sums["n"] == 3
    assert sums["d"] == 0


@given(
    cells=st.dictionaries(
        st.tuples(st.integers(0, 4 * CB), st.sampled_from(["h", "n", "f"])), st.integers(-5, 1000), max_size=40
    ),
    lo=st.integers(-1, 4 * CB),
    width=st.integers(0, 4 * CB),
)
def test_sum_chunks_equals_the_bucket_by_bucket_sum(cells: dict[tuple[int, str], int], lo: int, width: int) -> None:
    hi = lo + width
    want = w.empty_sums()
    for (b, fld), value in cells.items():
        if lo < b <= hi:
            want[fld] += value
    assert w.sum_chunks(chunks_from(cells), lo, hi) == want


def test_kpis_from_sums_converts_ms_to_seconds() -> None:
    sums = w.empty_sums() | {"h": 630_000, "n": 3, "t": 90_500, "u": 2}
    values = w.kpis_from_sums(sums)
    assert (values["aht_seconds"], values["response_seconds"]) == (210.0, 45.25)


def test_samples_is_the_kpi_denominator() -> None:
    sums = w.empty_sums() | {"n": 4, "d": 9, "f": 2, "u": 1, "c": 3, "q": 5, "x": 6}
    assert [w.samples(sums, k) for k in ("aht_seconds", "connect_rate", "fcr", "response_seconds")] == [4, 9, 2, 1]
    assert [w.samples(sums, k) for k in ("conversion_rate", "csat", "escalation_rate", "dials")] == [3, 5, 6, 9]


def test_total_sums_numerators_and_denominators() -> None:
    a = w.empty_sums() | {"h": 600_000, "n": 1}
    b = w.empty_sums() | {"h": 300_000, "n": 3}
    assert w.total([a, b]) == w.empty_sums() | {"h": 900_000, "n": 4}


def test_team_aht_comes_from_summed_counters_not_the_average_of_agent_averages() -> None:
    a = w.empty_sums() | {"h": 600_000, "n": 1}  # one 600 s call
    b = w.empty_sums() | {"h": 300_000, "n": 3}  # three calls averaging 100 s
    agent_averages = [w.kpis_from_sums(a)["aht_seconds"], w.kpis_from_sums(b)["aht_seconds"]]
    assert sum(agent_averages) / 2 == 350.0  # what averaging would wrongly give
    assert w.kpis_from_sums(w.total([a, b]))["aht_seconds"] == 225.0


def test_snapshot_team_and_floor_use_summed_counters() -> None:
    a = w.empty_sums() | {"h": 600_000, "n": 1, "d": 1, "c": 1}
    b = w.empty_sums() | {"h": 300_000, "n": 3, "d": 9, "c": 1}
    c = w.empty_sums() | {"h": 1_000_000, "n": 1}
    rows = [
        AgentWindows("a1", "red", None, NOW_MS, {900: a}),
        AgentWindows("a2", "red", None, NOW_MS, {900: b}),
        AgentWindows("a3", None, None, NOW_MS, {900: c}),
    ]
    snap = snapshot.build(rows, window_s=900, settings=Settings(), now_ms=NOW_MS)
    team = snap["teams"][0]
    assert (team["team"], team["agents"], team["kpis"]["aht_seconds"], team["kpis"]["connect_rate"]) == (
        "red",
        2,
        225.0,
        0.2,
    )
    assert snap["floor"]["kpis"]["aht_seconds"] == 380.0
    assert snap["floor"]["kpis"]["calls_handled"] == 5


# --- the calendar window `today` ---------------------------------------------------------------

LONDON = ZoneInfo("Europe/London")


def local_ms(tz: ZoneInfo, *parts: int) -> int:
    return round(datetime(*parts, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def test_today_starts_at_local_midnight_of_a_25_hour_day() -> None:
    now = local_ms(LONDON, 2024, 10, 27, 23, 59, 59)  # clocks went back at 02:00 BST
    start = w.day_start_ms(now, LONDON)
    assert start == local_ms(UTC, 2024, 10, 26, 23, 0, 0)  # 00:00 BST
    assert now - start == 25 * 3_600_000 - 1000


def test_today_starts_at_local_midnight_of_a_23_hour_day() -> None:
    now = local_ms(LONDON, 2024, 3, 31, 23, 59, 59)  # clocks went forward at 01:00 GMT
    start = w.day_start_ms(now, LONDON)
    assert start == local_ms(UTC, 2024, 3, 31, 0, 0, 0)  # 00:00 GMT
    assert now - start == 23 * 3_600_000 - 1000


def test_a_day_whose_midnight_is_skipped_starts_when_the_clock_jumps() -> None:
    havana = ZoneInfo("America/Havana")  # 2024-03-10: 00:00 CST jumps to 01:00 CDT
    now = local_ms(havana, 2024, 3, 10, 12, 0, 0)
    assert w.day_start_ms(now, havana) == local_ms(UTC, 2024, 3, 10, 5, 0, 0)


def test_today_holds_the_midnight_bucket_and_not_the_one_before() -> None:
    now = local_ms(LONDON, 2024, 10, 27, 23, 59, 55)
    midnight = local_ms(LONDON, 2024, 10, 27, 0, 0, 0)
    assert w.in_window(midnight, now, w.TODAY, LONDON)
    assert not w.in_window(midnight - 1, now, w.TODAY, LONDON)
    assert w.in_window(now, now, w.TODAY, LONDON)


def test_at_midnight_today_holds_only_the_midnight_bucket() -> None:
    now = local_ms(LONDON, 2024, 10, 28, 0, 0, 0)
    assert w.window_buckets(now, w.TODAY, LONDON) == (now // w.BUCKET_MS - 1, now // w.BUCKET_MS)
    assert not w.in_window(now - 1, now, w.TODAY, LONDON)


def test_today_in_utc_by_default() -> None:
    now = local_ms(UTC, 2024, 1, 2, 6, 0, 0)
    assert w.span_s(now, w.TODAY) == 6 * 3600 + 0.001


def test_a_held_alert_level_and_a_snooze_do_not_outlive_them_in_memoised_snapshots() -> None:
    # Agents' levels are kept between snapshots while their rows hold (the memo): a firing alert's level, held on
    # the tile until it resolves, and a snooze that hides a level, must change only the snapshot they are in.
    sums = w.empty_sums() | {"h": 4_500_000, "n": 5}  # AHT 900 s over 5 calls: past the built-in thresholds
    row = AgentWindows("a1", "red", None, NOW_MS, {900: sums}, version=7)
    memo: snapshot.Memo = {}
    firing = {"scope": "agent", "agent_id": "a1", "kpi": "connect_rate", "severity": "critical", "status": "firing"}
    snooze = {("aht_seconds", "agent", "a1"): NOW_MS + 60_000}

    def agent(**kwargs: object) -> dict[str, object]:
        snap = snapshot.build([row], window_s=900, settings=Settings(), now_ms=NOW_MS, memo=memo, **kwargs)  # type: ignore[arg-type]
        return snap["agents"][0]  # type: ignore[no-any-return]

    plain = copy.deepcopy(agent())  # a copy: what a later snapshot changes in place must not change it
    assert "aht_seconds" in plain["levels"] and "connect_rate" not in plain["levels"]
    assert agent(alerts=[firing])["levels"]["connect_rate"] == "critical"
    assert "aht_seconds" not in agent(snoozes=snooze)["levels"]
    assert agent() == plain
