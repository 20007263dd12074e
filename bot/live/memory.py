"""``MemoryHub``: the in-process backend of the ``Hub``, for a single node.

Subscriptions live in this process's memory; a socket on another process sees nothing of them.
"""

from __future__ import annotations

import time
from collections import defaultdict

from bot.live.hub import Frame, Subscription, Wants


class MemoryHub:
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

    def join_consoles(self, agent_id: str, wants: Wants) -> Subscription:
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
