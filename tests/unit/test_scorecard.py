"""The scorecard formula with exact numbers, its TOML table, and scores in the snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpulse.exceptions import SettingsError
from callpulse.scorecard import ScoreKpi, mean_score
from callpulse.settings import Settings, load_thresholds
from monitor import snapshot
from streams import windows as w
from streams.store import AgentWindows

ROOT = Path(__file__).resolve().parents[2]
RANGE = ScoreKpi("aht_seconds", 5, target_range=(180, 360))


def test_higher_is_better_earns_its_share_of_the_target() -> None:
    assert ScoreKpi("revenue", 50, target=600).points(150.0) == 12.5


def test_higher_is_better_is_capped_at_the_weight() -> None:
    assert ScoreKpi("revenue", 50, target=600).points(900.0) == 50


def test_a_negative_value_earns_nothing_rather_than_negative_points() -> None:
    assert ScoreKpi("nps", 10, target=50).points(-20.0) == 0


def test_lower_is_better_earns_target_over_value() -> None:
    assert ScoreKpi("escalation_rate", 10, target=0.10, better="lower").points(0.25) == pytest.approx(4.0)


def test_lower_is_better_with_value_zero_earns_all() -> None:
    assert ScoreKpi("escalation_rate", 10, target=0.10, better="lower").points(0.0) == 10


def test_inside_the_target_range_earns_all() -> None:
    assert (RANGE.points(180.0), RANGE.points(300.0), RANGE.points(360.0)) == (5, 5, 5)


def test_below_the_target_range_earns_value_over_lo() -> None:
    assert RANGE.points(90.0) == 2.5


def test_above_the_target_range_earns_hi_over_value() -> None:
    assert RANGE.points(720.0) == 2.5


def test_null_kpi_earns_nothing() -> None:
    assert (RANGE.points(None), ScoreKpi("revenue", 50, target=1).points(None)) == (0, 0)


def test_mean_score_of_no_agents_is_none() -> None:
    assert (mean_score([]), mean_score([40.0, 60.0, 80.0])) == (None, 60.0)


def text(body: str) -> str:
    return '[scorecard]\nwindow = "today"\n' + body


def error(toml: str) -> str:
    with pytest.raises(SettingsError) as info:
        load_thresholds(toml)
    return str(info.value)


def test_better_defaults_to_the_catalogue_direction() -> None:
    card = load_thresholds(text("[scorecard.kpi.escalation_rate]\nweight = 10\ntarget = 0.1\n"))["scorecard"]
    assert card.kpis[0].better == "lower"


def test_scorecard_window_must_be_configured() -> None:
    assert error('[scorecard]\nwindow = "2h"\n[scorecard.kpi.dials]\nweight = 1\ntarget = 1\n') == (
        "scorecard.window is '2h', must be one of the windows ['15m', '1h', '8h', 'today']"
    )


def test_scorecard_kpi_needs_one_target() -> None:
    assert error(text("[scorecard.kpi.dials]\nweight = 1\n")) == (
        "scorecard.kpi.dials: set either target or target_range = [lo, hi]"
    )


def test_scorecard_unknown_kpi_names_the_known_ones() -> None:
    assert error(text("[scorecard.kpi.happiness]\nweight = 1\ntarget = 1\n")).startswith(
        "scorecard.kpi: unknown KPI 'happiness', must be one of aht_seconds"
    )


def test_scorecard_range_must_ascend() -> None:
    assert error(text("[scorecard.kpi.aht_seconds]\nweight = 5\ntarget_range = [360, 180]\n")) == (
        "scorecard.kpi.aht_seconds.target_range is [360, 180], lo must be <= hi"
    )


def test_example_scorecard_is_the_telesales_table_of_100_points() -> None:
    card = load_thresholds((ROOT / "callpulse" / "scorecard.example.toml").read_text())["scorecard"]
    weights = {k.kpi: k.weight for k in card.kpis}
    assert weights == {"revenue": 50, "conversion_rate": 10, "aov": 10, "dials": 10, "connect_rate": 5,
                       "qa_score": 10, "aht_seconds": 5}  # fmt: skip
    assert (card.window, card.total_weight) == ("today", 100)


def row(agent: str, team: str | None, **counters: int) -> AgentWindows:
    sums = w.empty_sums() | counters
    return AgentWindows(agent, team, None, 0, {w.TODAY: sums, 900: w.empty_sums()})


def test_snapshot_scores_agents_and_averages_teams_over_agents_with_events() -> None:
    card = "[scorecard.kpi.dials]\nweight = 60\ntarget = 10\n[scorecard.kpi.aht_seconds]\nweight = 40\n"
    settings = Settings(**load_thresholds(text(card + "target_range = [100, 200]\n")))
    rows = [
        row("a1", "red", d=5, n=2, h=600_000, y=7),  # 30 + 40 * 200/300
        row("a2", "red", d=10, y=10),  # 60 + 0 (AHT null)
        row("a3", "red"),  # no event today: scored 0, left out of the team's mean
        row("a4", "blue", d=20, n=1, h=150_000, y=21),  # 60 + 40
    ]
    snap = snapshot.build(rows, window_s=900, settings=settings, now_ms=0)
    scores = {a["agent_id"]: a["score"] for a in snap["agents"]}
    assert scores == pytest.approx({"a1": 30 + 80 / 3, "a2": 60.0, "a3": 0.0, "a4": 100.0})
    assert snap["agents"][0]["points"] == pytest.approx({"dials": 30.0, "aht_seconds": 80 / 3})
    teams = {t["team"]: t["score"] for t in snap["teams"]}
    assert teams == pytest.approx({"red": (30 + 80 / 3 + 60) / 2, "blue": 100.0})
    assert snap["floor"]["score"] == pytest.approx((30 + 80 / 3 + 60 + 100) / 3)


def test_no_scorecard_no_score() -> None:
    snap = snapshot.build([row("a1", "red", d=1, y=1)], window_s=900, settings=Settings(), now_ms=0)
    assert "score" not in snap["agents"][0] and "score" not in snap["floor"] and snap["scorecard"] is None
