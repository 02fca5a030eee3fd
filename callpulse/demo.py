"""`callpulse demo`: the whole system on one machine, with embedded broker and Redis when needed."""

from __future__ import annotations

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

from callpulse.embedded import EmbeddedBroker, EmbeddedRedis, answers_kafka, answers_redis, free_port
from callpulse.processes import Proc, env_for, wait_until, worker_args
from callpulse.settings import Settings, load_thresholds

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


def run_demo(settings: Settings, *, agents: int, rate: float, seed: int, duration_s: float | None) -> int:
    """Start what is missing, then worker, monitor and simulator; print URLs and a live summary until Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix="callpulse-demo-"))
    started: list[Any] = []
    procs: list[Proc] = []
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if answers_kafka(settings.kafka, 2.0):
            print(f"using the Kafka broker at {settings.kafka}")
        else:
            broker = EmbeddedBroker(log_dir=workdir / "broker").start()
            started.append(broker)
            settings = replace(settings, kafka=broker.bootstrap)
            print(f"started an embedded broker (Tansu) at {broker.bootstrap}")
        if answers_redis(settings.redis_url, 2.0):
            print(f"using Redis at {settings.redis_url}")
        else:
            redis_srv = EmbeddedRedis(data_dir=workdir / "redis").start()
            started.append(redis_srv)
            settings = replace(settings, redis_url=redis_srv.url)
            print(f"started an embedded redis-server at {redis_srv.url}")
        if not settings.topic_prefix and any(isinstance(s, EmbeddedBroker) for s in started):
            # a fresh broker with a Redis that may hold an earlier demo's windows: keep them apart
            settings = replace(settings, topic_prefix=f"demo{int(time.time())}-")
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
                raise RuntimeError(f"the monitor exited:\n{procs[1].log_tail()}")
            try:
                _get_json(f"{base}/healthz", None)
                return True
            except (urllib.error.URLError, OSError, ValueError):
                return False

        wait_until(monitor_up, 30, "monitor")
        sim_args = ["simulate", "--agents", str(agents), "--rate", str(rate), "--seed", str(seed)]
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
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()
        print("demo stopped; everything it started is down.", flush=True)
