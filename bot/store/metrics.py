"""Supervisor figures over a time window: containment, handoff rate by intent, abandonment."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from bot.core.handoff_state import WAITING, HandoffMode, HandoffState
from bot.store.sql import SqlStore
from bot.store.tables import Handoff, Message


@dataclass(frozen=True)
class IntentRate:
    intent: str
    conversations: int
    handoffs: int

    @property
    def rate(self) -> float:
        return self.handoffs / self.conversations if self.conversations else 0.0


@dataclass(frozen=True)
class WindowFigures:
    conversations: int  # conversations in which the customer wrote at least once
    handed_off: int  # of those, how many reached a human queue (live or callback)
    live_handoffs_ended: int  # live handoffs no longer waiting
    abandoned: int
    by_intent: list[IntentRate]

    @property
    def containment_rate(self) -> float:
        if not self.conversations:
            return 0.0
        return (self.conversations - self.handed_off) / self.conversations

    @property
    def abandonment_rate(self) -> float:
        return self.abandoned / self.live_handoffs_ended if self.live_handoffs_ended else 0.0


async def window_figures(store: SqlStore, since: datetime) -> WindowFigures:
    async with store.session() as s:
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
    live_ended = [st for _, mode, st in handoffs if mode == HandoffMode.LIVE and st not in waiting]
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
