"""``MemoryHub``: the in-process backend of the ``Hub``, for a single node.

Subscriptions live in this process's memory; a socket on another process sees nothing of them.
``RedisHub`` builds on it: what its nodes deliver locally, they deliver through this.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection

from bot.live.hub import Frame, LiveReader, Subscription, Wants


class MemoryHub:
    def __init__(self) -> None:
        self._conversations: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._consoles: set[Subscription] = set()
        self._disconnected_at: dict[str, float] = {}
        self.started_at = time.monotonic()

    async def start(self, reader: LiveReader) -> None:
        return None

    async def close(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    # customers

    def join_conversation(self, conversation_id: str) -> Subscription:
        sub = Subscription(conversation_id=conversation_id)
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
        """Whether the customer has a socket open on this node."""
        return bool(self._conversations.get(conversation_id))

    async def connected(self, conversation_ids: Collection[str]) -> set[str]:
        return {c for c in conversation_ids if self.is_connected(c)}

    async def absent_for_s(self, conversation_id: str) -> float:
        if self.is_connected(conversation_id):
            return 0.0
        since = self._disconnected_at.get(conversation_id, self.started_at)
        return time.monotonic() - since

    def local_conversations(self) -> list[str]:
        return list(self._conversations)

    def subscriptions_of(self, conversation_id: str) -> list[Subscription]:
        return list(self._conversations.get(conversation_id, ()))

    def to_conversation(self, conversation_id: str, frame: Frame) -> None:
        for sub in list(self._conversations.get(conversation_id, ())):
            sub.offer(frame)

    # consoles

    def join_consoles(self, agent_id: str, wants: Wants) -> Subscription:
        sub = Subscription(wants=wants, agent_id=agent_id)
        self._consoles.add(sub)
        return sub

    def local_console_open(self, agent_id: str) -> bool:
        return any(sub.agent_id == agent_id for sub in self._consoles)

    async def console_open(self, agent_id: str) -> bool:
        """Whether the agent has a console connected (offers go only to someone watching)."""
        return self.local_console_open(agent_id)

    def local_console_agents(self) -> set[str]:
        return {sub.agent_id for sub in self._consoles if sub.agent_id is not None}

    def leave_consoles(self, sub: Subscription) -> None:
        self._consoles.discard(sub)

    def drop_consoles(self) -> None:
        """Drop every console: each reconnects and fetches what it may have missed."""
        for sub in list(self._consoles):
            sub.drop()

    def to_consoles(
        self, frame: Frame, *, queue: str | None = None, agent_id: str | None = None
    ) -> None:
        """Send to consoles that want it; ``queue``/``agent_id`` say whom it concerns."""
        for sub in list(self._consoles):
            if sub.wants(frame, queue, agent_id):
                sub.offer(frame)
