"""A customer message whose turn a crash interrupted is answered once, in order, afterwards.

The crash is simulated here the way it leaves the store: the message committed as ``received``
(acknowledged to the customer) and nothing after it. ``tests/test_crash_kills.py`` kills a real
``triage serve`` at every point of a turn.
"""

from __future__ import annotations

import uuid
from typing import Any

from bot.actions.context import ActionContext
from bot.actions.webhook import run_action
from bot.backoffice.fake import FakeBackOffice
from bot.core.conversation import ConversationService
from bot.core.routing import load_routing
from bot.domain import RejectAction
from bot.nlu.fake import FakeNluClient
from bot.store.action_journal import ActionJournal, ActionKey
from bot.store.sql import SqlStore
from bot.store.tables import Handoff
from tests.conftest import ENERGY_PACK
from tests.test_store import make_handoff

ROUTING = load_routing(ENERGY_PACK / "routing.yml")


def new_conversation_id() -> str:
    return f"r-{uuid.uuid4().hex[:12]}"


def service_with(store: SqlStore, nlu: FakeNluClient) -> ConversationService:
    return ConversationService(store, nlu, ROUTING, 2000)


async def crashed_after_storing(
    store: SqlStore, conversation_id: str, text: str, **extra: Any
) -> int:
    """What a process killed after acknowledging a message leaves: the message, received."""
    await store.ensure_conversation(conversation_id, "chat", "it")
    row, _ = await store.add_message_once(conversation_id, "user", text, **extra)
    return row.id


async def transcript(store: SqlStore, conversation_id: str) -> list[tuple[str, str, str]]:
    return [(m.sender, m.text, m.status) for m in await store.messages(conversation_id)]


async def test_an_unanswered_message_is_answered_before_the_next_one(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    first = await crashed_after_storing(store, cid, "voglio parlare con un operatore")

    turn = await service.handle(cid, "ci siete?", channel="chat")

    assert [t.message_id for t in turn.recovered] == [first]
    assert [r.text for r in turn.recovered[0].replies] == ["echo: voglio parlare con un operatore"]
    assert await transcript(store, cid) == [
        ("user", "voglio parlare con un operatore", "processed"),
        ("user", "ci siete?", "processed"),
        ("bot", "echo: voglio parlare con un operatore", "sent"),
        ("bot", "echo: ci siete?", "sent"),
    ]
    # in order, each once, each with its own message key
    assert nlu.turns == [(cid, "voglio parlare con un operatore"), (cid, "ci siete?")]
    assert nlu.message_keys == [str(first), str(turn.message_id)]


async def test_recover_answers_each_unanswered_message_once_in_order(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    ids = [await crashed_after_storing(store, cid, text) for text in ("uno", "due", "tre")]

    turns = await service.recover(cid)
    again = await service.recover(cid)

    assert [t.message_id for t in turns] == ids
    assert again == []
    assert [text for _, text in nlu.turns] == ["uno", "due", "tre"]
    statuses = [(m.text, m.status) for m in await store.messages(cid) if m.sender == "user"]
    assert statuses == [("uno", "processed"), ("due", "processed"), ("tre", "processed")]
    assert await store.conversations_with_unanswered() == []


async def test_a_resent_message_whose_turn_never_completed_is_answered(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    first = await crashed_after_storing(store, cid, "buongiorno", client_id="m1")

    resent = await service.handle(cid, "buongiorno", channel="chat", client_id="m1")
    resent_again = await service.handle(cid, "buongiorno", channel="chat", client_id="m1")

    assert resent.message_id == first and not resent.duplicate
    assert [r.text for r in resent.replies] == ["echo: buongiorno"]
    assert resent_again.duplicate and resent_again.message_id == first
    assert nlu.turns == [(cid, "buongiorno")]


async def test_a_resend_with_other_text_is_answered_from_what_was_stored(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    await crashed_after_storing(store, cid, "buongiorno", client_id="m1")

    await service.handle(cid, "tutt'altro", channel="chat", client_id="m1")

    assert nlu.turns == [(cid, "buongiorno")]


async def test_a_quick_reply_is_taken_up_again_with_its_payload(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    await crashed_after_storing(store, cid, "Sì", payload="/affirm")

    await service.recover(cid)

    assert nlu.turns == [(cid, "/affirm")]


async def test_a_message_that_arrived_while_queued_is_relayed_not_run(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    await store.ensure_conversation(cid, "chat", "it")
    await store.add_handoff(make_handoff(cid), "queued")
    await crashed_after_storing(store, cid, "sono ancora qui")

    (turn,) = await service.recover(cid)

    assert turn.relayed and nlu.turns == []
    assert await transcript(store, cid) == [("user", "sono ancora qui", "relayed")]


async def test_the_turn_that_queued_the_conversation_is_run_again_not_relayed(
    store: SqlStore,
) -> None:
    """Killed after the handoff was committed and before the turn was recorded: the customer
    is queued, and the message must still get its turn (the reply saying so), with the
    handoff it made, not a second one."""
    nlu = FakeNluClient(lambda text: ("request_human", ["La passo a un collega."]))
    service = service_with(store, nlu)
    cid = new_conversation_id()
    message = await crashed_after_storing(store, cid, "voglio un operatore")
    made: Handoff = make_handoff(cid)
    made.turn_message = str(message)
    await store.add_handoff(made, "queued")
    nlu.slots[cid] = {"handoff_id": made.id}

    (turn,) = await service.recover(cid)

    assert not turn.relayed and nlu.turns == [(cid, "voglio un operatore")]
    assert turn.handoff_id == made.id
    assert [r.text for r in turn.stored_replies] == ["La passo a un collega."]


async def test_a_turn_that_had_run_actions_is_run_again_when_queued(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    await store.ensure_conversation(cid, "chat", "it")
    await store.add_handoff(make_handoff(cid), "queued")
    message = await crashed_after_storing(store, cid, "il mio codice è CL100001")
    await ActionJournal(store).record(
        ActionKey(cid, str(message), "validate_identify_form", 0), 200, {"events": []}
    )

    (turn,) = await service.recover(cid)

    assert not turn.relayed and len(nlu.turns) == 1
    # the turn is recorded: what the journal kept for it is gone with it
    assert not await ActionJournal(store).has_entries(cid, str(message))


# --- the action journal in the webhook ---------------------------------------------------


def action_call(conversation_id: str, action: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "next_action": action,
        "sender_id": conversation_id,
        "tracker": {"sender_id": conversation_id, "slots": {}, "events": events},
    }


def user_event(key: str) -> dict[str, Any]:
    return {"event": "user", "text": "ciao", "message_id": key, "parse_data": {}}


async def test_an_action_run_again_in_the_same_turn_answers_from_the_journal(
    store: SqlStore,
) -> None:
    runs: list[str] = []

    async def count_and_answer(ctx: ActionContext, tracker: Any) -> Any:
        from bot.actions.tracker import ActionResult

        runs.append(tracker.sender_id)
        return ActionResult().utter("utter_run", n=len(runs))

    registry = {"action_count": count_and_answer}
    ctx = ActionContext(store, ROUTING, FakeBackOffice())
    cid = new_conversation_id()
    events = [{"event": "action", "name": "action_listen"}, user_event("5")]

    first = await run_action(registry, ctx, action_call(cid, "action_count", events))
    again = await run_action(registry, ctx, action_call(cid, "action_count", events))
    # the same action a second time within the turn is a new occurrence: it runs
    later = [*events, {"event": "action", "name": "action_count"}]
    second = await run_action(registry, ctx, action_call(cid, "action_count", later))
    # the next customer message is a new turn
    next_turn = [*later, user_event("6")]
    third = await run_action(registry, ctx, action_call(cid, "action_count", next_turn))

    assert first == again == (200, {"events": [], "responses": [{"response": "utter_run", "n": 1}]})
    assert second[1]["responses"][0]["n"] == 2 and third[1]["responses"][0]["n"] == 3
    assert len(runs) == 3


async def test_a_rejection_is_journaled_and_answered_again(store: SqlStore) -> None:
    runs: list[int] = []

    async def reject(ctx: ActionContext, tracker: Any) -> Any:
        runs.append(1)
        raise RejectAction("nothing to validate")

    ctx = ActionContext(store, ROUTING, FakeBackOffice())
    cid = new_conversation_id()
    call = action_call(cid, "validate_x", [user_event("9")])
    first = await run_action({"validate_x": reject}, ctx, call)
    again = await run_action({"validate_x": reject}, ctx, call)
    assert first == again and first[0] == 400 and runs == [1]


async def test_actions_outside_a_stored_turn_are_not_journaled(store: SqlStore) -> None:
    runs: list[int] = []

    async def answer(ctx: ActionContext, tracker: Any) -> Any:
        from bot.actions.tracker import ActionResult

        runs.append(1)
        return ActionResult()

    ctx = ActionContext(store, ROUTING, FakeBackOffice())
    cid = new_conversation_id()
    no_key = action_call(cid, "action_x", [{"event": "user", "text": "ciao"}])
    session = action_call(cid, "action_session_start", [user_event("3")])
    for call in (no_key, no_key, session, session):
        await run_action({"action_x": answer, "action_session_start": answer}, ctx, call)
    assert len(runs) == 4
