"""Behaviour of the store of record, on SQLite and on PostgreSQL (see the ``store`` fixture)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from bot.clock import utcnow
from bot.conversation.state import ConversationState, MessageStatus, turn_key
from bot.errors import NotFound
from bot.store.protocols import ActionKey, NewHandoff, SlotAsked
from bot.store.sql.store import SqlStore
from bot.store.sql.tables import Conversation

CUSTOMER = "CL100001"


def make_handoff(
    conversation_id: str,
    *,
    customer_id: str | None = CUSTOMER,
    topic: str = "billing",
    envelope: dict[str, Any] | None = None,
    created_at: datetime | None = None,
    handoff_id: str | None = None,
    turn_message: str | None = None,
) -> NewHandoff:
    return NewHandoff(
        id=handoff_id or str(uuid.uuid4()),
        conversation_id=conversation_id,
        customer_id=customer_id,
        queue="billing",
        topic=topic,
        priority=1,
        reason="intent",
        mode="live",
        state="queued",
        envelope=envelope if envelope is not None else {"summary": "test"},
        created_at=created_at or utcnow(),
        channel="chat",
        language="it",
        turn_message=turn_message,
    )


def assert_aware_utc(value: datetime) -> None:
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0), f"{value!r} is not in UTC"


# conversations and messages


async def test_ensure_conversation_creates_one_row_under_concurrent_callers(
    store: SqlStore,
) -> None:
    results = await asyncio.gather(
        *(store.conversations.ensure_conversation("conc-1", "chat", "it") for _ in range(10))
    )

    assert {c.id for c in results} == {"conc-1"}
    async with store.session() as s:
        rows = await s.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.id == "conc-1")
        )
    assert rows == 1


async def test_ensure_conversation_returns_existing_row_when_called_again(store: SqlStore) -> None:
    first = await store.conversations.ensure_conversation("again-1", "phone", "en")
    second = await store.conversations.ensure_conversation("again-1", "chat", None)

    assert second.channel == "phone"
    assert second.language == "en"
    assert second.created_at == first.created_at


async def test_messages_come_back_in_insertion_order_with_sender_and_status(
    store: SqlStore,
) -> None:
    await store.conversations.ensure_conversation("msg-1", "chat")
    sent = [
        ("user", "ciao", "received"),
        ("bot", "Buongiorno, come posso aiutarla?", "sent"),
        ("user", "perché la bolletta è così alta? €", "processed"),
        ("agent", "la richiamo", "sent"),
    ]
    ids = [
        await store.conversations.add_message("msg-1", sender, body, status)
        for sender, body, status in sent
    ]

    got = await store.conversations.messages("msg-1")

    assert [m.id for m in got] == ids
    assert [(m.sender, m.text, m.status) for m in got] == sent


async def test_messages_of_another_conversation_are_not_returned(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("msg-a", "chat")
    await store.conversations.ensure_conversation("msg-b", "chat")
    await store.conversations.add_message("msg-a", "user", "mine")
    await store.conversations.add_message("msg-b", "user", "theirs")

    assert [m.text for m in await store.conversations.messages("msg-a")] == ["mine"]


async def test_mark_message_records_status_intent_and_confidence(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("mark-1", "chat")
    message_id = await store.conversations.add_message("mark-1", "user", "quanto devo pagare?")

    await store.conversations.mark_message(
        message_id, "processed", intent="check_balance", confidence=0.87
    )

    (message,) = await store.conversations.messages("mark-1")
    assert message.status == "processed"
    assert message.intent == "check_balance"
    assert message.confidence == pytest.approx(0.87)


# handoffs


async def test_add_handoff_round_trips_envelope_and_sets_conversation_state(
    store: SqlStore,
) -> None:
    await store.conversations.ensure_conversation("ho-1", "chat", "it")
    envelope = {
        "customer": {"id": CUSTOMER, "verified": True, "vip": False, "balance_cents": 8450},
        "transcript": [
            {"sender": "user", "text": "perché €", "confidence": 0.91},
            {"sender": "bot", "text": "La passo a un operatore", "confidence": None},
        ],
        "flows": [["check_balance", "failed"], []],
        "note": "perché €",
    }
    handoff = make_handoff("ho-1", envelope=envelope)

    await store.handoffs.add_handoff(handoff, "queued")

    stored = await store.handoffs.get_handoff(handoff.id)
    assert stored is not None
    assert stored.envelope == envelope
    assert (await store.conversations.get_conversation("ho-1")).state == "queued"


async def test_handoff_of_turn_finds_only_the_handoff_that_turn_made(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("ho-turn", "chat")
    earlier = make_handoff("ho-turn", turn_message="7")
    await store.handoffs.add_handoff(earlier, "queued")
    assert await store.handoffs.handoff_of_turn("ho-turn", "8") is None

    made = make_handoff("ho-turn", turn_message="8")
    await store.handoffs.add_handoff(made, "queued")
    found = await store.handoffs.handoff_of_turn("ho-turn", "8")
    assert found is not None and found.id == made.id
    assert await store.handoffs.handoff_of_turn("other-conversation", "8") is None


async def test_unanswered_messages_are_the_received_customer_messages_in_order(
    store: SqlStore,
) -> None:
    for conversation in ("un-a", "un-b", "un-c"):
        await store.conversations.ensure_conversation(conversation, "chat")
    first = await store.conversations.add_message("un-b", "user", "uno")
    await store.conversations.add_message("un-a", "user", "due", "processed")
    second = await store.conversations.add_message("un-a", "user", "tre")
    third = await store.conversations.add_message("un-b", "user", "quattro")
    await store.conversations.add_message("un-b", "bot", "risposta", "sent")
    await store.conversations.add_message("un-c", "user", "cinque", "failed")

    assert [m.id for m in await store.conversations.unanswered_messages("un-b")] == [first, third]
    assert [
        m.id for m in await store.conversations.unanswered_messages("un-b", before_id=third)
    ] == [first]
    assert [m.id for m in await store.conversations.unanswered_messages("un-a")] == [second]
    assert await store.conversations.conversations_with_unanswered() == ["un-b", "un-a"]
    await store.conversations.record_turn("un-b", first, "greet", 0.9, [])
    await store.conversations.record_turn("un-b", third, "greet", 0.9, [])
    assert await store.conversations.conversations_with_unanswered() == ["un-a"]


async def test_add_handoff_leaves_conversation_state_when_insert_fails(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("ho-dup", "chat")
    first = make_handoff("ho-dup")
    await store.handoffs.add_handoff(first, "queued")
    await store.conversations.update_conversation("ho-dup", state="bot")

    with pytest.raises(IntegrityError):
        await store.handoffs.add_handoff(make_handoff("ho-dup", handoff_id=first.id), "with_agent")

    assert (await store.conversations.get_conversation("ho-dup")).state == "bot"


async def test_recent_contact_on_topic_true_for_same_topic_in_other_conversation(
    store: SqlStore,
) -> None:
    await store.conversations.ensure_conversation("rc-old", "chat")
    await store.handoffs.add_handoff(make_handoff("rc-old", topic="billing"), "queued")

    assert await store.handoffs.recent_contact_on_topic(
        CUSTOMER, "billing", timedelta(hours=24), "rc-new"
    )


async def test_recent_contact_on_topic_false_for_other_topic(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("rc-old", "chat")
    await store.handoffs.add_handoff(make_handoff("rc-old", topic="billing"), "queued")

    assert not await store.handoffs.recent_contact_on_topic(
        CUSTOMER, "technical", timedelta(hours=24), "rc-new"
    )


async def test_recent_contact_on_topic_false_for_other_customer(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("rc-old", "chat")
    await store.handoffs.add_handoff(make_handoff("rc-old", customer_id="CL100002"), "queued")

    assert not await store.handoffs.recent_contact_on_topic(
        CUSTOMER, "billing", timedelta(hours=24), "rc-new"
    )


async def test_recent_contact_on_topic_false_for_same_conversation(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("rc-same", "chat")
    await store.handoffs.add_handoff(make_handoff("rc-same", topic="billing"), "queued")

    assert not await store.handoffs.recent_contact_on_topic(
        CUSTOMER, "billing", timedelta(hours=24), "rc-same"
    )


async def test_recent_contact_on_topic_false_when_handoff_older_than_window(
    store: SqlStore,
) -> None:
    await store.conversations.ensure_conversation("rc-old", "chat")
    old = make_handoff("rc-old", created_at=utcnow() - timedelta(hours=25))
    await store.handoffs.add_handoff(old, "queued")

    assert not await store.handoffs.recent_contact_on_topic(
        CUSTOMER, "billing", timedelta(hours=24), "rc-new"
    )
    assert await store.handoffs.recent_contact_on_topic(
        CUSTOMER, "billing", timedelta(hours=26), "rc-new"
    )


# datetimes


async def test_datetimes_come_back_aware_utc(store: SqlStore) -> None:
    conversation = await store.conversations.ensure_conversation("dt-1", "chat")
    await store.conversations.add_message("dt-1", "user", "ciao")
    rome_summer = timezone(timedelta(hours=2))
    given = datetime(2024, 7, 15, 19, 30, 5, 123456, tzinfo=rome_summer)
    handoff = make_handoff("dt-1", created_at=given)
    await store.handoffs.add_handoff(handoff, "queued")

    stored_conversation = await store.conversations.get_conversation(conversation.id)
    (message,) = await store.conversations.messages("dt-1")
    stored_handoff = await store.handoffs.get_handoff(handoff.id)

    assert stored_handoff is not None
    for value in (
        stored_conversation.created_at,
        stored_conversation.updated_at,
        message.created_at,
        stored_handoff.created_at,
    ):
        assert_aware_utc(value)
    assert stored_handoff.created_at == given
    assert stored_handoff.created_at.hour == 17


async def test_naive_datetime_is_rejected_and_nothing_is_stored(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("dt-naive", "chat")
    handoff = make_handoff("dt-naive", created_at=datetime(2024, 7, 15, 12, 0))

    with pytest.raises((ValueError, StatementError)) as caught:
        await store.handoffs.add_handoff(handoff, "queued")

    assert "naive" in str(caught.value)
    assert await store.handoffs.get_handoff(handoff.id) is None
    assert (await store.conversations.get_conversation("dt-naive")).state == "bot"


# seeding and the engine


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_sqlite_file_is_in_wal_mode(store: SqlStore) -> None:
    async with store.engine.connect() as conn:
        mode = await conn.scalar(text("PRAGMA journal_mode"))
        synchronous = await conn.scalar(text("PRAGMA synchronous"))

    assert str(mode).lower() == "wal"
    assert synchronous == 1  # NORMAL: durable across process crashes, one fsync per checkpoint


async def test_get_conversation_raises_not_found_for_unknown_id(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        await store.conversations.get_conversation("no-such-conversation")


async def test_open_adds_columns_missing_from_an_older_database(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///" + str(tmp_path / "old.db")
    store = await SqlStore.open(url)
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE conversations DROP COLUMN rating")
        await conn.exec_driver_sql("ALTER TABLE handoffs DROP COLUMN disposition")
    await store.close()
    reopened = await SqlStore.open(url)
    try:
        await reopened.conversations.ensure_conversation("old-1", "chat")
        await reopened.conversations.update_conversation("old-1", rating=4)
        assert (await reopened.conversations.get_conversation("old-1")).rating == 4
    finally:
        await reopened.close()


async def test_a_client_id_is_stored_once_per_conversation(store: SqlStore) -> None:
    await store.conversations.ensure_conversation("cid-1", "chat")
    await store.conversations.ensure_conversation("cid-2", "chat")
    first = await store.conversations.add_message_once("cid-1", "user", "ciao", client_id="m-1")
    again = await store.conversations.add_message_once("cid-1", "user", "ciao", client_id="m-1")
    elsewhere = await store.conversations.add_message_once("cid-2", "user", "ciao", client_id="m-1")
    assert first[1] and not again[1] and elsewhere[1]
    assert first[0].id == again[0].id != elsewhere[0].id
    assert [m.text for m in await store.conversations.messages("cid-1")] == ["ciao"]


async def test_receive_stores_a_message_once_and_says_what_came_before(store: SqlStore) -> None:
    conversations = store.conversations
    first = await conversations.receive("c-recv", "chat", "buongiorno", client_id="m1")
    assert first.created and first.new_conversation and not first.earlier_unanswered
    assert (first.conversation.id, first.conversation.channel) == ("c-recv", "chat")
    assert (first.message.text, first.message.status, first.message.sender) == (
        "buongiorno",
        "received",
        "user",
    )
    second = await conversations.receive("c-recv", "chat", "ci sei?", client_id="m2")
    assert second.created and not second.new_conversation
    assert second.earlier_unanswered  # the first one's turn never completed
    assert second.message.id > first.message.id
    again = await conversations.receive("c-recv", "chat", "ci sei?", client_id="m2")
    assert not again.created and again.message.id == second.message.id
    assert again.earlier_unanswered  # m1, before it, is still unanswered
    await conversations.mark_message(first.message.id, MessageStatus.PROCESSED)
    await conversations.mark_message(second.message.id, MessageStatus.PROCESSED)
    third = await conversations.receive("c-recv", "chat", "grazie", client_id="m3")
    assert not third.earlier_unanswered
    rows = await conversations.messages("c-recv")
    assert [m.text for m in rows] == ["buongiorno", "ci sei?", "grazie"]


async def test_record_turn_marks_the_message_stores_replies_and_notes_the_slot(
    store: SqlStore,
) -> None:
    conversations = store.conversations
    received = await conversations.receive("c-turn", "chat", "vorrei pagare", client_id="x")
    key = turn_key(received.message.id)
    await store.journal.record(ActionKey("c-turn", key, "action_verify", 0), 200, {"events": []})
    replies = await conversations.record_turn(
        "c-turn",
        received.message.id,
        "check_balance",
        0.93,
        [("Mi dà il codice cliente?", []), ("Grazie", [{"title": "Sì", "payload": "/affirm"}])],
        awaiting=SlotAsked("customer_code"),
    )
    assert [(r.text, r.sender, r.status) for r in replies] == [
        ("Mi dà il codice cliente?", "bot", "sent"),
        ("Grazie", "bot", "sent"),
    ]
    assert replies[0].id < replies[1].id and replies[0].id > received.message.id
    assert replies[1].buttons == [{"title": "Sì", "payload": "/affirm"}]
    (stored, *_) = await conversations.messages("c-turn")
    assert (stored.status, stored.intent, stored.confidence) == ("processed", "check_balance", 0.93)
    assert (await conversations.get_conversation("c-turn")).awaiting_slot == "customer_code"
    assert not await store.journal.has_entries("c-turn", key)  # the turn's journal is dropped
    none = await conversations.record_turn("c-turn", replies[0].id, None, None, [])
    assert none == []


async def test_a_message_to_a_conversation_with_a_person_is_relayed_not_a_turn(
    store: SqlStore,
) -> None:
    conversations = store.conversations
    await conversations.receive("c-rel", "chat", "voglio un operatore", client_id="a")
    await conversations.update_conversation("c-rel", state=ConversationState.QUEUED)
    waiting = await conversations.receive("c-rel", "chat", "ci siete?", client_id="b")
    assert waiting.message.status in ("relayed", "received")  # PostgreSQL: relayed at once
    if store.is_postgres:
        assert waiting.message.status == "relayed"
    assert (await conversations.get_conversation("c-rel")).state == "queued"
