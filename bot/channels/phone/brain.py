"""``PhoneBrain``: the triage brain for phone calls (implements ``voice.brain.Brain``).

A call is a conversation on the ``phone`` channel, handled by the same desk, Rasa dialogue, flows
and queues as the web chat. What is phone-specific lives here: the greeting by dialled number,
the caller-id lookup (a hint shown to the agent as unverified, never an identity), the question
to a caller who chatted recently, digit collection for the slot being asked, DTMF 0 and
no-input escalation, and what a transfer needs (the queue's SIP URI and the handoff id).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta

from bot.backoffice.protocol import BackOfficeUnavailable, CustomerRecord
from bot.channels.phone.speech import render
from bot.clock import utcnow
from bot.config.phone_lines import PhoneLines
from bot.conversation.service import TurnResult
from bot.errors import NluUnavailable
from bot.handoff.desk import Desk
from bot.handoff.state import HandoffState
from bot.packs.loader import KeyedSlot
from voice.brain import BrainReply, CallContext, DigitRequest, Transfer

log = logging.getLogger(__name__)

CHANNEL = "phone"
TEXTS = {
    "recent_chat": {
        "it": "Vedo che ci ha scritto in chat di recente. Chiama per la stessa richiesta? "
        "Risponda sì o no.",
        "en": "I can see you chatted with us recently. Are you calling about the same thing? "
        "Please say yes or no.",
    },
    "recent_chat_yes": {
        "it": "Bene, il collega che la seguirà avrà anche la conversazione in chat. Mi dica pure.",
        "en": "Good, the colleague who helps you will also have the chat conversation. Go ahead.",
    },
    "recent_chat_note": {
        "it": "Il cliente dice di chiamare per la conversazione in chat {chat}.",
        "en": "The caller says they are calling about the chat conversation {chat}.",
    },
    "no_input": {
        "it": "Non la sento. Mi dica come posso aiutarla, oppure prema zero per un operatore.",
        "en": "I can't hear you. Please tell me how I can help, or press zero for a person.",
    },
    "transfer_failed": {
        "it": "Mi dispiace, in questo momento non riesco a passarle un collega. Abbiamo "
        "registrato la sua richiesta e la richiameremo al più presto. Arrivederci.",
        "en": "I'm sorry, I cannot put you through to a colleague right now. We have booked a "
        "callback and will call you back as soon as possible. Goodbye.",
    },
    "keyed_0": {"it": "(tasto 0: chiede un operatore)", "en": "(key 0: asks for a person)"},
}
YES = ("affirm",)
NO = ("deny",)


def digit_requests(keyed: Mapping[str, KeyedSlot]) -> dict[str, DigitRequest]:
    """What a caller may key in, by the slot a form asks for (the pack's ``keyed_slots``)."""
    return {
        slot: DigitRequest(slot, spec.digits, prefix=spec.prefix) for slot, spec in keyed.items()
    }


class PhoneBrain:
    def __init__(self, desk: Desk, lines: PhoneLines, keyed_slots: Mapping[str, KeyedSlot]) -> None:
        self.desk = desk
        self.store = desk.store
        self.lines = lines
        self.digit_slots = digit_requests(keyed_slots)
        self._languages: dict[str, str] = {}
        self._recent_chat: dict[str, str] = {}  # conversation -> a recent chat, asked about

    def _language(self, conversation_id: str) -> str:
        return self._languages.get(conversation_id, self.lines.default_language)

    async def _say(self, conversation_id: str, texts: list[str]) -> BrainReply:
        """Bot lines that do not come from a turn (greeting, reprompts), in the transcript too."""
        for text in texts:
            await self.desk.conversations.add_service_line(conversation_id, text)
        return BrainReply(self._language(conversation_id), tuple(texts))

    async def begin(self, call: CallContext) -> tuple[str, BrainReply]:
        conversation_id = f"call-{uuid.uuid4().hex}"
        language = self.lines.language_for(call.dialled)
        self._languages[conversation_id] = language
        await self.store.conversations.ensure_conversation(conversation_id, CHANNEL, language)
        texts = [self.lines.welcome[language]]
        if call.caller:
            customer = await self._customer_by_phone(self.lines.international(call.caller))
            if customer is not None:
                # a hint for the agent (the envelope says verified: false), never an identity
                await self.store.conversations.update_conversation(
                    conversation_id, customer_id=customer.id
                )
                window = timedelta(hours=self.lines.timings.recent_chat_window_h)
                chat = await self.store.conversations.recent_chat(customer.id, utcnow() - window)
                if chat is not None:
                    self._recent_chat[conversation_id] = chat.id
                    texts.append(TEXTS["recent_chat"][language])
        return conversation_id, await self._say(conversation_id, texts)

    async def _customer_by_phone(self, number: str) -> CustomerRecord | None:
        """The caller-id hint; a back office that is down only costs the hint."""
        try:
            return await self.desk.back_office.customer_by_phone(number)
        except BackOfficeUnavailable:
            return None

    async def hear(self, conversation_id: str, text: str) -> BrainReply:
        chat = self._recent_chat.pop(conversation_id, None)
        if chat is not None:
            answer = await self._answer_about_chat(conversation_id, text, chat)
            if answer is not None:
                return answer
        turn = await self.desk.customer_message(
            conversation_id, text, channel=CHANNEL, language=self._language(conversation_id)
        )
        return await self._reply(conversation_id, turn)

    async def _answer_about_chat(
        self, conversation_id: str, text: str, chat: str
    ) -> BrainReply | None:
        """Yes or no to "are you calling about your chat?"; None if the caller said something
        else, or the NLU cannot tell now: the dialogue then stores and handles the message as
        usual (also when Rasa is down), so nothing is lost."""
        language = self._language(conversation_id)
        try:
            parse = await self.desk.conversations.parse(text)
        except NluUnavailable:
            return None
        if parse.intent in YES:
            await self.desk.conversations.record_answered(
                conversation_id, text, intent=parse.intent, confidence=parse.confidence
            )
            await self.desk.conversations.add_service_line(
                conversation_id, TEXTS["recent_chat_note"][language].format(chat=chat), "system"
            )
            return await self._say(conversation_id, [TEXTS["recent_chat_yes"][language]])
        if parse.intent in NO:
            await self.desk.conversations.record_answered(
                conversation_id, text, intent=parse.intent, confidence=parse.confidence
            )
            return await self._say(conversation_id, [self.lines.welcome[language]])
        return None

    async def keyed(self, conversation_id: str, digits: str, request: DigitRequest) -> BrainReply:
        turn = await self.desk.customer_message(
            conversation_id,
            request.prefix + digits,
            channel=CHANNEL,
            language=self._language(conversation_id),
        )
        return await self._reply(conversation_id, turn)

    async def ask_for_person(self, conversation_id: str) -> BrainReply:
        language = self._language(conversation_id)
        self._recent_chat.pop(conversation_id, None)
        turn = await self.desk.customer_message(
            conversation_id,
            TEXTS["keyed_0"][language],
            channel=CHANNEL,
            language=language,
            payload="/request_human",
        )
        return await self._reply(conversation_id, turn)

    async def no_input(self, conversation_id: str, count: int) -> BrainReply:
        if count > self.lines.timings.max_reprompts:
            return await self.ask_for_person(conversation_id)
        return await self._say(
            conversation_id, [TEXTS["no_input"][self._language(conversation_id)]]
        )

    async def transfer_failed(self, conversation_id: str, transfer: Transfer) -> BrainReply:
        log.warning("phone transfer failed; callback booked", extra={"queue": transfer.queue})
        await self.desk.request_callback(transfer.handoff_id)
        reply = await self._say(
            conversation_id, [TEXTS["transfer_failed"][self._language(conversation_id)]]
        )
        return replace(reply, hang_up=True)

    async def transferred(self, conversation_id: str, transfer: Transfer) -> None:
        await self.desk.conversations.add_service_line(
            conversation_id, f"call transferred to {transfer.target_uri}", "system"
        )

    async def ended(self, conversation_id: str, reason: str) -> None:
        self._languages.pop(conversation_id, None)
        self._recent_chat.pop(conversation_id, None)
        if reason == "transferred":
            return  # the customer is with the queue's PBX now: the handoff stays open
        await self.desk.customer_leave(conversation_id)

    async def _reply(self, conversation_id: str, turn: TurnResult) -> BrainReply:
        language = turn.language
        say = render(turn.replies, language)
        route = f"{turn.route.kind.value}:{turn.route.name}" if turn.route else None
        reply = BrainReply(
            language,
            say,
            intent=turn.intent,
            confidence=turn.confidence,
            route=route,
            transcript=turn.stored.text if turn.stored is not None else None,
        )
        if turn.handoff_id:
            handoff = await self.store.handoffs.get_handoff(turn.handoff_id)
            if handoff is not None and handoff.state == HandoffState.QUEUED:
                queue = self.desk.routing.queues[handoff.queue]
                return replace(reply, transfer=Transfer(handoff.id, queue.name, queue.sip_uri))
            if handoff is not None and handoff.state == HandoffState.CALLBACK_REQUESTED:
                return replace(reply, hang_up=True)  # the bot told them they will be called
        requested = turn.slots.get("requested_slot")
        if isinstance(requested, str) and requested in self.digit_slots:
            return replace(reply, digits=self.digit_slots[requested])
        return reply
