"""Unit tests of the pure KPI core: exact numbers for the stateless KPIs, FCR and first response time."""

from __future__ import annotations

from collections import Counter

import pytest

from callpulse.catalogue import CATALOGUE
from streams import kpis
from streams import windows as w
from streams.events import Event
from streams.kpis import Call, Ticket

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, ms
HOUR = 3_600_000
DAY = 24 * HOUR
LIVE_FROM = T0 - DAY  # every call below is live (counted)
KEEP_FROM = LIVE_FROM - DAY


def call(
    eid: str,
    *,
    agent: str = "a1",
    ts_ms: int = T0,
    direction: str = "inbound",
    connected: bool = True,
    handle_s: int = 0,
    resolved: bool = False,
    customer: str | None = None,
    outcome: str | None = None,
    amount: float | None = None,
) -> Event:
    return Event(
        eid,
        "call.ended",
        ts_ms,
        agent_id=agent,
        call_id=f"call-{eid}",
        direction=direction,
        connected=connected,
        handle_ms=handle_s * 1000,
        resolved=resolved,
        customer_id=customer,
        outcome=outcome,
        amount_milli=None if amount is None else round(amount * 1000),
    )


def event(eid: str, kind: str, *, agent: str | None = "a1", ts_ms: int = T0, **fields: object) -> Event:
    return Event(eid, kind, ts_ms, agent_id=agent, **fields)  # type: ignore[arg-type]


def agent_kpis(events: list[Event], agent: str = "a1") -> dict[str, float | int | None]:
    """KPI values of one agent from the stateless deltas of `events`."""
    sums = w.empty_sums()
    for e in events:
        for a, _b, fld, d in kpis.event_deltas(e):
            if a == agent:
                sums[fld] += d
    return w.kpis_from_sums(sums)


# --- stateless KPIs ----------------------------------------------------------------------


def test_sales_revenue_and_aov_count_connected_outbound_sales_only() -> None:
    events = [
        call("s1", direction="outbound", outcome="sale", amount=120.50),
        call("s2", direction="outbound", outcome="sale", amount=79.50),
        call("s3", direction="outbound", outcome="sale"),  # a sale without amount: counted, adds 0
        call("s4", direction="outbound", outcome="appointment", amount=999),  # not a sale: amount ignored
        call("s5", direction="inbound", outcome="sale", amount=500),  # inbound: no outbound sale
        call("s6", direction="outbound", connected=False, outcome="sale", amount=50),  # not connected
    ]
    values = agent_kpis(events)
    assert (values["sales"], values["revenue"], values["aov"]) == (3, 200.0, 100.0)


def test_aov_is_none_when_no_sale_carries_an_amount() -> None:
    values = agent_kpis([call("s1", direction="outbound", outcome="sale")])
    assert (values["sales"], values["revenue"], values["aov"]) == (1, 0.0, None)


def test_zero_amount_sale_counts_in_aov() -> None:
    events = [call("s1", direction="outbound", outcome="sale", amount=0), call("s2", direction="outbound",
              outcome="sale", amount=30)]  # fmt: skip
    assert agent_kpis(events)["aov"] == 15.0


def test_appointment_rate_is_appointments_over_connected_outbound() -> None:
    events = [
        call("p1", direction="outbound", outcome="appointment"),
        call("p2", direction="outbound", outcome="sale"),
        call("p3", direction="outbound"),
        call("p4", direction="outbound"),
        call("p5", direction="outbound", connected=False, outcome="appointment"),
        call("p6", direction="inbound", outcome="appointment"),
    ]
    assert agent_kpis(events)["appointment_rate"] == 0.25


def test_tickets_handled_counts_resolved_and_escalated() -> None:
    events = [
        event("t1", "ticket.resolved", ticket_id="t1"),
        event("t2", "ticket.escalated", ticket_id="t2"),
        event("t3", "ticket.replied", ticket_id="t3"),
        event("t4", "ticket.reopened", agent=None, ticket_id="t1"),
    ]
    assert agent_kpis(events)["tickets_handled"] == 2


def test_nps_is_promoters_minus_detractors_over_responses_times_100() -> None:
    scores = [10, 9, 9, 8, 7, 6, 0, 3]  # 3 promoters, 2 passives, 3 detractors... of 8
    events = [event(f"n{i}", "survey.nps", score=sc, call_id="c") for i, sc in enumerate(scores)]
    assert agent_kpis(events)["nps"] == 0.0
    events.append(event("n9", "survey.nps", score=10, call_id="c"))
    assert agent_kpis(events)["nps"] == pytest.approx(100 * (4 - 3) / 9)


def test_nps_spans_minus_100_to_100() -> None:
    assert agent_kpis([event("n1", "survey.nps", score=0, call_id="c")])["nps"] == -100.0
    assert agent_kpis([event("n1", "survey.nps", score=10, call_id="c")])["nps"] == 100.0


def test_qa_score_is_points_over_max_points_not_a_mean_of_ratios() -> None:
    events = [
        event("q1", "qa.scored", score_milli=45_000, max_score_milli=50_000, call_id="c"),  # 90 %
        event("q2", "qa.scored", score_milli=30_000, max_score_milli=100_000, call_id="c"),  # 30 %
    ]
    assert agent_kpis(events)["qa_score"] == 0.5


def test_compliance_rate_counts_only_reviews_that_say() -> None:
    events = [
        event("q1", "qa.scored", score_milli=1, max_score_milli=1, compliant=True, call_id="c"),
        event("q2", "qa.scored", score_milli=1, max_score_milli=1, compliant=True, call_id="c"),
        event("q3", "qa.scored", score_milli=1, max_score_milli=1, compliant=False, call_id="c"),
        event("q4", "qa.scored", score_milli=1, max_score_milli=1, call_id="c"),
    ]
    values = agent_kpis(events)
    assert values["compliance_rate"] == pytest.approx(2 / 3)
    assert values["qa_score"] == 1.0


def test_complaint_rate_is_complaints_over_calls_and_closed_tickets() -> None:
    events = [
        call("c1"),
        call("c2", direction="outbound"),
        call("c3", connected=False),  # not an interaction
        event("t1", "ticket.resolved", ticket_id="t1"),
        event("t2", "ticket.escalated", ticket_id="t2"),
        event("z1", "complaint.logged", call_id="c1"),
    ]
    assert agent_kpis(events)["complaint_rate"] == 0.25


def test_complaint_rate_is_none_without_interactions() -> None:
    assert agent_kpis([event("z1", "complaint.logged", call_id="c1")])["complaint_rate"] is None


def test_aht_sums_talk_hold_wrap_over_connected_calls_of_both_directions() -> None:
    events = [
        call("e1", direction="inbound", handle_s=200 + 30 + 70),
        call("e2", direction="outbound", handle_s=100 + 0 + 20),
        call("e3", direction="inbound", connected=False, handle_s=50),
        call("e4", direction="outbound", connected=False, handle_s=15),
    ]
    values = agent_kpis(events)
    assert values["aht_seconds"] == 210.0
    assert values["calls_handled"] == 2


def test_handle_time_delta_is_in_ms_at_the_calls_bucket() -> None:
    deltas = kpis.event_deltas(call("e1", ts_ms=T0 + 12_345, handle_s=300))
    b = w.bucket_of(T0 + 12_345)
    assert sorted(deltas) == [("a1", b, "h", 300_000), ("a1", b, "n", 1), ("a1", b, w.EVENTS, 1)]


def test_unconnected_call_adds_no_handle_time() -> None:
    assert kpis.event_deltas(call("e1", connected=False, handle_s=50)) == [("a1", w.bucket_of(T0), w.EVENTS, 1)]


def test_connect_rate_is_connected_outbound_over_all_outbound() -> None:
    events = [
        call("e1", direction="outbound", connected=True),
        call("e2", direction="outbound", connected=False),
        call("e3", direction="outbound", connected=False),
        call("e4", direction="outbound", connected=False),
        call("e5", direction="inbound", connected=True),
        call("e6", direction="inbound", connected=False),
    ]
    values = agent_kpis(events)
    assert values["connect_rate"] == 0.25
    assert values["dials"] == 4


def test_conversion_is_sales_over_connected_outbound() -> None:
    events = [
        call("e1", direction="outbound", outcome="sale"),
        call("e2", direction="outbound", outcome="no_sale"),
        call("e3", direction="outbound"),
        call("e4", direction="outbound", connected=False, outcome="sale"),
        call("e5", direction="inbound", outcome="sale"),
    ]
    assert agent_kpis(events)["conversion_rate"] == 1 / 3


def test_csat_is_share_of_scores_of_four_or_more() -> None:
    events = [event(f"s{i}", "survey.csat", score=score, call_id="c") for i, score in enumerate([5, 4, 3, 1])]
    assert agent_kpis(events)["csat"] == 0.5


def test_escalation_rate_is_escalated_over_resolved_or_escalated() -> None:
    events = [
        event("x1", "ticket.escalated", ticket_id="t1"),
        event("x2", "ticket.resolved", ticket_id="t2"),
        event("x3", "ticket.resolved", ticket_id="t3"),
        event("x4", "ticket.resolved", ticket_id="t4"),
        event("x5", "ticket.reopened", agent=None, ticket_id="t2"),
    ]
    assert agent_kpis(events)["escalation_rate"] == 0.25


def test_counts_are_zero_and_ratios_none_with_no_events() -> None:
    values = agent_kpis([])
    assert {k for k, v in values.items() if v is not None} == {k.key for k in CATALOGUE if not k.is_ratio}
    assert all(v == 0 for v in values.values() if v is not None)


def test_outbound_ratios_are_none_when_only_inbound_calls() -> None:
    values = agent_kpis([call("e1", direction="inbound", handle_s=90)])
    assert (values["aht_seconds"], values["connect_rate"], values["conversion_rate"], values["dials"]) == (
        90.0,
        None,
        None,
        0,
    )


def test_conversion_is_none_when_no_outbound_call_connected() -> None:
    values = agent_kpis([call("e1", direction="outbound", connected=False)])
    assert (values["connect_rate"], values["conversion_rate"], values["aht_seconds"], values["calls_handled"]) == (
        0.0,
        None,
        None,
        0,
    )


def test_events_without_agent_add_nothing() -> None:
    assert kpis.event_deltas(event("c1", "ticket.created", agent=None, ticket_id="t1")) == []


def test_agent_state_and_ticket_creation_only_mark_the_agent_as_seen() -> None:
    seen = [("a1", w.bucket_of(T0), w.EVENTS, 1)]
    assert kpis.event_deltas(event("s1", "agent.state", state="available")) == seen
    assert kpis.event_deltas(event("c1", "ticket.created", ticket_id="t1")) == seen


# --- FCR ---------------------------------------------------------------------------------


class Customer:
    """One customer's call history fed through merge/delta as the worker would, accumulating counters."""

    def __init__(self, repeat_ms: int = DAY) -> None:
        self.repeat_ms = repeat_ms
        self.calls: list[Call] = []
        self.counters: Counter[tuple[str, int, str]] = Counter()

    def arrive(self, *calls: Call) -> list[kpis.Delta]:
        new = kpis.merge_calls(self.calls, calls, KEEP_FROM)
        deltas = kpis.fcr_deltas(self.calls, new, self.repeat_ms, LIVE_FROM)
        for agent, b, fld, d in deltas:
            self.counters[(agent, b, fld)] += d
        self.calls = new
        return deltas

    def totals(self, agent: str | None = None) -> tuple[int, int]:
        """(first contacts, resolved first contacts), for one agent or all."""
        f = sum(v for (a, _b, fld), v in self.counters.items() if fld == "f" and agent in (None, a))
        r = sum(v for (a, _b, fld), v in self.counters.items() if fld == "r" and agent in (None, a))
        return f, r

    def nonzero(self) -> dict[tuple[str, int, str], int]:
        return {k: v for k, v in self.counters.items() if v}


def test_single_resolved_call_is_one_resolved_first_contact() -> None:
    c = Customer()
    c.arrive(Call(T0, "e1", "a1", True))
    assert c.nonzero() == {("a1", w.bucket_of(T0), "f"): 1, ("a1", w.bucket_of(T0), "r"): 1}


def test_single_unresolved_call_is_a_first_contact_not_resolved() -> None:
    c = Customer()
    c.arrive(Call(T0, "e1", "a1", False))
    assert c.totals() == (1, 0)


def test_repeat_contact_within_repeat_window_revokes_earlier_first_contact_credit() -> None:
    c = Customer()
    c.arrive(Call(T0, "e1", "a1", True))
    deltas = c.arrive(Call(T0 + HOUR, "e2", "a2", True))
    assert deltas == [("a1", w.bucket_of(T0), "r", -1)]
    assert c.totals() == (1, 0)


def test_repeat_contact_is_not_a_first_contact() -> None:
    c = Customer()
    c.arrive(Call(T0, "e1", "a1", False))
    c.arrive(Call(T0 + DAY - 1, "e2", "a2", True))
    assert c.totals("a2") == (0, 0)


def test_repeat_after_exactly_the_repeat_window_is_a_new_first_contact() -> None:
    c = Customer()
    c.arrive(Call(T0, "e1", "a1", True))
    c.arrive(Call(T0 + DAY, "e2", "a2", True))
    assert c.totals("a1") == (1, 1)
    assert c.totals("a2") == (1, 1)


def test_earlier_call_arriving_late_reclassifies_the_later_one() -> None:
    c = Customer()
    c.arrive(Call(T0 + HOUR, "e2", "a2", True))
    assert c.totals("a2") == (1, 1)
    deltas = c.arrive(Call(T0, "e1", "a1", True))
    assert sorted(deltas) == [
        ("a1", w.bucket_of(T0), "f", 1),
        ("a2", w.bucket_of(T0 + HOUR), "f", -1),
        ("a2", w.bucket_of(T0 + HOUR), "r", -1),
    ]
    assert c.nonzero() == {("a1", w.bucket_of(T0), "f"): 1}


def test_three_calls_chain_each_within_the_window_of_the_previous() -> None:
    c = Customer()
    c.arrive(Call(T0 + 40 * HOUR, "e3", "a3", True))
    c.arrive(Call(T0, "e1", "a1", True))
    c.arrive(Call(T0 + 20 * HOUR, "e2", "a2", True))
    # e3 is 40 h after e1 but only 20 h after e2: a repeat contact.
    assert c.nonzero() == {("a1", w.bucket_of(T0), "f"): 1}


def test_chain_broken_by_a_gap_of_the_repeat_window_starts_a_new_first_contact() -> None:
    c = Customer()
    c.arrive(Call(T0, "e1", "a1", True), Call(T0 + 20 * HOUR, "e2", "a2", True), Call(T0 + 45 * HOUR, "e3", "a3", True))
    assert c.totals("a1") == (1, 0)
    assert c.totals("a2") == (0, 0)
    assert c.totals("a3") == (1, 1)


def test_duplicate_call_collapses_by_event_id() -> None:
    c = Customer()
    c.arrive(Call(T0, "e1", "a1", True))
    assert c.arrive(Call(T0, "e1", "a1", True)) == []
    assert c.arrive(Call(T0, "e1", "a1", True), Call(T0, "e1", "a1", True)) == []
    assert c.calls == [Call(T0, "e1", "a1", True)]
    assert c.totals() == (1, 1)


def test_tie_at_equal_ts_is_broken_by_event_id_in_either_arrival_order() -> None:
    forward, backward = Customer(), Customer()
    forward.arrive(Call(T0, "e-a", "a1", True))
    forward.arrive(Call(T0, "e-b", "a2", True))
    backward.arrive(Call(T0, "e-b", "a2", True))
    backward.arrive(Call(T0, "e-a", "a1", True))
    assert forward.nonzero() == backward.nonzero() == {("a1", w.bucket_of(T0), "f"): 1}


def test_credit_goes_to_first_contacts_agent_and_bucket() -> None:
    c = Customer()
    c.arrive(Call(T0 + 25_000, "e1", "a1", True))
    c.arrive(Call(T0 + 2 * DAY, "e2", "a2", False))
    assert c.nonzero() == {
        ("a1", w.bucket_of(T0 + 25_000), "f"): 1,
        ("a1", w.bucket_of(T0 + 25_000), "r"): 1,
        ("a2", w.bucket_of(T0 + 2 * DAY), "f"): 1,
    }


def test_calls_before_live_from_contribute_nothing_but_still_make_repeats() -> None:
    c = Customer()
    c.arrive(Call(LIVE_FROM - HOUR, "e0", "a0", True), Call(LIVE_FROM + HOUR, "e1", "a1", True))
    assert c.nonzero() == {}


def test_merge_calls_prunes_calls_before_keep_from_and_sorts() -> None:
    old = [Call(T0, "e2", "a1", False)]
    merged = kpis.merge_calls(old, [Call(KEEP_FROM - 1, "e0", "a1", True), Call(T0 - 5, "e1", "a1", True)], KEEP_FROM)
    assert merged == [Call(T0 - 5, "e1", "a1", True), Call(T0, "e2", "a1", False)]


def test_fcr_marks_flag_first_and_resolved_first() -> None:
    calls = [Call(T0, "e1", "a", True), Call(T0 + HOUR, "e2", "a", True), Call(T0 + 3 * DAY, "e3", "a", True)]
    assert kpis.fcr_marks(calls, DAY) == [(True, False), (False, False), (True, True)]


def test_calls_survive_encoding_for_the_store() -> None:
    calls = [Call(T0, "e1", "a1", True), Call(T0 + 1, "e2", "a2", False)]
    assert kpis.decode_calls(kpis.encode_calls(calls)) == calls


def test_only_connected_calls_with_a_customer_take_part_in_fcr() -> None:
    assert kpis.is_fcr_call(call("e1", customer="cu1"))
    assert not kpis.is_fcr_call(call("e2", customer=None))
    assert not kpis.is_fcr_call(call("e3", customer="cu1", connected=False))


# --- first response time ------------------------------------------------------------------


def created(eid: str, ts_ms: int, ticket: str = "t1") -> Event:
    return Event(eid, "ticket.created", ts_ms, ticket_id=ticket)


def replied(eid: str, ts_ms: int, agent: str, ticket: str = "t1") -> Event:
    return Event(eid, "ticket.replied", ts_ms, agent_id=agent, ticket_id=ticket)


class TicketFeed:
    """One ticket's state fed through merge/delta as the worker would, accumulating counters."""

    def __init__(self) -> None:
        self.ticket = Ticket()
        self.counters: Counter[tuple[str, int, str]] = Counter()

    def arrive(self, *events: Event) -> list[kpis.Delta]:
        new = kpis.merge_ticket(self.ticket, events)
        deltas = kpis.ticket_deltas(self.ticket, new, LIVE_FROM)
        for agent, b, fld, d in deltas:
            self.counters[(agent, b, fld)] += d
        self.ticket = new
        return deltas

    def nonzero(self) -> dict[tuple[str, int, str], int]:
        return {k: v for k, v in self.counters.items() if v}


def test_response_time_is_attributed_to_the_replier_at_the_reply_ts() -> None:
    feed = TicketFeed()
    feed.arrive(created("c1", T0), replied("r1", T0 + 90_000, "a1"))
    assert feed.nonzero() == {("a1", w.bucket_of(T0 + 90_000), "t"): 90_000, ("a1", w.bucket_of(T0 + 90_000), "u"): 1}


def test_reply_arriving_before_created_gives_the_same_as_in_order() -> None:
    in_order, reversed_order = TicketFeed(), TicketFeed()
    in_order.arrive(created("c1", T0))
    in_order.arrive(replied("r1", T0 + 90_000, "a1"))
    reversed_order.arrive(replied("r1", T0 + 90_000, "a1"))
    reversed_order.arrive(created("c1", T0))
    assert (
        in_order.nonzero()
        == reversed_order.nonzero()
        == {
            ("a1", w.bucket_of(T0 + 90_000), "t"): 90_000,
            ("a1", w.bucket_of(T0 + 90_000), "u"): 1,
        }
    )


def test_reply_timestamped_before_created_counts_zero_seconds() -> None:
    feed = TicketFeed()
    feed.arrive(replied("r1", T0 - 5_000, "a1"))
    feed.arrive(created("c1", T0))
    assert feed.nonzero() == {("a1", w.bucket_of(T0 - 5_000), "u"): 1}


def test_reply_without_created_contributes_nothing_until_created_arrives() -> None:
    feed = TicketFeed()
    assert feed.arrive(replied("r1", T0 + 60_000, "a1")) == []
    assert sorted(feed.arrive(created("c1", T0))) == [
        ("a1", w.bucket_of(T0 + 60_000), "t", 60_000),
        ("a1", w.bucket_of(T0 + 60_000), "u", 1),
    ]


def test_earlier_reply_arriving_later_moves_the_credit_to_the_earliest_replier() -> None:
    feed = TicketFeed()
    feed.arrive(created("c1", T0), replied("r2", T0 + 300_000, "a2"))
    deltas = feed.arrive(replied("r1", T0 + 60_000, "a1"))
    assert sorted(deltas) == [
        ("a1", w.bucket_of(T0 + 60_000), "t", 60_000),
        ("a1", w.bucket_of(T0 + 60_000), "u", 1),
        ("a2", w.bucket_of(T0 + 300_000), "t", -300_000),
        ("a2", w.bucket_of(T0 + 300_000), "u", -1),
    ]
    assert feed.nonzero() == {("a1", w.bucket_of(T0 + 60_000), "t"): 60_000, ("a1", w.bucket_of(T0 + 60_000), "u"): 1}


def test_later_reply_after_the_first_changes_nothing() -> None:
    feed = TicketFeed()
    feed.arrive(created("c1", T0), replied("r1", T0 + 60_000, "a1"))
    assert feed.arrive(replied("r2", T0 + 300_000, "a2")) == []


def test_earlier_created_arriving_later_lengthens_the_response_time() -> None:
    feed = TicketFeed()
    feed.arrive(created("c2", T0), replied("r1", T0 + 60_000, "a1"))
    feed.arrive(created("c1", T0 - 40_000))
    assert feed.nonzero() == {("a1", w.bucket_of(T0 + 60_000), "t"): 100_000, ("a1", w.bucket_of(T0 + 60_000), "u"): 1}


def test_repeated_delivery_of_ticket_events_is_idempotent() -> None:
    feed = TicketFeed()
    events = (created("c1", T0), replied("r1", T0 + 60_000, "a1"))
    feed.arrive(*events)
    before = feed.ticket
    assert feed.arrive(*events) == []
    assert feed.arrive(events[1]) == []
    assert feed.ticket == before


def test_reply_ties_at_equal_ts_are_broken_by_event_id() -> None:
    one, two = TicketFeed(), TicketFeed()
    one.arrive(created("c1", T0), replied("r-b", T0 + 10_000, "a2"))
    one.arrive(replied("r-a", T0 + 10_000, "a1"))
    two.arrive(created("c1", T0), replied("r-a", T0 + 10_000, "a1"))
    two.arrive(replied("r-b", T0 + 10_000, "a2"))
    assert (
        one.nonzero()
        == two.nonzero()
        == {
            ("a1", w.bucket_of(T0 + 10_000), "t"): 10_000,
            ("a1", w.bucket_of(T0 + 10_000), "u"): 1,
        }
    )


def test_reply_before_live_from_contributes_nothing() -> None:
    feed = TicketFeed()
    assert feed.arrive(created("c1", LIVE_FROM - 60_000), replied("r1", LIVE_FROM - 1, "a1")) == []


def test_ticket_survives_encoding_for_the_store() -> None:
    t = Ticket((T0, "c1"), (T0 + 5, "r1", "a1"))
    assert kpis.decode_ticket(kpis.encode_ticket(t)) == t
    assert kpis.decode_ticket(kpis.encode_ticket(Ticket())) == Ticket()
