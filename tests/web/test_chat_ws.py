"""The chat WebSocket protocol (docs/chat-protocol.md) against the real gateway and Rasa."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient

from bot.channels.web.app import make_app
from bot.channels.web.chat import ChatConfig, ChatConnection
from bot.channels.web.keys import CHAT_CONFIG, CHAT_LIMITER, DESK
from bot.channels.web.ratelimit import RateLimiter
from bot.live.hub import Subscription
from bot.runtime import Runtime
from tests.web.chatclient import ChatClient
from tests.web.conftest import serve, with_own_desk

pytestmark = pytest.mark.rasa

Client = TestClient[Any, Any]


async def test_a_message_is_acked_then_answered_in_order(client: Client) -> None:
    chat = await ChatClient.open(client)
    assert chat.welcome["state"] == "bot" and chat.welcome["resumed"] is False
    ack, replies = await chat.say("buongiorno")
    assert ack["type"] == "ack"
    bot = [f for f in replies if f["type"] == "message"]
    assert bot and all(f["sender"] == "bot" for f in bot)
    assert [f["seq"] for f in bot] == sorted(f["seq"] for f in bot)
    assert all(f["seq"] > ack["seq"] for f in bot)
    await chat.close()


async def test_quick_reply_payload_drives_the_dialogue(client: Client) -> None:
    chat = await ChatClient.open(client, lang="en")
    await chat.say("blorf zzkq wibble")  # nonsense: the bot asks to rephrase
    _, replies = await chat.say("qwxz plok")  # second fallback: offers a person, with buttons
    offer = [f for f in replies if f["type"] == "message" and f["buttons"]]
    assert offer, replies
    yes = offer[-1]["buttons"][0]
    assert yes["payload"] == "/affirm"
    _, replies = await chat.say(yes["title"], payload=yes["payload"])
    queue = [f for f in replies if f["type"] == "queue"]
    assert queue and queue[0]["position"] >= 1 and queue[0]["queue"] == "general"
    await chat.close()


async def test_resume_replays_history_once_and_shows_the_queue_again(
    client: Client, rasa_runtime: Runtime
) -> None:
    chat = await ChatClient.open(client)
    await chat.say("buongiorno")
    _, replies = await chat.say("vorrei parlare con un operatore")
    position = next(f for f in replies if f["type"] == "queue")["position"]
    await chat.close()

    again = await ChatClient.open(client, resume=chat.resume_frame(0))
    assert again.welcome["resumed"] is True and again.welcome["state"] == "queued"
    assert again.conversation_id == chat.conversation_id
    history = await again.next(lambda f: f["type"] == "history")
    seqs = [m["seq"] for m in history["messages"]]
    stored = await rasa_runtime.store.conversations.messages(chat.conversation_id)
    assert seqs == [m.id for m in stored] and len(seqs) == len(set(seqs))
    assert history["messages"][0]["text"] == "buongiorno"
    queue = await again.next(lambda f: f["type"] == "queue")
    assert queue["position"] <= position  # nobody overtakes a waiting customer

    partial = await ChatClient.open(client, resume=chat.resume_frame(seqs[1]))
    history = await partial.next(lambda f: f["type"] == "history")
    assert [m["seq"] for m in history["messages"]] == seqs[2:]
    await again.close()
    await partial.close()


async def test_resume_with_a_forged_token_opens_a_new_conversation(client: Client) -> None:
    chat = await ChatClient.open(client)
    forged = {**chat.resume_frame(), "token": "0" * 64}
    other = await ChatClient.open(client, resume=forged)
    assert other.welcome["resumed"] is False
    assert other.conversation_id != chat.conversation_id
    error = await other.next(lambda f: f["type"] == "error")
    assert error["code"] == "bad_resume"


async def test_a_resent_message_is_acked_again_and_processed_once(
    client: Client, rasa_runtime: Runtime
) -> None:
    chat = await ChatClient.open(client)
    frame = {"type": "message", "id": "same-id-1", "text": "buongiorno"}
    await chat.ws.send_json(frame)
    first = await chat.next(lambda f: f["type"] == "ack")
    await chat.next(lambda f: f["type"] == "message")
    await chat.ws.send_json(frame)
    second = await chat.next(lambda f: f["type"] == "ack")
    assert first["seq"] == second["seq"]
    users = [
        m
        for m in await rasa_runtime.store.conversations.messages(chat.conversation_id)
        if m.sender == "user"
    ]
    assert [m.client_id for m in users] == ["same-id-1"]


async def _count(rasa_runtime: Runtime, conversation_id: str) -> int:
    return len(await rasa_runtime.store.conversations.messages(conversation_id))


@pytest.mark.parametrize(
    ("junk", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "message", "text": "no id"}', "bad_frame"),
        ('{"type": "message", "id": "x", "text": 5}', "bad_frame"),
        ('{"type": "rating", "score": 9}', "bad_frame"),
        ('{"type": "rating", "score": 4}', "not_closed"),
        ('{"type": "hello", "v": 1}', "already_open"),
    ],
)
async def test_junk_frames_get_an_error_and_change_nothing(
    client: Client, rasa_runtime: Runtime, junk: str, code: str
) -> None:
    chat = await ChatClient.open(client)
    before = await _count(rasa_runtime, chat.conversation_id)
    await chat.ws.send_str(junk)
    error = await chat.next(lambda f: f["type"] == "error")
    assert error["code"] == code
    await chat.ws.send_json({"type": "ping"})
    assert (await chat.next(lambda f: f["type"] in ("pong", "error")))["type"] == "pong"
    assert await _count(rasa_runtime, chat.conversation_id) == before
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.conversation_id)
    assert conversation.state == "bot"


async def test_a_binary_frame_closes_with_1003(client: Client, rasa_runtime: Runtime) -> None:
    chat = await ChatClient.open(client)
    await chat.ws.send_bytes(b"\x00\x01binary")
    msg = await chat.ws.receive(timeout=10)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert chat.ws.close_code == 1003
    assert await _count(rasa_runtime, chat.conversation_id) == 0


async def test_a_one_megabyte_frame_closes_with_1009(client: Client, rasa_runtime: Runtime) -> None:
    chat = await ChatClient.open(client)
    await chat.ws.send_str(json.dumps({"type": "message", "id": "big", "text": "x" * 1_000_000}))
    msg = await chat.ws.receive(timeout=10)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert chat.ws.close_code == 1009
    assert await _count(rasa_runtime, chat.conversation_id) == 0


async def test_the_first_frame_must_be_hello(client: Client) -> None:
    ws = await client.ws_connect("/chat/ws")
    await ws.send_json({"type": "message", "id": "1", "text": "ciao"})
    error = await ws.receive_json(timeout=10)
    assert error["code"] == "hello_required"
    msg = await ws.receive(timeout=10)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == 4400


async def test_a_foreign_origin_is_refused_before_the_upgrade(client: Client) -> None:
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/chat/ws", headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    own = f"http://{client.host}:{client.port}"
    chat = await ChatClient.open(client, headers={"Origin": own})
    assert chat.welcome["type"] == "welcome"


async def test_an_allowed_origin_may_open_the_chat(rasa_runtime: Runtime) -> None:
    app = make_app(with_own_desk(rasa_runtime))
    app[CHAT_CONFIG] = ChatConfig(
        app[CHAT_CONFIG].secret, "", frozenset({"https://www.energia-demo.example"})
    )
    async with serve(app) as client:
        chat = await ChatClient.open(client, headers={"Origin": "https://www.energia-demo.example"})
        assert chat.welcome["type"] == "welcome"


async def test_too_many_messages_are_refused_and_not_stored(rasa_runtime: Runtime) -> None:
    app = make_app(with_own_desk(rasa_runtime))
    app[CHAT_LIMITER] = RateLimiter(rate_per_s=0.01, burst=3)
    async with serve(app) as client:
        chat = await ChatClient.open(client)
        results = []
        for i in range(5):
            await chat.ws.send_json({"type": "message", "id": f"r{i}", "text": " "})
            results.append(
                await chat.next(
                    lambda f, i=i: (
                        f.get("id") == f"r{i}"
                        and (f["type"] == "ack" or f.get("code") == "rate_limited")
                    )
                )
            )
        kinds = [(f["type"], f.get("code")) for f in results]
        assert kinds == [("ack", None)] * 3 + [("error", "rate_limited")] * 2
        assert all(f["retry_after_ms"] > 0 for f in results[3:])
        stored = await rasa_runtime.store.conversations.messages(chat.conversation_id)
        assert [m.client_id for m in stored if m.sender == "user"] == ["r0", "r1", "r2"]


def _identity(secret: str, sub: str, exp_offset_s: int) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + exp_offset_s}, secret, "HS256")


async def test_a_signed_identity_verifies_the_customer(rasa_runtime: Runtime) -> None:
    secret = "host-site-secret-for-tests-0123456789"
    app = make_app(with_own_desk(rasa_runtime))
    app[CHAT_CONFIG] = ChatConfig(app[CHAT_CONFIG].secret, secret, frozenset())
    async with serve(app) as client:
        await _identity_checks(client, rasa_runtime, secret)


async def _identity_checks(client: Client, rasa_runtime: Runtime, secret: str) -> None:
    chat = await ChatClient.open(client, identity=_identity(secret, "CL100001", 300))
    assert chat.welcome["verified"] is True
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.conversation_id)
    assert (conversation.customer_id, conversation.verified) == ("CL100001", True)
    _, replies = await chat.say("quanto devo pagare?")  # no identification asked: verified
    texts = " ".join(f["text"] for f in replies if f["type"] == "message")
    assert "codice cliente" not in texts.lower(), texts

    for bad in (
        _identity(secret, "CL100001", -3600),  # expired
        _identity("another-secret-entirely-0123456789", "CL100001", 300),  # forged
        _identity(secret, "CL999999", 300),  # no such customer
        "not-a-jwt",
    ):
        anonymous = await ChatClient.open(client, identity=bad)
        assert anonymous.welcome["verified"] is False
        assert (await anonymous.next(lambda f: f["type"] == "error"))["code"] == "bad_identity"

    # resuming a verified conversation with someone else's identity starts a new conversation
    other = await ChatClient.open(
        client, resume=chat.resume_frame(), identity=_identity(secret, "CL100003", 300)
    )
    assert other.conversation_id != chat.conversation_id
    assert (
        await rasa_runtime.store.conversations.get_conversation(chat.conversation_id)
    ).customer_id == ("CL100001")


async def test_leaving_the_queue_abandons_it_and_asks_for_a_rating(
    client: Client, rasa_runtime: Runtime
) -> None:
    chat = await ChatClient.open(client, lang="en")
    _, replies = await chat.say("I want to speak to an agent")
    assert any(f["type"] == "queue" for f in replies)
    await chat.ws.send_json({"type": "leave"})
    closed = await chat.next(lambda f: f["type"] == "closed")
    assert closed["rating_requested"] is True
    await chat.ws.send_json({"type": "rating", "score": 4})
    await chat.ws.send_json({"type": "ping"})
    await chat.next(lambda f: f["type"] == "pong")
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.conversation_id)
    assert (conversation.state, conversation.rating) == ("closed", 4)
    handoffs = [
        h for h in await _handoffs_of(rasa_runtime, chat.conversation_id) if h.state == "abandoned"
    ]
    assert len(handoffs) == 1 and handoffs[0].ended_at is not None


async def _handoffs_of(rasa_runtime: Runtime, conversation_id: str) -> list[Any]:
    from sqlalchemy import select

    from bot.store.sql.tables import Handoff

    async with rasa_runtime.store.session() as s:
        return list(
            await s.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id))
        )


async def test_two_tabs_of_one_conversation_both_see_the_replies(client: Client) -> None:
    first = await ChatClient.open(client)
    second = await ChatClient.open(client, resume=first.resume_frame())
    await second.next(lambda f: f["type"] == "history")
    await first.say("buongiorno")
    seen = await second.next(lambda f: f["type"] == "message" and f["sender"] == "bot")
    assert seen["text"]
    await asyncio.gather(first.close(), second.close())


class _GoneSocket:
    """A socket whose browser has gone: every send fails as aiohttp's does."""

    async def send_json(self, frame: object) -> None:
        raise ConnectionResetError("Cannot write to closing transport")


async def test_a_socket_closed_under_the_writer_ends_it_quietly(app: web.Application) -> None:
    connection = ChatConnection(
        _GoneSocket(),  # type: ignore[arg-type]
        app[DESK],
        app[CHAT_CONFIG],
        app[CHAT_LIMITER],
    )
    connection.sub = Subscription()
    connection.send({"type": "pong"})
    await asyncio.wait_for(connection._write(), 5)  # returns instead of raising
