"""Property tests of the whole core against a real Redis: any trace, any order, any batching, any duplicates,
gives exactly the KPIs the contract's brute-force reference computes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from callpulse.embedded import EmbeddedRedis
from callpulse.settings import Settings, load_thresholds
from monitor import snapshot
from monitor.floorcache import FloorCache
from streams.processor import Outcome, Processor, Record
from streams.store import AgentWindows, TeamWindows, WindowStore, namespace
from streams.windows import TODAY
from tests import reference

pytestmark = pytest.mark.integration

NOW_MS = 1_700_000_003_500  # not on a bucket boundary
NOW = NOW_MS / 1000
REPEAT_S = 3600
SETTINGS = Settings(repeat_window_s=REPEAT_S, topic_prefix="prop-")
TOPIC = {
    "call.ended": "calls",
    "agent.state": "calls",
    "call.queued": "calls",
    "call.answered": "calls",
    "call.abandoned": "calls",
    "ticket.created": "tickets",
    "ticket.replied": "tickets",
    "ticket.resolved": "tickets",
    "ticket.escalated": "tickets",
    "ticket.reopened": "tickets",
    "survey.csat": "tickets",
    "survey.nps": "tickets",
    "qa.scored": "tickets",
    "complaint.logged": "tickets",
}
OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
# Offsets (ms before now) on and around the window edges, so bucket rounding is exercised.
EDGES_MS = [
    w * 1000 + d for w in (900, 3600, 10_800) for d in (-10_001, -10_000, -3_500, -1, 0, 1, 6_500, 9_999, 10_000)
] + [0, 1, 3_500, -1, -6_500, -6_501, -300_000, 28_800_000 - 1, 28_800_000 - 3_500, 28_800_000 - 3_501]
# Offsets of late events: at or beyond the longest window (25 h with `today` on), so ignored and counted as late.
LATE_MS = [90_000_000, 90_000_001, 95_000_000, 100_000_000]
# `today` across midnight and clock changes, in a zone with DST: (now, what it exercises).
LONDON = ZoneInfo("Europe/London")
DST_NOWS_MS = [
    round(datetime(2024, 10, 27, 23, 59, 55, tzinfo=LONDON).timestamp() * 1000),  # end of a 25 h day
    round(datetime(2024, 10, 28, 0, 0, 0, tzinfo=LONDON).timestamp() * 1000),  # the midnight after it
    round(datetime(2024, 3, 31, 0, 0, 7, 500_000, tzinfo=LONDON).timestamp() * 1000),  # start of a 23 h day
    round(datetime(2024, 3, 31, 23, 59, 59, 999_000, tzinfo=LONDON).timestamp() * 1000),  # end of it
    round(datetime(2024, 3, 31, 1, 0, 3, tzinfo=LONDON).timestamp() * 1000),  # just after the clocks go forward
]
# A scorecard over every kind of target, scored over `today` (written for the oracle as plain tables).
CARD: dict[str, dict[str, Any]] = {
    "revenue": {"weight": 30, "target": 500},
    "conversion_rate": {"weight": 10, "target": 0.3},
    "escalation_rate": {"weight": 10, "target": 0.25, "better": "lower"},
    "aht_seconds": {"weight": 20, "target_range": [120, 400]},
    "nps": {"weight": 10, "target": 50},
    "qa_score": {"weight": 10, "target": 0.8},
    "complaint_rate": {"weight": 10, "target": 0.1, "better": "lower"},
}
CARD_TOML = '[scorecard]\nwindow = "today"\n' + "".join(
    f"[scorecard.kpi.{key}]\n" + "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in spec.items())
    for key, spec in CARD.items()
)
SCORECARD = load_thresholds(CARD_TOML)["scorecard"]
DST_SETTINGS = Settings(repeat_window_s=REPEAT_S, topic_prefix="prop-", timezone="Europe/London", scorecard=SCORECARD)
# Invalid records: (topic, value) each dead-lettered.
JUNK: list[tuple[str, bytes | None]] = [
    ("calls", b'{"event_id": "j1", "type": '),
    ("calls", None),
    ("tickets", b"[1, 2]"),
    ("calls", orjson.dumps({"event_id": "j2", "type": "ticket.created", "ts": NOW_MS / 1000, "ticket_id": "k1"})),
    (
        "tickets",
        orjson.dumps(
            {"event_id": "j3", "type": "survey.csat", "ts": NOW_MS / 1000, "agent_id": "a1", "score": 6, "call_id": "x"}
        ),
    ),
]

HYPOTHESIS = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    deadline=None,
    max_examples=60,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # explain traces for minutes
)

agents = st.sampled_from(["a1", "a2", "a3", "a4"])
teams = st.one_of(st.none(), st.sampled_from(["red", "blue", "green"]))
# An integer id is the same customer/ticket as its string form ("7" and 7).
customers = st.sampled_from(["c1", "c2", "7", 7])
tickets = st.sampled_from(["k1", "k2", "9", 9])
# Amounts to the cent, a few of them 0.
amounts = st.one_of(st.just(0), st.integers(1, 500_000).map(lambda c: c / 100))
seconds = st.one_of(st.integers(0, 900), st.integers(0, 9000).map(lambda x: x / 10))
# Spread over the last 3 h (so repeats fall both within and beyond the 1 h repeat window), built from
# hour, minute and ms parts because a single wide integer range clusters at its ends; some on the edges.
spread_ms = st.builds(
    lambda h, m, ms: h * 3_600_000 + m * 60_000 + ms,
    st.sampled_from([0, 1, 2]),
    st.integers(0, 59),
    st.integers(0, 59_999),
)
ago_ms = st.one_of(spread_ms, spread_ms, spread_ms, st.sampled_from(EDGES_MS), st.integers(-300_000, 0))


def midnight_edges_ms(now_ms: int) -> list[int]:
    """Offsets before now_ms on and around the last two local midnights in London, and the clock change."""
    day = datetime.fromtimestamp(now_ms / 1000, LONDON).date()
    out = []
    for back in (0, 1):
        midnight = datetime.combine(day - timedelta(days=back), time(0), tzinfo=LONDON).timestamp() * 1000
        for d in (-10_001, -10_000, -1, 0, 1, 9_999, 10_000):
            out.append(now_ms - round(midnight) - d)
    for change in ("2024-03-31T01:00:00+00:00", "2024-10-27T01:00:00+00:00"):
        at = round(datetime.fromisoformat(change).timestamp() * 1000)
        out += [now_ms - at - d for d in (-1, 0, 1)]
    return [o for o in out if o >= -300_000]


def day_spread_ms(now_ms: int) -> st.SearchStrategy[int]:
    """Offsets before now over the last 26 h, and on the midnight and clock-change edges."""
    hours = st.builds(lambda h, ms: h * 3_600_000 + ms, st.integers(0, 25), st.integers(0, 3_599_999))
    return st.one_of(hours, hours, st.sampled_from(midnight_edges_ms(now_ms)), st.integers(-300_000, 0))


@st.composite
def timestamps(draw: st.DrawFn, now_ms: int = NOW_MS, ago: st.SearchStrategy[int] = ago_ms) -> float | str:
    """A contract ts: epoch seconds (whole ms) or RFC 3339 with an offset."""
    ms = now_ms - draw(ago)
    if draw(st.booleans()):
        return ms / 1000
    return datetime.fromtimestamp(ms / 1000, tz=draw(st.sampled_from(OFFSETS))).isoformat(timespec="milliseconds")


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """The type-specific fields of one event."""
    kind = draw(
        st.sampled_from(
            ["call.ended"] * 5
            + ["ticket.created"] * 2
            + ["ticket.replied"] * 3
            + ["ticket.resolved", "ticket.escalated", "ticket.reopened", "survey.csat", "agent.state"]
            + ["survey.nps", "qa.scored", "complaint.logged"]
        )
    )
    body: dict[str, Any] = {"type": kind}
    if kind == "call.ended":
        connected = draw(st.booleans()) or draw(st.booleans())
        body |= {
            "call_id": f"call{draw(st.integers(0, 10**6))}",
            "agent_id": draw(agents),
            "direction": draw(st.sampled_from(["inbound", "outbound"])),
            "connected": connected,
            "talk_seconds": draw(seconds) if connected else 0,
        }
        for name in ("hold_seconds", "wrap_seconds", "wait_seconds"):
            if draw(st.booleans()):
                body[name] = draw(seconds)
        if draw(st.booleans()):
            body["resolved"] = draw(st.booleans())
        if draw(st.integers(0, 3)):
            body["customer_id"] = draw(customers)
        outcome = draw(st.sampled_from([None, "sale", "sale", "appointment", "no_sale"]))
        if outcome is not None:
            body["outcome"] = outcome
        if draw(st.booleans()):
            body["amount"] = draw(amounts)
    elif kind == "agent.state":
        body |= {
            "agent_id": draw(agents),
            "state": draw(st.sampled_from(["available", "on_call", "wrap", "break", "offline"])),
        }
    elif kind in ("survey.csat", "survey.nps", "qa.scored", "complaint.logged"):
        body["agent_id"] = draw(agents)
        if kind == "survey.csat":
            body["score"] = draw(st.integers(1, 5))
        elif kind == "survey.nps":
            body["score"] = draw(st.integers(0, 10))
        elif kind == "qa.scored":
            top = draw(st.sampled_from([5, 10, 100, 37.5]))
            body |= {"max_score": top, "score": draw(st.integers(0, 100)) * top / 100}
            if draw(st.booleans()):
                body["compliant"] = draw(st.booleans())
        body[draw(st.sampled_from(["ticket_id", "call_id"]))] = draw(tickets)
    else:
        body["ticket_id"] = draw(tickets)
        if kind == "ticket.created":
            if draw(st.booleans()):
                body["customer_id"] = draw(customers)
        elif kind != "ticket.reopened" or draw(st.booleans()):
            body["agent_id"] = draw(agents)
    if "agent_id" in body:
        team = draw(teams)
        if team is not None:
            body["team"] = team
    return body


@st.composite
def late_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A few events older than the longest window; no team, customer or ticket, so the reference may see them."""
    out = []
    for i in range(draw(st.integers(0, 3))):
        ms = NOW_MS - draw(st.sampled_from(LATE_MS))
        agent = draw(agents)
        if draw(st.booleans()):
            body = {"type": "agent.state", "agent_id": agent, "state": "available"}
        else:
            body = {"type": "call.ended", "call_id": f"late{i}", "agent_id": agent, "direction": "outbound",
                    "connected": True, "talk_seconds": 60}  # fmt: skip
        out.append({"event_id": f"late{i}", "ts": ms / 1000, **body})
    return out


@st.composite
def traces(draw: st.DrawFn, now_ms: int = NOW_MS, ago: st.SearchStrategy[int] = ago_ms) -> list[dict[str, Any]]:
    """Unique events, each with a fresh event_id."""
    events = []
    for i, body in enumerate(draw(st.lists(bodies(), min_size=8, max_size=50))):
        events.append({"event_id": f"ev{i}", "ts": draw(timestamps(now_ms, ago)), **body})
    return events


Item = dict[str, Any] | tuple[str, bytes | None]  # an event, or (topic, value) of an invalid record


@st.composite
def deliveries(draw: st.DrawFn, events: Sequence[Item]) -> list[list[Item]]:
    """The items with random duplicates, shuffled and cut into random batches."""
    copies = list(events) + draw(st.lists(st.sampled_from(events), max_size=len(events)))
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=6)))
    bounds = [0, *[c for c in cuts if c < len(order)], len(order)]
    return [order[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def label(events: Sequence[dict[str, Any]]) -> None:
    """Tell hypothesis' statistics which interesting cases a trace holds (FCR repeats, early replies)."""
    calls: dict[str, list[float]] = {}
    for e in events:
        if e["type"] == "call.ended" and e["connected"] and "customer_id" in e:
            calls.setdefault(str(e["customer_id"]), []).append(reference.ts_of(e))
    gaps = [b - a for ts in calls.values() for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False)]
    event(f"repeat within the repeat window: {any(g < REPEAT_S for g in gaps)}")
    event(f"repeat beyond the repeat window: {any(g >= REPEAT_S for g in gaps)}")
    created = {str(e["ticket_id"]): reference.ts_of(e) for e in events if e["type"] == "ticket.created"}
    answered = [e for e in events if e["type"] == "ticket.replied" and str(e["ticket_id"]) in created]
    early = any(reference.ts_of(e) < created[str(e["ticket_id"])] for e in answered)
    event(f"replied tickets: {min(len(answered), 3)}")
    event(f"reply timestamped before created: {early}")


def records(batch: Sequence[Item], first_offset: int) -> list[Record]:
    out = []
    for i, item in enumerate(batch):
        if isinstance(item, tuple):
            out.append(Record(item[0], 0, first_offset + i, None, item[1]))
        else:
            out.append(Record(TOPIC[item["type"]], 0, first_offset + i, None, orjson.dumps(item)))
    return out


class Dead:
    """A deadletter sink that records what it was given."""

    def __init__(self) -> None:
        self.letters: list[tuple[Record, str]] = []

    async def __call__(self, dead: Sequence[tuple[Record, str]]) -> None:
        self.letters.extend(dead)


async def feed(
    client: aioredis.Redis,
    batches: Sequence[Sequence[Item]],
    dead: Dead,
    workers: Sequence[int] = (),
    *,
    settings: Settings = SETTINGS,
    now: float = NOW,
) -> list[Outcome]:
    """Process batches through fresh Processors at the fixed `now`; batch i goes to worker workers[i] (default 0).

    Two workers share customer and ticket states in Redis while each caches its own: stale caches must be
    caught by the store's version check and retried, never double counted.
    """
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    processors = [Processor(settings, store, dead, clock=lambda: now) for _ in range(2)]
    outcomes = []
    offset = 0
    for i, batch in enumerate(batches):
        worker = workers[i] if i < len(workers) else 0
        outcomes.append(await processors[worker].process(records(batch, offset)))
        offset += len(batch)
    return outcomes


async def read(client: aioredis.Redis, settings: Settings = SETTINGS, now_ms: int = NOW_MS) -> list[AgentWindows]:
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    return await store.read_windows(now_ms, settings.windows_s)


async def read_totals(
    client: aioredis.Redis, settings: Settings = SETTINGS, now_ms: int = NOW_MS
) -> tuple[list[TeamWindows], tuple[int, dict[int, Any]]]:
    """Team and floor totals for every window as the monitor's floor cache keeps them (one agent at a time)."""
    store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
    cache = FloorCache(store, settings.windows_s, settings.longest_window_s, clock=lambda: now_ms / 1000)
    await cache.refresh()
    windows_s = list(settings.windows_s)
    return cache.teams_at(now_ms, windows_s), cache.floor_at(now_ms, windows_s)


def roster_since(settings: Settings, now: float) -> float:
    """The oracle's roster: agents with an event after the earliest reach of any window."""
    return min(reference.reaches_back_to(now, ws, settings.tz) for ws in settings.windows_s)


@given(data=st.data())
@HYPOTHESIS
def test_any_trace_in_any_order_and_batching_gives_the_reference_kpis(
    redis_server: EmbeddedRedis, data: st.DataObject
) -> None:
    events = data.draw(traces(), label="events")
    late = data.draw(late_events(), label="late")
    junk = data.draw(st.lists(st.sampled_from(JUNK), max_size=3), label="junk")
    batches = data.draw(deliveries([*events, *late, *junk]), label="batches")
    workers = data.draw(st.lists(st.integers(0, 1), min_size=len(batches), max_size=len(batches)), label="workers")
    label(events)
    delivered = [e for b in batches for e in b if isinstance(e, dict)]
    invalid = [e for b in batches for e in b if isinstance(e, tuple)]

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            dead = Dead()
            outcomes = await feed(client, batches, dead, workers)
            event(f"state conflicts retried: {any(o.conflicts for o in outcomes)}")
            assert sorted((r.topic, r.value or b"") for r, _ in dead.letters) == sorted(
                (t, v or b"") for t, v in invalid
            )
            assert sum(o.applied for o in outcomes) == len(events)
            assert sum(o.late for o in outcomes) == sum(e["event_id"].startswith("late") for e in delivered)
            assert sum(o.duplicates for o in outcomes) == len(delivered) - len(events) - len(late)
            rows = await read(client)
            teams, floor = await read_totals(client)
        finally:
            await client.aclose()
        since = roster_since(SETTINGS, NOW)
        for window_s in SETTINGS.windows_s:
            snap = snapshot.build(rows, window_s=window_s, settings=SETTINGS, now_ms=NOW_MS)
            want = reference.expected(delivered, NOW, window_s, repeat_s=REPEAT_S, since=since,
                                      late_before=NOW - SETTINGS.longest_window_s)  # fmt: skip
            assert reference.diff_snapshot(snap, want) == [], f"window {window_s}"
            # The floor cache's incrementally kept team and floor totals give the same teams and floor.
            kept = snapshot.build(rows, window_s=window_s, settings=SETTINGS, now_ms=NOW_MS, teams=teams, floor=floor)
            assert (kept["teams"], kept["floor"]) == (snap["teams"], snap["floor"]), f"window {window_s}"

    asyncio.run(run())


@given(data=st.data())
@HYPOTHESIS
def test_today_is_exact_across_midnight_and_clock_changes(redis_server: EmbeddedRedis, data: st.DataObject) -> None:
    now_ms = data.draw(st.sampled_from(DST_NOWS_MS), label="now")
    now = now_ms / 1000
    events = data.draw(traces(now_ms, day_spread_ms(now_ms)), label="events")
    batches = data.draw(deliveries(events), label="batches")
    delivered = [e for b in batches for e in b if isinstance(e, dict)]
    local = {datetime.fromtimestamp(reference.ts_of(e), LONDON).date() for e in events}
    event(f"local dates in the trace: {len(local)}")

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            outcomes = await feed(client, batches, Dead(), settings=DST_SETTINGS, now=now)
            rows = await read(client, DST_SETTINGS, now_ms)
        finally:
            await client.aclose()
        ok = [e for e in delivered if reference.ts_of(e) > now - DST_SETTINGS.longest_window_s]
        assert sum(o.applied for o in outcomes) == len(reference.unique(ok))
        since = roster_since(DST_SETTINGS, now)
        for window_s in DST_SETTINGS.windows_s:
            snap = snapshot.build(rows, window_s=window_s, settings=DST_SETTINGS, now_ms=now_ms)
            want = reference.expected(ok, now, window_s, repeat_s=REPEAT_S, tz=LONDON, since=since)
            assert reference.diff_snapshot(snap, want) == [], f"window {window_s} at {now_ms}"
        want_scores = reference.scores(ok, now, TODAY, CARD, repeat_s=REPEAT_S, tz=LONDON, since=since)
        assert reference.diff_scores(snap, want_scores) == []

    asyncio.run(run())


@given(data=st.data())
@HYPOTHESIS
def test_two_shuffles_and_batchings_of_a_trace_give_identical_sums(
    redis_server: EmbeddedRedis, data: st.DataObject
) -> None:
    events = data.draw(traces(), label="events")
    first = data.draw(deliveries(events), label="first")
    second = data.draw(deliveries(events), label="second")

    async def run() -> tuple[list[AgentWindows], list[AgentWindows]]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            await feed(client, first, Dead())
            one = await read(client)
            await client.flushall()
            await feed(client, second, Dead(), [i % 2 for i in range(len(second))])  # and two workers
            two = await read(client)
        finally:
            await client.aclose()
        return one, two

    one, two = asyncio.run(run())
    assert one == two


async def test_invalid_records_are_dead_lettered_with_reasons_while_valid_ones_count(
    redis_server: EmbeddedRedis,
) -> None:
    def call(eid: str, **changes: Any) -> bytes:
        raw = {
            "event_id": eid,
            "type": "call.ended",
            "ts": NOW - 60,
            "call_id": f"call-{eid}",
            "agent_id": "a1",
            "team": "red",
            "direction": "outbound",
            "connected": True,
            "talk_seconds": 100,
            "hold_seconds": 20,
        }
        return orjson.dumps(raw | changes)

    survey = {"event_id": "s1", "type": "survey.csat", "ts": NOW - 30, "agent_id": "a1", "score": 5, "call_id": "x"}
    batch = [
        Record("calls", 0, 10, None, call("e1")),
        Record("calls", 0, 11, None, b"{not json"),
        Record("calls", 0, 12, None, call("e2", talk_seconds=-4)),
        Record("tickets", 1, 13, None, orjson.dumps(survey)),
        Record("tickets", 1, 14, None, call("e3")),
        Record("calls", 0, 15, None, call("e4", connected=False, talk_seconds=0)),
        Record("calls", 0, 16, None, None),
    ]
    dead = Dead()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        store = WindowStore(client, namespace(SETTINGS.topic_prefix))
        processor = Processor(SETTINGS, store, dead, clock=lambda: NOW)
        outcome = await processor.process(batch)
        rows = await store.read_windows(NOW_MS, SETTINGS.windows_s)
        stats = await store.read_stats()
    finally:
        await client.aclose()
    reasons = [(r.offset, reason) for r, reason in dead.letters]
    assert [offset for offset, _ in reasons] == [11, 12, 14, 16]
    assert reasons[0][1].startswith("invalid event: value is not valid JSON (")
    assert reasons[1][1] == "invalid event 'call.ended' (event_id=e2): talk_seconds is -4, must be >= 0"
    assert reasons[2][1] == (
        "invalid event 'call.ended' (event_id=e3): type 'call.ended' does not belong on topic 'tickets', only "
        "complaint.logged, qa.scored, survey.csat, survey.nps, ticket.created, ticket.escalated, ticket.reopened, "
        "ticket.replied, ticket.resolved"
    )
    assert reasons[3][1] == "invalid event: value is null, must be a JSON object"
    assert (outcome.ok, outcome.invalid, outcome.applied, outcome.duplicates) == (3, 4, 3, 0)
    assert [(r.agent_id, r.team) for r in rows] == [("a1", "red")]
    kpis = snapshot.build(rows, window_s=900, settings=SETTINGS, now_ms=NOW_MS)["agents"][0]["kpis"]
    assert (kpis["calls_handled"], kpis["dials"], kpis["aht_seconds"], kpis["connect_rate"], kpis["csat"]) == (
        1,
        2,
        120.0,
        0.5,
        1.0,
    )
    assert (stats["calls|ok"], stats["tickets|ok"], stats["calls|invalid"], stats["tickets|invalid"]) == (2, 1, 3, 1)


async def test_redelivered_record_counts_once_and_a_copy_counts_as_duplicate(redis_server: EmbeddedRedis) -> None:
    value = orjson.dumps(
        {"event_id": "e1", "type": "ticket.escalated", "ts": NOW - 10, "ticket_id": "k1", "agent_id": "a1"}
    )
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        store = WindowStore(client, namespace(SETTINGS.topic_prefix))
        processor = Processor(SETTINGS, store, Dead(), clock=lambda: NOW)
        first = await processor.process([Record("tickets", 0, 0, None, value)])
        redelivered = await processor.process([Record("tickets", 0, 0, None, value)])  # same record, after a crash
        copy = await processor.process([Record("tickets", 2, 7, None, value)])  # the producer sent it twice
        again = await processor.process([Record("tickets", 2, 7, None, value)])
        rows = await store.read_windows(NOW_MS, SETTINGS.windows_s)
        stats = await store.read_stats()
    finally:
        await client.aclose()
    assert (first.applied, first.duplicates) == (1, 0)
    assert (redelivered.applied, redelivered.duplicates) == (0, 0)
    assert (copy.applied, copy.duplicates) == (0, 1)
    assert (again.applied, again.duplicates) == (0, 0)
    assert (rows[0].sums[900]["e"], rows[0].sums[900]["x"]) == (1, 1)
    assert (stats["tickets|ok"], stats["tickets|duplicate"]) == (1, 1)
