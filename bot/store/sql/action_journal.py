"""The action journal: each custom action's answer within a turn, until the turn is recorded.

A turn that a crash interrupts is run again from its stored message. Actions it had already run
(a reading stored, a ticket opened, a handoff made) must not run twice: the second time, the
webhook answers Rasa from here. ``SqlConversations.record_turn`` drops a turn's entries in the same
transaction that marks its message processed; ``purge`` removes what turns that never completed
left behind (a message marked failed while Rasa was down).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from bot.clock import utcnow
from bot.store.protocols import ActionKey, RecordedAnswer
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import ActionCall


class ActionJournal:
    def __init__(self, db: Sessions) -> None:
        self.db = db

    async def recorded(self, key: ActionKey) -> RecordedAnswer | None:
        async with self.db.session() as s:
            row = await s.get(
                ActionCall, (key.conversation_id, key.turn_message, key.action, key.occurrence)
            )
        return None if row is None else RecordedAnswer(row.status, row.answer)

    async def record(self, key: ActionKey, status: int, answer: dict[str, Any]) -> None:
        """Keep an answer; a second answer for the same key (a concurrent duplicate) is ignored:
        the first one is what the turn saw."""
        try:
            async with self.db.session() as s:
                s.add(
                    ActionCall(
                        conversation_id=key.conversation_id,
                        turn_message=key.turn_message,
                        action=key.action,
                        occurrence=key.occurrence,
                        status=status,
                        answer=answer,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            return

    async def has_entries(self, conversation_id: str, turn_message: str) -> bool:
        """Whether this turn had run any action before it was interrupted."""
        async with self.db.session() as s:
            found = await s.scalar(
                select(ActionCall.action)
                .where(
                    ActionCall.conversation_id == conversation_id,
                    ActionCall.turn_message == turn_message,
                )
                .limit(1)
            )
        return found is not None

    async def purge(self, older_than: datetime) -> int:
        async with self.db.session() as s:
            result = await s.execute(delete(ActionCall).where(ActionCall.created_at < older_than))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
