"""The wallboard's queue strip, time in state and pages in a real browser against real worker and monitor processes.

The strip shows a queue with a caller waiting and the longest wait counts up between snapshots; tiles say
`BREAK · lunch · m:ss`; with 300 agents at 1280x720 the agents go on pages that rotate, and every agent is on
some page.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Browser

from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from tests.integration.test_wallboard_browser import TIMEOUT_MS, browser, produce  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.browser]
# m:ss or h:mm:ss as the page shows durations, in seconds
SECONDS_JS = "((t) => t.trim().split(':').reduce((acc, x) => acc * 60 + Number(x), 0))"


def state(agent: str, ts: float, state: str, reason: str | None = None, team: str = "north") -> dict[str, Any]:
    event = {"event_id": f"{agent}-{state}-{ts}", "type": "agent.state", "ts": round(ts, 3), "agent_id": agent,
             "team": team, "state": state}  # fmt: skip
    if reason:
        event["reason"] = reason
    return event


async def test_queue_strip_counts_the_longest_wait_up_and_tiles_show_time_in_state(
    settings: Settings,
    stack: Any,
    browser: Browser,  # noqa: F811
) -> None:
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://{settings.http_host}:{settings.http_port}/")
    await page.wait_for_selector('#conn-status[data-state="open"]')
    now = time.time()
    queued = {"event_id": "q-1", "type": "call.queued", "ts": round(now - 30, 3), "call_id": "c-1", "queue": "billing"}
    await produce(settings, [queued, state("ag-1", now - 95, "break", "lunch"), state("ag-2", now - 5, "on_call")])

    card = page.locator('.queue-card[data-queue="billing"]')
    await card.wait_for()
    longest = await card.locator('[data-kpi="longest_wait_seconds"] .kpi-value').element_handle()
    # The caller entered 30 s before `now`: the strip shows that wait, whatever the worker's start-up took.
    entered = now - 30
    await page.wait_for_function(
        f"(el) => Math.abs({SECONDS_JS}(el.textContent) - (Date.now() / 1000 - {entered})) <= 3", arg=longest
    )
    first = await longest.inner_text()
    # No event from here on: the page counts the wait up by itself between snapshots.
    await page.wait_for_function(f"([el, before]) => {SECONDS_JS}(el.textContent) > {SECONDS_JS}(before)",
                                 arg=[longest, first])  # fmt: skip
    assert await card.locator('[data-kpi="waiting"] .kpi-value').inner_text() == "1"
    line = await page.locator('.tile[data-agent="ag-1"] .tile-state').element_handle()
    since = now - 95
    await page.wait_for_function(
        f"""(el) => el.textContent.startsWith("BREAK · lunch · ")
                    && Math.abs({SECONDS_JS}(el.textContent.split(" · ")[2]) - (Date.now() / 1000 - {since})) <= 3""",
        arg=line,
    )
    assert not errors, errors


async def test_three_hundred_agents_at_1280x720_all_appear_on_some_page(
    settings: Settings,
    stack: Any,
    browser: Browser,  # noqa: F811
) -> None:
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    now = time.time()
    agents = [f"ag-{i:03d}" for i in range(300)]
    await produce(settings, [state(a, now - 60 - i, "available", team=f"team-{i // 10:02d}") for i, a in
                             enumerate(agents)])  # fmt: skip
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://{settings.http_host}:{settings.http_port}/?rotate=3")
    await page.wait_for_function("() => window.callpulseWallboard.state().agents === 300")
    pages = await page.evaluate(PAGES_JS)
    assert pages > 1
    indicator = page.locator("#page-indicator")
    await indicator.wait_for()
    # The pages turn by themselves (every 3 s here)...
    first = await page.evaluate("() => window.callpulseWallboard.state().page")
    await page.wait_for_function(f"() => window.callpulseWallboard.state().page === {(first + 1) % pages}")
    # ...and by hand (a keyboard at the screen): turn through a whole cycle, noting which agents each page shows.
    # A board that turns by itself only once an hour, so no automatic turn lands between a key and its check on a
    # busy machine (a turn by hand holds its page a full ?rotate= time, but one cycle here can take longer than 3 s).
    await page.goto(f"http://{settings.http_host}:{settings.http_port}/?rotate=3600")
    await page.wait_for_function("() => window.callpulseWallboard.state().agents === 300")
    # The page count follows the room the grid has (an alert or a queue card taking space makes pages smaller):
    # a cycle during which it changed is turned again.
    cycle = None
    for _ in range(3):
        cycle = await _cycle_by_hand(page)
        if cycle is not None:
            break
    assert cycle is not None, "the page count kept changing during three cycles by hand"
    assert cycle == set(agents)
    assert not errors, errors


PAGES_JS = "() => window.callpulseWallboard.state().pages"
# The page shown, the page count, the indicator's text and the agents whose tiles are wholly on screen, read at once.
SHOWN_JS = """() => [window.callpulseWallboard.state().page, window.callpulseWallboard.state().pages,
              document.getElementById('page-indicator').textContent,
              [...document.querySelectorAll('.tile:not(.off-page)')].filter((t) => {
                const r = t.getBoundingClientRect();
                return r.width > 0 && r.bottom <= innerHeight + 1 && r.right <= innerWidth + 1;
              }).map((t) => t.dataset.agent)]"""


async def _cycle_by_hand(page: Any) -> set[str] | None:
    """Turn through every page with → (noting the agents each shows) and back one with ←: the agents seen, or
    None when the page count changed meanwhile."""
    pages = await page.evaluate(PAGES_JS)
    seen: set[str] = set()
    visited: list[int] = []
    for _ in range(pages):
        now_page, count, label, shown = await page.evaluate(SHOWN_JS)
        if count != pages:
            return None
        assert label.startswith(f"page {now_page + 1} / {pages}"), label
        assert shown, f"page {now_page + 1} shows no agent"
        visited.append(now_page)
        seen |= set(shown)
        await page.keyboard.press("ArrowRight")
        await page.wait_for_function(
            f"""() => {{ const s = window.callpulseWallboard.state();
                         return s.page === {(now_page + 1) % pages} || s.pages !== {pages}; }}"""
        )
    if await page.evaluate(PAGES_JS) != pages:
        return None
    assert sorted(visited) == list(range(pages))
    await page.keyboard.press("ArrowLeft")
    await page.wait_for_function(f"() => window.callpulseWallboard.state().page === {visited[-1] % pages}")
    return seen
