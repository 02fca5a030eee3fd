"""promtool on the Prometheus config, the generated rules and their unit tests (promtool from Debian's prometheus)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from callpulse import provisioning
from callpulse.settings import Settings, load_thresholds

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's promtool; a missing one fails the test (never a skip), saying how to install it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run .ci/run, or apt-get install -y prometheus (Debian's package)")
    return path


def _run(promtool: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"


def test_check_config(promtool: str, tmp_path: Path) -> None:
    # The token file only exists inside the Prometheus container: check a copy pointing at a stand-in,
    # with the rules next to it, so promtool validates every reference for real.
    config = (ROOT / "prometheus/prometheus.yml").read_text(encoding="utf-8")
    assert "credentials_file: /prometheus/callpulse-token" in config
    (tmp_path / "token").write_text("t", encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/prometheus/callpulse-token", str(tmp_path / "token")), encoding="utf-8"
    )
    for name in ("rules.yml", "operations.yml"):
        shutil.copy(ROOT / "prometheus" / name, tmp_path / name)
    result = _run(promtool, "check", "config", tmp_path / "prometheus.yml")
    _ok(result)
    assert "SUCCESS" in result.stdout + result.stderr
    assert "operations.yml" in result.stdout + result.stderr, "the operational rules are loaded"


def test_check_rules(promtool: str) -> None:
    result = _run(promtool, "check", "rules", "prometheus/rules.yml")
    _ok(result)
    assert "SUCCESS" in result.stdout + result.stderr


def test_rule_unit_tests(promtool: str) -> None:
    result = _run(promtool, "test", "rules", "prometheus/rules_test.yml")
    _ok(result)
    assert "SUCCESS" in result.stdout + result.stderr


def test_rule_unit_tests_catch_a_changed_threshold(promtool: str, tmp_path: Path) -> None:
    rules = (ROOT / "prometheus/rules.yml").read_text(encoding="utf-8")
    assert "> 480" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("> 480", "> 600"), encoding="utf-8")
    shutil.copy(ROOT / "prometheus/rules_test.yml", tmp_path / "rules_test.yml")
    result = _run(promtool, "test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "CallpulseAgentAhtSecondsHigh" in result.stdout + result.stderr


def test_team_override_rules(promtool: str, tmp_path: Path) -> None:
    """A team override fires at its own threshold and the default rule leaves that team alone."""
    settings = Settings(
        **load_thresholds(
            """
            [team.retention.kpi.aht_seconds]
            warning_above = 420
            critical_above = 600

            [team."a.b|c".kpi.fcr]
            warning_below = 0.5
            """
        )
    )
    (tmp_path / "rules.yml").write_text(provisioning.render_rules(provisioning.prometheus_rules(settings)))
    _ok(_run(promtool, "check", "rules", "rules.yml", cwd=tmp_path))

    def series(agent: str, team: str, kpi: str, window: str, value: float) -> dict[str, str]:
        labels = f'agent="{agent}",team="{team}",kpi="{kpi}",window="{window}"'
        return {"series": f"callpulse_agent_kpi{{{labels}}}", "values": f"{value}x10"}

    def alert(agent: str, team: str, kpi: str, window: str, severity: str, summary: str) -> dict[str, object]:
        labels = {"agent": agent, "team": team, "kpi": kpi, "window": window, "scope": "agent", "severity": severity}
        return {"exp_labels": labels, "exp_annotations": {"summary": summary}}

    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 400 s: a warning under the default (360) but fine under retention's 420
                    series("d1", "sales", "aht_seconds", "15m", 400),
                    series("d1", "sales", "calls_handled", "15m", 10),
                    series("r1", "retention", "aht_seconds", "15m", 400),
                    series("r1", "retention", "calls_handled", "15m", 10),
                    # 500 s: critical by default (480), only a warning for retention (600)
                    series("r2", "retention", "aht_seconds", "15m", 500),
                    series("r2", "retention", "calls_handled", "15m", 10),
                    # FCR 0.6: below the default 0.8, above the odd-named team's 0.5
                    series("f1", "a.b|c", "fcr", "1h", 0.6),
                    series("f2", "abc", "fcr", "1h", 0.6),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "CallpulseAgentAhtSecondsHigh",
                        "exp_alerts": [
                            alert(
                                "d1",
                                "sales",
                                "aht_seconds",
                                "15m",
                                "warning",
                                "Agent d1 (team sales): AHT over 15m is 6m 40s, above the warning threshold of 6m 0s",
                            ),
                            alert(
                                "r2",
                                "retention",
                                "aht_seconds",
                                "15m",
                                "warning",
                                "Agent r2 (team retention): AHT over 15m is 8m 20s, "
                                "above the warning threshold of 7m 0s",
                            ),
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "CallpulseAgentFcrLow",
                        "exp_alerts": [
                            alert(
                                "f2",
                                "abc",
                                "fcr",
                                "1h",
                                "warning",
                                "Agent f2 (team abc): FCR over 1h is 60%, below the warning threshold of 80%",
                            )
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "override_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    _ok(_run(promtool, "test", "rules", "override_test.yml", cwd=tmp_path))


# --- operational rules (generated from callpulse/health_rules.py) and Alertmanager ------------------------------


def test_operations_rules_check_and_pass_their_unit_tests(promtool: str) -> None:
    _ok(_run(promtool, "check", "rules", "prometheus/operations.yml"))
    result = _run(promtool, "test", "rules", "prometheus/operations_test.yml")
    _ok(result)
    assert "SUCCESS" in result.stdout + result.stderr


def test_operations_rule_tests_catch_a_shorter_hold(promtool: str, tmp_path: Path) -> None:
    """Consumer lag must grow for 5 minutes before anyone is paged: a 1 minute hold fails the tests."""
    rules = (ROOT / "prometheus/operations.yml").read_text(encoding="utf-8")
    lag = rules.index("CallpulseConsumerLagGrowing")
    hold = rules.index("for: 5m", lag)
    (tmp_path / "operations.yml").write_text(rules[:hold] + "for: 1m" + rules[hold + 7 :], encoding="utf-8")
    shutil.copy(ROOT / "prometheus/operations_test.yml", tmp_path / "operations_test.yml")
    result = _run(promtool, "test", "rules", "operations_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "CallpulseConsumerLagGrowing" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def amtool() -> str:
    """Debian's amtool (package prometheus-alertmanager); a missing one fails the test, saying how to install it."""
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool not found: run .ci/system-deps, or apt-get install -y prometheus-alertmanager")
    return path


def _uncomment_examples(text: str) -> str:
    """alertmanager.yml with its commented receiver and route examples switched on."""
    out = []
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        body = stripped[2:]
        if indent and stripped.startswith("# ") and (body.startswith(("-", " ")) or re.match(r"[a-z_]+:( |$)", body)):
            out.append(indent + body)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_alertmanager_config_and_its_documented_receivers_are_valid(amtool: str, tmp_path: Path) -> None:
    shipped = (ROOT / "alertmanager/alertmanager.yml").read_text(encoding="utf-8")
    _ok(subprocess.run([amtool, "check-config", str(ROOT / "alertmanager/alertmanager.yml")], capture_output=True,
                       text=True, timeout=60, check=False))  # fmt: skip
    examples = _uncomment_examples(shipped)
    config = yaml.safe_load(examples)
    assert {r["name"] for r in config["receivers"]} >= {"keep-only", "on-call", "team-leads", "ops-mail"}
    assert config["route"]["routes"] == [{"matchers": ['scope="pipeline"'], "receiver": "on-call"}]
    (tmp_path / "alertmanager.yml").write_text(examples, encoding="utf-8")
    _ok(subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True,
                       timeout=60, check=False))  # fmt: skip
