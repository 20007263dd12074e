"""``Database``: the engine and sessions of the store of record (SQLite with WAL, or PostgreSQL).

Every aggregate of ``bot/store/sql/`` writes in a session from here, and every write commits
before the method returns, so a caller that goes on to tell the customer something ("your
reading is stored", "you are queued") only does so after it is durable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, MetaData, event, inspect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from bot.store.sql.tables import Base

# the PostgreSQL advisory lock under which a node creates or extends the tables
SCHEMA_LOCK_KEY = 0x7472696167


def _enable_sqlite_wal(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL with synchronous=NORMAL: every commit survives a crash of the process; only an OS
    # crash or power loss may roll back the last commits (use PostgreSQL where that matters).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _add_missing_columns(conn: Connection, metadata: MetaData) -> None:
    """Bring a database made by an earlier release up to date (new columns are nullable)."""
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"table {table.name} lacks the required column {column.name}: "
                    "this database needs a manual migration"
                )
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')


class Sessions(Protocol):
    """What an aggregate needs: a session whose transaction commits when the block ends, and
    one for a single statement, which commits by itself (``single``)."""

    def session(self) -> AbstractAsyncContextManager[AsyncSession]: ...

    def single(self) -> AbstractAsyncContextManager[AsyncSession]: ...

    @property
    def is_postgres(self) -> bool: ...


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # One statement needs no BEGIN and COMMIT around it: on PostgreSQL each of those is a
        # round trip of its own, two of the three a single read or write would cost.
        self._single = async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )

    @classmethod
    async def open(cls, url: str, *, create: bool = True) -> Database:
        """Connect, create missing tables and return the database."""
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # One connection: SQLite has one writer at a time, and connections competing for the
            # write lock wait in SQLite's busy handler, which sleeps in steps of up to 100 ms;
            # under chat load that gave bot replies of over a second. Sessions queue here instead.
            engine = create_async_engine(url, pool_size=1, max_overflow=0)
            event.listen(engine.sync_engine, "connect", _enable_sqlite_wal)
        else:
            engine = create_async_engine(url, pool_pre_ping=True)
        db = cls(engine)
        if create:
            await db.create_tables(Base.metadata)
        return db

    async def create_tables(self, metadata: MetaData) -> None:
        """Create the tables of ``metadata`` that are missing and add the nullable columns a
        newer release brought (the core's, and an embedded back office's own)."""
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # nodes starting together create them once
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
            await conn.run_sync(metadata.create_all)
            await conn.run_sync(_add_missing_columns, metadata)

    async def close(self) -> None:
        await self.engine.dispose()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def single(self) -> AsyncIterator[AsyncSession]:
        """A session for one statement, which commits on its own (autocommit): a read, or a
        write that is whole in one statement. Never for two statements that must hold
        together."""
        async with self._single() as session:
            yield session
