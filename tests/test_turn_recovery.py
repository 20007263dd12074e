"""A customer message whose turn a crash interrupted is answered once, in order, afterwards.

The crash is simulated here the way it leaves the store: the message committed as ``received``
(acknowledged to the customer) and nothing after it. ``tests/test_crash_kills.py`` kills a real
``triage serve`` at every point of a turn.
"""

from __future__ import annotations

import uuid
from typing import Any

from bot.actions.context import ActionContext
from bot.actions.tracker import ActionResult
from bot.actions.webhook import action_registry, run_action
from bot.backoffice.fake import FakeBackOffice
from bot.config.routing import load_routing
from bot.conversation.service import ConversationService
from bot.domain import FlowContext, OperationSpec, Tracker
from bot.nlu.fake import FakeNluClient
from bot.store.protocols import ActionKey
from bot.store.sql.action_journal import ActionJournal
from bot.store.sql.store import SqlStore
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
    await store.conversations.ensure_conversation(conversation_id, "chat", "it")
    row, _ = await store.conversations.add_message_once(conversation_id, "user", text, **extra)
    return row.id


async def transcript(store: SqlStore, conversation_id: str) -> list[tuple[str, str, str]]:
    return [
        (m.sender, m.text, m.status) for m in await store.conversations.messages(conversation_id)
    ]


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
    statuses = [
        (m.text, m.status) for m in await store.conversations.messages(cid) if m.sender == "user"
    ]
    assert statuses == [("uno", "processed"), ("due", "processed"), ("tre", "processed")]
    assert await store.conversations.conversations_with_unanswered() == []


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
    await store.conversations.ensure_conversation(cid, "chat", "it")
    await store.handoffs.add_handoff(make_handoff(cid), "queued")
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
    made = await store.handoffs.add_handoff(make_handoff(cid, turn_message=str(message)), "queued")
    nlu.slots[cid] = {"handoff_id": made.id}

    (turn,) = await service.recover(cid)

    assert not turn.relayed and nlu.turns == [(cid, "voglio un operatore")]
    assert turn.handoff_id == made.id
    assert [r.text for r in turn.stored_replies] == ["La passo a un collega."]


async def test_a_turn_that_had_run_actions_is_run_again_when_queued(store: SqlStore) -> None:
    nlu = FakeNluClient()
    service = service_with(store, nlu)
    cid = new_conversation_id()
    await store.conversations.ensure_conversation(cid, "chat", "it")
    await store.handoffs.add_handoff(make_handoff(cid), "queued")
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


def user_event(key: str, *, rerun: bool = False) -> dict[str, Any]:
    metadata = {"rerun": True} if rerun else {}
    return {
        "event": "user",
        "text": "ciao",
        "message_id": key,
        "parse_data": {},
        **({"metadata": metadata} if metadata else {}),
    }


def counting(runs: list[str], *, effects: bool) -> Any:
    async def count_and_answer(ctx: ActionContext, tracker: Any) -> ActionResult:
        runs.append(tracker.sender_id)
        result = ActionResult().utter("utter_run", n=len(runs))
        result.effects = effects
        return result

    return count_and_answer


async def test_an_action_that_changed_something_answers_from_the_journal_when_run_again(
    store: SqlStore,
) -> None:
    runs: list[str] = []
    registry = {"action_count": counting(runs, effects=True)}
    ctx = ActionContext(store, ROUTING, FakeBackOffice())
    cid = new_conversation_id()
    listen = {"event": "action", "name": "action_listen"}

    first = await run_action(
        registry, ctx, action_call(cid, "action_count", [listen, user_event("5")])
    )
    rerun = [listen, user_event("5", rerun=True)]
    again = await run_action(registry, ctx, action_call(cid, "action_count", rerun))
    # the same action a second time within the turn is a new occurrence: it runs
    later = [*rerun, {"event": "action", "name": "action_count"}]
    second = await run_action(registry, ctx, action_call(cid, "action_count", later))
    # the next customer message is a new turn
    next_turn = [*later, user_event("6", rerun=True)]
    third = await run_action(registry, ctx, action_call(cid, "action_count", next_turn))

    assert first == again == (200, {"events": [], "responses": [{"response": "utter_run", "n": 1}]})
    assert second[1]["responses"][0]["n"] == 2 and third[1]["responses"][0]["n"] == 3
    assert len(runs) == 3


async def test_an_action_that_changed_nothing_is_not_journaled_and_runs_again(
    store: SqlStore,
) -> None:
    runs: list[str] = []
    registry = {"action_count": counting(runs, effects=False)}
    ctx = ActionContext(store, ROUTING, FakeBackOffice())
    cid = new_conversation_id()

    await run_action(registry, ctx, action_call(cid, "action_count", [user_event("5")]))
    await run_action(registry, ctx, action_call(cid, "action_count", [user_event("5", rerun=True)]))

    assert len(runs) == 2
    assert not await ActionJournal(store).has_entries(cid, "5")


async def test_a_first_run_never_reads_the_journal(store: SqlStore) -> None:
    """Only a turn the gateway runs again looks its actions up: a first run (every turn but
    those after a crash) costs no read of the journal."""
    runs: list[str] = []
    registry = {"action_count": counting(runs, effects=True)}
    ctx = ActionContext(store, ROUTING, FakeBackOffice())
    cid = new_conversation_id()
    await ActionJournal(store).record(
        ActionKey(cid, "5", "action_count", 0), 200, {"events": [], "responses": []}
    )

    answer = await run_action(registry, ctx, action_call(cid, "action_count", [user_event("5")]))

    assert len(runs) == 1 and answer[1]["responses"][0]["n"] == 1


async def test_actions_outside_a_stored_turn_are_not_journaled(store: SqlStore) -> None:
    runs: list[str] = []
    answer = counting(runs, effects=True)
    ctx = ActionContext(store, ROUTING, FakeBackOffice())
    cid = new_conversation_id()
    no_key = action_call(cid, "action_x", [{"event": "user", "text": "ciao"}])
    session = action_call(cid, "action_session_start", [user_event("3", rerun=True)])
    for call in (no_key, no_key, session, session):
        await run_action({"action_x": answer, "action_session_start": answer}, ctx, call)
    assert len(runs) == 4


async def test_a_packs_action_is_journaled_when_it_wrote_to_the_back_office(
    store: SqlStore,
) -> None:
    async def answer(args: Any) -> dict[str, Any]:
        return {"ok": True}

    back_office = FakeBackOffice(operations={"look": answer, "change": answer})
    operations = {"look": OperationSpec("look", True), "change": OperationSpec("change", False)}
    ctx = ActionContext(store, ROUTING, back_office, operations)

    async def reads(flow: FlowContext, tracker: Tracker) -> ActionResult:
        await flow.call("look", customer_id="C1")
        return ActionResult()

    async def writes(flow: FlowContext, tracker: Tracker) -> ActionResult:
        await flow.call("change", customer_id="C1")
        return ActionResult()

    registry = action_registry({"action_reads": reads, "action_writes": writes})
    cid = new_conversation_id()
    for name in ("action_reads", "action_writes"):
        await run_action(registry, ctx, action_call(cid, name, [user_event("7")]))
    for name in ("action_reads", "action_writes"):
        await run_action(registry, ctx, action_call(cid, name, [user_event("7", rerun=True)]))

    journal = ActionJournal(store)
    assert await journal.recorded(ActionKey(cid, "7", "action_writes", 0)) is not None
    assert await journal.recorded(ActionKey(cid, "7", "action_reads", 0)) is None
    # run again, the read is made again and the write is not
    assert [c.operation for c in back_office.calls] == ["look", "change", "look"]
    keys = [c.idempotency_key for c in back_office.calls]
    assert keys[0] == keys[2]  # the same call of the same turn: the same idempotency key
