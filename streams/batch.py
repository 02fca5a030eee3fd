"""Plan a batch: turn validated events plus the customer/ticket states they touch into one store write.

Pure: no Redis, no clock. The plan is what `store.WindowStore.apply` sends to Redis in a single
atomic script, so an event's dedupe mark, its counter deltas and any state change land together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams import campaigns, keys, kpis, queues
from streams import states as states_mod
from streams import windows as w
from streams.events import Event

LAG_BOUNDS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class Params:
    """The store layout and retention a plan needs; built from Settings once."""

    ns: str
    longest_ms: int
    repeat_ms: int
    rules_for: queues.RulesFor = field(default=queues.fixed_rules())
    max_wait_ms: int = queues.QueueRules().max_wait_ms  # the longest max_wait of any queue

    @property
    def dedupe_ttl_s(self) -> int:
        """An event id is remembered until the event would be late anyway (plus the future allowance)."""
        return self.longest_ms // 1000 + 900

    @property
    def bucket_ttl_s(self) -> int:
        """A chunk lives until its last bucket has left the longest window."""
        return self.longest_ms // 1000 + 1200

    @property
    def state_ttl_s(self) -> int:
        """Customer call histories cover the repeat window behind the longest window."""
        return (self.longest_ms + self.repeat_ms) // 1000 + 1200

    @property
    def queue_call_ttl_s(self) -> int:
        """A queued call's state outlives its dedupe marks, so an answer arriving late still finds its entry."""
        return (self.longest_ms + self.max_wait_ms) // 1000 + 1200

    @property
    def coarse_ttl_s(self) -> int:
        """Campaign hours are kept for the 30d window."""
        return campaigns.COARSE_KEEP_S + 86_400

    @property
    def ticket_ttl_s(self) -> int:
        """A ticket is kept a week past its last change, so a reply days later still finds its creation."""
        return self.longest_ms // 1000 + 7 * 86400


@dataclass(slots=True)
class Item:
    """One message of a batch after decoding: an Event, or None when invalid (then `dedupe_key` is its offset)."""

    topic: str
    event: Event | None
    dedupe_key: str
    result: str  # ok | late | invalid
    source: str = "-"  # the record that carried it (keys.record_mark): reading it again is no duplicate
    dedupe_field: str | None = None  # the event id's digest (hex) in the shard hash `dedupe_key`; None: plain key


@dataclass
class Plan:
    """The payload for the store's apply script and what it changes."""

    payload: dict[str, Any]
    new_states: dict[str, tuple[int, Any]] = field(default_factory=dict)
    agents: set[str] = field(default_factory=set)  # agents whose counters this plan may change
    timed: set[str] = field(default_factory=set)  # agents whose time in state it may change (state events)


ORDER_FIELD = {"team": "tk", "state": "sk", "since": "ik", "reason": "rk"}


def mark_ttl_s(ts_ms: int, now_ms: int, params: Params) -> int:
    """How long an event's dedupe mark must stay, in seconds from now: `dedupe_ttl_s`, as a lone mark would.

    An event from the future keeps it that long past the end of its minute, so its mark lasts until it is
    late; the apply script only ever moves a shard's expiry later.
    """
    slot_end_ms = (ts_ms // keys.DEDUPE_SLOT_MS + 1) * keys.DEDUPE_SLOT_MS
    return max(slot_end_ms - now_ms, 0) // 1000 + params.dedupe_ttl_s


def classify(event: Event, now_ms: int, longest_ms: int) -> str:
    """'late' for events older than the longest window, else 'ok'."""
    return "late" if event.ts_ms <= now_ms - longest_ms else "ok"


def state_keys(items: Sequence[Item], ns: str) -> set[str]:
    """The customer and ticket state keys a batch reads and may write."""
    found: set[str] = set()
    for it in items:
        e = it.event
        if e is None or it.result != "ok":
            continue
        if kpis.is_fcr_call(e):
            found.add(keys.customer_key(ns, e.customer_id))  # type: ignore[arg-type]
        elif e.type in ("ticket.created", "ticket.replied"):
            found.add(keys.ticket_key(ns, e.ticket_id))  # type: ignore[arg-type]
        elif e.type in queues.QUEUE_EVENTS:
            found.add(keys.queue_call_key(ns, e.call_id))  # type: ignore[arg-type]
        elif e.type == "agent.state":
            found.add(keys.history_key(ns, e.agent_id))  # type: ignore[arg-type]
    return found


def _ops(ns: str, deltas: Sequence[kpis.Delta], into: list[Any], changed: set[str]) -> None:
    for agent, b, fld, d in deltas:
        changed.add(agent)
        chunk = w.chunk_of(b)
        into.extend((keys.chunk_key(ns, agent, chunk), b - chunk * w.CHUNK_BUCKETS, fld, d))


def _subject_ops(ns: str, key_of: Any, deltas: Sequence[tuple[str, int, str, int]], into: list[Any]) -> None:
    """Ops for queue or campaign deltas (subject, bucket, field, delta) on 60-bucket chunks named by `key_of`."""
    for subject, b, fld, d in deltas:
        chunk = w.chunk_of(b)
        into.extend((key_of(ns, subject, chunk), b - chunk * w.CHUNK_BUCKETS, fld, d))


def _coarse_ops(ns: str, e: Event, into: list[Any], long_keys: set[str]) -> None:
    for subject, hour, fld, d in campaigns.coarse_deltas(e):
        key = keys.coarse_key(ns, subject, hour // 24)
        into.extend((key, hour % 24, fld, d))
        long_keys.add(key)


def order_key(e: Event) -> str:
    """Total order of an agent's events by (ts, event_id), as a string Redis can compare."""
    return f"{e.ts_ms:015d}|{e.event_id}"


def plan(items: Sequence[Item], states: Mapping[str, tuple[int, Any]], now_ms: int, params: Params) -> Plan:
    """Build the store write for a batch; `states` maps every key of `state_keys` to (version, decoded state)."""
    ns = params.ns
    live_from = now_ms - params.longest_ms - 60_000
    keep_from = live_from - params.repeat_ms
    guarded: list[list[Any]] = []
    unguarded: list[Any] = []
    calls_by_key: dict[str, list[kpis.Call]] = defaultdict(list)
    tickets_by_key: dict[str, list[Event]] = defaultdict(list)
    meta: dict[tuple[str, str], tuple[str, str]] = {}
    last_ts: dict[str, int] = {}
    changed: set[str] = set()
    timed: set[str] = set()
    queue_events: dict[str, list[tuple[str, int, str, str]]] = defaultdict(list)
    marks: dict[str, list[states_mod.Mark]] = defaultdict(list)
    registry: dict[tuple[str, str], int] = {}
    long_keys: set[str] = set()
    for it in items:
        e = it.event
        ops: list[Any] = []
        if e is not None and it.result == "ok":
            _ops(ns, kpis.event_deltas(e), ops, changed)
            if e.type in queues.QUEUE_EVENTS:
                queue_events[keys.queue_call_key(ns, e.call_id)].append((e.type, e.ts_ms, e.event_id, e.queue))  # type: ignore[arg-type]
                _register(registry, "queues", e.queue, e.ts_ms)  # type: ignore[arg-type]
            elif e.type == "agent.state":
                mark = states_mod.Mark(e.ts_ms, e.event_id, e.state, e.reason)  # type: ignore[arg-type]
                marks[keys.history_key(ns, e.agent_id)].append(mark)  # type: ignore[arg-type]
            elif e.type == "call.ended" and e.direction == "outbound":
                fine = [d for d in campaigns.fine_deltas(e) if d[0] != campaigns.FLOOR]
                _subject_ops(ns, keys.campaign_chunk_key, fine, ops)
                _coarse_ops(ns, e, ops, long_keys)
                if e.campaign is not None:
                    _register(registry, "campaigns", e.campaign, e.ts_ms)
            if kpis.is_fcr_call(e):
                key = keys.customer_key(ns, e.customer_id)  # type: ignore[arg-type]
                calls_by_key[key].append(kpis.Call(e.ts_ms, e.event_id, e.agent_id, e.resolved))  # type: ignore[arg-type]
            elif e.type in ("ticket.created", "ticket.replied"):
                tickets_by_key[keys.ticket_key(ns, e.ticket_id)].append(e)  # type: ignore[arg-type]
            if e.agent_id is not None:
                agent = e.agent_id
                if last_ts.get(agent, -1) < e.ts_ms:
                    last_ts[agent] = e.ts_ms
                order = order_key(e)
                if e.team is not None:
                    prev = meta.get((agent, "team"))
                    if prev is None or prev[0] < order:
                        meta[(agent, "team")] = (order, e.team)
                if e.state is not None:
                    prev = meta.get((agent, "state"))
                    if prev is None or prev[0] < order:
                        meta[(agent, "state")] = (order, e.state)
                        meta[(agent, "since")] = (order, str(e.ts_ms))
                        meta[(agent, "reason")] = (order, e.reason or "")
        entry = [it.dedupe_key, it.topic, it.result, e.ts_ms if e is not None else 0, ops, it.source]
        if it.dedupe_field is not None and e is not None:
            entry += [it.dedupe_field, mark_ttl_s(e.ts_ms, now_ms, params)]
        guarded.append(entry)
    new_states: dict[str, tuple[int, Any]] = {}
    state_writes: list[list[Any]] = []
    for key, calls in calls_by_key.items():
        version, old = states.get(key, (0, []))
        new = kpis.merge_calls(old, calls, keep_from)
        if new == old:
            continue
        _ops(ns, kpis.fcr_deltas(old, new, params.repeat_ms, live_from), unguarded, changed)
        new_states[key] = (version + 1, new)
        value = f"{version + 1}|".encode() + kpis.encode_calls(new) if new else b""
        state_writes.append([key, version, value.decode(), params.state_ttl_s])
    for key, events in tickets_by_key.items():
        version, old_t = states.get(key, (0, kpis.Ticket()))
        new_t = kpis.merge_ticket(old_t, events)
        if new_t == old_t:
            continue
        _ops(ns, kpis.ticket_deltas(old_t, new_t, live_from), unguarded, changed)
        new_states[key] = (version + 1, new_t)
        state_writes.append([key, version, f"{version + 1}|" + kpis.encode_ticket(new_t).decode(), params.ticket_ttl_s])
    waiting_ops: list[list[Any]] = []
    for key, evs in queue_events.items():
        version, old_q = states.get(key, (0, queues.QueuedCall()))
        new_q = queues.merge(old_q, evs)
        if new_q == old_q:
            continue
        _subject_ops(ns, keys.queue_chunk_key, queues.deltas(old_q, new_q, params.rules_for, live_from), unguarded)
        leave, join = queues.waiting_changes(old_q, new_q)
        call_id = key[len(keys.queue_call_key(ns, "")) :]
        if leave is not None:
            waiting_ops.append([keys.waiting_key(ns, leave[0]), call_id, -1])
        if join is not None:
            waiting_ops.append([keys.waiting_key(ns, join[0]), call_id, join[1]])
        new_states[key] = (version + 1, new_q)
        body = queues.encode(new_q).decode()
        state_writes.append([key, version, f"{version + 1}|{body}", params.queue_call_ttl_s])
    for key, new_marks in marks.items():
        version, old_h = states.get(key, (0, states_mod.History()))
        new_h = states_mod.merge(old_h, new_marks, live_from)
        if new_h == old_h:
            continue
        agent = key[len(keys.history_key(ns, "")) :]
        _ops(ns, states_mod.deltas(agent, old_h, new_h), unguarded, timed)
        new_states[key] = (version + 1, new_h)
        body = states_mod.encode(new_h).decode()
        state_writes.append([key, version, f"{version + 1}|{body}", params.bucket_ttl_s])
    meta_ops = [
        [keys.meta_key(ns, agent), ORDER_FIELD[kind], kind, order, value]
        for (agent, kind), (order, value) in meta.items()
    ]
    agents_flat: list[Any] = []
    for agent, ts in last_ts.items():
        agents_flat.extend((agent, ts))
    payload = {
        "ns": ns,
        "g": guarded,
        "s": state_writes,
        "u": unguarded,
        "m": meta_ops,
        "a": agents_flat,
        "d": sorted(changed | timed | last_ts.keys()),  # agents whose windows, team or presence this may change
        "te": params.dedupe_ttl_s,
        "tb": params.bucket_ttl_s,
        "cb": w.CHUNK_BUCKETS,
        "bm": w.BUCKET_MS,
        "lt": keys.LATE_CHUNKS,
        "tm": params.bucket_ttl_s,
        "pa": now_ms - params.longest_ms - 1_200_000,
        "z": waiting_ops,
        "tz": params.queue_call_ttl_s,
        "wp": now_ms - params.max_wait_ms - 3_600_000,
        "r": [
            [keys.registry_key(ns, kind), name, ts, _registry_floor(kind, now_ms, params)]
            for (kind, name), ts in registry.items()
        ],
        "lk": sorted(long_keys),
        "tl": params.coarse_ttl_s,
        "lb": [int(b * 1000) for b in LAG_BOUNDS_S],
    }
    return Plan(payload, new_states, changed, timed)


def _register(registry: dict[tuple[str, str], int], kind: str, name: str, ts_ms: int) -> None:
    if registry.get((kind, name), -1) < ts_ms:
        registry[(kind, name)] = ts_ms


def _registry_floor(kind: str, now_ms: int, params: Params) -> int:
    """Queues are listed while they had an event in the longest window; campaigns for the 30d window."""
    if kind == "queues":
        return now_ms - params.longest_ms - params.max_wait_ms
    return now_ms - campaigns.COARSE_KEEP_S * 1000


def decode_state(ns: str, key: str, raw: bytes | str | None) -> tuple[int, Any]:
    """Parse a stored 'version|json' state value for a customer, ticket, queued call or agent history key."""
    kind = key[len(ns) : len(ns) + 4]  # 's:c:', 's:t:', 's:q:' or 's:a:'
    text = (raw.decode() if isinstance(raw, bytes) else raw) if raw else ""
    version, _, body = text.partition("|")
    if kind == "s:c:":
        return (int(version), kpis.decode_calls(body)) if text else (0, [])
    if kind == "s:q:":
        return (int(version), queues.decode(body)) if text else (0, queues.QueuedCall())
    if kind == "s:a:":
        return (int(version), states_mod.decode(body)) if text else (0, states_mod.History())
    return (int(version), kpis.decode_ticket(body)) if text else (0, kpis.Ticket())
