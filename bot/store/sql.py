"""``SqlStore``: the store of record on SQLAlchemy 2 async (SQLite with WAL, or PostgreSQL).

Every write commits before the method returns, so a caller that goes on to tell the customer
something ("your reading is stored", "you are queued") only does so after it is durable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, delete, event, func, inspect, select, update
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from bot.core.conversation_state import ConversationState
from bot.core.handoff_state import created_webhook
from bot.errors import NotFound
from bot.store.tables import (
    ActionCall,
    Base,
    Conversation,
    FlowResult,
    Handoff,
    HandoffEvent,
    Message,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def turn_key(message_id: int) -> str:
    """The key of a customer message's turn, as the NLU and the action webhook see it."""
    return str(message_id)


def _enable_sqlite_wal(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL with synchronous=NORMAL: every commit survives a crash of the process; only an OS
    # crash or power loss may roll back the last commits (use PostgreSQL where that matters).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _add_missing_columns(conn: Connection, metadata: MetaData) -> None:
    """Bring a database made by an earlier release up to date (new columns are nullable)."""
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"table {table.name} lacks the required column {column.name}: "
                    "this database needs a manual migration"
                )
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, create: bool = True) -> SqlStore:
        """Connect, create missing tables and return the store."""
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # One connection: SQLite has one writer at a time, and connections competing for the
            # write lock wait in SQLite's busy handler, which sleeps in steps of up to 100 ms;
            # under chat load that gave bot replies of over a second. Sessions queue here instead.
            engine = create_async_engine(url, pool_size=1, max_overflow=0)
            event.listen(engine.sync_engine, "connect", _enable_sqlite_wal)
        else:
            engine = create_async_engine(url, pool_pre_ping=True)
        store = cls(engine)
        if create:
            await store.create_tables(Base.metadata)
        return store

    async def create_tables(self, metadata: MetaData) -> None:
        """Create the tables of ``metadata`` that are missing and add the nullable columns a
        newer release brought (the core's, and an embedded back office's own)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.run_sync(_add_missing_columns, metadata)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    # conversations and messages

    async def ensure_conversation(
        self, conversation_id: str, channel: str, language: str | None = None
    ) -> Conversation:
        """The conversation with this id, created on first use; safe under concurrent callers."""
        async with self.session() as s:
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
            async with self.session() as s:
                s.add(row)
        except IntegrityError:
            async with self.session() as s:
                existing = await s.get(Conversation, conversation_id)
                if existing is None:
                    raise
                return existing
        return row

    async def get_conversation(self, conversation_id: str) -> Conversation:
        async with self.session() as s:
            found = await s.get(Conversation, conversation_id)
        if found is None:
            raise NotFound(f"conversation {conversation_id!r} does not exist")
        return found

    async def update_conversation(self, conversation_id: str, **values: Any) -> None:
        allowed = {"language", "customer_id", "verified", "state", "rating", "closed_at"}
        if not values.keys() <= allowed:
            raise ValueError(f"cannot update conversation fields {sorted(values.keys() - allowed)}")
        async with self.session() as s:
            await s.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(**values, updated_at=utcnow())
            )

    async def add_message(
        self, conversation_id: str, sender: str, text: str, status: str = "received"
    ) -> int:
        row, _ = await self.add_message_once(conversation_id, sender, text, status)
        return row.id

    async def add_message_once(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        status: str = "received",
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
            async with self.session() as s:
                s.add(row)
                await s.flush()
                return row, True
        except IntegrityError:
            if client_id is None:
                raise
            async with self.session() as s:
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
        message_id: int,
        intent: str | None,
        confidence: float | None,
        replies: Sequence[tuple[str, list[dict[str, str]]]],
    ) -> list[Message]:
        """Mark the user message processed and store the bot's replies (text, buttons) in one
        transaction; returns the replies' rows. The turn's action answers kept in case it had
        to be run again are dropped in the same transaction."""
        now = utcnow()
        async with self.session() as s:
            await s.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status="processed", intent=intent, confidence=confidence)
            )
            conversation_id = await s.scalar(
                select(Message.conversation_id).where(Message.id == message_id)
            )
            await s.execute(
                delete(ActionCall).where(
                    ActionCall.conversation_id == conversation_id,
                    ActionCall.turn_message == turn_key(message_id),
                )
            )
            rows = [
                Message(
                    conversation_id=conversation_id,
                    sender="bot",
                    text=text,
                    status="sent",
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
        status: str,
        intent: str | None = None,
        confidence: float | None = None,
    ) -> None:
        async with self.session() as s:
            await s.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=status, intent=intent, confidence=confidence)
            )

    async def messages(self, conversation_id: str, after_id: int = 0) -> Sequence[Message]:
        async with self.session() as s:
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
            Message.status == "received",
        )
        if before_id is not None:
            query = query.where(Message.id < before_id)
        async with self.session() as s:
            return (await s.scalars(query.order_by(Message.id))).all()

    async def conversations_with_unanswered(self) -> list[str]:
        """Conversations holding unanswered customer messages, the longest waiting first."""
        async with self.session() as s:
            rows = await s.execute(
                select(Message.conversation_id, func.min(Message.id).label("first"))
                .where(Message.sender == "user", Message.status == "received")
                .group_by(Message.conversation_id)
                .order_by("first")
            )
            return [conversation_id for conversation_id, _ in rows]

    async def has_processed_messages(self, conversation_id: str) -> bool:
        """Whether any user message of this conversation already went through the NLU."""
        async with self.session() as s:
            found = await s.scalar(
                select(Message.id)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.sender == "user",
                    Message.status == "processed",
                )
                .limit(1)
            )
            return found is not None

    async def previous_conversations(
        self, customer_id: str, exclude: str, limit: int = 10
    ) -> Sequence[Conversation]:
        async with self.session() as s:
            result = await s.scalars(
                select(Conversation)
                .where(Conversation.customer_id == customer_id, Conversation.id != exclude)
                .order_by(Conversation.created_at.desc())
                .limit(limit)
            )
            return result.all()

    async def recent_chat(self, customer_id: str, since: datetime) -> Conversation | None:
        """This customer's latest web chat that started after ``since``."""
        async with self.session() as s:
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

    # flows and handoffs

    async def add_flow_result(
        self, conversation_id: str, flow: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        async with self.session() as s:
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
        async with self.session() as s:
            result = await s.scalars(
                select(FlowResult)
                .where(FlowResult.conversation_id == conversation_id)
                .order_by(FlowResult.id)
            )
            return result.all()

    async def add_handoff(self, handoff: Handoff, conversation_state: ConversationState) -> None:
        """Store the handoff with its first event, and move its conversation, atomically."""
        async with self.session() as s:
            s.add(handoff)
            await s.flush()
            s.add(
                HandoffEvent(
                    handoff_id=handoff.id,
                    state=handoff.state,
                    queue=handoff.queue,
                    agent_id=None,
                    detail={"transition": "create", "reason": handoff.reason},
                    at=handoff.created_at,
                    webhook=created_webhook(handoff.state),
                )
            )
            await s.execute(
                update(Conversation)
                .where(Conversation.id == handoff.conversation_id)
                .values(state=conversation_state, updated_at=utcnow())
            )

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        async with self.session() as s:
            return await s.get(Handoff, handoff_id)

    async def handoff_of_turn(self, conversation_id: str, turn_message: str) -> Handoff | None:
        """The handoff that the turn of this customer message created, if any."""
        async with self.session() as s:
            return await s.scalar(
                select(Handoff)
                .where(
                    Handoff.conversation_id == conversation_id,
                    Handoff.turn_message == turn_message,
                )
                .order_by(Handoff.created_at.desc())
                .limit(1)
            )

    async def recent_contact_on_topic(
        self, customer_id: str, topic: str, within: timedelta, exclude_conversation: str
    ) -> bool:
        """Whether this customer was handed over about ``topic`` within ``within`` from now."""
        since = utcnow() - within
        async with self.session() as s:
            count = await s.scalar(
                select(func.count())
                .select_from(Handoff)
                .where(
                    Handoff.customer_id == customer_id,
                    Handoff.topic == topic,
                    Handoff.created_at >= since,
                    Handoff.conversation_id != exclude_conversation,
                )
            )
            return bool(count)
