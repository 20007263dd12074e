"""Keys the whole service shares, generated once and kept in the store of record.

Resume tokens signed by one node must be accepted by every node, and the REST API token must be
the same on all: the first node to start generates each key and stores it; the others read it.
A key already kept in a single node's data directory (an earlier release) is the one stored.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from bot.clock import utcnow
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import SharedSecret


async def shared_secret(db: Sessions, name: str, make: Callable[[], str]) -> str:
    """The value of secret ``name``: the stored one, else ``make()`` stored (first node wins)."""
    async with db.session() as s:
        row = await s.get(SharedSecret, name)
        if row is not None:
            return row.value
    try:
        value = make()
        async with db.session() as s:
            s.add(SharedSecret(name=name, value=value, created_at=utcnow()))
        return value
    except IntegrityError:  # another node stored it first: theirs is the one
        async with db.session() as s:
            row = await s.get(SharedSecret, name)
            assert row is not None
            return row.value
