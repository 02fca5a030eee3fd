"""Unit tests of the alert episode logic: fire once, escalate, de-escalate and resolve with hysteresis."""

from __future__ import annotations

from dataclasses import replace

from callpulse.settings import Rule
from streams.alerts import Alert, alert_key, episode_id, evaluate

AHT = Rule("aht_seconds", warning_above=360, critical_above=480, min_samples=5, window="15m")
CONNECT = Rule("connect_rate", warning_below=0.35, critical_below=0.25, min_samples=20, window="15m")
H = 0.05
T0 = 1_704_067_200_000


def step(
    rule: Rule, value: float | None, current: Alert | None, *, samples: int = 100, now_ms: int = T0
) -> Alert | None:
    return evaluate(
        rule, scope="agent", subject="a1", value=value, samples=samples, current=current, now_ms=now_ms, hysteresis=H
    )


def fired(rule: Rule, value: float, now_ms: int = T0) -> Alert:
    alert = step(rule, value, None, now_ms=now_ms)
    assert alert is not None
    return alert


def test_fires_when_value_crosses_the_warning_threshold() -> None:
    alert = step(AHT, 361.0, None, samples=5)
    assert alert == Alert(
        episode_id("agent|a1|aht_seconds|15m", T0),
        "firing",
        "aht_seconds",
        "agent",
        "a1",
        "15m",
        361.0,
        360.0,
        "warning",
        T0,
        T0,
    )


def test_value_at_the_threshold_does_not_fire() -> None:
    assert step(AHT, 360.0, None) is None


def test_no_fire_below_min_samples() -> None:
    assert step(AHT, 500.0, None, samples=4) is None


def test_no_fire_on_a_null_value() -> None:
    assert step(AHT, None, None) is None


def test_fires_straight_at_critical_with_the_critical_threshold() -> None:
    alert = fired(AHT, 481.0)
    assert (alert.severity, alert.threshold, alert.value) == ("critical", 480.0, 481.0)


def test_no_refire_while_still_breached() -> None:
    alert = fired(AHT, 400.0)
    assert step(AHT, 420.0, alert, now_ms=T0 + 1_000) is None
    assert step(AHT, 361.0, alert, now_ms=T0 + 2_000) is None


def test_escalates_warning_to_critical_keeping_the_episode_id() -> None:
    alert = fired(AHT, 400.0)
    up = step(AHT, 500.0, alert, now_ms=T0 + 5_000)
    assert up == replace(alert, severity="critical", threshold=480.0, value=500.0, ts_ms=T0 + 5_000)
    assert (up.id, up.since_ms, up.status) == (alert.id, T0, "firing")


def test_stays_critical_below_critical_threshold_within_the_hysteresis_margin() -> None:
    alert = fired(AHT, 500.0)
    assert step(AHT, 470.0, alert) is None  # 480 * 0.95 = 456 < 470 < 480


def test_deescalates_critical_to_warning_past_the_hysteresis_margin() -> None:
    alert = fired(AHT, 500.0)
    down = step(AHT, 455.0, alert, now_ms=T0 + 9_000)
    assert down == replace(alert, severity="warning", threshold=360.0, value=455.0, ts_ms=T0 + 9_000)


def test_keeps_firing_between_threshold_and_its_hysteresis_margin() -> None:
    alert = fired(AHT, 400.0)
    assert step(AHT, 350.0, alert) is None  # 360 * 0.95 = 342 < 350 < 360
    assert step(AHT, 342.0, alert) is None


def test_resolves_back_across_the_warning_threshold_by_the_margin() -> None:
    alert = fired(AHT, 400.0)
    done = step(AHT, 341.0, alert, now_ms=T0 + 60_000)
    assert done == replace(alert, status="resolved", value=341.0, ts_ms=T0 + 60_000)


def test_critical_resolves_at_once_when_back_across_the_warning_margin() -> None:
    alert = fired(AHT, 500.0)
    done = step(AHT, 300.0, alert)
    assert (done.status, done.severity, done.id) == ("resolved", "critical", alert.id)  # type: ignore[union-attr]


def test_deescalated_between_warning_and_its_margin_stays_firing_as_warning() -> None:
    alert = fired(AHT, 500.0)
    down = step(AHT, 350.0, alert)
    assert (down.status, down.severity) == ("firing", "warning")  # type: ignore[union-attr]


def test_resolves_when_the_value_becomes_null() -> None:
    alert = fired(AHT, 400.0)
    done = step(AHT, None, alert, samples=0, now_ms=T0 + 900_000)
    assert done == replace(alert, status="resolved", value=None, ts_ms=T0 + 900_000)


def test_resolves_when_samples_drop_below_min_samples_as_time_passes() -> None:
    alert = fired(AHT, 400.0)
    done = step(AHT, 420.0, alert, samples=4, now_ms=T0 + 600_000)
    assert done == replace(alert, status="resolved", value=420.0, ts_ms=T0 + 600_000)


def test_below_rule_fires_when_value_drops_under_warning() -> None:
    alert = step(CONNECT, 0.34, None, samples=20)
    assert (alert.severity, alert.threshold, alert.kpi) == ("warning", 0.35, "connect_rate")  # type: ignore[union-attr]


def test_below_rule_respects_min_samples() -> None:
    assert step(CONNECT, 0.1, None, samples=19) is None


def test_below_rule_escalates_under_critical_keeping_the_id() -> None:
    alert = fired(CONNECT, 0.30)
    up = step(CONNECT, 0.24, alert)
    assert (up.severity, up.threshold, up.id) == ("critical", 0.25, alert.id)  # type: ignore[union-attr]


def test_below_rule_stays_critical_within_the_margin() -> None:
    alert = fired(CONNECT, 0.2)
    assert step(CONNECT, 0.26, alert) is None  # 0.25 * 1.05 = 0.2625


def test_below_rule_deescalates_past_the_margin() -> None:
    alert = fired(CONNECT, 0.2)
    down = step(CONNECT, 0.27, alert)
    assert (down.status, down.severity, down.threshold) == ("firing", "warning", 0.35)  # type: ignore[union-attr]


def test_below_rule_keeps_firing_within_the_margin_above_warning() -> None:
    alert = fired(CONNECT, 0.3)
    assert step(CONNECT, 0.36, alert) is None  # 0.35 * 1.05 = 0.3675


def test_below_rule_resolves_past_the_margin() -> None:
    alert = fired(CONNECT, 0.3)
    done = step(CONNECT, 0.37, alert)
    assert (done.status, done.id) == ("resolved", alert.id)  # type: ignore[union-attr]


def test_episode_id_is_deterministic_for_the_same_key_and_start() -> None:
    key = alert_key("agent", "a1", "aht_seconds", "15m")
    assert episode_id(key, T0) == episode_id(key, T0)
    assert fired(AHT, 400.0).id == fired(AHT, 500.0).id == episode_id(key, T0)


def test_episode_id_differs_for_another_start_or_key() -> None:
    key = alert_key("agent", "a1", "aht_seconds", "15m")
    assert episode_id(key, T0) != episode_id(key, T0 + 1)
    assert episode_id(key, T0) != episode_id(alert_key("agent", "a2", "aht_seconds", "15m"), T0)


def test_new_episode_after_resolution_gets_a_new_id() -> None:
    first = fired(AHT, 400.0)
    assert step(AHT, 300.0, first) is not None
    second = fired(AHT, 400.0, now_ms=T0 + 60_000)
    assert second.id != first.id


def test_floor_alert_message_has_no_subject_field() -> None:
    alert = evaluate(AHT, scope="floor", subject=None, value=400.0, samples=5, current=None, now_ms=T0, hysteresis=H)
    msg = alert.to_message()  # type: ignore[union-attr]
    assert "agent_id" not in msg and "team" not in msg
    assert (msg["scope"], msg["ts"], msg["value"], msg["threshold"]) == ("floor", "2024-01-01T00:00:00.000+00:00",
                                                                          400.0, 360.0)  # fmt: skip


def test_agent_alert_message_names_the_agent() -> None:
    msg = fired(AHT, 400.0).to_message()
    assert (msg["type"], msg["agent_id"], msg["status"], msg["severity"]) == ("alert", "a1", "firing", "warning")


def test_alert_survives_its_state_round_trip() -> None:
    alert = fired(AHT, 400.0)
    assert Alert.from_state(alert.to_state()) == alert
