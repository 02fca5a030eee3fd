"""Simulator: a deterministic call-center floor that yields contract events, and the Kafka producer that sends them.

The floor has inbound agents and outbound dialer agents in teams of about ten. Each inbound team works its own
queue (`support-<letter>`): callers arrive in a Poisson stream with bursts, wait with a patience of their own (some
abandon, a few within 5 s), and are answered by the free agent who has been idle longest; callers call back when
their issue was not solved. Each outbound team dials one campaign (`campaign-<letter>`) whose dialer drops 1-4 % of
live answers (`abandoned: true`). There is a ticket desk (email, chat, web) worked by the inbound agents, and CSAT
surveys. Per-call figures follow the field targets (AHT 3-6 min, 35 % connect rate, 4-15 % conversion, FCR
around 75 %, CSAT around 85 %). Agents do one call at a time, so to reach the requested event rate the time
*between* an agent's events is scaled (compressed for high rates, stretched with extra idle for low ones) while
the seconds reported in each event, the callback delays and the ticket reply delays stay realistic.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from callpulse.connections import check_kafka, kafka_options
from callpulse.exceptions import SettingsError
from callpulse.settings import Settings

__all__ = ["generate", "produce", "run"]

# Floor shape.
AGENTS_PER_TEAM = 10
INBOUND_SHARE = 0.6
# Inbound calls; every duration is in seconds.
IN_TALK_MEDIAN_S = 200.0
IN_TALK_SIGMA = 0.5
RESOLVE_P = 0.80
CALLBACK_P_UNRESOLVED = 0.65
CALLBACK_P_RESOLVED = 0.05
CALLBACK_P_UNANSWERED = 0.7
CALLBACK_MEDIAN_S = 50 * 60.0
CALLBACK_SIGMA = 0.9
CALLBACK_RANGE_S = (5 * 60.0, 20 * 3600.0)
CALL_SURVEY_P = 0.15
CALL_SURVEY_DELAY_S = (60.0, 600.0)
# Outbound dialer.
CONNECT_P = 0.35
OUT_TALK_MEDIAN_S = 170.0
OUT_TALK_SIGMA = 0.55
OUT_RING_S = (15.0, 35.0)
OUT_IDLE_MEAN_S = 6.0
SALE_P_RANGE = (0.05, 0.13)
SALE_TALK_FACTOR = 1.5
CALLBACK_OUTCOME_P = 0.15
NO_ANSWER_OUTCOMES = ("no_answer",) * 7 + ("busy",) + ("voicemail",) * 2
DROP_P_RANGE = (0.01, 0.04)  # per campaign: live answers the dialer drops (no agent free within 2 s)
# Inbound queues: arrivals are sized so agents are busy about OCCUPANCY_TARGET of the time, with bursts.
OCCUPANCY_TARGET = 0.85
ANSWER_DELAY_S = (1.0, 3.0)
PATIENCE_MEDIAN_S = 150.0
PATIENCE_SIGMA = 0.9
QUICK_HANGUP_P = 0.03
QUICK_HANGUP_S = (1.0, 4.5)
BURST_GAP_MEAN_S = 15 * 60.0
BURST_S = (2 * 60.0, 5 * 60.0)
BURST_FACTOR = 2.0
ABANDON_SHARE = 0.06  # expected share of callers who hang up waiting, to size the arrivals
BURST_MEAN_FACTOR = (BURST_GAP_MEAN_S + (BURST_S[0] + BURST_S[1]) / 2 * BURST_FACTOR) / (
    BURST_GAP_MEAN_S + (BURST_S[0] + BURST_S[1]) / 2
)
# Both directions.
HOLD_P = {"inbound": 0.25, "outbound": 0.15}
HOLD_MEDIAN_S = 45.0
HOLD_SIGMA = 0.6
WRAP_S = (20.0, 60.0)
BREAK_P = 0.02
BREAK_S = (5 * 60.0, 15 * 60.0)
BREAK_REASONS = ("coffee",) * 5 + ("lunch",) * 3 + ("training", "meeting")
OFFLINE_P = 0.002
OFFLINE_S = (10 * 60.0, 40 * 60.0)
# Tickets: their share of all events, then a lifecycle in real (unscaled) time.
TICKET_SHARE = 0.12
TICKET_WARMUP_S = 2 * 3600.0
CHANNELS = ("email",) * 5 + ("chat",) * 3 + ("web",) * 2
CHAT_REPLY_MEDIAN_S = 3 * 60.0
EMAIL_REPLY_MEDIAN_S = 25 * 60.0
REPLY_SIGMA = 0.8
REPLY_RANGE_S = (30.0, 6 * 3600.0)
EXTRA_REPLY_P = 0.35
MAX_EXTRA_REPLIES = 4
FOLLOWUP_MEDIAN_S = 30 * 60.0
CLOSE_MEDIAN_S = 10 * 60.0
ESCALATE_P = 0.10
REOPEN_P = 0.06
REOPEN_DELAY_S = (3600.0, 12 * 3600.0)
TICKET_SURVEY_P = 0.30
TICKET_SURVEY_DELAY_S = (5 * 60.0, 60 * 60.0)
# CSAT scores 1..5: satisfied customers mostly give 4-5.
SCORES_HAPPY = (5,) * 66 + (4,) * 25 + (3,) * 5 + (2,) * 2 + (1,) * 2
SCORES_UNHAPPY = (5,) * 35 + (4,) * 30 + (3,) * 15 + (2,) * 8 + (1,) * 12
# Sale amounts: lognormal around an average order value of about 120 (the floor's currency).
AMOUNT_MEDIAN = 110.0
AMOUNT_SIGMA = 0.45
APPOINTMENT_P = 0.06  # of connected outbound calls that did not sell
NPS_SURVEY_P = 0.08  # of connected calls
NPS_HAPPY = (10,) * 30 + (9,) * 28 + (8,) * 18 + (7,) * 10 + (6,) * 6 + (5,) * 4 + (3,) * 2 + (0,) * 2
NPS_UNHAPPY = (10,) * 10 + (9,) * 12 + (8,) * 16 + (7,) * 14 + (6,) * 14 + (5,) * 12 + (3,) * 12 + (0,) * 10
QA_REVIEW_P = 0.04  # of connected calls: a reviewer scores a few percent of interactions
QA_MAX_SCORE = 100
QA_MEAN, QA_SD = 82.0, 9.0
QA_COMPLIANT_P = 0.94
QA_UNCHECKED_P = 0.15  # reviews that say nothing about process compliance
QA_DELAY_S = (60.0, 20 * 60.0)  # reviewers score recent calls, so QA shows early in a demo
COMPLAINT_P = 0.012  # of connected calls
COMPLAINT_DELAY_S = (60.0, 30 * 60.0)
# Every tenth event carries an RFC 3339 ts instead of epoch seconds, with one of these offsets.
RFC3339_EVERY = 10
OFFSETS = tuple(timezone(timedelta(minutes=m)) for m in (0, 120, -300, 330))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_EMIT, _AGENT, _TICKET, _ARRIVE, _ABANDON, _FREE, _BURST = 0, 1, 2, 3, 4, 5, 6
_SEND_BATCH = 4096


def _mean(bounds: tuple[float, float]) -> float:
    return (bounds[0] + bounds[1]) / 2


def _lognormal_mean(median: float, sigma: float) -> float:
    return median * math.exp(sigma * sigma / 2)


EVENTS_PER_TICKET = (
    2
    + sum(EXTRA_REPLY_P**i for i in range(1, MAX_EXTRA_REPLIES + 1))
    + 1
    + (1 - ESCALATE_P) * (REOPEN_P * 3 + TICKET_SURVEY_P)
)


@dataclass(slots=True)
class _Agent:
    agent_id: str
    team: str
    inbound: bool
    talk_factor: float
    resolve_p: float
    connect_p: float
    sale_p: float
    index: int = 0
    scale: float = 1.0
    extra_idle_mean_s: float = 0.0

    def natural(self) -> tuple[float, float]:
        """Expected events per call cycle and expected cycle length in unscaled seconds."""
        direction = "inbound" if self.inbound else "outbound"
        hold = HOLD_P[direction] * _lognormal_mean(HOLD_MEDIAN_S, HOLD_SIGMA)
        pause = BREAK_P * _mean(BREAK_S) + OFFLINE_P * _mean(OFFLINE_S)
        if self.inbound:
            # Callers come from the queue: an agent is busy OCCUPANCY_TARGET of the time; each answered call is
            # queued, answered, on_call, wrap, call.ended, available, and a share of callers abandon (2 events).
            talk = _lognormal_mean(IN_TALK_MEDIAN_S, IN_TALK_SIGMA) * self.talk_factor
            cycle_s = (talk + hold + _mean(WRAP_S) + pause) / OCCUPANCY_TARGET
            abandons = 2 * ABANDON_SHARE / (1 - ABANDON_SHARE)
            return 6 + BREAK_P + OFFLINE_P + CALL_SURVEY_P + abandons, cycle_s
        else:
            talk = _lognormal_mean(OUT_TALK_MEDIAN_S, OUT_TALK_SIGMA) * self.talk_factor
            talk *= 1 + self.sale_p * (SALE_TALK_FACTOR - 1)
            p, ring, idle, survey = self.connect_p, _mean(OUT_RING_S), OUT_IDLE_MEAN_S, 0.0
        cycle_s = p * (talk + hold + _mean(WRAP_S) + pause) + (1 - p) * ring + idle
        events = p * (4 + BREAK_P + OFFLINE_P + survey) + (1 - p)
        return events, cycle_s


@dataclass(slots=True)
class _Caller:
    call_id: str
    customer: str
    queue: int
    arrived_s: float


@dataclass(slots=True)
class _Queue:
    """One inbound team's queue: callers in arrival order and the team's free agents by how long they idled."""

    name: str
    rate: float  # arrivals per second outside bursts
    scale: float  # the team's time compression (1 when not compressed)
    waiting: deque[int]
    free: list[tuple[float, int]]  # (free since, agent index): the heap head has idled longest
    burst_until: float = -math.inf


def _floor(agents: int, rng: random.Random) -> list[_Agent]:
    """Split `agents` into inbound and outbound teams of about AGENTS_PER_TEAM, with per-agent skill."""
    n_in = agents if agents == 1 else min(agents - 1, max(1, round(agents * INBOUND_SHARE)))
    out: list[_Agent] = []
    for inbound, count, first in ((True, n_in, 0), (False, agents - n_in, n_in)):
        n_teams = max(1, round(count / AGENTS_PER_TEAM))
        for i in range(count):
            team = f"{'inbound' if inbound else 'outbound'}-{_team_letter(i * n_teams // count)}"
            out.append(
                _Agent(
                    agent_id=f"a{first + i + 1:04d}",
                    team=team,
                    inbound=inbound,
                    talk_factor=min(1.5, max(0.75, rng.lognormvariate(0.0, 0.15))),
                    resolve_p=min(0.92, max(0.65, rng.gauss(RESOLVE_P, 0.04))),
                    connect_p=min(0.45, max(0.25, rng.gauss(CONNECT_P, 0.03))),
                    sale_p=rng.uniform(*SALE_P_RANGE),
                    index=first + i,
                )
            )
    return out


def _queue_of(team: str) -> str:
    """The inbound queue a team works: 'inbound-b' -> 'support-b'."""
    return "support-" + team.rsplit("-", 1)[-1]


def _campaign_of(team: str) -> str:
    """The dialer campaign a team dials: 'outbound-a' -> 'campaign-a'."""
    return "campaign-" + team.rsplit("-", 1)[-1]


def _team_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(97 + rem) + letters
    return letters


class _Floor:
    """The discrete-event simulation behind `generate`: one heap of pending events and processes."""

    def __init__(self, agents: int, rate: float, seed: int, start_s: float, end_s: float) -> None:
        self.rng = random.Random(seed)
        self.start_s = start_s
        self.end_s = end_s
        self.lo_ms = math.ceil(start_s * 1000)
        self.hi_ms = math.floor(end_s * 1000) if math.isfinite(end_s) else None
        self.tag = f"{zlib.crc32(f'{seed}:{start_s!r}'.encode()):08x}"
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.n_events = self.n_calls = self.n_tickets = self.n_customers = 0
        self.callbacks: list[tuple[float, int, str]] = []
        self.agents = _floor(agents, self.rng)
        self.desk = [a for a in self.agents if a.inbound] or self.agents
        natural = [a.natural() for a in self.agents]
        call_rate = rate * (1 - TICKET_SHARE)
        stretch = sum(events / cycle_s for events, cycle_s in natural) / call_rate
        self.queues: list[_Queue] = []
        self.queue_of: dict[str, int] = {}
        self.callers: dict[int, _Caller] = {}
        self.drop_p: dict[str, float] = {}
        for agent, (_, cycle_s) in zip(self.agents, natural, strict=True):
            if stretch <= 1:
                agent.scale = stretch
            else:
                agent.extra_idle_mean_s = cycle_s * (stretch - 1)
            first_s = start_s + self.rng.uniform(0, cycle_s * stretch)
            who = {"agent_id": agent.agent_id, "team": agent.team, "state": "available"}
            self._emit(first_s, "calls", "agent.state", who)
            if agent.inbound:
                qi = self._queue_for(agent.team, min(1.0, stretch))
                # Arrivals keep every agent of the team busy OCCUPANCY_TARGET of its (scaled or stretched) cycle.
                self.queues[qi].rate += 1 / (cycle_s * stretch) / (1 - ABANDON_SHARE) / BURST_MEAN_FACTOR
                self._schedule(first_s, _FREE, agent.index)
            else:
                self.drop_p.setdefault(agent.team, self.rng.uniform(*DROP_P_RANGE))
                self._schedule(first_s, _AGENT, agent.index)
        for qi, queue in enumerate(self.queues):
            self._schedule(start_s + self.rng.expovariate(queue.rate), _ARRIVE, qi)
            self._schedule(start_s + self.rng.expovariate(1 / BURST_GAP_MEAN_S) * queue.scale, _BURST, qi)
        self.ticket_gap_mean_s = EVENTS_PER_TICKET / (rate * TICKET_SHARE)
        self._schedule(start_s - min(TICKET_WARMUP_S, 5000 * self.ticket_gap_mean_s), _TICKET, None)

    def _schedule(self, t: float, kind: int, payload: Any) -> None:
        if t <= self.end_s:
            self.seq += 1
            heapq.heappush(self.heap, (t, self.seq, kind, payload))

    def _emit(self, t: float, topic: str, kind: str, fields: dict[str, Any]) -> None:
        if self.start_s <= t <= self.end_s:
            self.seq += 1
            heapq.heappush(self.heap, (t, self.seq, _EMIT, (topic, kind, fields)))

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Run the simulation, yielding (topic_base, event) in ts order."""
        heap, pop = self.heap, heapq.heappop
        while heap:
            t, _, kind, payload = pop(heap)
            if kind == _EMIT:
                yield payload[0], self._stamp(t, payload[1], payload[2])
            elif kind == _AGENT:
                self._call(self.agents[payload], t)
            elif kind == _ARRIVE:
                self._arrive(payload, t)
            elif kind == _ABANDON:
                self._abandon(payload, t)
            elif kind == _FREE:
                self._free(self.agents[payload], t)
            elif kind == _BURST:
                self._burst(payload, t)
            else:
                self._ticket(t)

    def _stamp(self, t: float, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.n_events += 1
        n = self.n_events
        ms = max(self.lo_ms, round(t * 1000))
        if self.hi_ms is not None:
            ms = min(ms, self.hi_ms)
        ts: float | str
        if n % RFC3339_EVERY == 0:
            moment = (EPOCH + timedelta(milliseconds=ms)).astimezone(OFFSETS[n // RFC3339_EVERY % len(OFFSETS)])
            ts = moment.isoformat(timespec="milliseconds")
        else:
            ts = ms / 1000
        event = {"event_id": f"ev-{self.tag}-{n}", "type": kind, "ts": ts}
        event.update(fields)
        return event

    def _customer(self) -> str:
        self.n_customers += 1
        return f"cust-{self.tag}-{self.n_customers}"

    def _call(self, agent: _Agent, t: float, caller: _Caller | None = None) -> None:
        """One call of `agent` starting at t: the queued `caller` it answers (inbound), else a dial (outbound)."""
        rng, scale = self.rng, agent.scale
        direction = "inbound" if agent.inbound else "outbound"
        extra: dict[str, Any] = {}
        if caller is not None:
            queue = self.queues[caller.queue]
            call_id, customer, connected = caller.call_id, caller.customer, True
            wait_s = round((t - caller.arrived_s) / queue.scale)
            extra = {"customer_id": customer, "wait_seconds": wait_s, "queue": queue.name}
            answered = {"call_id": call_id, "queue": queue.name, "agent_id": agent.agent_id}
            self._emit(t, "calls", "call.answered", answered)
        else:
            self.n_calls += 1
            call_id, customer = f"call-{self.tag}-{self.n_calls}", ""
            connected = rng.random() < agent.connect_p
            extra = {"campaign": _campaign_of(agent.team)}
        base = {"call_id": call_id, "agent_id": agent.agent_id, "team": agent.team}
        if not agent.inbound and (not connected or rng.random() < self.drop_p[agent.team]):
            # No answer, or a live answer the dialer dropped because no agent was free within 2 s.
            end = t + rng.uniform(*OUT_RING_S) * scale
            if connected:
                extra["abandoned"] = True
            else:
                extra["outcome"] = rng.choice(NO_ANSWER_OUTCOMES)
            fields = {**base, "direction": direction, "connected": False, "talk_seconds": 0, "hold_seconds": 0}
            fields.update(wrap_seconds=0, resolved=False, **extra)
            self._emit(end, "calls", "call.ended", fields)
            self._next_call(agent, end, OUT_IDLE_MEAN_S)
            return
        if agent.inbound:
            talk_s = rng.lognormvariate(math.log(IN_TALK_MEDIAN_S), IN_TALK_SIGMA) * agent.talk_factor
            resolved = rng.random() < agent.resolve_p
        else:
            sale = rng.random() < agent.sale_p
            talk_s = rng.lognormvariate(math.log(OUT_TALK_MEDIAN_S), OUT_TALK_SIGMA) * agent.talk_factor
            if sale:
                talk_s *= SALE_TALK_FACTOR
                outcome = "sale"
                extra["amount"] = round(rng.lognormvariate(math.log(AMOUNT_MEDIAN), AMOUNT_SIGMA), 2)
            elif rng.random() < APPOINTMENT_P:
                outcome = "appointment"
            else:
                outcome = "callback" if rng.random() < CALLBACK_OUTCOME_P else "no_sale"
            resolved = outcome != "callback"
            extra["outcome"] = outcome
        hold_s = rng.lognormvariate(math.log(HOLD_MEDIAN_S), HOLD_SIGMA) if rng.random() < HOLD_P[direction] else 0.0
        talk, hold, wrap = max(1, round(talk_s)), round(hold_s), round(rng.uniform(*WRAP_S))
        wrap_at = t + (talk + hold) * scale
        end = wrap_at + wrap * scale
        who = {"agent_id": agent.agent_id, "team": agent.team}
        self._emit(t, "calls", "agent.state", {**who, "state": "on_call"})
        self._emit(wrap_at, "calls", "agent.state", {**who, "state": "wrap"})
        fields = {**base, "direction": direction, "connected": True, "talk_seconds": talk, "hold_seconds": hold}
        fields.update(wrap_seconds=wrap, resolved=resolved, **extra)
        self._emit(end, "calls", "call.ended", fields)
        if agent.inbound:
            self._callback(customer, end, CALLBACK_P_RESOLVED if resolved else CALLBACK_P_UNRESOLVED)
            if rng.random() < CALL_SURVEY_P:
                score = rng.choice(SCORES_HAPPY if resolved else SCORES_UNHAPPY)
                survey = {"agent_id": agent.agent_id, "score": score, "call_id": call_id}
                self._emit(end + rng.uniform(*CALL_SURVEY_DELAY_S), "tickets", "survey.csat", survey)
        self._feedback(agent, call_id, end, resolved)
        roll = rng.random()
        if roll < BREAK_P + OFFLINE_P:
            if roll < BREAK_P:
                bounds = BREAK_S
                self._emit(end, "calls", "agent.state", {**who, "state": "break", "reason": rng.choice(BREAK_REASONS)})
            else:
                bounds = OFFLINE_S
                self._emit(end, "calls", "agent.state", {**who, "state": "offline"})
            end += rng.uniform(*bounds) * scale
        self._emit(end, "calls", "agent.state", {**who, "state": "available"})
        if agent.inbound:
            self._schedule(end, _FREE, agent.index)
        else:
            self._next_call(agent, end, OUT_IDLE_MEAN_S)

    # --- inbound queues -----------------------------------------------------------------------------------------

    def _queue_for(self, team: str, scale: float) -> int:
        if team not in self.queue_of:
            self.queue_of[team] = len(self.queues)
            self.queues.append(_Queue(_queue_of(team), 0.0, scale, deque(), []))
        return self.queue_of[team]

    def _arrive(self, qi: int, t: float) -> None:
        """A caller enters queue `qi`: the free agent idle longest answers, else the caller waits (and may hang up)."""
        rng, queue = self.rng, self.queues[qi]
        rate = queue.rate * (BURST_FACTOR if t < queue.burst_until else 1.0)
        self._schedule(t + rng.expovariate(rate), _ARRIVE, qi)
        # A customer whose callback is due comes first, else a new caller.
        if self.callbacks and self.callbacks[0][0] <= t:
            customer = heapq.heappop(self.callbacks)[2]
        else:
            customer = self._customer()
        self.n_calls += 1
        caller = _Caller(f"call-{self.tag}-{self.n_calls}", customer, qi, t)
        self._emit(t, "calls", "call.queued", {"call_id": caller.call_id, "queue": queue.name, "customer_id": customer})
        if queue.free:
            _since, index = heapq.heappop(queue.free)
            self._call(self.agents[index], t + rng.uniform(*ANSWER_DELAY_S) * queue.scale, caller)
            return
        self.callers[self.n_calls] = caller
        queue.waiting.append(self.n_calls)
        if rng.random() < QUICK_HANGUP_P:
            # In event seconds, not scaled: these are the short abandons (under 5 s) however fast the floor runs.
            wait_s = rng.uniform(*QUICK_HANGUP_S)
        else:
            wait_s = rng.lognormvariate(math.log(PATIENCE_MEDIAN_S), PATIENCE_SIGMA) * queue.scale
        self._schedule(t + wait_s, _ABANDON, self.n_calls)

    def _abandon(self, key: int, t: float) -> None:
        caller = self.callers.pop(key, None)
        if caller is None:  # answered before the caller's patience ran out
            return
        self._emit(t, "calls", "call.abandoned", {"call_id": caller.call_id, "queue": self.queues[caller.queue].name})
        self._callback(caller.customer, t, CALLBACK_P_UNANSWERED)
        queue = self.queues[caller.queue]
        if len(queue.waiting) > 2 * len(self.callers) + 64:  # drop hung-up callers left in the line
            queue.waiting = deque(k for k in queue.waiting if k in self.callers)

    def _free(self, agent: _Agent, t: float) -> None:
        """`agent` is available at t: it answers the caller waiting longest, else joins the free agents."""
        queue = self.queues[self.queue_of[agent.team]]
        while queue.waiting:
            caller = self.callers.pop(queue.waiting.popleft(), None)
            if caller is not None:
                self._call(agent, t + self.rng.uniform(*ANSWER_DELAY_S) * queue.scale, caller)
                return
        heapq.heappush(queue.free, (t, agent.index))

    def _burst(self, qi: int, t: float) -> None:
        queue = self.queues[qi]
        queue.burst_until = t + self.rng.uniform(*BURST_S) * queue.scale
        self._schedule(queue.burst_until + self.rng.expovariate(1 / BURST_GAP_MEAN_S) * queue.scale, _BURST, qi)

    def _feedback(self, agent: _Agent, call_id: str, end: float, resolved: bool) -> None:
        """NPS surveys, QA reviews and complaints about a connected call, some time after it."""
        rng = self.rng
        who = {"agent_id": agent.agent_id, "team": agent.team, "call_id": call_id}
        if rng.random() < NPS_SURVEY_P:
            score = rng.choice(NPS_HAPPY if resolved else NPS_UNHAPPY)
            self._emit(end + rng.uniform(*CALL_SURVEY_DELAY_S), "tickets", "survey.nps", {**who, "score": score})
        if rng.random() < QA_REVIEW_P:
            points = min(QA_MAX_SCORE, max(0, round(rng.gauss(QA_MEAN, QA_SD), 1)))
            review: dict[str, Any] = {**who, "score": points, "max_score": QA_MAX_SCORE}
            if rng.random() >= QA_UNCHECKED_P:
                review["compliant"] = rng.random() < QA_COMPLIANT_P
            self._emit(end + rng.uniform(*QA_DELAY_S), "tickets", "qa.scored", review)
        if rng.random() < COMPLAINT_P * (1 if resolved else 3):
            self._emit(end + rng.uniform(*COMPLAINT_DELAY_S), "tickets", "complaint.logged", who)

    def _next_call(self, agent: _Agent, end: float, idle_mean_s: float) -> None:
        idle = self.rng.expovariate(1 / idle_mean_s) * agent.scale
        if agent.extra_idle_mean_s:
            idle += self.rng.expovariate(1 / agent.extra_idle_mean_s)
        self._schedule(end + idle, _AGENT, agent.index)

    def _callback(self, customer: str, end: float, p: float) -> None:
        if self.rng.random() < p:
            delay = self.rng.lognormvariate(math.log(CALLBACK_MEDIAN_S), CALLBACK_SIGMA)
            due = end + min(CALLBACK_RANGE_S[1], max(CALLBACK_RANGE_S[0], delay))
            if due <= self.end_s:
                self.seq += 1
                heapq.heappush(self.callbacks, (due, self.seq, customer))

    def _ticket(self, t: float) -> None:
        rng = self.rng
        self._schedule(t + rng.expovariate(1 / self.ticket_gap_mean_s), _TICKET, None)
        self.n_tickets += 1
        ticket_id = f"tkt-{self.tag}-{self.n_tickets}"
        agent = rng.choice(self.desk).agent_id
        channel = rng.choice(CHANNELS)
        created = {"ticket_id": ticket_id, "customer_id": self._customer(), "channel": channel}
        self._emit(t, "tickets", "ticket.created", created)
        by = {"ticket_id": ticket_id, "agent_id": agent}
        median = CHAT_REPLY_MEDIAN_S if channel == "chat" else EMAIL_REPLY_MEDIAN_S
        at = t + min(REPLY_RANGE_S[1], max(REPLY_RANGE_S[0], rng.lognormvariate(math.log(median), REPLY_SIGMA)))
        self._emit(at, "tickets", "ticket.replied", by)
        for _ in range(MAX_EXTRA_REPLIES):
            if rng.random() >= EXTRA_REPLY_P:
                break
            at += rng.lognormvariate(math.log(FOLLOWUP_MEDIAN_S), REPLY_SIGMA)
            self._emit(at, "tickets", "ticket.replied", by)
        at += rng.lognormvariate(math.log(CLOSE_MEDIAN_S), REPLY_SIGMA)
        if rng.random() < ESCALATE_P:
            self._emit(at, "tickets", "ticket.escalated", by)
            return
        self._emit(at, "tickets", "ticket.resolved", by)
        happy = True
        if rng.random() < REOPEN_P:
            happy = False
            again = at + rng.uniform(*REOPEN_DELAY_S)
            self._emit(again, "tickets", "ticket.reopened", {"ticket_id": ticket_id})
            again += rng.lognormvariate(math.log(FOLLOWUP_MEDIAN_S), REPLY_SIGMA)
            self._emit(again, "tickets", "ticket.replied", by)
            again += rng.lognormvariate(math.log(CLOSE_MEDIAN_S), REPLY_SIGMA)
            self._emit(again, "tickets", "ticket.resolved", by)
        if rng.random() < TICKET_SURVEY_P:
            score = rng.choice(SCORES_HAPPY if happy else SCORES_UNHAPPY)
            survey = {"agent_id": agent, "score": score, "ticket_id": ticket_id}
            self._emit(at + rng.uniform(*TICKET_SURVEY_DELAY_S), "tickets", "survey.csat", survey)


def generate(*, agents: int, rate: float, duration_s: float, seed: int, start_s: float) -> Iterator[tuple[str, dict]]:
    """Yield (topic_base, event) in ts order; topic_base is 'calls' or 'tickets'.

    Event ts lie in [start_s, start_s + duration_s] (epoch seconds). `rate` is the target of events per second
    over the whole floor. `duration_s` may be `math.inf` for an endless, lazily generated stream whose memory
    stays flat. The same arguments always give the same events.
    """
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise SettingsError(f"agents is {agents!r}, must be an integer >= 1")
    if not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
        raise SettingsError(f"rate is {rate!r}, must be a number of events per second > 0")
    if not isinstance(duration_s, (int, float)) or not duration_s >= 0:
        raise SettingsError(f"duration_s is {duration_s!r}, must be a number of seconds >= 0")
    if not isinstance(start_s, (int, float)) or not math.isfinite(start_s):
        raise SettingsError(f"start_s is {start_s!r}, must be finite epoch seconds")
    return _Floor(agents, float(rate), seed, float(start_s), float(start_s) + float(duration_s)).events()


def _epoch_s(ts: float | str) -> float:
    """Epoch seconds of a ts given as a number or an RFC 3339 string."""
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp()
    return float(ts)


def _key(event: dict) -> bytes | None:
    key = event.get("agent_id") or event.get("ticket_id") or event.get("call_id")
    return key.encode() if isinstance(key, str) else None


async def produce(
    settings: Settings,
    events: Iterable[tuple[str, dict]],
    *,
    realtime: bool,
    key_by_agent: bool = True,
    on_sent: Callable[[int], None] | None = None,
    idempotent: bool = False,
) -> int:
    """Send events with aiokafka and return how many were acknowledged.

    Values are JSON via orjson, the key is the agent_id (else the ticket_id, else the call_id) as bytes. With
    realtime, events are paced by their ts relative to the first event; without, they go as fast as the broker
    takes them. With `key_by_agent` False messages carry no key. `on_sent` is called with the running total of
    acknowledged events after each acknowledged batch (and before every pause in realtime mode). `idempotent` makes
    it an idempotent acks=all producer (as `callpulse simulate` is); off, acks=1, which every Kafka-wire broker takes.
    """
    return await _send(
        settings, events, realtime=realtime, key_by_agent=key_by_agent, on_sent=on_sent, idempotent=idempotent
    )


async def _send(
    settings: Settings,
    events: Iterable[tuple[str, dict]],
    *,
    realtime: bool,
    key_by_agent: bool = True,
    on_sent: Callable[[int], None] | None = None,
    wall_clock: bool = False,
    idempotent: bool = True,
) -> int:
    """Do the work of `produce`; with `wall_clock`, realtime pacing sends each event when time.time() reaches its ts."""
    topics = {"calls": settings.topic("calls"), "tickets": settings.topic("tickets")}
    await check_kafka(settings)
    # Idempotent (acks=all): while the broker is away, batches are retried until it is back, never expired,
    # and a retry never writes a record twice. Tansu (the demo's embedded broker) has no idempotent producers:
    # there, acks=1 and plain retries; a copy a retry may write is counted once by the worker anyway.
    producer = AIOKafkaProducer(
        **kafka_options(settings),
        enable_idempotence=idempotent,
        acks="all" if idempotent else 1,
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    sent = 0
    pending: list[asyncio.Future[Any]] = []

    async def drain() -> None:
        nonlocal sent
        if pending:
            await asyncio.gather(*pending)
            sent += len(pending)
            pending.clear()
            if on_sent is not None:
                on_sent(sent)

    try:
        wall0 = ts0 = None
        for topic, event in events:
            if realtime:
                ts = _epoch_s(event["ts"])
                if wall_clock:
                    delay = ts - time.time()
                else:
                    now = loop.time()
                    if wall0 is None or ts0 is None:
                        wall0, ts0 = now, ts
                    delay = (ts - ts0) - (now - wall0)
                if delay > 0.001:
                    await drain()
                    await asyncio.sleep(delay)
            key = _key(event) if key_by_agent else None
            pending.append(await producer.send(topics[topic], orjson.dumps(event), key=key))
            if len(pending) >= _SEND_BATCH:
                await drain()
        await drain()
    finally:
        await producer.stop()
    return sent


async def run(
    settings: Settings,
    *,
    agents: int = 50,
    rate: float = 20.0,
    duration_s: float | None = None,
    seed: int = 1,
    realtime: bool = True,
    idempotent: bool = True,
) -> int:
    """Run the `callpulse simulate` command and return the number of events sent.

    With realtime, events are stamped with wall-clock time as they are sent, forever when duration_s is None;
    without realtime, a duration_s-long history ending now is sent as fast as possible.
    """
    if realtime:
        span_s = math.inf if duration_s is None else duration_s
        generate(agents=agents, rate=rate, duration_s=span_s, seed=seed, start_s=0.0)  # fail fast on bad arguments

        def live() -> Iterator[tuple[str, dict]]:
            # Started on first use, after the producer connected, so event ts track the wall clock.
            yield from generate(agents=agents, rate=rate, duration_s=span_s, seed=seed, start_s=time.time())

        return await _send(settings, live(), realtime=True, wall_clock=True, idempotent=idempotent)
    if duration_s is None:
        raise SettingsError("duration is unset, must be a number of seconds when the history is sent without realtime")
    history = generate(agents=agents, rate=rate, duration_s=duration_s, seed=seed, start_s=time.time() - duration_s)
    return await _send(settings, history, realtime=False, idempotent=idempotent)
