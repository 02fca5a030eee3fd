"""docker-compose.yml checked without a Docker engine: parse it and hold it against the repo and the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from callpulse.settings import ENV_DEFAULTS, from_env

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CALLPULSE_SERVICES = ("worker-1", "worker-2", "monitor", "simulator")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _volume_source(volume: Any) -> tuple[str, str]:
    """(source, target) of a short ('src:dst[:mode]') or long ({source, target}) volume entry."""
    if isinstance(volume, dict):
        return str(volume.get("source", "")), str(volume["target"])
    parts = str(volume).split(":")
    return (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Resolve ${VAR}, ${VAR:-default} and ${VAR:?message} as compose would, with `env`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        text = match.group(0)
        if name in env:
            return env[name]
        if ":-" in text:
            return text.split(":-", 1)[1][:-1]
        if "?" in text:
            raise AssertionError(f"{name} is required by docker-compose.yml")
        return ""

    return _INTERPOLATION.sub(one, value)


def test_services_present(compose: dict[str, Any]) -> None:
    services = _services(compose)
    expected = {"kafka", "kafka-init", "redis", "prometheus", "grafana", *CALLPULSE_SERVICES}
    assert expected <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in _environment(services["kafka"])["KAFKA_PROCESS_ROLES"]  # KRaft
    for name, service in services.items():
        assert "zookeeper" not in str(service.get("image", "")), name
        assert not any("ZOOKEEPER" in key for key in _environment(service)), name


def test_bind_mounts_exist_in_repo(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            source, target = _volume_source(volume)
            if source.startswith((".", "/")):
                assert not source.startswith("/"), f"{name}: {source} is an absolute host path, use ./..."
                path = (ROOT / source).resolve()
                assert path.exists(), f"{name}: bind mount {source} -> {target} does not exist in the repo"
                assert ROOT in path.parents or path == ROOT, f"{name}: {source} leaves the repo"
            elif source:
                assert source in named, f"{name}: named volume {source} is not declared under volumes:"


def test_provisioning_mounted_where_grafana_and_prometheus_read_it(compose: dict[str, Any]) -> None:
    services = _services(compose)
    grafana = dict(_volume_source(v) for v in services["grafana"]["volumes"])
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["./grafana/dashboards"] == "/var/lib/grafana/dashboards"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/callpulse.yml").read_text(encoding="utf-8"))
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    prometheus = dict(_volume_source(v) for v in services["prometheus"]["volumes"])
    assert prometheus["./prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_grafana_kiosk_settings(compose: dict[str, Any]) -> None:
    env = _environment(_services(compose)["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_callpulse_env_names_are_the_contracts(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        for key in _environment(service):
            if key.startswith("CALLPULSE"):
                assert key in ENV_DEFAULTS, f"{name}: {key} is not a callpulse setting ({', '.join(ENV_DEFAULTS)})"
    text = COMPOSE.read_text(encoding="utf-8")
    for key in re.findall(r"\bCALLPULSE_\w+", text):
        assert key in ENV_DEFAULTS, f"{key} is not a callpulse setting"


def test_callpulse_services_settings_load(compose: dict[str, Any]) -> None:
    """The env each callpulse service gets builds valid Settings, reading the thresholds file it mounts."""
    host_env = {"CALLPULSE_TOKEN": "secret", "GRAFANA_ADMIN_PASSWORD": "secret"}
    built = {}
    for name in CALLPULSE_SERVICES:
        service = _services(compose)[name]
        env = {key: _interpolate(value, host_env) for key, value in _environment(service).items()}
        mounts = {target: source for source, target in map(_volume_source, service.get("volumes", []))}
        if env.get("CALLPULSE_CONFIG"):
            assert env["CALLPULSE_CONFIG"] in mounts, f"{name}: CALLPULSE_CONFIG {env['CALLPULSE_CONFIG']} not mounted"
            env["CALLPULSE_CONFIG"] = str(ROOT / mounts[env["CALLPULSE_CONFIG"]])
        built[name] = from_env(env)
    for name in ("worker-1", "worker-2", "monitor"):
        assert built[name].kafka == "kafka:9092"
        assert built[name].redis_url == "redis://redis:6379/0"
        assert built[name].config_path is not None
    assert built["simulator"].kafka == "kafka:9092"
    monitor = built["monitor"]
    assert (monitor.http_host, monitor.http_port) == ("0.0.0.0", 8700)
    assert monitor.token == "secret"
    assert _environment(_services(compose)["monitor"])["CALLPULSE_TOKEN"].startswith("${CALLPULSE_TOKEN:?")
    with pytest.raises(AssertionError, match="CALLPULSE_TOKEN"):
        _interpolate(_environment(_services(compose)["monitor"])["CALLPULSE_TOKEN"], {})


def test_commands(compose: dict[str, Any]) -> None:
    services = _services(compose)
    # Workers bind their health/metrics port on all interfaces so Prometheus can scrape worker-N:6066.
    assert services["worker-1"]["command"] == ["worker", "--web-host", "0.0.0.0"]
    assert services["worker-2"]["command"] == ["worker", "--web-host", "0.0.0.0"]
    assert services["monitor"]["command"] == ["monitor"]
    assert services["simulator"]["command"][0] == "simulate"
    for name in CALLPULSE_SERVICES:
        assert services[name]["build"]["context"] == "."
    redis_cmd = services["redis"]["command"]
    assert "--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/healthz" in " ".join(services["monitor"]["healthcheck"]["test"])
    init = " ".join(services["kafka-init"]["entrypoint"])
    assert "/opt/kafka/bin/kafka-topics.sh" in init
    for topic in ("calls", "tickets", "alerts", "deadletter"):
        assert topic in init
    assert "--partitions 4" in init


def test_published_ports_do_not_collide(compose: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host = str(port.get("published", ""))
            else:
                parts = str(port).split(":")
                host = parts[-2] if len(parts) >= 2 else ""
            if not host:
                continue
            assert host not in seen, f"host port {host} published by both {seen[host]} and {name}"
            seen[host] = name
    assert seen == {"8700": "monitor", "3000": "grafana", "9090": "prometheus"}


def test_depends_on_targets_exist_with_conditions(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form with conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if "healthcheck" in services[target]:
                assert condition == "service_healthy", f"{name} -> {target}: has a healthcheck, wait for it"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
    for name in ("kafka", "redis", "monitor", "worker-1", "worker-2", "prometheus", "grafana"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    assert 'ENTRYPOINT ["callpulse"]' in dockerfile
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignore and ".git" in ignore


def test_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        target for job in config["scrape_configs"] for static in job["static_configs"] for target in static["targets"]
    }
    assert {"monitor:8700", "worker-1:6066", "worker-2:6066"} <= targets
    for target in targets - {"localhost:9090"}:
        assert target.split(":")[0] in _services(compose), f"scrape target {target} is not a compose service"
    assert config["rule_files"] == ["rules.yml"]
