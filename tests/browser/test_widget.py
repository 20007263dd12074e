"""The embeddable chat widget in real Chromium, talking to the real gateway and Rasa."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import BrowserContext, Page, expect

from bot.channels.web.app import make_app
from bot.runtime import Runtime
from tests.browser.conftest import PageErrors
from tests.web.conftest import with_own_desk

pytestmark = pytest.mark.rasa


async def send(page: Page, text: str) -> None:
    box = page.locator("textarea.triage-input")
    await box.fill(text)
    await box.press("Enter")


async def seqs(page: Page) -> list[int]:
    values = await page.locator(".triage-msg[data-seq]").evaluate_all(
        "els => els.map(e => Number(e.dataset.seq))"
    )
    return [int(v) for v in values]


async def test_a_customer_queues_reloads_and_sees_the_history_once(
    context: BrowserContext, gateway: str, rasa_runtime: Runtime
) -> None:
    page = await context.new_page()
    errors = PageErrors(page)
    await page.goto(gateway + "/chat/demo")
    await expect(page.locator(".triage-panel")).to_be_visible()
    await expect(page.locator(".triage-messages")).to_have_attribute("aria-live", "polite")
    await send(page, "buongiorno")
    await expect(page.locator('.triage-msg[data-sender="bot"]').first).to_be_visible()
    await send(page, "vorrei parlare con un operatore")
    queue = page.locator(".triage-queue")
    await expect(queue).to_be_visible()
    await expect(queue).to_contain_text("coda")
    before = await seqs(page)
    conversation_id = await page.evaluate("window.TriageChat.state.conversationId")
    stored = [m.id for m in await rasa_runtime.store.conversations.messages(conversation_id)]
    assert before == stored

    await page.reload()
    await expect(queue).to_be_visible()
    await expect(page.locator(".triage-msg[data-seq]")).to_have_count(len(before))
    after = await seqs(page)
    assert after == before and len(set(after)) == len(after)
    assert await page.evaluate("window.TriageChat.state.conversationId") == conversation_id
    await expect(page.locator('.triage-msg[data-sender="user"]').first).to_have_text("buongiorno")
    assert errors.items == []


async def _no_content() -> web.Response:
    return web.Response(status=204)


@asynccontextmanager
async def host_and_gateway(rasa_runtime: Runtime) -> AsyncIterator[tuple[str, str]]:
    """A company's own page on another origin embedding the widget with one tag, and a
    gateway whose allow-list holds that origin."""
    where: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>'
            f'<script src="{where["gateway"]}/chat/widget.js" data-lang="en" '
            'data-title="Help desk" data-color="#8a1c1c" defer></script></head>'
            "<body><h1>Energy shop</h1></body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    host_app = web.Application()
    host_app.router.add_get("/", page)
    host_app.router.add_get("/favicon.ico", lambda _: _no_content())
    host_server = TestServer(host_app, host="127.0.0.1")
    await host_server.start_server()
    host = str(host_server.make_url("")).rstrip("/")
    settings = dataclasses.replace(rasa_runtime.settings, chat_origins=(host,))
    gateway_server = TestServer(
        make_app(with_own_desk(rasa_runtime, settings)), host="127.0.0.1"
    )
    await gateway_server.start_server()
    where["gateway"] = str(gateway_server.make_url("")).rstrip("/")
    try:
        yield host, where["gateway"]
    finally:
        await gateway_server.close()
        await host_server.close()


async def test_one_script_tag_on_another_origin_in_english_with_quick_replies(
    context: BrowserContext, rasa_runtime: Runtime
) -> None:
    async with host_and_gateway(rasa_runtime) as (host, _gateway):
        page = await context.new_page()
        errors = PageErrors(page)
        await page.goto(host + "/")
        launcher = page.locator("button.triage-launcher")
        await expect(launcher).to_have_attribute("aria-expanded", "false")
        await launcher.click()
        await expect(page.locator(".triage-title")).to_have_text("Help desk")
        await expect(page.locator("textarea.triage-input")).to_be_focused()
        await send(page, "blorf zzkq wibble")
        await expect(page.locator('.triage-msg[data-sender="bot"]')).to_have_count(1)
        await send(page, "qwxz plok")
        yes = page.locator(".triage-quick-replies button").first
        await expect(yes).to_have_text("Yes")
        await yes.click()
        queue = page.locator(".triage-queue")
        await expect(queue).to_contain_text("queue")
        await page.keyboard.press("Escape")
        await expect(page.locator(".triage-panel")).to_be_hidden()
        await expect(launcher).to_be_focused()
        assert errors.items == []
