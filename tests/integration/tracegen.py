"""A deterministic event trace for integration tests, plus the hostile extras: duplicates and invalid messages.

Unlike `callpulse.simulate`, which models a realistic floor, this trace is built to hit the awkward cases on
purpose: customers who call back (FCR revoked), tickets with several replies, replies whose ts precede their
ticket (clock skew) and tickets never created, an agent who moves team, calls without hold or wrap fields,
RFC 3339 ts with odd offsets next to epoch numbers. Every ts lies within `span_s` (default 2 h) before `now`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

PARTITIONS = 4
_DROP = object()  # marks a field `invalid_messages` removes
OFFSETS = (
    UTC,
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
)


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message to produce: a base topic ('calls' or 'tickets'), raw value, partition (None: any), key."""

    topic: str
    value: bytes | None
    partition: int | None = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message the worker must dead-letter; `field` is the word its reason must name."""

    topic: str
    value: bytes | None
    field: str
    key: bytes | None = None


@dataclass(slots=True)
class Trace:
    """Valid events in ts order, as (base topic, event) pairs."""

    now: float
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def valid(self) -> list[dict[str, Any]]:
        """The events alone (each event_id once)."""
        return [e for _, e in self.events]


def _ts(rng: random.Random, seconds: float, n: int) -> float | str:
    """Epoch seconds rounded to ms; every 7th event as RFC 3339 with one of several offsets."""
    ms = round(seconds * 1000)
    if n % 7 == 0:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(OFFSETS[n // 7 % len(OFFSETS)])
        return moment.isoformat(timespec="milliseconds")
    if n % 11 == 0 and ms % 1000 == 0:
        return ms // 1000  # an integer epoch
    return ms / 1000


def generate_trace(
    now: float,
    *,
    seed: int = 7,
    agents: int = 18,
    teams: int = 3,
    calls_per_agent: int = 45,
    tickets: int = 260,
    customers: int = 220,
    span_s: float = 2 * 3600,
) -> Trace:
    """Build a trace of calls, agent states, tickets and surveys; same arguments, same trace."""
    rng = random.Random(seed)
    start = now - span_s
    end = now - 5.0  # nothing in the future, even by a few ms
    trace = Trace(now=now)
    n = 0
    tag = f"s{seed}"

    def emit(topic: str, kind: str, at: float, **fields: Any) -> None:
        nonlocal n
        n += 1
        at = min(max(at, start), end)
        event = {"event_id": f"ev-{tag}-{n}", "type": kind, "ts": _ts(rng, at, n)}
        event.update(fields)
        trace.events.append((topic, event))

    team_names = [f"team-{chr(97 + i)}" for i in range(teams)]
    agent_ids = [f"ag{i + 1:03d}" for i in range(agents)]
    team_of = {a: team_names[i % teams] for i, a in enumerate(agent_ids)}
    inbound = {a: i % 3 != 2 for i, a in enumerate(agent_ids)}  # a third of the floor dials out
    mover = agent_ids[0]  # changes team half-way through: its latest event's team wins
    move_at = start + span_s / 2
    customer_ids: list[str | int] = [f"cu{i}" for i in range(customers)]
    customer_ids[::17] = [10_000 + i for i in range(len(customer_ids[::17]))]  # integer ids are allowed too

    call_n = 0
    for agent in agent_ids:
        t = start + rng.uniform(0, 120)
        step = (span_s - 180) / calls_per_agent
        for _ in range(calls_per_agent):
            t += rng.uniform(0.3, 1.7) * step
            if t >= end:
                break
            call_n += 1
            team = team_of[agent] if not (agent == mover and t > move_at) else team_names[-1]
            direction = "inbound" if inbound[agent] else "outbound"
            connected = rng.random() < (0.93 if direction == "inbound" else 0.4)
            fields: dict[str, Any] = {
                "call_id": f"call-{tag}-{call_n}",
                "agent_id": agent,
                "direction": direction,
                "connected": connected,
            }
            if rng.random() < 0.9:
                fields["team"] = team  # some events name no team: the latest one that does decides
            if connected:
                talk = rng.choice([round(rng.uniform(30, 600)), round(rng.uniform(30, 600), 1)])
                fields["talk_seconds"] = talk
                if rng.random() < 0.7:
                    fields["hold_seconds"] = rng.choice([0, round(rng.uniform(5, 90))])
                if rng.random() < 0.8:
                    fields["wrap_seconds"] = round(rng.uniform(10, 60), rng.choice([0, 2]))
                if rng.random() < 0.85:
                    fields["resolved"] = rng.random() < 0.75
            else:
                fields["talk_seconds"] = 0
            if direction == "inbound":
                if rng.random() < 0.9:
                    # a small pool, so customers call back within the trace (repeat contacts)
                    fields["customer_id"] = rng.choice(customer_ids[: customers // 3])
                fields["wait_seconds"] = round(rng.uniform(0, 300))
            else:
                if connected:
                    fields["outcome"] = rng.choice(["sale", "no_sale", "no_sale", "callback", "sale"])
                    if rng.random() < 0.3:
                        fields["customer_id"] = rng.choice(customer_ids)
                else:
                    fields["outcome"] = rng.choice(["no_answer", "busy", "voicemail"])
            if connected:
                emit("calls", "agent.state", t - 5, agent_id=agent, team=team, state="on_call")
            emit("calls", "call.ended", t, **fields)
            state = rng.choice(["available"] * 6 + ["wrap", "break", "offline"])
            emit("calls", "agent.state", t + 1, agent_id=agent, state=state)
            if connected and direction == "inbound" and rng.random() < 0.2:
                emit("tickets", "survey.csat", t + rng.uniform(30, 600), agent_id=agent,
                     score=rng.randint(1, 5), call_id=fields["call_id"])  # fmt: skip

    desk = [a for a in agent_ids if inbound[a]]
    for i in range(tickets):
        tid = f"tkt-{tag}-{i}"
        created_at = rng.uniform(start, end - 60)
        agent = rng.choice(desk)
        skew = rng.random() < 0.05  # the first reply's ts precedes the ticket's: response clamps to 0
        never_created = rng.random() < 0.04
        if not never_created:
            created: dict[str, Any] = {"ticket_id": tid, "channel": rng.choice(["email", "chat", "web"])}
            if rng.random() < 0.8:
                created["customer_id"] = rng.choice(customer_ids)
            emit("tickets", "ticket.created", created_at, **created)
        at = created_at - rng.uniform(1, 30) if skew else created_at + rng.uniform(20, 3000)
        replier = agent
        for _ in range(rng.choice([1, 1, 1, 2, 3, 4])):
            emit("tickets", "ticket.replied", at, ticket_id=tid, agent_id=replier)
            at += rng.uniform(30, 900)
            replier = rng.choice(desk) if rng.random() < 0.2 else agent
        if rng.random() < 0.75:
            kind = "ticket.escalated" if rng.random() < 0.15 else "ticket.resolved"
            emit("tickets", kind, at, ticket_id=tid, agent_id=agent)
            if kind == "ticket.resolved" and rng.random() < 0.1:
                emit("tickets", "ticket.reopened", at + rng.uniform(60, 900), ticket_id=tid)
            if rng.random() < 0.3:
                emit("tickets", "survey.csat", at + rng.uniform(60, 1200), agent_id=agent,
                     score=rng.randint(1, 5), ticket_id=tid)  # fmt: skip

    trace.events.sort(key=lambda te: _epoch(te[1]["ts"]))
    return trace


def _epoch(ts: float | int | str) -> float:
    return datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else float(ts)


def shuffled(events: Sequence[tuple[str, dict[str, Any]]], *, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """A seeded shuffle: arrival order unrelated to ts."""
    out = list(events)
    random.Random(seed).shuffle(out)
    return out


def to_messages(events: Iterable[tuple[str, dict[str, Any]]]) -> list[Message]:
    """JSON-encode events as messages on any partition."""
    return [Message(topic, orjson.dumps(event)) for topic, event in events]


def with_duplicates(messages: Sequence[Message], *, share: float, seed: int) -> tuple[list[Message], int]:
    """Insert redelivered copies of `share` of the messages at random places, half pinned to another partition.

    Returns the new list and how many copies were added. The originals are left on a random partition by
    `produce_raw`; a pinned copy goes to a fixed one, so copies of one event often land on two partitions.
    """
    rng = random.Random(seed)
    out = list(messages)
    picks = rng.sample(range(len(messages)), round(len(messages) * share))
    for i in picks:
        m = messages[i]
        copy = Message(m.topic, m.value, rng.randrange(PARTITIONS) if rng.random() < 0.5 else None, m.key)
        out.insert(rng.randrange(len(out) + 1), copy)
    return out, len(picks)


def invalid_messages(now: float, *, tag: str = "bad") -> list[Invalid]:
    """About twenty messages the worker must reject, each with the field its reason must name."""
    ts = round(now - 60, 3)
    call = {"type": "call.ended", "ts": ts, "call_id": "c-bad", "agent_id": "ag-bad", "direction": "inbound",
            "connected": True, "talk_seconds": 100}  # fmt: skip
    n = 0

    def ev(base: dict[str, Any], **changes: Any) -> bytes:
        nonlocal n
        n += 1
        e = {"event_id": f"{tag}-{n}", **base, **changes}
        for k in [k for k, v in changes.items() if v is _DROP]:
            del e[k]
        return orjson.dumps(e)

    survey = {"type": "survey.csat", "ts": ts, "agent_id": "ag-bad", "score": 4, "ticket_id": "t-bad"}
    return [
        Invalid("calls", b'{"event_id": "trunc", "type": "call.ended", ', "JSON"),
        Invalid("tickets", b"not json at all", "JSON"),
        Invalid("calls", b"[1, 2, 3]", "object"),
        Invalid("calls", None, "null", key=b"ag-bad"),  # a tombstone needs a key
        Invalid("tickets", b'{"event_id": "\xff\xfe", "type": "ticket.created"}', "UTF-8"),
        Invalid("calls", ev(call, connected="yes"), "connected"),
        Invalid("calls", ev(call, talk_seconds="120"), "talk_seconds"),
        Invalid("calls", ev(call, talk_seconds=-4), "talk_seconds"),
        Invalid("calls", ev(call, hold_seconds=-1), "hold_seconds"),
        Invalid("calls", ev(call, direction="sideways"), "direction"),
        Invalid("calls", ev(call, type="call.started"), "type"),
        Invalid("calls", ev(call, ts=round(now + 3600, 3)), "ts"),
        Invalid("calls", ev(call, ts="yesterday"), "ts"),
        Invalid("calls", ev(call, ts="2024-01-01T10:00:00"), "ts"),
        Invalid("calls", ev(call, agent_id={"id": 1}), "agent_id"),
        Invalid("calls", ev(call, event_id=_DROP), "event_id"),
        Invalid("calls", ev({"type": "agent.state", "ts": ts, "agent_id": "ag-bad", "state": "lunch"}), "state"),
        Invalid("calls", ev({"type": "ticket.created", "ts": ts, "ticket_id": "t-bad"}), "topic"),
        Invalid("tickets", ev(survey, score=7), "score"),
        Invalid("tickets", ev(survey, score="5"), "score"),
        Invalid("tickets", ev({"type": "ticket.replied", "ts": ts, "ticket_id": "t-bad"}), "agent_id"),
    ]


async def produce_raw(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    *,
    partitions: Sequence[int | None] | None = None,
    seed: int = 1,
    keys: Sequence[bytes | None] | None = None,
) -> list[RecordMetadata]:
    """Send raw values to `topic`, each to its given partition or else a seeded random one of the 4.

    `keys` gives each message's key (default none: the worker does not trust keys anyway). Returns each
    message's metadata (partition, offset) in the order of `values`.
    """
    rng = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap.split(","), acks=1, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i, value in enumerate(values):
            given = partitions[i] if partitions is not None else None
            partition = given if given is not None else rng.randrange(PARTITIONS)
            key = keys[i] if keys is not None else None
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def produce_messages(
    bootstrap: str, prefix: str, messages: Sequence[Message], *, seed: int = 1
) -> dict[str, list[RecordMetadata]]:
    """Send messages to `<prefix>calls` and `<prefix>tickets`; metadata per base topic, in message order."""
    out: dict[str, list[RecordMetadata]] = {}
    for topic in ("calls", "tickets"):
        mine = [m for m in messages if m.topic == topic]
        if mine:
            out[topic] = await produce_raw(bootstrap, f"{prefix}{topic}", [m.value for m in mine],
                                           partitions=[m.partition for m in mine], seed=seed,
                                           keys=[m.key for m in mine])  # fmt: skip
    return out
