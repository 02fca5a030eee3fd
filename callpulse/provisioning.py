"""Provisioning: Prometheus alert rules, Grafana dashboards and the KPI reference, from the catalogue and Settings.

The thresholds TOML is the one source of truth: the same `Rule`s drive the stream alerts, the panel
colours of the dashboards and the Prometheus alerting rules. Everything here is pure (settings in,
JSON/YAML structures out) except `write_all`, which renders them deterministically (sorted keys,
stable ids and uids) so the committed files can be compared with the generator's output.

Per-team overrides (`[team.<name>.kpi.<key>]`) become separate alert rules with a `team="<name>"`
matcher, while the default rule excludes those teams (`team!~"<name>|..."`). Dashboards do the same
with one query per variant and a `byFrameRefID` field override carrying that variant's thresholds.

`min_samples` is enforced in the alert rules only where the KPI's denominator is itself exported as a
gauge: `aht_seconds` (denominator `calls_handled`) and `connect_rate` (`dials`). The other KPIs
(fcr, response_seconds, csat, escalation_rate, conversion_rate) have no such gauge, so their
Prometheus rules rely on the `for:` duration alone; the stream alerts still apply `min_samples`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from callpulse import catalogue, queueboard
from callpulse.grafana import dashboards, grafana_steps, panel_queries
from callpulse.health_rules import OPERATIONS_HEADER, OPERATIONS_RULES_PATH, operations_rules
from callpulse.promql import (
    DASHBOARD_UIDS,
    DASHBOARDS_DIR,
    DATASOURCE,
    DATASOURCE_UID,
    GENERATED,
    KPI_LOOKS,
    KPI_REFERENCE_PATH,
    METRICS,
    RULES_PATH,
    SAMPLE_GAUGES,
    Variant,
    kpis_with_rules,
    number,
    selector,
    variants,
)
from callpulse.settings import Rule, Settings

__all__ = [
    "DASHBOARD_UIDS",
    "DATASOURCE",
    "DATASOURCE_UID",
    "KPI_LOOKS",
    "dashboards",
    "files",
    "grafana_steps",
    "kpi_reference",
    "panel_queries",
    "prometheus_rules",
    "variants",
    "write_all",
]

# ---------------------------------------------------------------------------------------------
# Prometheus alerting rules


def _human_seconds(value: float) -> str:
    """Format seconds the way Prometheus' humanizeDuration does, so summaries read alike."""
    if value < 60:
        return f"{value:.4g}s"
    whole = int(value)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {seconds}s"
    if hours:
        return f"{hours}h {minutes}m {seconds}s"
    return f"{minutes}m {seconds}s"


def _human(kpi: str, value: float) -> str:
    unit = KPI_LOOKS[kpi].unit
    if unit == "s":
        return _human_seconds(value)
    if unit == "percentunit":
        return f"{value * 100:.4g}%"
    return f"{value:.4g}"


def _value_template(kpi: str) -> str:
    unit = KPI_LOOKS[kpi].unit
    if unit == "s":
        return "{{ $value | humanizeDuration }}"
    if unit == "percentunit":
        return "{{ $value | humanizePercentage }}"
    return "{{ $value | humanize }}"


def _camel(text: str) -> str:
    return "".join(part.capitalize() for part in text.split("_"))


def alert_name(scope: str, kpi: str, direction: str) -> str:
    """The Prometheus alert name: CallpulseAgentAhtSecondsHigh, CallpulseFloorConnectRateLow."""
    return f"Callpulse{_camel(scope)}{_camel(kpi)}{'High' if direction == 'above' else 'Low'}"


def _alert(scope: str, variant: Variant, severity: str, threshold: float, for_s: int) -> dict[str, Any]:
    rule = variant.rule
    assert rule is not None
    metric = METRICS[scope]
    kpi = variant.kpi
    op = ">" if rule.direction == "above" else "<"
    base = (("kpi", "=", kpi), ("window", "=", variant.window))
    expr = f"{selector(metric, (*base, *variant.matchers))} {op} {number(threshold)}"
    gauge = SAMPLE_GAUGES.get(kpi)
    if gauge is not None and rule.min_samples > 1:
        gate = selector(metric, (("kpi", "=", gauge), ("window", "=", variant.window)))
        expr += f" and ignoring(kpi) {gate} >= {rule.min_samples}"
    who = {
        "agent": "Agent {{ $labels.agent }} (team {{ $labels.team }})",
        "team": "Team {{ $labels.team }}",
        "floor": "Floor",
    }[scope]
    summary = (
        f"{who}: {KPI_LOOKS[kpi].title} over {variant.window} is {_value_template(kpi)}, "
        f"{rule.direction} the {severity} threshold of {_human(kpi, threshold)}"
    )
    return {
        "alert": alert_name(scope, kpi, rule.direction),
        "expr": expr,
        "for": f"{for_s}s" if for_s % 60 else f"{for_s // 60}m",
        "labels": {"severity": severity, "scope": scope},
        "annotations": {"summary": summary},
    }


def prometheus_rules(settings: Settings, *, for_s: int = 60) -> dict[str, Any]:
    """Build the Prometheus rules file: one alert per rule, scope and severity, team overrides split out.

    `for_s` is how long (seconds) a breach must hold before the alert fires.
    """
    groups = []
    for scope in ("agent", "team", "floor"):
        rules: list[dict[str, Any]] = []
        for kpi in kpis_with_rules(settings):
            for variant in variants(settings, kpi, teams=scope != "floor"):
                rule = variant.rule
                if rule is None:
                    continue
                for severity in ("critical", "warning"):
                    threshold = getattr(rule, f"{severity}_{rule.direction}")
                    if threshold is not None:
                        rules.append(_alert(scope, variant, severity, threshold, for_s))
        groups.append({"name": f"callpulse-{scope}", "rules": rules})
    groups.extend(queueboard.rule_groups(settings, for_s=for_s))
    return {"groups": groups}


# ---------------------------------------------------------------------------------------------
# Rendering and writing


def render_json(dashboard: Mapping[str, Any]) -> str:
    """A dashboard as committed: indented JSON with sorted keys and a trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_rules(rules: Mapping[str, Any], *, header: str = GENERATED) -> str:
    """The rules file as committed: a header comment, then YAML with sorted keys."""
    body = yaml.safe_dump(dict(rules), sort_keys=True, default_flow_style=False, allow_unicode=True, width=1000)
    return f"# {header}\n{body}"


def _rule_text(rule: Rule | None) -> str:
    if rule is None:
        return ""
    side = ">" if rule.direction == "above" else "<"
    parts = [f"warning {side} {number(getattr(rule, f'warning_{rule.direction}'))}"]
    critical = getattr(rule, f"critical_{rule.direction}")
    if critical is not None:
        parts.append(f"critical {side} {number(critical)}")
    return ", ".join(parts) + f"; {rule.min_samples} samples, {rule.window}"


def kpi_reference(settings: Settings) -> str:
    """docs/kpis.md: every catalogue KPI with its definition, unit, direction, default alert and the field's target."""
    lines = [
        "# KPI reference",
        "",
        f"<!-- {GENERATED} The KPIs themselves are declared in callpulse/catalogue.py. -->",
        "",
        "Every KPI is computed per agent, per team and for the floor, in every window (`15m`, `1h`, `8h` and the",
        "calendar window `today` by default). A ratio whose denominator is 0 in the window is `null` (absent",
        "from `/metrics`); counts and sums are 0. Team and floor values divide summed numerators by summed",
        "denominators, never average the agents' values. Amounts and QA points are counted to 0.001.",
        "",
        "| key | definition | unit (shown as) | better | default alert | field target |",
        "|---|---|---|---|---|---|",
    ]
    for kpi in catalogue.CATALOGUE:
        rule = _rule_text(settings.rules.get(kpi.key))
        lines.append(
            f"| `{kpi.key}` | {kpi.definition} | {kpi.unit} ({kpi.fmt}) | {kpi.better} | {rule} | {kpi.target} |"
        )
    lines += [
        "",
        "`min_samples` counts the KPI's denominator (for `qa_score`, the reviews; for counts, the count itself).",
        "Any KPI above can have a rule (`[kpi.<key>]` in the thresholds TOML) and a place in the `[scorecard]`.",
        "",
        "## Scorecard",
        "",
        "With a `[scorecard]` table, each agent earns points per KPI over the scorecard's window (a null KPI",
        "earns 0): with `target` and higher better, `weight * min(1, value / target)` (never below 0); with",
        '`better = "lower"`, `weight * min(1, target / value)`, and a value of 0 earns all; with',
        "`target_range = [lo, hi]`, all points inside, `weight * value / lo` below, `weight * hi / value` above.",
        "`better` defaults to the KPI's direction in the table above. An agent's score is the sum of its",
        "points; a team's and the floor's are the mean of their agents' scores, over the agents with at least",
        "one event in the window. `callpulse/scorecard.example.toml` holds the field's telesales table.",
        "",
    ]
    return "\n".join(lines)


def files(settings: Settings) -> dict[Path, str]:
    """Every generated file, as a path relative to the repo root -> its text."""
    out = {DASHBOARDS_DIR / name: render_json(model) for name, model in sorted(dashboards(settings).items())}
    out[RULES_PATH] = render_rules(prometheus_rules(settings))
    out[OPERATIONS_RULES_PATH] = render_rules(operations_rules(), header=OPERATIONS_HEADER)
    out[KPI_REFERENCE_PATH] = kpi_reference(settings)
    return out


def write_all(settings: Settings, root: Path) -> list[Path]:
    """Write every generated file (`files`: dashboards, rules, docs/kpis.md) under `root`; return the paths."""
    written = []
    for relative, text in files(settings).items():
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
