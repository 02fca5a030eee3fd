"""Sample a running worker with py-spy and summarise where its CPU goes (text, for BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
OUR_PACKAGES = ("streams/", "monitor/", "callpulse/")
# Where a sample's time goes: the first rule whose every substring is in the sample's stack wins.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("alert check after each batch (`AlertEngine.check_agents`)", ("AlertEngine.check_agents",)),
    ("alert sweep, 1 s timer (`AlertEngine.sweep`)", ("AlertEngine.sweep",)),
    ("batch: decode + validate (`Processor.decode`)", ("Processor.decode",)),
    ("batch: plan (`batch.plan`, KPI deltas)", ("plan (", "streams/batch.py")),
    ("batch: apply script call (`WindowStore.apply`, payload encode + Redis I/O)", ("WindowStore.apply",)),
    ("batch: rest of `Processor.process`", ("Processor.process",)),
    ("consume loop: per-record acks, metrics (`app.consume`)", ("build_app.<locals>.consume",)),
    ("Faust consumer thread (aiokafka fetches, hand-over to the main loop)", ("(mode/threads.py",)),
    ("Kafka consumer (aiokafka) and Faust stream delivery on the main loop", ("(aiokafka/",)),
    ("Kafka consumer (aiokafka) and Faust stream delivery on the main loop", ("(faust/",)),
    ("Redis client I/O outside callpulse frames", ("(redis/",)),
    ("event loop waiting in select()", ("EpollSelector.select",)),
    ("other (event loop, mode services, timers)", ()),
)


@dataclass
class Profile:
    """A py-spy sample summary; shares are fractions of all on-CPU samples of the process."""

    samples: int = 0
    error: str | None = None
    raw_path: Path | None = None
    by_owner: list[tuple[str, float]] = field(default_factory=list)
    by_package: list[tuple[str, float]] = field(default_factory=list)
    top_self: list[tuple[str, float]] = field(default_factory=list)
    top_inclusive: list[tuple[str, float]] = field(default_factory=list)
    by_thread: list[tuple[str, float]] = field(default_factory=list)
    by_phase: list[tuple[str, float]] = field(default_factory=list)
    cpus: float = 0.0  # mean CPUs the process used while sampled


def py_spy_bin() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


async def record(pid: int, duration_s: float, out: Path, *, rate_hz: int = 100) -> Profile:
    """Record `duration_s` of samples from `pid` (non-blocking, all threads) and summarise them."""
    exe = py_spy_bin()
    if exe is None:
        return Profile(error="py-spy not installed (pip install py-spy into the venv)")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(int(duration_s)), "--rate", str(rate_hz)]
    argv += ["--nonblocking", "--threads", "--format", "raw", "--output", str(out)]
    for _attempt in range(3):  # py-spy sometimes fails to read the interpreter version at the first try
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), duration_s + 30)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode == 0 and out.exists():
            break
    if proc.returncode != 0 or not out.exists():
        return Profile(error=f"py-spy exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    prof = summarise(out.read_text(errors="replace"))
    prof.raw_path = out
    prof.cpus = prof.samples / (int(duration_s) * rate_hz)
    return prof


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _parse(frame: str) -> tuple[str, str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "", ""
    return m.group("func"), _short(m.group("path") or ""), m.group("line") or ""


def _package(path: str) -> str:
    if path.startswith(OUR_PACKAGES):
        return path  # our modules one by one
    head = path.split("/", 1)[0]
    return head.removesuffix(".py") or "?"


def summarise(raw: str, top: int = 15) -> Profile:
    """Summarise py-spy raw (collapsed) output recorded with --threads."""
    owner: Counter[str] = Counter()
    package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
        parsed = [_parse(f) for f in frames if not f.startswith(("thread", "process"))]
        if not parsed:
            continue
        total += n
        threads[thread.partition(": ")[2] or thread] += n
        func, path, lineno = parsed[-1]
        self_time[f"{func} ({path}:{lineno})"] += n
        package[_package(path)] += n
        phases[next(label for label, needles in PHASES if all(x in stack for x in needles))] += n
        ours = [(f, p) for f, p, _ in parsed if p.startswith(OUR_PACKAGES) and p != "callpulse/cli.py"]
        if ours:
            f, p = ours[-1]
            owner[f"{p}:{f}"] += n
        else:
            owner[f"(no callpulse frame) {_package(path)}"] += n
        for key in {f"{f} ({p})" for f, p, _ in parsed}:
            inclusive[key] += n
    prof = Profile(samples=total)
    if total == 0:
        prof.error = "no samples"
        return prof

    def shares(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, v / total) for k, v in c.most_common(top)]

    prof.by_owner = shares(owner)
    prof.by_package = shares(package)
    prof.top_self = shares(self_time)
    prof.top_inclusive = shares(inclusive)
    prof.by_thread = shares(threads)
    prof.by_phase = [(k, v / total) for k, v in phases.most_common()]
    return prof
