"""``Hub``: the interface of live fan-out of events to the sockets of customers and agents.

A conversation's events (bot and agent messages, queue position, notices) go to every socket
of that conversation (a customer may have two tabs open). Console events go to the consoles
that may see them: supervisors see everything, an agent the queues they serve and what is
addressed to them. A subscriber that does not keep up (its buffer is full) is dropped and must
reconnect, which replays from the store: the store, not the hub, is the record.

Message frames carry ``seq`` (the message's id in the store). A conversation's subscription
remembers the ``seq`` it delivered, so a message reaching it twice (read again from the store
after a lost publication, say) is shown once.

Backends: ``MemoryHub`` (``bot/live/memory.py``), in-process, for one node; ``RedisHub``
(``bot/live/redis_hub.py``), Redis pub/sub between the nodes of a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

Frame = dict[str, Any]
SUBSCRIBER_BUFFER = 256
SEEN_KEPT = 512  # message seqs a conversation's subscription remembers having delivered
_WAKE: Frame = {"type": "__dropped__"}  # wakes a writer waiting on an empty inbox


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
    conversation_id: str | None = None  # the customer's conversation
    last_seq: int = 0  # the newest message delivered (conversation subscriptions)
    _seen: set[int] = field(default_factory=set)
    _seen_order: deque[int] = field(default_factory=deque)

    def offer(self, frame: Frame) -> None:
        if self.closed.is_set():
            return
        if self.conversation_id is not None and not self._first_time(frame):
            return
        try:
            self.inbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.closed.set()

    def drop(self) -> None:
        """Close the subscription: its socket closes and the client reconnects, re-reading what
        it may have missed from the store."""
        self.closed.set()
        # wake a writer waiting on an empty inbox; a full one's writer sees ``closed`` next
        with contextlib.suppress(asyncio.QueueFull):
            self.inbox.put_nowait(_WAKE)

    async def next_frame(self) -> Frame | None:
        """The next frame to send, or None once the subscription is dropped."""
        frame = await self.inbox.get()
        return None if self.closed.is_set() else frame

    def _first_time(self, frame: Frame) -> bool:
        """Whether a message frame was not delivered yet (other frames always are new)."""
        kind = frame.get("type")
        if kind == "history":
            for message in frame.get("messages", ()):
                self._remember(message.get("seq"))
            return True
        if kind != "message" or not isinstance(frame.get("seq"), int):
            return True
        seq: int = frame["seq"]
        if seq in self._seen:
            return False
        self._remember(seq)
        return True

    def _remember(self, seq: Any) -> None:
        if not isinstance(seq, int) or seq in self._seen:
            return
        self._seen.add(seq)
        self._seen_order.append(seq)
        if len(self._seen_order) > SEEN_KEPT:
            self._seen.discard(self._seen_order.popleft())
        self.last_seq = max(self.last_seq, seq)


Wants = Callable[[Frame, str | None, str | None], bool]


class LiveReader(Protocol):
    """What a hub whose publications carry only ids reads back from the store (the desk)."""

    async def messages_after(self, conversation_id: str, after_seq: int) -> list[Frame]:
        """The frames of the messages shown live to the customer, after ``after_seq``."""
        ...

    async def console_message(self, seq: int, handoff_id: str) -> Frame | None:
        """The console frame of message ``seq`` of handoff ``handoff_id``."""
        ...

    async def status_frames(self, conversation_id: str) -> list[Frame]:
        """What a customer needs to see again about a handoff in progress."""
        ...


class Hub(Protocol):
    """Where the desk publishes live events and where sockets subscribe to them."""

    async def start(self, reader: LiveReader) -> None:
        """Connect (a backend between nodes); ``reader`` reads back what publications name."""
        ...

    async def close(self) -> None: ...

    def ready(self) -> bool:
        """Whether events reach the other nodes now (always, for one node)."""
        ...

    # customers

    def join_conversation(self, conversation_id: str) -> Subscription:
        """A new inbox for one socket of the conversation."""
        ...

    def leave_conversation(self, conversation_id: str, sub: Subscription) -> None: ...

    async def connected(self, conversation_ids: Collection[str]) -> set[str]:
        """Those of ``conversation_ids`` whose customer has a socket open (on any node)."""
        ...

    async def absent_for_s(self, conversation_id: str) -> float:
        """Seconds since the customer's last socket closed (or since the service started)."""
        ...

    def to_conversation(self, conversation_id: str, frame: Frame) -> None:
        """Send to the conversation's sockets; called after what it tells was committed."""
        ...

    # consoles

    def join_consoles(self, agent_id: str, wants: Wants) -> Subscription: ...

    async def console_open(self, agent_id: str) -> bool:
        """Whether the agent has a console connected (offers go only to someone watching)."""
        ...

    def leave_consoles(self, sub: Subscription) -> None: ...

    def to_consoles(
        self, frame: Frame, *, queue: str | None = None, agent_id: str | None = None
    ) -> None:
        """Send to consoles that want it; ``queue``/``agent_id`` say whom it concerns."""
        ...
