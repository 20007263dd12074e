"""``Hub``: in-process fan-out of live events to the sockets of customers and agents.

A conversation's events (bot and agent messages, queue position, notices) go to every socket
of that conversation (a customer may have two tabs open). Console events go to the consoles
that may see them: supervisors see everything, an agent the queues they serve and what is
addressed to them. A subscriber that does not keep up (its buffer is full) is dropped and must
reconnect, which replays from the store: the store, not the hub, is the record.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]
SUBSCRIBER_BUFFER = 256


@dataclass(eq=False)
class Subscription:
    """One socket's inbox; ``closed`` is set when the hub dropped it."""

    wants: Callable[[Frame, str | None, str | None], bool] = field(
        default=lambda frame, queue, agent: True
    )
    inbox: asyncio.Queue[Frame] = field(
        default_factory=lambda: asyncio.Queue(maxsize=SUBSCRIBER_BUFFER)
    )
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    agent_id: str | None = None  # the console's agent

    def offer(self, frame: Frame) -> None:
        try:
            self.inbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.closed.set()


class Hub:
    def __init__(self) -> None:
        self._conversations: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._consoles: set[Subscription] = set()
        self._disconnected_at: dict[str, float] = {}
        self.started_at = time.monotonic()

    # customers

    def join_conversation(self, conversation_id: str) -> Subscription:
        sub = Subscription()
        self._conversations[conversation_id].add(sub)
        self._disconnected_at.pop(conversation_id, None)
        return sub

    def leave_conversation(self, conversation_id: str, sub: Subscription) -> None:
        subs = self._conversations.get(conversation_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._conversations[conversation_id]
            self._disconnected_at[conversation_id] = time.monotonic()

    def is_connected(self, conversation_id: str) -> bool:
        return bool(self._conversations.get(conversation_id))

    def absent_for_s(self, conversation_id: str) -> float:
        """Seconds since the customer's last socket closed (or since the service started)."""
        if self.is_connected(conversation_id):
            return 0.0
        since = self._disconnected_at.get(conversation_id, self.started_at)
        return time.monotonic() - since

    def to_conversation(self, conversation_id: str, frame: Frame) -> None:
        for sub in list(self._conversations.get(conversation_id, ())):
            sub.offer(frame)

    # consoles

    def join_consoles(
        self, agent_id: str, wants: Callable[[Frame, str | None, str | None], bool]
    ) -> Subscription:
        sub = Subscription(wants=wants, agent_id=agent_id)
        self._consoles.add(sub)
        return sub

    def console_open(self, agent_id: str) -> bool:
        """Whether the agent has a console connected (offers go only to someone watching)."""
        return any(sub.agent_id == agent_id for sub in self._consoles)

    def leave_consoles(self, sub: Subscription) -> None:
        self._consoles.discard(sub)

    def to_consoles(
        self, frame: Frame, *, queue: str | None = None, agent_id: str | None = None
    ) -> None:
        """Send to consoles that want it; ``queue``/``agent_id`` say whom it concerns."""
        for sub in list(self._consoles):
            if sub.wants(frame, queue, agent_id):
                sub.offer(frame)
