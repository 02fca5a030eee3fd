"""Settings: built once at the entry point from env, flags and the thresholds TOML, then passed down."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from callpulse import catalogue, scorecard
from callpulse.exceptions import SettingsError
from callpulse.scorecard import Scorecard
from streams import windows

KPI_KEYS: tuple[str, ...] = catalogue.KPI_KEYS
QUEUE_KPI_KEYS: tuple[str, ...] = catalogue.QUEUE_KPI_KEYS
LIVE_QUEUE_KPIS: tuple[str, ...] = catalogue.LIVE_KPI_KEYS  # read at now, not over a window
LIVE_WINDOW = "live"  # the `window` of a rule (and its alerts) on a live value
CAMPAIGN_KPI_KEYS: tuple[str, ...] = catalogue.CAMPAIGN_KPI_KEYS
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
    "CALLPULSE_SUPERVISOR_TOKEN": "",
    "CALLPULSE_TOPIC_PREFIX": "",
    "CALLPULSE_KAFKA_SECURITY": "PLAINTEXT",
    "CALLPULSE_KAFKA_SASL_MECHANISM": "PLAIN",
    "CALLPULSE_KAFKA_USERNAME": "",
    "CALLPULSE_KAFKA_PASSWORD": "",
    "CALLPULSE_KAFKA_CA": "",
    "CALLPULSE_REDIS_CA": "",
}
KAFKA_SECURITY: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Flag:
    """A worker tuning setting on the command line: the Settings field, its flag, how to parse it, what it does."""

    field: str
    flag: str
    parse: type
    help: str


# The worker's tuning flags: `callpulse worker` takes them and child workers are started with them, from here.
WORKER_FLAGS: tuple[Flag, ...] = (
    Flag("session_timeout_s", "--session-timeout", float, "consumer group session timeout, s"),
    Flag("batch_max", "--batch-max", int, "records per fetch and batch, one Redis write each"),
    Flag("fetch_max_wait_ms", "--fetch-max-wait-ms", int, "broker fetch wait, ms"),
    Flag("consumer_group", "--consumer-group", str, "consumer group id"),
    Flag("sweep_interval_s", "--sweep-interval", float, "alert sweep period, s"),
)
NOTIFY_FORMATS: tuple[str, ...] = ("json", "slack", "teams")
SEVERITIES: tuple[str, ...] = ("warning", "critical")  # lowest first
WEBHOOK_FIELDS: tuple[str, ...] = ("url", "format", "min_severity", "teams")
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


def window_name(window_s: int) -> str:
    """A window's name: '15m' for a rolling window of 900 s, 'today' for the calendar window."""
    return windows.TODAY_NAME if window_s == windows.TODAY else format_duration(window_s)


def check_timezone(name: Any, *, setting: str = "windows.timezone") -> str:
    """The IANA time zone name, or a SettingsError naming the setting and the fix."""
    if not isinstance(name, str) or not name:
        raise SettingsError(f"{setting} is {name!r}, must be an IANA time zone name such as 'Europe/London'")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(
            f"{setting} is {name!r}, which is not an IANA time zone name; use one such as 'Europe/London', "
            "'America/New_York' or 'UTC'"
        ) from exc
    return name


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


@dataclass(frozen=True)
class Webhook:
    """One `[[notify.webhook]]`: where alert transitions are POSTed, in which shape, and which ones.

    The URL of an incoming webhook is a secret (its path is the credential), so it is left out of the repr;
    logs and metrics name `host` only.
    """

    url: str = field(repr=False)
    format: str = "json"
    min_severity: str = "warning"
    teams: tuple[str, ...] | None = None  # None: every alert; else only these teams' and their agents' alerts

    @property
    def host(self) -> str:
        """host[:port] of the URL, without credentials or path: safe to log and to use as a metric label."""
        return redacted_url(self.url)


def redacted_url(url: str) -> str:
    """host[:port] of a URL, the only part of a webhook URL that may appear in logs, metrics and errors."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port is not None else host


def default_rule(kpi: catalogue.Kpi | catalogue.Live) -> Rule | None:
    """The built-in rule of a catalogue KPI: its field target, on the bad side of its `better` direction."""
    d = kpi.default_rule
    if d is None:
        return None
    side = kpi.rule_direction
    return Rule(
        kpi.key,
        min_samples=d.min_samples,
        window=d.window,
        **{f"warning_{side}": d.warning, f"critical_{side}": d.critical},
    )


DEFAULT_RULES: dict[str, Rule] = {k.key: r for k in catalogue.CATALOGUE if (r := default_rule(k)) is not None}


DEFAULT_QUEUE_RULES: dict[str, Rule] = {
    k.key: dataclasses.replace(r, window=LIVE_WINDOW) if k.key in LIVE_QUEUE_KPIS else r
    for k in catalogue.QUEUE_ALL
    if (r := default_rule(k)) is not None
}
DEFAULT_CAMPAIGN_RULES: dict[str, Rule] = {
    key: r
    for key, d in catalogue.CAMPAIGN_DEFAULT_RULES.items()
    if (r := default_rule(dataclasses.replace(catalogue.BY_KEY[key], default_rule=d))) is not None
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
    # Set: `token` is read-only and acknowledging/snoozing needs this one (which also opens what `token` does).
    supervisor_token: str | None = None
    topic_prefix: str = ""
    kafka_security: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_username: str | None = None
    kafka_password: str | None = field(default=None, repr=False)
    kafka_ca: str | None = None
    redis_ca: str | None = None
    windows_s: tuple[int, ...] = (900, 3600, 28800, windows.TODAY)  # rolling lengths, then windows.TODAY if on
    # The windows of /metrics' team series ([windows] team_metrics); None: the two shortest (team_metrics_s).
    team_metrics_windows_s: tuple[int, ...] | None = None
    timezone: str = "UTC"  # the floor's IANA time zone: where `today` starts
    repeat_window_s: int = 86400
    hysteresis: float = 0.05
    rules: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    scorecard: Scorecard | None = None  # no [scorecard]: no score
    team_rules: Mapping[str, Mapping[str, Rule]] = field(default_factory=dict)
    queue_defaults: QueueSettings = QueueSettings()
    queue_overrides: Mapping[str, QueueSettings] = field(default_factory=dict)
    queue_rules: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_QUEUE_RULES))
    queue_kpi_overrides: Mapping[str, Mapping[str, Rule]] = field(default_factory=dict)
    campaign_rules: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_CAMPAIGN_RULES))
    # Worker tuning: not part of the contract, but kept here so tests and benchmarks can set them.
    batch_max: int = 2000
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
    # Notifications: the webhooks come from the TOML's [[notify.webhook]]; delivery tuning from [notify].
    webhooks: tuple[Webhook, ...] = ()
    notify_timeout_s: float = 5.0
    notify_max_attempts: int = 6
    notify_backoff_s: float = 0.5
    notify_backoff_max_s: float = 30.0
    notify_queue_size: int = 1000

    @property
    def window_names(self) -> tuple[str, ...]:
        """Window names in the contract's spelling: rolling ones shortest first, then 'today' when on."""
        return tuple(window_name(w) for w in self.windows_s)

    @property
    def tz(self) -> tzinfo:
        """The floor's time zone (validated when the settings were built)."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def longest_window_s(self) -> int:
        """The longest window: how long state is kept and past which an event is late.

        With `today` on that is the longest local day, 25 h (the day clocks go back), so `today` stays exact
        to its first second on that day too.
        """
        rolling = [w for w in self.windows_s if w != windows.TODAY]
        return max([*rolling, windows.LONGEST_DAY_S] if windows.TODAY in self.windows_s else rolling)

    @property
    def score_window_s(self) -> int | None:
        """The window the scorecard scores, or None without a scorecard."""
        return None if self.scorecard is None else self.window_s(self.scorecard.window)

    @property
    def team_metrics_s(self) -> tuple[int, ...]:
        """The windows `/metrics` gives `callpulse_team_kpi` in: `[windows] team_metrics`, by default the two
        shortest (15m and 1h, those the team dashboards and rules read). Each window costs one series per team and
        KPI (1,000 teams: ~1.7 MB); the snapshot API serves every window whatever this says."""
        if self.team_metrics_windows_s is not None:
            return self.team_metrics_windows_s
        return self.windows_s[:2]

    def topic(self, name: str) -> str:
        """Return the full topic name for 'calls', 'tickets', 'alerts' or 'deadletter'."""
        return f"{self.topic_prefix}{name}"

    def window_s(self, name: str) -> int:
        """The key of a configured window given its name (seconds, or windows.TODAY); a SettingsError names them."""
        for seconds in self.windows_s:
            if window_name(seconds) == name:
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
    window_names: tuple[str, ...],
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
            if value not in window_names:
                raise SettingsError(f"{name} is {value!r}, must be one of the windows {list(window_names)}")
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


def _team_metrics(raw: Any, windows_s: tuple[int, ...], names: tuple[str, ...]) -> tuple[int, ...]:
    """`[windows] team_metrics`: a list of configured window names, in the windows' order."""
    if not isinstance(raw, list) or not raw or any(n not in names for n in raw):
        raise SettingsError(
            f"windows.team_metrics is {raw!r}, must be a non-empty list of configured windows ({', '.join(names)}), "
            "e.g. ['15m', '1h']"
        )
    return tuple(s for s, n in zip(windows_s, names, strict=True) if n in raw)


def load_thresholds(text: str, *, source: str = "config") -> dict[str, Any]:
    """Parse the thresholds TOML into Settings fields (windows, repeat window, rules, team rules)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML ({exc}); fix the syntax") from exc
    allowed_top = {
        "windows", "kpi", "team", "alerts", "scorecard", "notify", "queues", "queue", "queue_kpi", "campaign_kpi"
    }  # fmt: skip
    for key in data:
        if key not in allowed_top:
            raise SettingsError(f"{source}: unknown section [{key}], must be one of {sorted(allowed_top)}")
    out: dict[str, Any] = {}
    windows_table = data.get("windows", {})
    for key in windows_table:
        if key not in ("rolling", "calendar", "timezone", "repeat_window", "team_metrics"):
            raise SettingsError(
                f"{source}: windows.{key}: unknown key, must be 'rolling', 'calendar', 'timezone', 'repeat_window' "
                "or 'team_metrics'"
            )
    rolling_s = tuple(w for w in Settings.windows_s if w != windows.TODAY)
    if "rolling" in windows_table:
        rolling = windows_table["rolling"]
        if not isinstance(rolling, list) or not rolling:
            raise SettingsError(f"{source}: windows.rolling must be a non-empty list such as ['15m', '1h', '8h']")
        secs = sorted({parse_duration(w, name="windows.rolling") for w in rolling})
        for s in secs:
            if s % 10:
                raise SettingsError(f"windows.rolling: {format_duration(s)} must be a multiple of 10 s")
        rolling_s = tuple(secs)
    calendar = windows_table.get("calendar", [windows.TODAY_NAME])
    if not isinstance(calendar, list) or any(c != windows.TODAY_NAME for c in calendar):
        raise SettingsError(f"{source}: windows.calendar is {calendar!r}, must be ['today'] or [] (off)")
    out["windows_s"] = rolling_s + ((windows.TODAY,) if calendar else ())
    if "timezone" in windows_table:
        out["timezone"] = check_timezone(windows_table["timezone"])
    if "repeat_window" in windows_table:
        out["repeat_window_s"] = parse_duration(windows_table["repeat_window"], name="windows.repeat_window")
    names = tuple(window_name(s) for s in out["windows_s"])
    if "team_metrics" in windows_table:
        out["team_metrics_windows_s"] = _team_metrics(windows_table["team_metrics"], out["windows_s"], names)
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
    if "scorecard" in data:
        out["scorecard"] = scorecard.parse(data["scorecard"], names)
    out.update(_load_queue_sections(data, names, source))
    if "notify" in data:
        out.update(_parse_notify(data["notify"]))
    return out


def _parse_notify(raw: Any) -> dict[str, Any]:
    """[notify] with its [[notify.webhook]] list into Settings fields; errors name the setting, never the URL path."""
    if not isinstance(raw, dict):
        raise SettingsError("notify must be a table holding [[notify.webhook]] entries")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "webhook":
            if not isinstance(value, list):
                raise SettingsError("notify.webhook must be an array of tables: write [[notify.webhook]]")
            out["webhooks"] = tuple(_parse_webhook(i, hook) for i, hook in enumerate(value))
        elif key == "timeout":
            out["notify_timeout_s"] = float(parse_duration(value, name="notify.timeout"))
        elif key == "max_attempts":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
                raise SettingsError(f"notify.max_attempts is {value!r}, must be an integer from 1 to 100")
            out["notify_max_attempts"] = value
        elif key == "max_backoff":
            out["notify_backoff_max_s"] = float(parse_duration(value, name="notify.max_backoff"))
        else:
            raise SettingsError(
                f"notify.{key}: unknown key, must be one of webhook, timeout, max_attempts, max_backoff"
            )
    return out


def _parse_webhook(index: int, raw: Any) -> Webhook:
    where = f"notify.webhook[{index}]"
    if not isinstance(raw, dict):
        raise SettingsError(f"{where} must be a table with {', '.join(WEBHOOK_FIELDS)}")
    for key in raw:
        if key not in WEBHOOK_FIELDS:
            raise SettingsError(f"{where}.{key}: unknown key, must be one of {', '.join(WEBHOOK_FIELDS)}")
    url = raw.get("url")
    if not isinstance(url, str) or not url:
        raise SettingsError(f"{where}.url is missing: give the receiver's http:// or https:// URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://{redacted_url(url)}/…" if parts.scheme else "(no scheme)"
        raise SettingsError(f"{where}.url is {shown}, must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise SettingsError(f"{where}.url has a bad port ({exc}), must be 1-65535") from exc
    fmt = raw.get("format", "json")
    if fmt not in NOTIFY_FORMATS:
        raise SettingsError(f"{where}.format is {fmt!r}, must be one of {', '.join(NOTIFY_FORMATS)}")
    severity = raw.get("min_severity", "warning")
    if severity not in SEVERITIES:
        raise SettingsError(f"{where}.min_severity is {severity!r}, must be one of {', '.join(SEVERITIES)}")
    teams = raw.get("teams")
    if teams is not None and (
        not isinstance(teams, list) or not teams or not all(isinstance(t, str) and t for t in teams)
    ):
        raise SettingsError(f'{where}.teams is {teams!r}, must be a non-empty list of team names such as ["north"]')
    return Webhook(url=url, format=fmt, min_severity=severity, teams=tuple(teams) if teams is not None else None)


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
    supervisor_token = env.get("CALLPULSE_SUPERVISOR_TOKEN", ENV_DEFAULTS["CALLPULSE_SUPERVISOR_TOKEN"]) or None
    if supervisor_token is not None and supervisor_token == token:
        raise SettingsError(
            "CALLPULSE_SUPERVISOR_TOKEN is the same as CALLPULSE_TOKEN, which every wallboard's URL carries; "
            "give supervisors a token of their own"
        )
    prefix = pick("CALLPULSE_TOPIC_PREFIX", "topic_prefix")
    if prefix and not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
        raise SettingsError(f"CALLPULSE_TOPIC_PREFIX is {prefix!r}, may only hold letters, digits, '.', '_' and '-'")
    config_path = pick("CALLPULSE_CONFIG", "config") or None
    values: dict[str, Any] = dict(
        kafka=kafka, redis_url=redis_url, http_host=host, http_port=port, token=token, topic_prefix=prefix,
        supervisor_token=supervisor_token,
    )  # fmt: skip
    values.update(_security(pick, redis_url))
    if config_path:
        path = Path(config_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"CALLPULSE_CONFIG is {config_path!r}, which cannot be read ({exc.strerror})") from exc
        values.update(load_thresholds(text, source=config_path))
        values["config_path"] = config_path
    own = ("kafka", "redis", "http", "token", "topic_prefix", "config", *_SECURITY_FLAGS)
    extra = {k: v for k, v in flags.items() if k not in own}
    for key, value in extra.items():
        if value is not None:
            values[key] = value
    return Settings(**values)


_SECURITY_FLAGS = ("kafka_security", "kafka_sasl_mechanism", "kafka_username", "kafka_password", "kafka_ca", "redis_ca")


def _security(pick: Any, redis_url: str) -> dict[str, Any]:
    """The Kafka and Redis security settings, checked together (SASL needs a user and password, CA files exist)."""
    security = pick("CALLPULSE_KAFKA_SECURITY", "kafka_security").strip().upper()
    if security not in KAFKA_SECURITY:
        raise SettingsError(f"CALLPULSE_KAFKA_SECURITY is {security!r}, must be one of {', '.join(KAFKA_SECURITY)}")
    mechanism = pick("CALLPULSE_KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism").strip().upper()
    if mechanism not in SASL_MECHANISMS:
        raise SettingsError(
            f"CALLPULSE_KAFKA_SASL_MECHANISM is {mechanism!r}, must be one of {', '.join(SASL_MECHANISMS)}"
        )
    username = pick("CALLPULSE_KAFKA_USERNAME", "kafka_username") or None
    password = pick("CALLPULSE_KAFKA_PASSWORD", "kafka_password") or None
    if security.startswith("SASL_") and (username is None or password is None):
        missing = "CALLPULSE_KAFKA_USERNAME" if username is None else "CALLPULSE_KAFKA_PASSWORD"
        raise SettingsError(f"{missing} is unset, and CALLPULSE_KAFKA_SECURITY={security} needs it")
    values: dict[str, Any] = dict(
        kafka_security=security, kafka_sasl_mechanism=mechanism, kafka_username=username, kafka_password=password
    )
    for var, flag in (("CALLPULSE_KAFKA_CA", "kafka_ca"), ("CALLPULSE_REDIS_CA", "redis_ca")):
        path = pick(var, flag) or None
        if path is not None and not Path(path).is_file():
            raise SettingsError(f"{var} is {path!r}, which is not a readable file: give the CA certificate (PEM)")
        values[flag] = path
    if values["redis_ca"] is not None and urlparse(redis_url).scheme != "rediss":
        raise SettingsError("CALLPULSE_REDIS_CA is set but CALLPULSE_REDIS is not a rediss:// URL: use rediss://")
    return values
