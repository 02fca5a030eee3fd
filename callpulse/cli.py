"""The `callpulse` command: worker, monitor, simulate, demo, grafana, replay."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from callpulse.exceptions import CallpulseError, SettingsError
from callpulse.settings import Settings, from_env


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", help="bootstrap servers (CALLPULSE_KAFKA)")
    p.add_argument("--redis", help="Redis URL (CALLPULSE_REDIS)")
    p.add_argument("--http", help="monitor bind host:port (CALLPULSE_HTTP)")
    p.add_argument("--config", help="thresholds TOML file (CALLPULSE_CONFIG)")
    p.add_argument("--token", help="monitor access token (CALLPULSE_TOKEN)")
    p.add_argument("--topic-prefix", dest="topic_prefix", help="topic name prefix (CALLPULSE_TOPIC_PREFIX)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    top = argparse.ArgumentParser(prog="callpulse", description="Real-time KPI monitor for call centers.")
    sub = top.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run the stream worker (Faust app)")
    _common(w)
    w.add_argument("--web-port", type=int, default=6066, help="worker health/metrics port (default 6066)")
    w.add_argument("--web-host", default="127.0.0.1", help="worker health/metrics bind host")
    w.add_argument("--session-timeout", dest="session_timeout_s", type=float, help="consumer group session timeout, s")
    w.add_argument("--batch-max", dest="batch_max", type=int, help="records per fetch and batch (one Redis write each)")
    w.add_argument("--fetch-max-wait-ms", dest="fetch_max_wait_ms", type=int, help="broker fetch wait, ms")
    w.add_argument("--consumer-group", dest="consumer_group", help="consumer group id (default callpulse)")
    w.add_argument("--sweep-interval", dest="sweep_interval_s", type=float, help="alert sweep period, s")
    m = sub.add_parser("monitor", help="serve the wallboard, snapshot API, websocket feed and /metrics")
    _common(m)
    s = sub.add_parser("simulate", help="produce a realistic call-center event stream")
    _common(s)
    s.add_argument("--agents", type=int, default=50)
    s.add_argument("--rate", type=float, default=20.0, help="events per second")
    s.add_argument("--duration", type=float, default=None, help="seconds (default: run until stopped)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument(
        "--backfill", action="store_true", help="send a --duration-long history ending now, as fast as possible"
    )
    d = sub.add_parser("demo", help="the whole system on one machine")
    _common(d)
    d.add_argument("--agents", type=int, default=40)
    d.add_argument("--rate", type=float, default=20.0)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    g = sub.add_parser("grafana", help="regenerate grafana/ dashboards and prometheus/rules.yml from the thresholds")
    _common(g)
    g.add_argument("--out", default=".", help="repository root to write into (default: .)")
    r = sub.add_parser("replay", help="rebuild every window in Redis from the earliest retained offsets")
    _common(r)
    return top


TUNING = ("session_timeout_s", "batch_max", "fetch_max_wait_ms", "consumer_group", "sweep_interval_s")


def build_settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Settings from env then flags: the one place env is read."""
    tuning = {name: getattr(args, name) for name in TUNING if getattr(args, name, None) is not None}
    return from_env(
        os.environ if env is None else env,
        **tuning,
        kafka=args.kafka,
        redis=args.redis,
        http=args.http,
        config=args.config,
        token=args.token,
        topic_prefix=args.topic_prefix,
    )


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def run_worker(settings: Settings, *, web_host: str, web_port: int, log_level: str) -> int:
    """Create missing topics, then run the Faust worker until SIGINT/SIGTERM."""
    import faust

    from callpulse.kafka import ensure_topics
    from streams.app import build_app

    asyncio.run(ensure_topics(settings))
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
            count = asyncio.run(
                simulate.run(
                    settings,
                    agents=args.agents,
                    rate=args.rate,
                    duration_s=args.duration,
                    seed=args.seed,
                    realtime=not args.backfill,
                )
            )
            print(f"sent {count} events", file=sys.stderr)
            return 0
        if args.command == "demo":
            from callpulse.demo import run_demo

            return run_demo(settings, agents=args.agents, rate=args.rate, seed=args.seed, duration_s=args.duration)
        if args.command == "grafana":
            from callpulse.provisioning import write_all

            for path in write_all(settings, Path(args.out)):
                print(path)
            return 0
        if args.command == "replay":
            from streams.replay import replay

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
