"""The provisioning generator: committed files match it, team overrides flow through, panels are well-formed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from callpulse import provisioning as p
from callpulse.settings import Rule, Settings, load_thresholds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "callpulse" / "thresholds.example.toml"
OVERRIDES = """
[team.retention.kpi.aht_seconds]
warning_above = 420
critical_above = 600

[team."night shift".kpi.connect_rate]
warning_below = 0.30
critical_below = 0.15
window = "1h"
"""
KNOWN_METRICS = {
    "callpulse_agent_kpi",
    "callpulse_team_kpi",
    "callpulse_floor_kpi",
    "callpulse_alerts_active",
    "callpulse_events_total",
    "callpulse_event_lag_seconds_bucket",
    "callpulse_worker_events_total",
    "callpulse_consumer_lag",
    "callpulse_batch_seconds_bucket",
    "callpulse_queue_kpi",
    "callpulse_queue_waiting",
    "callpulse_queue_longest_wait_seconds",
    "callpulse_agents_in_state",
    "callpulse_campaign_kpi",
}
VARIABLES = {"team": "sales", "agent": "a-001", "queue": "billing"}


def _settings(toml: str) -> Settings:
    return Settings(**load_thresholds(toml, source="test"))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in _panels(dashboard) if panel["type"] != "row"]


def _rules(settings: Settings) -> list[dict[str, Any]]:
    return [rule for group in p.prometheus_rules(settings)["groups"] for rule in group["rules"]]


def _by_ref(panel: dict[str, Any], ref_id: str) -> dict[str, Any]:
    """The properties a panel's override sets for one query refId."""
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byFrameRefID", "options": ref_id}:
            return {prop["id"]: prop["value"] for prop in override["properties"]}
    raise AssertionError(f"no override for refId {ref_id} in panel {panel['title']!r}")


def _panel(dashboard: dict[str, Any], title_start: str) -> dict[str, Any]:
    matches = [panel for panel in _data_panels(dashboard) if panel["title"].startswith(title_start)]
    assert len(matches) == 1, f"{len(matches)} panels titled {title_start!r}"
    return matches[0]


# --- one source of truth ------------------------------------------------------------------------


def test_committed_files_are_what_the_generator_writes() -> None:
    # `make grafana` generates them with the built-in thresholds and the example scorecard.
    settings = _settings((ROOT / "callpulse" / "scorecard.example.toml").read_text(encoding="utf-8"))
    for relative, text in p.files(settings).items():
        committed = (ROOT / relative).read_text(encoding="utf-8")
        assert committed == text, f"{relative} differs from the generator's output: run `callpulse grafana`"


def test_example_thresholds_are_the_defaults() -> None:
    example = _settings(EXAMPLE.read_text(encoding="utf-8"))
    assert dict(example.rules) == dict(Settings().rules)
    assert p.files(example) == p.files(Settings())


def test_write_all_is_deterministic(tmp_path: Path) -> None:
    settings = _settings(OVERRIDES)
    first = p.write_all(settings, tmp_path / "a")
    second = p.write_all(settings, tmp_path / "b")
    assert sorted(path.relative_to(tmp_path / "a") for path in first) == sorted(
        path.relative_to(tmp_path / "b") for path in second
    )
    assert {path.relative_to(tmp_path / "a") for path in first} == {
        Path("grafana/dashboards/agent.json"),
        Path("grafana/dashboards/floor-wallboard.json"),
        Path("grafana/dashboards/team.json"),
        Path("grafana/dashboards/queues.json"),
        Path("prometheus/rules.yml"),
        Path("prometheus/operations.yml"),
        Path("docs/kpis.md"),
    }
    for path in first:
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == twin.read_bytes()


# --- Prometheus rules ---------------------------------------------------------------------------


def test_rules_cover_every_rule_scope_and_severity() -> None:
    rules = _rules(Settings())
    names = {(r["alert"], r["labels"]["severity"], r["labels"]["scope"]) for r in rules}
    for kpi, rule in Settings().rules.items():
        for scope in ("agent", "team", "floor"):
            name = p.alert_name(scope, kpi, rule.direction)
            for severity in ("warning", "critical"):
                expected = getattr(rule, f"{severity}_{rule.direction}") is not None
                assert ((name, severity, scope) in names) == expected, (name, severity, scope)
    for rule in rules:
        # A live value (the longest wait) already says how long: its rule fires at once.
        assert rule["for"] == ("0s" if "Wait" in rule["alert"] else "1m"), rule["alert"]
        assert "{{ $value" in rule["annotations"]["summary"]


def test_rule_expressions_use_the_rule_window_operator_and_sample_gate() -> None:
    rules = {(r["alert"], r["labels"]["severity"]): r["expr"] for r in _rules(Settings())}
    assert rules[("CallpulseAgentAhtSecondsHigh", "critical")] == (
        'callpulse_agent_kpi{kpi="aht_seconds",window="15m"} > 480'
        ' and ignoring(kpi) callpulse_agent_kpi{kpi="calls_handled",window="15m"} >= 5'
    )
    assert rules[("CallpulseTeamConnectRateLow", "warning")] == (
        'callpulse_team_kpi{kpi="connect_rate",window="15m"} < 0.35'
        ' and ignoring(kpi) callpulse_team_kpi{kpi="dials",window="15m"} >= 20'
    )
    assert rules[("CallpulseFloorFcrLow", "warning")] == 'callpulse_floor_kpi{kpi="fcr",window="1h"} < 0.8'


def test_summary_names_agent_team_and_value() -> None:
    summaries = {(r["alert"], r["labels"]["severity"]): r["annotations"]["summary"] for r in _rules(Settings())}
    agent = summaries[("CallpulseAgentAhtSecondsHigh", "warning")]
    assert "{{ $labels.agent }}" in agent and "{{ $labels.team }}" in agent
    assert "humanizeDuration" in agent and "6m 0s" in agent
    team = summaries[("CallpulseTeamConnectRateLow", "critical")]
    assert "{{ $labels.team }}" in team and "humanizePercentage" in team and "25%" in team


def test_team_override_splits_the_rules() -> None:
    rules = _rules(_settings(OVERRIDES))
    aht_agent = [r["expr"] for r in rules if r["alert"] == "CallpulseAgentAhtSecondsHigh"]
    assert 'callpulse_agent_kpi{kpi="aht_seconds",window="15m",team!~"retention"} > 360' in " ".join(aht_agent)
    assert 'callpulse_agent_kpi{kpi="aht_seconds",window="15m",team="retention"} > 420' in " ".join(aht_agent)
    assert 'callpulse_agent_kpi{kpi="aht_seconds",window="15m",team="retention"} > 600' in " ".join(aht_agent)
    assert len(aht_agent) == 4  # default warning + critical, retention warning + critical
    connect_team = [r["expr"] for r in rules if r["alert"] == "CallpulseTeamConnectRateLow"]
    night = [e for e in connect_team if 'team="night shift"' in e]
    assert sorted(e.split(" and ")[0] for e in night) == [
        'callpulse_team_kpi{kpi="connect_rate",window="1h",team="night shift"} < 0.15',
        'callpulse_team_kpi{kpi="connect_rate",window="1h",team="night shift"} < 0.3',
    ]
    others = [e for e in connect_team if e not in night]
    assert len(others) == 2 and all('team!~"night shift"' in e for e in others)
    floor = [r["expr"] for r in rules if r["labels"]["scope"] == "floor"]
    assert not any("team" in e for e in floor)
    assert p.render_rules(p.prometheus_rules(_settings(OVERRIDES))) != p.render_rules(p.prometheus_rules(Settings()))


def test_team_regex_escapes_names() -> None:
    settings = Settings(
        team_rules={"a.b|c": {"fcr": Rule("fcr", warning_below=0.5)}, 'q"t': {"fcr": Rule("fcr", warning_below=0.6)}}
    )
    exprs = [r["expr"] for r in _rules(settings) if r["alert"] == "CallpulseAgentFcrLow"]
    assert any(r'team!~"a\\.b\\|c|q\"t"' in e for e in exprs), exprs
    assert any(r'team="q\"t"' in e for e in exprs)


def test_rules_yaml_parses_and_has_header() -> None:
    text = p.render_rules(p.prometheus_rules(Settings()))
    assert text.startswith("# Generated by `callpulse grafana`")
    data = yaml.safe_load(text)
    assert [g["name"] for g in data["groups"]] == [
        "callpulse-agent",
        "callpulse-team",
        "callpulse-floor",
        "callpulse-queue",
        "callpulse-campaign",
    ]


# --- Grafana dashboards -------------------------------------------------------------------------


def test_dashboards_uids_titles_and_refresh() -> None:
    boards = p.dashboards(Settings())
    assert {name: b["uid"] for name, b in boards.items()} == p.DASHBOARD_UIDS
    assert boards["floor-wallboard.json"]["title"] == "Floor wallboard"
    assert boards["floor-wallboard.json"]["refresh"] == "5s"
    assert len({b["uid"] for b in boards.values()}) == len(p.DASHBOARD_UIDS) == 4
    assert boards["queues.json"]["title"] == "Queues" and boards["queues.json"]["refresh"] == "5s"


def test_queue_rules_follow_the_queue_and_campaign_thresholds() -> None:
    rules = {(r["alert"], r["labels"]["severity"]): r for r in _rules(Settings())}
    longest = rules[("CallpulseQueueLongestWaitSecondsHigh", "warning")]
    assert longest["expr"] == "callpulse_queue_longest_wait_seconds > 60"
    assert (longest["for"], longest["labels"]["scope"]) == ("0s", "queue")
    assert rules[("CallpulseQueueServiceLevelLow", "critical")]["expr"] == (
        'callpulse_queue_kpi{kpi="service_level",window="15m"} < 0.6'
    )
    assert rules[("CallpulseCampaignOutboundAbandonRateHigh", "warning")]["expr"] == (
        'callpulse_campaign_kpi{kpi="outbound_abandon_rate",window="30d"} > 0.03'
    )


def test_queue_override_splits_the_queue_rules() -> None:
    rules = _rules(_settings("[queue.vip.kpi.service_level]\nwarning_below = 0.9\n"))
    exprs = [r["expr"] for r in rules if r["alert"] == "CallpulseQueueServiceLevelLow"]
    assert 'callpulse_queue_kpi{queue="vip",kpi="service_level",window="15m"} < 0.9' in exprs
    assert 'callpulse_queue_kpi{queue!~"vip",kpi="service_level",window="15m"} < 0.8' in exprs


def test_template_variables() -> None:
    boards = p.dashboards(Settings())
    team_vars = {v["name"]: v for v in boards["team.json"]["templating"]["list"]}
    agent_vars = {v["name"]: v for v in boards["agent.json"]["templating"]["list"]}
    assert "team" in team_vars and "agent" in agent_vars
    assert not team_vars["team"]["includeAll"]
    tiles = [panel for panel in _data_panels(boards["team.json"]) if panel.get("repeat") == "agent"]
    assert len(tiles) == 1 and team_vars["agent"]["multi"]


def test_panel_ids_unique_and_grid_within_24_columns() -> None:
    for name, board in p.dashboards(Settings()).items():
        ids = [panel["id"] for panel in _panels(board)]
        assert len(ids) == len(set(ids)), name
        for panel in _panels(board):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])


def test_units_are_set() -> None:
    boards = p.dashboards(Settings())
    floor = boards["floor-wallboard.json"]
    assert _panel(floor, "AHT")["fieldConfig"]["defaults"]["unit"] == "s"
    assert _panel(floor, "Response time")["fieldConfig"]["defaults"]["unit"] == "s"
    assert _panel(floor, "FCR")["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert _panel(floor, "Connect rate")["fieldConfig"]["defaults"]["unit"] == "percentunit"
    agent = boards["agent.json"]
    assert _panel(agent, "AHT")["fieldConfig"]["defaults"]["unit"] == "s"
    assert _panel(agent, "CSAT")["fieldConfig"]["defaults"]["unit"] == "percentunit"
    tile = next(panel for panel in _data_panels(boards["team.json"]) if panel.get("repeat") == "agent")
    assert _by_ref(tile, "aht_seconds")["unit"] == "s"
    assert _by_ref(tile, "fcr")["unit"] == "percentunit"
    for board in boards.values():
        for panel in _data_panels(board):
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def test_floor_headline_panels_are_coloured_by_thresholds() -> None:
    floor = p.dashboards(Settings())["floor-wallboard.json"]
    aht = _panel(floor, "AHT")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert aht == [{"color": "green", "value": None}, {"color": "orange", "value": 360}, {"color": "red", "value": 480}]
    connect = _panel(floor, "Connect rate")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert connect == [
        {"color": "red", "value": None},
        {"color": "orange", "value": 0.25},
        {"color": "green", "value": 0.35},
    ]
    fcr = _panel(floor, "FCR")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert fcr == [{"color": "orange", "value": None}, {"color": "green", "value": 0.8}]
    titles = [panel["title"] for panel in _data_panels(floor)]
    assert "Active alerts" in titles
    for panel in _data_panels(floor):
        assert panel["type"] == "stat" and panel["options"]["colorMode"] == "background"


def test_team_override_changes_dashboard_thresholds() -> None:
    base = p.dashboards(Settings())
    changed = p.dashboards(_settings(OVERRIDES))
    assert p.render_json(base["team.json"]) != p.render_json(changed["team.json"])
    assert p.render_json(base["agent.json"]) != p.render_json(changed["agent.json"])
    # The floor has no team: overrides do not touch it.
    assert p.render_json(base["floor-wallboard.json"]) == p.render_json(changed["floor-wallboard.json"])

    team_aht = _panel(changed["team.json"], "AHT")
    exprs = {t["refId"]: t["expr"] for t in team_aht["targets"]}
    assert 'team!~"retention"' in exprs["aht_seconds"]
    assert 'team="retention"' in exprs["aht_seconds_t0"]
    steps = _by_ref(team_aht, "aht_seconds_t0")["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 420, 600]
    assert [s["value"] for s in team_aht["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 360, 480]

    agent_connect = _panel(changed["agent.json"], "Connect rate")
    exprs = {t["refId"]: t["expr"] for t in agent_connect["targets"]}
    assert 'team="night shift"' in exprs["connect_rate_t0"] and 'window="1h"' in exprs["connect_rate_t0"]
    assert [s["value"] for s in _by_ref(agent_connect, "connect_rate_t0")["thresholds"]["steps"]] == [None, 0.15, 0.3]
    assert agent_connect["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_no_no_data_panels() -> None:
    """Counts fall back to 0 with `or vector(0)`; ratios show '-' through noValue instead of "No data"."""
    counts = re.compile(r'kpi="(calls_handled|dials)"|callpulse_alerts_active|callpulse_events_total|consumer_lag')
    for name, board in p.dashboards(Settings()).items():
        for panel in _data_panels(board):
            assert panel["fieldConfig"]["defaults"]["noValue"] == "-", (name, panel["title"])
            for target in panel["targets"]:
                if counts.search(target["expr"]):
                    assert target["expr"].endswith(" or vector(0)"), (name, target["expr"])


def test_panel_queries_reference_only_known_metrics_and_datasource() -> None:
    for name, board in p.dashboards(_settings(OVERRIDES)).items():
        queries = p.panel_queries(board, VARIABLES)
        assert queries, name
        for expr in queries:
            assert "$" not in expr, expr
            assert set(re.findall(r"\bcallpulse_\w+", expr)) <= KNOWN_METRICS, expr
        for panel in _data_panels(board):
            assert panel["datasource"] == p.DATASOURCE
            assert all(t["datasource"] == p.DATASOURCE for t in panel["targets"])


def test_panel_queries_substitutes_and_names_missing_variables() -> None:
    board = p.dashboards(Settings())["team.json"]
    queries = p.panel_queries(board, VARIABLES)
    assert 'callpulse_team_kpi{team="sales",kpi="aht_seconds",window="15m"}' in queries
    assert any('agent="a-001"' in q for q in queries)
    with pytest.raises(KeyError, match="agent"):
        p.panel_queries(board, {"team": "sales"})
    nested = {"uid": "x", "panels": [{"type": "row", "panels": [{"targets": [{"expr": 'up{job="${job}"}'}]}]}]}
    assert p.panel_queries(nested, {"job": "m"}) == ['up{job="m"}']


def test_datasource_uid_matches_provisioning() -> None:
    data = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    assert [ds["uid"] for ds in data["datasources"]] == [p.DATASOURCE_UID]
    assert data["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/callpulse.yml").read_text(encoding="utf-8"))
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_grafana_steps_ascend() -> None:
    cases = [
        Rule("aht_seconds", warning_above=1, critical_above=2),
        Rule("aht_seconds", critical_above=2),
        Rule("fcr", warning_below=0.8, critical_below=0.5),
        Rule("fcr", critical_below=0.5),
        Rule("fcr", warning_below=0.8),
    ]
    for rule in cases:
        steps = p.grafana_steps(rule)
        assert steps[0]["value"] is None
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values), rule
    assert p.grafana_steps(Rule("fcr", critical_below=0.5)) == [
        {"color": "red", "value": None},
        {"color": "green", "value": 0.5},
    ]


def test_every_dashboard_has_template_and_annotation_lists() -> None:
    for name, board in p.dashboards(Settings()).items():
        assert isinstance(board["templating"]["list"], list), name
        assert isinstance(board["annotations"]["list"], list), name
