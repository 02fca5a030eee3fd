"""Threshold alerts: the pure episode logic (fire, escalate, de-escalate, resolve with hysteresis).

An episode starts when a value crosses a rule's warning (or critical) threshold with at least
`min_samples` behind it, keeps one id while it escalates or de-escalates, and resolves when the
value is back across the warning threshold by the hysteresis margin, or the samples run out.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from callpulse.settings import Rule


@dataclass(frozen=True)
class Alert:
    """One alert as published on the `alerts` topic and the websocket feed."""

    id: str
    status: str  # firing | resolved
    kpi: str
    scope: str  # agent | team | floor | queue | campaign
    subject: str | None  # agent_id, team, queue or campaign; None for the floor
    window: str
    value: float | None
    threshold: float
    severity: str  # warning | critical
    ts_ms: int
    since_ms: int

    @property
    def key(self) -> str:
        """The slot this alert occupies: one live episode per scope, subject, KPI and window."""
        return alert_key(self.scope, self.subject, self.kpi, self.window)

    def to_message(self) -> dict[str, Any]:
        """The contract's alert object."""
        msg: dict[str, Any] = {
            "type": "alert",
            "id": self.id,
            "status": self.status,
            "kpi": self.kpi,
            "scope": self.scope,
            "window": self.window,
            "value": self.value,
            "threshold": self.threshold,
            "severity": self.severity,
            "ts": iso(self.ts_ms),
            "since": iso(self.since_ms),
        }
        if self.scope == "agent":
            msg["agent_id"] = self.subject
        elif self.scope == "team":
            msg["team"] = self.subject
        elif self.scope == "queue":
            msg["queue"] = self.subject
        elif self.scope == "campaign":
            msg["campaign"] = self.subject
        return msg

    def to_state(self) -> dict[str, Any]:
        """A dict for the store."""
        return asdict(self)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Alert:
        """Rebuild from `to_state`."""
        return cls(**data)


@functools.lru_cache(maxsize=65536)  # a snapshot formats every agent's state_since: mostly the same times again
def iso(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def alert_key(scope: str, subject: str | None, kpi: str, window: str) -> str:
    """Slot key of an alert."""
    return f"{scope}|{subject or ''}|{kpi}|{window}"


def level(rule: Rule, value: float) -> tuple[str, float] | None:
    """The severity a value is at under a rule, with the threshold it crossed; None when fine."""
    if rule.direction == "above":
        if rule.critical_above is not None and value > rule.critical_above:
            return "critical", float(rule.critical_above)
        if rule.warning_above is not None and value > rule.warning_above:
            return "warning", float(rule.warning_above)
        return None
    if rule.critical_below is not None and value < rule.critical_below:
        return "critical", float(rule.critical_below)
    if rule.warning_below is not None and value < rule.warning_below:
        return "warning", float(rule.warning_below)
    return None


def _back_across(rule: Rule, value: float, threshold: float, hysteresis: float) -> bool:
    """Whether value is back on the good side of threshold by the hysteresis margin."""
    if rule.direction == "above":
        return value < threshold * (1 - hysteresis)
    return value > threshold * (1 + hysteresis)


def _lowest_threshold(rule: Rule) -> float:
    if rule.direction == "above":
        t = rule.warning_above if rule.warning_above is not None else rule.critical_above
    else:
        t = rule.warning_below if rule.warning_below is not None else rule.critical_below
    assert t is not None
    return float(t)


def episode_id(key: str, since_ms: int) -> str:
    """A stable id for an episode: the same whichever worker opens it."""
    return hashlib.sha1(f"{key}|{since_ms}".encode()).hexdigest()[:16]


def evaluate(
    rule: Rule,
    *,
    scope: str,
    subject: str | None,
    value: float | None,
    samples: int,
    current: Alert | None,
    now_ms: int,
    hysteresis: float,
) -> Alert | None:
    """The next state of one alert slot, or None when nothing changes.

    Returns a firing Alert (new episode, escalation or de-escalation) or a resolved one.
    """
    enough = value is not None and samples >= rule.min_samples
    if current is None:
        if not enough:
            return None
        assert value is not None
        hit = level(rule, value)
        if hit is None:
            return None
        severity, threshold = hit
        key = alert_key(scope, subject, rule.kpi, rule.window)
        return Alert(
            episode_id(key, now_ms), "firing", rule.kpi, scope, subject, rule.window, value, threshold, severity,
            now_ms, now_ms,
        )  # fmt: skip
    if not enough:
        return replace(current, status="resolved", value=value, ts_ms=now_ms)
    assert value is not None
    if _back_across(rule, value, _lowest_threshold(rule), hysteresis):
        return replace(current, status="resolved", value=value, ts_ms=now_ms)
    hit = level(rule, value)
    if hit is not None and hit[0] == "critical" and current.severity != "critical":
        return replace(current, severity="critical", threshold=hit[1], value=value, ts_ms=now_ms)
    if current.severity == "critical":
        crit = rule.critical_above if rule.direction == "above" else rule.critical_below
        if crit is not None and _back_across(rule, value, float(crit), hysteresis):
            warn = _lowest_threshold(rule)
            return replace(current, severity="warning", threshold=warn, value=value, ts_ms=now_ms)
    return None
