"""Supervisor figures over a time window: containment, handoff rate by intent, abandonment."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select

from bot.handoff.state import WAITING, HandoffMode, HandoffState
from bot.store.protocols import IntentRate, WindowFigures
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import Handoff, Message


class SqlMetrics:
    def __init__(self, db: Sessions) -> None:
        self.db = db

    async def window_figures(self, since: datetime) -> WindowFigures:
        async with self.db.session() as s:
            pairs = (
                await s.execute(
                    select(Message.conversation_id, Message.intent)
                    .where(Message.sender == "user", Message.created_at >= since)
                    .distinct()
                )
            ).all()
            handoffs = (
                await s.execute(
                    select(Handoff.conversation_id, Handoff.mode, Handoff.state).where(
                        Handoff.created_at >= since
                    )
                )
            ).all()
        conversations = {c for c, _ in pairs}
        handed = {c for c, _, _ in handoffs}
        waiting = {s.value for s in WAITING}
        live_ended = [
            st for _, mode, st in handoffs if mode == HandoffMode.LIVE and st not in waiting
        ]
        per_intent: defaultdict[str, set[str]] = defaultdict(set)
        for conversation_id, intent in pairs:
            if intent:
                per_intent[intent].add(conversation_id)
        by_intent = sorted(
            (
                IntentRate(intent, len(convs), len(convs & handed))
                for intent, convs in per_intent.items()
            ),
            key=lambda r: (-r.rate, -r.conversations, r.intent),
        )
        return WindowFigures(
            conversations=len(conversations),
            handed_off=len(conversations & handed),
            live_handoffs_ended=len(live_ended),
            abandoned=sum(1 for st in live_ended if st == HandoffState.ABANDONED),
            by_intent=by_intent,
        )
