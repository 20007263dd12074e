"""``ConversationService``: one customer message in, the bot's replies out, on any channel.

Order of work for every message, and why:
1. store it as received (before anything can fail, so nothing the customer said is lost);
2. reject what cannot be processed (empty, too long, not text) with a polite reply;
3. fix the conversation's language the first time there is evidence, and tell Rasa;
4. run the turn through Rasa; if Rasa is down or slow, say so politely and keep the message
   marked ``failed`` so the conversation can go on when Rasa is back.
While the conversation waits for or talks with a person (``queued``, ``with_agent``), a message
is stored and marked ``relayed`` instead: the bot stays out of it. A message that carries a
channel's ``client_id`` already stored is not processed again (a resend after a reconnect).
Messages of one conversation are handled one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.core.language import detect_language
from bot.core.redaction import redact
from bot.core.routing import Route, RouteKind, RoutingTable
from bot.errors import NluUnavailable
from bot.nlu.client import BotReply, Entity, NluClient
from bot.store.sql import SqlStore, utcnow
from bot.store.tables import Message

log = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "it"

SYSTEM_TEXTS = {
    "empty": {
        "it": "Non ho ricevuto alcun testo. Mi scriva pure la sua richiesta.",
        "en": "I did not receive any text. Please type your request.",
    },
    "too_long": {
        "it": "Il messaggio è troppo lungo (massimo {limit} caratteri). Può riassumerlo?",
        "en": "Your message is too long (at most {limit} characters). Could you shorten it?",
    },
    "nlu_unavailable": {
        "it": "Mi scusi, ho un problema tecnico momentaneo. Il suo messaggio è stato registrato: "
        "riprovi tra qualche istante.",
        "en": "Sorry, I am having a temporary technical problem. Your message has been saved: "
        "please try again in a moment.",
    },
}


@dataclass(frozen=True)
class TurnResult:
    conversation_id: str
    message_id: int
    language: str
    replies: tuple[BotReply, ...]
    intent: str | None = None
    confidence: float = 0.0
    entities: tuple[Entity, ...] = ()
    route: Route | None = None
    handoff_id: str | None = None
    error: str | None = None  # empty | too_long | nlu_unavailable
    slots: dict[str, Any] = field(default_factory=dict)
    stored: Message | None = None  # the customer's message as stored (masked)
    stored_replies: tuple[Message, ...] = ()  # the replies as stored, in order
    relayed: bool = False  # stored for the person handling the conversation; no bot turn
    duplicate: bool = False  # this client_id was already stored; nothing was done again


def clean_text(raw: str) -> str:
    """Drop control and format characters (keeping line breaks and tabs as spaces)."""
    kept = []
    for ch in raw:
        if ch in "\n\t\r":
            kept.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kept.append(ch)
    return " ".join("".join(kept).split())


class ConversationService:
    def __init__(
        self, store: SqlStore, nlu: NluClient, routing: RoutingTable, max_message_chars: int
    ) -> None:
        self.store = store
        self.nlu = nlu
        self.routing = routing
        self.max_message_chars = max_message_chars
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock

    async def handle(
        self,
        conversation_id: str,
        text: str,
        *,
        channel: str,
        language: str | None = None,
        client_id: str | None = None,
        payload: str | None = None,
        on_stored: Callable[[int], Awaitable[None]] | None = None,
    ) -> TurnResult:
        """Process one customer message; never raises for bad input or an unavailable Rasa.

        ``payload`` is what a quick-reply button sends to the NLU (``/affirm``) while ``text``
        (its title) is what the transcript shows. ``on_stored`` runs once the message is
        durable, before the turn (a chat channel acknowledges it there).
        """
        lock = self._lock(conversation_id)
        async with lock:
            return await self._handle(
                conversation_id, text, channel, language, client_id, payload, on_stored
            )

    async def _handle(
        self,
        conversation_id: str,
        raw: str,
        channel: str,
        language: str | None,
        client_id: str | None,
        payload: str | None,
        on_stored: Callable[[int], Awaitable[None]] | None = None,
    ) -> TurnResult:
        started = utcnow()
        conversation = await self.store.ensure_conversation(conversation_id, channel)
        # stored masked (cards, IBANs, tax codes, phones, e-mails); the turn sees the raw text
        row, created = await self.store.add_message_once(
            conversation_id, "user", redact(raw), client_id=client_id
        )
        message_id = row.id
        if on_stored is not None:
            await on_stored(message_id)
        if not created:
            return TurnResult(
                conversation_id,
                message_id,
                conversation.language or DEFAULT_LANGUAGE,
                (),
                duplicate=True,
            )
        if conversation.state in ("queued", "with_agent"):
            await self.store.mark_message(message_id, "relayed")
            return TurnResult(
                conversation_id,
                message_id,
                conversation.language or DEFAULT_LANGUAGE,
                (),
                relayed=True,
                stored=row,
            )
        if conversation.state == "closed":  # the customer writes again: the bot takes it
            await self.store.update_conversation(conversation_id, state="bot", closed_at=None)
        text = clean_text(raw)
        lang = conversation.language
        if lang is None:
            lang = language or detect_language(text)
            if lang is not None:
                await self.store.update_conversation(conversation_id, language=lang)
        reply_lang = lang or DEFAULT_LANGUAGE

        if not text or len(text) > self.max_message_chars:
            error = "empty" if not text else "too_long"
            await self.store.mark_message(message_id, "rejected")
            return await self._system_reply(conversation_id, message_id, reply_lang, error)

        try:
            decided_now = lang is not None and conversation.language is None
            if decided_now and await self.store.has_processed_messages(conversation_id):
                # an earlier message had no language evidence: Rasa's session has the default
                await self.nlu.set_slots(conversation_id, {"language": lang})
            metadata = {"language": reply_lang, "channel": channel}
            nlu_text = payload if payload and payload.startswith("/") else text
            output = await self.nlu.turn(conversation_id, nlu_text, metadata)
        except NluUnavailable as exc:
            log.warning("NLU unavailable; message kept", extra={"error": str(exc)})
            await self.store.mark_message(message_id, "failed")
            return await self._system_reply(
                conversation_id, message_id, reply_lang, "nlu_unavailable"
            )

        parse = output.parse
        reply_rows = await self.store.record_turn(
            message_id,
            parse.intent,
            parse.confidence,
            [(r.text, [{"title": t, "payload": p} for t, p in r.buttons]) for r in output.replies],
        )
        route = self.routing.route_for(parse.intent)
        new_handoff = None
        if output.slots.get("handoff_id"):  # set by this turn or an earlier one
            since = await self.store.handoff_since(conversation_id, started)
            if since is not None:
                new_handoff, queue = since
                route = Route(RouteKind.QUEUE, queue)
        return TurnResult(
            conversation_id=conversation_id,
            message_id=message_id,
            language=reply_lang,
            replies=output.replies,
            intent=parse.intent,
            confidence=parse.confidence,
            entities=parse.entities,
            route=route,
            handoff_id=new_handoff,
            slots=output.slots,
            stored=row,
            stored_replies=tuple(reply_rows),
        )

    async def _system_reply(
        self, conversation_id: str, message_id: int, language: str, error: str
    ) -> TurnResult:
        text = SYSTEM_TEXTS[error][language].format(limit=self.max_message_chars)
        reply, _ = await self.store.add_message_once(conversation_id, "system", text, "sent")
        return TurnResult(
            conversation_id=conversation_id,
            message_id=message_id,
            language=language,
            replies=(BotReply(text),),
            error=error,
            stored_replies=(reply,),
        )
