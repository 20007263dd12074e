"""``SqlLeases``: who does the work that must happen once, whichever node is alive.

A lease is a row (name, holder, expires_at). ``claim`` takes it when it is free or lapsed and
renews it when the caller already holds it, in one conditional UPDATE: on PostgreSQL the UPDATE
locks the row and re-checks its condition after a concurrent claim commits, so two nodes never
both win; on SQLite writes are serialised anyway. A node that dies holding a lease lets it lapse
at ``expires_at`` and another takes it over. The clocks of the nodes must agree (NTP) to well
within the lease's time to live.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError

from bot.clock import utcnow
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import Lease


class SqlLeases:
    def __init__(self, db: Sessions) -> None:
        self.db = db

    async def claim(
        self, name: str, holder: str, ttl_s: float, now: datetime | None = None
    ) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; False if another holds it."""
        now = now or utcnow()
        expires = now + timedelta(seconds=ttl_s)
        async with self.db.session() as s:
            result = await s.execute(
                update(Lease)
                .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
                .values(holder=holder, expires_at=expires)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
        try:
            async with self.db.session() as s:
                s.add(Lease(name=name, holder=holder, expires_at=expires))
        except IntegrityError:  # it exists and another holds it
            return False
        return True

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up now (a node stopping), if ``holder`` has it."""
        async with self.db.session() as s:
            await s.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


class LocalLeases:
    """One node alone (SQLite): every lease is its own."""

    async def claim(
        self, name: str, holder: str, ttl_s: float, now: datetime | None = None
    ) -> bool:
        return True

    async def release(self, name: str, holder: str) -> None:
        return None
