"""Grafana dashboards (floor wallboard, team, agent) built with Grafana's typed builders from the catalogue.

The panels come from `grafana-foundation-sdk` builders, so every dashboard is valid against Grafana's
schema by construction (Grafana itself cannot run here). Pure: settings in, JSON models out. Per-team
overrides become one query per variant with a `byFrameRefID` override carrying that variant's thresholds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model

# queueboard (the queue dashboard) builds its panels with this module's helpers, only when called.
from callpulse import queueboard
from callpulse.promql import (
    COUNT_KPIS,
    DASHBOARD_UIDS,
    DATASOURCE,
    GENERATED,
    HEADLINE_KPIS,
    KPI_LOOKS,
    METRICS,
    Matcher,
    Variant,
    kpis_with_rules,
    selector,
    variants,
)
from callpulse.settings import Rule, Settings

Panel = stat.Panel | timeseries.Panel
PanelT = TypeVar("PanelT", stat.Panel, timeseries.Panel)  # the helpers return the kind of panel they are given
_DATASOURCE = model.DataSourceRef(type_val=DATASOURCE["type"], uid=DATASOURCE["uid"])


def grafana_steps(rule: Rule | None, *, neutral: str = "blue") -> list[dict[str, Any]]:
    """Grafana threshold steps (ascending) colouring a KPI green, orange (warning) and red (critical)."""
    if rule is None:
        return [{"color": neutral, "value": None}]
    if rule.direction == "above":
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if rule.warning_above is not None:
            steps.append({"color": "orange", "value": rule.warning_above})
        if rule.critical_above is not None:
            steps.append({"color": "red", "value": rule.critical_above})
        return steps
    warning, critical = rule.warning_below, rule.critical_below
    if critical is not None:
        steps = [
            {"color": "red", "value": None},
            {"color": "orange" if warning is not None else "green", "value": critical},
        ]
    else:
        steps = [{"color": "orange", "value": None}]
    if warning is not None:
        steps.append({"color": "green", "value": warning})
    return steps


def _thresholds(steps: list[dict[str, Any]]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(color=s["color"], value=s["value"]) for s in steps])
    )


def _target(expr: str, ref_id: str, *, legend: str = "", instant: bool = True) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref_id).legend_format(legend).datasource(_DATASOURCE)
    query = query.instant() if instant else query.range()
    return query.editor_mode(prometheus_model.QueryEditorMode.CODE)


def _look(panel: PanelT, kpi: str | None, *, unit: str, decimals: int, steps: list[dict[str, Any]]) -> PanelT:
    """Unit, decimals, thresholds and the '-' shown for a null ratio (absent from /metrics) instead of No data."""
    panel = panel.unit(unit).decimals(decimals).no_value("-").thresholds(_thresholds(steps)).datasource(_DATASOURCE)
    if unit == "percentunit":
        panel = panel.min(0).max(1)
    elif kpi is not None:
        panel = panel.min(0)
    return panel


def _override(panel: PanelT, ref_id: str, kpi: str, steps: list[dict[str, Any]], *, name: str | None = None) -> PanelT:
    look = KPI_LOOKS[kpi]
    props = [
        model.DynamicConfigValue(id_val="unit", value=look.unit),
        model.DynamicConfigValue(id_val="decimals", value=look.decimals),
        model.DynamicConfigValue(id_val="thresholds", value=_thresholds(steps).build()),
    ]
    if name is not None:
        props.append(model.DynamicConfigValue(id_val="displayName", value=name))
    return panel.override_by_query(ref_id, props)


def _stat(title: str, *, text_mode: common.BigValueTextMode = common.BigValueTextMode.VALUE) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .justify_mode(common.BigValueJustifyMode.CENTER)
        .orientation(common.VizOrientation.AUTO)
        .text_mode(text_mode)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
    )


def _timeseries(title: str, *, threshold_lines: bool) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(common.GraphDrawStyle.LINE)
        .fill_opacity(0)
        .line_width(2)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphTresholdsStyleMode.LINE_AND_AREA if threshold_lines else common.GraphTresholdsStyleMode.OFF
            )
        )
        .legend(
            common_builders.VizLegendOptions()
            .calcs(["lastNotNull"])
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.NONE))
    )


def _kpi_queries(
    settings: Settings, kpi: str, scope: str, matchers: tuple[Matcher, ...], *, teams: bool
) -> list[tuple[Variant, str]]:
    """(variant, expr) pairs for a KPI gauge; counts and sums use `or vector(0)` so idle shows 0."""
    out = []
    for variant in variants(settings, kpi, teams=teams):
        expr = selector(
            METRICS[scope], (*matchers, *variant.matchers, ("kpi", "=", kpi), ("window", "=", variant.window))
        )
        out.append((variant, f"sum({expr}) or vector(0)" if kpi in COUNT_KPIS else expr))
    return out


def _kpi_stat(settings: Settings, kpi: str, scope: str, matchers: tuple[Matcher, ...], *, teams: bool) -> stat.Panel:
    """A stat panel for one KPI, coloured by its rule; team overrides as extra queries with own thresholds."""
    look = KPI_LOOKS[kpi]
    queries = _kpi_queries(settings, kpi, scope, matchers, teams=teams)
    windows = sorted({v.window for v, _ in queries}, key=settings.window_s)
    panel = _stat(f"{look.title} · {' / '.join(windows)}")
    panel = _look(panel, kpi, unit=look.unit, decimals=look.decimals, steps=grafana_steps(queries[0][0].rule))
    for variant, expr in queries:
        panel = panel.with_target(_target(expr, variant.ref_id))
    for variant, _ in queries[1:]:
        panel = _override(panel, variant.ref_id, kpi, grafana_steps(variant.rule))
    return panel


def _neutral_stat(title: str, expr: str, *, unit: str, steps: list[dict[str, Any]], decimals: int = 0) -> stat.Panel:
    return _look(_stat(title), None, unit=unit, decimals=decimals, steps=steps).with_target(_target(expr, "A"))


def _score_stat(settings: Settings, title: str, metric: str, matchers: tuple[Matcher, ...]) -> list[stat.Panel]:
    """A stat of the scorecard's mean score (absent without a [scorecard])."""
    card = settings.scorecard
    if card is None:
        return []
    expr = selector(metric, (*matchers, ("window", "=", card.window)))
    total = card.total_weight
    steps: list[dict[str, Any]] = [
        {"color": "red", "value": None},
        {"color": "orange", "value": total / 2},
        {"color": "green", "value": total * 0.8},
    ]
    return [_neutral_stat(f"{title} · {card.window}", expr, unit="none", steps=steps)]


def _place(panels: Sequence[Panel], *, width: int, height: int, y: int) -> int:
    """Lay panels out left to right, wrapping at 24 columns; return the next free row."""
    x = 0
    for panel in panels:
        if x + width > 24:
            x, y = 0, y + height
        panel.grid_pos(model.GridPos(h=height, w=width, x=x, y=y))
        x += width
    return y + height if panels else y


def _query_variable(
    name: str, label: str, query: str, *, include_all: bool = False, multi: bool = False, hide: bool = False
) -> dash.QueryVariable:
    variable = (
        dash.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(_DATASOURCE)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(include_all)
        .multi(multi)
    )
    if include_all:
        variable = variable.all_value(".*").current(model.VariableOption(selected=True, text="All", value="$__all"))
    if hide:
        variable = variable.hide(model.VariableHide.HIDE_VARIABLE)
    return variable


def _dashboard(
    filename: str,
    title: str,
    panels: Iterable[Panel | dash.Row],
    *,
    refresh: str,
    time_from: str,
    variables: Iterable[dash.QueryVariable] = (),
    description: str,
) -> dict[str, Any]:
    board = (
        dash.Dashboard(title)
        .uid(DASHBOARD_UIDS[filename])
        .description(f"{description} {GENERATED}")
        .tags(["callpulse"])
        .editable()
        .readonly()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .refresh(refresh)
        .time(time_from, "now")
        .timezone("browser")
        .timepicker(dash.TimePicker().refresh_intervals(["5s", "10s", "30s", "1m", "5m"]))
        .link(
            dash.DashboardLink("callpulse")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["callpulse"])
            .keep_time(True)
            .as_dropdown(False)
        )
    )
    for i, panel in enumerate(panels, start=1):
        board = board.with_row(panel.id(i)) if isinstance(panel, dash.Row) else board.with_panel(panel.id(i))
    for variable in variables:
        board = board.with_variable(variable)
    out: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    # The builder leaves out empty lists; Grafana and readers of the model expect them present.
    out.setdefault("templating", {}).setdefault("list", [])
    out.setdefault("annotations", {}).setdefault("list", [])
    return out


def _floor(settings: Settings) -> dict[str, Any]:
    headline = [_kpi_stat(settings, kpi, "floor", (), teams=False) for kpi in HEADLINE_KPIS]
    y = _place(headline, width=24 // len(headline), height=8, y=0)
    status = [
        _neutral_stat("Active alerts", "sum(callpulse_alerts_active) or vector(0)", unit="none",
                      steps=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
        _neutral_stat("Critical alerts", 'sum(callpulse_alerts_active{severity="critical"}) or vector(0)', unit="none",
                      steps=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        *_score_stat(settings, "Floor score", "callpulse_floor_score", ()),
        *(_kpi_stat(settings, kpi, "floor", (), teams=False) for kpi in COUNT_KPIS),
    ]  # fmt: skip
    y = _place(status, width=6, height=6, y=y)
    others = [k for k in KPI_LOOKS if k not in HEADLINE_KPIS and k not in COUNT_KPIS]
    rest = [_kpi_stat(settings, kpi, "floor", (), teams=False) for kpi in others]
    y = _place(rest, width=4, height=5, y=y)
    pipeline = [
        _neutral_stat("Events/s", 'sum(rate(callpulse_events_total{result="ok"}[1m])) or vector(0)', unit="cps",
                      steps=[{"color": "blue", "value": None}], decimals=1),
        _neutral_stat("Rejected events/s (invalid, late)",
                      'sum(rate(callpulse_events_total{result=~"invalid|late"}[5m])) or vector(0)', unit="cps",
                      steps=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01}], decimals=2),
        _neutral_stat("Consumer lag (messages)", "sum(callpulse_consumer_lag) or vector(0)", unit="none",
                      steps=[{"color": "green", "value": None}, {"color": "orange", "value": 1000},
                             {"color": "red", "value": 10000}]),
        # NaN (no events in 5m) is filtered by `>= 0`, so an idle system shows "-" rather than NaN.
        _neutral_stat("Event lag p95",
                      "histogram_quantile(0.95, sum by (le) (rate(callpulse_event_lag_seconds_bucket[5m]))) >= 0",
                      unit="s", steps=[{"color": "green", "value": None}, {"color": "orange", "value": 2},
                                       {"color": "red", "value": 10}], decimals=2),
    ]  # fmt: skip
    row = dash.Row("Pipeline").grid_pos(model.GridPos(h=1, w=24, x=0, y=y))
    _place(pipeline, width=6, height=4, y=y + 1)
    return _dashboard(
        "floor-wallboard.json",
        "Floor wallboard",
        [*headline, *status, *rest, row, *pipeline],
        refresh="5s",
        time_from="now-15m",
        description="The whole floor for a TV in kiosk mode: every KPI coloured by the thresholds, the scorecard, "
        "alerts, pipeline health.",
    )


def _agent_tile(settings: Settings) -> stat.Panel:
    """One stat panel per agent (repeated over `$agent`), one coloured value per KPI, and the agent's score."""
    panel = _look(_stat("$agent", text_mode=common.BigValueTextMode.VALUE_AND_NAME), None, unit="none", decimals=0,
                  steps=[{"color": "blue", "value": None}])  # fmt: skip
    matchers: tuple[Matcher, ...] = (("team", "=", "$team"), ("agent", "=", "$agent"))
    for kpi in (*HEADLINE_KPIS, "calls_handled"):
        for variant, expr in _kpi_queries(settings, kpi, "agent", matchers, teams=True):
            panel = panel.with_target(_target(expr, variant.ref_id))
            panel = _override(panel, variant.ref_id, kpi, grafana_steps(variant.rule), name=KPI_LOOKS[kpi].short)
    if settings.scorecard is not None:
        expr = selector("callpulse_agent_score", (*matchers, ("window", "=", settings.scorecard.window)))
        panel = panel.with_target(_target(expr, "score")).override_by_query(
            "score", [model.DynamicConfigValue(id_val="displayName", value="Score")]
        )
    url = f"/d/{DASHBOARD_UIDS['agent.json']}/agent?var-team=$team&var-agent=$agent&${{__url_time_range}}"
    return panel.links([dash.DashboardLink("Agent dashboard").url(url)]).repeat("agent").repeat_direction("h")


def _team(settings: Settings) -> dict[str, Any]:
    matchers: tuple[Matcher, ...] = (("team", "=", "$team"),)
    top = [_kpi_stat(settings, kpi, "team", matchers, teams=True) for kpi in (*HEADLINE_KPIS, *COUNT_KPIS)]
    y = _place(top, width=4, height=6, y=0)
    others = [k for k in KPI_LOOKS if k not in HEADLINE_KPIS and k not in COUNT_KPIS]
    second = [_kpi_stat(settings, kpi, "team", matchers, teams=True) for kpi in others]
    second += _score_stat(settings, "Team score", "callpulse_team_score", matchers)
    second.append(
        _neutral_stat(
            "Agents",
            f'count(callpulse_agent_kpi{{team="$team",kpi="calls_handled",window="{settings.window_names[-1]}"}}) '
            "or vector(0)",
            unit="none",
            steps=[{"color": "blue", "value": None}],
        )
    )
    second.append(queueboard.agents_by_state((("team", "=", "$team"),)))
    y = _place(second, width=4, height=4, y=y)
    row = dash.Row("Agents").grid_pos(model.GridPos(h=1, w=24, x=0, y=y))
    tile = _agent_tile(settings)
    _place([tile], width=6, height=7, y=y + 1)
    variables = [
        _query_variable("team", "Team", "label_values(callpulse_team_kpi, team)"),
        _query_variable("agent", "Agent", 'label_values(callpulse_agent_kpi{team="$team"}, agent)',
                        include_all=True, multi=True, hide=True),
    ]  # fmt: skip
    return _dashboard(
        "team.json",
        "Team",
        [*top, *second, row, tile],
        refresh="10s",
        time_from="now-1h",
        variables=variables,
        description="One team: its KPIs, its score and a tile per agent, coloured by the team's thresholds.",
    )


def _agent(settings: Settings) -> dict[str, Any]:
    matchers: tuple[Matcher, ...] = (("agent", "=", "$agent"),)
    panels: list[Panel] = []
    order = [*HEADLINE_KPIS, *(k for k in kpis_with_rules(settings) if k not in HEADLINE_KPIS), *KPI_LOOKS]
    for kpi in dict.fromkeys(order):
        look = KPI_LOOKS[kpi]
        queries = _kpi_queries(settings, kpi, "agent", matchers, teams=True)
        windows = sorted({v.window for v, _ in queries}, key=settings.window_s)
        panel = _timeseries(f"{look.title} · {' / '.join(windows)}",
                            threshold_lines=any(v.rule is not None for v, _ in queries))  # fmt: skip
        panel = _look(panel, kpi, unit=look.unit, decimals=look.decimals, steps=grafana_steps(queries[0][0].rule))
        for variant, expr in queries:
            panel = panel.with_target(_target(expr, variant.ref_id, legend=f"{look.title} ({variant.window})",
                                              instant=False))  # fmt: skip
        for variant, _ in queries[1:]:
            panel = _override(panel, variant.ref_id, kpi, grafana_steps(variant.rule))
        panels.append(panel)
    if settings.scorecard is not None:
        expr = selector("callpulse_agent_score", (*matchers, ("window", "=", settings.scorecard.window)))
        score = _look(_timeseries(f"Score · {settings.scorecard.window}", threshold_lines=False), None, unit="none",
                      decimals=0, steps=[{"color": "blue", "value": None}])  # fmt: skip
        panels.append(score.with_target(_target(expr, "score", legend="Score", instant=False)))
    _place(panels, width=12, height=8, y=0)
    variables = [
        _query_variable("team", "Team", "label_values(callpulse_agent_kpi, team)", include_all=True),
        _query_variable("agent", "Agent", 'label_values(callpulse_agent_kpi{team=~"$team"}, agent)'),
    ]
    return _dashboard(
        "agent.json",
        "Agent",
        panels,
        refresh="30s",
        time_from="now-8h",
        variables=variables,
        description="One agent: each KPI over time with its threshold bands (the agent's team overrides included).",
    )


def dashboards(settings: Settings) -> dict[str, dict[str, Any]]:
    """Build the Grafana dashboards: file name -> dashboard JSON model."""
    return {
        "agent.json": _agent(settings),
        "floor-wallboard.json": _floor(settings),
        "team.json": _team(settings),
        "queues.json": queueboard.dashboard(settings),
    }


_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")


def panel_queries(dashboard: Mapping[str, Any], variables: Mapping[str, str]) -> list[str]:
    """Every panel target's PromQL, rows' nested panels included, with `$var`/`${var}` replaced from `variables`.

    A variable used in a query but missing from `variables` raises KeyError naming it.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in variables:
            raise KeyError(f"dashboard {dashboard.get('uid')!r} uses ${name}, which is not in variables")
        return variables[name]

    def walk(panels: Iterable[Mapping[str, Any]]) -> Iterable[str]:
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield _VARIABLE.sub(substitute, target["expr"])

    return list(walk(dashboard.get("panels", [])))
