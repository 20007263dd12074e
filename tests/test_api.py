"""The gateway's HTTP API over a real socket, with the real Rasa server behind it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.channels.web.app import make_app
from bot.readiness import Readiness
from bot.runtime import Runtime
from tests.web.conftest import with_own_desk

pytestmark = pytest.mark.rasa

AUTH = {"Authorization": "Bearer test-token"}


@pytest_asyncio.fixture
async def client(rasa_runtime: Runtime) -> AsyncIterator[TestClient[object, object]]:
    async with TestClient(TestServer(make_app(with_own_desk(rasa_runtime)))) as c:
        yield c


async def test_healthz_reports_rasa_and_database(client: TestClient[object, object]) -> None:
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ok"
    assert body["rasa"]["ready"] is True
    workers = body["rasa"]["workers"]
    assert len(workers) == len(body["rasa"]["urls"]) == 2
    assert [w["state"] for w in workers] == ["ready", "ready"]
    assert len({w["pid"] for w in workers}) == 2
    assert body["database"]["ready"] is True


class PageLinks(HTMLParser):
    """What a page links (``href``, ``src``) and whether it carries inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.links: set[str] = set()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.links |= {v for k, v in found.items() if k in ("href", "src") and v}
        if tag == "style" or "style" in found or any(k.startswith("on") for k in found):
            self.inline.append(tag)
        if tag == "script" and not found.get("src"):
            self.inline.append(tag)


async def test_the_landing_page_links_the_demo_the_console_the_api_and_health(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = PageLinks()
    page.feed(await resp.text())
    assert {"/chat/demo", "/agent", "/api/openapi.json", "/healthz"} <= page.links
    assert page.inline == []  # the CSP allows no inline script or style
    for link in page.links:  # every link leads somewhere, the stylesheet included
        assert (await client.get(link)).status == 200, link


async def test_a_turn_over_http_then_its_envelope_with_the_token(
    client: TestClient[object, object],
) -> None:
    conversation = f"api-{uuid.uuid4().hex[:8]}"
    resp = await client.post(
        f"/api/conversations/{conversation}/messages",
        json={"text": "I want to speak to an agent please", "channel": "chat"},
        headers=AUTH,
    )
    turn = await resp.json()
    assert resp.status == 200 and turn["error"] is None
    assert turn["route"] == {"kind": "queue", "name": "general"}
    handoff_id = turn["handoff_id"]
    assert handoff_id

    envelope = await client.get(f"/api/handoffs/{handoff_id}", headers=AUTH)
    body = (await envelope.json())["envelope"]
    assert envelope.status == 200
    assert body["id"] == handoff_id and body["schema_version"] == 1
    assert body["queue"] == "general" and body["reason"] == "explicit_request"
    assert body["transcript"][0]["text"] == "I want to speak to an agent please"

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-token"}):
        denied = await client.get(f"/api/handoffs/{handoff_id}", headers=headers)
        assert denied.status == 401
    in_url = await client.get(f"/api/handoffs/{handoff_id}?token=test-token")
    assert in_url.status == 401


async def test_unknown_handoff_is_404(client: TestClient[object, object]) -> None:
    resp = await client.get(f"/api/handoffs/{uuid.uuid4()}", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "bad_json"),
        (b'{"message": "hi"}', "bad_message"),
        (b'["hi"]', "bad_message"),
        (b'{"text": "hi", "language": "de"}', "bad_language"),
        (b'{"text": "hi", "channel": "fax"}', "bad_channel"),
    ],
)
async def test_malformed_requests_get_a_clear_error(
    client: TestClient[object, object], body: bytes, error: str
) -> None:
    resp = await client.post(
        "/api/conversations/malformed/messages",
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert resp.status == 400 and (await resp.json())["error"] == error


async def test_oversized_and_too_long_messages(
    client: TestClient[object, object], rasa_runtime: Runtime
) -> None:
    conversation = f"big-{uuid.uuid4().hex[:8]}"
    long_text = "bolletta " * 1200  # 10.8 kB: accepted by HTTP, refused politely by the service
    resp = await client.post(
        f"/api/conversations/{conversation}/messages", json={"text": long_text}, headers=AUTH
    )
    assert resp.status == 200 and (await resp.json())["error"] == "too_long"
    stored = await rasa_runtime.store.conversations.messages(conversation)
    assert stored[0].text == long_text and stored[0].status == "rejected"

    huge = await client.post(
        f"/api/conversations/{conversation}/messages",
        json={"text": "x" * 100_000},
        headers=AUTH,
    )
    assert huge.status == 413


async def test_healthz_is_not_ready_while_a_part_of_the_node_is_not(
    rasa_runtime: Runtime,
) -> None:
    runtime = with_own_desk(rasa_runtime)
    runtime = dataclasses.replace(runtime, readiness=Readiness())
    runtime.readiness.expect("sip")
    async with TestClient(TestServer(make_app(runtime))) as client:
        resp = await client.get("/healthz")
        body = await resp.json()
        assert (resp.status, body["status"], body["not_ready"]) == (503, "degraded", ["sip"])
        assert body["parts"] == {"rasa": True, "database": True, "sip": False}
        runtime.readiness.ready("sip")
        resp = await client.get("/healthz")
        assert resp.status == 200 and (await resp.json())["not_ready"] == []
        runtime.readiness.gone("sip")
        assert (await client.get("/healthz")).status == 503
