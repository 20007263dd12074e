"""The phone channel's brain against the real gateway runtime and Rasa: greeting, caller id,
digits for a flow, DTMF 0, no-input, transfer targets and failed transfers."""

from __future__ import annotations

import uuid

import pytest

from bot.channels.phone.brain import PhoneBrain
from bot.channels.phone.line import exposure_warning
from bot.channels.phone.speech import render
from bot.config.phone_lines import load_phone_lines
from bot.config.settings import Settings
from bot.errors import NluUnavailable
from bot.nlu.client import BotReply
from bot.runtime import Runtime
from bot.store.sql.tables import Handoff
from voice.brain import BrainReply, CallContext

pytestmark = pytest.mark.rasa

MARIO_NATIONAL = "0255501001"  # +390255501001, as a caller id without the country code


def brain_for(runtime: Runtime) -> PhoneBrain:
    desk = runtime.desk
    lines = load_phone_lines(runtime.settings.phone_file)
    return PhoneBrain(desk, lines, runtime.pack.manifest.keyed_slots)


def call(caller: str | None = None, dialled: str | None = "100") -> CallContext:
    return CallContext(call_id=uuid.uuid4().hex, caller=caller, dialled=dialled)


async def handoff_of(brain: PhoneBrain, reply: BrainReply) -> Handoff:
    assert reply.transfer is not None, reply
    handoff = await brain.store.handoffs.get_handoff(reply.transfer.handoff_id)
    assert handoff is not None
    return handoff


async def test_a_call_is_greeted_in_the_language_of_the_dialled_number(
    rasa_runtime: Runtime,
) -> None:
    brain = brain_for(rasa_runtime)
    conversation_id, greeting = await brain.begin(call(dialled="101"))
    assert greeting.language == "en" and "virtual assistant" in greeting.say[0]
    conversation = await brain.store.conversations.get_conversation(conversation_id)
    assert (conversation.channel, conversation.language) == ("phone", "en")
    stored = [m.text for m in await brain.store.conversations.messages(conversation_id)]
    assert stored == list(greeting.say)
    _, italian = await brain.begin(call(dialled="+39 02 0000 0000"))
    assert italian.language == "it" and "assistente virtuale" in italian.say[0]


async def test_dtmf_zero_transfers_to_the_queue_sip_uri_with_a_phone_handoff(
    rasa_runtime: Runtime,
) -> None:
    brain = brain_for(rasa_runtime)
    conversation_id, _ = await brain.begin(call())
    reply = await brain.ask_for_person(conversation_id)
    handoff = await handoff_of(brain, reply)
    assert reply.transfer is not None
    assert (reply.transfer.queue, reply.transfer.target_uri) == (
        "general",
        "sip:general@127.0.0.1:5070",
    )
    assert (handoff.state, handoff.channel, handoff.conversation_id) == (
        "queued",
        "phone",
        conversation_id,
    )
    assert reply.say, "the caller is told they are being put through"


async def test_caller_id_is_an_unverified_hint_never_an_identity(rasa_runtime: Runtime) -> None:
    brain = brain_for(rasa_runtime)
    conversation_id, _ = await brain.begin(call(caller=MARIO_NATIONAL))
    conversation = await brain.store.conversations.get_conversation(conversation_id)
    assert (conversation.customer_id, conversation.verified) == ("CL100001", False)
    reply = await brain.hear(conversation_id, "voglio parlare con un operatore")
    handoff = await handoff_of(brain, reply)
    customer = handoff.envelope["customer"]
    assert (customer["id"], customer["verified"], customer["name"]) == (
        "CL100001",
        False,
        "Mario Rossi",
    )
    assert handoff.customer_id is None  # only a verified customer is linked to the handoff
    assert handoff.envelope["previous_conversations"] == []


async def test_a_flow_asks_for_digits_and_completes_with_keyed_values(
    rasa_runtime: Runtime,
) -> None:
    brain = brain_for(rasa_runtime)
    conversation_id, _ = await brain.begin(call())
    asked = await brain.hear(conversation_id, "vorrei sapere quanto devo pagare")
    assert asked.route == "flow:check_balance"
    assert asked.digits is not None and asked.digits.slot == "customer_code"
    postcode = await brain.keyed(conversation_id, "100001", asked.digits)
    assert postcode.digits is not None and postcode.digits.slot == "id_postcode"
    balance = await brain.keyed(conversation_id, "20123", postcode.digits)
    spoken = " ".join(balance.say)
    assert "84,50" in spoken and balance.digits is None
    keyed = [
        m.text
        for m in await brain.store.conversations.messages(conversation_id)
        if m.sender == "user"
    ]
    assert keyed[-2:] == ["CL100001", "20123"]


async def test_silence_is_reprompted_then_handed_to_a_person(rasa_runtime: Runtime) -> None:
    brain = brain_for(rasa_runtime)
    conversation_id, _ = await brain.begin(call())
    limit = brain.lines.timings.max_reprompts
    for count in range(1, limit + 1):
        reprompt = await brain.no_input(conversation_id, count)
        assert reprompt.transfer is None and reprompt.say
    escalated = await brain.no_input(conversation_id, limit + 1)
    assert (await handoff_of(brain, escalated)).queue == "general"


async def test_a_failed_transfer_books_a_callback_and_ends_the_call(
    rasa_runtime: Runtime,
) -> None:
    brain = brain_for(rasa_runtime)
    conversation_id, _ = await brain.begin(call())
    reply = await brain.ask_for_person(conversation_id)
    assert reply.transfer is not None
    failed = await brain.transfer_failed(conversation_id, reply.transfer)
    assert failed.hang_up and failed.say
    handoff = await handoff_of(brain, reply)
    assert handoff.state == "callback_requested"
    await brain.ended(conversation_id, "bot_hung_up")
    assert (await brain.store.handoffs.get_handoff(handoff.id)).state == "callback_requested"  # type: ignore[union-attr]


async def test_hanging_up_while_waiting_abandons_but_a_transfer_does_not(
    rasa_runtime: Runtime,
) -> None:
    brain = brain_for(rasa_runtime)
    gone, _ = await brain.begin(call())
    waiting = await handoff_of(brain, await brain.ask_for_person(gone))
    await brain.ended(gone, "caller_hung_up")
    moved, _ = await brain.begin(call())
    reply = await brain.ask_for_person(moved)
    assert reply.transfer is not None
    await brain.transferred(moved, reply.transfer)
    await brain.ended(moved, "transferred")
    states = [
        (await brain.store.handoffs.get_handoff(h)).state
        for h in (waiting.id, reply.transfer.handoff_id)
    ]  # type: ignore[union-attr]
    assert states == ["abandoned", "queued"]


async def test_a_caller_who_chatted_recently_is_asked_if_it_is_the_same_matter(
    rasa_runtime: Runtime,
) -> None:
    brain = brain_for(rasa_runtime)
    chat_id = f"chat-{uuid.uuid4().hex[:8]}"
    await brain.store.conversations.ensure_conversation(chat_id, "chat", "it")
    await brain.store.conversations.update_conversation(
        chat_id, customer_id="CL100002", verified=True
    )
    conversation_id, greeting = await brain.begin(call(caller="+39 06 5550 1002"))
    assert len(greeting.say) == 2 and "chat" in greeting.say[1]
    yes = await brain.hear(conversation_id, "sì")
    assert yes.transfer is None and yes.say
    (said,) = [
        m for m in await brain.store.conversations.messages(conversation_id) if m.sender == "user"
    ]
    assert (said.text, said.status, said.intent) == ("sì", "processed", "affirm")
    notes = [
        m.text
        for m in await brain.store.conversations.messages(conversation_id)
        if m.sender == "system"
    ]
    assert any(chat_id in note for note in notes)
    _, stranger = await brain.begin(call(caller="+39 333 000 0000"))
    assert len(stranger.say) == 1


def test_replies_are_rendered_for_the_ear() -> None:
    spoken = render(
        (
            BotReply("Guardi qui: https://example.com/fatture 😀 **grazie**"),
            BotReply("Confermo?", (("Sì 👍", "/affirm"), ("No", "/deny"))),
        ),
        "it",
    )
    assert spoken == ("Guardi qui: grazie", "Confermo? Può dire: Sì oppure No.")
    english = render((BotReply("Pick one", (("A", "/a"), ("B", "/b"), ("C", "/c"))),), "en")
    assert english == ("Pick one You can say: A, B or C.",)


def test_a_line_open_beyond_loopback_without_protection_is_warned_about() -> None:
    assert exposure_warning(Settings(sip_host="127.0.0.1")) is None
    assert exposure_warning(Settings(sip_host="0.0.0.0")) is not None
    assert (
        exposure_warning(Settings(sip_host="0.0.0.0", sip_allowed_sources=("10.0.0.0/8",))) is None
    )
    assert (
        exposure_warning(Settings(sip_host="0.0.0.0", sip_auth_user="t", sip_auth_password="p"))
        is None
    )


async def test_an_answer_about_the_chat_is_kept_when_the_nlu_cannot_parse_it(
    rasa_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    brain = brain_for(rasa_runtime)
    chat_id = f"chat-{uuid.uuid4().hex[:8]}"
    await brain.store.conversations.ensure_conversation(chat_id, "chat", "it")
    await brain.store.conversations.update_conversation(
        chat_id, customer_id="CL100002", verified=True
    )
    conversation_id, _ = await brain.begin(call(caller="+39 06 5550 1002"))

    async def parse_unavailable(text: str) -> None:
        raise NluUnavailable("Rasa is restarting")

    monkeypatch.setattr(brain.desk.nlu, "parse", parse_unavailable)
    reply = await brain.hear(conversation_id, "sì, la mia mail è mario.rossi@example.it")
    assert reply.say  # the dialogue answered it
    said = [
        m.text
        for m in await brain.store.conversations.messages(conversation_id)
        if m.sender == "user"
    ]
    assert len(said) == 1 and "mario.rossi@example.it" not in said[0]  # stored, masked
