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

A crash (the process killed at any point of a turn) must not strand a customer whose message was
acknowledged: a message stays ``received`` until its turn is recorded, and such a message is
answered exactly once, in order, by whichever comes first: the next message of its conversation,
a resend of it, or the sweep after a restart (``Desk.take_up_unanswered``). The turn is run
again with the same key: Rasa's channel drops what an interrupted run of that message left in
the tracker, and the action webhook answers actions that already ran from the action journal,
so nothing is done twice (``bot/store/sql/action_journal.py``).

Personal data is masked here and nowhere else in the gateway (``triage_pii.masking`` holds the
rules): what customers, the bot and agents write is stored masked (the customer's messages, the
bot's replies, an agent's lines, the notes agents leave; the service's own lines are its
templates and hold no customer data), and the NLU gets the masked text with even the visible
tails hidden (``hide_masked``), so that no entity or slot is read from a masked number. The one
exception is asked for by the dialogue: while a form requests a slot the pack lists in
``unmasked_slots`` (a new e-mail address for the contact details, say), the customer's answer
reaches Rasa as typed; it is still stored masked here, and Rasa's tracker store masks its copy of
the text (the slot keeps its value: the flow needs it). A turn run again from what was stored (a
crash) sends the NLU the masked text whatever the form asks: the raw answer is gone.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.config.routing import Route, RouteKind, RoutingTable
from bot.conversation.language import GENERIC, LanguageDetector
from bot.conversation.state import WITH_A_PERSON, ConversationState, MessageStatus, turn_key
from bot.conversation.turn_locks import LocalTurnLocks, TurnLocks
from bot.errors import NluUnavailable
from bot.failpoints import NO_FAILPOINTS, Failpoint, Failpoints
from bot.nlu.client import BotReply, Entity, NluClient, ParseResult
from bot.store.protocols import (
    ConversationRecord,
    HandoffRecord,
    MessageRecord,
    SlotAsked,
    Store,
)
from triage_pii.masking import hide_masked, redact

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
    handoff: HandoffRecord | None = None  # the handoff this turn made, as stored
    error: str | None = None  # empty | too_long | nlu_unavailable
    slots: dict[str, Any] = field(default_factory=dict)
    stored: MessageRecord | None = None  # the customer's message as stored (masked)
    stored_replies: tuple[MessageRecord, ...] = ()  # the replies as stored, in order
    relayed: bool = False  # stored for the person handling the conversation; no bot turn
    duplicate: bool = False  # this client_id was already stored and answered; nothing redone
    # earlier messages of the conversation, left unanswered by a crash, answered first
    recovered: tuple[TurnResult, ...] = ()


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
        self,
        store: Store,
        nlu: NluClient,
        routing: RoutingTable,
        max_message_chars: int,
        failpoints: Failpoints = NO_FAILPOINTS,
        language_detector: LanguageDetector = GENERIC,
        unmasked_slots: frozenset[str] = frozenset(),
        turn_locks: TurnLocks | None = None,
    ) -> None:
        self.store = store
        self.unmasked_slots = unmasked_slots
        self.language_detector = language_detector
        self.nlu = nlu
        self.routing = routing
        self.max_message_chars = max_message_chars
        self.failpoints = failpoints
        self.journal = store.journal
        # one turn of a conversation at a time; in a cluster, across nodes
        self.turn_locks: TurnLocks = turn_locks or LocalTurnLocks()

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
        durable, before the turn (a chat channel acknowledges it there). Earlier messages of
        the conversation left unanswered by a crash are answered first (``recovered``).
        """
        async with self.turn_locks.hold(conversation_id):
            return await self._handle(
                conversation_id, text, channel, language, client_id, payload, on_stored
            )

    async def recover(self, conversation_id: str) -> list[TurnResult]:
        """Answer the conversation's messages that were stored (and acknowledged) but whose turn
        never completed because the process died: each once, oldest first."""
        async with self.turn_locks.hold(conversation_id):
            return await self._recover(conversation_id, before_id=None)

    async def _recover(self, conversation_id: str, before_id: int | None) -> list[TurnResult]:
        results = []
        for row in await self.store.conversations.unanswered_messages(conversation_id, before_id):
            conversation = await self.store.conversations.get_conversation(conversation_id)
            # the raw text is gone: what was stored (masked) is all the turn can see again
            results.append(
                await self._turn(conversation, row, row.text, None, row.payload, resumed=True)
            )
        if results:
            log.info("unanswered messages taken up again", extra={"count": len(results)})
        return results

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
        # stored masked (cards, IBANs, tax codes, phones, e-mails); ``_turn`` masks the NLU's copy
        masked = redact(raw)
        received = await self.store.conversations.receive(
            conversation_id, channel, masked, client_id=client_id, payload=payload
        )
        conversation, row, created = received.conversation, received.message, received.created
        self.failpoints.reach(Failpoint.MESSAGE_STORED)
        if on_stored is not None:
            await on_stored(row.id)
        self.failpoints.reach(Failpoint.MESSAGE_ACKED)
        earlier: tuple[TurnResult, ...] = ()
        if received.earlier_unanswered:
            earlier = tuple(await self._recover(conversation_id, before_id=row.id))
        if not created:
            if row.status != MessageStatus.RECEIVED:
                return TurnResult(
                    conversation_id,
                    row.id,
                    conversation.language or DEFAULT_LANGUAGE,
                    (),
                    duplicate=True,
                    recovered=earlier,
                )
            # a resend of a message whose turn never completed (its process died): answer it
            # now, from what was stored unless the resend is the same message
            if masked != row.text:
                raw, payload = row.text, row.payload
        if earlier:
            conversation = await self.store.conversations.get_conversation(conversation_id)
        turn = await self._turn(
            conversation,
            row,
            raw,
            language,
            payload,
            resumed=not created,
            new_conversation=received.new_conversation,
        )
        return replace(turn, recovered=earlier)

    @staticmethod
    def mask(text: str) -> str:
        """``text`` as it may be stored or shown to anyone but its author."""
        return redact(text)

    @staticmethod
    def for_nlu(text: str) -> str:
        """``text`` as the NLU may see it: masked, with no visible tail of a masked span."""
        return hide_masked(redact(text))

    async def parse(self, text: str) -> ParseResult:
        """Classify a customer's answer outside a dialogue turn (a channel's own question)."""
        return await self.nlu.parse(self.for_nlu(clean_text(text)))

    async def add_agent_message(self, conversation_id: str, text: str) -> MessageRecord:
        """Store what a person handling the conversation wrote to the customer (masked); under
        the turn lock, so a conversation's messages are committed in the order of their ids."""
        async with self.turn_locks.hold(conversation_id):
            row, _ = await self.store.conversations.add_message_once(
                conversation_id, "agent", redact(text), MessageStatus.SENT
            )
        return row

    async def add_service_line(
        self, conversation_id: str, text: str, sender: str = "bot"
    ) -> MessageRecord:
        """Store a line the service said outside a turn (a greeting, a notice, a transfer): its
        own template, holding no customer data, stored as written (a SIP URI stays readable)."""
        async with self.turn_locks.hold(conversation_id):
            row, _ = await self.store.conversations.add_message_once(
                conversation_id, sender, text, MessageStatus.SENT
            )
        return row

    async def record_answered(
        self, conversation_id: str, text: str, *, intent: str | None, confidence: float
    ) -> MessageRecord:
        """Store a customer message that a channel answered itself, outside the dialogue (the
        phone's "are you calling about your chat?"): masked, and marked processed."""
        async with self.turn_locks.hold(conversation_id):
            row, _ = await self.store.conversations.add_message_once(
                conversation_id, "user", redact(text), MessageStatus.PROCESSED
            )
            await self.store.conversations.mark_message(
                row.id, MessageStatus.PROCESSED, intent, confidence
            )
            return row

    async def _began_before(self, conversation_id: str, key: str) -> bool:
        """Whether an interrupted turn of this message had already run actions (the handoff
        that queued the conversation, say): then the turn is run again, not relayed."""
        if await self.store.handoffs.handoff_of_turn(conversation_id, key) is not None:
            return True
        return await self.journal.has_entries(conversation_id, key)

    async def _turn(
        self,
        conversation: ConversationRecord,
        row: MessageRecord,
        raw: str,
        language: str | None,
        payload: str | None,
        *,
        resumed: bool,
        new_conversation: bool = False,
    ) -> TurnResult:
        """``new_conversation``: this message created it (no earlier turn to look for)."""
        conversation_id, message_id = conversation.id, row.id
        key = turn_key(message_id)
        if conversation.state in WITH_A_PERSON and not (
            resumed and await self._began_before(conversation_id, key)
        ):
            if row.status != MessageStatus.RELAYED:  # the store may have stored it so already
                await self.store.conversations.mark_message(message_id, MessageStatus.RELAYED)
            return TurnResult(
                conversation_id,
                message_id,
                conversation.language or DEFAULT_LANGUAGE,
                (),
                relayed=True,
                stored=row,
            )
        if conversation.state == ConversationState.CLOSED:  # the customer writes again
            await self.store.conversations.update_conversation(
                conversation_id, state=ConversationState.BOT, closed_at=None
            )
        text = clean_text(raw)
        lang = conversation.language
        if lang is None:
            lang = language or self.language_detector.detect(text)
            if lang is not None:  # before the turn: its actions (a handoff) read it
                await self.store.conversations.update_conversation(conversation_id, language=lang)
        reply_lang = lang or DEFAULT_LANGUAGE
        decided_now = lang is not None and conversation.language is None

        if not text or len(text) > self.max_message_chars:
            error = "empty" if not text else "too_long"
            await self.store.conversations.mark_message(message_id, MessageStatus.REJECTED)
            return await self._system_reply(conversation_id, message_id, reply_lang, error)

        try:
            if (
                decided_now
                and not new_conversation
                and await self.store.conversations.has_processed_messages(conversation_id)
            ):
                # an earlier message had no language evidence: Rasa's session has the default
                await self.nlu.set_slots(conversation_id, {"language": lang})
            metadata: dict[str, Any] = {"language": reply_lang, "channel": conversation.channel}
            if resumed:  # the action webhook then answers what already ran from its journal
                metadata["rerun"] = True
            if payload and payload.startswith("/"):
                nlu_text = payload
            elif conversation.awaiting_slot in self.unmasked_slots and raw != row.text:
                # the form asked for this personal data, and this is the customer's raw answer,
                # not the stored one that a turn run again after a crash has
                nlu_text = text
            else:
                nlu_text = self.for_nlu(text)
            output = await self.nlu.turn(conversation_id, nlu_text, metadata, message_key=key)
        except NluUnavailable as exc:
            log.warning("NLU unavailable; message kept", extra={"error": str(exc)})
            await self.store.conversations.mark_message(message_id, MessageStatus.FAILED)
            if conversation.awaiting_slot is not None:
                # Rasa may or may not have run the turn: which slot it asks for now is unknown,
                # and the next message goes to it masked until a turn says again
                await self.store.conversations.update_conversation(
                    conversation_id, awaiting_slot=None
                )
            return await self._system_reply(
                conversation_id, message_id, reply_lang, "nlu_unavailable"
            )
        self.failpoints.reach(Failpoint.TURN_ANSWERED)

        parse = output.parse
        asked = output.slots.get("requested_slot") if output.active_loop else None
        asked = asked if isinstance(asked, str) else None
        reply_rows = await self.store.conversations.record_turn(
            conversation_id,
            message_id,
            parse.intent,
            parse.confidence,
            [
                (redact(r.text), [{"title": t, "payload": p} for t, p in r.buttons])
                for r in output.replies
            ],
            awaiting=SlotAsked(asked) if asked != conversation.awaiting_slot else None,
        )
        self.failpoints.reach(Failpoint.TURN_RECORDED)
        route = self.routing.route_for(parse.intent)
        new_handoff = handoff = None
        if output.slots.get("handoff_id"):  # set by this turn or an earlier one
            handoff = await self.store.handoffs.handoff_of_turn(conversation_id, key)
            if handoff is not None:
                new_handoff = handoff.id
                route = Route(RouteKind.QUEUE, handoff.queue)
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
            handoff=handoff,
            slots=output.slots,
            stored=row,
            stored_replies=tuple(reply_rows),
        )

    async def _system_reply(
        self, conversation_id: str, message_id: int, language: str, error: str
    ) -> TurnResult:
        text = SYSTEM_TEXTS[error][language].format(limit=self.max_message_chars)
        reply, _ = await self.store.conversations.add_message_once(
            conversation_id, "system", text, MessageStatus.SENT
        )
        return TurnResult(
            conversation_id=conversation_id,
            message_id=message_id,
            language=language,
            replies=(BotReply(text),),
            error=error,
            stored_replies=(reply,),
        )
