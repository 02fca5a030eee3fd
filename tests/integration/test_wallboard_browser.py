"""The wallboard in a real browser (Debian's Chromium driven by Playwright) against real worker and monitor processes.

Tiles appear for agents with events, turn critical on a breach, the alert shows in the feed and can be
acknowledged from the page; when the monitor goes away the page says its data is stale.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, Page, async_playwright

from callpulse.kafka import ensure_topics
from callpulse.settings import Settings
from tests.helpers import async_wait_for
from tests.integration import tracegen

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOT_COPY = Path("/tmp/callpulse-wallboard.png")
TIMEOUT_MS = 20_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from the system package (never a downloaded one)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def open_board(browser: Browser, settings: Settings) -> tuple[Page, list[str]]:
    """The wallboard page, once its websocket is live; also the list collecting the page's script errors."""
    page = await browser.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(f"http://{settings.http_host}:{settings.http_port}/")
    await page.wait_for_selector('#conn-status[data-state="open"]')
    return page, errors


def call_ended(agent: str, n: int, talk_seconds: float, *, ts: float, team: str) -> dict[str, Any]:
    return {"event_id": f"{agent}-call-{n}", "type": "call.ended", "ts": round(ts, 3), "call_id": f"{agent}-c{n}",
            "agent_id": agent, "team": team, "direction": "inbound", "connected": True,
            "talk_seconds": talk_seconds}  # fmt: skip


async def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    await tracegen.produce_raw(settings.kafka, settings.topic("calls"), [orjson.dumps(e) for e in events],
                               partitions=[i % 4 for i in range(len(events))])  # fmt: skip


async def api_snapshot(settings: Settings) -> dict[str, Any]:
    def get() -> bytes:
        url = f"http://{settings.http_host}:{settings.http_port}/api/snapshot"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read()

    return orjson.loads(await asyncio.to_thread(get))  # type: ignore[no-any-return]


async def test_tiles_turn_critical_and_the_alert_is_acknowledged_from_the_page(
    settings: Settings, stack: Any, browser: Browser, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    stack.worker(settings)
    stack.monitor(settings)
    page, errors = await open_board(browser, settings)

    now = time.time()
    teams = {"ag-ann": "north", "ag-bob": "north", "ag-cyd": "south", "ag-dee": "south"}
    normal = [call_ended(a, n, 200, ts=now - 300 + n, team=t) for a, t in teams.items() for n in range(5)]
    states = ["available", "on_call", "wrap", "break"]
    normal += [{"event_id": f"{a}-state", "type": "agent.state", "ts": round(now - 60, 3), "agent_id": a,
                "state": states[i]} for i, a in enumerate(teams)]  # fmt: skip
    await produce(settings, normal)
    for agent in teams:
        tile = await page.wait_for_selector(f'.tile[data-agent="{agent}"]')
        assert tile is not None
    await page.wait_for_function("() => document.querySelectorAll('.tile.level-ok').length === 4")
    await page.wait_for_selector('.tile[data-agent="ag-dee"] .badge[data-state="break"]')
    assert await page.locator("li.alert").count() == 0

    # ag-bob's burst of long calls: AHT (5 * 200 + 5 * 1200) / 10 = 700 s, critical (> 480).
    await produce(settings, [call_ended("ag-bob", n, 1200, ts=now - 120 + n, team="north") for n in range(5, 10)])
    await page.wait_for_selector('.tile[data-agent="ag-bob"].level-critical')
    item = page.locator("li.alert").filter(has=page.locator('.alert-scope[data-scope="agent"]', has_text="ag-bob"))
    await item.wait_for()
    alert_id = await item.get_attribute("data-alert-id")
    assert alert_id
    for agent in ("ag-ann", "ag-cyd", "ag-dee"):
        assert "level-ok" in (await page.get_attribute(f'.tile[data-agent="{agent}"]', "class") or "")
    snap = await api_snapshot(settings)
    by_id = {a["id"]: a for a in snap["alerts"]}
    assert by_id[alert_id]["agent_id"] == "ag-bob" and by_id[alert_id]["acknowledged"] is False

    await item.locator('button[data-action="ack"]').click()
    await page.wait_for_selector(f'li.alert.acknowledged[data-alert-id="{alert_id}"]')

    async def acked() -> bool:
        return {a["id"]: a for a in (await api_snapshot(settings))["alerts"]}[alert_id]["acknowledged"] is True

    await async_wait_for(acked, message="the ack in /api/snapshot")
    # still acknowledged after the next pushed snapshots (the server's truth, not just the click)
    pushes = await page.evaluate("() => window.callpulseWallboard.state().lastFreshAt")
    await page.wait_for_function(f"() => window.callpulseWallboard.state().lastFreshAt > {pushes}")
    assert "acknowledged" in (await item.get_attribute("class") or "")
    assert await item.locator('button[data-action="ack"]').is_disabled()

    state = await page.evaluate("() => window.callpulseWallboard.state()")
    assert state["connected"] is True and state["agents"] == 4, state
    assert await page.locator("#stale-banner").is_hidden()
    shot = tmp_path / "wallboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert not errors, errors


async def test_stale_banner_when_the_monitor_goes_away_and_clears_when_back(
    settings: Settings, stack: Any, browser: Browser
) -> None:
    monitor = stack.monitor(settings)
    page, errors = await open_board(browser, settings)
    await page.wait_for_function("() => window.callpulseWallboard.state().lastFreshAt > 0")
    assert await page.locator("#stale-banner").is_hidden()

    monitor.kill()
    await page.wait_for_selector("#stale-banner", state="visible")
    await page.wait_for_selector('#conn-status[data-state="reconnecting"]')
    assert "stale" in (await page.inner_text("#stale-banner"))

    stack.monitor(settings)  # same port: the page reconnects by itself
    await page.wait_for_selector('#conn-status[data-state="open"]')
    await page.wait_for_selector("#stale-banner", state="hidden")
    assert not [e for e in errors if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e], errors
