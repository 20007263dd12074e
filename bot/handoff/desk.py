"""``Desk``: where customers, the bot, the handoff queue and human agents meet.

The chat socket and the console call the desk; the desk changes the store of record first and
then tells the live sockets (through the ``Hub``) and the CRM webhook. Its dispatcher, run as one
owned background task, offers waiting customers to available agents, puts expired offers back
in their place and marks customers who left the queue long ago as abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.backoffice.protocol import BackOffice
from bot.clock import utcnow
from bot.config.routing import RoutingTable
from bot.conversation.service import ConversationService, TurnResult
from bot.conversation.state import ConversationState
from bot.errors import BadRequest, BotError, Conflict, Forbidden, NotFound
from bot.handoff.state import (
    ABANDON,
    ACCEPT,
    CLOSE,
    CUSTOMER_LEFT,
    EXPIRE_OFFER,
    OFFER,
    RELEASE,
    REQUEST_CALLBACK,
    TRANSFER,
    WAITING,
    HandoffState,
)
from bot.live.hub import Frame, Hub
from bot.nlu.client import NluClient
from bot.store.protocols import Actor, AgentRecord, HandoffRecord, MessageRecord, Store

log = logging.getLogger(__name__)

DISPATCH_INTERVAL_S = 1.0
PACE_KEPT_S = 5.0  # a queue's seats and mean handling time, kept between reads
# what turns that never completed (nor were taken up again) left in the action journal
JOURNAL_KEPT = timedelta(days=1)
RECOVERY_POLL_S = 1.0
# work done once whichever node is alive: leases renewed at every pass, lapsing when a node dies
DISPATCHER_LEASE = "dispatcher"
RECOVERY_LEASE = "recovery"
LEASE_TTL_S = 5.0
DISPOSITIONS = ("resolved", "not_resolved", "follow_up", "wrong_queue", "spam")
RETURNED_TEXTS = {
    "it": "Sono di nuovo l'assistente virtuale: il collega mi ha ripassato la conversazione. "
    "Posso aiutarLa in altro?",
    "en": "This is the virtual assistant again: my colleague handed the conversation back to "
    "me. Can I help you with anything else?",
}


class HandoffNotifier(Protocol):
    def wake(self) -> None:
        """Handoff events that send webhooks were stored: deliver them; never blocks or raises."""


@dataclass(frozen=True)
class DeskSettings:
    offer_timeout_s: float
    abandon_after_s: float
    default_handle_s: float


def estimated_wait_s(position: int, seats: int, handle_s: float) -> int | None:
    """Position times the mean handling time, shared among the agents' seats; None unstaffed."""
    if not seats:
        return None
    return int(math.ceil(position / seats) * handle_s)


def actor_for(agent: AgentRecord) -> Actor:
    return Actor(agent.id, None if agent.role == "supervisor" else frozenset(agent.queues))


def message_frame(m: MessageRecord) -> Frame:
    frame: Frame = {
        "type": "message",
        "seq": m.id,
        "sender": m.sender,
        "text": m.text,
        "buttons": m.buttons or [],
        "at": m.created_at.isoformat(),
    }
    if m.client_id:
        frame["client_id"] = m.client_id
    return frame


class Desk:
    def __init__(
        self,
        *,
        store: Store,
        conversations: ConversationService,
        nlu: NluClient,
        back_office: BackOffice,
        routing: RoutingTable,
        hub: Hub,
        settings: DeskSettings,
        notifier: HandoffNotifier | None = None,
        node_id: str = "node",
    ) -> None:
        self.store = store
        self.back_office = back_office
        self.conversations = conversations
        self.nlu = nlu
        self.routing = routing
        self.hub = hub
        self.settings = settings
        self.notifier = notifier
        self.node_id = node_id
        self.queue = store.handoffs
        self.agents = store.agents
        self._pace: dict[str, tuple[float, tuple[int, float]]] = {}  # queue: (when, pace)

    # customers

    async def customer_message(
        self,
        conversation_id: str,
        text: str,
        *,
        channel: str,
        language: str | None = None,
        client_id: str | None = None,
        payload: str | None = None,
        on_stored: Callable[[int], Awaitable[None]] | None = None,
    ) -> TurnResult:
        turn = await self.conversations.handle(
            conversation_id,
            text,
            channel=channel,
            language=language,
            client_id=client_id,
            payload=payload,
            on_stored=on_stored,
        )
        for earlier in turn.recovered:
            await self._publish(earlier)
        await self._publish(turn)
        return turn

    async def take_up(self, conversation_id: str) -> int:
        """Answer what a crash left unanswered in one conversation (its customer is back,
        maybe on another node than the one that died); returns how many."""
        try:
            turns = await self.conversations.recover(conversation_id)
        except BotError:  # busy past the bounded wait, or the store: the recovery pass retries
            log.warning("taking up a resumed conversation failed; the recovery pass will")
            return 0
        for turn in turns:
            await self._publish(turn)
        return len(turns)

    async def take_up_unanswered(self) -> int:
        """Answer every customer message left unanswered by a crash (stored and acknowledged,
        its turn never recorded), conversation by conversation; returns how many."""
        count = 0
        for conversation_id in await self.store.conversations.conversations_with_unanswered():
            for turn in await self.conversations.recover(conversation_id):
                await self._publish(turn)
                count += 1
        await self.conversations.journal.purge(utcnow() - JOURNAL_KEPT)
        return count

    async def _publish(self, turn: TurnResult) -> None:
        """Tell the live sockets what a turn stored: the bot's replies to the customer, a
        relayed message to the agent's console, a new handoff to the queues."""
        conversation_id = turn.conversation_id
        if turn.duplicate:
            return
        if turn.relayed:
            handoff = await self.queue.active_for_conversation(conversation_id)
            if handoff is not None and turn.stored is not None:
                frame = {
                    **message_frame(turn.stored),
                    "handoff_id": handoff.id,
                    "conversation_id": conversation_id,
                }
                self.hub.to_consoles(frame, queue=handoff.queue, agent_id=handoff.agent_id)
            return
        for row in turn.stored_replies:
            self.hub.to_conversation(conversation_id, message_frame(row))
        if turn.handoff_id:
            handoff = turn.handoff or await self.queue.get_handoff(turn.handoff_id)
            if handoff is not None:
                await self._after_change(handoff)

    async def queue_frame(
        self,
        handoff: HandoffRecord,
        position: int | None = None,
        pace: tuple[int, float] | None = None,
    ) -> Frame:
        if position is None:
            position = await self.queue.position(handoff)
        if pace is None:
            pace = await self.queue_pace(handoff.queue)
        queue = self.routing.queues.get(handoff.queue)
        return {
            "type": "queue",
            "queue": handoff.queue,
            "label": queue.label(handoff.language) if queue else handoff.queue,
            "position": position,
            "eta_s": estimated_wait_s(position, *pace),
            "open": self.routing.queue_is_open(handoff.queue, utcnow()) if queue else True,
        }

    async def queue_pace(self, queue: str) -> tuple[int, float]:
        """(seats of available agents serving ``queue``, recent mean handling time in s).

        Kept for ``PACE_KEPT_S``: a new handoff tells everyone waiting their place without
        reading the agents and the queue's history again. What changes it here (an agent's
        presence, a handoff closed) forgets it; another node's change shows within the time."""
        kept = self._pace.get(queue)
        now = time.monotonic()
        if kept is not None and now - kept[0] < PACE_KEPT_S:
            return kept[1]
        agents = await self.agents.available_for(queue)
        seats = sum(max(1, a.capacity) for a in agents)
        mean = await self.queue.mean_handle_time(queue)
        pace = seats, mean.total_seconds() if mean else self.settings.default_handle_s
        self._pace[queue] = (now, pace)
        return pace

    async def refresh_queue(self, queue: str) -> None:
        """Tell every connected customer of ``queue`` their position and estimated wait."""
        in_queue = list(enumerate(await self.queue.waiting([queue]), start=1))
        connected = await self.hub.connected([h.conversation_id for _, h in in_queue])
        waiting = [(position, h) for position, h in in_queue if h.conversation_id in connected]
        if not waiting:
            return
        pace = await self.queue_pace(queue)
        for position, handoff in waiting:
            frame = await self.queue_frame(handoff, position, pace)
            self.hub.to_conversation(handoff.conversation_id, frame)

    async def status_frames(self, conversation_id: str) -> list[Frame]:
        """What a customer who (re)connects needs to see about a handoff in progress."""
        handoff = await self.queue.active_for_conversation(conversation_id)
        if handoff is None:
            return []
        if handoff.state in WAITING:
            return [await self.queue_frame(handoff)]
        agent = await self.agents.get(handoff.agent_id) if handoff.agent_id else None
        return [{"type": "agent_joined", "name": agent.name if agent else ""}]

    async def customer_leave(self, conversation_id: str) -> None:
        handoff = await self.queue.active_for_conversation(conversation_id)
        if handoff is None:
            await self.store.conversations.update_conversation(
                conversation_id, state=ConversationState.CLOSED, closed_at=utcnow()
            )
        elif handoff.state in WAITING:
            handoff = await self.queue.apply(handoff.id, ABANDON, Actor.system())
            await self._after_change(handoff)
        else:
            handoff = await self.queue.apply(
                handoff.id, CUSTOMER_LEFT, Actor.system(), values={"disposition": "customer_left"}
            )
            self.hub.to_consoles(
                {"type": "handoff_ended", "handoff_id": handoff.id, "reason": "customer_left"},
                queue=handoff.queue,
                agent_id=handoff.agent_id,
            )
            await self._after_change(handoff)
        self.hub.to_conversation(conversation_id, {"type": "closed", "rating_requested": True})

    async def request_callback(self, handoff_id: str) -> HandoffRecord:
        """A waiting customer is to be called back instead (a phone transfer that failed)."""
        handoff = await self.queue.apply(handoff_id, REQUEST_CALLBACK, Actor.system())
        await self._after_change(handoff)
        return handoff

    async def rate(self, conversation_id: str, score: int) -> None:
        conversation = await self.store.conversations.get_conversation(conversation_id)
        if conversation.state != ConversationState.CLOSED:
            raise Conflict("the conversation is not closed")
        await self.store.conversations.update_conversation(conversation_id, rating=score)

    # agents

    async def accept(self, agent: AgentRecord, handoff_id: str) -> HandoffRecord:
        await self._visible(agent, handoff_id)
        handoff = await self.queue.apply(handoff_id, ACCEPT, actor_for(agent))
        self.hub.to_conversation(
            handoff.conversation_id, {"type": "agent_joined", "name": agent.name}
        )
        await self._after_change(handoff)
        return handoff

    async def decline(self, agent: AgentRecord, handoff_id: str) -> HandoffRecord:
        handoff = await self.queue.get_handoff(handoff_id)
        if handoff is None or handoff.offered_to != agent.id:
            raise Conflict("this handoff is not offered to you")
        handoff = await self.queue.apply(handoff_id, EXPIRE_OFFER, actor_for(agent))
        await self._after_change(handoff)
        return handoff

    async def agent_message(self, agent: AgentRecord, handoff_id: str, text: str) -> Frame:
        handoff = await self._held(agent, handoff_id)
        row = await self.conversations.add_agent_message(handoff.conversation_id, text)
        frame = message_frame(row)
        self.hub.to_conversation(handoff.conversation_id, frame)
        self.hub.to_consoles(
            {**frame, "handoff_id": handoff.id, "conversation_id": handoff.conversation_id},
            queue=handoff.queue,
            agent_id=handoff.agent_id,
        )
        return frame

    async def agent_typing(self, agent: AgentRecord, handoff_id: str, on: bool) -> None:
        handoff = await self._held(agent, handoff_id)
        self.hub.to_conversation(
            handoff.conversation_id, {"type": "typing", "sender": "agent", "on": on}
        )

    async def transfer(
        self, agent: AgentRecord, handoff_id: str, queue: str, note: str
    ) -> HandoffRecord:
        if queue not in self.routing.queues:
            raise NotFound(f"queue {queue!r} does not exist")
        before = await self._visible(agent, handoff_id)
        if before.queue == queue:
            raise Conflict("the customer is already in that queue")
        handoff = await self.queue.apply(
            handoff_id,
            TRANSFER,
            actor_for(agent),
            must_own=True,
            values={"queue": queue},
            detail={"note": self.conversations.mask(note), "from_queue": before.queue},
        )
        if before.state == HandoffState.ACCEPTED:
            self.hub.to_conversation(
                handoff.conversation_id, {"type": "agent_left", "reason": "transferred"}
            )
        await self._after_change(handoff, also_queue=before.queue)
        return handoff

    async def close(self, agent: AgentRecord, handoff_id: str, disposition: str) -> HandoffRecord:
        if disposition not in DISPOSITIONS:
            raise BadRequest(f"disposition must be one of {DISPOSITIONS}")
        handoff = await self.queue.apply(
            handoff_id, CLOSE, actor_for(agent), must_own=True, values={"disposition": disposition}
        )
        self._pace.pop(handoff.queue, None)  # the mean handling time changed
        self.hub.to_conversation(
            handoff.conversation_id, {"type": "agent_left", "reason": "closed"}
        )
        self.hub.to_conversation(
            handoff.conversation_id, {"type": "closed", "rating_requested": True}
        )
        await self._after_change(handoff)
        return handoff

    async def release(self, agent: AgentRecord, handoff_id: str, note: str) -> HandoffRecord:
        """Hand the customer back to the bot, which carries on from a clean hand-over state."""
        handoff = await self.queue.apply(
            handoff_id,
            RELEASE,
            actor_for(agent),
            must_own=True,
            values={"disposition": "returned_to_bot"},
            detail={"note": self.conversations.mask(note)},
        )
        try:
            await self.nlu.set_slots(
                handoff.conversation_id,
                {"handoff_id": None, "pending_offer": None, "flow_failed": None},
            )
        except BotError:  # the store says "bot"; Rasa catches up on the next turn's slots
            log.warning("could not reset the dialogue after a hand-back")
        language = handoff.language if handoff.language in RETURNED_TEXTS else "it"
        back = await self.conversations.add_service_line(
            handoff.conversation_id, RETURNED_TEXTS[language]
        )
        self.hub.to_conversation(
            handoff.conversation_id, {"type": "agent_left", "reason": "returned_to_bot"}
        )
        self.hub.to_conversation(handoff.conversation_id, message_frame(back))
        await self._after_change(handoff)
        return handoff

    async def set_presence(self, agent: AgentRecord, presence: str) -> None:
        await self.agents.set_presence(agent.id, presence)
        self._pace.clear()  # the seats changed
        for queue in self.routing.queues if agent.role == "supervisor" else agent.queues:
            await self.refresh_queue(queue)
        self.hub.to_consoles({"type": "queues_changed"})

    async def _visible(self, agent: AgentRecord, handoff_id: str) -> HandoffRecord:
        handoff = await self.queue.get_handoff(handoff_id)
        if handoff is None:
            raise NotFound("no such handoff")
        if agent.role != "supervisor" and handoff.queue not in agent.queues:
            raise Forbidden("this handoff is not in one of your queues")
        return handoff

    async def _held(self, agent: AgentRecord, handoff_id: str) -> HandoffRecord:
        handoff = await self._visible(agent, handoff_id)
        if handoff.state != HandoffState.ACCEPTED:
            raise Conflict(f"the handoff is {handoff.state}")
        if handoff.agent_id != agent.id and agent.role != "supervisor":
            raise Forbidden("another agent holds this conversation")
        return handoff

    async def _after_change(self, handoff: HandoffRecord, also_queue: str | None = None) -> None:
        for queue in {handoff.queue, also_queue} - {None}:
            assert queue is not None
            await self.refresh_queue(queue)
        self.hub.to_consoles(
            {"type": "queues_changed", "handoff_id": handoff.id},
            queue=handoff.queue,
            agent_id=handoff.agent_id,
        )
        if self.notifier is not None:  # the change may have stored a webhook event
            self.notifier.wake()

    # the dispatcher

    async def tick(self, now: datetime | None = None) -> None:
        """One pass: expire offers, abandon long-gone customers, make new offers."""
        now = now or utcnow()
        for handoff_id in await self.queue.expired_offers(now):
            try:
                handoff = await self.queue.apply(handoff_id, EXPIRE_OFFER, Actor.system(), now=now)
            except Conflict:  # accepted or declined meanwhile
                continue
            await self._after_change(handoff)
        for handoff in await self.queue.waiting():
            if handoff.channel == "chat" and (
                await self.hub.absent_for_s(handoff.conversation_id)
                > self.settings.abandon_after_s
            ):
                try:
                    gone = await self.queue.apply(handoff.id, ABANDON, Actor.system(), now=now)
                except Conflict:
                    continue
                await self._after_change(gone)
        for agent in await self.agents.available_for():
            if not await self.hub.console_open(agent.id):
                continue
            accepted, offered = await self.queue.load_of(agent.id)
            if offered or accepted >= agent.capacity:
                continue
            head = await self.queue.head(agent.queues)
            if head is None:
                continue
            expires = now + timedelta(seconds=self.settings.offer_timeout_s)
            try:
                handoff = await self.queue.apply(
                    head.id,
                    OFFER,
                    actor_for(agent),
                    values={"offered_to": agent.id, "offer_expires_at": expires},
                    now=now,
                )
            except Conflict:
                continue
            self.hub.to_consoles(
                {"type": "offer", "handoff_id": handoff.id, "expires_at": expires.isoformat()},
                agent_id=agent.id,
            )
            await self._after_change(handoff)

    async def run_recovery(self, *, again_every_s: float | None = None) -> None:
        """Once the NLU answers, take up the messages a crash left unanswered (a restart's
        first job; new messages of those conversations wait for it, in order). In a cluster
        (``again_every_s``) it goes on: a node that died leaves messages the others answer,
        one node at a time (the ``recovery`` lease)."""
        while True:
            if await self.nlu.is_ready():
                break
            await asyncio.sleep(RECOVERY_POLL_S)
        while True:
            if await self.store.leases.claim(RECOVERY_LEASE, self.node_id, LEASE_TTL_S):
                try:
                    count = await self.take_up_unanswered()
                except BotError:
                    log.exception("taking up unanswered messages failed")
                    count = 0
                if count:
                    log.warning(
                        "answered customer messages a crash had left", extra={"count": count}
                    )
            if again_every_s is None:
                return
            await asyncio.sleep(again_every_s)

    async def run_dispatcher(self) -> None:
        """Offers, their expiry and abandonment, by one node at a time (the ``dispatcher``
        lease, renewed at every pass; another node takes it over once it lapses)."""
        while True:
            try:
                if await self.store.leases.claim(DISPATCHER_LEASE, self.node_id, LEASE_TTL_S):
                    await self.tick()
            except BotError:
                log.exception("dispatcher pass failed")
            await asyncio.sleep(DISPATCH_INTERVAL_S)

    async def release_leases(self) -> None:
        """A node stopping hands its work over at once instead of letting the leases lapse."""
        for name in (DISPATCHER_LEASE, RECOVERY_LEASE):
            await self.store.leases.release(name, self.node_id)

    # what a hub between nodes reads back from the store (``LiveReader``)

    async def messages_after(self, conversation_id: str, after_seq: int) -> list[Frame]:
        rows = await self.store.conversations.messages(conversation_id, after_id=after_seq)
        return [message_frame(m) for m in rows if m.sender != "user"]

    async def console_message(self, seq: int, handoff_id: str) -> Frame | None:
        handoff = await self.queue.get_handoff(handoff_id)
        if handoff is None:
            return None
        row = await self.store.conversations.message(seq)
        if row is None or row.conversation_id != handoff.conversation_id:
            return None
        return {
            **message_frame(row),
            "handoff_id": handoff.id,
            "conversation_id": handoff.conversation_id,
        }
