"""The sweep's schedule and floor view: when windows change by time alone, and totals kept one agent at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from streams import windows as w
from streams.schedule import FloorView, Schedule, next_change_ms, next_midnight_ms

NOW_MS = 1_800_000_000_000  # on a bucket edge
HOUR_MS = 3_600_000


def test_a_bucket_leaves_a_rolling_window_at_its_start_plus_the_window() -> None:
    first = w.bucket_of(NOW_MS - 600_000)  # 10 min ago, in the 15 min window
    due = next_change_ms({900: first}, now_ms=NOW_MS, last_ts_ms=NOW_MS, span_ms=HOUR_MS, tz=UTC)
    assert due == NOW_MS + 300_000
    assert not w.in_window(NOW_MS - 600_000, due, 900) and w.in_window(NOW_MS - 600_000, due - 1, 900)


def test_the_earliest_window_change_wins() -> None:
    firsts = {900: w.bucket_of(NOW_MS - 60_000), 3600: w.bucket_of(NOW_MS - 3_000_000)}
    due = next_change_ms(firsts, now_ms=NOW_MS, last_ts_ms=NOW_MS, span_ms=HOUR_MS, tz=UTC)
    assert due == NOW_MS + 600_000


def test_empty_windows_leave_only_the_time_the_agent_leaves_the_floor() -> None:
    due = next_change_ms({900: None, 3600: None}, now_ms=NOW_MS, last_ts_ms=NOW_MS - 1000, span_ms=HOUR_MS, tz=UTC)
    assert due == NOW_MS - 1000 + HOUR_MS


def test_an_agent_with_events_ahead_of_now_is_due_again_within_a_bucket() -> None:
    due = next_change_ms({900: None}, now_ms=NOW_MS, last_ts_ms=NOW_MS + 120_000, span_ms=HOUR_MS, tz=UTC)
    assert due == NOW_MS + w.BUCKET_MS


def test_today_changes_at_the_next_local_midnight_on_a_25_hour_day() -> None:
    tz = ZoneInfo("Europe/Paris")
    start = round(datetime(2026, 10, 25, tzinfo=tz).timestamp() * 1000)  # clocks go back: a 25 h day
    now = start + 3_600_000
    assert next_midnight_ms(now, tz) == start + 25 * HOUR_MS
    due = next_change_ms({w.TODAY: w.bucket_of(now)}, now_ms=now, last_ts_ms=now, span_ms=30 * HOUR_MS, tz=tz)
    assert due == start + 25 * HOUR_MS


def test_schedule_pops_only_agents_due_and_a_new_time_replaces_the_old() -> None:
    s = Schedule()
    s.set("a1", 100)
    s.set("a2", 300)
    s.set("a1", 500)  # re-read: the later time replaces the earlier
    assert s.pop_due(200) == []
    assert s.pop_due(300) == ["a2"]
    assert s.pop_due(1000) == ["a1"]
    assert len(s) == 0


def test_dropped_agent_never_comes_due() -> None:
    s = Schedule()
    s.set("a1", 100)
    s.drop("a1")
    assert s.pop_due(1000) == []


def _sums(n: int) -> dict[int, w.Sums]:
    return {900: w.empty_sums() | {w.CONNECTED: n, w.HANDLE_MS: 1000 * n}}


def test_team_and_floor_totals_follow_each_agents_latest_read() -> None:
    view = FloorView([900], "g1", 0)
    view.put("a1", "north", _sums(2))
    view.put("a2", "north", _sums(3))
    view.put("a3", "south", _sums(5))
    assert view.put("a1", "north", _sums(7)) == {"north"}
    assert view.teams["north"][900][w.CONNECTED] == 10
    assert view.floor[900][w.CONNECTED] == 15
    assert view.floor[900][w.HANDLE_MS] == 15_000


def test_an_agent_moving_team_takes_its_sums_along() -> None:
    view = FloorView([900], "g1", 0)
    view.put("a1", "north", _sums(2))
    view.put("a2", "south", _sums(3))
    assert view.put("a1", "south", _sums(2)) == {"north", "south"}
    assert "north" not in view.teams and view.team_size("north") == 0
    assert view.teams["south"][900][w.CONNECTED] == 5
    assert view.floor[900][w.CONNECTED] == 5


def test_removing_an_agent_takes_it_out_of_its_team_and_the_floor() -> None:
    view = FloorView([900], "g1", 0)
    view.put("a1", "north", _sums(2))
    view.put("a2", "north", _sums(3))
    view.schedule.set("a1", 10)
    assert view.remove("a1") == {"north"}
    assert view.team_size("north") == 1 and view.teams["north"][900][w.CONNECTED] == 3
    assert view.floor[900][w.CONNECTED] == 3
    assert view.schedule.pop_due(100) == []
