"""Handing a conversation to a human queue: priority, the v1 envelope, and its storage.

The envelope is committed before the customer is told they are queued: a crash after the
commit loses nothing an agent needs; a crash before it leaves the customer with the bot.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict

from bot.backoffice.protocol import BackOffice, BackOfficeUnavailable, CustomerRecord
from bot.clock import utcnow
from bot.config.routing import RoutingTable
from bot.conversation.state import ConversationState
from bot.handoff.state import HandoffMode, HandoffState
from bot.store.protocols import HandoffRecord, NewHandoff, Store

ENVELOPE_SCHEMA_VERSION = 1
TRANSCRIPT_LIMIT = 200


# The envelope (docs/agent-api.md): what an agent gets with a handoff, stored as JSON with it.


class EnvelopeCustomer(TypedDict):
    id: str | None
    verified: bool
    name: str | None
    phone: str | None
    looked_up: bool  # false: the back office was down, only the id is known


class EnvelopeIntent(TypedDict):
    intent: str | None
    confidence: float
    at: float | None


class TranscriptLine(TypedDict):
    sender: str  # user | bot | agent | system
    text: str  # masked as stored
    at: str


class SelfServiceAttempt(TypedDict):
    flow: str
    outcome: str  # completed | failed
    detail: dict[str, Any]
    at: str


class PreviousConversation(TypedDict):
    conversation_id: str
    channel: str
    state: str
    created_at: str


class StateChange(TypedDict):
    state: str
    at: str


class Envelope(TypedDict):
    id: str
    schema_version: int
    created_at: str
    channel: str
    language: str | None
    customer: EnvelopeCustomer
    reason: str
    queue: str
    topic: str
    mode: str
    priority: int
    intents: list[EnvelopeIntent]
    slots: dict[str, Any]
    transcript: list[TranscriptLine]
    summary: str
    self_service: list[SelfServiceAttempt]
    previous_conversations: list[PreviousConversation]
    state_history: list[StateChange]
    incident: NotRequired[dict[str, Any]]  # what failed, when that is why (a back office down)


@dataclass(frozen=True)
class IntentSeen:
    intent: str | None
    confidence: float
    at: float | None


@dataclass(frozen=True)
class HandoffRequest:
    conversation_id: str
    queue: str
    topic: str
    reason: str  # explicit_request | topic | consecutive_fallbacks | failed_flow | ...
    mode: HandoffMode
    intents: tuple[IntentSeen, ...]
    slots: dict[str, Any]
    turn_message: str | None = None  # the key of the customer message whose turn asks for it
    incident: dict[str, Any] | None = None  # what failed, when that is why (a back office down)


async def compute_priority(
    store: Store,
    routing: RoutingTable,
    customer_id: str | None,
    verified: bool,
    vip: bool,
    topic: str,
    conversation_id: str,
) -> int:
    rules = routing.priority
    priority = rules.base
    if verified and vip:
        priority += rules.vip
    if customer_id and await store.handoffs.recent_contact_on_topic(
        customer_id, topic, timedelta(hours=rules.repeat_window_h), conversation_id
    ):
        priority += rules.repeat_contact
    return priority


def _summary(request: HandoffRequest, flows: list[SelfServiceAttempt]) -> str:
    topics = [i.intent for i in request.intents if i.intent]
    parts = [f"reason: {request.reason}", f"queue: {request.queue}"]
    if topics:
        parts.append("intents: " + ", ".join(dict.fromkeys(topics)))
    if flows:
        parts.append("self-service: " + ", ".join(f"{f['flow']} {f['outcome']}" for f in flows))
    return "; ".join(parts)


async def _customer(
    back_office: BackOffice, customer_id: str | None
) -> tuple[CustomerRecord | None, bool]:
    """(the customer as the back office knows them, whether it could be asked): a handoff is
    never refused because the back office is down; the envelope then has the id alone."""
    if customer_id is None:
        return None, True
    try:
        return await back_office.find_customer(customer_id), True
    except BackOfficeUnavailable:
        return None, False


async def create_handoff(
    store: Store,
    back_office: BackOffice,
    routing: RoutingTable,
    request: HandoffRequest,
    now: datetime | None = None,
) -> HandoffRecord:
    """Build the envelope from the store of record and commit it with the handoff row.

    A turn run again after a crash gets the handoff its first run made, not a second one."""
    if request.turn_message is not None:
        made = await store.handoffs.handoff_of_turn(request.conversation_id, request.turn_message)
        if made is not None:
            return made
    now = now or utcnow()
    conversation = await store.conversations.get_conversation(request.conversation_id)
    customer, asked = await _customer(back_office, conversation.customer_id)
    customer_id = customer.id if customer is not None else conversation.customer_id
    # verified by the back office's identity check or a signed identity, when that happened
    verified = bool(conversation.verified and customer_id)
    priority = await compute_priority(
        store,
        routing,
        customer_id,
        verified,
        bool(customer and customer.vip),
        request.topic,
        request.conversation_id,
    )
    messages = list(await store.conversations.messages(request.conversation_id))[-TRANSCRIPT_LIMIT:]
    flows = [
        SelfServiceAttempt(
            flow=f.flow, outcome=f.outcome, detail=f.detail, at=f.created_at.isoformat()
        )
        for f in await store.conversations.flow_results(request.conversation_id)
    ]
    previous = (
        [
            PreviousConversation(
                conversation_id=c.id,
                channel=c.channel,
                state=c.state,
                created_at=c.created_at.isoformat(),
            )
            for c in await store.conversations.previous_conversations(
                customer_id, request.conversation_id
            )
        ]
        if customer_id is not None and verified
        else []
    )
    handoff_id = str(uuid.uuid4())
    state = (
        HandoffState.CALLBACK_REQUESTED
        if request.mode == HandoffMode.CALLBACK
        else HandoffState.QUEUED
    )
    envelope = Envelope(
        id=handoff_id,
        schema_version=ENVELOPE_SCHEMA_VERSION,
        created_at=now.isoformat(),
        channel=conversation.channel,
        language=conversation.language,
        customer=EnvelopeCustomer(
            id=customer_id,
            verified=verified,
            name=customer.name if customer else None,
            phone=customer.phone if customer else None,
            looked_up=asked,
        ),
        reason=request.reason,
        queue=request.queue,
        topic=request.topic,
        mode=request.mode,
        priority=priority,
        intents=[
            EnvelopeIntent(intent=i.intent, confidence=round(i.confidence, 4), at=i.at)
            for i in request.intents
        ],
        slots={k: v for k, v in request.slots.items() if v is not None},
        # stored masked by the conversation service, every sender's lines
        transcript=[
            TranscriptLine(sender=m.sender, text=m.text, at=m.created_at.isoformat())
            for m in messages
        ],
        summary=_summary(request, flows),
        self_service=flows,
        previous_conversations=previous,
        state_history=[StateChange(state=state, at=now.isoformat())],
    )
    if request.incident is not None:
        envelope["incident"] = request.incident
    new = NewHandoff(
        id=handoff_id,
        conversation_id=request.conversation_id,
        customer_id=customer_id if verified else None,
        queue=request.queue,
        topic=request.topic,
        priority=priority,
        reason=request.reason,
        mode=request.mode,
        state=state,
        envelope=envelope,
        created_at=now,
        channel=conversation.channel,
        language=conversation.language,
        turn_message=request.turn_message,
    )
    # a callback is booked and the customer goes on with the bot; a live handoff waits
    return await store.handoffs.add_handoff(
        new,
        conversation_state=(
            ConversationState.QUEUED if state == HandoffState.QUEUED else ConversationState.BOT
        ),
    )
