"""`callpulse demo`: the whole system on one machine, with embedded broker and Redis when needed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from callpulse.binding import check_bindable
from callpulse.embedded import EmbeddedBroker, EmbeddedRedis, answers_kafka, answers_redis, free_port
from callpulse.exceptions import CallpulseError
from callpulse.kafka import remove_deployment
from callpulse.processes import STOP_TIMEOUT_S, Proc, env_for, stop_all, wait_until, worker_args
from callpulse.settings import Settings, load_thresholds
from streams.store import namespace, remove_namespace

SCORECARD_EXAMPLE = Path(__file__).with_name("scorecard.example.toml")


def _get_json(url: str, token: str | None, timeout_s: float = 2.0) -> Any:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "s":
        return f"{int(value) // 60}:{int(value) % 60:02d}"
    if kind == "%":
        return f"{value * 100:.0f}%"
    return str(value)


def summary_line(snap: dict[str, Any]) -> str:
    """One line a person can read: floor AHT, FCR, connect rate, response time, calls, alerts."""
    k = snap["floor"]["kpis"]
    firing = [a for a in snap["alerts"] if a.get("status") == "firing"]
    return (
        f"[{snap['as_of'][11:19]}] {snap['window']}: agents {len(snap['agents'])}  calls {k['calls_handled']}  "
        f"AHT {_fmt(k['aht_seconds'], 's')}  FCR {_fmt(k['fcr'], '%')}  connect {_fmt(k['connect_rate'], '%')}  "
        f"response {_fmt(k['response_seconds'], 's')}  CSAT {_fmt(k['csat'], '%')}  alerts {len(firing)}"
        + (f"  score {snap['floor']['score']:.0f}" if snap["floor"].get("score") is not None else "")
    )


def choose(kind: str, setting: str, address: str, *, told: bool, answers: bool) -> tuple[bool, str]:
    """Whether the demo uses the `kind` server at `address` (True) or starts its own, and the line that says why.

    It writes into a server it did not start only when told to (`told`: --use-running, or the setting given
    explicitly), and only when that server answers.
    """
    if told and answers:
        return True, f"using the {kind} at {address} ({setting}), under a prefix removed on exit"
    if told:
        return False, f"the {kind} at {address} ({setting}) does not answer: starting an embedded one instead"
    if answers:
        return False, (
            f"a {kind} answers at {address}, but the demo writes only into servers it is given: starting an "
            f"embedded one (to use that one, pass --use-running or set {setting})"
        )
    return False, f"starting an embedded {kind}"


async def _remove_keys(settings: Settings) -> int:
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        return await remove_namespace(client, namespace(settings.topic_prefix))
    finally:
        await client.aclose()


def clean_up(settings: Settings, *, kafka: bool, redis: bool) -> None:
    """Remove what the demo wrote into a broker and a Redis it did not start: its topics, group and keys."""
    if kafka:
        try:
            topics = asyncio.run(remove_deployment(settings))
            print(f"removed the demo's topics from {settings.kafka}: {', '.join(topics) or 'none'}", flush=True)
        except Exception as exc:
            print(f"could not remove the demo's topics {settings.topic_prefix}* from {settings.kafka}: {exc}",
                  file=sys.stderr)  # fmt: skip
    if redis:
        try:
            removed = asyncio.run(_remove_keys(settings))
            ns = namespace(settings.topic_prefix)
            print(f"removed the demo's {removed} keys {ns}* from {settings.redis_url}", flush=True)
        except Exception as exc:
            print(f"could not remove the demo's keys from {settings.redis_url}: {exc}", file=sys.stderr)


def run_demo(
    settings: Settings,
    *,
    agents: int,
    rate: float,
    seed: int,
    duration_s: float | None,
    use_kafka: bool = False,
    use_redis: bool = False,
) -> int:
    """Start what is missing, then worker, monitor and simulator; print URLs and a live summary until Ctrl-C.

    `use_kafka` / `use_redis`: the user asked for the configured broker / Redis (else embedded ones).
    """
    # A prefix of its own, first of all: the demo's topics and keys never mix with anything else, and what
    # it removes on exit can only be its own.
    settings = replace(settings, topic_prefix=f"{settings.topic_prefix}demo{int(time.time())}-")
    if settings.http_port != 0:
        check_bindable(settings.http_host, settings.http_port, setting="CALLPULSE_HTTP (--http)")
    workdir = Path(tempfile.mkdtemp(prefix="callpulse-demo-"))
    started: list[Any] = []
    procs: list[Proc] = []
    stopping = False
    external = {"kafka": False, "redis": False}

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops the demo even when it was started with SIGINT ignored (a background job of a script, `nohup`):
    # Python then leaves SIGINT ignored, and the demo would run on until a SIGTERM.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"logs: {workdir} (worker.log, monitor.log, simulator.log; broker/ and redis/ when embedded)", flush=True)
    try:
        external["kafka"], line = choose("Kafka broker", "CALLPULSE_KAFKA", settings.kafka, told=use_kafka,
                                         answers=answers_kafka(settings.kafka, 2.0))  # fmt: skip
        print(line, flush=True)
        if not external["kafka"]:
            broker = EmbeddedBroker(log_dir=workdir / "broker").start()
            started.append(broker)
            settings = replace(settings, kafka=broker.bootstrap)
            print(f"started an embedded broker (Tansu) at {broker.bootstrap}")
        external["redis"], line = choose("Redis", "CALLPULSE_REDIS", settings.redis_url, told=use_redis,
                                         answers=answers_redis(settings.redis_url, 2.0))  # fmt: skip
        print(line, flush=True)
        if not external["redis"]:
            redis_srv = EmbeddedRedis(data_dir=workdir / "redis").start()
            started.append(redis_srv)
            settings = replace(settings, redis_url=redis_srv.url)
            print(f"started an embedded redis-server at {redis_srv.url}")
        print(f"topic and key prefix: {settings.topic_prefix}")
        if settings.http_port == 0:
            settings = replace(settings, http_port=free_port())
        if settings.config_path is None:
            # No config of one's own: the demo scores agents with the field's telesales scorecard.
            print(f"scoring agents with {SCORECARD_EXAMPLE} (set CALLPULSE_CONFIG to use your own)")
            text = SCORECARD_EXAMPLE.read_text(encoding="utf-8")
            settings = replace(settings, config_path=str(SCORECARD_EXAMPLE), **load_thresholds(text))
        env = env_for(settings)
        procs.append(Proc("worker", worker_args(settings, web_port=free_port()), env, workdir / "worker.log").start())
        procs.append(Proc("monitor", ["monitor"], env, workdir / "monitor.log").start())
        base = f"http://{settings.http_host}:{settings.http_port}"
        token_q = f"?token={settings.token}" if settings.token else ""

        def monitor_up() -> bool:
            if not procs[1].alive():
                raise CallpulseError(f"the monitor exited: {procs[1].log_tail(500).strip()} (log {procs[1].log_path})")
            try:
                _get_json(f"{base}/healthz", None)
                return True
            except (urllib.error.URLError, OSError, ValueError):
                return False

        try:
            wait_until(monitor_up, 30, "monitor")
        except TimeoutError as exc:
            raise CallpulseError(f"{exc}: see {procs[1].log_path}") from exc
        sim_args = ["simulate", "--agents", str(agents), "--rate", str(rate), "--seed", str(seed)]
        if any(isinstance(s, EmbeddedBroker) for s in started):
            sim_args.append("--no-idempotence")  # Tansu answers InitProducerId with an error
        procs.append(Proc("simulator", sim_args, env, workdir / "simulator.log").start())
        print()
        print(f"  wallboard:  {base}/{token_q}")
        print(f"  snapshot:   {base}/api/snapshot?window=15m{token_q.replace('?', '&')}")
        print(f"  metrics:    {base}/metrics")
        print(f"  logs:       {workdir}")
        print("  Ctrl-C stops everything the demo started.")
        print()
        t0 = time.monotonic()
        while duration_s is None or time.monotonic() - t0 < duration_s:
            for p in procs:
                if not p.alive():
                    print(f"callpulse demo: the {p.name} exited; its log ends with:\n{p.log_tail()}", file=sys.stderr)
                    return 1
            try:
                print(summary_line(_get_json(f"{base}/api/snapshot?window=15m", settings.token)), flush=True)
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                print(f"(snapshot not available yet: {exc})", flush=True)
            time.sleep(3.0)
        return 0
    except KeyboardInterrupt:
        stopping = True
        return 0
    finally:
        if stopping:
            print("\nstopping…", flush=True)
        with contextlib.suppress(Exception):
            killed = stop_all(list(reversed(procs)))  # together: a slow one does not hold up the others' stop
            if killed:
                names = ", ".join(killed)
                print(
                    f"did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM, killed: {names}",
                    file=sys.stderr,
                    flush=True,
                )
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()
        clean_up(settings, kafka=external["kafka"], redis=external["redis"])
        print(f"demo stopped; everything it started is down. Its logs stay in {workdir}", flush=True)
