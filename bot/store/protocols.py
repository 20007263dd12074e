"""What the core needs from persistence: the records it reads and the aggregates it calls.

The conversation service, the handoff desk and the built-in actions depend on these protocols;
``bot/store/sql/`` implements them on SQLAlchemy (its rows satisfy the record protocols
structurally). Records are read-only views: a change goes through an aggregate's method, which
commits before it returns.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.conversation.state import ConversationState, MessageStatus
from bot.handoff.state import Transition

# records


class ConversationRecord(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def language(self) -> str | None: ...
    @property
    def customer_id(self) -> str | None: ...
    @property
    def verified(self) -> bool: ...
    @property
    def state(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def rating(self) -> int | None: ...
    @property
    def closed_at(self) -> datetime | None: ...
    @property
    def awaiting_slot(self) -> str | None: ...


class MessageRecord(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def intent(self) -> str | None: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def buttons(self) -> list[dict[str, str]] | None: ...
    @property
    def payload(self) -> str | None: ...


class FlowResultRecord(Protocol):
    @property
    def conversation_id(self) -> str: ...
    @property
    def flow(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def detail(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...


class HandoffRecord(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def customer_id(self) -> str | None: ...
    @property
    def queue(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def envelope(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def enqueued_at(self) -> datetime | None: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def language(self) -> str | None: ...
    @property
    def offered_to(self) -> str | None: ...
    @property
    def offer_expires_at(self) -> datetime | None: ...
    @property
    def agent_id(self) -> str | None: ...
    @property
    def accepted_at(self) -> datetime | None: ...
    @property
    def ended_at(self) -> datetime | None: ...
    @property
    def disposition(self) -> str | None: ...
    @property
    def turn_message(self) -> str | None: ...


class HandoffEventRecord(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def handoff_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def agent_id(self) -> str | None: ...
    @property
    def detail(self) -> dict[str, Any]: ...
    @property
    def at(self) -> datetime: ...


class AgentRecord(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def queues(self) -> list[str]: ...
    @property
    def presence(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


class AgentSessionRecord(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def csrf_token(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...


# values the aggregates take


@dataclass(frozen=True)
class NewHandoff:
    """A handoff to store, with its envelope already built."""

    id: str
    conversation_id: str
    customer_id: str | None
    queue: str
    topic: str
    priority: int
    reason: str
    mode: str
    state: str
    envelope: Mapping[str, Any]  # bot.handoff.envelope.Envelope, stored as JSON
    created_at: datetime
    channel: str
    language: str | None
    turn_message: str | None


@dataclass(frozen=True)
class Received:
    """A customer message as stored: its conversation, its row, whether this call stored it
    (False: a resend of one already stored), whether earlier customer messages of the
    conversation are still unanswered, and whether the message created the conversation."""

    conversation: ConversationRecord
    message: MessageRecord
    created: bool
    earlier_unanswered: bool
    new_conversation: bool = False  # this message created the conversation


@dataclass(frozen=True)
class SlotAsked:
    """The slot a form asks the customer for after a turn (None: none is asked for)."""

    slot: str | None


@dataclass(frozen=True)
class Actor:
    """Who asks for a transition: an agent limited to their queues, a supervisor, or the system."""

    agent_id: str | None
    queues: frozenset[str] | None  # None: every queue (supervisor or system)

    @classmethod
    def system(cls) -> Actor:
        return cls(None, None)


@dataclass(frozen=True)
class ActionKey:
    """One action's place in one turn: the conversation, the customer message whose turn it is,
    the action and how many times it already ran in that turn."""

    conversation_id: str
    turn_message: str
    action: str
    occurrence: int


@dataclass(frozen=True)
class RecordedAnswer:
    status: int
    answer: dict[str, Any]


# webhooks


@dataclass(frozen=True)
class PendingWebhook:
    event_id: int
    event: str
    at: datetime
    handoff_id: str
    conversation_id: str
    queue: str
    state: str
    agent_id: str | None
    customer_id: str | None  # set only when the customer was verified
    channel: str | None


class WebhookQueue(Protocol):
    """One receiver's outbox: the handoff events still to be POSTed to it, in order."""

    url: str

    async def cursor(self) -> int: ...
    async def pending(self, after_id: int, limit: int = 100) -> Sequence[PendingWebhook]: ...
    async def newest(self) -> int: ...
    async def advance(self, event_id: int, *, failed: bool = False) -> None: ...


# supervisor figures


@dataclass(frozen=True)
class IntentRate:
    intent: str
    conversations: int
    handoffs: int

    @property
    def rate(self) -> float:
        return self.handoffs / self.conversations if self.conversations else 0.0


@dataclass(frozen=True)
class WindowFigures:
    conversations: int  # conversations in which the customer wrote at least once
    handed_off: int  # of those, how many reached a human queue (live or callback)
    live_handoffs_ended: int  # live handoffs no longer waiting
    abandoned: int
    by_intent: list[IntentRate]

    @property
    def containment_rate(self) -> float:
        if not self.conversations:
            return 0.0
        return (self.conversations - self.handed_off) / self.conversations

    @property
    def abandonment_rate(self) -> float:
        return self.abandoned / self.live_handoffs_ended if self.live_handoffs_ended else 0.0


# aggregates


class ConversationRecords(Protocol):
    async def ensure_conversation(
        self, conversation_id: str, channel: str, language: str | None = None
    ) -> ConversationRecord: ...
    async def get_conversation(self, conversation_id: str) -> ConversationRecord: ...
    async def update_conversation(self, conversation_id: str, **values: Any) -> None: ...
    async def add_message(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        status: MessageStatus = MessageStatus.RECEIVED,
    ) -> int: ...
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
    ) -> tuple[MessageRecord, bool]: ...
    async def record_turn(
        self,
        conversation_id: str,
        message_id: int,
        intent: str | None,
        confidence: float | None,
        replies: Sequence[tuple[str, list[dict[str, str]]]],
        *,
        awaiting: SlotAsked | None = None,
    ) -> Sequence[MessageRecord]: ...
    async def mark_message(
        self,
        message_id: int,
        status: MessageStatus,
        intent: str | None = None,
        confidence: float | None = None,
    ) -> None: ...
    async def receive(
        self,
        conversation_id: str,
        channel: str,
        text: str,
        *,
        client_id: str | None = None,
        payload: str | None = None,
    ) -> Received: ...
    async def message(self, message_id: int) -> MessageRecord | None: ...
    async def messages(
        self, conversation_id: str, after_id: int = 0
    ) -> Sequence[MessageRecord]: ...
    async def unanswered_messages(
        self, conversation_id: str, before_id: int | None = None
    ) -> Sequence[MessageRecord]: ...
    async def conversations_with_unanswered(self) -> list[str]: ...
    async def has_processed_messages(self, conversation_id: str) -> bool: ...
    async def previous_conversations(
        self, customer_id: str, exclude: str, limit: int = 10
    ) -> Sequence[ConversationRecord]: ...
    async def recent_chat(self, customer_id: str, since: datetime) -> ConversationRecord | None: ...
    async def add_flow_result(
        self, conversation_id: str, flow: str, outcome: str, detail: dict[str, Any]
    ) -> None: ...
    async def flow_results(self, conversation_id: str) -> Sequence[FlowResultRecord]: ...


class HandoffRecords(Protocol):
    async def apply(
        self,
        handoff_id: str,
        transition: Transition,
        actor: Actor,
        *,
        values: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        must_own: bool = False,
        now: datetime | None = None,
    ) -> HandoffRecord: ...
    async def waiting(self, queues: Collection[str] | None = None) -> Sequence[HandoffRecord]: ...
    async def callbacks(self, queues: Collection[str] | None = None) -> Sequence[HandoffRecord]: ...
    async def position(self, handoff: HandoffRecord) -> int: ...
    async def head(self, queues: Collection[str]) -> HandoffRecord | None: ...
    async def expired_offers(self, now: datetime) -> Sequence[str]: ...
    async def load_of(self, agent_id: str) -> tuple[int, int]: ...
    async def of_agent(self, agent_id: str) -> Sequence[HandoffRecord]: ...
    async def active_for_conversation(self, conversation_id: str) -> HandoffRecord | None: ...
    async def events(self, handoff_id: str) -> Sequence[HandoffEventRecord]: ...
    async def mean_handle_time(self, queue: str) -> timedelta | None: ...
    async def add_handoff(
        self, handoff: NewHandoff, conversation_state: ConversationState
    ) -> HandoffRecord: ...
    async def get_handoff(self, handoff_id: str) -> HandoffRecord | None: ...
    async def handoff_of_turn(
        self, conversation_id: str, turn_message: str
    ) -> HandoffRecord | None: ...
    async def recent_contact_on_topic(
        self, customer_id: str, topic: str, within: timedelta, exclude_conversation: str
    ) -> bool: ...


class AgentRecords(Protocol):
    async def add(
        self,
        agent_id: str,
        name: str,
        role: str,
        queues: Sequence[str],
        *,
        password: str | None = None,
        capacity: int = 2,
    ) -> str: ...
    async def get(self, agent_id: str) -> AgentRecord: ...
    async def all(self) -> Sequence[AgentRecord]: ...
    async def by_token(self, token: str) -> AgentRecord | None: ...
    async def check_password(self, agent_id: str, password: str) -> AgentRecord | None: ...
    async def set_presence(self, agent_id: str, presence: str) -> None: ...
    async def available_for(self, queue: str | None = None) -> Sequence[AgentRecord]: ...
    async def reset_presence(self) -> None: ...
    async def open_session(self, agent_id: str, now: datetime | None = None) -> tuple[str, str]: ...
    async def session_of(self, cookie: str) -> tuple[AgentRecord, AgentSessionRecord] | None: ...
    async def close_session(self, cookie: str) -> None: ...


class ActionAnswers(Protocol):
    """The action journal: answers of actions that changed something, until their turn is
    recorded (a turn run again after a crash answers from here instead of acting twice)."""

    async def recorded(self, key: ActionKey) -> RecordedAnswer | None: ...
    async def record(self, key: ActionKey, status: int, answer: dict[str, Any]) -> None: ...
    async def has_entries(self, conversation_id: str, turn_message: str) -> bool: ...
    async def purge(self, older_than: datetime) -> int: ...


class Figures(Protocol):
    async def window_figures(self, since: datetime) -> WindowFigures: ...


class Leases(Protocol):
    """Work done by one node at a time (``bot/store/sql/leases.py``)."""

    async def claim(
        self, name: str, holder: str, ttl_s: float, now: datetime | None = None
    ) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; False if another holds it."""
        ...

    async def release(self, name: str, holder: str) -> None: ...


class Store(Protocol):
    """The store of record as the core sees it: one object per aggregate."""

    @property
    def conversations(self) -> ConversationRecords: ...
    @property
    def handoffs(self) -> HandoffRecords: ...
    @property
    def agents(self) -> AgentRecords: ...
    @property
    def journal(self) -> ActionAnswers: ...
    @property
    def metrics(self) -> Figures: ...
    @property
    def leases(self) -> Leases: ...
