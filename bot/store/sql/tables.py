"""The tables of the store of record (SQLAlchemy 2 declarative, portable SQLite/PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone, so it is restored on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UtcDateTime}


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))  # chat | phone | cli
    language: Mapped[str | None] = mapped_column(String(2), nullable=True)
    # the customer's id in the back office (not a table of ours: the domain pack's systems own it)
    customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16))  # bot | queued | with_agent | closed
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # columns added after the first release are nullable, so an older database gains them
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1-5 from the customer
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # the slot the dialogue asked the customer for in its last turn (a form's requested slot)
    awaiting_slot: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_seq", "conversation_id", "id"),
        UniqueConstraint("conversation_id", "client_id", name="uq_messages_client_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"))
    sender: Mapped[str] = mapped_column(String(8))  # user | bot | agent | system
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # received | processed | failed | sent
    intent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    confidence: Mapped[float | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # chat idempotency
    buttons: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    # what a quick-reply button sends to the NLU (``/affirm``), kept so that a turn interrupted
    # by a crash is taken up again with the same input
    payload: Mapped[str | None] = mapped_column(String(200), nullable=True)


class FlowResult(Base):
    __tablename__ = "flow_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    flow: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # completed | failed
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Handoff(Base):
    __tablename__ = "handoffs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    queue: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))  # live | callback
    state: Mapped[str] = mapped_column(String(20))  # see bot.handoff.state
    envelope: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    # the queue: FIFO by (priority desc, enqueued_at, id); a transfer keeps enqueued_at
    enqueued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    language: Mapped[str | None] = mapped_column(String(2), nullable=True)
    offered_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    offer_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    accepted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # the customer message whose turn created the handoff (its NLU message key): a turn taken
    # up again after a crash finds the handoff it already made instead of making a second one
    turn_message: Mapped[str | None] = mapped_column(String(64), nullable=True)


Index("ix_handoffs_waiting", Handoff.queue, Handoff.state, Handoff.priority, Handoff.enqueued_at)


class HandoffEvent(Base):
    """One state transition of a handoff, with its time and who made it."""

    __tablename__ = "handoff_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    handoff_id: Mapped[str] = mapped_column(ForeignKey("handoffs.id"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    queue: Mapped[str] = mapped_column(String(32))
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]]
    at: Mapped[datetime]
    # the signed webhook event this transition sends (handoff.accepted, ...), if any: the event
    # rows are the webhook outbox, committed with the transition itself
    webhook: Mapped[str | None] = mapped_column(String(40), nullable=True)


class ActionCall(Base):
    """The answer of one custom action within one turn, kept until the turn is recorded.

    A turn interrupted by a crash is run again; an action it had already run answers from here
    instead of running twice (a reading stored twice, a second ticket). Keyed by the turn's
    message and the action's occurrence within the turn (the same action may run twice).
    """

    __tablename__ = "action_calls"

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    turn_message: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(64), primary_key=True)
    occurrence: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[int] = mapped_column(Integer)  # the HTTP status answered to Rasa
    answer: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WebhookCursor(Base):
    """How far the webhook sender got through the handoff events: the last one delivered."""

    __tablename__ = "webhook_cursors"

    url: Mapped[str] = mapped_column(String(500), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class Agent(Base):
    """A human agent or supervisor of the console."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the sign-in name
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))  # agent | supervisor
    queues: Mapped[list[str]] = mapped_column(JSON)  # the queues (skills) the agent serves
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    presence: Mapped[str] = mapped_column(String(16))  # available | away | offline
    capacity: Mapped[int] = mapped_column(Integer)  # live conversations at once
    created_at: Mapped[datetime]


class AgentSession(Base):
    """A console sign-in: the cookie holds a random value, the table only its SHA-256."""

    __tablename__ = "agent_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Lease(Base):
    """Work that one node at a time does (the dispatcher, a webhook receiver's sender): held by
    ``holder`` until ``expires_at``, renewed while it works; a node that dies lets it lapse."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]


class SharedSecret(Base):
    """A key generated once for the whole service (resume tokens, the API token): the first
    node to start makes it, every other node reads it, so what one signs all accept."""

    __tablename__ = "shared_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]
