"""Unit tests of the (2e) queue and campaign settings: [queues], [queue.<name>], [queue_kpi.*], [campaign_kpi.*]."""

from __future__ import annotations

import pytest

from callpulse.exceptions import SettingsError
from callpulse.settings import QueueSettings, Settings, load_thresholds


def settings(text: str) -> Settings:
    return Settings(**load_thresholds(text, source="t.toml"))


def error(text: str) -> str:
    with pytest.raises(SettingsError) as info:
        load_thresholds(text, source="t.toml")
    return str(info.value)


def test_queue_defaults_are_the_contracts() -> None:
    s = Settings()
    assert s.queue("billing") == QueueSettings(sl_threshold_s=20, short_abandon_s=5, max_wait_s=7200)


def test_per_queue_override_inherits_the_queues_section() -> None:
    s = settings('[queues]\nshort_abandon_s = 3\nmax_wait = "1h"\n[queue.billing]\nsl_threshold_s = 30\n')
    assert s.queue("billing") == QueueSettings(sl_threshold_s=30, short_abandon_s=3, max_wait_s=3600)
    assert s.queue("sales") == QueueSettings(sl_threshold_s=20, short_abandon_s=3, max_wait_s=3600)


def test_max_wait_of_the_floor_is_the_longest_of_any_queue() -> None:
    assert settings('[queue.vip]\nmax_wait = "3h"\n').max_wait_s == 10800


def test_unknown_queue_key_names_the_allowed_ones() -> None:
    assert error("[queue.billing]\nsl_threshold = 30\n") == (
        "queue.billing.sl_threshold: unknown key, must be one of sl_threshold_s, short_abandon_s, max_wait "
        "or a [kpi] table"
    )


def test_negative_queue_seconds_are_refused() -> None:
    assert error("[queues]\nsl_threshold_s = -1\n") == "queues.sl_threshold_s is -1, must be a number of seconds >= 0"


def test_default_longest_wait_rule_warns_past_a_minute_and_is_live() -> None:
    rule = Settings().queue_rule_for("longest_wait_seconds", "billing")
    assert rule is not None
    assert (rule.warning_above, rule.critical_above, rule.window) == (60, 120, "live")


def test_queue_kpi_rule_and_per_queue_override() -> None:
    s = settings(
        "[queue_kpi.service_level]\nwarning_below = 0.9\nmin_samples = 5\n"
        "[queue.vip.kpi.service_level]\nwarning_below = 0.95\n"
    )
    base, vip = s.queue_rule_for("service_level", "billing"), s.queue_rule_for("service_level", "vip")
    assert base is not None and vip is not None
    assert (base.warning_below, base.min_samples, vip.warning_below, vip.min_samples) == (0.9, 5, 0.95, 5)


def test_live_queue_kpi_takes_no_window() -> None:
    assert error('[queue_kpi.waiting]\nwarning_above = 5\nwindow = "15m"\n') == (
        "queue_kpi.waiting.window: waiting is a live value, not windowed; remove 'window'"
    )


def test_unknown_queue_kpi_names_the_queue_ones() -> None:
    assert "queue_kpi: unknown KPI 'aht_seconds', must be one of offered, answered" in error(
        "[queue_kpi.aht_seconds]\nwarning_above = 1\n"
    )


def test_campaign_rule_may_watch_the_regulators_windows() -> None:
    s = settings('[campaign_kpi.outbound_abandon_rate]\nwarning_above = 0.02\nwindow = "24h"\n')
    rule = s.campaign_rules["outbound_abandon_rate"]
    assert (rule.warning_above, rule.window, rule.min_samples) == (0.02, "24h", 100)


def test_default_campaign_rule_warns_at_three_percent_over_thirty_days() -> None:
    rule = Settings().campaign_rules["outbound_abandon_rate"]
    assert (rule.warning_above, rule.window) == (0.03, "30d")


def test_campaign_rule_window_must_be_known() -> None:
    assert error('[campaign_kpi.outbound_abandon_rate]\nwindow = "7d"\n') == (
        "campaign_kpi.outbound_abandon_rate.window is '7d', must be one of the windows "
        "['15m', '1h', '8h', 'today', '24h', '30d']"
    )
