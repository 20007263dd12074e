"""The durable handoff queue: transitions, the waiting order and handling-time statistics.

Order within a queue: priority (highest first), then the time the customer first entered a
queue, then the id. An offer that expires and a transfer keep that time, so a customer never
loses their place. Each transition is one conditional UPDATE plus its event row, committed
together: the UPDATE's row count says whether this caller won.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from bot.clock import utcnow
from bot.conversation.state import ConversationState
from bot.errors import Conflict, NotFound
from bot.handoff.state import (
    ACCEPT,
    ENDED,
    EXPIRE_OFFER,
    TRANSFER,
    WAITING,
    HandoffState,
    Transition,
    created_webhook,
)
from bot.store.protocols import Actor, HandoffRecord, NewHandoff
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import Agent, Conversation, Handoff, HandoffEvent

HANDLE_TIME_SAMPLE = 20


def _held_by(agent_id: str) -> ColumnElement[bool]:
    """Accepted by, or offered to, ``agent_id``."""
    return or_(
        and_(Handoff.agent_id == agent_id, Handoff.state == HandoffState.ACCEPTED),
        and_(Handoff.offered_to == agent_id, Handoff.state == HandoffState.OFFERED),
    )


def _waiting_order() -> tuple[Any, ...]:
    return (Handoff.priority.desc(), Handoff.enqueued_at, Handoff.id)


class SqlHandoffs:
    def __init__(self, db: Sessions) -> None:
        self.db = db

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
    ) -> Handoff:
        """Apply ``transition`` if the handoff allows it; raise ``Conflict`` if it does not.

        ``must_own``: only the agent who accepted the handoff may do this (supervisors may).
        """
        now = now or utcnow()
        conditions: list[ColumnElement[bool]] = [
            Handoff.id == handoff_id,
            Handoff.state.in_([s.value for s in transition.sources]),
        ]
        if actor.queues is not None:
            conditions.append(Handoff.queue.in_(sorted(actor.queues)))
            if must_own:
                conditions.append(
                    or_(Handoff.state != HandoffState.ACCEPTED, Handoff.agent_id == actor.agent_id)
                )
        if transition is ACCEPT:
            # an offer reserves the customer for the agent it was made to
            conditions.append(
                or_(
                    Handoff.state != HandoffState.OFFERED,
                    Handoff.offered_to == actor.agent_id,
                    Handoff.offer_expires_at < now,
                )
            )
        changes: dict[str, Any] = {"state": transition.target.value, **(values or {})}
        if transition.target is not HandoffState.OFFERED:
            changes.update(offered_to=None, offer_expires_at=None)
        if transition is ACCEPT:
            changes.update(agent_id=actor.agent_id, accepted_at=now)
        if transition.target in ENDED:
            changes["ended_at"] = now
        if transition is TRANSFER or transition is EXPIRE_OFFER:
            changes.setdefault("agent_id", None)
        async with self.db.session() as s:
            if transition is ACCEPT and actor.agent_id is not None:
                await self._check_capacity(s, actor.agent_id)
            result = await s.execute(update(Handoff).where(and_(*conditions)).values(**changes))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                current = await s.get(Handoff, handoff_id)
                if current is None:
                    raise NotFound(f"handoff {handoff_id!r} does not exist")
                raise Conflict(f"cannot {transition.name} a handoff that is {current.state}")
            handoff = await s.get(Handoff, handoff_id, populate_existing=True)
            assert handoff is not None
            s.add(
                HandoffEvent(
                    handoff_id=handoff_id,
                    state=transition.target.value,
                    queue=handoff.queue,
                    agent_id=actor.agent_id,
                    detail={"transition": transition.name, **(detail or {})},
                    at=now,
                    webhook=transition.webhook,
                )
            )
            conversation_values: dict[str, Any] = {
                "state": transition.conversation_state,
                "updated_at": now,
            }
            if transition.conversation_state == ConversationState.CLOSED:
                conversation_values["closed_at"] = now
            await s.execute(
                update(Conversation)
                .where(Conversation.id == handoff.conversation_id)
                .values(**conversation_values)
            )
        return handoff

    @staticmethod
    async def _check_capacity(s: AsyncSession, agent_id: str) -> None:
        """An agent accepts no more conversations than their capacity. The agent's row is
        locked first (PostgreSQL), so accepts by one agent on several nodes take turns."""
        capacity = await s.scalar(
            select(Agent.capacity).where(Agent.id == agent_id).with_for_update()
        )
        if capacity is None:  # the service token, not a person: no seats to count
            return
        held = await s.scalar(
            select(func.count())
            .select_from(Handoff)
            .where(Handoff.agent_id == agent_id, Handoff.state == HandoffState.ACCEPTED)
        )
        if (held or 0) >= capacity:
            raise Conflict(f"you already hold {held} conversations, your capacity")

    async def waiting(self, queues: Collection[str] | None = None) -> Sequence[Handoff]:
        """Customers waiting (queued or offered), in service order, optionally of some queues."""
        query = select(Handoff).where(Handoff.state.in_([s.value for s in WAITING]))
        if queues is not None:
            query = query.where(Handoff.queue.in_(sorted(queues)))
        async with self.db.single() as s:
            return (await s.scalars(query.order_by(Handoff.queue, *_waiting_order()))).all()

    async def callbacks(self, queues: Collection[str] | None = None) -> Sequence[Handoff]:
        query = select(Handoff).where(Handoff.state == HandoffState.CALLBACK_REQUESTED)
        if queues is not None:
            query = query.where(Handoff.queue.in_(sorted(queues)))
        async with self.db.single() as s:
            return (await s.scalars(query.order_by(Handoff.created_at))).all()

    async def position(self, handoff: HandoffRecord) -> int:
        """1 for the next customer to be served in the handoff's queue."""
        ahead = await self.waiting([handoff.queue])
        for index, row in enumerate(ahead, start=1):
            if row.id == handoff.id:
                return index
        raise Conflict(f"handoff {handoff.id!r} is not waiting")

    async def head(self, queues: Collection[str]) -> Handoff | None:
        """The first queued (not offered) customer across ``queues``."""
        async with self.db.single() as s:
            return await s.scalar(
                select(Handoff)
                .where(Handoff.state == HandoffState.QUEUED, Handoff.queue.in_(sorted(queues)))
                .order_by(*_waiting_order())
                .limit(1)
            )

    async def expired_offers(self, now: datetime) -> Sequence[str]:
        async with self.db.single() as s:
            return (
                await s.scalars(
                    select(Handoff.id).where(
                        Handoff.state == HandoffState.OFFERED, Handoff.offer_expires_at < now
                    )
                )
            ).all()

    async def load_of(self, agent_id: str) -> tuple[int, int]:
        """(accepted conversations, open offers) of an agent."""
        async with self.db.single() as s:
            rows = (await s.execute(select(Handoff.state).where(_held_by(agent_id)))).all()
        accepted = sum(1 for (state,) in rows if state == HandoffState.ACCEPTED)
        return accepted, len(rows) - accepted

    async def of_agent(self, agent_id: str) -> Sequence[Handoff]:
        """The handoffs an agent holds now (accepted) or is offered."""
        async with self.db.single() as s:
            return (
                await s.scalars(
                    select(Handoff).where(_held_by(agent_id)).order_by(Handoff.accepted_at)
                )
            ).all()

    async def active_for_conversation(self, conversation_id: str) -> Handoff | None:
        """The conversation's handoff that is waiting or accepted, if any."""
        live = [*WAITING, HandoffState.ACCEPTED]
        async with self.db.single() as s:
            return await s.scalar(
                select(Handoff)
                .where(
                    Handoff.conversation_id == conversation_id,
                    Handoff.state.in_([x.value for x in live]),
                )
                .order_by(Handoff.created_at.desc())
                .limit(1)
            )

    async def events(self, handoff_id: str) -> Sequence[HandoffEvent]:
        async with self.db.single() as s:
            return (
                await s.scalars(
                    select(HandoffEvent)
                    .where(HandoffEvent.handoff_id == handoff_id)
                    .order_by(HandoffEvent.id)
                )
            ).all()

    async def mean_handle_time(self, queue: str) -> timedelta | None:
        """Mean time from accept to close over the queue's last closed handoffs."""
        async with self.db.single() as s:
            rows = (
                await s.execute(
                    select(Handoff.accepted_at, Handoff.ended_at)
                    .where(
                        Handoff.queue == queue,
                        Handoff.state == HandoffState.CLOSED,
                        Handoff.accepted_at.is_not(None),
                        Handoff.ended_at.is_not(None),
                    )
                    .order_by(Handoff.ended_at.desc())
                    .limit(HANDLE_TIME_SAMPLE)
                )
            ).all()
        spans = [ended - accepted for accepted, ended in rows if accepted and ended]
        if not spans:
            return None
        return sum(spans, timedelta()) / len(spans)

    # creation and lookup

    async def add_handoff(self, new: NewHandoff, conversation_state: ConversationState) -> Handoff:
        """Store the handoff with its first event, and move its conversation, atomically."""
        handoff = Handoff(
            id=new.id,
            conversation_id=new.conversation_id,
            customer_id=new.customer_id,
            queue=new.queue,
            topic=new.topic,
            priority=new.priority,
            reason=new.reason,
            mode=new.mode,
            state=new.state,
            envelope=dict(new.envelope),
            created_at=new.created_at,
            enqueued_at=new.created_at,
            channel=new.channel,
            language=new.language,
            turn_message=new.turn_message,
        )
        async with self.db.session() as s:
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
        return handoff

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        async with self.db.single() as s:
            return await s.get(Handoff, handoff_id)

    async def handoff_of_turn(self, conversation_id: str, turn_message: str) -> Handoff | None:
        """The handoff that the turn of this customer message created, if any."""
        async with self.db.single() as s:
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
        async with self.db.session() as s:
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
