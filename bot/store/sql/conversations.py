"""``SqlConversations``: conversations, their messages and flow outcomes in the store of record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    String,
    Table,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from bot.clock import utcnow
from bot.conversation.state import WITH_A_PERSON, ConversationState, MessageStatus, turn_key
from bot.errors import NotFound
from bot.store.protocols import Received, SlotAsked
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import ActionCall, Conversation, FlowResult, Message, UtcDateTime

# the tables, for the statements written in SQLAlchemy Core
CONVERSATIONS = cast(Table, Conversation.__table__)
MESSAGES = cast(Table, Message.__table__)
ACTION_CALLS = cast(Table, ActionCall.__table__)


class SqlConversations:
    def __init__(self, db: Sessions) -> None:
        self.db = db

    async def ensure_conversation(
        self, conversation_id: str, channel: str, language: str | None = None
    ) -> Conversation:
        """The conversation with this id, created on first use; safe under concurrent callers."""
        return (await self._ensure(conversation_id, channel, language))[0]

    async def _ensure(
        self, conversation_id: str, channel: str, language: str | None = None
    ) -> tuple[Conversation, bool]:
        """(the conversation, whether this call created it)."""
        async with self.db.single() as s:
            found = await s.get(Conversation, conversation_id)
            if found is not None:
                return found, False
        now = utcnow()
        row = Conversation(
            id=conversation_id,
            channel=channel,
            language=language,
            customer_id=None,
            verified=False,
            state=ConversationState.BOT,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.db.session() as s:
                s.add(row)
        except IntegrityError:
            async with self.db.session() as s:
                existing = await s.get(Conversation, conversation_id)
                if existing is None:
                    raise
                return existing, False
        return row, True

    async def get_conversation(self, conversation_id: str) -> Conversation:
        async with self.db.single() as s:
            found = await s.get(Conversation, conversation_id)
        if found is None:
            raise NotFound(f"conversation {conversation_id!r} does not exist")
        return found

    async def update_conversation(self, conversation_id: str, **values: Any) -> None:
        allowed = {
            "language",
            "customer_id",
            "verified",
            "state",
            "rating",
            "closed_at",
            "awaiting_slot",
        }
        if not values.keys() <= allowed:
            raise ValueError(f"cannot update conversation fields {sorted(values.keys() - allowed)}")
        async with self.db.single() as s:
            await s.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(**values, updated_at=utcnow())
            )

    async def add_message(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        status: MessageStatus = MessageStatus.RECEIVED,
    ) -> int:
        row, _ = await self.add_message_once(conversation_id, sender, text, status)
        return row.id

    async def add_message_once(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        status: MessageStatus = MessageStatus.RECEIVED,
        *,
        client_id: str | None = None,
        buttons: list[dict[str, str]] | None = None,
        payload: str | None = None,
    ) -> tuple[Message, bool]:
        """(row, created): a message with a ``client_id`` already stored is not stored again."""
        text = text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
        row = Message(
            conversation_id=conversation_id,
            sender=sender,
            text=text,
            status=status,
            intent=None,
            confidence=None,
            created_at=utcnow(),
            client_id=client_id,
            buttons=buttons or None,
            payload=payload,
        )
        try:
            async with self.db.session() as s:
                s.add(row)
                await s.flush()
                return row, True
        except IntegrityError:
            if client_id is None:
                raise
            async with self.db.session() as s:
                existing = await s.scalar(
                    select(Message).where(
                        Message.conversation_id == conversation_id, Message.client_id == client_id
                    )
                )
            if existing is None:
                raise
            return existing, False

    async def receive(
        self,
        conversation_id: str,
        channel: str,
        text: str,
        *,
        client_id: str | None = None,
        payload: str | None = None,
    ) -> Received:
        """Store a customer message, creating its conversation on first use, and say whether
        earlier customer messages of it are unanswered (a crash interrupted their turns).

        On PostgreSQL this is one statement (one round trip, committed by itself): the
        conversation upserted, the message inserted, the earlier ones looked for. A message
        whose ``client_id`` is already stored takes the general path."""
        if self.db.is_postgres:
            received = await self._receive_in_one_statement(
                conversation_id, channel, text, client_id, payload
            )
            if received is not None:
                return received
        conversation, fresh = await self._ensure(conversation_id, channel)
        row, created = await self.add_message_once(
            conversation_id, "user", text, client_id=client_id, payload=payload
        )
        earlier = await self.unanswered_messages(conversation_id, before_id=row.id)
        return Received(conversation, row, created, bool(earlier), new_conversation=fresh)

    async def _receive_in_one_statement(
        self,
        conversation_id: str,
        channel: str,
        text: str,
        client_id: str | None,
        payload: str | None,
    ) -> Received | None:
        now = utcnow()
        conversations, messages = CONVERSATIONS, MESSAGES
        new_conversation = (
            pg_insert(conversations)
            .values(
                id=conversation_id,
                channel=channel,
                language=None,
                customer_id=None,
                verified=False,
                state=ConversationState.BOT.value,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(*conversations.c)
            .cte("new_conversation")
        )
        conversation = union_all(
            select(*new_conversation.c, literal(True).label("fresh")),
            select(*conversations.c, literal(False).label("fresh")).where(
                conversations.c.id == conversation_id
            ),
        ).cte("conversation")
        # with a person already (queued or with an agent), the message is relayed, not a turn
        status = case(
            (
                conversation.c.state.in_([state.value for state in WITH_A_PERSON]),
                MessageStatus.RELAYED.value,
            ),
            else_=MessageStatus.RECEIVED.value,
        )
        new_message = (
            pg_insert(messages)
            .from_select(
                [
                    "conversation_id",
                    "sender",
                    "text",
                    "status",
                    "created_at",
                    "client_id",
                    "payload",
                ],
                select(
                    conversation.c.id,
                    literal("user"),
                    literal(text.replace("\x00", "\ufffd")),
                    status,
                    literal(now, UtcDateTime()),
                    literal(client_id, String()),
                    literal(payload, String()),
                ).select_from(conversation),
            )
            .on_conflict_do_nothing(index_elements=["conversation_id", "client_id"])
            .returning(*messages.c)
            .cte("new_message")
        )
        # the new message is not in this statement's snapshot: what it finds came before
        earlier = (
            select(messages.c.id)
            .where(
                messages.c.conversation_id == conversation_id,
                messages.c.sender == "user",
                messages.c.status == MessageStatus.RECEIVED.value,
            )
            .exists()
        )
        query = select(
            *conversation.c,
            *(column.label(f"m_{column.name}") for column in new_message.c),
            earlier.label("earlier"),
        ).select_from(conversation.outerjoin(new_message, true()))
        async with self.db.single() as s:
            found = (await s.execute(query)).mappings().one()
        if found["m_id"] is None:  # already stored (a resend): the general path
            return None
        return Received(
            Conversation(**{c.name: found[c.name] for c in conversations.c}),
            Message(**{c.name: found[f"m_{c.name}"] for c in messages.c}),
            True,
            bool(found["earlier"]),
            new_conversation=bool(found["fresh"]),
        )

    async def record_turn(
        self,
        conversation_id: str,
        message_id: int,
        intent: str | None,
        confidence: float | None,
        replies: Sequence[tuple[str, list[dict[str, str]]]],
        *,
        awaiting: SlotAsked | None = None,
    ) -> list[Message]:
        """Mark the user message processed and store the bot's replies (text, buttons) in one
        transaction; returns the replies' rows. The turn's action answers kept in case it had
        to be run again are dropped in the same transaction, and the slot the dialogue now asks
        for is noted on the conversation when it changed (``awaiting``)."""
        now = utcnow()
        if self.db.is_postgres:
            return await self._record_turn_in_one_statement(
                conversation_id, message_id, intent, confidence, replies, awaiting, now
            )
        async with self.db.session() as s:
            await s.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=MessageStatus.PROCESSED, intent=intent, confidence=confidence)
            )
            await s.execute(
                delete(ActionCall).where(
                    ActionCall.conversation_id == conversation_id,
                    ActionCall.turn_message == turn_key(message_id),
                )
            )
            if awaiting is not None:
                await s.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation_id)
                    .values(awaiting_slot=awaiting.slot)
                )
            rows = [
                Message(
                    conversation_id=conversation_id,
                    sender="bot",
                    text=text,
                    status=MessageStatus.SENT,
                    intent=None,
                    confidence=None,
                    created_at=now,
                    buttons=buttons or None,
                )
                for text, buttons in replies
            ]
            s.add_all(rows)
            await s.flush()
            return rows

    async def _record_turn_in_one_statement(
        self,
        conversation_id: str,
        message_id: int,
        intent: str | None,
        confidence: float | None,
        replies: Sequence[tuple[str, list[dict[str, str]]]],
        awaiting: SlotAsked | None,
        now: datetime,
    ) -> list[Message]:
        """``record_turn`` as one statement (data-modifying CTEs): atomic as a transaction
        would be, in one round trip."""
        messages, calls = MESSAGES, ACTION_CALLS
        changes = [
            update(messages)
            .where(messages.c.id == message_id)
            .values(status=MessageStatus.PROCESSED.value, intent=intent, confidence=confidence)
            .returning(messages.c.id)
            .cte("processed"),
            delete(calls)
            .where(
                calls.c.conversation_id == conversation_id,
                calls.c.turn_message == turn_key(message_id),
            )
            .returning(calls.c.action)
            .cte("forgotten"),
        ]
        if awaiting is not None:
            conversations = CONVERSATIONS
            changes.append(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(awaiting_slot=awaiting.slot)
                .returning(conversations.c.id)
                .cte("asked")
            )
        if not replies:
            async with self.db.single() as s:
                await s.execute(select(literal(1)).add_cte(*changes))
            return []
        statement = (
            insert(messages)
            .values(
                [
                    {
                        "conversation_id": conversation_id,
                        "sender": "bot",
                        "text": text,
                        "status": MessageStatus.SENT.value,
                        "intent": None,
                        "confidence": None,
                        "created_at": now,
                        "buttons": buttons or None,
                        "client_id": None,
                        "payload": None,
                    }
                    for text, buttons in replies
                ]
            )
            .returning(*messages.c)
            .add_cte(*changes)
        )
        async with self.db.single() as s:
            rows = (await s.execute(statement)).mappings().all()
        return sorted(
            (Message(**{c.name: row[c.name] for c in messages.c}) for row in rows),
            key=lambda m: m.id,
        )

    async def mark_message(
        self,
        message_id: int,
        status: MessageStatus,
        intent: str | None = None,
        confidence: float | None = None,
    ) -> None:
        async with self.db.single() as s:
            await s.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=status, intent=intent, confidence=confidence)
            )

    async def message(self, message_id: int) -> Message | None:
        async with self.db.single() as s:
            return await s.get(Message, message_id)

    async def messages(self, conversation_id: str, after_id: int = 0) -> Sequence[Message]:
        async with self.db.single() as s:
            result = await s.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id, Message.id > after_id)
                .order_by(Message.id)
            )
            return result.all()

    async def unanswered_messages(
        self, conversation_id: str, before_id: int | None = None
    ) -> Sequence[Message]:
        """Customer messages stored (and acknowledged) whose turn never completed, oldest first:
        the process handling them died. ``before_id`` keeps only older ones."""
        query = select(Message).where(
            Message.conversation_id == conversation_id,
            Message.sender == "user",
            Message.status == MessageStatus.RECEIVED,
        )
        if before_id is not None:
            query = query.where(Message.id < before_id)
        async with self.db.single() as s:
            return (await s.scalars(query.order_by(Message.id))).all()

    async def conversations_with_unanswered(self) -> list[str]:
        """Conversations holding unanswered customer messages, the longest waiting first."""
        async with self.db.session() as s:
            rows = await s.execute(
                select(Message.conversation_id, func.min(Message.id).label("first"))
                .where(Message.sender == "user", Message.status == MessageStatus.RECEIVED)
                .group_by(Message.conversation_id)
                .order_by("first")
            )
            return [conversation_id for conversation_id, _ in rows]

    async def has_processed_messages(self, conversation_id: str) -> bool:
        """Whether any user message of this conversation already went through the NLU."""
        async with self.db.single() as s:
            found = await s.scalar(
                select(Message.id)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.sender == "user",
                    Message.status == MessageStatus.PROCESSED,
                )
                .limit(1)
            )
            return found is not None

    async def previous_conversations(
        self, customer_id: str, exclude: str, limit: int = 10
    ) -> Sequence[Conversation]:
        async with self.db.session() as s:
            result = await s.scalars(
                select(Conversation)
                .where(Conversation.customer_id == customer_id, Conversation.id != exclude)
                .order_by(Conversation.created_at.desc())
                .limit(limit)
            )
            return result.all()

    async def recent_chat(self, customer_id: str, since: datetime) -> Conversation | None:
        """This customer's latest web chat that started after ``since``."""
        async with self.db.session() as s:
            return await s.scalar(
                select(Conversation)
                .where(
                    Conversation.customer_id == customer_id,
                    Conversation.channel == "chat",
                    Conversation.created_at >= since,
                )
                .order_by(Conversation.created_at.desc())
                .limit(1)
            )

    # flow outcomes

    async def add_flow_result(
        self, conversation_id: str, flow: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        async with self.db.session() as s:
            s.add(
                FlowResult(
                    conversation_id=conversation_id,
                    flow=flow,
                    outcome=outcome,
                    detail=detail,
                    created_at=utcnow(),
                )
            )

    async def flow_results(self, conversation_id: str) -> Sequence[FlowResult]:
        async with self.db.session() as s:
            result = await s.scalars(
                select(FlowResult)
                .where(FlowResult.conversation_id == conversation_id)
                .order_by(FlowResult.id)
            )
            return result.all()
