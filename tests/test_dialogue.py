"""Whole conversations through the gateway and a real Rasa server with the project's model.

Each test is a customer conversation on its own conversation id; the store is the runtime's
SQLite database, so what the flows wrote is checked where an agent would read it.
"""

from __future__ import annotations

import uuid

import pytest

from bot.config.routing import RouteKind
from bot.conversation.service import TurnResult
from bot.domains.energy.tables import Customer, Ticket
from bot.runtime import Runtime
from tests.conftest import CLOSED_TODAY_QUEUE, last_reading

pytestmark = pytest.mark.rasa


class Chat:
    def __init__(self, runtime: Runtime, language: str | None = None) -> None:
        self.runtime = runtime
        self.id = f"test-{uuid.uuid4().hex[:12]}"
        self.language = language
        self.turns: list[TurnResult] = []

    async def say(self, text: str) -> TurnResult:
        turn = await self.runtime.conversations.handle(
            self.id, text, channel="chat", language=self.language
        )
        self.turns.append(turn)
        return turn


def said(turn: TurnResult) -> str:
    return " ".join(r.text for r in turn.replies)


async def test_check_balance_identifies_before_reading_the_account(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime)
    first = await chat.say("buongiorno, vorrei sapere quanto devo pagare")
    assert first.route is not None and first.route.kind is RouteKind.FLOW
    assert "84,50" not in said(first)  # no account data before identification
    await chat.say("CL100001")
    done = await chat.say("20123")
    assert "84,50" in said(done)
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.id)
    assert (conversation.customer_id, conversation.verified, conversation.language) == (
        "CL100001",
        True,
        "it",
    )
    flows = await rasa_runtime.store.conversations.flow_results(chat.id)
    assert [(f.flow, f.outcome) for f in flows] == [("check_balance", "completed")]


async def test_wrong_postcode_does_not_verify_the_customer(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime, language="en")
    await chat.say("how much do I owe you?")
    await chat.say("my customer code is CL100003")
    wrong = await chat.say("20121")
    assert "129.90" not in said(wrong)
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.id)
    assert conversation.verified is False
    done = await chat.say("10138")
    assert "129.90" in said(done)


async def test_meter_reading_below_the_last_one_is_refused_then_stored(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("I'd like to submit my meter reading")
    await chat.say("CL100003")
    await chat.say("10138")
    low = await chat.say("100")
    assert "30110" in said(low)
    assert await last_reading(rasa_runtime, "CL100003") == 30110
    await chat.say("30500")
    assert await last_reading(rasa_runtime, "CL100003") == 30500


async def identified_for_a_reading(runtime: Runtime) -> tuple[Chat, int | None]:
    """An Italian chat whose customer (CL100005) is identified and asked for a reading, and
    that customer's last reading."""
    chat = Chat(runtime, language="it")
    await chat.say("vorrei fare l'autolettura del contatore")
    await chat.say("CL100005")
    await chat.say("80134")
    return chat, await last_reading(runtime, "CL100005")


async def test_meter_reading_must_be_digits(rasa_runtime: Runtime) -> None:
    chat, before = await identified_for_a_reading(rasa_runtime)
    await chat.say("tanti")
    assert await last_reading(rasa_runtime, "CL100005") == before
    await chat.say("60000")
    assert await last_reading(rasa_runtime, "CL100005") == 60000


@pytest.mark.parametrize(
    "text",
    [
        "mi avete addebitato due volte sulla carta 4111 1111 1111 1111",
        "la carta 5500 0000 0000 0004 è stata addebitata due volte, voglio un operatore",
        "you charged my card 4111-1111-1111-1111 twice",
    ],
)
async def test_a_masked_card_number_yields_no_entity_and_no_slot(
    rasa_runtime: Runtime, text: str
) -> None:
    """A masked span yields no entity: no group of a card's digits (its visible tail above all)
    may be read as a meter reading and carried into the handoff envelope."""
    chat = Chat(rasa_runtime)
    turn = await chat.say(text)
    assert all(e.entity != "meter_reading" for e in turn.entities)
    if turn.handoff_id is None:
        turn = await chat.say("voglio parlare con un operatore")
    assert turn.handoff_id is not None
    handoff = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert handoff is not None
    assert "meter_reading" not in handoff.envelope["slots"]
    assert all("1111 1111" not in line["text"] for line in handoff.envelope["transcript"])


async def test_known_outage_gives_its_eta_and_unknown_one_opens_a_ticket(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("non c'è corrente in tutta la via, c'è un guasto in zona?")
    known = await chat.say("20121")
    assert "20121" in said(known)
    assert not any(
        f.detail.get("ticket") for f in await rasa_runtime.store.conversations.flow_results(chat.id)
    )

    await chat.say("c'è un blackout anche a casa di mia madre")
    opened = await chat.say("il cap è 40137")
    flows = await rasa_runtime.store.conversations.flow_results(chat.id)
    ticket_id = flows[-1].detail["ticket"]
    assert ticket_id in said(opened)
    async with rasa_runtime.store.session() as s:
        ticket = await s.get(Ticket, ticket_id)
    assert ticket is not None and (ticket.postcode, ticket.state) == ("40137", "open")

    status = Chat(rasa_runtime)
    await status.say("a che punto è la mia pratica?")
    read_back = await status.say(ticket_id)
    assert ticket_id in said(read_back)
    assert (await rasa_runtime.store.conversations.flow_results(status.id))[-1].detail[
        "state"
    ] == "open"


async def test_postcode_must_have_five_digits(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime, language="en")
    await chat.say("is there a power cut in my area?")
    await chat.say("2012")
    assert await rasa_runtime.store.conversations.flow_results(chat.id) == []
    await chat.say("20121")
    assert [f.flow for f in await rasa_runtime.store.conversations.flow_results(chat.id)] == [
        "report_outage"
    ]


async def test_update_contact_changes_the_email_after_identification(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("vorrei cambiare l'indirizzo email")
    await chat.say("CL100006")
    await chat.say("40125")
    done = await chat.say("sara.nuova@example.org")
    assert "sara.nuova@example.org" in said(done)
    async with rasa_runtime.store.session() as s:
        customer = await s.get(Customer, "CL100006")
    assert customer is not None and customer.email == "sara.nuova@example.org"


async def test_request_for_a_human_stores_the_envelope_before_the_reply(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("I was charged twice on my last bill, this is wrong")
    # the billing topic went straight to the billing queue
    turn = chat.turns[-1]
    assert turn.handoff_id is not None
    assert turn.route is not None and turn.route.name == "billing"
    handoff = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert handoff is not None
    envelope = handoff.envelope
    assert envelope["queue"] == "billing" and envelope["reason"] == "topic"
    assert envelope["language"] == "en" and envelope["channel"] == "chat"
    assert envelope["intents"][-1]["intent"] == "billing_problem"
    assert envelope["transcript"][0]["text"].startswith("I was charged twice")
    assert envelope["state_history"][0]["state"] == "queued"
    conversation = await rasa_runtime.store.conversations.get_conversation(chat.id)
    assert conversation.state == "queued"


async def test_explicit_request_goes_to_the_topic_queue_when_a_topic_is_known(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("quanto devo pagare?")
    turn = await chat.say("voglio parlare con un operatore")
    assert turn.handoff_id is not None
    handoff = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert handoff is not None
    assert (handoff.queue, handoff.reason) == ("billing", "explicit_request")


async def test_explicit_request_without_topic_goes_to_general(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime)
    turn = await chat.say("can I talk to a real person please")
    assert turn.handoff_id is not None
    handoff = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert handoff is not None and handoff.queue == "general"


async def test_two_fallbacks_offer_a_human_and_yes_hands_over(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime, language="it")
    first = await chat.say("chi vincerà il campionato quest'anno?")
    assert first.route is not None and first.route.kind is RouteKind.FALLBACK
    assert first.handoff_id is None
    second = await chat.say("mi consigli una ricetta per la carbonara")
    assert any(r.buttons for r in second.replies)  # the offer, with yes/no buttons
    assert second.handoff_id is None
    accepted = await chat.say("sì")
    assert accepted.handoff_id is not None
    handoff = await rasa_runtime.store.handoffs.get_handoff(accepted.handoff_id)
    assert handoff is not None
    assert (handoff.queue, handoff.reason) == ("general", "consecutive_fallbacks")


async def test_failed_identification_hands_over_to_the_flows_queue(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("vorrei sapere il saldo della mia bolletta")
    await chat.say("CL999999")
    turn = await chat.say("CL999998")
    assert turn.handoff_id is not None
    handoff = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert handoff is not None
    assert (handoff.queue, handoff.reason) == ("billing", "failed_flow")
    flows = await rasa_runtime.store.conversations.flow_results(chat.id)
    assert [(f.flow, f.outcome) for f in flows] == [("check_balance", "failed")]


async def test_closed_queue_offers_a_callback_instead(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime, language="en")
    offer = await chat.say("I'd like a new fibre contract, what offers do you have?")
    assert offer.handoff_id is None
    assert any(r.buttons for r in offer.replies)
    booked = await chat.say("yes please")
    assert booked.handoff_id is not None
    handoff = await rasa_runtime.store.handoffs.get_handoff(booked.handoff_id)
    assert handoff is not None
    assert (handoff.queue, handoff.mode) == (CLOSED_TODAY_QUEUE, "callback")


async def test_verified_vip_goes_first_and_a_repeat_contact_is_raised(
    rasa_runtime: Runtime,
) -> None:
    vip = Chat(rasa_runtime)
    await vip.say("quanto devo pagare")
    await vip.say("CL100002")
    await vip.say("00183")
    turn = await vip.say("ho un addebito doppio sulla bolletta")
    assert turn.handoff_id is not None
    first = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert first is not None and first.priority == 2 and first.envelope["customer"]["verified"]

    again = Chat(rasa_runtime)
    await again.say("quanto devo pagare")
    await again.say("CL100002")
    await again.say("00183")
    turn = await again.say("mi avete addebitato due volte la stessa fattura")
    assert turn.handoff_id is not None
    second = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert second is not None and second.priority == 3
    previous = [c["conversation_id"] for c in second.envelope["previous_conversations"]]
    assert vip.id in previous


async def test_language_is_kept_after_the_first_message(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("hello there, good afternoon")
    turn = await chat.say("buongiorno")
    assert turn.language == "en"
    assert "Hello" in said(turn) or "hello" in said(turn).lower()


async def test_a_greeting_during_identification_is_not_taken_as_a_code(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("quanto devo pagare?")
    await chat.say("buongiorno")
    await chat.say("CL100001")
    done = await chat.say("20123")
    assert "84,50" in said(done)  # the greeting did not use up an identification attempt


async def test_a_new_topic_during_a_form_is_routed_without_finishing_it(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime)
    await chat.say("vorrei comunicare la lettura del contatore")
    turn = await chat.say("lasciamo stare, mi avete addebitato due volte la bolletta")
    assert turn.handoff_id is not None
    assert turn.slots.get("requested_slot") is None
    handoff = await rasa_runtime.store.handoffs.get_handoff(turn.handoff_id)
    assert handoff is not None and handoff.queue == "billing"


async def test_goodbye_ends_a_form(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime, language="en")
    await chat.say("I want to check my balance")
    bye = await chat.say("never mind, goodbye")
    assert "Goodbye" in said(bye) or "goodbye" in said(bye).lower()
    assert bye.slots.get("requested_slot") is None
    hello = await chat.say("hello")
    assert "customer code" not in said(hello)


async def test_bot_challenge_inside_a_form_is_answered_and_the_form_goes_on(
    rasa_runtime: Runtime,
) -> None:
    chat = Chat(rasa_runtime, language="en")
    await chat.say("I'd like to know the status of my ticket")
    answer = await chat.say("am I talking to a robot?")
    assert answer.slots.get("requested_slot") == "ticket_number"
    assert len(answer.replies) >= 2  # the answer, then the question again


async def test_an_unknown_language_gets_a_polite_reply_and_is_kept(rasa_runtime: Runtime) -> None:
    chat = Chat(rasa_runtime)
    turn = await chat.say("Guten Tag, ich möchte bitte meine Rechnung sehen")
    assert turn.error is None and turn.replies
    assert turn.language == "it"  # no evidence for a supported language: the default
    stored = await rasa_runtime.store.conversations.messages(chat.id)
    assert stored[0].text == "Guten Tag, ich möchte bitte meine Rechnung sehen"
    assert stored[0].status == "processed"
