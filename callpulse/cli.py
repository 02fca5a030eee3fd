"""The `callpulse` command: worker, monitor, simulate, demo, grafana, replay."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callpulse.exceptions import CallpulseError, SettingsError
from callpulse.kafka import wait_for_broker
from callpulse.settings import ENV_DEFAULTS, WORKER_FLAGS, Settings, from_env


@dataclass(frozen=True)
class SettingFlag:
    """A contract setting as a flag: the flag, the Settings/from_env keyword, its variable and what it is."""

    flag: str
    dest: str
    var: str
    help: str


SETTING_FLAGS: dict[str, SettingFlag] = {
    f.dest: f
    for f in (
        SettingFlag("--kafka", "kafka", "CALLPULSE_KAFKA", "Kafka bootstrap servers, host:port[,host:port]"),
        SettingFlag("--redis", "redis", "CALLPULSE_REDIS", "Redis URL"),
        SettingFlag("--http", "http", "CALLPULSE_HTTP", "monitor bind address, host:port"),
        SettingFlag("--config", "config", "CALLPULSE_CONFIG", "thresholds TOML file"),
        SettingFlag("--token", "token", "CALLPULSE_TOKEN", "monitor access token"),
        SettingFlag("--topic-prefix", "topic_prefix", "CALLPULSE_TOPIC_PREFIX", "topic name prefix"),
        SettingFlag(
            "--kafka-security",
            "kafka_security",
            "CALLPULSE_KAFKA_SECURITY",
            "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        ),
        SettingFlag(
            "--kafka-sasl-mechanism",
            "kafka_sasl_mechanism",
            "CALLPULSE_KAFKA_SASL_MECHANISM",
            "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ),
        SettingFlag(
            "--kafka-username",
            "kafka_username",
            "CALLPULSE_KAFKA_USERNAME",
            "SASL user (the password, CALLPULSE_KAFKA_PASSWORD, only from the environment)",
        ),
        SettingFlag("--kafka-ca", "kafka_ca", "CALLPULSE_KAFKA_CA", "CA file (PEM) for TLS to Kafka"),
        SettingFlag("--redis-ca", "redis_ca", "CALLPULSE_REDIS_CA", "CA file (PEM) for a rediss:// Redis"),
    )
}
_KAFKA_SECURITY = ("kafka_security", "kafka_sasl_mechanism", "kafka_username", "kafka_ca")
# Which contract settings each subcommand reads: its --help lists these and no others.
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "worker": ("kafka", "redis", "config", "topic_prefix", *_KAFKA_SECURITY, "redis_ca"),
    "monitor": ("redis", "http", "config", "token", "topic_prefix", "redis_ca"),
    "simulate": ("kafka", "topic_prefix", *_KAFKA_SECURITY),
    "demo": ("kafka", "redis", "http", "config", "token", "topic_prefix", *_KAFKA_SECURITY, "redis_ca"),
    "grafana": ("config",),
    "replay": ("kafka", "redis", "config", "topic_prefix", *_KAFKA_SECURITY, "redis_ca"),
}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _setting_flags(p: argparse.ArgumentParser, command: str) -> None:
    group = p.add_argument_group("settings (a flag overrides its environment variable)")
    for dest in COMMAND_SETTINGS[command]:
        f = SETTING_FLAGS[dest]
        default = ENV_DEFAULTS[f.var] or "unset"
        group.add_argument(f.flag, dest=f.dest, metavar=f.var, help=f"{f.help} (env {f.var}; default: {default})")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level")


def _sub(sub: Any, command: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(command, help=help_text, description=help_text, formatter_class=_Help)
    _setting_flags(p, command)
    return p


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    top = argparse.ArgumentParser(prog="callpulse", description="Real-time KPI monitor for call centers.")
    sub = top.add_subparsers(dest="command", required=True)
    w = _sub(sub, "worker", "run the stream worker (Faust app)")
    w.add_argument("--web-port", type=int, default=6066, help="worker health/metrics port")
    w.add_argument("--web-host", default="127.0.0.1", help="worker health/metrics bind host")
    tuning = w.add_argument_group("tuning")
    for flag in WORKER_FLAGS:
        default = getattr(Settings, flag.field)
        tuning.add_argument(flag.flag, dest=flag.field, type=flag.parse, help=f"{flag.help} (default: {default})")
    _sub(sub, "monitor", "serve the wallboard, snapshot API, websocket feed and /metrics")
    s = _sub(sub, "simulate", "produce a realistic call-center event stream")
    s.add_argument("--agents", type=int, default=50, help="agents on the simulated floor")
    s.add_argument("--rate", type=float, default=20.0, help="events per second")
    s.add_argument("--duration", type=float, default=None, help="seconds to run (default: until stopped)")
    s.add_argument("--seed", type=int, default=1, help="random seed: the same seed, the same stream")
    s.add_argument(
        "--backfill", action="store_true", help="send a --duration-long history ending now, as fast as possible"
    )
    s.add_argument(
        "--no-idempotence", dest="idempotent", action="store_false",
        help="plain acks=1 producer, for brokers without idempotent producers such as Tansu, the demo's embedded "
        "broker (default: an idempotent acks=all producer)",
    )  # fmt: skip
    d = _sub(sub, "demo", "the whole system on one machine")
    d.add_argument("--agents", type=int, default=40, help="agents on the simulated floor")
    d.add_argument("--rate", type=float, default=20.0, help="events per second")
    d.add_argument("--seed", type=int, default=1, help="random seed of the simulator")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    d.add_argument(
        "--use-running",
        action="store_true",
        help="use the Kafka and Redis at CALLPULSE_KAFKA and CALLPULSE_REDIS (defaults included) when they answer, "
        "under a topic and key prefix removed on exit; without it, only explicitly set ones are used",
    )
    g = _sub(sub, "grafana", "regenerate grafana/ dashboards and prometheus/ rules from the thresholds")
    g.add_argument("--out", default=".", help="repository root to write into")
    _sub(sub, "replay", "rebuild every window in Redis from the earliest retained offsets")
    return top


TUNING = tuple(flag.field for flag in WORKER_FLAGS)


def build_settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Settings from env then flags: the one place env is read."""
    tuning = {name: getattr(args, name) for name in TUNING if getattr(args, name, None) is not None}
    flags = {dest: getattr(args, dest, None) for dest in SETTING_FLAGS}
    return from_env(os.environ if env is None else env, **tuning, **flags)


def explicitly_set(args: argparse.Namespace, dest: str, env: Mapping[str, str]) -> bool:
    """Whether the user chose this setting (its flag, or its environment variable), rather than the default."""
    return getattr(args, dest, None) is not None or bool(env.get(SETTING_FLAGS[dest].var))


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def run_worker(settings: Settings, *, web_host: str, web_port: int, log_level: str) -> int:
    """Create missing topics, then run the Faust worker until SIGINT/SIGTERM."""
    import faust

    from callpulse.binding import check_bindable
    from callpulse.kafka import ensure_topics
    from streams.app import build_app

    check_bindable(web_host, web_port, setting="--web-host/--web-port")
    # A worker waits for its broker as long as it takes (a compose stack starts in any order), backing off.
    asyncio.run(ensure_topics(settings, timeout_s=None))
    app = build_app(settings, web_host=web_host, web_port=web_port)
    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `callpulse` console script."""
    args = parser().parse_args(argv)
    _logging(args.log_level)
    try:
        settings = build_settings(args)
        if args.command == "worker":
            return run_worker(settings, web_host=args.web_host, web_port=args.web_port, log_level=args.log_level)
        if args.command == "monitor":
            from monitor.server import serve_forever

            asyncio.run(serve_forever(settings))
            return 0
        if args.command == "simulate":
            from callpulse import simulate

            if args.backfill and args.duration is None:
                raise SettingsError("--backfill needs --duration (seconds of history to send)")
            asyncio.run(wait_for_broker(settings))
            count = asyncio.run(
                simulate.run(
                    settings,
                    agents=args.agents,
                    rate=args.rate,
                    duration_s=args.duration,
                    seed=args.seed,
                    realtime=not args.backfill,
                    idempotent=args.idempotent,
                )
            )
            print(f"sent {count} events", file=sys.stderr)
            return 0
        if args.command == "demo":
            from callpulse.demo import run_demo

            use = {dest: args.use_running or explicitly_set(args, dest, os.environ) for dest in ("kafka", "redis")}
            return run_demo(
                settings,
                agents=args.agents,
                rate=args.rate,
                seed=args.seed,
                duration_s=args.duration,
                use_kafka=use["kafka"],
                use_redis=use["redis"],
            )
        if args.command == "grafana":
            from callpulse.provisioning import write_all

            for path in write_all(settings, Path(args.out)):
                print(path)
            return 0
        if args.command == "replay":
            from streams.replay import replay

            asyncio.run(wait_for_broker(settings))
            count = asyncio.run(replay(settings))
            print(f"replayed {count} records", file=sys.stderr)
            return 0
    except SettingsError as exc:
        print(f"callpulse: {exc}", file=sys.stderr)
        return 2
    except CallpulseError as exc:
        print(f"callpulse: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
