"""The KPI catalogue: every KPI callpulse computes, each declared once.

A KPI is a plain aggregation over window counters, after quix-streams' window aggregators
(`initialize` / `agg` / `result`): its numerator and denominator are sums of bucket counters
(`FIELDS`), and its value is `scale * Σnum / Σden` (or `scale * Σnum` for a count or a sum).
Because every counter is a sum, team and floor values come from summed numerators and
denominators, never from an average of averages.

Everything that lists KPIs derives from `CATALOGUE`: the settings' valid keys, rule directions
and default rules; window math (`streams.windows.kpis_from_sums`, `samples`); the snapshot and
`/metrics`; Grafana panels and Prometheus rules; the wallboard's labels and formats; the KPI
reference `docs/kpis.md`. What an event contributes to the counters lives in
`streams.kpis.event_deltas` (pure, events in, deltas out).

Adding a plain counter KPI: declare its counter in `FIELDS` (if new), its `Kpi` below, its
branch in `event_deltas` and its line in the oracle `tests/reference.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Better = Literal["higher", "lower"]
Unit = Literal["seconds", "ratio", "count", "money", "points"]
FormatName = Literal["duration", "elapsed", "percent", "integer", "money", "number"]
Board = Literal["tile", "extra", "none", "strip"]  # "strip": a queue KPI shown on the wallboard's queue strip

# How each unit is shown; one place for the wallboard, Grafana and the docs.
UNIT_FORMAT: dict[str, FormatName] = {
    "seconds": "duration",  # m:ss ("elapsed": 23m, 1.5h, for long waits)
    "ratio": "percent",  # 0.35 -> 35.0 %
    "count": "integer",
    "money": "money",  # 1234.5 -> 1,234.50 (the floor's currency)
    "points": "number",
}


@dataclass(frozen=True)
class Counter:
    """One bucket counter: a one-letter code (stored in every bucket), what it sums, and its scale.

    `milli` counters hold thousandths (milliseconds, or amounts and QA points to 0.001), so every
    counter is an integer and sums are exact in any order.
    """

    code: str
    name: str
    doc: str
    milli: bool = False


COUNTERS: tuple[Counter, ...] = (
    Counter("h", "handle_ms", "Σ talk + hold + wrap of connected call.ended, ms", milli=True),
    Counter("n", "connected", "connected call.ended, both directions"),
    Counter("d", "dials", "outbound call.ended"),
    Counter("c", "out_connected", "connected outbound call.ended"),
    Counter("s", "out_sales", 'connected outbound call.ended with outcome "sale"'),
    Counter("f", "first_contacts", "first contacts (FCR)"),
    Counter("r", "resolved_first", "first contacts resolved on first contact (FCR)"),
    Counter("t", "response_ms", "Σ first-response times of tickets, ms", milli=True),
    Counter("u", "responses", "tickets with a first response"),
    Counter("q", "csat_responses", "survey.csat responses"),
    Counter("g", "csat_good", "survey.csat with score >= 4"),
    Counter("e", "escalated", "ticket.escalated"),
    Counter("x", "closed", "ticket.resolved + ticket.escalated"),
    Counter("a", "out_appointments", 'connected outbound call.ended with outcome "appointment"'),
    Counter("v", "revenue_milli", "Σ amount of sales, thousandths", milli=True),
    Counter("p", "priced_sales", "sales that carry an amount"),
    Counter("o", "nps_responses", "survey.nps responses"),
    Counter("w", "nps_net", "survey.nps promoters (9-10) minus detractors (0-6)"),
    Counter("k", "qa_points_milli", "Σ score of qa.scored, thousandths", milli=True),
    Counter("m", "qa_max_milli", "Σ max_score of qa.scored, thousandths", milli=True),
    Counter("i", "qa_reviews", "qa.scored reviews"),
    Counter("l", "qa_compliant", "qa.scored with compliant: true"),
    Counter("j", "qa_checked", "qa.scored that carry compliant"),
    Counter("z", "complaints", "complaint.logged"),
    Counter("y", "events", "events naming the agent (an agent with none in a window has no say in team scores)"),
    Counter("ob", "out_abandoned", "outbound call.ended the dialer dropped (abandoned: true)"),
    # Time in state (streams/states.py): closed intervals in the buckets, the current one added up to now at read.
    Counter("sa", "available_ms", "time available, ms", milli=True),
    Counter("so", "on_call_ms", "time on a call, ms", milli=True),
    Counter("sw", "wrap_ms", "time in after-call work, ms", milli=True),
    Counter("sb", "break_ms", "time on a break, ms", milli=True),
    Counter("sf", "offline_ms", "time offline, ms", milli=True),
)
# A queue's buckets (streams/queues.py) hold these instead of the agents' counters.
QUEUE_COUNTERS: tuple[Counter, ...] = (
    Counter("qo", "offered", "call.queued"),
    Counter("qa", "answered", "call.answered"),
    Counter("qb", "abandoned", "call.abandoned that are not short"),
    Counter("qk", "short_abandoned", "call.abandoned within short_abandon_s of the call's entry"),
    Counter("qw", "wait_ms", "Σ wait of answered calls whose entry is known, ms", milli=True),
    Counter("qn", "waited", "answered calls whose entry is known"),
    Counter("qm", "sl_met", "answered calls with wait <= sl_threshold_s"),
    Counter("ql", "sl_base", "answered calls with a known wait + abandoned (not short) with a known wait"),
)
COUNTER_BY_NAME: dict[str, Counter] = {c.name: c for c in (*COUNTERS, *QUEUE_COUNTERS)}
FIELDS: tuple[str, ...] = tuple(c.code for c in COUNTERS)
QUEUE_FIELDS: tuple[str, ...] = tuple(c.code for c in QUEUE_COUNTERS)
# A campaign's buckets hold the agents' codes of the outbound counters it needs.
CAMPAIGN_FIELDS: tuple[str, ...] = ("ob", "c")


def code(name: str) -> str:
    """The bucket code of a counter by its name ('handle_ms' -> 'h')."""
    return COUNTER_BY_NAME[name].code


@dataclass(frozen=True)
class DefaultRule:
    """A default alert rule from the field's targets; its direction follows the KPI's `better`."""

    warning: float
    critical: float | None = None
    min_samples: int = 1
    window: str = "15m"


@dataclass(frozen=True)
class Kpi:
    """One KPI: value = scale * Σnum / Σden, or scale * Σnum when `den` is empty (a count or a sum).

    Counters kept in thousandths are turned back into units (seconds, money, points) here, so
    `scale` is only the KPI's own factor (100 for NPS).
    """

    key: str
    num: tuple[str, ...]  # counter names summed for the numerator
    den: tuple[str, ...] = ()  # counter names summed for the denominator; () for counts and sums
    scale: float = 1.0
    better: Better = "higher"
    unit: Unit = "ratio"
    short: str = ""  # tile label
    title: str = ""  # panel title
    definition: str = ""  # one sentence, for the docs
    target: str = ""  # the field's typical target, for the docs
    sample: tuple[str, ...] | None = None  # counters counting the samples (for min_samples); default den or num
    default_rule: DefaultRule | None = None
    board: Board = "extra"  # wallboard tiles: a fixed cell, a cell shown when breached, or a flag only
    headline: bool = False  # in the wallboard's header and the floor dashboard's first row
    display: FormatName | None = None  # overrides the unit's format
    _num_codes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _den_codes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _sample_codes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _divisor: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for names in (self.num, self.den):
            if len({COUNTER_BY_NAME[n].milli for n in names}) > 1:
                raise ValueError(f"KPI {self.key}: {names} mix counters in thousandths and in units")
        samples = self.sample if self.sample is not None else (self.den or self.num)
        object.__setattr__(self, "_num_codes", tuple(code(n) for n in self.num))
        object.__setattr__(self, "_den_codes", tuple(code(n) for n in self.den))
        object.__setattr__(self, "_sample_codes", tuple(code(n) for n in samples))
        num_milli = COUNTER_BY_NAME[self.num[0]].milli
        den_milli = bool(self.den) and COUNTER_BY_NAME[self.den[0]].milli
        object.__setattr__(self, "_divisor", 1000 if num_milli and not den_milli else 1)

    @property
    def num_codes(self) -> tuple[str, ...]:
        """Bucket codes summed for the numerator."""
        return self._num_codes

    @property
    def sample_codes(self) -> tuple[str, ...]:
        """Bucket codes summed for the sample count."""
        return self._sample_codes

    @property
    def is_ratio(self) -> bool:
        """True when the KPI divides by a denominator (and is then null on an empty one)."""
        return bool(self.den)

    @property
    def fmt(self) -> FormatName:
        """How the wallboard and dashboards show the value."""
        return self.display or UNIT_FORMAT[self.unit]

    @property
    def rule_direction(self) -> str:
        """The side of a threshold that is bad: 'below' when higher is better, else 'above'."""
        return "below" if self.better == "higher" else "above"

    def initialize(self) -> dict[str, int]:
        """The zeroed counters this KPI reads."""
        return dict.fromkeys((*self._num_codes, *self._den_codes, *self._sample_codes), 0)

    def agg(self, state: dict[str, int], deltas: Mapping[str, int]) -> dict[str, int]:
        """Add counter deltas (code -> delta) into `state` and return it."""
        for k in state:
            state[k] += deltas.get(k, 0)
        return state

    def result(self, sums: Mapping[str, int]) -> float | int | None:
        """The KPI from summed counters; None when the denominator is 0, counts and sums never None."""
        # Called for every KPI of every agent on each read: one counter (the usual case) is a plain lookup.
        # map(sums.get, codes, zeros) is sums.get(code, 0) per code without a Python frame per code.
        codes = self._num_codes
        num = sums.get(codes[0], 0) if len(codes) == 1 else sum(map(sums.get, codes, _ZEROS))
        if self.den:
            codes = self._den_codes
            den = sums.get(codes[0], 0) if len(codes) == 1 else sum(map(sums.get, codes, _ZEROS))
            return None if den == 0 else self.scale * num / (den * self._divisor)
        if self._divisor == 1 and self.scale == 1.0:
            return num
        return self.scale * num / self._divisor

    def samples(self, sums: Mapping[str, int]) -> int:
        """The sample count behind the value (what `min_samples` compares with)."""
        codes = self._sample_codes
        return sums.get(codes[0], 0) if len(codes) == 1 else sum(map(sums.get, codes, _ZEROS))

    @property
    def codes(self) -> frozenset[str]:
        """Every counter code the value or its sample count reads."""
        return frozenset((*self._num_codes, *self._den_codes, *self._sample_codes))


_ZEROS = itertools.repeat(0)  # the default of each sums.get in Kpi.result (map stops at the shorter iterable)

CATALOGUE: tuple[Kpi, ...] = (
    Kpi(
        "aht_seconds",
        num=("handle_ms",),
        den=("connected",),
        better="lower",
        unit="seconds",
        short="AHT",
        title="AHT",
        definition="Σ(talk + hold + wrap) / number of connected call.ended, both directions",
        target="3-6 min per call",
        default_rule=DefaultRule(360, 480, min_samples=5, window="15m"),
        board="tile",
        headline=True,
    ),
    Kpi(
        "connect_rate",
        num=("out_connected",),
        den=("dials",),
        unit="ratio",
        short="Connect",
        title="Connect rate",
        definition="connected outbound calls / all outbound calls",
        target=">= 35 %",
        default_rule=DefaultRule(0.35, 0.25, min_samples=20, window="15m"),
        board="tile",
        headline=True,
    ),
    Kpi(
        "fcr",
        num=("resolved_first",),
        den=("first_contacts",),
        short="FCR",
        title="FCR",
        definition="resolved first contacts / first contacts (repeat window, default 24 h)",
        target=">= 80 %",
        default_rule=DefaultRule(0.80, min_samples=5, window="1h"),
        board="tile",
        headline=True,
    ),
    Kpi(
        "response_seconds",
        num=("response_ms",),
        den=("responses",),
        better="lower",
        unit="seconds",
        short="Response",
        title="Response time",
        definition="mean first response time: first ticket.replied - ticket.created",
        target="leads within 1 h",
        default_rule=DefaultRule(3600, min_samples=3, window="1h"),
        board="tile",
        headline=True,
        display="elapsed",
    ),
    Kpi(
        "calls_handled",
        num=("connected",),
        unit="count",
        short="Calls",
        title="Calls handled",
        definition="connected call.ended (count)",
        target=">= 50 contacts a day",
        board="tile",
        headline=True,
    ),
    Kpi(
        "dials",
        num=("dials",),
        unit="count",
        short="Dials",
        title="Dials",
        definition="outbound call.ended (count)",
        target=">= 80 calls a day",
        board="tile",
    ),
    Kpi(
        "conversion_rate",
        num=("out_sales",),
        den=("out_connected",),
        short="Conversion",
        title="Conversion rate",
        definition='connected outbound calls with outcome "sale" / connected outbound calls',
        target=">= 4 %",
        default_rule=DefaultRule(0.04, min_samples=20, window="1h"),
    ),
    Kpi(
        "csat",
        num=("csat_good",),
        den=("csat_responses",),
        short="CSAT",
        title="CSAT",
        definition="share of survey.csat with score >= 4",
        target=">= 85 %",
        default_rule=DefaultRule(0.85, min_samples=5, window="1h"),
    ),
    Kpi(
        "escalation_rate",
        num=("escalated",),
        den=("closed",),
        better="lower",
        short="Esc",
        title="Escalation rate",
        definition="ticket.escalated / tickets the agent resolved or escalated",
        target="<= 10 %",
        default_rule=DefaultRule(0.10, min_samples=10, window="1h"),
    ),
    Kpi(
        "sales",
        num=("out_sales",),
        unit="count",
        short="Sales",
        title="Sales",
        definition='connected outbound calls with outcome "sale" (count)',
        target="set per business",
    ),
    Kpi(
        "revenue",
        num=("revenue_milli",),
        unit="money",
        short="Revenue",
        title="Revenue",
        definition="Σ amount of sales (a sale without amount adds 0)",
        target="set per business",
    ),
    Kpi(
        "aov",
        num=("revenue_milli",),
        den=("priced_sales",),
        unit="money",
        short="AOV",
        title="Average order value",
        definition="Σ amount / number of sales that carry an amount",
        target="set per business",
    ),
    Kpi(
        "appointment_rate",
        num=("out_appointments",),
        den=("out_connected",),
        short="Appt",
        title="Appointment rate",
        definition='connected outbound calls with outcome "appointment" / connected outbound calls',
    ),
    Kpi(
        "tickets_handled",
        num=("closed",),
        unit="count",
        short="Tickets",
        title="Tickets handled",
        definition="ticket.resolved + ticket.escalated (count)",
    ),
    Kpi(
        "nps",
        num=("nps_net",),
        den=("nps_responses",),
        scale=100.0,
        unit="points",
        short="NPS",
        title="NPS",
        definition="100 x (responses 9-10 - responses 0-6) / survey.nps responses; -100 ... 100",
        target=">= 50",
        default_rule=DefaultRule(50, min_samples=10, window="1h"),
    ),
    Kpi(
        "qa_score",
        num=("qa_points_milli",),
        den=("qa_max_milli",),
        sample=("qa_reviews",),
        short="QA",
        title="QA score",
        definition="Σ score / Σ max_score over qa.scored",
        target=">= 75 % (telesales), >= 90 % (service)",
        default_rule=DefaultRule(0.75, min_samples=3, window="1h"),
    ),
    Kpi(
        "compliance_rate",
        num=("qa_compliant",),
        den=("qa_checked",),
        short="Compl",
        title="Compliance rate",
        definition="qa.scored with compliant: true / qa.scored that carry compliant",
        target=">= 95 %",
        default_rule=DefaultRule(0.95, min_samples=3, window="1h"),
    ),
    Kpi(
        "complaint_rate",
        num=("complaints",),
        den=("connected", "closed"),
        better="lower",
        short="Complaints",
        title="Complaint rate",
        definition="complaint.logged / interactions (connected call.ended + ticket.resolved + ticket.escalated)",
        target="<= 5 %",
        default_rule=DefaultRule(0.05, min_samples=20, window="1h"),
    ),
    Kpi(
        "occupancy",
        num=("on_call_ms", "wrap_ms"),
        den=("available_ms", "on_call_ms", "wrap_ms"),
        short="Occ",
        title="Occupancy",
        definition="(seconds on_call + wrap) / (seconds available + on_call + wrap), from agent states",
        target="75-85 %; above 90 % burns agents out",
    ),
    Kpi(
        "outbound_abandon_rate",
        num=("out_abandoned",),
        den=("out_abandoned", "out_connected"),
        better="lower",
        short="Drop",
        title="Outbound abandonment",
        definition="outbound call.ended with abandoned: true / (those + connected outbound calls)",
        target="<= 3 % per campaign per 30 days (US TSR)",
    ),
)
BY_KEY: dict[str, Kpi] = {k.key: k for k in CATALOGUE}
KPI_KEYS: tuple[str, ...] = tuple(BY_KEY)


@dataclass(frozen=True)
class Live:
    """A value read at now rather than over a window (a queue's waiting calls); its rules watch window 'live'."""

    key: str
    better: Better = "lower"
    unit: Unit = "count"
    short: str = ""
    title: str = ""
    definition: str = ""
    target: str = ""
    default_rule: DefaultRule | None = None
    board: Board = "strip"
    headline: bool = False
    display: FormatName | None = None

    @property
    def fmt(self) -> FormatName:
        """How the wallboard and dashboards show the value."""
        return self.display or UNIT_FORMAT[self.unit]

    @property
    def rule_direction(self) -> str:
        """The side of a threshold that is bad."""
        return "below" if self.better == "higher" else "above"


# Queue KPIs (per queue and for the floor), from the queues' buckets; then the live ones.
QUEUE_CATALOGUE: tuple[Kpi, ...] = (
    Kpi("offered", num=("offered",), unit="count", short="Offered", title="Calls offered",
        definition="call.queued (count, at its ts)"),
    Kpi("answered", num=("answered",), unit="count", short="Answered", title="Calls answered",
        definition="call.answered (count, at its ts)"),
    Kpi("abandoned", num=("abandoned",), better="lower", unit="count", short="Abandoned", title="Calls abandoned",
        definition="call.abandoned that are not short (count, at its ts)"),
    Kpi("short_abandoned", num=("short_abandoned",), better="lower", unit="count", short="Short abn",
        title="Short abandons",
        definition="call.abandoned whose wait is under short_abandon_s (default 5); unknown entry = not short"),
    Kpi("asa_seconds", num=("wait_ms",), den=("waited",), better="lower", unit="seconds", short="ASA",
        title="Average speed of answer", definition="Σ wait / answered calls whose call.queued is known",
        target="<= 20-30 s", default_rule=DefaultRule(30, min_samples=10, window="15m"), board="strip"),
    Kpi("service_level", num=("sl_met",), den=("sl_base",), short="SL", title="Service level",
        definition="answered with wait <= sl_threshold_s (default 20) / (answered with a known wait + abandoned, "
        "not short, with a known wait)", target="80 % in 20 s",
        default_rule=DefaultRule(0.80, 0.60, min_samples=10, window="15m"), board="strip"),
    Kpi("abandon_rate", num=("abandoned",), den=("answered", "abandoned"), better="lower", short="Abn",
        title="Abandon rate", definition="abandoned / (answered + abandoned)", target="<= 5 %",
        default_rule=DefaultRule(0.05, 0.10, min_samples=20, window="15m"), board="strip"),
)  # fmt: skip
QUEUE_LIVE: tuple[Live, ...] = (
    Live("waiting", short="Waiting", title="Calls waiting",
         definition="calls queued within the last max_wait (default 2 h) with no answer and no abandon"),
    Live("longest_wait_seconds", unit="seconds", short="Longest", title="Longest wait",
         definition="now - the earliest entry among the waiting calls; null when none wait",
         target="alert past 60-120 s", default_rule=DefaultRule(60, 120, window="live")),
)  # fmt: skip
QUEUE_BY_KEY: dict[str, Kpi] = {k.key: k for k in QUEUE_CATALOGUE}
QUEUE_KPI_KEYS: tuple[str, ...] = (*QUEUE_BY_KEY, *(k.key for k in QUEUE_LIVE))
LIVE_KPI_KEYS: tuple[str, ...] = tuple(k.key for k in QUEUE_LIVE)
QUEUE_ALL: tuple[Kpi | Live, ...] = (*QUEUE_CATALOGUE, *QUEUE_LIVE)  # windowed, then live
# Campaign KPIs: the agents' outbound abandonment over a campaign's buckets, rolling and 24h/30d.
CAMPAIGN_CATALOGUE: tuple[Kpi, ...] = (BY_KEY["outbound_abandon_rate"],)
CAMPAIGN_KPI_KEYS: tuple[str, ...] = tuple(k.key for k in CAMPAIGN_CATALOGUE)
CAMPAIGN_DEFAULT_RULES: dict[str, DefaultRule] = {
    # US Telemarketing Sales Rule: at most 3 % of live answers dropped per campaign per 30 days.
    "outbound_abandon_rate": DefaultRule(0.03, min_samples=100, window="30d"),
}


def describe() -> list[dict[str, object]]:
    """The catalogue as JSON-ready rows for the wallboard and the API (labels, formats, directions)."""
    return [
        {
            "key": k.key,
            "short": k.short,
            "title": k.title,
            "unit": k.unit,
            "format": k.fmt,
            "better": k.better,
            "ratio": isinstance(k, Kpi) and k.is_ratio,
            "board": k.board,
            "headline": k.headline,
            "scope": scope,
            "live": isinstance(k, Live),
        }
        for scope, kpis in (("agent", CATALOGUE), ("queue", QUEUE_ALL))
        for k in kpis
    ]
