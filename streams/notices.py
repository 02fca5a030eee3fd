"""What a webhook receives: which alert transitions match it, and the body in its format (pure, no I/O).

A transition is one alert message as the engine publishes it (`Alert.to_message()`): fired, escalated,
de-escalated or resolved. `streams/notify.py` delivers the bodies built here.
"""

from __future__ import annotations

from typing import Any

from callpulse.catalogue import BY_KEY
from callpulse.settings import SEVERITIES, Webhook

# Chat colours: Slack takes hex, an Adaptive Card a named style.
_SLACK_COLOURS = {"critical": "#d62728", "warning": "#ff9f1a", "resolved": "#2ca02c"}
_CARD_COLOURS = {"critical": "Attention", "warning": "Warning", "resolved": "Good"}


def transition(message: dict[str, Any]) -> str:
    """Name the transition an alert message is: fired, escalated, de-escalated or resolved."""
    if message.get("status") == "resolved":
        return "resolved"
    if message.get("since") is None or message.get("ts") == message.get("since"):
        return "fired"
    return "escalated" if message.get("severity") == "critical" else "de-escalated"


def severity_rank(severity: str) -> int:
    """0 for warning, 1 for critical; an unknown severity ranks highest, so it is never filtered out."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def in_teams(hook: Webhook, message: dict[str, Any], team: str | None) -> bool:
    """Whether the hook's `teams` filter lets this alert through; `team` is an agent alert's team, if known."""
    if hook.teams is None:
        return True
    if message.get("scope") == "team":
        return message.get("team") in hook.teams
    if message.get("scope") == "agent":
        return team in hook.teams
    return False  # floor, queue and campaign alerts belong to no one team


def wants(hook: Webhook, message: dict[str, Any], *, team: str | None, heard_of_episode: bool) -> bool:
    """Whether `hook` gets this transition.

    A hook hears every later transition of an episode it was told about (so a critical-only channel hears the
    de-escalation and the resolve of what it saw escalate); otherwise it gets a firing transition at or above
    its `min_severity`, and never a resolve of an episode it did not see.
    """
    if not in_teams(hook, message, team):
        return False
    if heard_of_episode:
        return True
    if message.get("status") != "firing":
        return False
    return severity_rank(str(message.get("severity"))) >= severity_rank(hook.min_severity)


def _human(kpi: str, value: float | None) -> str:
    if value is None:
        return "no data"
    entry = BY_KEY.get(kpi)
    unit = entry.unit if entry is not None else "count"
    if unit == "seconds":
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "money":
        return f"{value:,.2f}"
    return f"{value:g}"


def subject(message: dict[str, Any], team: str | None) -> str:
    """Who the alert is about, for a person: 'agent a7 (team north)', 'team north', 'the floor'."""
    scope = message.get("scope")
    if scope == "agent":
        who = f"agent {message.get('agent_id')}"
        return f"{who} (team {team})" if team else who
    if scope == "floor":
        return "the floor"
    name = message.get(scope) if isinstance(scope, str) else None
    return f"{scope} {name}" if name is not None else str(scope)


def headline(message: dict[str, Any], team: str | None) -> str:
    """One line: 'CRITICAL fired: AHT over 15m for agent a7 (team north) is 8m 20s (threshold 8m 00s)'."""
    kpi = str(message.get("kpi"))
    entry = BY_KEY.get(kpi)
    title = entry.title if entry is not None and entry.title else kpi
    kind = transition(message)
    label = "RESOLVED" if kind == "resolved" else f"{str(message.get('severity')).upper()} {kind}"
    value = _human(kpi, message.get("value"))
    threshold = _human(kpi, message.get("threshold"))
    who = subject(message, team)
    return f"{label}: {title} over {message.get('window')} for {who} is {value} (threshold {threshold})"


def _colour_key(message: dict[str, Any]) -> str:
    return "resolved" if message.get("status") == "resolved" else str(message.get("severity"))


def slack_body(message: dict[str, Any], team: str | None) -> dict[str, Any]:
    """A Slack incoming-webhook body: the headline as text (notifications) and a coloured attachment."""
    text = headline(message, team)
    return {
        "text": text,
        "attachments": [
            {
                "color": _SLACK_COLOURS.get(_colour_key(message), "#888888"),
                "fallback": text,
                "fields": [
                    {"title": "Since", "value": str(message.get("since", message.get("ts"))), "short": True},
                    {"title": "Alert id", "value": str(message.get("id")), "short": True},
                ],
            }
        ],
    }


def teams_body(message: dict[str, Any], team: str | None) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook (Workflows) body: one Adaptive Card with the headline and the facts."""
    facts = [
        {"title": "Value", "value": _human(str(message.get("kpi")), message.get("value"))},
        {"title": "Threshold", "value": _human(str(message.get("kpi")), message.get("threshold"))},
        {"title": "Window", "value": str(message.get("window"))},
        {"title": "Since", "value": str(message.get("since", message.get("ts")))},
        {"title": "Alert id", "value": str(message.get("id"))},
    ]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": headline(message, team),
                "wrap": True,
                "weight": "Bolder",
                "color": _CARD_COLOURS.get(_colour_key(message), "Default"),
            },
            {"type": "FactSet", "facts": facts},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def body(hook: Webhook, message: dict[str, Any], team: str | None) -> dict[str, Any]:
    """The JSON body POSTed to `hook`: the alert object itself (json), or the chat service's shape."""
    if hook.format == "slack":
        return slack_body(message, team)
    if hook.format == "teams":
        return teams_body(message, team)
    return message
