"""``SqlStore``: the store of record on SQLAlchemy 2 async, as its aggregates.

One ``Database`` (``engine.py``) and, over it, one object per aggregate: conversations with
their messages and flow outcomes (``conversations.py``), handoffs and their queue
(``handoffs.py``), agents and their sessions (``agents.py``), the action journal
(``action_journal.py``), the supervisor's figures (``metrics.py``), the leases of work done
once (``leases.py``). The webhook outbox
(``webhook_outbox.py``) is one per receiver. The core sees all of them through
``bot/store/protocols.py``.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.store.sql.action_journal import ActionJournal
from bot.store.sql.agents import SqlAgents
from bot.store.sql.conversations import SqlConversations
from bot.store.sql.engine import Database
from bot.store.sql.handoffs import SqlHandoffs
from bot.store.sql.leases import LocalLeases, SqlLeases
from bot.store.sql.metrics import SqlMetrics


class SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.conversations = SqlConversations(db)
        self.handoffs = SqlHandoffs(db)
        self.agents = SqlAgents(db)
        self.journal = ActionJournal(db)
        self.metrics = SqlMetrics(db)
        # leases matter where several nodes share the database; SQLite serves one node
        self.leases: SqlLeases | LocalLeases = (
            SqlLeases(db) if db.engine.dialect.name == "postgresql" else LocalLeases()
        )

    @classmethod
    async def open(cls, url: str, *, create: bool = True) -> SqlStore:
        """Connect, create missing tables and return the store."""
        return cls(await Database.open(url, create=create))

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session of the database (an embedded back office keeps its tables here too)."""
        return self.db.session()

    def single(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session for one statement that commits by itself."""
        return self.db.single()

    @property
    def is_postgres(self) -> bool:
        return self.db.is_postgres

    async def create_tables(self, metadata: MetaData) -> None:
        await self.db.create_tables(metadata)

    async def close(self) -> None:
        await self.db.close()
