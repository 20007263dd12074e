"""Agents over the REST API and the console socket, with customers on the real chat socket."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from bot.channels.web.app import make_app
from bot.channels.web.keys import DESK
from bot.handoff.webhooks import WebhookSender
from bot.nlu.evaluation import free_port
from bot.runtime import Runtime
from tests.web.chatclient import ChatClient
from tests.web.conftest import bearer, new_agent, serve, with_own_desk

pytestmark = pytest.mark.rasa

Client = TestClient[Any, Any]
PASSWORD = "correct horse battery staple"


async def queued_customer(
    client: Client, lookup_token: str, text: str = "I want to speak to an agent"
) -> tuple[ChatClient, str]:
    """A customer on the chat socket who asked for a person; returns them and the handoff id."""
    chat = await ChatClient.open(client, lang="en")
    _, replies = await chat.say(text)
    assert any(f["type"] == "queue" for f in replies), replies
    store_conversation = chat.conversation_id
    handoffs = await client.get("/api/handoffs?queue=general", headers=bearer(lookup_token))
    rows = [
        h for h in (await handoffs.json())["handoffs"] if h["conversation_id"] == store_conversation
    ]
    assert len(rows) == 1
    return chat, rows[0]["id"]


@pytest.fixture
async def supervisor(app: web.Application) -> str:
    """A supervisor's bearer token, for lookups."""
    return (await new_agent(app, role="supervisor"))[1]


async def sign_in(client: Client, agent_id: str, password: str) -> str:
    resp = await client.post("/api/session", json={"agent_id": agent_id, "password": password})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return str(body["csrf_token"])


async def test_password_sign_in_sets_a_strict_cookie_and_needs_csrf(
    app: web.Application, client: Client
) -> None:
    agent, _ = await new_agent(app, "general", password=PASSWORD)
    wrong = await client.post("/api/session", json={"agent_id": agent.id, "password": "nope" * 3})
    assert wrong.status == 401 and (await wrong.json())["error"] == "bad_credentials"
    resp = await client.post("/api/session", json={"agent_id": agent.id, "password": PASSWORD})
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    csrf = (await resp.json())["csrf_token"]
    me = await client.get("/api/session")
    assert (await me.json())["agent"]["id"] == agent.id

    no_header = await client.put("/api/agents/me/presence", json={"presence": "away"})
    assert no_header.status == 403 and (await no_header.json())["error"] == "csrf"
    forged = await client.put(
        "/api/agents/me/presence", json={"presence": "away"}, headers={"X-CSRF-Token": "x" * 43}
    )
    assert forged.status == 403
    ok = await client.put(
        "/api/agents/me/presence", json={"presence": "away"}, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status == 200
    out = await client.delete("/api/session", headers={"X-CSRF-Token": csrf})
    assert out.status == 204
    assert (await client.get("/api/session")).status == 401


async def test_token_sign_in_and_bearer_use(app: web.Application, client: Client) -> None:
    agent, token = await new_agent(app, "billing")
    resp = await client.post("/api/session", json={"token": token})
    assert (await resp.json())["agent"]["id"] == agent.id
    client.session.cookie_jar.clear()
    queues = await (await client.get("/api/queues", headers=bearer(token))).json()
    assert [q["name"] for q in queues["queues"]] == ["billing"]
    assert {q["name"] for q in queues["transfer_queues"]} == set(app[DESK].routing.queues)
    assert (await client.get("/api/queues", headers=bearer(token + "x"))).status == 401


async def test_the_whole_path_accept_chat_transfer_close(
    app: web.Application, client: Client, supervisor: str, rasa_runtime: Runtime
) -> None:
    first, first_token = await new_agent(app, "general")
    second, second_token = await new_agent(app, "technical")
    chat, handoff_id = await queued_customer(client, supervisor)

    accepted = await client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(first_token))
    assert accepted.status == 200 and (await accepted.json())["handoff"]["agent_id"] == first.id
    joined = await chat.next(lambda f: f["type"] == "agent_joined")
    assert joined["name"] == first.name

    sent = await client.post(
        f"/api/handoffs/{handoff_id}/messages",
        json={"text": "Buongiorno, sono qui per aiutarla."},
        headers=bearer(first_token),
    )
    seq = (await sent.json())["message"]["seq"]
    got = await chat.next(lambda f: f["type"] == "message" and f["sender"] == "agent")
    assert (got["seq"], got["text"]) == (seq, "Buongiorno, sono qui per aiutarla.")

    ack, follow = await chat.say("my router is broken <b>help</b>", expect_reply=False)
    assert not [f for f in follow if f["type"] == "message" and f["sender"] == "bot"]
    detail = await (
        await client.get(f"/api/handoffs/{handoff_id}", headers=bearer(first_token))
    ).json()
    last = detail["messages"][-1]
    assert (last["seq"], last["sender"], last["text"]) == (
        ack["seq"],
        "user",
        "my router is broken <b>help</b>",
    )
    assert detail["envelope"]["customer"]["verified"] is False

    moved = await client.post(
        f"/api/handoffs/{handoff_id}/transfer",
        json={"queue": "technical", "note": "router"},
        headers=bearer(first_token),
    )
    assert moved.status == 200
    left = await chat.next(lambda f: f["type"] == "agent_left")
    assert left["reason"] == "transferred"
    queue = await chat.next(lambda f: f["type"] == "queue")
    assert queue["queue"] == "technical"

    taken = await client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(second_token))
    assert taken.status == 200
    closed = await client.post(
        f"/api/handoffs/{handoff_id}/close",
        json={"disposition": "resolved"},
        headers=bearer(second_token),
    )
    assert closed.status == 200
    assert (await chat.next(lambda f: f["type"] == "closed"))["rating_requested"] is True
    events = (
        await (await client.get(f"/api/handoffs/{handoff_id}", headers=bearer(second_token))).json()
    )["events"]
    assert [e["state"] for e in events] == ["queued", "accepted", "queued", "accepted", "closed"]
    assert [e["agent_id"] for e in events][1:] == [first.id, first.id, second.id, second.id]
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.conversation_id)
    assert conversation.state == "closed"


async def test_hand_back_to_the_bot_resumes_the_dialogue(
    app: web.Application, client: Client, supervisor: str, rasa_runtime: Runtime
) -> None:
    _, token = await new_agent(app, "general")
    chat, handoff_id = await queued_customer(client, supervisor)
    await client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(token))
    released = await client.post(
        f"/api/handoffs/{handoff_id}/release", json={"note": "answered"}, headers=bearer(token)
    )
    assert released.status == 200
    assert (await chat.next(lambda f: f["type"] == "agent_left"))["reason"] == "returned_to_bot"
    back = await chat.next(lambda f: f["type"] == "message" and f["sender"] == "bot")
    assert "virtual assistant" in back["text"]
    _, replies = await chat.say("what is my balance?")
    bot = [f for f in replies if f["type"] == "message" and f["sender"] == "bot"]
    assert bot and "customer code" in " ".join(f["text"] for f in bot).lower()
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.conversation_id)
    assert conversation.state == "bot"


async def test_two_agents_accepting_over_http_exactly_one_wins(
    app: web.Application, client: Client, supervisor: str
) -> None:
    tokens = [(await new_agent(app, "general"))[1] for _ in range(4)]
    chat, handoff_id = await queued_customer(client, supervisor)
    answers = await asyncio.gather(
        *(client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(t)) for t in tokens)
    )
    assert sorted(r.status for r in answers) == [200, 409, 409, 409]
    assert (await chat.next(lambda f: f["type"] == "agent_joined"))["name"]


async def test_an_agent_acts_only_within_their_queues_and_role(
    app: web.Application, client: Client, supervisor: str
) -> None:
    _, billing_token = await new_agent(app, "billing")
    _, general_token = await new_agent(app, "general")
    _, handoff_id = await queued_customer(client, supervisor)
    assert (
        await client.get(f"/api/handoffs/{handoff_id}", headers=bearer(billing_token))
    ).status == 403
    refused = await client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(billing_token))
    assert refused.status == 403
    # only the agent who accepted may close it
    await client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(general_token))
    _, colleague = await new_agent(app, "general")
    stolen = await client.post(
        f"/api/handoffs/{handoff_id}/close", json={"disposition": "spam"}, headers=bearer(colleague)
    )
    assert stolen.status == 409
    assert (await client.get("/api/metrics", headers=bearer(general_token))).status == 403
    bad = await client.post(
        f"/api/handoffs/{handoff_id}/close",
        json={"disposition": "whatever"},
        headers=bearer(general_token),
    )
    assert bad.status == 400


async def test_listed_handoffs_give_their_place_in_their_queue_while_waiting(
    client: Client, supervisor: str
) -> None:
    _, ahead = await queued_customer(client, supervisor)
    _, behind = await queued_customer(client, supervisor)
    listed = await (await client.get("/api/handoffs", headers=bearer(supervisor))).json()
    places = {h["id"]: (h["queue"], h["position"]) for h in listed["handoffs"]}
    assert places[behind] == ("general", places[ahead][1] + 1)
    for queue in {q for q, _ in places.values()}:  # every queue numbered from 1, as served
        in_order = [p for q, p in places.values() if q == queue]
        assert in_order == list(range(1, len(in_order) + 1))
    queues = await (await client.get("/api/queues", headers=bearer(supervisor))).json()
    shown = {h["id"]: (q["name"], h["position"]) for q in queues["queues"] for h in q["waiting"]}
    assert shown == places
    one = await (await client.get(f"/api/handoffs/{behind}", headers=bearer(supervisor))).json()
    assert one["handoff"]["position"] == places[behind][1]


async def test_listed_handoffs_have_no_position_once_they_stop_waiting(
    app: web.Application, client: Client, supervisor: str
) -> None:
    _, handoff_id = await queued_customer(client, supervisor)
    await app[DESK].request_callback(handoff_id)
    listed = await (
        await client.get("/api/handoffs?state=callback_requested", headers=bearer(supervisor))
    ).json()
    mine = [h for h in listed["handoffs"] if h["id"] == handoff_id]
    assert [(h["state"], h["position"]) for h in mine] == [("callback_requested", None)]


async def test_supervisor_metrics(app: web.Application, client: Client, supervisor: str) -> None:
    await queued_customer(client, supervisor)
    resp = await client.get("/api/metrics?hours=1", headers=bearer(supervisor))
    body = await resp.json()
    assert resp.status == 200
    general = next(q for q in body["queues"] if q["name"] == "general")
    assert general["waiting"] >= 1 and general["longest_wait_s"] >= 0
    assert 0 <= body["containment_rate"] < 1 and body["conversations"] >= 1
    rates = {r["intent"]: r for r in body["handoff_rate_by_intent"]}
    assert rates["request_human"]["handoffs"] >= 1
    assert body["health"] == {"rasa": True, "database": True}


async def console_socket(
    client: Client, app: web.Application, queue: str
) -> tuple[Any, ClientWebSocketResponse]:
    agent, _ = await new_agent(app, queue, password=PASSWORD)
    csrf = await sign_in(client, agent.id, PASSWORD)
    ws = await client.ws_connect("/agent/ws")
    return (agent, csrf), ws


async def test_offers_go_to_a_watching_available_agent_and_expire_back_in_place(
    rasa_runtime: Runtime,
) -> None:
    settings = dataclasses.replace(rasa_runtime.settings, offer_timeout_s=1.5)
    app = make_app(with_own_desk(rasa_runtime, settings))
    async with serve(app) as client:
        _, supervisor = await new_agent(app, role="supervisor")
        await queued_customer(client, supervisor)
        (agent, csrf), ws = await console_socket(client, app, "general")
        before = await (await client.get("/api/handoffs?queue=general")).json()
        order = [h["id"] for h in before["handoffs"]]
        await client.put(
            "/api/agents/me/presence",
            json={"presence": "available"},
            headers={"X-CSRF-Token": csrf},
        )
        async with asyncio.timeout(10):
            while True:
                frame = await ws.receive_json()
                if frame["type"] == "offer":
                    break
        assert frame["handoff_id"] == order[0]  # the head of the queue
        offered = await (await client.get(f"/api/handoffs/{order[0]}")).json()
        assert offered["handoff"]["state"] == "offered"
        assert offered["handoff"]["offered_to"] == agent.id
        await client.put(
            "/api/agents/me/presence", json={"presence": "away"}, headers={"X-CSRF-Token": csrf}
        )
        await asyncio.sleep(3.0)  # the offer times out and is not made again (away)
        after = await (await client.get("/api/handoffs?queue=general")).json()
        assert [h["id"] for h in after["handoffs"]][: len(order)] == order
        assert after["handoffs"][0]["state"] == "queued"
        await ws.close()


async def test_the_console_socket_needs_a_session_and_the_same_origin(
    app: web.Application, client: Client
) -> None:
    with pytest.raises(WSServerHandshakeError) as anonymous:
        await client.ws_connect("/agent/ws")
    assert anonymous.value.status == 401
    agent, _ = await new_agent(app, "general", password=PASSWORD)
    await sign_in(client, agent.id, PASSWORD)
    with pytest.raises(WSServerHandshakeError) as foreign:
        await client.ws_connect("/agent/ws", headers={"Origin": "https://evil.example"})
    assert foreign.value.status == 403


async def test_customer_messages_reach_the_accepting_agents_console(
    app: web.Application, client: Client, supervisor: str
) -> None:
    (_, csrf), ws = await console_socket(client, app, "general")
    chat, handoff_id = await queued_customer(client, supervisor)
    resp = await client.post(f"/api/handoffs/{handoff_id}/accept", headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    await chat.ws.send_json({"type": "typing", "on": True})
    await chat.say("<img src=x onerror=alert(1)>", expect_reply=False)
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while not any(f["type"] == "message" for f in seen):
            seen.append(await ws.receive_json())
    assert {"type": "typing", "handoff_id": handoff_id, "on": True} in seen
    message = next(f for f in seen if f["type"] == "message")
    assert (message["handoff_id"], message["text"]) == (handoff_id, "<img src=x onerror=alert(1)>")
    await ws.close()


def webhook_receiver(received: list[tuple[dict[str, str], bytes]]) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/crm", hook)
    return receiver


def with_webhook(runtime: Runtime, url: str, secret: str) -> web.Application:
    settings = dataclasses.replace(runtime.settings, webhook_url=url, webhook_secret=secret)
    return make_app(with_own_desk(runtime, settings))


async def drain_webhooks(app: web.Application) -> None:
    sender = app[DESK].notifier
    assert isinstance(sender, WebhookSender)
    await asyncio.wait_for(sender.drain(), 10)


async def test_handoff_events_are_posted_as_signed_webhooks(rasa_runtime: Runtime) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    async with TestServer(webhook_receiver(received)) as crm:
        secret = "webhook-secret-for-tests"
        app = with_webhook(rasa_runtime, str(crm.make_url("/crm")), secret)
        async with serve(app) as client:
            _, supervisor = await new_agent(app, role="supervisor")
            _, token = await new_agent(app, "general")
            _, handoff_id = await queued_customer(client, supervisor)
            await client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(token))
            await drain_webhooks(app)
    mine = [(h, b) for h, b in received if handoff_id.encode() in b]
    events = [json.loads(b)["event"] for _, b in mine]
    assert events == ["handoff.queued", "handoff.accepted"]
    for headers, body in mine:
        timestamp = headers["X-Triage-Timestamp"]
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        assert headers["X-Triage-Signature"] == "sha256=" + expected.hexdigest()
    queued, accepted = (json.loads(b) for _, b in mine)
    assert queued["event_id"] < accepted["event_id"]
    assert accepted["handoff"]["state"] == "accepted" and accepted["handoff"]["customer_id"] is None
    assert accepted["handoff"]["agent_id"] is not None


async def test_webhook_events_stored_while_the_receiver_is_down_reach_it_after_a_restart(
    rasa_runtime: Runtime,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/crm"
    first = with_webhook(rasa_runtime, url, "s" * 16)
    async with serve(first) as client:  # nothing listens on the port: every delivery fails
        _, supervisor = await new_agent(first, role="supervisor")
        _, token = await new_agent(first, "general")
        _, handoff_id = await queued_customer(client, supervisor)
        await client.post(f"/api/handoffs/{handoff_id}/accept", headers=bearer(token))
    received: list[tuple[dict[str, str], bytes]] = []
    async with TestServer(webhook_receiver(received), port=port):
        second = with_webhook(rasa_runtime, url, "s" * 16)  # the service after a restart
        async with serve(second):
            await drain_webhooks(second)
    events = [json.loads(b)["event"] for _, b in received if handoff_id.encode() in b]
    assert events == ["handoff.queued", "handoff.accepted"]


async def test_openapi_describes_every_api_route_and_validates(
    app: web.Application, client: Client
) -> None:
    resp = await client.get("/api/openapi.json")
    doc = await resp.json()
    validate(doc)
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and r.method != "HEAD"
    }
    assert routes == described


async def test_waiting_customers_survive_a_restart_of_the_service(
    rasa_runtime: Runtime,
) -> None:
    first_app = make_app(with_own_desk(rasa_runtime))
    async with serve(first_app) as client:
        _, supervisor = await new_agent(first_app, role="supervisor")
        customers = [await queued_customer(client, supervisor) for _ in range(2)]
        before = await (
            await client.get("/api/handoffs?queue=general", headers=bearer(supervisor))
        ).json()
    order = [h["id"] for h in before["handoffs"]]
    second_app = make_app(with_own_desk(rasa_runtime))  # a new process would rebuild exactly this
    async with serve(second_app) as client:
        after = await (
            await client.get("/api/handoffs?queue=general", headers=bearer(supervisor))
        ).json()
        assert [h["id"] for h in after["handoffs"]] == order
        for chat, handoff_id in customers:
            again = await ChatClient.open(client, resume=chat.resume_frame())
            assert again.welcome["resumed"] is True and again.welcome["state"] == "queued"
            queue = await again.next(lambda f: f["type"] == "queue")
            assert queue["position"] == order.index(handoff_id) + 1
            await again.close()


async def test_a_waiting_customer_gone_too_long_has_abandoned(rasa_runtime: Runtime) -> None:
    settings = dataclasses.replace(rasa_runtime.settings, abandon_after_s=1.0)
    app = make_app(with_own_desk(rasa_runtime, settings))
    async with serve(app) as client:
        _, supervisor = await new_agent(app, role="supervisor")
        chat, handoff_id = await queued_customer(client, supervisor)
        stays, stays_id = await queued_customer(client, supervisor)
        await chat.close()
        async with asyncio.timeout(15):
            while True:
                gone = await app[DESK].store.handoffs.get_handoff(handoff_id)
                if gone is not None and gone.state == "abandoned":
                    break
                await asyncio.sleep(0.2)
        still = await app[DESK].store.handoffs.get_handoff(stays_id)
        assert still is not None and still.state == "queued"  # connected: still waiting
        events = [e.state for e in await app[DESK].queue.events(handoff_id)]
        assert events == ["queued", "abandoned"]
        await stays.close()
