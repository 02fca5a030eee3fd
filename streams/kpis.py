"""The KPI core, pure: events in, counter deltas out.

Stateless KPIs (AHT, connect rate, conversion, CSAT, escalation, sales and revenue, NPS, QA, compliance,
complaints) turn one event into deltas; which counters each KPI divides is declared in `callpulse.catalogue`.
FCR and first response time depend on other events of the same customer or ticket, so they are
computed from a merged state: the delta of adding events is contributions(new) - contributions(old),
which makes the result independent of arrival order and idempotent under redelivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from streams import windows as w
from streams.events import Event

Delta = tuple[str, int, str, int]  # (agent_id, bucket, field, delta)


def event_deltas(e: Event) -> list[Delta]:
    """Deltas an event adds on its own, attributed to its agent at its ts (FCR and response excluded)."""
    agent = e.agent_id
    if agent is None:
        return []
    b = w.bucket_of(e.ts_ms)
    out: list[Delta] = [(agent, b, w.EVENTS, 1)]
    if e.type == "call.ended":
        if e.connected:
            out.append((agent, b, w.HANDLE_MS, e.handle_ms))
            out.append((agent, b, w.CONNECTED, 1))
        if e.direction == "outbound":
            out.append((agent, b, w.DIALS, 1))
            if e.abandoned:
                out.append((agent, b, w.OUT_ABANDONED, 1))
            if e.connected:
                out.append((agent, b, w.OUT_CONNECTED, 1))
                if e.outcome == "sale":
                    out.append((agent, b, w.OUT_SALES, 1))
                    if e.amount_milli is not None:
                        out.append((agent, b, w.REVENUE_MILLI, e.amount_milli))
                        out.append((agent, b, w.PRICED_SALES, 1))
                elif e.outcome == "appointment":
                    out.append((agent, b, w.OUT_APPOINTMENTS, 1))
    elif e.type == "survey.csat":
        out.append((agent, b, w.CSAT_RESPONSES, 1))
        if e.score >= 4:
            out.append((agent, b, w.CSAT_GOOD, 1))
    elif e.type == "ticket.escalated":
        out.append((agent, b, w.ESCALATED, 1))
        out.append((agent, b, w.CLOSED, 1))
    elif e.type == "ticket.resolved":
        out.append((agent, b, w.CLOSED, 1))
    elif e.type == "survey.nps":
        out.append((agent, b, w.NPS_RESPONSES, 1))
        if e.score >= 9:
            out.append((agent, b, w.NPS_NET, 1))
        elif e.score <= 6:
            out.append((agent, b, w.NPS_NET, -1))
    elif e.type == "qa.scored":
        out.append((agent, b, w.QA_POINTS_MILLI, e.score_milli))
        out.append((agent, b, w.QA_MAX_MILLI, e.max_score_milli))
        out.append((agent, b, w.QA_REVIEWS, 1))
        if e.compliant is not None:
            out.append((agent, b, w.QA_CHECKED, 1))
            if e.compliant:
                out.append((agent, b, w.QA_COMPLIANT, 1))
    elif e.type == "complaint.logged":
        out.append((agent, b, w.COMPLAINTS, 1))
    return out


# --- First call resolution ---------------------------------------------------------------


@dataclass(slots=True, frozen=True, order=True)
class Call:
    """A connected call of one customer; ordered by (ts, event_id) so ties break the same everywhere."""

    ts_ms: int
    event_id: str
    agent_id: str
    resolved: bool


def is_fcr_call(e: Event) -> bool:
    """Whether an event takes part in FCR: a connected call.ended with a customer_id."""
    return e.type == "call.ended" and e.connected and e.customer_id is not None


def fcr_marks(calls: Sequence[Call], repeat_ms: int) -> list[tuple[bool, bool]]:
    """For sorted calls: (is first contact, is resolved on first contact) for each."""
    marks: list[tuple[bool, bool]] = []
    n = len(calls)
    for i, c in enumerate(calls):
        first = i == 0 or c.ts_ms - calls[i - 1].ts_ms >= repeat_ms
        followed = i + 1 < n and calls[i + 1].ts_ms - c.ts_ms < repeat_ms
        marks.append((first, first and c.resolved and not followed))
    return marks


def fcr_contributions(calls: Sequence[Call], repeat_ms: int, live_from_ms: int) -> dict[tuple[str, int, str], int]:
    """FCR counters contributed by a customer's sorted calls, for calls at or after live_from_ms."""
    out: dict[tuple[str, int, str], int] = {}
    for c, (first, resolved_first) in zip(calls, fcr_marks(calls, repeat_ms), strict=True):
        if c.ts_ms < live_from_ms or not first:
            continue
        b = w.bucket_of(c.ts_ms)
        out[(c.agent_id, b, w.FIRST_CONTACTS)] = out.get((c.agent_id, b, w.FIRST_CONTACTS), 0) + 1
        if resolved_first:
            out[(c.agent_id, b, w.RESOLVED_FIRST)] = out.get((c.agent_id, b, w.RESOLVED_FIRST), 0) + 1
    return out


def merge_calls(old: Sequence[Call], new: Iterable[Call], keep_from_ms: int) -> list[Call]:
    """The customer's calls after adding `new` (duplicates by event_id collapse), older ones pruned."""
    by_id = {c.event_id: c for c in old}
    for c in new:
        by_id.setdefault(c.event_id, c)
    return sorted(c for c in by_id.values() if c.ts_ms >= keep_from_ms)


def diff(old: dict[tuple[str, int, str], int], new: dict[tuple[str, int, str], int]) -> list[Delta]:
    """The deltas turning contributions `old` into `new`."""
    out: list[Delta] = []
    for key in old.keys() | new.keys():
        d = new.get(key, 0) - old.get(key, 0)
        if d:
            out.append((key[0], key[1], key[2], d))
    return out


def fcr_deltas(old: Sequence[Call], new: Sequence[Call], repeat_ms: int, live_from_ms: int) -> list[Delta]:
    """Counter deltas when a customer's calls go from `old` to `new` (revoking credit where needed)."""
    return diff(fcr_contributions(old, repeat_ms, live_from_ms), fcr_contributions(new, repeat_ms, live_from_ms))


def encode_calls(calls: Sequence[Call]) -> bytes:
    """Serialize a customer's calls for the store."""
    return orjson.dumps([[c.ts_ms, c.event_id, c.agent_id, int(c.resolved)] for c in calls])


def decode_calls(raw: bytes | str) -> list[Call]:
    """Read a customer's calls back from the store."""
    return sorted(Call(int(t), str(i), str(a), bool(r)) for t, i, a, r in orjson.loads(raw))


# --- First response time -----------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Ticket:
    """What first response time needs of a ticket: its earliest creation and earliest public reply."""

    created: tuple[int, str] | None = None  # (ts_ms, event_id)
    reply: tuple[int, str, str] | None = None  # (ts_ms, event_id, agent_id)


def merge_ticket(old: Ticket, events: Iterable[Event]) -> Ticket:
    """The ticket after `events` (ticket.created / ticket.replied); earliest wins, so order never matters."""
    created, reply = old.created, old.reply
    for e in events:
        if e.type == "ticket.created":
            cand = (e.ts_ms, e.event_id)
            if created is None or cand < created:
                created = cand
        elif e.type == "ticket.replied" and e.agent_id is not None:
            cand_r = (e.ts_ms, e.event_id, e.agent_id)
            if reply is None or cand_r[:2] < reply[:2]:
                reply = cand_r
    return Ticket(created, reply)


def ticket_contributions(t: Ticket, live_from_ms: int) -> dict[tuple[str, int, str], int]:
    """Response-time counters of one ticket: attributed to the first replier at the reply's ts."""
    if t.created is None or t.reply is None or t.reply[0] < live_from_ms:
        return {}
    b = w.bucket_of(t.reply[0])
    agent = t.reply[2]
    return {(agent, b, w.RESPONSE_MS): max(0, t.reply[0] - t.created[0]), (agent, b, w.RESPONSES): 1}


def ticket_deltas(old: Ticket, new: Ticket, live_from_ms: int) -> list[Delta]:
    """Counter deltas when a ticket goes from `old` to `new` (a reply earlier than the known one moves the credit)."""
    return diff(ticket_contributions(old, live_from_ms), ticket_contributions(new, live_from_ms))


def encode_ticket(t: Ticket) -> bytes:
    """Serialize a ticket for the store."""
    return orjson.dumps([list(t.created) if t.created else None, list(t.reply) if t.reply else None])


def decode_ticket(raw: bytes | str) -> Ticket:
    """Read a ticket back from the store."""
    created, reply = orjson.loads(raw)
    return Ticket(
        (int(created[0]), str(created[1])) if created else None,
        (int(reply[0]), str(reply[1]), str(reply[2])) if reply else None,
    )
