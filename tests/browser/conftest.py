"""Real headless Chromium (Debian's ``chromium``) driven by Playwright, against the real gateway.

Chromium is found at ``/usr/bin/chromium`` (``TRIAGE_TEST_CHROMIUM`` is not needed: the path is
fixed by the Debian package that ``make test`` installs). Without it the browser tests skip,
naming what is missing, unless ``TRIAGE_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bot.runtime import Runtime
from bot.web.app import make_app

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
    return make_app(rasa_runtime)


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
    """Console errors, CSP violations and dialogs a page produced (a test asserts none)."""

    def __init__(self, page: Page) -> None:
        self.items: list[str] = []
        page.on("pageerror", lambda exc: self.items.append(f"pageerror: {exc}"))
        page.on("dialog", lambda d: self.items.append(f"dialog: {d.message}"))
        page.on(
            "console",
            lambda m: self.items.append(f"console: {m.text}") if m.type == "error" else None,
        )


def texts(values: list[Any]) -> list[str]:
    return [str(v) for v in values]
