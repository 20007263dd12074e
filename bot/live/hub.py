"""``Hub``: the interface of live fan-out of events to the sockets of customers and agents.

A conversation's events (bot and agent messages, queue position, notices) go to every socket
of that conversation (a customer may have two tabs open). Console events go to the consoles
that may see them: supervisors see everything, an agent the queues they serve and what is
addressed to them. A subscriber that does not keep up (its buffer is full) is dropped and must
reconnect, which replays from the store: the store, not the hub, is the record.

Backends: ``MemoryHub`` (``bot/live/memory.py``), in-process, for one node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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


Wants = Callable[[Frame, str | None, str | None], bool]


class Hub(Protocol):
    """Where the desk publishes live events and where sockets subscribe to them."""

    # customers

    def join_conversation(self, conversation_id: str) -> Subscription:
        """A new inbox for one socket of the conversation."""
        ...

    def leave_conversation(self, conversation_id: str, sub: Subscription) -> None: ...

    def is_connected(self, conversation_id: str) -> bool:
        """Whether the customer has a socket open."""
        ...

    def absent_for_s(self, conversation_id: str) -> float:
        """Seconds since the customer's last socket closed (or since the service started)."""
        ...

    def to_conversation(self, conversation_id: str, frame: Frame) -> None: ...

    # consoles

    def join_consoles(self, agent_id: str, wants: Wants) -> Subscription: ...

    def console_open(self, agent_id: str) -> bool:
        """Whether the agent has a console connected (offers go only to someone watching)."""
        ...

    def leave_consoles(self, sub: Subscription) -> None: ...

    def to_consoles(
        self, frame: Frame, *, queue: str | None = None, agent_id: str | None = None
    ) -> None:
        """Send to consoles that want it; ``queue``/``agent_id`` say whom it concerns."""
        ...
