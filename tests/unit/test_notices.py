"""Unit tests of the webhook side: [[notify.webhook]] settings, which transitions match a hook, the body shapes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from callpulse.exceptions import SettingsError
from callpulse.settings import Settings, Webhook, load_thresholds
from streams import notices

HOOK = "https://hooks.example.com/services/T000/B000/XXXSECRET"


def alert(**fields: Any) -> dict[str, Any]:
    """An alert message as the engine publishes it: agent a7's AHT firing critical, unless overridden."""
    message = {
        "type": "alert",
        "id": "e1",
        "status": "firing",
        "kpi": "aht_seconds",
        "scope": "agent",
        "agent_id": "a7",
        "window": "15m",
        "value": 500.0,
        "threshold": 480.0,
        "severity": "critical",
        "ts": "2026-11-30T10:00:00.000+00:00",
        "since": "2026-11-30T10:00:00.000+00:00",
    }
    message.update(fields)
    return message


def notify_error(toml: str) -> str:
    with pytest.raises(SettingsError) as info:
        load_thresholds(toml, source="t.toml")
    return str(info.value)


def test_webhooks_parse_with_defaults() -> None:
    got = load_thresholds(f'[[notify.webhook]]\nurl = "{HOOK}"\n\n[[notify.webhook]]\nurl = "http://h:9/x"\n'
                          'format = "teams"\nmin_severity = "critical"\nteams = ["north", "south"]\n')  # fmt: skip
    assert got["webhooks"] == (
        Webhook(HOOK),
        Webhook("http://h:9/x", format="teams", min_severity="critical", teams=("north", "south")),
    )
    assert Webhook(HOOK).format == "json" and Webhook(HOOK).min_severity == "warning" and Webhook(HOOK).teams is None


def test_notify_tuning_parses() -> None:
    got = load_thresholds('[notify]\ntimeout = "10s"\nmax_attempts = 4\nmax_backoff = "2m"\n')
    assert (got["notify_timeout_s"], got["notify_max_attempts"], got["notify_backoff_max_s"]) == (10.0, 4, 120.0)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[notify.webhook]]\nformat = "json"\n', "notify.webhook[0].url is missing"),
        ('[[notify.webhook]]\nurl = "ftp://h/secret"\n', "notify.webhook[0].url is ftp://h/…, must be an http://"),
        ('[[notify.webhook]]\nurl = "http://h/x"\nformat = "discord"\n', "notify.webhook[0].format is 'discord'"),
        ('[[notify.webhook]]\nurl = "http://h/x"\nmin_severity = "info"\n', "min_severity is 'info', must be one"),
        ('[[notify.webhook]]\nurl = "http://h/x"\nteams = "north"\n', "teams is 'north', must be a non-empty list"),
        ('[[notify.webhook]]\nurl = "http://h/x"\nchannel = "#floor"\n', "notify.webhook[0].channel: unknown key"),
        ('[notify]\nwebhook = "http://h/x"\n', "write [[notify.webhook]]"),
        ("[notify]\nmax_attempts = 0\n", "notify.max_attempts is 0, must be an integer from 1 to 100"),
        ("[notify]\nretries = 3\n", "notify.retries: unknown key"),
        ('[notify]\ntimeout = "soon"\n', "notify.timeout is 'soon'"),
    ],
)
def test_bad_notify_settings_name_the_setting(toml: str, message: str) -> None:
    assert message in notify_error(toml)


def test_a_webhook_url_path_stays_out_of_errors_and_repr() -> None:
    assert "SECRET" not in notify_error('[[notify.webhook]]\nurl = "hxxp://hooks.example.com/T0/SECRET"\n')
    hook = Webhook(HOOK)
    assert hook.host == "hooks.example.com"
    assert Webhook("http://user:pw@10.0.0.5:8080/p/SECRET").host == "10.0.0.5:8080"
    settings = Settings(webhooks=(hook,))
    assert "SECRET" not in repr(settings) and "SECRET" not in repr(hook)


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({}, "fired"),
        ({"ts": "2026-11-30T10:05:00.000+00:00"}, "escalated"),
        ({"ts": "2026-11-30T10:05:00.000+00:00", "severity": "warning"}, "de-escalated"),
        ({"status": "resolved", "ts": "2026-11-30T10:05:00.000+00:00"}, "resolved"),
    ],
)
def test_transition_names(fields: dict[str, Any], kind: str) -> None:
    assert notices.transition(alert(**fields)) == kind


def test_min_severity_lets_through_firing_at_or_above_it() -> None:
    critical_only = Webhook(HOOK, min_severity="critical")
    assert notices.wants(critical_only, alert(), team=None, heard_of_episode=False)
    assert not notices.wants(critical_only, alert(severity="warning"), team=None, heard_of_episode=False)
    assert notices.wants(Webhook(HOOK), alert(severity="warning"), team=None, heard_of_episode=False)


def test_a_hook_hears_the_rest_of_an_episode_it_was_told_of() -> None:
    critical_only = Webhook(HOOK, min_severity="critical")
    de_escalated = alert(severity="warning", ts="2026-11-30T10:05:00.000+00:00")
    resolved = alert(status="resolved", severity="warning")
    assert notices.wants(critical_only, de_escalated, team=None, heard_of_episode=True)
    assert notices.wants(critical_only, resolved, team=None, heard_of_episode=True)
    assert not notices.wants(critical_only, resolved, team=None, heard_of_episode=False), "a resolve of nothing heard"


def test_teams_filter_takes_team_alerts_and_the_teams_agents_only() -> None:
    north = Webhook(HOOK, teams=("north",))
    assert notices.wants(north, alert(), team="north", heard_of_episode=True)
    assert not notices.wants(north, alert(), team="south", heard_of_episode=True)
    assert not notices.wants(north, alert(), team=None, heard_of_episode=True)
    team_alert = alert(scope="team", team="north")
    del team_alert["agent_id"]
    assert notices.wants(north, team_alert, team="north", heard_of_episode=True)
    assert not notices.wants(north, alert(scope="floor"), team=None, heard_of_episode=True)


def test_json_body_is_the_alert_object() -> None:
    message = alert()
    assert notices.body(Webhook(HOOK), message, "north") == message


def test_slack_body() -> None:
    body = notices.body(Webhook(HOOK, format="slack"), alert(), "north")
    assert body["text"] == "CRITICAL fired: AHT over 15m for agent a7 (team north) is 8m 20s (threshold 8m 00s)"
    assert body["attachments"][0]["color"] == "#d62728"
    resolved = notices.body(Webhook(HOOK, format="slack"), alert(status="resolved", value=None), None)
    assert resolved["text"] == "RESOLVED: AHT over 15m for agent a7 is no data (threshold 8m 00s)"
    assert resolved["attachments"][0]["color"] == "#2ca02c"


def test_teams_body_is_an_adaptive_card() -> None:
    rate = alert(kpi="connect_rate", scope="floor", value=0.2, threshold=0.25, severity="critical")
    body = notices.body(Webhook(HOOK, format="teams"), rate, None)
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][0]["text"] == "CRITICAL fired: Connect rate over 15m for the floor is 20.0% (threshold 25.0%)"
    assert card["body"][0]["color"] == "Attention"
    assert {"title": "Value", "value": "20.0%"} in card["body"][1]["facts"]


def test_the_example_thresholds_notify_block_loads_when_uncommented() -> None:
    text = (Path(__file__).resolve().parents[2] / "callpulse" / "thresholds.example.toml").read_text(encoding="utf-8")
    lines = text.split("# Notifications", 1)[1].splitlines()
    block = "\n".join(line[2:] for line in lines if line.startswith("# [") or re.match(r"# [a-z_]+ = ", line))
    got = load_thresholds(block)
    assert got["webhooks"] == (
        Webhook("https://hooks.slack.com/services/T000/B000/XXXX", "slack", "critical", ("north",)),
    )
    assert (got["notify_timeout_s"], got["notify_max_attempts"], got["notify_backoff_max_s"]) == (5.0, 6, 30.0)
