"""Benchmark the callpulse pipeline on an embedded broker and a private Redis; print figures, rewrite BENCHMARKS.md.

    .venv/bin/python bench/run.py            # full run (~10 min), rewrites BENCHMARKS.md
    .venv/bin/python bench/run.py --quick    # small sizes, for development

One run measures, in order: (1) the raw aiokafka + JSON ceiling, (2) a naive Faust agent with one Redis call
per event, (3) `callpulse worker` end to end on a pre-filled topic, (8) two workers in one group, (4, 5) lag and
websocket-alert latency under a steady 2,000 events/s with the monitor running, (6) a replay of every window
from the earliest offsets (checked identical to what the worker built) and (7) Redis bytes per agent-window and
worker RSS, with a py-spy profile of the worker. Every process it starts is stopped on exit, Ctrl-C or error.
It is a measurement, not a test: no figure makes it fail.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pickle
import random
import resource
import shlex
import signal
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from bench import reads, report  # noqa: E402
from bench.floorsize import FLOOR_SIZES, floor_sweep  # noqa: E402
from bench.phases import callpulse_run, catch_up, million, naive_baseline, raw_ceiling, steady_load  # noqa: E402
from bench.procs import Cleanup  # noqa: E402
from bench.rig import FULL, QUICK, Bench, before_batch_consumer, code_at, prefill, say  # noqa: E402
from bench.stats import span  # noqa: E402

# --- the run ---------------------------------------------------------------------------------------------------


# The before worker may be very slow on a busy machine: it is timed over what it does in this long.
BEFORE_CAP_S = 150.0

PARTS = ("throughput", "before", "scale", "floorsize", "reads", "load", "replay", "catchup")


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.0f} ms"


async def run_all(b: Bench, parts: Sequence[str] = PARTS) -> None:
    s = b.sizes
    r = b.results
    client = aioredis.Redis.from_url(b.redis.url)
    before = None
    if "before" in parts:
        rev = before_batch_consumer()
        if rev is None:
            say("no git history: the before/after figures are left out")
        else:
            before = code_at(rev, b.workdir / "before")
            r["before_rev"] = rev
    try:
        if "throughput" in parts or "scale" in parts or before is not None:
            p1 = b.settings("tp")
            say(f"pre-filling {s.events:,} simulator events ({s.agents} agents, 4 partitions)")
            r["prefill"] = await prefill(p1, s.events, agents=s.agents, seed=7)
            say(f"  {r['prefill']['produced']:,} events in {r['prefill']['produce_s']:.1f} s")

        if "throughput" in parts:
            say("(1) raw ceiling: aiokafka + orjson.loads")
            r["raw"] = await raw_ceiling(p1, r["prefill"]["produced"])
            say(f"  {r['raw']['rate']:,.0f} events/s")

            say(f"(2) naive Faust baseline, one awaited Redis call per event (over {s.naive_events:,} events)")
            r["naive"] = await naive_baseline(b, p1, client, s.naive_events)
            say(f"  {r['naive']['rate']:,.0f} events/s")

            say("(3) callpulse worker end to end")
            r["e2e"] = await callpulse_run(b, p1, client, s.events, workers=1, label="1 worker", check=True)
            say(f"  {r['e2e']['rate']:,.0f} events/s ({r['e2e']['rate_with_startup']:,.0f} with start-up)")
            say(f"  windows identical after wipe + replay: {r['e2e']['identity']['identical']}")

        if before is not None:
            say(f"(3) before: the per-record Faust worker of {r['before_rev']}, same topic")
            r["e2e_before"] = await callpulse_run(
                b,
                p1.replace(consumer_group="before"),
                client,
                s.events,
                workers=1,
                label="before",
                code=before,
                time_cap_s=BEFORE_CAP_S,
            )
            say(f"  {r['e2e_before']['rate']:,.0f} events/s")

        if "floorsize" in parts:
            sizes = ", ".join(f"{n:,}" for n in FLOOR_SIZES)
            say(f"(10) floor-size sweep: {s.floor_events:,} events on {sizes} agents")
            r["floor"] = await floor_sweep(b, client, s.floor_events)
            fl = r["floor"]
            say(f"  {max(FLOOR_SIZES):,} agents vs {min(FLOOR_SIZES):,}: {fl['ratio']:.2f}x the events/s, "
                f"{fl['cost_ratio']:.2f}x the events per CPU-second (worker + Redis)")  # fmt: skip

        if "reads" in parts:
            say(f"(11) reads and memory at {reads.AGENTS:,} agents: {s.reads_events:,} events")
            r["reads"] = reads.measure(s.reads_events, b.workdir, REPO)
            rd = r["reads"]
            say(f"  {rd['bytes_per_event']:.0f} B per event; snapshot team {rd['snapshot_team']['median_ms']:,.0f} ms, "
                f"full {rd['snapshot_full']['median_ms']:,.0f} ms")  # fmt: skip

        if "load" in parts:
            say("(4)(5) steady 2,000 events/s: lag and websocket alert latency")
            r["load"] = await steady_load(b, b.settings("ld"), client)
            ld = r["load"]
            say(f"  lag p50 {_ms(ld['lag_p50'])} p99 {_ms(ld['lag_p99'])} ({ld['lag_lost']} lost)")
            say(f"  alert p50 {_ms(ld['alert_p50'])} p99 {_ms(ld['alert_p99'])} ({ld['alert_lost']} lost)")
            say(f"    of which sent -> evaluated by the worker: p50 {_ms(ld.get('alert_eval_p50'))} "
                f"p99 {_ms(ld.get('alert_eval_p99'))}")  # fmt: skip
            say(f"  broker ack p99 {_ms(ld['ack_p99'])}, readable p99 {_ms(ld['visible_p99'])}")
            say(f"  backlog at the end {ld['backlog_at_end']:,}; worker CPU {ld['worker_cpu_share']:.2f}")
            if before is not None:
                say("(4)(5) before: the same with the per-record worker")
                r["load_before"] = await steady_load(b, b.settings("lb"), client, code=before)
                lb = r["load_before"]
                say(f"  lag p50 {_ms(lb['lag_p50'])} p99 {_ms(lb['lag_p99'])} ({lb['lag_lost']} lost)")
                say(f"  alert p50 {_ms(lb['alert_p50'])} p99 {_ms(lb['alert_p99'])} ({lb['alert_lost']} lost)")

        if "catchup" in parts:
            say(f"(9) catch-up: a worker starting on the last {span(s.catchup_s)} of {s.catchup_seats:,} seats")
            r["catchup"] = await catch_up(b, b.settings("cu"), client)
            cu = r["catchup"]
            say(f"  {cu['events']:,} events in {cu['seconds']:.1f} s from spawn ({cu['rate']:,.0f} events/s)")

        if "scale" in parts:
            say("(8) scale-out: 2 workers, one consumer group, 4 partitions")
            r["scale2"] = await callpulse_run(
                b, p1.replace(consumer_group="scale2"), client, s.events, workers=2, label="2 workers"
            )
            say(f"  {r['scale2']['rate']:,.0f} events/s ({r['scale2']['rate_with_startup']:,.0f} with start-up)")

        if "replay" in parts:
            say(f"(6)(7) {s.replay_events:,} events: worker with py-spy and RSS samples, then a timed replay")
            r["million"] = await million(b, b.settings("mm"), client)
            m = r["million"]
            say(f"  worker processed {m['worker_processed']:,} ({m['worker_rate_with_startup']:,.0f} events/s)")
            say(f"  replay {m['replay']['rate']:,.0f} events/s")
            say(f"  {m['memory']['bytes_per_agent_window']:,.0f} B per agent-window")
    finally:
        await client.aclose()


def _floor_of(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        saved = pickle.load(f)
    floor = saved["results"].get("floor")
    if floor is None:
        raise SystemExit(f"--floor-before {path}: that run has no floor-size sweep (run it with --only floorsize)")
    return {**floor, "label": f"{saved['env']['date']}, `{saved['env']['command']}`"}


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "ram_gb": psutil.virtual_memory().total / 2**30,
        "python": sys.version.split()[0],
    }


def busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def own_cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument(
        "--output", help="report to write (default: BENCHMARKS.md for a full run; a --quick run only prints)"
    )
    parser.add_argument("--note", default="", help="a line to add to the report (e.g. what else was running)")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts (repeatable; development)")
    parser.add_argument(
        "--reads-before",
        metavar="JSON",
        help="bench/floor.py's --out file from older code: its reads and memory are shown as 'before' in (11)",
    )
    parser.add_argument(
        "--floor-before",
        metavar="RESULTS",
        help="a saved run's results.pkl, measured on older code: its floor-size sweep is shown as 'before'",
    )
    parser.add_argument(
        "--render-from", metavar="RESULTS", help="rewrite the report from a saved run's results.pkl; runs nothing"
    )
    args = parser.parse_args(argv)
    if args.render_from:
        with open(args.render_from, "rb") as f:
            saved = pickle.load(f)
        output = args.output or str(REPO / "BENCHMARKS.md")
        Path(output).write_text(report.render(saved["env"], saved["results"]), encoding="utf-8")
        print(f"wrote {output} from {args.render_from}")
        return 0
    sizes = QUICK if args.quick else FULL
    command = shlex.join([".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])])

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    cleanup = Cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="callpulse-bench-"))
    os.chdir(workdir)  # Faust writes its <app>-data directories into the working directory
    bench = Bench(sizes, workdir, cleanup)
    loadavg0 = os.getloadavg()
    busy0, own0, wall0 = busy_cpu_s(), own_cpu_s(), time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    random.seed(1)
    interrupted = False
    try:
        bench.start_servers()
        asyncio.run(run_all(bench, args.only or PARTS))
    except KeyboardInterrupt:
        print("bench: interrupted; stopping everything it started", file=sys.stderr)
        interrupted = True
    except Exception:
        traceback.print_exc()
        print("bench: a measurement failed; stopping everything it started", file=sys.stderr)
        interrupted = True
    finally:
        cleanup.close()
    wall = time.monotonic() - wall0
    others = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s() - own0))
    env = {
        "date": started,
        "machine": machine(),
        "command": command,
        "sizes": types.SimpleNamespace(**dataclasses.asdict(sizes)),  # picklable whether run as a script or not
        "quick": args.quick,
        "wall_s": wall,
        "loadavg_before": loadavg0,
        "others_cpu_share": others / wall,
        "note": args.note,
        "workdir": str(workdir),
    }
    if args.floor_before:
        bench.results["floor_before"] = _floor_of(args.floor_before)
    if args.reads_before:  # bench/floor.py's JSON from older code (run it there with --out)
        bench.results["reads_before"] = json.loads(Path(args.reads_before).read_text())
    with open(workdir / "results.pkl", "wb") as results_file:
        pickle.dump({"env": env, "results": bench.results}, results_file)
    if interrupted:
        print(f"bench: what was measured is in {workdir / 'results.pkl'} (--render-from it)", file=sys.stderr)
        return 130
    print()
    print(report.summary_table(bench.results))
    output = args.output or (None if args.quick else str(REPO / "BENCHMARKS.md"))
    if output:
        Path(output).write_text(report.render(env, bench.results), encoding="utf-8")
        print(f"\nwrote {output}")
    print(f"({wall:.0f} s; logs and the raw profiles in {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
