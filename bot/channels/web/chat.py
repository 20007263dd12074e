"""The chat WebSocket (``/chat/ws``): one customer's browser tab, as in docs/chat-protocol.md.

The handler reads frames in order and processes one message at a time; everything it sends goes
through the connection's hub subscription, drained by one writer task, so acks, bot replies,
agent messages and queue updates reach the browser in the order they happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from bot.backoffice.protocol import BackOfficeUnavailable
from bot.channels.web.ratelimit import RateLimiter
from bot.conversation.identity import IdentityError, resume_token, resume_token_ok, verify_identity
from bot.conversation.state import ConversationState
from bot.conversation.turn_locks import TurnBusy
from bot.errors import BotError, Conflict, NotFound
from bot.handoff.desk import Desk, message_frame
from bot.live.hub import Frame, Subscription
from bot.store.protocols import ConversationRecord

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024
HELLO_TIMEOUT_S = 10.0
CLIENT_ID_MAX = 64
PAYLOAD_MAX = 200
CLOSE_UNSUPPORTED = 1003
CLOSE_HELLO_REQUIRED = 4400
CLOSE_RESUME = 1013  # try again: the client reconnects and resumes from its last seq
BUSY_RETRY_MS = 1000
CLIENT_TYPES = {"hello", "message", "typing", "rating", "leave", "ping"}


@dataclass(frozen=True)
class ChatConfig:
    secret: bytes
    identity_secret: str
    allowed_origins: frozenset[str]


def origin_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser: nothing ambient to abuse
        return True
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in allowed


def _error(code: str, message: str, **extra: Any) -> Frame:
    return {"type": "error", "code": code, "message": message, **extra}


class ChatConnection:
    def __init__(
        self, ws: web.WebSocketResponse, desk: Desk, config: ChatConfig, limiter: RateLimiter
    ) -> None:
        self.ws = ws
        self.desk = desk
        self.config = config
        self.limiter = limiter
        self.conversation_id: str | None = None
        self.language: str | None = None
        self.sub: Subscription | None = None
        self.recovery: asyncio.Task[int] | None = None

    def send(self, frame: Frame) -> None:
        assert self.sub is not None
        self.sub.offer(frame)

    async def run(self) -> None:
        first = await self._first_frame()
        if first is None:
            return
        await self._open(first)
        assert self.sub is not None and self.conversation_id is not None
        writer = asyncio.create_task(self._write())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self.ws.close(code=CLOSE_UNSUPPORTED, message=b"text frames only")
                    break
                if self.sub.closed.is_set():
                    break
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.desk.hub.leave_conversation(self.conversation_id, self.sub)

    async def _write(self) -> None:
        assert self.sub is not None
        while True:
            frame = await self.sub.next_frame()
            if frame is None:  # dropped (it fell behind): the widget resumes from its last_seq
                await self.ws.close(code=CLOSE_RESUME, message=b"reconnect and resume")
                return
            try:
                await self.ws.send_json(frame)
            except ConnectionResetError:  # the browser went away; the store has everything
                return

    async def _first_frame(self) -> dict[str, Any] | None:
        try:
            msg = await self.ws.receive(timeout=HELLO_TIMEOUT_S)
        except TimeoutError:
            await self.ws.close(code=CLOSE_HELLO_REQUIRED, message=b"hello required")
            return None
        if msg.type == WSMsgType.BINARY:
            await self.ws.close(code=CLOSE_UNSUPPORTED, message=b"text frames only")
            return None
        if msg.type != WSMsgType.TEXT:
            return None
        frame = _parse(msg.data)
        if frame is None or frame.get("type") != "hello":
            await self.ws.send_json(_error("hello_required", "the first frame must be hello"))
            await self.ws.close(code=CLOSE_HELLO_REQUIRED, message=b"hello required")
            return None
        return frame

    async def _open(self, hello: dict[str, Any]) -> None:
        desk = self.desk
        lang = hello.get("lang")
        self.language = lang if lang in ("it", "en") else None
        notices: list[Frame] = []
        identity = None
        raw_identity = hello.get("identity")
        if isinstance(raw_identity, str) and raw_identity:
            try:
                identity = verify_identity(raw_identity, self.config.identity_secret)
                if not await self._known_customer(identity.customer_id):
                    raise IdentityError("the identity names no known customer")
            except IdentityError as exc:
                notices.append(_error("bad_identity", str(exc)))
                identity = None
        conversation = await self._resumable(hello.get("resume"), notices)
        if (
            conversation is not None
            and identity is not None
            and conversation.customer_id not in (None, identity.customer_id)
        ):
            conversation = None  # never continue another customer's conversation
        resumed = conversation is not None
        if conversation is None:
            conversation = await desk.store.conversations.ensure_conversation(
                f"c-{uuid.uuid4().hex}", "chat", self.language
            )
        self.conversation_id = conversation.id
        if identity is not None and not conversation.verified:
            await desk.store.conversations.update_conversation(
                conversation.id, customer_id=identity.customer_id, verified=True
            )
            await self._tell_rasa_identity(conversation.id, identity.customer_id)
            conversation = await desk.store.conversations.get_conversation(conversation.id)
        self.sub = desk.hub.join_conversation(conversation.id)
        self.send(
            {
                "type": "welcome",
                "conversation_id": conversation.id,
                "token": resume_token(self.config.secret, conversation.id),
                "state": conversation.state,
                "lang": conversation.language or self.language,
                "resumed": resumed,
                "verified": conversation.verified,
            }
        )
        for notice in notices:
            self.send(notice)
        if resumed:
            last_seq = _last_seq(hello.get("resume"))
            rows = await desk.store.conversations.messages(conversation.id, after_id=last_seq)
            shown = [message_frame(m) for m in rows if m.status != "rejected" or m.sender != "user"]
            self.send({"type": "history", "messages": shown})
            for frame in await desk.status_frames(conversation.id):
                self.send(frame)
            if await desk.store.conversations.unanswered_messages(conversation.id):
                # a node died with a turn of it in flight: answer it now, not at the next pass
                self.recovery = asyncio.create_task(desk.take_up(conversation.id))

    async def _resumable(self, resume: Any, notices: list[Frame]) -> ConversationRecord | None:
        if not isinstance(resume, dict):
            return None
        conversation_id, token = resume.get("conversation_id"), resume.get("token")
        if not (isinstance(conversation_id, str) and isinstance(token, str)):
            notices.append(_error("bad_resume", "resume needs conversation_id and token"))
            return None
        if not resume_token_ok(self.config.secret, conversation_id, token):
            notices.append(_error("bad_resume", "this conversation cannot be resumed"))
            return None
        try:
            conversation = await self.desk.store.conversations.get_conversation(conversation_id)
        except NotFound:
            notices.append(_error("bad_resume", "this conversation no longer exists"))
            return None
        if conversation.state == ConversationState.CLOSED:
            return None  # a closed conversation is over: start afresh
        return conversation

    async def _known_customer(self, customer_id: str) -> bool:
        """Whether the back office knows the customer a host site signed for; when it cannot
        be asked, the signature is trusted (the host site knows its visitor)."""
        try:
            return await self.desk.back_office.find_customer(customer_id) is not None
        except BackOfficeUnavailable:
            return True

    async def _tell_rasa_identity(self, conversation_id: str, customer_id: str) -> None:
        """Rasa learns a verified identity at session start; an open session needs slots."""
        if not await self.desk.store.conversations.has_processed_messages(conversation_id):
            return
        slots: dict[str, Any] = {"customer_code": customer_id, "customer_verified": True}
        with contextlib.suppress(BackOfficeUnavailable):
            customer = await self.desk.back_office.find_customer(customer_id)
            if customer is not None and customer.name:
                slots["customer_name"] = customer.name
        with contextlib.suppress(BotError):
            await self.desk.nlu.set_slots(conversation_id, slots)

    async def _on_text(self, data: str) -> None:
        frame = _parse(data)
        if frame is None:
            self.send(_error("bad_json", "a frame must be a JSON object"))
            return
        kind = frame.get("type")
        if kind not in CLIENT_TYPES:
            self.send(_error("unknown_type", f"unknown frame type {str(kind)[:40]!r}"))
        elif kind == "hello":
            self.send(_error("already_open", "hello was already sent"))
        elif kind == "ping":
            self.send({"type": "pong"})
        elif kind == "message":
            await self._on_message(frame)
        elif kind == "typing":
            await self._on_typing(frame)
        elif kind == "rating":
            await self._on_rating(frame)
        elif kind == "leave":
            assert self.conversation_id is not None
            await self.desk.customer_leave(self.conversation_id)

    async def _on_message(self, frame: dict[str, Any]) -> None:
        assert self.conversation_id is not None
        client_id, text, payload = frame.get("id"), frame.get("text"), frame.get("payload")
        if not (isinstance(client_id, str) and 1 <= len(client_id) <= CLIENT_ID_MAX):
            self.send(_error("bad_frame", f"message needs an id of 1-{CLIENT_ID_MAX} characters"))
            return
        if not isinstance(text, str):
            self.send(_error("bad_frame", "message needs a text", id=client_id))
            return
        if payload is not None and not (isinstance(payload, str) and len(payload) <= PAYLOAD_MAX):
            self.send(_error("bad_frame", "payload must be a short string", id=client_id))
            return
        wait_s = self.limiter.take(self.conversation_id)
        if wait_s:
            self.send(
                _error(
                    "rate_limited",
                    "too many messages; the message was not stored",
                    id=client_id,
                    retry_after_ms=int(wait_s * 1000) + 1,
                )
            )
            return

        async def stored(message_id: int) -> None:
            self.send({"type": "ack", "id": client_id, "seq": message_id})

        try:
            turn = await self.desk.customer_message(
                self.conversation_id,
                text,
                channel="chat",
                language=self.language,
                client_id=client_id,
                payload=payload,
                on_stored=stored,
            )
        except TurnBusy:  # another node's turn of this conversation outlasted the wait
            self.send(
                _error(
                    "busy",
                    "the conversation is busy; the message was not stored",
                    id=client_id,
                    retry_after_ms=BUSY_RETRY_MS,
                )
            )
            return
        if turn.error in ("empty", "too_long"):
            self.send(_error(turn.error, "the message was stored but not processed", id=client_id))

    async def _on_typing(self, frame: dict[str, Any]) -> None:
        assert self.conversation_id is not None
        on = frame.get("on")
        if not isinstance(on, bool):
            self.send(_error("bad_frame", "typing needs on: true or false"))
            return
        handoff = await self.desk.queue.active_for_conversation(self.conversation_id)
        if handoff is not None and handoff.agent_id:
            self.desk.hub.to_consoles(
                {"type": "typing", "handoff_id": handoff.id, "on": on},
                queue=handoff.queue,
                agent_id=handoff.agent_id,
            )

    async def _on_rating(self, frame: dict[str, Any]) -> None:
        assert self.conversation_id is not None
        score = frame.get("score")
        if not (isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 5):
            self.send(_error("bad_frame", "score must be an integer from 1 to 5"))
            return
        try:
            await self.desk.rate(self.conversation_id, score)
        except Conflict:
            self.send(_error("not_closed", "a rating is taken when the conversation is closed"))


def _parse(data: str) -> dict[str, Any] | None:
    try:
        frame = json.loads(data)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


def _last_seq(resume: Any) -> int:
    value = resume.get("last_seq") if isinstance(resume, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
