"""The contract's event types as declarations: one table that the validator (`streams.events`) and the JSON Schema
generator (`streams.schemas`) both read, so the published schemas cannot drift from what the worker accepts.

A new event type, or a new field, is one entry here; `Event` gets an attribute only when the KPI core needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["id", "text", "bool", "seconds", "milli", "integer", "enum"]

MAX_ID_CHARS = 200
MAX_SECONDS = 7 * 86400  # a week: no call, hold or wait lasts longer
MAX_AMOUNT = 1e12  # no single order is worth more; also keeps thousandths exact in Redis' doubles


@dataclass(frozen=True)
class Field:
    """One field of an event type and the rule its value must meet.

    Kinds: `id` (a non-empty string of at most 200 characters; an integer is taken as its decimal string),
    `text` (a string), `bool`, `seconds` (a number from 0 to a week, kept as integer ms), `milli` (a number >= 0,
    kept as integer thousandths), `integer` (a whole number from `minimum` to `maximum`), `enum` (one of `choices`).
    A JSON null is the same as an absent field.
    """

    name: str
    kind: Kind
    required: bool = False
    attr: str | None = (
        None  # the Event attribute it fills (seconds fields naming the same one add up); None: only checked
    )
    doc: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    max_chars: int | None = None
    what: str | None = None  # the "must be ..." words for a wrong type, where the kind's own are not apt
    default: Any = None  # what an absent optional field means (documentation; the Event default applies)


@dataclass(frozen=True)
class Check:
    """A rule across fields: `reason(raw)` returns why `raw` breaks it, or None.

    `schema` states the same rule in JSON Schema where it can (e.g. with if/then); None when it cannot, and then
    the published schema only describes it.
    """

    doc: str
    reason: Callable[[Mapping[str, Any]], str | None]
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EventType:
    """One event type: its topic, its fields, and the fields of which at least one must be present."""

    name: str
    topic: str
    doc: str
    fields: tuple[Field, ...]
    one_of: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()

    def field(self, name: str) -> Field:
        """The declaration of field `name`; KeyError when the type has none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


def _agent(required: bool, doc: str = "the agent") -> Field:
    return Field("agent_id", "id", required=required, attr="agent_id", doc=doc)


# Fields the validator checks first, by hand: the type picks the declaration, and ts needs the clock.
SELF_CHECKED: tuple[str, ...] = ("event_id", "type", "ts")
# Fields every event has. The validator checks event_id, type and ts itself (their messages predate this table);
# the schema generator reads them from here.
COMMON: tuple[Field, ...] = (
    Field("event_id", "text", required=True, max_chars=MAX_ID_CHARS,
          doc="unique per logical event: a redelivered copy carries the same id and counts once"),
    Field("type", "text", required=True, doc="the event type"),
    Field("ts", "text", required=True,
          doc="event time: RFC 3339 with a UTC offset, or epoch seconds; at most 5 minutes in the future"),
    Field("team", "text", max_chars=MAX_ID_CHARS, attr="team",
          doc="the agent's team; an agent's team is the team of its latest event that names one"),
)  # fmt: skip

_SUBJECT = ("ticket_id", "call_id")  # surveys, reviews and complaints are about a ticket or a call


def _score_within_max(raw: Mapping[str, Any]) -> str | None:
    """qa.scored: points given cannot exceed points possible (both already checked as numbers)."""
    if raw["score"] > raw["max_score"]:
        return f"score is {raw['score']!r}, must be <= max_score ({raw['max_score']!r})"
    return None


def _abandoned_outbound(raw: Mapping[str, Any]) -> str | None:
    """call.ended: only the dialer drops calls, so only outbound calls are abandoned."""
    if raw.get("abandoned") is True and raw.get("direction") != "outbound":
        return "abandoned is true on an inbound call, only outbound calls can be dropped by the dialer"
    return None


def _abandoned_not_connected(raw: Mapping[str, Any]) -> str | None:
    """call.ended: a dropped call never reached an agent."""
    if raw.get("abandoned") is True and raw.get("connected") is True:
        return "abandoned is true with connected true, a dropped call has connected: false"
    return None


_TICKET = Field("ticket_id", "id", required=True, attr="ticket_id", doc="the ticket")

EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        "call.ended", "calls", "one finished call handled or dialed by an agent",
        (
            Field("call_id", "id", required=True, attr="call_id", doc="the call"),
            _agent(True),
            Field("direction", "enum", required=True, attr="direction", choices=("inbound", "outbound"),
                  doc="inbound: a customer called; outbound: the agent or the dialer called"),
            Field("connected", "bool", required=True, attr="connected",
                  doc="outbound: a person answered; inbound: the agent answered"),
            Field("talk_seconds", "seconds", required=True, attr="handle_ms", doc="seconds talking"),
            Field("hold_seconds", "seconds", attr="handle_ms", default=0, doc="seconds on hold"),
            Field("wrap_seconds", "seconds", attr="handle_ms", default=0, doc="after-call work, seconds"),
            Field("resolved", "bool", attr="resolved", default=False, doc="the customer's issue was resolved"),
            Field("customer_id", "id", attr="customer_id", doc="the customer (first contact resolution needs it)"),
            Field("outcome", "text", attr="outcome", doc="e.g. sale, appointment"),
            Field("wait_seconds", "seconds", doc="inbound: seconds the caller waited in the queue"),
            Field("amount", "milli", attr="amount_milli", minimum=0, maximum=MAX_AMOUNT,
                  what="a number (the order value)", doc="the order value of a sale, in the floor's currency"),
            Field("queue", "id", attr="queue", doc="inbound: the queue the call came from"),
            Field("campaign", "id", attr="campaign", doc="outbound: the dialer campaign"),
            Field("abandoned", "bool", attr="abandoned", default=False,
                  doc="outbound: a person answered but the dialer dropped the call (no agent free within 2 s); "
                  "then connected is false"),
        ),
        checks=(
            Check("`abandoned` may be true only on an outbound call.", _abandoned_outbound),
            Check("A call with `abandoned` true has `connected` false.", _abandoned_not_connected),
        ),
    ),
    EventType(
        "agent.state", "calls", "an agent's state changed at ts",
        (_agent(True), Field("state", "enum", required=True, attr="state", doc="the state from ts on",
                             choices=("available", "on_call", "wrap", "break", "offline")),
         Field("reason", "id", attr="reason", doc="why, e.g. lunch, training (shown with the state)")),
    ),
    EventType(
        "call.queued", "calls", "a caller entered a queue at ts",
        (Field("call_id", "id", required=True, attr="call_id", doc="the call"),
         Field("queue", "id", required=True, attr="queue", doc="the queue"),
         Field("customer_id", "id", attr="customer_id", doc="the caller")),
    ),
    EventType(
        "call.answered", "calls", "an agent picked a queued call up at ts",
        (Field("call_id", "id", required=True, attr="call_id", doc="the call"),
         Field("queue", "id", required=True, attr="queue", doc="the queue"),
         _agent(True, doc="the agent who answered")),
    ),
    EventType(
        "call.abandoned", "calls", "the caller hung up while waiting in the queue, at ts",
        (Field("call_id", "id", required=True, attr="call_id", doc="the call"),
         Field("queue", "id", required=True, attr="queue", doc="the queue")),
    ),
    EventType(
        "ticket.created", "tickets", "a ticket was opened",
        (_TICKET, _agent(False), Field("customer_id", "id", attr="customer_id", doc="the customer"),
         Field("channel", "text", doc="e.g. email, chat")),
    ),
    EventType("ticket.replied", "tickets", "a public reply by an agent", (_TICKET, _agent(True))),
    EventType("ticket.resolved", "tickets", "an agent resolved the ticket", (_TICKET, _agent(True))),
    EventType("ticket.escalated", "tickets", "an agent escalated the ticket", (_TICKET, _agent(True))),
    EventType("ticket.reopened", "tickets", "the ticket was reopened", (_TICKET, _agent(False))),
    EventType(
        "survey.csat", "tickets", "a customer satisfaction survey answer about one agent",
        (
            _agent(True),
            Field("score", "integer", required=True, attr="score", minimum=1, maximum=5, doc="1 (worst) to 5 (best)"),
            Field("ticket_id", "id", attr="ticket_id"),
            Field("call_id", "id", attr="call_id"),
        ),
        one_of=_SUBJECT,
    ),
    EventType(
        "survey.nps", "tickets", "a net promoter score survey answer about one agent",
        (
            _agent(True),
            Field("score", "integer", required=True, attr="score", minimum=0, maximum=10,
                  doc="0 to 10: 9-10 promoters, 0-6 detractors"),
            Field("ticket_id", "id", attr="ticket_id"),
            Field("call_id", "id", attr="call_id"),
        ),
        one_of=_SUBJECT,
    ),
    EventType(
        "qa.scored", "tickets", "a quality review of one interaction",
        (
            _agent(True),
            Field("score", "milli", required=True, attr="score_milli", minimum=0, maximum=MAX_AMOUNT,
                  what="a number of points >= 0", doc="points given"),
            Field("max_score", "milli", required=True, attr="max_score_milli", minimum=0, exclusive_minimum=0,
                  maximum=MAX_AMOUNT, what="a number of points > 0", doc="points possible"),
            Field("compliant", "bool", attr="compliant", doc="the interaction followed the process"),
            Field("ticket_id", "id", attr="ticket_id"),
            Field("call_id", "id", attr="call_id"),
        ),
        one_of=_SUBJECT,
        checks=(Check("`score` must be at most `max_score`.", _score_within_max),),
    ),
    EventType(
        "complaint.logged", "tickets", "a complaint about one agent",
        (
            _agent(True, doc="the agent the complaint is about"),
            Field("ticket_id", "id", attr="ticket_id"),
            Field("call_id", "id", attr="call_id"),
        ),
        one_of=_SUBJECT,
    ),
)  # fmt: skip

BY_NAME: Mapping[str, EventType] = {t.name: t for t in EVENT_TYPES}
TOPICS: tuple[str, ...] = tuple(dict.fromkeys(t.topic for t in EVENT_TYPES))
TOPIC_TYPES: Mapping[str, frozenset[str]] = {
    topic: frozenset(t.name for t in EVENT_TYPES if t.topic == topic) for topic in TOPICS
}
