"""docker-compose.yml checked without a Docker engine: parse it and hold it against the repo and the settings."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from callpulse.embedded import REDIS_TUNING
from callpulse.settings import ENV_DEFAULTS, from_env

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ADMIN_OVERRIDE = ROOT / "docker-compose.admin.yml"
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
    expected = {"kafka", "kafka-init", "redis", "prometheus", "alertmanager", "grafana", *CALLPULSE_SERVICES}
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


def test_grafana_has_no_anonymous_access(compose: dict[str, Any]) -> None:
    """The team and agent boards show per-agent KPIs: nobody sees them without logging in."""
    env = _environment(_services(compose)["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_USERS_AUTO_ASSIGN_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def _kiosk_script(compose: dict[str, Any]) -> str:
    """grafana-init's shell script as the container runs it (compose turns $$ into $)."""
    entrypoint = _services(compose)["grafana-init"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    return str(entrypoint[2]).replace("$$", "$")


def test_grafana_init_creates_a_read_only_kiosk_account(compose: dict[str, Any]) -> None:
    init = _services(compose)["grafana-init"]
    assert init["restart"] == "no"
    assert init["depends_on"] == {"grafana": {"condition": "service_healthy"}}
    env = _environment(init)
    assert env["KIOSK_PASSWORD"] == "${GRAFANA_KIOSK_PASSWORD:-}"
    script = _kiosk_script(compose)
    assert "http://grafana:3000/api/admin/users" in script and '\\"login\\": \\"kiosk\\"' in script
    assert subprocess.run(["sh", "-n", "-c", script], capture_output=True, check=False).returncode == 0


def test_grafana_init_without_a_kiosk_password_does_nothing(compose: dict[str, Any]) -> None:
    result = subprocess.run(["sh", "-c", _kiosk_script(compose)], env={"PATH": "/usr/bin:/bin", "KIOSK_PASSWORD": ""},
                            capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "GRAFANA_KIOSK_PASSWORD is unset: no kiosk account" in result.stdout


def test_prometheus_and_alertmanager_are_not_published_and_have_no_lifecycle_api(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in ("prometheus", "alertmanager"):
        assert "ports" not in services[name], f"{name} is published: anyone on the network could query or stop it"
        flags = " ".join(map(str, services[name].get("command", [])))
        assert "--web.enable-lifecycle" not in flags and "--web.enable-admin-api" not in flags, name


def test_admin_override_publishes_prometheus_and_alertmanager_on_loopback_only() -> None:
    override = yaml.safe_load(ADMIN_OVERRIDE.read_text(encoding="utf-8"))
    published = {name: service["ports"] for name, service in override["services"].items()}
    assert published == {"prometheus": ["127.0.0.1:9090:9090"], "alertmanager": ["127.0.0.1:9093:9093"]}


def test_simulator_runs_only_in_the_demo_profile(compose: dict[str, Any]) -> None:
    """`docker compose up -d` must never put fake agents into real KPIs, nor restart them there."""
    services = _services(compose)
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["simulator"]["restart"] == "no"
    for name, service in services.items():
        if name != "simulator":
            assert "profiles" not in service, f"{name} would not start with a plain `docker compose up`"
            assert "simulator" not in service.get("depends_on", {}), f"{name} pulls the simulator in"


def test_callpulse_healthchecks_poll_healthz(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in ("worker-1", "worker-2", "monitor"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "/healthz" in test and "/metrics" not in test, f"{name}: {test}"
    assert "127.0.0.1:6066/healthz" in " ".join(services["worker-1"]["healthcheck"]["test"])


def test_alertmanager_receives_prometheus_alerts(compose: dict[str, Any]) -> None:
    services = _services(compose)
    config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    mounts = dict(_volume_source(v) for v in services["alertmanager"]["volumes"])
    assert mounts["./alertmanager"] == "/etc/alertmanager"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]
    assert (ROOT / "alertmanager/alertmanager.yml").exists()


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
    assert seen == {"8700": "monitor", "3000": "grafana"}


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
    for name in ("kafka", "redis", "monitor", "worker-1", "worker-2", "prometheus", "alertmanager", "grafana"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_dockerfile_installs_pinned_dependencies_before_the_code_and_runs_as_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    text = "\n".join(lines)
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert 'ENTRYPOINT ["callpulse"]' in text

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    deps = first("COPY pyproject.toml constraints.txt")
    install_deps = next(i for i, line in enumerate(lines) if "pip install -c constraints.txt" in line)
    code = min(first("COPY callpulse"), first("COPY streams"), first("COPY monitor"))
    assert deps < install_deps < code, "dependencies must be installed (pinned) before the code is copied"
    assert not any(line.startswith("COPY . ") for line in lines), "copying the whole context busts the cache"
    assert first("RUN pip install --no-deps .") > code
    user = first("USER ")
    assert lines[user].split()[1] not in ("root", "0") and user > first("RUN pip install --no-deps .")
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignore and ".git" in ignore


def test_constraints_pin_every_dependency_within_pyproject_ranges() -> None:
    """constraints.txt (Docker and CI install through it) pins each runtime, embedded and dev dependency."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is not pinned in constraints.txt: run `make constraints`"
        assert spec.specifier.contains(pins[name], prereleases=True), f"{spec.name}=={pins[name]} outside {spec}"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install -q -c constraints.txt" in makefile, "CI must install the same pins"


def test_make_demo_installs_no_test_tools() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    demo = re.search(r"^demo: (.+)$", makefile, re.M)
    assert demo is not None and demo.group(1).strip() == "$(DEMO_STAMP)"
    recipe = makefile.split("$(DEMO_STAMP): ", 1)[1].split("\n\n", 1)[0]
    assert "-e '.[embedded]'" in recipe and "dev" not in recipe


def test_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        target for job in config["scrape_configs"] for static in job["static_configs"] for target in static["targets"]
    }
    assert {"monitor:8700", "worker-1:6066", "worker-2:6066"} <= targets
    for target in targets - {"localhost:9090"}:
        assert target.split(":")[0] in _services(compose), f"scrape target {target} is not a compose service"
    assert config["rule_files"] == ["rules.yml", "operations.yml"]


def test_target_down_rule_watches_every_callpulse_scrape_job() -> None:
    from callpulse.health_rules import JOBS

    config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert set(JOBS) == {job for job in jobs if job.startswith("callpulse")}


def test_production_redis_runs_with_the_tuning_the_tests_and_benchmarks_use(compose: dict[str, Any]) -> None:
    # the embedded Redis (tests, demo) and `make bench` run with REDIS_TUNING: production must too, or the
    # memory figures in BENCHMARKS.md are not production's
    command = _services(compose)["redis"]["command"]
    args = command[1:]
    for name, value in REDIS_TUNING.items():
        assert f"--{name}" in args and args[args.index(f"--{name}") + 1] == value, (name, command)
