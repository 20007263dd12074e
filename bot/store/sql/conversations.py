"""``SqlConversations``: conversations, their messages and flow outcomes in the store of record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from bot.clock import utcnow
from bot.conversation.state import ConversationState, MessageStatus, turn_key
from bot.errors import NotFound
from bot.store.protocols import SlotAsked
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import ActionCall, Conversation, FlowResult, Message


class SqlConversations:
    def __init__(self, db: Sessions) -> None:
        self.db = db

    async def ensure_conversation(
        self, conversation_id: str, channel: str, language: str | None = None
    ) -> Conversation:
        """The conversation with this id, created on first use; safe under concurrent callers."""
        async with self.db.session() as s:
            found = await s.get(Conversation, conversation_id)
            if found is not None:
                return found
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
                return existing
        return row

    async def get_conversation(self, conversation_id: str) -> Conversation:
        async with self.db.session() as s:
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
        async with self.db.session() as s:
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

    async def mark_message(
        self,
        message_id: int,
        status: MessageStatus,
        intent: str | None = None,
        confidence: float | None = None,
    ) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=status, intent=intent, confidence=confidence)
            )

    async def message(self, message_id: int) -> Message | None:
        async with self.db.session() as s:
            return await s.get(Message, message_id)

    async def messages(self, conversation_id: str, after_id: int = 0) -> Sequence[Message]:
        async with self.db.session() as s:
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
        async with self.db.session() as s:
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
        async with self.db.session() as s:
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
