"""The webhook outbox: handoff events still to be POSTed, read from the handoff events table.

Every transition that sends a webhook writes its event row (with the webhook's name) in the same
transaction as the transition, so an event is durable exactly when the change is. A cursor per
receiver URL records the last event delivered; a new URL starts from the events written after it
was first seen, not from history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from bot.clock import utcnow
from bot.store.protocols import PendingWebhook
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import Handoff, HandoffEvent, WebhookCursor

GAP_GRACE_S = 5.0  # longer than any transaction that writes a handoff event


class WebhookOutbox:
    def __init__(self, store: Sessions, url: str) -> None:
        self.store = store
        self.url = url

    async def cursor(self) -> int:
        """The last event delivered to this URL; a new URL starts at the newest event."""
        async with self.store.session() as s:
            row = await s.get(WebhookCursor, self.url)
            if row is not None:
                return row.last_event_id
            newest = await s.scalar(select(func.max(HandoffEvent.id)))
            s.add(WebhookCursor(url=self.url, last_event_id=newest or 0, failed=0))
            return newest or 0

    async def pending(
        self, after_id: int, limit: int = 100, now: datetime | None = None
    ) -> Sequence[PendingWebhook]:
        """The webhook events after ``after_id``, in order, up to the first gap in the ids that
        may still fill: on PostgreSQL, transactions of several nodes commit out of id order,
        and an id missing now may be a transaction about to commit. A gap older than
        ``GAP_GRACE_S`` is a rolled-back id and is passed."""
        now = now or utcnow()
        async with self.store.session() as s:
            rows = await s.execute(
                select(HandoffEvent, Handoff)
                .join(Handoff, Handoff.id == HandoffEvent.handoff_id)
                .where(HandoffEvent.id > after_id)
                .order_by(HandoffEvent.id)
                .limit(limit)
            )
            events = []
            expected = after_id + 1
            for e, h in rows.all():
                if e.id != expected and e.at > now - timedelta(seconds=GAP_GRACE_S):
                    break  # an earlier event may still commit: wait for it
                expected = e.id + 1
                if e.webhook is not None:
                    events.append((e, h))
            return [
                PendingWebhook(
                    event_id=e.id,
                    event=e.webhook or "",
                    at=e.at,
                    handoff_id=h.id,
                    conversation_id=h.conversation_id,
                    queue=e.queue,
                    state=e.state,
                    agent_id=e.agent_id,  # who made the change (None: the system)
                    customer_id=h.customer_id,
                    channel=h.channel,
                )
                for e, h in events
            ]

    async def newest(self) -> int:
        """The id of the newest event that sends a webhook (0 if none)."""
        async with self.store.session() as s:
            newest = await s.scalar(
                select(func.max(HandoffEvent.id)).where(HandoffEvent.webhook.is_not(None))
            )
            return newest or 0

    async def advance(self, event_id: int, *, failed: bool = False) -> None:
        values: dict[str, object] = {"last_event_id": event_id}
        if failed:
            values["failed"] = WebhookCursor.failed + 1
        async with self.store.session() as s:
            await s.execute(
                update(WebhookCursor)
                .where(WebhookCursor.url == self.url, WebhookCursor.last_event_id < event_id)
                .values(**values)
            )
