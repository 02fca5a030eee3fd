"""The fault matrix's harness: traces with per-agent sequence numbers, a ledger of what was produced, and probes.

A test builds its input with `seq_trace` (tracegen's trace, each event numbered per agent in ts order), sends it
through a `Producer` into a `Ledger` (every message's partition, offset and the Redis mark that proves it was
applied), breaks something, and then asks:

- `wait_settled` / `assert_exact`: the counters equal the ledger's (ok == unique valid events, late, invalid) and the
  monitor's snapshot for 15m, 1h and 8h equals the brute-force recomputation of `tests.reference`;
- `missing_events`: which (agent, seq) have no dedupe mark in Redis, i.e. were lost;
- `OffsetWatch`: the consumer group's committed offsets over time, flagging any that go backwards (a stale commit)
  or pass a message whose mark is not in Redis (committed past unapplied events).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psutil
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from callpulse.cancelling import reraise_if_cancelling
from callpulse.settings import Settings
from streams import keys
from streams.events import parse_ts_ms
from streams.store import WindowStore, namespace
from tests.helpers import async_wait_for, redis_client, result_counts, stop_task
from tests.integration import tracegen
from tests.reference import diff_snapshot, expected

WINDOWS = ("15m", "1h", "8h")
PARTITIONS = tracegen.PARTITIONS
BASES = ("calls", "tickets")


# --- input --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Msg:
    """One message to produce. `event` is None for an invalid message (its value is whatever `value` holds)."""

    topic: str
    value: bytes | None
    event: dict[str, Any] | None = None
    partition: int | None = None
    key: bytes | None = None
    late: bool = False


def seq_trace(now: float, *, seed: int, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    """tracegen's trace with a `seq` field: 1, 2, 3... per agent (events without an agent share the agent '-')."""
    trace = tracegen.generate_trace(now, seed=seed, **kwargs)
    counters: dict[str, int] = defaultdict(int)
    for _, event in trace.events:  # already in ts order
        owner = str(event.get("agent_id") or "-")
        counters[owner] += 1
        event["seq"] = counters[owner]
    return trace.events


def small_trace(now: float, *, seed: int, agents: int = 8, calls_per_agent: int = 24, **kwargs: Any) -> list[Any]:
    """A trace of roughly 700-900 events: enough for every KPI, small enough for the suite's time budget."""
    kwargs.setdefault("tickets", 70)
    kwargs.setdefault("customers", 60)
    return seq_trace(now, seed=seed, agents=agents, calls_per_agent=calls_per_agent, **kwargs)


def messages(events: Iterable[tuple[str, dict[str, Any]]], *, late: bool = False) -> list[Msg]:
    """JSON-encode events as messages on a producer-chosen partition."""
    return [Msg(topic, orjson.dumps(event), event, late=late) for topic, event in events]


def shuffled(items: Sequence[Any], *, seed: int) -> list[Any]:
    """A seeded shuffle: arrival order unrelated to ts."""
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def with_copies(msgs: Sequence[Msg], *, share: float, seed: int, max_copies: int = 1) -> list[Msg]:
    """Insert 1..max_copies redelivered copies of `share` of the messages at random places, on any partition."""
    rng = random.Random(seed)
    out = list(msgs)
    for i in rng.sample(range(len(msgs)), round(len(msgs) * share)):
        m = msgs[i]
        for _ in range(rng.randint(1, max_copies)):
            copy = Msg(m.topic, m.value, m.event, rng.randrange(PARTITIONS), m.key, m.late)
            out.insert(rng.randrange(len(out) + 1), copy)
    return out


def invalid(items: Iterable[tracegen.Invalid]) -> list[Msg]:
    """tracegen's invalid messages as Msgs (no event: each must be dead-lettered)."""
    return [Msg(inv.topic, inv.value, None, key=inv.key) for inv in items]


def interleave(base: Sequence[Msg], extra: Sequence[Msg], *, seed: int) -> list[Msg]:
    """`base` with `extra` inserted at random places."""
    rng = random.Random(seed)
    out = list(base)
    for m in extra:
        out.insert(rng.randrange(len(out) + 1), m)
    return out


# --- the ledger ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a produced message landed and the Redis key that exists once the worker applied it."""

    topic: str
    partition: int
    offset: int
    mark: tuple[str, bytes | None]  # (key, hash field): the dedupe shard and digest, or a plain key


@dataclass
class Ledger:
    """Everything a test produced, for the expectations: unique valid events, late ones, invalid, positions."""

    prefix: str
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)
    late: dict[str, dict[str, Any]] = field(default_factory=dict)
    invalid_at: set[tuple[str, int, int]] = field(default_factory=set)
    copies: int = 0
    positions: list[Position] = field(default_factory=list)
    # the same positions per (topic, partition), in offset order, for the offset checks' range look-ups
    by_partition: dict[tuple[str, int], list[Position]] = field(default_factory=dict, repr=False)

    @property
    def ns(self) -> str:
        return namespace(self.prefix)

    def record(self, msg: Msg, partition: int, offset: int) -> None:
        """Note one acknowledged message."""
        if msg.event is None:
            self.invalid_at.add((msg.topic, partition, offset))
            mark: tuple[str, bytes | None] = (keys.offset_mark_key(self.ns, msg.topic, partition, offset), None)
        else:
            eid = msg.event["event_id"]
            book = self.late if msg.late else self.valid
            if eid in self.valid or eid in self.late:
                self.copies += 1
            book[eid] = msg.event
            mark = event_mark(self.ns, msg.event)
        pos = Position(msg.topic, partition, offset, mark)
        self.positions.append(pos)
        bisect.insort(self.by_partition.setdefault((msg.topic, partition), []), pos, key=_offset_of)

    def between(self, tp: tuple[str, int], lo: int, hi: int) -> list[Position]:
        """The positions on partition `tp` with lo <= offset < hi."""
        on = self.by_partition.get(tp, [])
        return on[bisect.bisect_left(on, lo, key=_offset_of) : bisect.bisect_left(on, hi, key=_offset_of)]

    def ends(self) -> dict[tuple[str, int], int]:
        """Per partition, one past the highest offset produced (what a fully caught-up group has committed)."""
        return {tp: on[-1].offset + 1 for tp, on in self.by_partition.items()}

    @property
    def events(self) -> list[dict[str, Any]]:
        """Unique valid, in-window events: what the KPIs are made of."""
        return list(self.valid.values())

    def counts_done(self, counts: dict[str, int]) -> bool:
        """Whether the counters have reached everything produced (ok, late, invalid, and a duplicate per copy)."""
        return (
            counts["ok"] >= len(self.valid)
            and counts["late"] >= len(self.late)
            and counts["invalid"] >= len(self.invalid_at)
            and counts["duplicate"] >= self.copies
        )

    def counts_problems(self, counts: dict[str, int], *, duplicates: int | None = None) -> list[str]:
        """Differences between the counters and the ledger; duplicates at least the copies (or exactly `duplicates`)."""
        problems = []
        for name, want in (("ok", len(self.valid)), ("late", len(self.late)), ("invalid", len(self.invalid_at))):
            if counts[name] != want:
                problems.append(f"{name} is {counts[name]}, want {want}")
        if duplicates is not None and counts["duplicate"] != duplicates:
            problems.append(f"duplicate is {counts['duplicate']}, want exactly {duplicates}")
        elif counts["duplicate"] < self.copies:
            problems.append(f"duplicate is {counts['duplicate']}, want at least the {self.copies} copies sent")
        return problems


class Producer:
    """One aiokafka producer for a test: each message to its given partition or a seeded random one."""

    def __init__(self, settings: Settings, ledger: Ledger, *, seed: int = 1) -> None:
        self.settings = settings
        self.ledger = ledger
        self.rng = random.Random(seed)
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Producer:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka.split(","), acks=1, linger_ms=5, max_request_size=2 * 1024 * 1024
        )
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._producer is not None
        await self._producer.stop()

    async def send(self, msgs: Sequence[Msg], *, record: bool = True) -> list[Position]:
        """Send and wait for every ack; the ledger notes each message (unless `record` is False)."""
        assert self._producer is not None
        futures = []
        for m in msgs:
            partition = m.partition if m.partition is not None else self.rng.randrange(PARTITIONS)
            futures.append(
                await self._producer.send(self.settings.topic(m.topic), m.value, key=m.key, partition=partition)
            )
        metas = await asyncio.gather(*futures)
        if record:
            for m, meta in zip(msgs, metas, strict=True):
                self.ledger.record(m, meta.partition, meta.offset)
        return self.ledger.positions[-len(msgs) :] if record and msgs else []

    async def trickle(self, msgs: Sequence[Msg], *, per_s: float, until: Callable[[], bool] | None = None) -> None:
        """Send in small slices at about `per_s` messages a second; once `until()` is true, send the rest at once."""
        slice_n = max(1, round(per_s / 10))
        i = 0
        while i < len(msgs):
            if until is not None and until():
                await self.send(msgs[i:])
                return
            await self.send(msgs[i : i + slice_n])
            i += slice_n
            await asyncio.sleep(0.1)


def _offset_of(pos: Position) -> int:
    return pos.offset


# --- what the system says -----------------------------------------------------------------------------------------


async def initialised(settings: Settings) -> bool:
    """Whether Redis holds the epoch mark (False before the first rebuild completes, or after Redis lost its data)."""
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        return await WindowStore(client, namespace(settings.topic_prefix)).initialised()
    finally:
        await client.aclose()


async def wait_counts(
    settings: Settings, done: Callable[[dict[str, int]], bool], *, timeout_s: float, interval_s: float = 0.1
) -> dict[str, int]:
    """Poll the Redis counters until `done(counts)`; return them. AssertionError with the last counts on timeout."""
    last: dict[str, int] = {}
    client = redis_client(settings)  # one connection for every poll (it reconnects by itself after an outage)

    async def check() -> bool:
        try:
            last.update(await result_counts(settings, client))
        except (OSError, aioredis.RedisError):
            return False
        return done(last)

    try:
        await async_wait_for(check, timeout_s=timeout_s, interval_s=interval_s, message="event counters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counters were {last}") from None
    finally:
        await client.aclose()
    return dict(last)


async def wait_settled(settings: Settings, ledger: Ledger, *, timeout_s: float = 60) -> dict[str, int]:
    """Wait until every produced message is counted (ok, late and invalid reach the ledger's)."""
    return await wait_counts(settings, ledger.counts_done, timeout_s=timeout_s)


def http_get(url: str, *, token: str | None = None, timeout_s: float = 5) -> tuple[int, bytes]:
    """GET a URL; returns (status, body) for any HTTP status."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def snapshot(settings: Settings, window: str) -> dict[str, Any]:
    """The monitor's /api/snapshot for a window."""
    url = f"http://{settings.http_host}:{settings.http_port}/api/snapshot?window={window}"
    status, body = await asyncio.to_thread(http_get, url, token=settings.token)
    assert status == 200, f"/api/snapshot?window={window} answered {status}: {body[:300]!r}"
    return orjson.loads(body)


async def snapshot_problems(settings: Settings, events: list[dict[str, Any]]) -> list[str]:
    """Differences between every window's snapshot and the recomputation at the snapshot's own as_of."""
    problems: list[str] = []
    for window in WINDOWS:
        snap = await snapshot(settings, window)
        now = datetime.fromisoformat(snap["as_of"]).timestamp()
        want = expected(
            events,
            now=now,
            window_s=settings.window_s(window),
            longest_s=settings.longest_window_s,
            repeat_s=settings.repeat_window_s,
        )
        problems += [f"{window}: {p}" for p in diff_snapshot(snap, want)]
        if snap["floor"]["kpis"]["calls_handled"] == 0:
            problems.append(f"{window}: the floor handled no calls, the comparison means nothing")
    return problems


def event_mark(ns: str, event: Mapping[str, Any]) -> tuple[str, bytes | None]:
    """Where the worker marks an event applied: its dedupe shard and digest field."""
    key, field = keys.dedupe_mark(ns, event["event_id"], parse_ts_ms(event["ts"]))
    return key, keys.dedupe_field_bytes(field)


async def marks_present(client: aioredis.Redis, marks: Sequence[tuple[str, bytes | None]]) -> list[bool]:
    """Whether each mark ((hash key, field), or (key, None) for a plain key) is in Redis, in the order given.

    One HMGET per dedupe shard rather than one HEXISTS per event: a 100k-event ledger is checked in a few hundred
    commands instead of 100k, which leaves the CPU to the worker under test.
    """
    fields: dict[str, list[int]] = defaultdict(list)
    plain: list[int] = []
    for i, (key, field_) in enumerate(marks):
        (plain if field_ is None else fields[key]).append(i)
    found = [False] * len(marks)
    async with client.pipeline(transaction=False) as pipe:
        for key, at in fields.items():
            pipe.hmget(key, [marks[i][1] for i in at])
        for i in plain:
            pipe.exists(marks[i][0])
        replies = await pipe.execute()
    for at, values in zip(fields.values(), replies[: len(fields)], strict=True):
        for i, value in zip(at, values, strict=True):
            found[i] = value is not None
    for i, n in zip(plain, replies[len(fields) :], strict=True):
        found[i] = bool(n)
    return found


async def missing_events(settings: Settings, ledger: Ledger) -> dict[str, list[int]]:
    """Agent -> seq numbers of valid events with no dedupe mark in Redis: events the system lost."""
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        events = ledger.events
        found = await marks_present(client, [event_mark(ledger.ns, e) for e in events])
    finally:
        await client.aclose()
    missing: dict[str, list[int]] = defaultdict(list)
    for e, present in zip(events, found, strict=True):
        if not present:
            missing[str(e.get("agent_id") or "-")].append(e["seq"])
    return {a: sorted(s) for a, s in missing.items()}


async def existing(settings: Settings, marks: Sequence[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
    """The dedupe marks among `marks` ((key, hash field), or (key, None) for a plain key) that exist in Redis."""
    if not marks:
        return []
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        found = await marks_present(client, marks)
    finally:
        await client.aclose()
    return [m for m, present in zip(marks, found, strict=True) if present]


async def assert_exact(settings: Settings, ledger: Ledger, *, duplicates: int | None = None) -> dict[str, int]:
    """Counters equal the ledger, no event lost, and the 15m/1h/8h snapshots equal the recomputation."""
    counts = await result_counts(settings)
    problems = ledger.counts_problems(counts, duplicates=duplicates)
    lost = await missing_events(settings, ledger)
    if lost:
        problems.append(f"events lost (agent: seq): {dict(list(lost.items())[:5])}")
    # a snapshot read right at a 10 s bucket edge can disagree by one bucket: retry once before failing
    for attempt in range(2):
        snap_problems = await snapshot_problems(settings, ledger.events)
        if not snap_problems:
            break
        if attempt == 0:
            await asyncio.sleep(0.5)
    problems += snap_problems
    assert not problems, f"{len(problems)} problems, first:\n" + "\n".join(problems[:15])
    return counts


# --- the consumer group -------------------------------------------------------------------------------------------


def group_id(settings: Settings) -> str:
    """The Faust app id, which is the consumer group."""
    return f"{settings.topic_prefix}{settings.consumer_group}"


async def committed_offsets(reader: AIOKafkaConsumer, settings: Settings) -> dict[tuple[str, int], int]:
    """(base topic, partition) -> committed offset of the worker's group (absent: nothing committed).

    `reader` is a consumer created with the worker's group id that never subscribes, so it never joins the group:
    it only sends OffsetFetch. (AIOKafkaAdminClient.list_consumer_group_offsets fails to decode Tansu's answer.)
    """
    out: dict[tuple[str, int], int] = {}
    for base in BASES:
        for p in range(PARTITIONS):
            offset = await reader.committed(TopicPartition(settings.topic(base), p))
            if offset is not None and offset >= 0:
                out[(base, p)] = offset
    return out


def offset_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer that reads the worker group's committed offsets without joining the group (start() it)."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka, group_id=group_id(settings), enable_auto_commit=False, request_timeout_ms=5000
    )


class OffsetWatch:
    """Polls the group's committed offsets in the background; records regressions and commits past unapplied ones.

    A commit is checked against the ledger: every message produced below it on its partition must have its mark in
    Redis (the worker acks only after Redis applied). Marks never disappear within a test, so each offset range is
    checked once.
    """

    def __init__(self, settings: Settings, ledger: Ledger, *, interval_s: float = 0.2) -> None:
        self.settings = settings
        self.ledger = ledger
        self.interval_s = interval_s
        self.current: dict[tuple[str, int], int] = {}
        self.regressions: list[str] = []
        self.unapplied: list[str] = []
        self.polls = 0
        self.errors = 0
        self.check_marks = True
        self._checked: dict[tuple[str, int], int] = {}
        self._reader: AIOKafkaConsumer | None = None
        self._redis: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OffsetWatch:
        self._reader = offset_reader(self.settings)
        await self._reader.start()
        self._redis = aioredis.Redis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._reader is not None and self._redis is not None
        await stop_task(self._task, "the committed-offset watch")
        await self._reader.stop()
        await self._redis.aclose()

    async def poll(self) -> dict[tuple[str, int], int]:
        """Read the committed offsets now and check them; returns them."""
        assert self._reader is not None
        offsets = await committed_offsets(self._reader, self.settings)
        self.polls += 1
        for tp, off in offsets.items():
            before = self.current.get(tp)
            if before is not None and off < before:
                self.regressions.append(f"{tp[0]}[{tp[1]}] committed offset went back from {before} to {off}")
        for tp, off in offsets.items():
            self.current[tp] = max(off, self.current.get(tp, off))
        if self.check_marks:
            await self._check_marks(offsets)
        return offsets

    async def _check_marks(self, offsets: dict[tuple[str, int], int]) -> None:
        assert self._redis is not None
        todo = [pos for tp, off in offsets.items() for pos in self.ledger.between(tp, self._checked.get(tp, 0), off)]
        if not todo:
            return
        try:
            found = await marks_present(self._redis, [pos.mark for pos in todo])
        except (OSError, aioredis.RedisError):
            return  # Redis away (paused or killed): the offsets alone are checked this round
        for pos, present in zip(todo, found, strict=True):
            if not present:
                where = f"{pos.topic}[{pos.partition}]@{pos.offset}"
                self.unapplied.append(f"{where} committed but {pos.mark} is not in Redis")
        for tp, off in offsets.items():
            self._checked[tp] = max(self._checked.get(tp, 0), off)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # the broker may be restarting; polling carries on
                self.errors += 1
            reraise_if_cancelling()  # a cancel a library turned into its error, or swallowed, ends the loop too
            await asyncio.sleep(self.interval_s)

    def ends(self) -> dict[tuple[str, int], int]:
        """Per partition, one past the highest offset produced (what a fully caught-up group has committed)."""
        return self.ledger.ends()


# --- processes ----------------------------------------------------------------------------------------------------


async def worker_health(proc: Any) -> tuple[int, dict[str, Any]]:
    """The worker's /healthz: (status, body); (0, {}) when it doesn't answer."""
    try:
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{proc.web_port}/healthz", timeout_s=3)
    except OSError:
        return 0, {}
    return status, orjson.loads(body)


async def worker_samples(proc: Any, name: str) -> list[Any] | None:
    """The samples of one metric on the worker's own /metrics; None when it doesn't answer."""
    try:
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{proc.web_port}/metrics", timeout_s=3)
    except OSError:
        return None
    if status != 200:
        return None
    return [s for f in text_string_to_metric_families(body.decode()) for s in f.samples if s.name == name]


async def worker_metric(proc: Any, name: str) -> float | None:
    """Sum of one metric's samples on the worker's own /metrics; None when it doesn't answer or lacks it."""
    samples = await worker_samples(proc, name)
    return sum(s.value for s in samples) if samples else None


async def assigned_partitions(proc: Any) -> set[tuple[str, str]] | None:
    """The (topic, partition) pairs the worker has assigned (its consumer-lag series); None when it doesn't answer."""
    samples = await worker_samples(proc, "callpulse_consumer_lag")
    return None if samples is None else {(s.labels["topic"], s.labels["partition"]) for s in samples}


async def monitor_health(settings: Settings) -> int:
    """The monitor's /healthz status (0 when it doesn't answer)."""
    url = f"http://{settings.http_host}:{settings.http_port}/healthz"
    try:
        status, _ = await asyncio.to_thread(http_get, url, timeout_s=8)
    except OSError:
        return 0
    return status


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    return psutil.Process(pid).memory_info().rss


class RssSampler:
    """Samples a process's RSS in the background; `peak` is the highest seen."""

    def __init__(self, pid: int, *, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.start = rss_bytes(pid)
        self.peak = self.start
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await stop_task(self._task, "the RSS sampler")
        self.peak = max(self.peak, rss_bytes(self.pid))

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(self.interval_s)


class Stopwatch:
    """Seconds since creation, for the matrix's figures."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.t0, 1)


def mib(n_bytes: float) -> float:
    """Bytes to MiB, rounded for a table."""
    return round(n_bytes / (1024 * 1024), 1)


async def read_topic(settings: Settings, base: str, *, at_least: int, timeout_s: float = 30) -> list[Any]:
    """Records of `<prefix><base>` from the earliest offset, until at least `at_least` arrived and the topic is idle.

    Reads by count, not to the end offsets: the embedded Tansu answers ListOffsets(latest) with the last batch's
    base offset + 1, short of the real end whenever a batch holds several records.
    """
    topic = settings.topic(base)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or range(4))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(tp_records)
            if not batch and len(records) >= at_least:
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(records)} of at least {at_least} records of {topic} in {timeout_s} s")
    finally:
        await consumer.stop()
