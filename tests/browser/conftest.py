"""Real headless Chromium (Debian's ``chromium``) driven by Playwright, against the real gateway.

Chromium is found at ``/usr/bin/chromium`` (``TRIAGE_TEST_CHROMIUM`` is not needed: the path is
fixed by the Debian package that ``make test`` installs). Without it the browser tests skip,
naming what is missing, unless ``TRIAGE_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
)

from bot.channels.web.app import make_app
from bot.runtime import Runtime
from tests.web.conftest import with_own_desk

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 20_000


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        message = f"Chromium is missing ({CHROMIUM}); `make test` installs Debian's chromium"
        if os.environ.get("TRIAGE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(locale="it-IT")
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    await ctx.close()


@pytest_asyncio.fixture
async def gateway_app(rasa_runtime: Runtime) -> web.Application:
    return make_app(with_own_desk(rasa_runtime))


@pytest_asyncio.fixture
async def gateway(gateway_app: web.Application) -> AsyncIterator[str]:
    """The gateway on a real loopback port; yields its base URL."""
    server = TestServer(gateway_app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class PageErrors:
    """Console errors, CSP violations and dialogs a page produced (a test asserts none).

    The console's first ``GET /api/session`` answers 401 when nobody is signed in yet: that is
    how it learns to show the sign-in form, so that one answer is not an error.
    """

    def __init__(self, page: Page) -> None:
        self.items: list[str] = []
        page.on("pageerror", lambda exc: self.items.append(f"pageerror: {exc}"))
        page.on("dialog", lambda d: self.items.append(f"dialog: {d.message}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        if url.endswith("/api/session") and "401" in message.text:
            return
        self.items.append(f"console: {message.text} ({url})")


@pytest_asyncio.fixture
async def browser_pair(browser: Browser) -> AsyncIterator[tuple[BrowserContext, BrowserContext]]:
    """Two separate browser profiles: the customer's and the agent's."""
    customer = await browser.new_context(locale="it-IT")
    agent = await browser.new_context(locale="it-IT")
    for ctx in (customer, agent):
        ctx.set_default_timeout(TIMEOUT_MS)
    yield customer, agent
    await customer.close()
    await agent.close()
