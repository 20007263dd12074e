"""The agent console and the widget together in real Chromium: the whole path of a handoff."""

from __future__ import annotations

import uuid

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, Response, expect

from bot.channels.web.console import CONSOLE_MODULES
from bot.channels.web.keys import DESK
from bot.runtime import Runtime
from bot.store.sql.handoffs import SqlHandoffs
from tests.browser.conftest import PageErrors
from tests.browser.test_widget import send

pytestmark = pytest.mark.rasa

PASSWORD = "console password 123"
XSS_CORPUS = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    '"><svg onload="window.__pwned = 3">',
    "javascript:window.__pwned = 4",
    '<a href="javascript:window.__pwned=5">click</a> &amp; &lt;b&gt;',
]


async def add_agent(app: web.Application, *queues: str, role: str = "agent") -> tuple[str, str]:
    agent_id = f"giulia-{uuid.uuid4().hex[:6]}"
    await app[DESK].agents.add(agent_id, "Giulia", role, list(queues), password=PASSWORD)
    return agent_id, PASSWORD


async def sign_in(page: Page, gateway: str, agent_id: str) -> None:
    await page.goto(gateway + "/agent")
    await page.locator("#login-agent").fill(agent_id)
    await page.locator("#login-password").fill(PASSWORD)
    await page.locator("form.login").locator("button[type=submit]").click()
    await expect(page.locator(".agent-name")).to_be_visible()
    await expect(page.locator("span.connection")).to_have_attribute("data-state", "open")


async def customer_waiting(customer: Page, gateway: str, text: str) -> str:
    await customer.goto(gateway + "/chat/demo")
    await send(customer, text)
    await expect(customer.locator(".triage-queue")).to_be_visible()
    return str(await customer.evaluate("window.TriageChat.state.conversationId"))


async def handoff_of(rasa_runtime: Runtime, conversation_id: str) -> str:
    found = await SqlHandoffs(rasa_runtime.store).active_for_conversation(conversation_id)
    assert found is not None
    return found.id


async def test_the_console_modules_load_as_javascript_under_the_page_csp(
    context: BrowserContext, gateway: str
) -> None:
    page = await context.new_page()
    errors = PageErrors(page)
    served: dict[str, str] = {}

    def note(response: Response) -> None:
        if "/agent/static/console/" in response.url:
            served[response.url.rsplit("/", 1)[1]] = response.headers.get("content-type", "")

    page.on("response", note)
    answer = await page.goto(gateway + "/agent")
    assert answer is not None
    assert "script-src 'self';" in answer.headers["content-security-policy"]
    await expect(page.locator("section.signin")).to_be_visible()  # main.js ran: no session yet
    assert set(served) == {module.name for module in CONSOLE_MODULES.glob("*.js")}
    assert set(served.values()) == {"text/javascript; charset=utf-8"}
    assert errors.items == []


async def test_agent_accepts_chats_both_ways_and_hands_back_to_the_bot(
    browser_pair: tuple[BrowserContext, BrowserContext],
    gateway: str,
    gateway_app: web.Application,
    rasa_runtime: Runtime,
) -> None:
    customer_ctx, agent_ctx = browser_pair
    customer = await customer_ctx.new_page()
    agent = await agent_ctx.new_page()
    customer_errors, agent_errors = PageErrors(customer), PageErrors(agent)
    conversation_id = await customer_waiting(
        customer, gateway, "ho un problema con la bolletta, voglio parlare con un operatore"
    )
    handoff_id = await handoff_of(rasa_runtime, conversation_id)
    await customer.reload()  # waiting survives a reload
    await expect(customer.locator(".triage-queue")).to_be_visible()

    agent_id, _ = await add_agent(gateway_app, "billing", "general")
    await sign_in(agent, gateway, agent_id)
    row = agent.locator(f'.waiting-row[data-handoff-id="{handoff_id}"]')
    await expect(row).to_be_visible()
    await row.locator("button.accept").click()
    workspace = agent.locator(f'.workspace[data-handoff-id="{handoff_id}"]')
    await expect(workspace.locator(".context-card")).to_be_visible()
    await expect(workspace.locator(".transcript")).to_contain_text("bolletta")
    await expect(customer.locator(".triage-notice").last).to_contain_text("Giulia")
    # any queue may take a transfer, also one this agent does not serve
    await expect(agent.locator('select.transfer-queue option[value="technical"]')).to_have_count(1)

    await agent.locator("textarea.reply-input").fill("Buongiorno, sono Giulia. Vedo la bolletta.")
    await agent.locator("textarea.reply-input").press("Enter")
    await expect(customer.locator('.triage-msg[data-sender="agent"]')).to_have_text(
        "Buongiorno, sono Giulia. Vedo la bolletta."
    )
    await send(customer, "Grazie, l'importo è doppio rispetto al solito")
    await expect(workspace.locator('.msg[data-sender="user"]').last).to_contain_text(
        "l'importo è doppio"
    )

    await agent.locator("button.release").click()
    await expect(customer.locator('.triage-msg[data-sender="bot"]').last).to_contain_text(
        "assistente virtuale"
    )
    await send(customer, "quanto devo pagare?")  # the bot is back: it asks who they are
    await expect(customer.locator('.triage-msg[data-sender="bot"]').last).to_contain_text(
        "codice cliente"
    )
    conversation = await rasa_runtime.store.conversations.get_conversation(conversation_id)
    assert conversation.state == "bot"
    assert customer_errors.items == [] and agent_errors.items == []


async def test_customer_text_is_shown_as_text_in_the_console(
    browser_pair: tuple[BrowserContext, BrowserContext],
    gateway: str,
    gateway_app: web.Application,
    rasa_runtime: Runtime,
) -> None:
    customer_ctx, agent_ctx = browser_pair
    customer = await customer_ctx.new_page()
    agent = await agent_ctx.new_page()
    agent_errors = PageErrors(agent)
    conversation_id = await customer_waiting(customer, gateway, "voglio parlare con un operatore")
    for payload in XSS_CORPUS:
        await send(customer, payload)
    await expect(customer.locator('.triage-msg[data-sender="user"]')).to_have_count(
        1 + len(XSS_CORPUS)
    )
    handoff_id = await handoff_of(rasa_runtime, conversation_id)
    agent_id, _ = await add_agent(gateway_app, "general")
    await sign_in(agent, gateway, agent_id)
    row = agent.locator(f'.waiting-row[data-handoff-id="{handoff_id}"]')
    await row.locator("button.accept").click()
    shown = agent.locator(
        f'.workspace[data-handoff-id="{handoff_id}"] .msg[data-sender="user"] .msg-text'
    )
    await expect(shown).to_have_count(1 + len(XSS_CORPUS))
    assert (await shown.all_text_contents())[1:] == XSS_CORPUS
    transcript = agent.locator(".transcript")
    assert await transcript.locator("script, img, svg, a").count() == 0
    assert await agent.evaluate("window.__pwned === undefined")
    assert await customer.evaluate("window.__pwned === undefined")
    assert agent_errors.items == []


async def test_supervisor_sees_queues_health_and_the_handoff_chart(
    browser_pair: tuple[BrowserContext, BrowserContext],
    gateway: str,
    gateway_app: web.Application,
) -> None:
    customer_ctx, agent_ctx = browser_pair
    customer = await customer_ctx.new_page()
    await customer_waiting(customer, gateway, "vorrei disdire il contratto")
    supervisor = await agent_ctx.new_page()
    errors = PageErrors(supervisor)
    agent_id, _ = await add_agent(gateway_app, role="supervisor")
    await sign_in(supervisor, gateway, agent_id)
    panel = supervisor.locator("section.supervisor")
    await expect(panel).to_be_visible()
    await expect(panel.locator('.tile[data-metric="containment_rate"]')).to_be_visible()
    await expect(panel.locator('li.health-item[data-service="rasa"].health-ok')).to_be_visible()
    bars = supervisor.locator("svg.chart-handoff-rate rect.chart-bar")
    await expect(bars.first).to_be_visible()
    assert await bars.count() >= 1
    await expect(
        supervisor.locator('svg.chart-handoff-rate g.chart-row[data-intent="cancellation"]')
    ).to_have_count(1)
    assert errors.items == []


async def test_an_agent_does_not_see_the_supervisor_view(
    browser_pair: tuple[BrowserContext, BrowserContext], gateway: str, gateway_app: web.Application
) -> None:
    _, agent_ctx = browser_pair
    page = await agent_ctx.new_page()
    agent_id, _ = await add_agent(gateway_app, "technical")
    await sign_in(page, gateway, agent_id)
    await expect(page.locator(".queue[data-queue=technical]")).to_be_visible()
    await expect(page.locator("section.supervisor")).to_be_hidden()
    assert await page.locator(".queue[data-queue=billing]").count() == 0
