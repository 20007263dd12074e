"""``TurnLocks``: the turns of one conversation run one at a time.

Two messages of a conversation must not be processed at once: the dialogue (Rasa's tracker), the
conversation's state and the order of its messages depend on the turn before. On one node an
``asyncio.Lock`` per conversation does it (``LocalTurnLocks``); in a cluster the lock must hold
across nodes, with a bounded wait and an expiry for a holder that died
(``bot/cluster/turn_locks.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from bot.errors import BotError


class TurnBusy(BotError):
    """Another node's turn of the conversation did not end within the bounded wait."""


class TurnLocks(Protocol):
    def hold(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """Hold the conversation's turn lock for the block (raises ``TurnBusy`` after the
        bounded wait, in a cluster)."""
        ...


class LocalTurnLocks:
    """One node: an ``asyncio.Lock`` per conversation, forgotten when nobody holds it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock

    @contextlib.asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        async with self.lock(conversation_id):
            yield
