"""Where personal data is masked: ``ConversationService`` stores every message masked and sends
the NLU masked text without the visible tails, except the answer to a form's slot the pack
lists in ``unmasked_slots``. The store is real; the NLU seam is faked to see what it is sent."""

from __future__ import annotations

import uuid
from typing import Any

from bot.config.routing import load_routing
from bot.conversation.service import ConversationService
from bot.nlu.client import BotReply, ParseResult, TurnOutput
from bot.nlu.fake import FakeNluClient
from bot.store.sql.store import SqlStore
from tests.conftest import ENERGY_PACK

ROUTING = load_routing(ENERGY_PACK / "routing.yml")
CARD = "4111 1111 1111 1111"
EMAIL = "mario.rossi@example.com"


class FormNlu(FakeNluClient):
    """Opens a form asking for ``asks`` when told "cambiare contatto"; echoes every text it
    gets in its reply (as a bot confirming a value would)."""

    def __init__(self, asks: str) -> None:
        super().__init__()
        self.asks = asks
        self.sent: list[str] = []
        self.parsed: list[str] = []

    async def parse(self, text: str) -> ParseResult:
        self.parsed.append(text)
        return await super().parse(text)

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        self._check()
        self.sent.append(text)
        opens = "cambiare contatto" in text
        return TurnOutput(
            replies=(BotReply(f"ho capito: {text}"),),
            parse=ParseResult(text=text, intent="inform", confidence=0.9),
            slots={"requested_slot": self.asks if opens else None},
            active_loop="update_contact_form" if opens else None,
        )


def service(store: SqlStore, nlu: FakeNluClient, unmasked: frozenset[str]) -> ConversationService:
    return ConversationService(store, nlu, ROUTING, 2000, unmasked_slots=unmasked)


async def test_a_card_number_reaches_the_nlu_without_its_visible_tail(store: SqlStore) -> None:
    nlu = FormNlu(asks="new_contact")
    conversations = service(store, nlu, frozenset({"new_contact"}))
    conversation_id = f"m-{uuid.uuid4().hex[:12]}"
    await conversations.handle(
        conversation_id, f"la mia carta è {CARD} e la lettura 4521", channel="chat"
    )
    assert nlu.sent == ["la mia carta è *** e la lettura 4521"]
    user, bot = await store.conversations.messages(conversation_id)
    assert user.text == "la mia carta è ************1111 e la lettura 4521"
    assert "1111 1111" not in bot.text  # the bot's reply is stored masked too


async def test_the_answer_to_an_unmasked_slot_reaches_the_nlu_as_typed(store: SqlStore) -> None:
    nlu = FormNlu(asks="new_contact")
    conversations = service(store, nlu, frozenset({"new_contact"}))
    conversation_id = f"m-{uuid.uuid4().hex[:12]}"
    await conversations.handle(conversation_id, f"scrivo a {EMAIL}", channel="chat")
    await conversations.handle(conversation_id, "vorrei cambiare contatto", channel="chat")
    await conversations.handle(conversation_id, EMAIL, channel="chat")  # the form asked for it
    await conversations.handle(conversation_id, f"e anche {EMAIL}", channel="chat")
    assert nlu.sent == ["scrivo a ***", "vorrei cambiare contatto", EMAIL, "e anche ***"]
    stored = [m.text for m in await store.conversations.messages(conversation_id)]
    assert not any(EMAIL in text for text in stored)
    assert "m***@example.com" in stored


async def test_a_slot_the_pack_does_not_list_gets_masked_text(store: SqlStore) -> None:
    nlu = FormNlu(asks="meter_reading")
    conversations = service(store, nlu, frozenset({"new_contact"}))
    conversation_id = f"m-{uuid.uuid4().hex[:12]}"
    await conversations.handle(conversation_id, "vorrei cambiare contatto", channel="chat")
    await conversations.handle(conversation_id, CARD, channel="chat")
    assert nlu.sent[-1] == "***"
    conversation = await store.conversations.get_conversation(conversation_id)
    assert conversation.awaiting_slot is None  # the form closed on the last turn


async def test_a_channel_question_is_parsed_masked(store: SqlStore) -> None:
    nlu = FormNlu(asks="new_contact")
    conversations = service(store, nlu, frozenset())
    await conversations.parse("sì, il mio numero è +39 333 123 4567")
    assert nlu.parsed == ["sì, il mio numero è ***"]


async def test_agent_lines_are_stored_masked(store: SqlStore) -> None:
    conversations = service(store, FormNlu(asks="x"), frozenset())
    conversation_id = f"m-{uuid.uuid4().hex[:12]}"
    await store.conversations.ensure_conversation(conversation_id, "chat")
    row = await conversations.add_agent_message(conversation_id, f"la carta {CARD} è bloccata")
    assert row.text == "la carta ************1111 è bloccata"
    assert conversations.mask(f"note: {EMAIL}") == "note: m***@example.com"
    line = await conversations.add_service_line(
        conversation_id, "call transferred to sip:billing@10.0.0.5:5070", "system"
    )
    assert line.text == "call transferred to sip:billing@10.0.0.5:5070"  # a template, no data


async def test_a_turn_run_again_from_the_store_sends_the_nlu_no_masked_tail(
    store: SqlStore,
) -> None:
    """After a crash the raw answer is gone: even while the form asks for an unmasked slot, the
    NLU gets the stored text with its masks hidden, never a tail such as m***@example.com."""
    nlu = FormNlu(asks="new_contact")
    conversations = service(store, nlu, frozenset({"new_contact"}))
    conversation_id = f"m-{uuid.uuid4().hex[:12]}"
    await conversations.handle(conversation_id, "vorrei cambiare contatto", channel="chat")
    # the process died after storing (and acknowledging) the answer, before its turn
    await store.conversations.add_message_once(conversation_id, "user", conversations.mask(EMAIL))
    (turn,) = await conversations.recover(conversation_id)
    assert turn.error is None and nlu.sent[-1] == "***"


async def test_when_the_nlu_fails_the_next_answer_is_masked_until_a_turn_asks_again(
    store: SqlStore,
) -> None:
    nlu = FormNlu(asks="new_contact")
    conversations = service(store, nlu, frozenset({"new_contact"}))
    conversation_id = f"m-{uuid.uuid4().hex[:12]}"
    await conversations.handle(conversation_id, "vorrei cambiare contatto", channel="chat")
    nlu.down = True
    failed = await conversations.handle(conversation_id, EMAIL, channel="chat")
    assert failed.error == "nlu_unavailable"
    nlu.down = False
    await conversations.handle(conversation_id, EMAIL, channel="chat")
    assert nlu.sent[-1] == "***"
