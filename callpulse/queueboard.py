"""The queue dashboard for the floor TV and the Prometheus rules of queue and campaign KPIs.

Generated with the other dashboards by `callpulse grafana` (callpulse/provisioning.py, callpulse/grafana.py)
from the same settings and the catalogue's queue declarations: waiting calls, longest wait, service level
against its target line, ASA, abandons, agents by state, and outbound abandonment per campaign against the 3 %
line.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common

from callpulse import catalogue, promql
from callpulse import grafana as g
from callpulse.promql import Matcher
from callpulse.settings import LIVE_QUEUE_KPIS, Rule, Settings

QUEUE_METRIC = "callpulse_queue_kpi"
CAMPAIGN_METRIC = "callpulse_campaign_kpi"
LIVE_METRICS = {"waiting": "callpulse_queue_waiting", "longest_wait_seconds": "callpulse_queue_longest_wait_seconds"}
_UNITS = {"seconds": ("s", 0), "ratio": ("percentunit", 1), "count": ("none", 0)}


def _look(kpi: str) -> tuple[str, str, int]:
    """(title, Grafana unit, decimals) of a queue or campaign KPI, from the catalogue."""
    decl: catalogue.Kpi | catalogue.Live | None = catalogue.QUEUE_BY_KEY.get(kpi) or catalogue.BY_KEY.get(kpi)
    if decl is None:
        decl = next(k for k in catalogue.QUEUE_LIVE if k.key == kpi)
    unit, decimals = _UNITS.get(decl.unit, ("none", 2))
    return decl.title, unit, decimals


def _queue_expr(kpi: str, window: str, matchers: tuple[Matcher, ...] = ()) -> str:
    if kpi in LIVE_METRICS:
        return promql.selector(LIVE_METRICS[kpi], matchers) if matchers else LIVE_METRICS[kpi]
    return promql.selector(QUEUE_METRIC, (*matchers, ("kpi", "=", kpi), ("window", "=", window)))


# ---------------------------------------------------------------------------------------------
# Prometheus rules


def _queue_variants(settings: Settings, kpi: str) -> list[tuple[Rule, tuple[Matcher, ...], str | None]]:
    """(rule, matchers, queue) for the default rule (other queues) and each [queue.<name>.kpi] override."""
    overrides = sorted(q for q, rules in settings.queue_kpi_overrides.items() if kpi in rules)
    out: list[tuple[Rule, tuple[Matcher, ...], str | None]] = []
    default = settings.queue_rules.get(kpi)
    if default is not None:
        matchers: tuple[Matcher, ...] = ()
        if overrides:
            matchers = (("queue", "!~", "|".join(promql.re_escape(q) for q in overrides)),)
        out.append((default, matchers, None))
    for q in overrides:
        out.append((settings.queue_kpi_overrides[q][kpi], (("queue", "=", q),), q))
    return out


def _rule_alert(scope: str, kpi: str, expr_of: str, rule: Rule, severity: str, threshold: float, for_s: int,
                who: str) -> dict[str, Any]:  # fmt: skip
    from callpulse import provisioning as p  # the rules' shared wording; imported here, as it imports this module

    op = ">" if rule.direction == "above" else "<"
    title, unit, _ = _look(kpi)
    value = "{{ $value | humanizeDuration }}" if unit == "s" else "{{ $value | humanizePercentage }}"
    if unit == "none":
        value = "{{ $value }}"
    shown = p._human_seconds(threshold) if unit == "s" else f"{threshold:.4g}" if unit == "none" else f"{threshold:.2%}"
    over = "now" if rule.window == "live" else f"over {rule.window}"
    return {
        "alert": p.alert_name(scope, kpi, rule.direction),
        "expr": f"{expr_of} {op} {promql.number(threshold)}",
        "for": "0s" if rule.window == "live" else (f"{for_s}s" if for_s % 60 else f"{for_s // 60}m"),
        "labels": {"severity": severity, "scope": scope},
        "annotations": {"summary": f"{who}: {title} {over} is {value}, {rule.direction} the {severity} "
                                   f"threshold of {shown}"},
    }  # fmt: skip


def rule_groups(settings: Settings, *, for_s: int = 60) -> list[dict[str, Any]]:
    """Alert groups for queue rules (per queue) and campaign rules (per campaign): the same thresholds the
    worker evaluates. A live rule (longest wait) fires at once: the value itself already means time has passed."""
    queue_rules: list[dict[str, Any]] = []
    for kpi in sorted({*settings.queue_rules, *(k for r in settings.queue_kpi_overrides.values() for k in r)}):
        for rule, matchers, _queue in _queue_variants(settings, kpi):
            expr = _queue_expr(kpi, rule.window, matchers)
            for severity in ("critical", "warning"):
                threshold = getattr(rule, f"{severity}_{rule.direction}")
                if threshold is not None:
                    queue_rules.append(
                        _rule_alert("queue", kpi, expr, rule, severity, threshold, for_s, "Queue {{ $labels.queue }}")
                    )
    campaign_rules: list[dict[str, Any]] = []
    for kpi, rule in sorted(settings.campaign_rules.items()):
        expr = promql.selector(CAMPAIGN_METRIC, (("kpi", "=", kpi), ("window", "=", rule.window)))
        for severity in ("critical", "warning"):
            threshold = getattr(rule, f"{severity}_{rule.direction}")
            if threshold is not None:
                campaign_rules.append(
                    _rule_alert(
                        "campaign", kpi, expr, rule, severity, threshold, for_s, "Campaign {{ $labels.campaign }}"
                    )
                )
    return [{"name": "callpulse-queue", "rules": queue_rules}, {"name": "callpulse-campaign", "rules": campaign_rules}]


# ---------------------------------------------------------------------------------------------
# Grafana


def _per_queue_stat(settings: Settings, kpi: str) -> stat.Panel:
    title, unit, decimals = _look(kpi)
    rule = settings.queue_rules.get(kpi)
    window = settings.window_names[0] if rule is None or rule.window == "live" else rule.window
    expr = _queue_expr(kpi, window, (("queue", "=~", "$queue"),))
    suffix = "now" if kpi in LIVE_QUEUE_KPIS else window
    panel = g._look(g._stat(f"{title} · {suffix}"), None, unit=unit, decimals=decimals, steps=g.grafana_steps(rule))
    return panel.with_target(g._target(expr, "A", legend="{{queue}}"))


def _sl_over_time(settings: Settings) -> timeseries.Panel:
    rule = settings.queue_rules.get("service_level")
    window = rule.window if rule is not None else settings.window_names[0]
    title, unit, decimals = _look("service_level")
    expr = _queue_expr("service_level", window, (("queue", "=~", "$queue"),))
    panel = g._timeseries(f"{title} against its target · {window}", threshold_lines=True)
    panel = g._look(panel, None, unit=unit, decimals=decimals, steps=g.grafana_steps(rule))
    return panel.with_target(g._target(expr, "A", legend="{{queue}}", instant=False))


def _waits_over_time(settings: Settings) -> timeseries.Panel:
    rule = settings.queue_rules.get("longest_wait_seconds")
    expr = _queue_expr("longest_wait_seconds", "", (("queue", "=~", "$queue"),))
    panel = g._look(g._timeseries("Longest wait", threshold_lines=True), None, unit="s", decimals=0,
                    steps=g.grafana_steps(rule))  # fmt: skip
    return panel.with_target(g._target(expr, "A", legend="longest wait {{queue}}", instant=False))


def _abandons_over_time(settings: Settings) -> timeseries.Panel:
    window = settings.window_names[0]
    panel = g._timeseries(f"Answered, abandoned and waiting · {window}", threshold_lines=False)
    panel = g._look(panel, None, unit="none", decimals=0, steps=[{"color": "blue", "value": None}])
    counts = (
        f'sum by (kpi) ({QUEUE_METRIC}{{queue=~"$queue",kpi=~"answered|abandoned|short_abandoned",window="{window}"}})'
    )
    panel = panel.with_target(g._target(counts, "A", legend="{{kpi}}", instant=False))
    return panel.with_target(g._target('sum(callpulse_queue_waiting{queue=~"$queue"})', "B", legend="waiting",
                                       instant=False))  # fmt: skip


def agents_by_state(matchers: tuple[Matcher, ...] = ()) -> stat.Panel:
    """A stat panel of agents in each state (all teams, or those the matchers pick)."""
    expr = f"sum by (state) ({promql.selector('callpulse_agents_in_state', matchers)})"
    panel = g._stat("Agents by state", text_mode=common.BigValueTextMode.VALUE_AND_NAME)
    panel = g._look(panel, None, unit="none", decimals=0, steps=[{"color": "blue", "value": None}])
    return panel.with_target(g._target(expr, "A", legend="{{state}}"))


def _campaigns(settings: Settings) -> stat.Panel:
    rule = settings.campaign_rules.get("outbound_abandon_rate")
    window = rule.window if rule is not None else "30d"
    expr = promql.selector(CAMPAIGN_METRIC, (("kpi", "=", "outbound_abandon_rate"), ("window", "=", window)))
    panel = g._stat(f"Outbound abandonment per campaign · {window}")
    panel = g._look(panel, None, unit="percentunit", decimals=2, steps=g.grafana_steps(rule))
    return panel.with_target(g._target(expr, "A", legend="{{campaign}}"))


def dashboard(settings: Settings) -> dict[str, Any]:
    """The queue dashboard for the floor TV."""
    top: list[stat.Panel] = [_per_queue_stat(settings, k) for k in ("waiting", "longest_wait_seconds",
                             "service_level", "asa_seconds", "abandon_rate")]  # fmt: skip
    top.append(agents_by_state())
    y = g._place(top, width=4, height=7, y=0)
    charts: list[g.Panel] = [
        _sl_over_time(settings),
        _waits_over_time(settings),
        _abandons_over_time(settings),
        _campaigns(settings),
    ]
    g._place(charts, width=12, height=8, y=y)
    variables = [
        g._query_variable("queue", "Queue", "label_values(callpulse_queue_waiting, queue)", include_all=True,
                          multi=True),
    ]  # fmt: skip
    return g._dashboard(
        "queues.json",
        "Queues",
        [*top, *charts],
        refresh="5s",
        time_from="now-1h",
        variables=variables,
        description="Queues for the floor TV: calls waiting, longest wait, service level against its target, ASA, "
        "abandons, agents by state, outbound abandonment per campaign.",
    )
