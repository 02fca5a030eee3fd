"""The wallboard's layout at a TV's size, measured in a real browser against a real monitor and a real Redis.

Events go through the worker's own batch path (`Processor`) into a fresh redis-server; the monitor serves the page
and the websocket. Each test reads the boxes the browser laid out and checks one geometric fact: the
"+N more queues" badge covers no queue card, a team card's breach flags stay clear of its agent count, and a tile
with a long break reason keeps its time in state whole and visible.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, Page

from callpulse.settings import Settings
from monitor.server import Monitor
from streams.processor import Record
from tests.integration.test_scoped_reads import Sender, monitor, settings  # noqa: F401
from tests.integration.test_wallboard_browser import TIMEOUT_MS, browser  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.browser]

LONG_REASON = "extended personal break requested by the shift supervisor"
# Boxes as plain numbers; a sub-pixel of rounding is not an overlap.
BOX_JS = "const box = (n) => { const r = n.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };"
EPS_PX = 0.5


def overlaps(a: list[float], b: list[float]) -> bool:
    """Whether two [left, top, right, bottom] boxes share more than a sub-pixel of area."""
    return min(a[2], b[2]) - max(a[0], b[0]) > EPS_PX and min(a[3], b[3]) - max(a[1], b[1]) > EPS_PX


def inside(inner: list[float], outer: list[float]) -> bool:
    return (inner[0] >= outer[0] - EPS_PX and inner[1] >= outer[1] - EPS_PX and inner[2] <= outer[2] + EPS_PX
            and inner[3] <= outer[3] + EPS_PX)  # fmt: skip


def agent_state(agent: str, team: str, state: str, ago_s: float, reason: str | None = None) -> dict[str, Any]:
    event = {"event_id": f"{agent}-{state}-{ago_s}", "type": "agent.state", "ts": round(time.time() - ago_s, 3),
             "agent_id": agent, "team": team, "state": state}  # fmt: skip
    if reason:
        event["reason"] = reason
    return event


def floor_of(agents: int) -> list[dict[str, Any]]:
    """`agents` available agents in teams of ten."""
    return [agent_state(f"ag-{i:03d}", f"team-{i // 10:02d}", "available", 60 + i) for i in range(agents)]


async def open_board(browser: Browser, settings: Settings, size: tuple[int, int], query: str = "") -> Page:  # noqa: F811
    page = await browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(f"http://{settings.http_host}:{settings.http_port}/{query}")
    await page.wait_for_selector('#conn-status[data-state="open"]')
    return page


STRIP_JS = f"""() => {{
  {BOX_JS}
  const strip = document.getElementById("queue-strip");
  const badge = strip.querySelector(".queue-more");
  const cards = [...strip.querySelectorAll(".queue-card")];
  const shown = cards.filter((c) => c.getClientRects().length > 0);
  return {{ strip: box(strip), states: box(strip.querySelector(".states-card")), total: cards.length,
            shown: shown.map(box), badge: badge && badge.getClientRects().length ? box(badge) : null,
            badgeText: badge ? badge.textContent : "" }};
}}"""


def check_strip(strip: dict[str, Any], queues: int) -> None:
    """No card is covered or cut: the shown ones fit whole, the badge has its own place and counts the rest."""
    assert strip["total"] == queues + 1, strip  # one card per queue and the floor's "all queues"
    assert strip["badge"] is not None, "no '+N more queues' badge with more queues than fit"
    left_off = strip["total"] - len(strip["shown"])
    assert strip["badgeText"] == f"+{left_off} more queues"
    assert strip["shown"], "not one queue card on the strip"
    assert inside(strip["badge"], strip["strip"]), strip
    for card in strip["shown"]:
        assert inside(card, strip["strip"]), f"queue card {card} cut by the strip's edge {strip['strip']}"
        assert not overlaps(strip["badge"], card), f"badge {strip['badge']} over queue card {card}"
    assert not overlaps(strip["badge"], strip["states"])


async def send_queues(sender: Sender, queues: int) -> None:
    await sender.send(*[{"event_id": f"q-{i}", "type": "call.queued", "ts": round(time.time() - 30 - i, 3),
                         "call_id": f"c-{i}", "queue": f"queue-{i:02d}"} for i in range(queues)])  # fmt: skip


async def test_more_queues_badge_sits_after_the_cards_that_fit_and_counts_the_rest(
    settings: Settings,  # noqa: F811
    monitor: Monitor,  # noqa: F811
    browser: Browser,  # noqa: F811
) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(*floor_of(20))
    await send_queues(sender, 40)
    page = await open_board(browser, settings, (1280, 720))
    await page.wait_for_function("() => document.querySelectorAll('.queue-card').length === 41")
    await page.wait_for_selector(".queue-more", state="visible")
    check_strip(await page.evaluate(STRIP_JS), 40)
    assert not page.errors  # type: ignore[attr-defined]


async def test_on_rotating_pages_the_strip_shows_the_queues_that_fit_on_every_page(
    settings: Settings,  # noqa: F811
    monitor: Monitor,  # noqa: F811
    browser: Browser,  # noqa: F811
) -> None:
    sender = Sender(settings, monitor.redis)
    await sender.send(*floor_of(300))
    await send_queues(sender, 40)
    page = await open_board(browser, settings, (1280, 720), "?rotate=3")
    await page.wait_for_function("() => window.callpulseWallboard.state().agents === 300")
    await page.wait_for_function("() => document.querySelectorAll('.queue-card').length === 41")
    await page.wait_for_selector(".queue-more", state="visible")
    assert await page.evaluate("() => window.callpulseWallboard.state().pages") > 1
    first = await page.evaluate("() => window.callpulseWallboard.state().page")
    check_strip(await page.evaluate(STRIP_JS), 40)
    # The next page (its own team cards above the agents) keeps the strip whole too.
    await page.wait_for_function(f"() => window.callpulseWallboard.state().page !== {first}")
    await page.wait_for_selector(".queue-more", state="visible")
    check_strip(await page.evaluate(STRIP_JS), 40)
    assert not page.errors  # type: ignore[attr-defined]


TEAM_JS = f"""(team) => {{
  {BOX_JS}
  const card = document.querySelector(`.team-card[data-team="${{team}}"]`);
  return {{ card: box(card), name: box(card.querySelector(".team-name")), count: box(card.querySelector(".team-count")),
            countText: card.querySelector(".team-count").textContent,
            flags: [...card.querySelectorAll(".flag")].map(box) }};
}}"""


async def send_tickets(sender: Sender, events: list[dict[str, Any]]) -> None:
    """Apply events of the `tickets` topic (surveys, tickets, QA) through the sender's Processor."""
    records = [Record("tickets", 0, sender.offset + i, None, orjson.dumps(e)) for i, e in enumerate(events)]
    sender.offset += len(events)
    await sender.processor.process(records)


def team_breaches(agent: str, team: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Calls and tickets that breach seven flag-only KPIs of the agent's team: Conversion (calls); CSAT, Esc, NPS,
    QA, Compl and Complaints (tickets)."""
    ts = round(time.time() - 60, 3)
    calls: list[dict[str, Any]] = []
    tickets: list[dict[str, Any]] = []
    for n in range(24):
        calls.append({"event_id": f"{agent}-out-{n}", "type": "call.ended", "ts": ts, "call_id": f"{agent}-o{n}",
                      "agent_id": agent, "team": team, "direction": "outbound", "connected": True, "talk_seconds": 60,
                      "campaign": "campaign-a", "outcome": "no_sale"})  # fmt: skip
        tickets += [
            {"event_id": f"{agent}-csat-{n}", "type": "survey.csat", "ts": ts, "agent_id": agent, "score": 1,
             "ticket_id": f"{agent}-t{n}"},
            {"event_id": f"{agent}-esc-{n}", "type": "ticket.escalated", "ts": ts, "ticket_id": f"{agent}-t{n}",
             "agent_id": agent},
            {"event_id": f"{agent}-nps-{n}", "type": "survey.nps", "ts": ts, "agent_id": agent, "team": team,
             "call_id": f"{agent}-o{n}", "score": 0},
            {"event_id": f"{agent}-qa-{n}", "type": "qa.scored", "ts": ts, "agent_id": agent, "team": team,
             "call_id": f"{agent}-o{n}", "score": 10, "max_score": 100, "compliant": False},
            {"event_id": f"{agent}-cmp-{n}", "type": "complaint.logged", "ts": ts, "agent_id": agent, "team": team,
             "call_id": f"{agent}-o{n}"},
        ]  # fmt: skip
    return calls, tickets


# A paged floor (300 agents at 1280x720) has the narrowest team cards.
@pytest.mark.parametrize(
    ("size", "agents"), [((1280, 720), 30), ((1280, 720), 300), ((1920, 1080), 300)],
    ids=lambda v: f"{v[0]}x{v[1]}" if isinstance(v, tuple) else f"{v}agents",
)  # fmt: skip
async def test_team_breach_flags_stay_clear_of_the_agent_count(
    settings: Settings,  # noqa: F811
    monitor: Monitor,  # noqa: F811
    browser: Browser,  # noqa: F811
    size: tuple[int, int],
    agents: int,
) -> None:
    team = "north-east-retention-and-escalations"  # sorts first: its card is on the first page
    sender = Sender(settings, monitor.redis)
    calls, tickets = team_breaches("ag-ret", team)
    await sender.send(*floor_of(agents - 1), agent_state("ag-ret", team, "available", 90), *calls)
    await send_tickets(sender, tickets)
    page = await open_board(browser, settings, size)
    await page.wait_for_function(
        "(team) => document.querySelectorAll(`.team-card[data-team='${team}'] .flag`).length === 7", arg=team
    )
    geo = await page.evaluate(TEAM_JS, team)
    assert geo["countText"] == "1 agent"
    assert inside(geo["count"], geo["card"]), f"agent count {geo['count']} outside its card {geo['card']}"
    for flag in geo["flags"]:
        assert not overlaps(flag, geo["count"]), f"breach flag {flag} over the agent count {geo['count']}"
        assert not overlaps(flag, geo["name"]), f"breach flag {flag} over the team name {geo['name']}"
        assert inside(flag, geo["card"]), f"breach flag {flag} outside its card {geo['card']}"
    for i, a in enumerate(geo["flags"]):
        assert not any(overlaps(a, b) for b in geo["flags"][i + 1 :]), geo["flags"]
    assert not page.errors  # type: ignore[attr-defined]


TILE_JS = f"""(agent) => {{
  {BOX_JS}
  const tile = document.querySelector(`.tile[data-agent="${{agent}}"]`);
  const line = tile.querySelector(".tile-state"), reason = tile.querySelector(".tile-state-reason"),
        timer = tile.querySelector(".tile-state-time");
  return {{ tile: box(tile), id: box(tile.querySelector(".tile-id")), line: box(line), timer: box(timer),
            timerVisible: timer.checkVisibility({{ opacityProperty: true, visibilityProperty: true }}),
            reasonCut: reason.scrollWidth > reason.clientWidth, ellipsis: getComputedStyle(reason).textOverflow,
            text: line.textContent, title: line.title }};
}}"""


# 300 agents at 1280x720 is a paged floor of the smallest tiles; seven breach flags leave the least room.
@pytest.mark.parametrize(
    ("agents", "flags"), [(20, 0), (300, 0), (300, 7)], ids=["20agents", "300agents", "300agents-7flags"]
)
async def test_a_long_break_reason_gives_way_and_the_time_in_state_stays_whole(
    settings: Settings,  # noqa: F811
    monitor: Monitor,  # noqa: F811
    browser: Browser,  # noqa: F811
    agents: int,
    flags: int,
) -> None:
    agent = "ag-000-long"  # in team "team-00", which sorts first: on the first page of a paged floor
    sender = Sender(settings, monitor.redis)
    await sender.send(*floor_of(agents - 1))
    if flags:
        calls, tickets = team_breaches(agent, "team-00")
        await sender.send(*calls)
        await send_tickets(sender, tickets)
    await sender.send(agent_state(agent, "team-00", "break", 125, LONG_REASON))
    page = await open_board(browser, settings, (1280, 720))
    await page.wait_for_function(f"() => window.callpulseWallboard.state().agents === {agents}")
    await page.wait_for_function(
        "([agent, flags]) => document.querySelectorAll(`.tile[data-agent='${agent}'] .flag`).length === flags && "
        "/^ · \\d+:\\d\\d$/.test(document.querySelector(`.tile[data-agent='${agent}'] .tile-state-time`).textContent)",
        arg=[agent, flags],
    )
    geo = await page.evaluate(TILE_JS, agent)
    assert geo["text"].startswith(f"BREAK · {LONG_REASON} · "), geo["text"]
    assert geo["title"] == f"BREAK · {LONG_REASON}"
    assert geo["reasonCut"] and geo["ellipsis"] == "ellipsis", geo
    assert geo["timerVisible"], geo
    assert geo["timer"][2] - geo["timer"][0] > 0, geo
    assert inside(geo["timer"], geo["line"]), f"timer {geo['timer']} cut by its state line {geo['line']}"
    assert inside(geo["timer"], geo["tile"]), f"timer {geo['timer']} cut by its tile {geo['tile']}"
    assert inside(geo["id"], geo["tile"]), f"agent id {geo['id']} cut by its tile {geo['tile']}"
    assert not page.errors  # type: ignore[attr-defined]
