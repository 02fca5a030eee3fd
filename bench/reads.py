"""Part (11) of `make bench`: reads and Redis memory at 10,000 agents, run by `bench/floor.py` in a child process.

The child starts its own redis-server, feeds the simulator's floor through the worker's batch path, measures
Redis bytes per event by key kind, then times snapshots (full, one team, `agents=false`) and `/metrics` while
the floor stays live (events at the floor's rate, the monitor's floor cache following them). The figures go
into BENCHMARKS.md with the targets of issue 11; a saved result from older code (`--reads-before`) is shown
next to them as "before".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

AGENTS = 10_000
TARGETS = {  # issue 11: (what, target, met when)
    "snapshot_team": ("`GET /api/snapshot?team=X`", "< 20 ms median", lambda v: v["median_ms"] < 20),
    "snapshot_agents_false": ("`GET /api/snapshot?agents=false`", "< 20 ms median", lambda v: v["median_ms"] < 20),
    "snapshot_full": ("`GET /api/snapshot` (full floor)", "< 300 ms median", lambda v: v["median_ms"] < 300),
    "metrics": ("`/metrics`", "< 500 ms and < 5 MB", lambda v: v["median_ms"] < 500 and v["bytes"] < 5e6),
}
MEMORY_TARGET = 64.0


def measure(events: int, workdir: Path, repo: Path) -> dict[str, Any]:
    """Run bench/floor.py on a 10,000-agent floor in a child process; its JSON result."""
    out = workdir / "floor.json"
    cmd = [sys.executable, "-m", "bench.floor", "--agents", str(AGENTS), "--events", str(events), "--out", str(out)]
    subprocess.run(cmd, cwd=repo, check=True, stdout=subprocess.DEVNULL)
    return dict(json.loads(out.read_text()))


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows 11 of the summary table."""
    r = results.get("reads")
    if not r:
        return []
    rows = []
    for key, (what, target, met) in TARGETS.items():
        v = r[key]
        fig = f"{v['median_ms']:,.0f} ms, {v['bytes'] / 1e6:.2f} MB at {r['agents']:,} agents"
        rows.append(("11", what, fig, target, "**met**" if met(v) else "**not met**"))
    bpe = r["bytes_per_event"]
    fig = f"{bpe:.0f} B per event after {r['events']:,} events ({r['hours']} h of a {r['agents']:,}-agent floor)"
    rows.append(("11", "Redis memory", fig, f"≤ {MEMORY_TARGET:.0f} B per event", _met(bpe <= MEMORY_TARGET)))
    return rows


def _backlog_lines(r: dict[str, Any]) -> list[str]:
    """The catch-up before the timed reads (runs from before it was measured have none)."""
    b = r.get("backlog")
    if not b:
        return []
    return [
        "",
        f"Before the timed reads, the {b['events']:,} events that came due while the floor loaded arrived at once "
        f"(a catch-up); the first `agents=false` read after them took {b['first_read_ms']:,.0f} ms, the cache "
        "taking in every agent they touched. The timed reads start after it.",
    ]


def _read_cell(v: dict[str, Any]) -> str:
    """A read's median, its 90th percentile and slowest when the run has them (older results do not), and size."""
    spread = f" (p90 {v['p90_ms']:,.0f}, max {v['max_ms']:,.0f})" if "p90_ms" in v else ""
    return f"{v['median_ms']:,.0f} ms{spread}, {v['bytes'] / 1e6:.2f} MB"


def _kind_bytes(run: dict[str, Any], kind: str) -> float:
    return float(run["kinds"].get(kind, {}).get("bytes_per_event", 0.0))


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def section(results: dict[str, Any]) -> list[str]:
    """The (11) section: memory by key kind and read times, before and after when a before is given."""
    r = results.get("reads")
    if not r:
        return []
    before = results.get("reads_before")
    return runs_section(r, [("before", before), ("after", r)] if before else [("this code", r)])


def runs_section(r: dict[str, Any], runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The (11) section with a column per run (label, bench/floor.py's JSON); `r` is the run described."""
    lines = [
        "## Reads and memory at 10,000 agents (11)",
        "",
        f"`bench/floor.py`: {r['events']:,} simulator events for {r['agents']:,} agents at the floor's rate "
        f"(200 events/s, so {r['hours']} h of history, all retained) through the worker's batch path into a fresh "
        "redis-server; then each read timed alone (median; 90th percentile and slowest of its calls) while events "
        "keep arriving at 200 events/s and the "
        "monitor's floor cache follows them in the background. The demo's scorecard is on.",
        "",
        "| | " + " | ".join(label for label, _ in runs) + " |",
        "|---|" + "---|" * len(runs),
        "| Redis bytes per event | " + " | ".join(f"{x['bytes_per_event']:.0f}" for _, x in runs) + " |",
    ]
    for key, (what, _target, _met_fn) in TARGETS.items():
        cells = [_read_cell(x[key]) for _, x in runs]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    live = r.get("live", {})
    lines += [
        "",
        f"While live, the floor cache re-read {live.get('agents_read_per_s', 0):,.0f} agents/s (those an apply "
        f"touched, and those whose counts left a window) and its refreshes took "
        f"{100 * live.get('cache_refresh_share', 0):.0f} % of the monitor's time.",
        *_backlog_lines(r),
        "",
        "Bytes per event by key kind (MEMORY USAGE on a sample of each kind, times its keys):",
        "",
        "| key kind | " + " | ".join(f"{label}: keys | B/event" for label, _ in runs) + " |",
        "|---|" + "---|---|" * len(runs),
    ]
    kinds = sorted(
        {k for _, x in runs for k in x["kinds"]}, key=lambda k: -r["kinds"].get(k, {}).get("bytes_per_event", 0)
    )
    for kind in kinds:
        cells = []
        for _, x in runs:
            v = x["kinds"].get(kind)
            cells.append(f"{v['keys']:,} | {v['bytes_per_event']:.1f}" if v else "- | -")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return [*lines, ""]
