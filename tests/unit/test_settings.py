"""Unit tests of settings: env defaults, flags over env, the thresholds TOML, and errors that name key and rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callpulse.exceptions import SettingsError
from callpulse.settings import (
    DEFAULT_RULES,
    KPI_KEYS,
    Rule,
    Settings,
    format_duration,
    from_env,
    load_thresholds,
    parse_duration,
)
from streams.windows import TODAY

EXAMPLE = """
[windows]
rolling = ["5m", "1h", "8h"]
repeat_window = "12h"

[alerts]
hysteresis = 0.1

[kpi.aht_seconds]
warning_above = 300
critical_above = 420
min_samples = 4
window = "5m"

[kpi.connect_rate]
warning_below = 0.4
critical_below = 0.3
min_samples = 10

[team.sales.kpi.aht_seconds]
warning_above = 250

[team.support.kpi.csat]
warning_below = 0.9
critical_below = 0.7
window = "1h"
"""


def error(text: str) -> str:
    """The SettingsError message loading `text` as the thresholds TOML gives."""
    with pytest.raises(SettingsError) as info:
        load_thresholds(text, source="t.toml")
    return str(info.value)


def env_error(env: dict[str, str], **flags: object) -> str:
    with pytest.raises(SettingsError) as info:
        from_env(env, **flags)
    return str(info.value)


def test_env_defaults() -> None:
    s = from_env({})
    assert (s.kafka, s.redis_url, s.http_host, s.http_port, s.config_path, s.token, s.topic_prefix) == (
        "localhost:9092",
        "redis://localhost:6379/0",
        "127.0.0.1",
        8700,
        None,
        None,
        "",
    )
    assert (s.windows_s, s.repeat_window_s, s.hysteresis) == ((900, 3600, 28800, TODAY), 86400, 0.05)
    assert s.rules == DEFAULT_RULES


def test_env_variables_are_read() -> None:
    s = from_env(
        {
            "CALLPULSE_KAFKA": "k1:9092,k2:9093",
            "CALLPULSE_REDIS": "redis://r:6380/2",
            "CALLPULSE_HTTP": "0.0.0.0:9000",
            "CALLPULSE_TOKEN": "sekrit",
            "CALLPULSE_TOPIC_PREFIX": "dev-",
        }
    )
    assert (s.kafka, s.redis_url, s.http_host, s.http_port, s.token, s.topic_prefix) == (
        "k1:9092,k2:9093",
        "redis://r:6380/2",
        "0.0.0.0",
        9000,
        "sekrit",
        "dev-",
    )
    assert s.topic("calls") == "dev-calls"


def test_flags_override_env() -> None:
    env = {"CALLPULSE_KAFKA": "envk:1", "CALLPULSE_HTTP": "127.0.0.1:1", "CALLPULSE_TOPIC_PREFIX": "env-"}
    s = from_env(env, kafka="flagk:2", http="[::1]:8800", topic_prefix="flag-", redis=None)
    assert (s.kafka, s.http_host, s.http_port, s.topic_prefix, s.redis_url) == (
        "flagk:2",
        "::1",
        8800,
        "flag-",
        "redis://localhost:6379/0",
    )


def test_extra_flags_set_settings_fields() -> None:
    assert from_env({}, batch_max=10, windows_s=None).batch_max == 10


def test_toml_windows_and_thresholds_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    s = from_env({"CALLPULSE_CONFIG": str(path)})
    assert (s.config_path, s.windows_s, s.window_names, s.repeat_window_s, s.hysteresis) == (
        str(path),
        (300, 3600, 28800, TODAY),
        ("5m", "1h", "8h", "today"),
        43200,
        0.1,
    )
    assert s.rules["aht_seconds"] == Rule("aht_seconds", warning_above=300, critical_above=420, min_samples=4,
                                          window="5m")  # fmt: skip
    assert s.rules["connect_rate"] == Rule("connect_rate", warning_below=0.4, critical_below=0.3, min_samples=10,
                                           window="5m")  # fmt: skip


def test_config_flag_overrides_env(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[windows]\nrepeat_window = "2h"\n', encoding="utf-8")
    assert from_env({"CALLPULSE_CONFIG": "/nonexistent.toml"}, config=str(path)).repeat_window_s == 7200


def test_default_rule_windows_missing_from_the_rolling_list_fall_back_to_the_shortest() -> None:
    rules = load_thresholds(EXAMPLE)["rules"]
    assert rules["fcr"] == Rule("fcr", warning_below=0.80, min_samples=5, window="1h")
    assert rules["aht_seconds"].window == "5m"
    assert load_thresholds('[windows]\nrolling = ["30m", "2h"]\n')["rules"]["fcr"].window == "30m"


def test_team_override_inherits_unset_fields_from_the_floor_rule() -> None:
    s = Settings(**load_thresholds(EXAMPLE))
    assert s.rule_for("aht_seconds", "sales") == Rule("aht_seconds", warning_above=250, critical_above=420,
                                                      min_samples=4, window="5m")  # fmt: skip
    assert s.rule_for("aht_seconds", "support") == s.rules["aht_seconds"]
    assert s.rule_for("aht_seconds", None) == s.rules["aht_seconds"]


def test_team_override_of_another_kpi_is_parsed() -> None:
    s = Settings(**load_thresholds(EXAMPLE))
    assert s.rule_for("csat", "support") == Rule("csat", warning_below=0.9, critical_below=0.7, min_samples=5,
                                                 window="1h")  # fmt: skip


def test_rule_override_in_the_other_direction_drops_the_default_thresholds() -> None:
    rules = load_thresholds("[kpi.aht_seconds]\nwarning_below = 60\n")["rules"]
    assert rules["aht_seconds"] == Rule("aht_seconds", warning_below=60)


def test_unknown_kpi_names_the_allowed_ones() -> None:
    assert error("[kpi.handle_time]\nwarning_above = 1\n") == (
        f"kpi: unknown KPI 'handle_time', must be one of {', '.join(KPI_KEYS)}"
    )
    assert KPI_KEYS[:3] == ("aht_seconds", "connect_rate", "fcr")


def test_unknown_kpi_in_a_team_override_names_the_team() -> None:
    assert error("[team.red.kpi.handle_time]\nwarning_above = 1\n").startswith(
        "team.red.kpi: unknown KPI 'handle_time', must be one of aht_seconds"
    )


def test_unknown_rule_key_names_the_allowed_ones() -> None:
    assert error("[kpi.aht_seconds]\nwarn_above = 1\n") == (
        "kpi.aht_seconds.warn_above: unknown key, must be one of warning_above, critical_above, warning_below, "
        "critical_below, min_samples, window"
    )


def test_rule_window_not_configured_names_the_windows() -> None:
    assert error('[kpi.aht_seconds]\nwindow = "30m"\n') == (
        "kpi.aht_seconds.window is '30m', must be one of the windows ['15m', '1h', '8h', 'today']"
    )


def test_rule_window_checked_against_a_configured_rolling_list() -> None:
    assert error('[windows]\nrolling = ["5m"]\n[kpi.aht_seconds]\nwindow = "15m"\n') == (
        "kpi.aht_seconds.window is '15m', must be one of the windows ['5m', 'today']"
    )


def test_non_number_threshold_is_rejected() -> None:
    assert error('[kpi.aht_seconds]\nwarning_above = "high"\n') == (
        "kpi.aht_seconds.warning_above is 'high', must be a number"
    )


def test_boolean_threshold_is_rejected() -> None:
    assert error("[kpi.aht_seconds]\ncritical_above = true\n") == (
        "kpi.aht_seconds.critical_above is True, must be a number"
    )


def test_min_samples_must_be_a_positive_integer() -> None:
    assert error("[kpi.aht_seconds]\nmin_samples = 0\n") == "kpi.aht_seconds.min_samples is 0, must be an integer >= 1"
    assert error("[kpi.aht_seconds]\nmin_samples = 2.5\n") == (
        "kpi.aht_seconds.min_samples is 2.5, must be an integer >= 1"
    )


def test_both_above_and_below_thresholds_are_rejected() -> None:
    assert error("[kpi.aht_seconds]\nwarning_above = 300\nwarning_below = 60\n") == (
        "kpi.aht_seconds: set either *_above or *_below thresholds, not both"
    )


def test_rule_without_thresholds_is_rejected() -> None:
    assert error("[kpi.calls_handled]\nmin_samples = 3\n") == (
        "kpi.calls_handled: needs warning_above/critical_above or warning_below/critical_below"
    )


def test_critical_must_be_beyond_warning() -> None:
    assert error("[kpi.aht_seconds]\nwarning_above = 500\ncritical_above = 400\n") == (
        "kpi.aht_seconds: critical_above must be >= warning_above"
    )
    assert error("[kpi.connect_rate]\nwarning_below = 0.2\ncritical_below = 0.3\n") == (
        "kpi.connect_rate: critical_below must be <= warning_below"
    )


def test_bad_repeat_window_duration_names_the_key_and_the_format() -> None:
    assert error('[windows]\nrepeat_window = "24 hours"\n') == (
        "windows.repeat_window is '24 hours', must be a positive duration such as '15m', '1h' or '24h'"
    )


def test_bad_rolling_duration_names_the_key() -> None:
    assert error('[windows]\nrolling = ["15m", "soon"]\n') == (
        "windows.rolling is 'soon', must be a positive duration such as '15m', '1h' or '24h'"
    )


def test_rolling_window_must_be_a_multiple_of_ten_seconds() -> None:
    assert error('[windows]\nrolling = ["15s"]\n') == "windows.rolling: 15s must be a multiple of 10 s"


def test_empty_rolling_list_is_rejected() -> None:
    assert error("[windows]\nrolling = []\n") == (
        "t.toml: windows.rolling must be a non-empty list such as ['15m', '1h', '8h']"
    )


def test_unknown_section_names_the_allowed_ones() -> None:
    assert error("[kpis.aht_seconds]\nwarning_above = 1\n") == (
        "t.toml: unknown section [kpis], must be one of ['alerts', 'campaign_kpi', 'kpi', 'notify', 'queue', "
        "'queue_kpi', 'queues', 'scorecard', 'team', 'windows']"
    )


def test_bad_hysteresis_names_the_allowed_range() -> None:
    assert error("[alerts]\nhysteresis = 1.5\n") == "alerts.hysteresis is 1.5, must be a fraction in [0, 1), e.g. 0.05"


def test_invalid_toml_names_the_source() -> None:
    assert error("[kpi.aht_seconds\n").startswith("t.toml: not valid TOML (")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("8h", 28800), ("2d", 172800)])
def test_durations_parse_to_seconds_and_format_back(text: str, seconds: int) -> None:
    assert parse_duration(text, name="w") == seconds
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["0m", "15", "m", "1.5h", "15 minutes", "-5m"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(SettingsError, match=r"^w is .*, must be a positive duration such as '15m', '1h' or '24h'$"):
        parse_duration(text, name="w")


@pytest.mark.parametrize("http", ["localhost", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_bad_http_address_names_the_variable_and_the_format(http: str) -> None:
    assert env_error({"CALLPULSE_HTTP": http}) == (
        f"CALLPULSE_HTTP is {http!r}, must be host:port such as 127.0.0.1:8700"
    )


def test_http_flag_is_checked_like_the_variable() -> None:
    assert env_error({}, http="nowhere") == "CALLPULSE_HTTP is 'nowhere', must be host:port such as 127.0.0.1:8700"


@pytest.mark.parametrize("kafka", ["localhost", "k1:9092,", "", "k1:9092,,k2:9092"])
def test_bad_kafka_bootstrap_names_the_variable_and_the_format(kafka: str) -> None:
    assert env_error({"CALLPULSE_KAFKA": kafka}) == (
        f"CALLPULSE_KAFKA is {kafka!r}, must be comma-separated host:port bootstrap servers"
    )


def test_bad_redis_url_names_the_variable_and_the_format() -> None:
    assert env_error({"CALLPULSE_REDIS": "localhost:6379"}) == (
        "CALLPULSE_REDIS is 'localhost:6379', must be a redis:// URL such as redis://localhost:6379/0"
    )


def test_bad_topic_prefix_names_the_allowed_characters() -> None:
    assert env_error({"CALLPULSE_TOPIC_PREFIX": "a b"}) == (
        "CALLPULSE_TOPIC_PREFIX is 'a b', may only hold letters, digits, '.', '_' and '-'"
    )


def test_unreadable_config_names_the_variable_and_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert env_error({"CALLPULSE_CONFIG": str(missing)}) == (
        f"CALLPULSE_CONFIG is {str(missing)!r}, which cannot be read (No such file or directory)"
    )


def test_config_that_is_a_directory_cannot_be_read(tmp_path: Path) -> None:
    assert env_error({"CALLPULSE_CONFIG": str(tmp_path)}).startswith(
        f"CALLPULSE_CONFIG is {str(tmp_path)!r}, which cannot be read ("
    )


def test_bad_value_in_the_config_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[oops]\n", encoding="utf-8")
    assert env_error({"CALLPULSE_CONFIG": str(path)}).startswith(f"{path}: unknown section [oops]")


def test_window_by_name_names_the_configured_windows() -> None:
    s = Settings()
    assert s.window_s("1h") == 3600
    with pytest.raises(SettingsError, match=r"^window is '2h', must be one of 15m, 1h, 8h, today$"):
        s.window_s("2h")


def test_team_override_in_the_floor_rules_direction_inherits_from_the_floor_rule() -> None:
    text = "[kpi.aht_seconds]\nwarning_below = 100\nmin_samples = 7\n[team.x.kpi.aht_seconds]\nwarning_below = 50\n"
    s = Settings(**load_thresholds(text))
    assert s.rule_for("aht_seconds", "x") == Rule("aht_seconds", warning_below=50, min_samples=7)


def test_team_override_against_a_reversed_floor_rule_drops_the_floor_thresholds() -> None:
    text = "[kpi.aht_seconds]\nwarning_below = 100\n[team.x.kpi.aht_seconds]\nwarning_above = 300\n"
    s = Settings(**load_thresholds(text))
    assert s.rule_for("aht_seconds", "x") == Rule("aht_seconds", warning_above=300)


def test_kafka_security_defaults_to_plaintext() -> None:
    settings = from_env({})
    assert (settings.kafka_security, settings.kafka_sasl_mechanism) == ("PLAINTEXT", "PLAIN")
    assert settings.kafka_username is settings.kafka_password is settings.kafka_ca is settings.redis_ca is None


def test_sasl_settings_are_read_from_env(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    settings = from_env(
        {
            "CALLPULSE_KAFKA_SECURITY": "sasl_ssl",
            "CALLPULSE_KAFKA_SASL_MECHANISM": "scram-sha-512",
            "CALLPULSE_KAFKA_USERNAME": "alice",
            "CALLPULSE_KAFKA_PASSWORD": "pw-secret-1",
            "CALLPULSE_KAFKA_CA": str(ca),
            "CALLPULSE_REDIS": "rediss://redis.example:6380/0",
            "CALLPULSE_REDIS_CA": str(ca),
        }
    )
    assert (settings.kafka_security, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (settings.kafka_username, settings.kafka_password) == ("alice", "pw-secret-1")
    assert settings.kafka_ca == settings.redis_ca == str(ca)


def test_the_kafka_password_stays_out_of_the_settings_repr() -> None:
    settings = from_env(
        {
            "CALLPULSE_KAFKA_SECURITY": "SASL_PLAINTEXT",
            "CALLPULSE_KAFKA_USERNAME": "a",
            "CALLPULSE_KAFKA_PASSWORD": "x9",
        }
    )
    assert "x9" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALLPULSE_KAFKA_SECURITY": "TLS"}, "CALLPULSE_KAFKA_SECURITY is 'TLS', must be one of PLAINTEXT, SSL"),
        ({"CALLPULSE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CALLPULSE_KAFKA_SASL_MECHANISM is 'GSSAPI', must be one of"),
        (
            {"CALLPULSE_KAFKA_SECURITY": "SASL_SSL", "CALLPULSE_KAFKA_PASSWORD": "p"},
            "CALLPULSE_KAFKA_USERNAME is unset",
        ),
        (
            {"CALLPULSE_KAFKA_SECURITY": "SASL_SSL", "CALLPULSE_KAFKA_USERNAME": "u"},
            "CALLPULSE_KAFKA_PASSWORD is unset",
        ),
        ({"CALLPULSE_KAFKA_CA": "/nonexistent/ca.pem"}, "CALLPULSE_KAFKA_CA is '/nonexistent/ca.pem', which is not"),
        ({"CALLPULSE_REDIS_CA": "/nonexistent/ca.pem"}, "CALLPULSE_REDIS_CA is '/nonexistent/ca.pem', which is not"),
    ],
)
def test_bad_security_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        from_env(env)


def test_redis_ca_needs_a_rediss_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x", encoding="utf-8")
    with pytest.raises(SettingsError, match="CALLPULSE_REDIS is not a rediss:// URL"):
        from_env({"CALLPULSE_REDIS_CA": str(ca)})


def test_security_flags_override_env() -> None:
    settings = from_env({"CALLPULSE_KAFKA_SECURITY": "SSL"}, kafka_security="PLAINTEXT")
    assert settings.kafka_security == "PLAINTEXT"


def test_today_is_on_by_default_in_utc_and_keeps_state_for_a_long_day() -> None:
    s = Settings()
    assert (s.window_names, s.timezone, s.longest_window_s) == (("15m", "1h", "8h", "today"), "UTC", 25 * 3600)
    assert s.window_s("today") == TODAY


def test_calendar_off_keeps_the_rolling_windows_only() -> None:
    s = Settings(**load_thresholds("[windows]\ncalendar = []\n"))
    assert (s.window_names, s.longest_window_s) == (("15m", "1h", "8h"), 28800)


def test_timezone_is_read_from_the_windows_table() -> None:
    s = Settings(**load_thresholds('[windows]\ntimezone = "Europe/London"\n'))
    assert (s.timezone, str(s.tz)) == ("Europe/London", "Europe/London")


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe/../etc/passwd", "", 3])
def test_bad_timezone_stops_start_up_naming_the_setting(name: object) -> None:
    text = f"[windows]\ntimezone = {name!r}\n".replace("'", '"')
    with pytest.raises(SettingsError, match=r"^windows\.timezone is "):
        load_thresholds(text)


def test_unknown_calendar_window_is_refused() -> None:
    assert error('[windows]\ncalendar = ["this_week"]\n') == (
        "t.toml: windows.calendar is ['this_week'], must be ['today'] or [] (off)"
    )


def test_a_rule_may_watch_today() -> None:
    rules = load_thresholds('[kpi.dials]\nwarning_below = 80\nwindow = "today"\n')["rules"]
    assert rules["dials"] == Rule("dials", warning_below=80, window="today")


def test_team_metrics_windows_default_to_the_two_shortest() -> None:
    assert Settings().team_metrics_s == (900, 3600)
    assert Settings(**load_thresholds('[windows]\nrolling = ["5m"]\n')).team_metrics_s == (300, TODAY)


def test_team_metrics_windows_are_kept_in_the_windows_order() -> None:
    config = load_thresholds('[windows]\nteam_metrics = ["today", "15m"]\n')
    assert Settings(**config).team_metrics_s == (900, TODAY)


def test_team_metrics_window_not_configured_names_the_windows() -> None:
    assert error('[windows]\nteam_metrics = ["30m"]\n') == (
        "windows.team_metrics is ['30m'], must be a non-empty list of configured windows (15m, 1h, 8h, today), "
        "e.g. ['15m', '1h']"
    )
