"""The wallboard's roles in a real browser (Debian's Chromium) against a real monitor process and Redis.

A board opened with the read-only token shows the alert but no acknowledge or snooze controls; a supervisor's board
shows them, asks once for a name (kept in localStorage) and the audit log records it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright

from callpulse.embedded import EmbeddedRedis, free_port
from callpulse.settings import Settings
from tests.conftest import Stack
from tests.helpers import async_wait_for
from tests.integration.test_roles import SUPERVISOR, VIEWER, aget, firing_alert
from tests.integration.test_wallboard_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from the system package (never a downloaded one)."""
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def board_settings(redis_server: EmbeddedRedis, topic_prefix: str, stack: Stack) -> Settings:
    """A running monitor with both tokens on this test's Redis."""
    settings = Settings(
        kafka="127.0.0.1:9", redis_url=redis_server.url, topic_prefix=str(topic_prefix), http_host="127.0.0.1",
        http_port=free_port(), token=VIEWER, supervisor_token=SUPERVISOR,
    )  # fmt: skip
    stack.monitor(settings)
    return settings


async def open_board(browser: Browser, settings: Settings, token: str) -> Page:
    """The board with `token`, once the alert is in its feed and its role is known."""
    page = await browser.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"http://{settings.http_host}:{settings.http_port}/?token={token}")
    await page.wait_for_selector("li.alert")
    await page.wait_for_function("() => document.body.dataset.role")
    return page


async def test_read_only_board_shows_the_alert_without_actions(board_settings: Settings, browser: Browser) -> None:
    await firing_alert(board_settings)
    page = await open_board(browser, board_settings, VIEWER)
    assert await page.evaluate("document.body.dataset.role") == "viewer"
    assert not await page.locator("li.alert .btn-ack").is_visible()
    assert not await page.locator("li.alert .btn-snooze").is_visible()
    assert not await page.locator(".snooze-pick").is_visible()


async def test_supervisor_board_asks_a_name_once_and_the_audit_log_keeps_it(
    board_settings: Settings, browser: Browser
) -> None:
    await firing_alert(board_settings)
    page = await open_board(browser, board_settings, SUPERVISOR)
    assert await page.evaluate("document.body.dataset.role") == "supervisor"
    prompts: list[str] = []

    async def answer(dialog: Dialog) -> None:
        prompts.append(dialog.message)
        await dialog.accept("Dana")

    page.on("dialog", answer)
    await page.locator("li.alert .btn-snooze").click()
    await page.locator("li.alert .btn-ack").click()
    await page.wait_for_selector("li.alert.acknowledged")

    async def two_entries() -> list[dict[str, str]] | None:
        status, entries = await aget(board_settings, "/api/audit", SUPERVISOR)
        return entries if status == 200 and len(entries) == 2 else None

    entries = await async_wait_for(two_entries, timeout_s=10, message="the ack and the snooze in the audit log")
    assert [(e["action"], e["by"]) for e in entries] == [("ack", "supervisor:Dana"), ("snooze", "supervisor:Dana")]
    assert len(prompts) == 1, prompts
    assert await page.evaluate("localStorage.getItem('callpulse.name')") == "Dana"
