"""Render a benchmark run as BENCHMARKS.md and as a short table for the terminal."""

from __future__ import annotations

import math
import re
from typing import Any

from bench import floorsize, reads
from bench.stats import span

TARGET_E2E_RATE = 25_000
TARGET_E2E_VS_REPLAY = 0.8
TARGET_LAG_P99_S = 0.100
TARGET_ALERT_P99_S = 0.250
TARGET_REPLAY_1M_S = 60.0
TARGET_BYTES_PER_AGENT_WINDOW = 2048


def _rate(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f} events/s"


def _ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "> 300 s"
    return f"{x * 1000:.0f} ms" if x >= 0.01 else f"{x * 1000:.1f} ms"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def _get(results: dict[str, Any], *path: str) -> Any:
    cur: Any = results
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(number, measure, figure, target, met) for the summary table."""
    out: list[tuple[str, str, str, str, str]] = []
    raw, naive, e2e = _get(results, "raw", "rate"), _get(results, "naive", "rate"), _get(results, "e2e", "rate")
    out.append(("1", "raw ceiling: aiokafka consumer + orjson.loads", _rate(raw), "", ""))
    out.append(("2", "naive Faust agent, one awaited Redis call per event", _rate(naive), "", ""))
    replay = _get(results, "e2e", "identity", "replay", "rate")
    before = _get(results, "e2e_before", "rate")
    if e2e is not None:
        vs_raw = e2e / raw if raw else float("nan")
        vs_naive = e2e / naive if naive else float("nan")
        fig = f"{_rate(e2e)} first→last ({_rate(results['e2e']['rate_with_startup'])} with start-up); "
        if replay:
            fig += f"{e2e / replay:.2f}x the replay path on the same topic ({_rate(replay)}); "
        fig += f"{vs_raw:.2f}x raw, {vs_naive:.1f}x naive"
        if before:
            fig += f"; before (per-record delivery): {_rate(before)}, so {e2e / before:.1f}x"
        ok = e2e >= TARGET_E2E_RATE and replay is not None and e2e >= TARGET_E2E_VS_REPLAY * replay
        out.append(
            ("3", "callpulse worker end to end", fig, "≥ 25,000 events/s and ≥ 80 % of the replay path", _met(ok))
        )
    ld = results.get("load")
    if ld:
        lb = results.get("load_before")
        fig = f"p50 {_ms(ld['lag_p50'])}, p99 {_ms(ld['lag_p99'])} ({ld['lag_n']} probes at {ld['rate']:,.0f} ev/s)"
        if lb:
            fig += f"; before: p50 {_ms(lb['lag_p50'])}, p99 {_ms(lb['lag_p99'])}"
        ok = ld["lag_p99"] is not None and ld["lag_lost"] == 0 and ld["lag_p99"] < TARGET_LAG_P99_S
        out.append(("4", "event ts → window updated", fig, "p99 < 100 ms", _met(ok)))
        fig = f"p50 {_ms(ld['alert_p50'])}, p99 {_ms(ld['alert_p99'])} ({ld['alert_n']} probes)"
        if lb:
            fig += f"; before: p50 {_ms(lb['alert_p50'])}, p99 {_ms(lb['alert_p99'])}"
        ok = ld["alert_p99"] is not None and ld["alert_lost"] == 0 and ld["alert_p99"] < TARGET_ALERT_P99_S
        out.append(("5", "event → websocket alert", fig, "p99 < 250 ms", _met(ok)))
    m = results.get("million")
    ident = _get(results, "e2e", "identity")
    if m:
        rep = m["replay"]
        extrap = "" if m["events"] >= 1_000_000 else f" (extrapolated from {rep['replayed']:,})"
        same = ""
        if ident:
            same = "; windows identical" if ident["identical"] else f"; **{ident['mismatched']} agents differ**"
        short = ""
        if rep["replayed"] < m["events"]:
            short = f"; **read only {rep['replayed']:,} of {m['events']:,} records**"
        fig = f"{_rate(rep['rate'])}; 1M events in {m['replay_1m_s']:.0f} s{extrap}{same}{short}"
        ok = m["replay_1m_s"] < TARGET_REPLAY_1M_S and (ident is None or ident["identical"]) and not short
        out.append(("6", "replay from earliest offsets", fig, "1M in < 60 s, identical", _met(ok)))
        mem = m["memory"]
        small = _get(results, "e2e", "memory")
        fig = (
            f"{mem['bytes_per_agent_window']:,.0f} B per agent-window after {rep['replayed']:,} events "
            f"({mem['active_agents']} agents x {mem['windows']})"
        )
        if small:
            fig += f", {small['bytes_per_agent_window']:,.0f} B after {results['e2e']['events']:,}"
        fig += f"; worker RSS {m['rss_mb']:.0f} MB after {m['worker_processed']:,} events"
        fit = rss_at(m["rss_samples"], m["events"])
        if not m["worker_finished"] and fit is not None:
            fig += f" (≈ {fit:.0f} MB at {m['events']:,} by a linear fit)"
        ok = mem["bytes_per_agent_window"] <= TARGET_BYTES_PER_AGENT_WINDOW
        out.append(("7", "Redis memory, worker RSS", fig, "≤ 2 KB per agent-window", _met(ok)))
    s2 = results.get("scale2")
    if s2 and e2e is not None:
        fig = f"1 worker {_rate(e2e)}; 2 workers {_rate(s2['rate'])} ({s2['rate'] / e2e:.2f}x)"
        out.append(("8", "scale-out on 4 partitions", fig, "", ""))
    cu = results.get("catchup")
    if cu:
        fig = (
            f"{cu['events']:,} events ({cu['seats']:,} seats, {span(cu['history_s'])}) applied "
            f"{cu['seconds']:.0f} s after the worker's spawn; {_rate(cu['rate'])} first→last"
        )
        if cu.get("processed", cu["events"]) < cu["events"]:
            fig += f" (**stopped with {cu['processed']:,} done**)"
        out.append(("9", "catch-up on a backlog, one worker from an empty Redis", fig, "", ""))
    row10 = floorsize.summary_row(results)
    if row10 is not None:
        out.append(row10)
    out += reads.summary_rows(results)
    return out


def summary_table(results: dict[str, Any]) -> str:
    """The summary as a Markdown table."""
    lines = ["| # | measure | result | target | |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows(results)]
    return "\n".join(lines)


def rss_at(samples: list[tuple[int, float]], n: int) -> float | None:
    """Least-squares line through (records, MB) samples past the first 10 % of n, evaluated at n."""
    pts = [(x, y) for x, y in samples if x >= n // 10]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    if var == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / var
    return my + slope * (n - mx)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _profile_section(prof: Any) -> list[str]:
    if prof is None:
        return ["No profile was taken."]
    if prof.error:
        return [f"No profile: {prof.error}."]
    out = [
        f"{prof.samples} on-CPU samples (py-spy, 100 Hz, `--nonblocking --threads`): the process used "
        f"{prof.cpus:.2f} CPUs on average while sampled.",
        "",
        "Where the time goes (each sample charged to the first matching row, top to bottom):",
        "",
        "| part | share |",
        "|---|---|",
    ]
    out += [f"| {name} | {_pct(v)} |" for name, v in prof.by_phase]
    out.append("")
    out += ["CPU by thread:", "", "| thread | share |", "|---|---|"]
    out += [f"| {name} | {_pct(v)} |" for name, v in prof.by_thread]
    out += ["", "By owner — the innermost callpulse frame on the stack (library time under it is charged to it):", ""]
    out += ["| owner | share |", "|---|---|"]
    out += [f"| `{name}` | {_pct(v)} |" for name, v in prof.by_owner]
    out += ["", "Self time by module or package (leaf frame):", "", "| module | share |", "|---|---|"]
    out += [f"| `{name}` | {_pct(v)} |" for name, v in prof.by_package]
    out += ["", "Top frames by self time:", "", "| frame | self |", "|---|---|"]
    out += [f"| `{name}` | {_pct(v)} |" for name, v in prof.top_self]
    out += ["", "Top functions by inclusive time:", "", "| function | inclusive |", "|---|---|"]
    out += [f"| `{name}` | {_pct(v)} |" for name, v in prof.top_inclusive]
    return out


def _phase_share(prof: Any, *starts: str) -> float:
    if prof is None or prof.error:
        return 0.0
    return sum(v for name, v in prof.by_phase if name.startswith(starts))


def findings(results: dict[str, Any]) -> str:
    """What this run's figures say, and what to try; every number comes from the run."""
    out: list[str] = []
    e2e, m, cu = results.get("e2e"), results.get("million"), results.get("catchup")
    prof = m.get("profile") if m else (cu.get("profile") if cu else None)
    rep = m.get("replay") if m else None
    eng = _get(results, "e2e", "engine")
    ld = results.get("load")
    if prof is not None and not prof.error:
        alert = _phase_share(prof, "alert")
        core = _phase_share(prof, "batch:")
        loop = _phase_share(prof, "other", "event loop", "Redis client I/O")
        delivery = _phase_share(prof, "Kafka consumer")
        thread = _phase_share(prof, "Faust consumer thread")
        out.append(
            f"1. **Where the worker's CPU goes now.** Faust's delivery on the main loop takes {_pct(delivery)} of "
            f"the samples (one message per fetched partition batch, not per record); the consumer thread, where "
            f"aiokafka fetches and builds its record objects, {_pct(thread)}; the KPI core (decode, plan, the apply "
            f"call) {_pct(core)}; alerts {_pct(alert)} (`check_agents` for the agents batches changed, plus the 1 s "
            f"`sweep`); event loop, timers and Redis-client frames {_pct(loop)}. Per record, what is left is "
            "callpulse's own Python (validation, planning) and the apply script in Redis."
        )
    replay = _get(results, "e2e", "identity", "replay")
    before = results.get("e2e_before")
    if e2e and replay:
        text = (
            f"2. **The worker against the replay path on the same topic: {e2e['rate'] / replay['rate']:.2f}x.** "
            f"The replay (plain aiokafka `getmany` batches of up to 5,000 → `Processor`, no alerts) ran at "
            f"{_rate(replay['rate'])}, the worker at {_rate(e2e['rate'])} with batches of "
            f"{e2e['batch']['mean_batch']:.0f} records on average (one per partition and fetch, limit 2,000). The "
            "replay fetches, plans and applies one batch after the other; the worker fetches in Faust's consumer "
            "thread while its two agents (calls, tickets) each apply a batch."
        )
        if before:
            text += (
                f" Before whole fetches, the same worker ran at {_rate(before['rate'])} in this run "
                f"({e2e['rate'] / before['rate']:.1f}x now), with batches of {before['batch']['mean_batch']:.0f} "
                "records: Faust handed records to the stream one by one."
            )
        out.append(text)
    if eng:
        out.append(
            f"3. **Alert evaluation reads far more than it needs.** `check_agents` for {eng['sample']} agents took "
            f"{eng['check_some_ms']:.0f} ms alone (≈ {1000 * eng['check_some_ms'] / eng['sample']:.0f} µs per "
            "agent): per agent it pipelines one HMGET plus an HGETALL for every 10-minute chunk of its longest rule "
            "window (7 for 1h), and parses every bucket field of each. A `sweep()` over all "
            f"{eng['agents']} agents took {eng['sweep_ms']:.0f} ms at this density ("
            f"{results['e2e']['events'] / max(1, eng['agents']):.0f} events per agent over two hours; the read grows "
            "with the bucket fields in the last hour) and runs every second on the worker's event "
            "loop — on every worker (two workers sweep twice), and each sweep holds up the batches queued "
            "behind it."
        )
    if ld:
        stack_cpu = sum(ld[k] for k in ("worker_cpu_share", "monitor_cpu_share", "redis_cpu_share"))
        stack_cpu += ld["broker_cpu_share"] + ld["bench_cpu_share"]
        out.append(
            f"4. **Lag at 2,000 events/s.** The broker acknowledged probes in p99 "
            f"{_ms(ld['ack_p99'])} and a plain consumer could read them in p99 {_ms(ld['visible_p99'])}; applied in "
            f"Redis took p99 {_ms(ld['lag_p99'])}. The worker used {ld['worker_cpu_share']:.2f} CPU and still had "
            f"{ld['backlog_at_end']:,} events queued when the window closed; the alert latency (p99 "
            f"{_ms(ld['alert_p99'])}) is that lag plus the alert check, so it follows the lag. The whole stack "
            f"(worker, monitor, Redis, broker, load generator) used {stack_cpu:.2f} CPUs, so on this 2-core machine "
            "the worker also waited for a core."
        )
        lb = results.get("load_before")
        if lb:
            out[-1] += (
                f" The per-record worker, in the same run, took p99 {_ms(lb['lag_p99'])} to the window and "
                f"{_ms(lb['alert_p99'])} to the alert, with {lb['backlog_at_end']:,} events queued at the end."
            )
    if m and rep and rep["replayed"] < m["events"]:
        out.append(
            f"5. **Product bug: the replay stops short** ({rep['replayed']:,} of {m['events']:,} records). "
            "`replay_into` takes each partition's end from `end_offsets()` (ListOffsets, latest) and drops records "
            "at or past it; Tansu answers ListOffsets with the base offset of the partition's last record batch, "
            "not the high watermark (the fetch response's high watermark is right), so the last producer batch of "
            "every partition is never replayed and the rebuilt windows differ from the worker's (6). Fix: take "
            "the end from the consumer's `highwater(tp)` after the first fetch (or `max()` of the two), or only "
            "cut at offsets when `until` is given."
        )
    mem = m.get("memory") if m else None
    if m and mem:
        kinds = mem["kinds"]
        dedupe = kinds.get("dedupe marks e:*", {"keys": 0, "est_bytes": 0.0})
        keys = sum(k["keys"] for k in kinds.values())
        rest = mem["mem_delta_bytes"] - sum(k["est_bytes"] for k in kinds.values())
        share = (dedupe["est_bytes"] + rest * dedupe["keys"] / max(1, keys)) / max(1, mem["mem_delta_bytes"])
        out.append(
            f"6. **Memory is mostly dedupe marks, and grows with events, not agents.** One `e:<event_id>` key per "
            f"event for 8 h 15 min: with their share of the per-key overhead they are ≈ {_pct(share)} of Redis' "
            f"growth. At {m['events'] / max(1, mem['active_agents']):,.0f} events per agent the figure is "
            f"{mem['bytes_per_agent_window']:,.0f} B per agent-window; a 2 KB budget holds only about "
            f"{2048 * mem['windows'] / (mem['mem_delta_bytes'] / max(1, m['replay']['replayed'])):,.0f} events per "
            "agent in 8 h."
        )
    out = [re.sub(r"^\d+\. ", f"{i}. ", line) for i, line in enumerate(out, start=1)]
    out.append("")
    out.append("What to try, in order of expected gain:")
    out.append("")
    out.append(
        "- Cheaper alert reads (they run off the consume path, but on its event loop): skip agents whose "
        "batch added no counter deltas (`agent.state` events, about half the simulator's stream, change no KPI); "
        "read window sums with fewer, smaller commands (chunk totals via HMGET of the 13 total fields for whole "
        "chunks, bucket fields only for the edge chunk, or one Lua call returning the sums per agent)."
    )
    out.append(
        "- One sweeper, not one per worker (a Redis lease), and make the sweep incremental (agents whose windows "
        "can have changed since the last sweep by time passing, i.e. with buckets at the trailing edge), or yield "
        "to the batch path between slices of agents."
    )
    out.append(
        "- Now that Faust hands over whole fetches, Redis sets the worker's ceiling: per agent, overlap decoding "
        "and planning batch N+1 with the apply of batch N (one apply in flight, offsets still committed in "
        "order), and cut the apply script's cost per record (it runs once per record for the dedupe mark and "
        "the bucket deltas; see the µs per record above)."
    )
    rprof = rep.get("profile") if rep else None
    lead = ""
    if rprof is not None and not rprof.error and rprof.by_phase:
        top = rprof.by_phase[:2]
        lead = "; its own profile is led by " + " and ".join(f"{name} ({_pct(v)})" for name, v in top)
    out.append(
        "- Replay: overlap the fetch and plan of batch N+1 with the apply of batch N (one apply in flight)"
        + (", and fix the end-offset bug above" if m and rep and rep["replayed"] < m["events"] else "")
        + f"{lead}."
    )
    out.append(
        "- Dedupe marks: keep them as fields of one hash per (agent, 10-minute chunk of the event's ts) — HSETNX, "
        "one EXPIRE per hash — instead of one key with its own expiry per event; small hashes are compact "
        "listpacks, which removes most of the per-key overhead (the remainder row above)."
    )
    return "\n".join(out)


def render(env: dict[str, Any], results: dict[str, Any]) -> str:
    """The whole BENCHMARKS.md."""
    mach = env["machine"]
    sizes = env["sizes"]
    la = env["loadavg_before"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/run.py` (`make bench`); rerun it to refresh this file. A benchmark, not a test: "
        "nothing here fails a build.",
        "",
        f"- **Date:** {env['date']}",
        f"- **Machine:** {mach['nproc']} CPUs ({mach['cpu']}), {mach['ram_gb']:.0f} GB RAM, Python {mach['python']}",
        f"- **Command:** `{env['command']}`" + (" (quick sizes: development only)" if env["quick"] else ""),
        f"- **Run time:** {env['wall_s']:.0f} s",
        "- **Set-up:** an embedded Tansu broker (memory storage) and a private `redis-server`, both on this "
        "machine: broker, Redis, worker(s), monitor and the load generator share its CPUs.",
        f"- **Other load:** load average {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} just before the run; other "
        f"processes used about {env['others_cpu_share']:.2f} CPUs on average during it "
        f"(of {mach['nproc']}). Figures are noisy accordingly.",
    ]
    if env.get("note"):
        lines.append(f"- **Note:** {env['note']}")
    lines += ["", "## Summary", "", summary_table(results), ""]

    p = results.get("prefill", {})
    raw, naive, e2e, s2 = results.get("raw"), results.get("naive"), results.get("e2e"), results.get("scale2")
    lines += ["## Throughput (1, 2, 3, 8)", ""]
    lines.append(
        f"Input: {p.get('produced', 0):,} events from the simulator (`generate(agents={sizes.agents}, ...)`, a "
        f"two-hour history ending now, so none is late), on `calls` and `tickets` with 4 partitions each, "
        f"pre-filled in {p.get('produce_s', 0):.1f} s. Every consumer below reads the same topics from the start."
    )
    lines.append("")
    if raw:
        lines.append(f"- **(1) Raw ceiling:** {_rate(raw['rate'])} — one aiokafka consumer, all 8 partitions "
                     "assigned, `orjson.loads` on each value, nothing else.")  # fmt: skip
    if naive:
        lines.append(
            f"- **(2) Naive baseline:** {_rate(naive['rate'])} over the first {naive['events']:,} events — "
            "`bench/naive_app.py`: a Faust app (`value_serializer='raw'`, session timeout 6 s), one agent per topic, "
            "`json.loads` then one awaited `HINCRBY` per event; "
            f"{naive['cpu_us_per_event']:.0f} µs of its CPU per event."
        )
    for r, num in ((e2e, "3"), (results.get("e2e_before"), "3, before"), (s2, "8")):
        if not r:
            continue
        c = r["counts"]
        bt = r["batch"]
        per = ", ".join(f"{x:,.0f}" for x in r["per_worker_events"])
        capped = ""
        if r.get("processed", r["events"]) < r["events"]:
            capped = (
                f" — stopped at its time cap of {r['time_cap_s']:.0f} s with {r['processed']:,} of {r['events']:,} "
                "records done, so timed over those"
            )
        lines.append(
            f"- **({num}) callpulse, {r['label']}:** {_rate(r['rate'])} from the first processed record to the last "
            f"({r['seconds']:.1f} s{capped}); {_rate(r['rate_with_startup'])} counting start-up "
            f"({r['startup_s']:.1f} s from spawn to the first applied batch: imports, topic check, group join — "
            f"Tansu holds a JoinGroup for half the 6 s session timeout). Counts: ok {c['ok']:,}, late {c['late']:,}, "
            f"invalid {c['invalid']:,}, duplicate {c['duplicate']:,}. Records per worker: {per}. "
            f"{bt['batches']:,.0f} batches, mean {bt['mean_batch']:.0f} records and {bt['mean_batch_ms']:.1f} ms each. "
            f"CPU per event: worker {r['worker_cpu_us_per_event']:.0f} µs (all workers, start-up included), "
            f"Redis {r['redis_cpu_us_per_event']:.1f} µs (of which the apply script {r['lua_us_per_event']:.1f} µs), "
            f"broker {r['broker_cpu_us_per_event']:.1f} µs."
        )
    eng = _get(results, "e2e", "engine")
    if eng:
        mins = "/".join(f"{m}m" for m in eng["rule_windows"])
        lines.append(
            f"- **Alert engine, timed alone** (in the benchmark process, on the state (3) left: {eng['agents']} active "
            f"agents, {eng['active_alerts']} active alerts; rule windows {mins}): `check_agents` for "
            f"{eng['sample']} agents {eng['check_some_ms']:.0f} ms (`read_windows` alone for them: "
            f"{eng['read_some_ms']:.0f} ms; `current()`, HGETALL + decode of every active alert: "
            f"{eng['current_ms']:.0f} ms); one `sweep()` {eng['sweep_ms']:.0f} ms (`read_windows` alone for every "
            f"agent: {eng['read_all_ms']:.0f} ms). Each call timed once, so ±30 % or so. The "
            "worker runs `check_agents` in a background task for the agents its batches changed, and `sweep()` "
            "every second, on the same event loop."
        )
    if results.get("e2e_before"):
        lines.append(
            f'- **Before and after:** "before" is the worker as of `{results.get("before_rev", "?")}` (the '
            "commit before `streams/consumer.py`: Faust delivering one record at a time, `noack_take` batches), "
            'run from a `git archive` of that commit on the same topic in this run; "after" is this tree\'s '
            "worker, which takes whole fetches."
        )
    if e2e and s2:
        lines.append(
            f"- **(8) Scale-out:** {s2['rate'] / e2e['rate']:.2f}x with a second worker. One worker is bound by "
            f"its single Python event loop (≈ {e2e['worker_cpu_us_per_event'] * e2e['rate'] / 1e6:.2f} CPU in (3)), "
            f"so a second process can use the machine's other core; past that, with {mach['nproc']} CPUs shared by "
            "broker, Redis and the workers, more workers would only compete. The start-up includes a rebalance "
            "when the second member joins."
        )
    lines.append("")
    ld = results.get("load")
    if ld:
        lines += ["## Latency under a steady 2,000 events/s (4, 5)", ""]
        lines.append(
            f"One worker and the monitor running; the simulator's floor ({sizes.agents} agents) sent at "
            f"{ld['rate']:,.0f} events/s (measured) for {ld['duration_s']:.0f} s after a {sizes.load_warmup_s:.0f} s "
            "warm-up, each event when the wall clock reaches its ts. One websocket client on `/ws?window=15m` "
            f"received {ld['ws_messages']} messages ({ld['ws_snapshot_mb']:.1f} MB of snapshots)."
        )
        lines.append("")
        lines.append(
            f"- **(4) Event → window:** p50 {_ms(ld['lag_p50'])}, p99 {_ms(ld['lag_p99'])}, max {_ms(ld['lag_max'])} "
            f"over {ld['lag_n']} probes ({ld['lag_lost']} never seen). A probe is an `agent.state` event for a fresh "
            "agent `lagprobe-N` with ts = its send time, sent by its own producer (no linger); another task polls "
            f"`ZMSCORE <ns>agents` every {_ms(ld['poll_s'])} (mean period) and takes the midpoint of the poll that "
            "first sees the agent. The worker's own histogram (every event, coarse buckets, `lag|*` in the stats "
            f"hash; {ld['hist_n']:,} events) puts p50 ≤ {_ms(ld['hist_p50'])} and p99 ≤ {_ms(ld['hist_p99'])}; it "
            "also counts each background event's wait for its producer batch (linger 5 ms, send tick 5 ms)."
        )
        lines.append(
            f"- **Where the lag builds up:** probe send → broker ack p50 {_ms(ld['ack_p50'])}, p99 "
            f"{_ms(ld['ack_p99'])}; send → readable by a plain consumer tailing `calls` (fetch wait 10 ms) p50 "
            f"{_ms(ld['visible_p50'])}, p99 {_ms(ld['visible_p99'])}; send → applied in Redis as above. When the "
            f"measured window closed, {ld['backlog_at_end']:,} sent events were not yet applied "
            f"({ld['backlog_at_end'] / max(1.0, ld['rate']):.1f} s of input)."
        )
        lines.append(
            f"- **(5) Event → websocket alert:** p50 {_ms(ld['alert_p50'])}, p99 {_ms(ld['alert_p99'])}, max "
            f"{_ms(ld['alert_max'])} over {ld['alert_n']} probes ({ld['alert_lost']} never seen). Every "
            f"{sizes.alert_interval_s} s, five connected 900 s calls for a fresh agent `alertprobe-N` are sent at once "
            "(AHT 900 s > 480 s with min_samples 5); the clock starts when the fifth is handed to the producer and "
            'stops when `{"type":"alert","status":"firing","agent_id":"alertprobe-N"}` arrives. Of that, from the '
            f"send to the alert's own `ts` (when the worker evaluated it): p50 {_ms(ld.get('alert_eval_p50'))}, "
            f"p99 {_ms(ld.get('alert_eval_p99'))}; the rest is the monitor's hand-over to the websocket."
        )
        lines.append(
            f"- CPU in use during the load: worker {ld['worker_cpu_share']:.2f}, "
            f"monitor {ld['monitor_cpu_share']:.2f}, Redis {ld['redis_cpu_share']:.2f}, broker "
            f"{ld['broker_cpu_share']:.2f}, this load generator and its probes {ld['bench_cpu_share']:.2f} (CPUs). "
            f"Producer send errors: {ld['send_errors']}. The worker's batches over the whole phase: "
            f"{ld['batch']['batches']:,.0f}, mean {ld['batch']['mean_batch']:.0f} records and "
            f"{ld['batch']['mean_batch_ms']:.1f} ms each (decode to Redis applied; the alert check comes after)."
        )
        lines.append("")
    cu = results.get("catchup")
    if cu:
        c = cu["counts"]
        bt = cu["batch"]
        lines += ["## Catch-up on a backlog (9)", ""]
        lines.append(
            f"A floor of {cu['seats']:,} seats sending {cu['events'] / cu['history_s']:,.0f} events/s for the last "
            f"{span(cu['history_s'])}: {cu['events']:,} events pre-filled on 4 partitions per topic "
            f"({cu['produce_s']:.0f} s to produce), then one worker started on them with an empty Redis, as after "
            f"an outage. It applied the last of them **{cu['seconds']:.0f} s** after its spawn "
            f"({cu['startup_s']:.1f} s of start-up, then {_rate(cu['rate'])}). Counts: ok {c['ok']:,}, late "
            f"{c['late']:,}, invalid {c['invalid']:,}, duplicate {c['duplicate']:,}. {bt['batches']:,.0f} batches, "
            f"mean {bt['mean_batch']:.0f} records and {bt['mean_batch_ms']:.1f} ms each. CPU per event: worker "
            f"{cu['worker_cpu_us_per_event']:.0f} µs, Redis {cu['redis_cpu_us_per_event']:.1f} µs."
        )
        lines += ["", "### Where the worker's CPU goes during the catch-up", ""]
        lines += _profile_section(cu.get("profile"))
        lines.append("")
    lines += floorsize.section(results)
    lines += reads.section(results)
    m = results.get("million")
    ident = _get(results, "e2e", "identity")
    if m:
        rep = m["replay"]
        lines += ["## Replay and memory (6, 7)", ""]
        if ident:
            r0 = ident["replay"]
            verdict = (
                "**identical** before the wipe and after the replay."
                if ident["identical"]
                else f"**different for {ident['mismatched']} agents** before the wipe and after the replay."
            )
            lines.append(
                f"- **(6) Identity:** after (3), the worker's windows were read with `WindowStore.read_windows` at one "
                f"fixed instant (all windows, {ident['agents_compared']} active agents); the worker was stopped, Redis "
                "wiped (`FLUSHALL`) and `streams.replay.replay_into` (a plain aiokafka consumer driving the same "
                f"`Processor`) rebuilt them from the earliest offsets ({r0['replayed']:,} of the "
                f"{results['e2e']['events']:,} records in the topic, {_rate(r0['rate'])}); the same read was {verdict}"
            )
            if ident.get("diffs"):
                lines.append("")
                lines.append("  First differences (worker-built → after the replay):")
                lines.append("")
                lines += [f"  - `{d}`" for d in ident["diffs"]]
                lines.append("")
        extrap = "" if m["events"] >= 1_000_000 else f" (extrapolated linearly from {rep['replayed']:,} records)"
        lines.append(
            f"- **(6) Replay speed:** a second topic pre-filled with {m['events']:,} simulator events (same floor, "
            f"{m['produce_s']:.0f} s to produce), replayed into an empty Redis: {rep['replayed']:,} of "
            f"{m['events']:,} records in "
            f"{rep['seconds']:.1f} s = {_rate(rep['rate'])}, the replaying process using {rep['cpu_share']:.2f} CPU; "
            f"1M records ≈ **{m['replay_1m_s']:.0f} s**{extrap}. Redis used {rep['redis_cpu_share']:.2f} CPU; "
            f"{rep['lua_s']:.1f} s of the {rep['seconds']:.1f} s were spent inside the apply script "
            f"({rep['batches']:,.0f} calls, {1e6 * rep['lua_s'] / max(1, rep['replayed']):.1f} µs per record), "
            "during which the replay waits: it fetches, plans and applies one batch after the other."
        )
        c = m["worker_counts"]
        if m["worker_finished"]:
            how = f"finished all {m['events']:,} at {_rate(m['worker_rate'])} (first to last record)"
        else:
            how = (
                f"was stopped after {m['worker_cap_s']:.0f} s (time budget) having processed "
                f"{m['worker_processed']:,} of {m['events']:,}, {_rate(m['worker_rate_with_startup'])} overall"
            )
        rss = ", ".join(f"{n // 1000}k: {mb:.0f}" for n, mb in m["rss_samples"][:: max(1, len(m["rss_samples"]) // 8)])
        fit = rss_at(m["rss_samples"], m["events"])
        if not m["worker_finished"] and fit is not None:
            rss += f"; a straight line through the samples past 10 % reaches ≈ {fit:.0f} MB at {m['events']:,}"
        lines.append(
            f"- **Worker on the same topic** (from an empty Redis, py-spy attached for part of it): {how}; ok "
            f"{c['ok']:,}, late {c['late']:,}, invalid {c['invalid']:,}; {m['worker_cpu_us_per_event']:.0f} µs of "
            f"worker CPU per event. **RSS {m['rss_mb']:.0f} MB** at the end (psutil on the worker pid); samples "
            f"(records processed: MB) {rss}."
        )
        for label, mem, events in (
            (f"after the replay of {rep['replayed']:,} events", m["memory"], rep["replayed"]),
            (f"as the worker built it from {_get(results, 'e2e', 'events') or 0:,} events in (3)",
             _get(results, "e2e", "memory"), _get(results, "e2e", "events")),
        ):  # fmt: skip
            if not mem:
                continue
            lines.append(
                f"- **(7) Memory {label}:** `used_memory` grew by {mem['mem_delta_bytes'] / 2**20:.1f} MB for "
                f"{mem['active_agents']} active agents x {mem['windows']} windows = "
                f"**{mem['bytes_per_agent_window']:,.0f} B per agent-window** ({events / mem['active_agents']:,.0f} "
                "events per agent). Key counts by SCAN; bytes estimated from `MEMORY USAGE ... SAMPLES 0` on up to "
                "200 keys of each kind (this leaves out each key's expiry entry and allocator slack, hence the "
                "remainder):"
            )
            lines += ["", "  | keys | count | mean bytes | estimated total | share of the growth |"]
            lines += ["  |---|---|---|---|---|"]
            for kind, k in mem["kinds"].items():
                share = k["est_bytes"] / mem["mem_delta_bytes"] if mem["mem_delta_bytes"] else 0.0
                total_mb = k["est_bytes"] / 2**20
                lines.append(
                    f"  | {kind} | {k['keys']:,} | {k['mean_bytes']:.0f} | {total_mb:.1f} MB | {_pct(share)} |"
                )
            keys = sum(k["keys"] for k in mem["kinds"].values())
            rest = mem["mem_delta_bytes"] - sum(k["est_bytes"] for k in mem["kinds"].values())
            if keys and mem["mem_delta_bytes"]:
                lines.append(
                    f"  | remainder (expiry entries, dict tables, allocator) | ≈ {rest / keys:.0f} B per key | "
                    f"| {rest / 2**20:.1f} MB | {_pct(rest / mem['mem_delta_bytes'])} |"
                )
            lines.append("")
        lines += ["## Where the worker's CPU goes", ""]
        lines.append(
            "py-spy attached to the worker while it consumed the replay topic from the start, beginning once "
            "5 % of the records (at most 20,000) were applied, so start-up is excluded. That is early in the topic, "
            "while agents have few events in their windows: the alert reads cost more as windows fill (see the "
            "timed sweep under (3))."
        )
        lines.append("")
        lines += _profile_section(m.get("profile"))
        lines.append("")
        lines += ["## Where the replay's CPU goes", ""]
        lines.append(
            "py-spy on the replaying process (the benchmark itself, only the replay running in it) during the "
            "timed replay above. The replay drives the same `Processor` as the worker, without Faust and without "
            "alert evaluation."
        )
        lines.append("")
        lines += _profile_section(rep.get("profile"))
        lines.append("")
    text = findings(results)
    if text.strip():
        lines += ["## Findings", "", text.strip(), ""]
    return "\n".join(lines)
