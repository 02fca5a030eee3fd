"""Settings: built once at the entry point from env, flags and the thresholds TOML, then passed down."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from callpulse.exceptions import SettingsError

KPI_KEYS: tuple[str, ...] = (
    "aht_seconds",
    "connect_rate",
    "fcr",
    "response_seconds",
    "calls_handled",
    "dials",
    "conversion_rate",
    "csat",
    "escalation_rate",
    "occupancy",
    "outbound_abandon_rate",
)
QUEUE_KPI_KEYS: tuple[str, ...] = (
    "offered",
    "answered",
    "abandoned",
    "short_abandoned",
    "asa_seconds",
    "service_level",
    "abandon_rate",
    "waiting",
    "longest_wait_seconds",
)
LIVE_QUEUE_KPIS: tuple[str, ...] = ("waiting", "longest_wait_seconds")  # read at now, not over a window
LIVE_WINDOW = "live"  # the `window` of a rule (and its alerts) on a live value
CAMPAIGN_KPI_KEYS: tuple[str, ...] = ("outbound_abandon_rate",)
CAMPAIGN_WINDOWS: dict[str, int] = {"24h": 86_400, "30d": 30 * 86_400}  # the regulators' windows, on top of rolling
QUEUE_FIELDS: dict[str, str] = {"sl_threshold_s": "seconds", "short_abandon_s": "seconds", "max_wait": "duration"}
RULE_FIELDS: tuple[str, ...] = (
    "warning_above",
    "critical_above",
    "warning_below",
    "critical_below",
    "min_samples",
    "window",
)
ENV_DEFAULTS: dict[str, str] = {
    "CALLPULSE_KAFKA": "localhost:9092",
    "CALLPULSE_REDIS": "redis://localhost:6379/0",
    "CALLPULSE_HTTP": "127.0.0.1:8700",
    "CALLPULSE_CONFIG": "",
    "CALLPULSE_TOKEN": "",
    "CALLPULSE_TOPIC_PREFIX": "",
}
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, name: str) -> int:
    """Parse '15m', '1h', '8h', '24h', '30s', '2d' into whole seconds."""
    if not isinstance(text, str):
        raise SettingsError(f"{name} is {text!r}, must be a duration string such as '15m', '1h' or '24h'")
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise SettingsError(f"{name} is {text!r}, must be a positive duration such as '15m', '1h' or '24h'")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def format_duration(seconds: int) -> str:
    """Format whole seconds the way windows are named: 900 -> '15m'."""
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_S[unit] == 0:
            return f"{seconds // _UNIT_S[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Rule:
    """A threshold rule for one KPI; `None` means that bound is off."""

    kpi: str
    warning_above: float | None = None
    critical_above: float | None = None
    warning_below: float | None = None
    critical_below: float | None = None
    min_samples: int = 1
    window: str = "15m"

    @property
    def direction(self) -> str:
        """'above' when high values are bad, 'below' when low values are bad."""
        return "above" if self.warning_above is not None or self.critical_above is not None else "below"


DEFAULT_RULES: dict[str, Rule] = {
    "aht_seconds": Rule("aht_seconds", warning_above=360, critical_above=480, min_samples=5, window="15m"),
    "fcr": Rule("fcr", warning_below=0.80, min_samples=5, window="1h"),
    "connect_rate": Rule("connect_rate", warning_below=0.35, critical_below=0.25, min_samples=20, window="15m"),
    "response_seconds": Rule("response_seconds", warning_above=3600, min_samples=3, window="1h"),
    "csat": Rule("csat", warning_below=0.85, min_samples=5, window="1h"),
    "escalation_rate": Rule("escalation_rate", warning_above=0.10, min_samples=10, window="1h"),
    "conversion_rate": Rule("conversion_rate", warning_below=0.04, min_samples=20, window="1h"),
}


DEFAULT_QUEUE_RULES: dict[str, Rule] = {
    "service_level": Rule("service_level", warning_below=0.80, critical_below=0.60, min_samples=10, window="15m"),
    "abandon_rate": Rule("abandon_rate", warning_above=0.05, critical_above=0.10, min_samples=20, window="15m"),
    "asa_seconds": Rule("asa_seconds", warning_above=30, min_samples=10, window="15m"),
    "longest_wait_seconds": Rule("longest_wait_seconds", warning_above=60, critical_above=120, window=LIVE_WINDOW),
}
DEFAULT_CAMPAIGN_RULES: dict[str, Rule] = {
    # US Telemarketing Sales Rule: at most 3 % of live answers dropped per campaign per 30 days.
    "outbound_abandon_rate": Rule("outbound_abandon_rate", warning_above=0.03, min_samples=100, window="30d"),
}


@dataclass(frozen=True)
class QueueSettings:
    """A queue's settings: answered within `sl_threshold_s` meets SL, abandons under `short_abandon_s` are short,
    a call queued longer than `max_wait_s` ago no longer counts as waiting."""

    sl_threshold_s: float = 20
    short_abandon_s: float = 5
    max_wait_s: int = 7200


@dataclass(frozen=True)
class Settings:
    """Everything a callpulse process needs to know, in one place."""

    kafka: str = ENV_DEFAULTS["CALLPULSE_KAFKA"]
    redis_url: str = ENV_DEFAULTS["CALLPULSE_REDIS"]
    http_host: str = "127.0.0.1"
    http_port: int = 8700
    config_path: str | None = None
    token: str | None = None
    topic_prefix: str = ""
    windows_s: tuple[int, ...] = (900, 3600, 28800)
    repeat_window_s: int = 86400
    hysteresis: float = 0.05
    rules: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    team_rules: Mapping[str, Mapping[str, Rule]] = field(default_factory=dict)
    queue_defaults: QueueSettings = QueueSettings()
    queue_overrides: Mapping[str, QueueSettings] = field(default_factory=dict)
    queue_rules: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_QUEUE_RULES))
    queue_kpi_overrides: Mapping[str, Mapping[str, Rule]] = field(default_factory=dict)
    campaign_rules: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_CAMPAIGN_RULES))
    # Worker tuning: not part of the contract, but kept here so tests and benchmarks can set them.
    batch_max: int = 2000
    batch_within_s: float = 0.02
    session_timeout_s: float = 8.0
    fetch_max_wait_ms: int = 20
    consumer_group: str = "callpulse"
    sweep_interval_s: float = 1.0
    allowed_origins: tuple[str, ...] = ()
    ws_max_message_bytes: int = 64 * 1024
    ws_queue_size: int = 64
    ws_ping_interval_s: float | None = 20.0
    ws_ping_timeout_s: float | None = 20.0
    max_future_s: int = 300

    @property
    def window_names(self) -> tuple[str, ...]:
        """Window names in the contract's spelling, shortest first."""
        return tuple(format_duration(w) for w in self.windows_s)

    @property
    def longest_window_s(self) -> int:
        """The longest rolling window: older events are late."""
        return max(self.windows_s)

    def topic(self, name: str) -> str:
        """Return the full topic name for 'calls', 'tickets', 'alerts' or 'deadletter'."""
        return f"{self.topic_prefix}{name}"

    def window_s(self, name: str) -> int:
        """Seconds of a configured window given its name; a SettingsError names the allowed ones."""
        for seconds in self.windows_s:
            if format_duration(seconds) == name:
                return seconds
        raise SettingsError(f"window is {name!r}, must be one of {', '.join(self.window_names)}")

    def rule_for(self, kpi: str, team: str | None) -> Rule | None:
        """The rule watching `kpi` for `team` (team override first), or None."""
        if team is not None and kpi in self.team_rules.get(team, {}):
            return self.team_rules[team][kpi]
        return self.rules.get(kpi)

    def queue(self, name: str) -> QueueSettings:
        """A queue's settings: its [queue.<name>] overrides, else [queues]."""
        return self.queue_overrides.get(name, self.queue_defaults)

    def queue_rule_for(self, kpi: str, queue: str | None) -> Rule | None:
        """The rule watching a queue KPI for `queue` ([queue.<name>.kpi.<key>] first), or None."""
        if queue is not None and kpi in self.queue_kpi_overrides.get(queue, {}):
            return self.queue_kpi_overrides[queue][kpi]
        return self.queue_rules.get(kpi)

    @property
    def max_wait_s(self) -> int:
        """The longest max_wait of any queue: how long a waiting call is remembered."""
        return max([self.queue_defaults.max_wait_s, *(q.max_wait_s for q in self.queue_overrides.values())])

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (used by tests and the demo)."""
        return dataclasses.replace(self, **changes)


def _parse_rule(
    kpi: str,
    raw: Any,
    where: str,
    base: Rule | None,
    windows: tuple[str, ...],
    *,
    keys: tuple[str, ...] = KPI_KEYS,
) -> Rule:
    if kpi not in keys:
        raise SettingsError(f"{where}: unknown KPI {kpi!r}, must be one of {', '.join(keys)}")
    if not isinstance(raw, dict):
        raise SettingsError(f"{where}.{kpi} must be a table of {', '.join(RULE_FIELDS)}")
    values: dict[str, Any] = {}
    if base is not None:
        values = {f: getattr(base, f) for f in RULE_FIELDS}
    for key, value in raw.items():
        name = f"{where}.{kpi}.{key}"
        if key not in RULE_FIELDS:
            raise SettingsError(f"{name}: unknown key, must be one of {', '.join(RULE_FIELDS)}")
        if key == "window":
            if kpi in LIVE_QUEUE_KPIS and keys == QUEUE_KPI_KEYS:
                raise SettingsError(f"{name}: {kpi} is a live value, not windowed; remove 'window'")
            if value not in windows:
                kind = "windows" if keys == CAMPAIGN_KPI_KEYS else "rolling windows"
                raise SettingsError(f"{name} is {value!r}, must be one of the {kind} {list(windows)}")
        elif key == "min_samples":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} is {value!r}, must be an integer >= 1")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SettingsError(f"{name} is {value!r}, must be a number")
        values[key] = value
    rule = Rule(kpi=kpi, **values)
    above = rule.warning_above is not None or rule.critical_above is not None
    below = rule.warning_below is not None or rule.critical_below is not None
    if above and below:
        raise SettingsError(f"{where}.{kpi}: set either *_above or *_below thresholds, not both")
    if not above and not below:
        raise SettingsError(f"{where}.{kpi}: needs warning_above/critical_above or warning_below/critical_below")
    if rule.warning_above is not None and rule.critical_above is not None and rule.critical_above < rule.warning_above:
        raise SettingsError(f"{where}.{kpi}: critical_above must be >= warning_above")
    if rule.warning_below is not None and rule.critical_below is not None and rule.critical_below > rule.warning_below:
        raise SettingsError(f"{where}.{kpi}: critical_below must be <= warning_below")
    return rule


def load_thresholds(text: str, *, source: str = "config") -> dict[str, Any]:
    """Parse the thresholds TOML into Settings fields (windows, repeat window, rules, team rules)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML ({exc}); fix the syntax") from exc
    allowed_top = {"windows", "kpi", "team", "alerts", "queues", "queue", "queue_kpi", "campaign_kpi"}
    for key in data:
        if key not in allowed_top:
            raise SettingsError(f"{source}: unknown section [{key}], must be one of {sorted(allowed_top)}")
    out: dict[str, Any] = {}
    windows = data.get("windows", {})
    for key in windows:
        if key not in ("rolling", "repeat_window"):
            raise SettingsError(f"{source}: windows.{key}: unknown key, must be 'rolling' or 'repeat_window'")
    if "rolling" in windows:
        rolling = windows["rolling"]
        if not isinstance(rolling, list) or not rolling:
            raise SettingsError(f"{source}: windows.rolling must be a non-empty list such as ['15m', '1h', '8h']")
        secs = sorted({parse_duration(w, name="windows.rolling") for w in rolling})
        for s in secs:
            if s % 10:
                raise SettingsError(f"windows.rolling: {format_duration(s)} must be a multiple of 10 s")
        out["windows_s"] = tuple(secs)
    if "repeat_window" in windows:
        out["repeat_window_s"] = parse_duration(windows["repeat_window"], name="windows.repeat_window")
    names = tuple(format_duration(s) for s in out.get("windows_s", Settings.windows_s))
    alerts = data.get("alerts", {})
    for key, value in alerts.items():
        if key != "hysteresis":
            raise SettingsError(f"{source}: alerts.{key}: unknown key, must be 'hysteresis'")
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise SettingsError(f"alerts.hysteresis is {value!r}, must be a fraction in [0, 1), e.g. 0.05")
        out["hysteresis"] = float(value)
    rules = dict(DEFAULT_RULES)
    for kpi, raw in data.get("kpi", {}).items():
        rules[kpi] = _parse_rule(kpi, raw, "kpi", _base(raw, DEFAULT_RULES.get(kpi)), names)
    for kpi, rule in rules.items():
        if rule.window not in names:
            rules[kpi] = dataclasses.replace(rule, window=names[0])
    out["rules"] = rules
    team_rules: dict[str, dict[str, Rule]] = {}
    for team, section in data.get("team", {}).items():
        if not isinstance(section, dict) or set(section) - {"kpi"}:
            raise SettingsError(f"{source}: team.{team} may only hold [team.{team}.kpi.<key>] tables")
        team_rules[team] = {
            kpi: _parse_rule(kpi, raw, f"team.{team}.kpi", _base(raw, rules.get(kpi)), names)
            for kpi, raw in section.get("kpi", {}).items()
        }
    out["team_rules"] = team_rules
    out.update(_load_queue_sections(data, names, source))
    return out


def _queue_settings(raw: Mapping[str, Any], where: str, base: QueueSettings) -> QueueSettings:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "kpi":
            continue
        name = f"{where}.{key}"
        if key not in QUEUE_FIELDS:
            raise SettingsError(f"{name}: unknown key, must be one of {', '.join(QUEUE_FIELDS)} or a [kpi] table")
        if key == "max_wait":
            values["max_wait_s"] = parse_duration(value, name=name)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SettingsError(f"{name} is {value!r}, must be a number of seconds >= 0")
        else:
            values[key] = value
    return dataclasses.replace(base, **values)


def _load_queue_sections(data: Mapping[str, Any], names: tuple[str, ...], source: str) -> dict[str, Any]:
    """[queues], [queue.<name>] (settings and .kpi rules), [queue_kpi.<key>] and [campaign_kpi.<key>]."""
    out: dict[str, Any] = {}
    defaults = _queue_settings(data.get("queues", {}), "queues", QueueSettings())
    out["queue_defaults"] = defaults
    queue_rules = dict(DEFAULT_QUEUE_RULES)
    for kpi, raw in data.get("queue_kpi", {}).items():
        queue_rules[kpi] = _queue_rule(kpi, raw, "queue_kpi", DEFAULT_QUEUE_RULES.get(kpi), names)
    for kpi, rule in queue_rules.items():
        if kpi not in LIVE_QUEUE_KPIS and rule.window not in names:
            queue_rules[kpi] = dataclasses.replace(rule, window=names[0])
    out["queue_rules"] = queue_rules
    overrides: dict[str, QueueSettings] = {}
    kpi_overrides: dict[str, dict[str, Rule]] = {}
    for queue, section in data.get("queue", {}).items():
        if not isinstance(section, dict):
            raise SettingsError(f"{source}: queue.{queue} must be a table of {', '.join(QUEUE_FIELDS)} and [kpi]")
        overrides[queue] = _queue_settings(section, f"queue.{queue}", defaults)
        kpi_overrides[queue] = {
            kpi: _queue_rule(kpi, raw, f"queue.{queue}.kpi", _base(raw, queue_rules.get(kpi)), names)
            for kpi, raw in section.get("kpi", {}).items()
        }
    out["queue_overrides"] = overrides
    out["queue_kpi_overrides"] = kpi_overrides
    campaign_rules = dict(DEFAULT_CAMPAIGN_RULES)
    campaign_windows = (*names, *(w for w in CAMPAIGN_WINDOWS if w not in names))
    for kpi, raw in data.get("campaign_kpi", {}).items():
        base = _base(raw, DEFAULT_CAMPAIGN_RULES.get(kpi))
        campaign_rules[kpi] = _parse_rule(kpi, raw, "campaign_kpi", base, campaign_windows, keys=CAMPAIGN_KPI_KEYS)
    out["campaign_rules"] = campaign_rules
    return out


def _queue_rule(kpi: str, raw: Any, where: str, base: Rule | None, names: tuple[str, ...]) -> Rule:
    rule = _parse_rule(kpi, raw, where, base, names, keys=QUEUE_KPI_KEYS)
    return dataclasses.replace(rule, window=LIVE_WINDOW) if kpi in LIVE_QUEUE_KPIS else rule


def _base(raw: Any, base: Rule | None) -> Rule | None:
    """The rule an override inherits unset fields from: `base` when the override keeps its direction, else None."""
    if base is None or not isinstance(raw, dict):
        return None
    keys = set(raw)
    if keys & {"warning_above", "critical_above"}:
        return base if base.direction == "above" else None
    if keys & {"warning_below", "critical_below"}:
        return base if base.direction == "below" else None
    return base


def parse_http(text: str) -> tuple[str, int]:
    """Split 'host:port' (IPv6 as '[::1]:8700') into host and port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise SettingsError(f"CALLPULSE_HTTP is {text!r}, must be host:port such as 127.0.0.1:8700")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses, which need no token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_env(env: Mapping[str, str], **flags: Any) -> Settings:
    """Build Settings from `CALLPULSE_*` env vars, then flags (a non-None flag wins), then the TOML file."""

    def pick(var: str, flag: str) -> str:
        value = flags.get(flag)
        if value is not None:
            return str(value)
        return env.get(var, ENV_DEFAULTS[var])

    kafka = pick("CALLPULSE_KAFKA", "kafka").strip()
    if not kafka or any(not part.strip() or ":" not in part for part in kafka.split(",")):
        raise SettingsError(f"CALLPULSE_KAFKA is {kafka!r}, must be comma-separated host:port bootstrap servers")
    redis_url = pick("CALLPULSE_REDIS", "redis").strip()
    if urlparse(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"CALLPULSE_REDIS is {redis_url!r}, must be a redis:// URL such as redis://localhost:6379/0"
        )
    host, port = parse_http(pick("CALLPULSE_HTTP", "http"))
    token = pick("CALLPULSE_TOKEN", "token") or None
    prefix = pick("CALLPULSE_TOPIC_PREFIX", "topic_prefix")
    if prefix and not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
        raise SettingsError(f"CALLPULSE_TOPIC_PREFIX is {prefix!r}, may only hold letters, digits, '.', '_' and '-'")
    config_path = pick("CALLPULSE_CONFIG", "config") or None
    values: dict[str, Any] = dict(
        kafka=kafka, redis_url=redis_url, http_host=host, http_port=port, token=token, topic_prefix=prefix
    )
    if config_path:
        path = Path(config_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"CALLPULSE_CONFIG is {config_path!r}, which cannot be read ({exc.strerror})") from exc
        values.update(load_thresholds(text, source=config_path))
        values["config_path"] = config_path
    extra = {k: v for k, v in flags.items() if k not in ("kafka", "redis", "http", "token", "topic_prefix", "config")}
    for key, value in extra.items():
        if value is not None:
            values[key] = value
    return Settings(**values)
