"""Shared fixtures: a seeded store of record on each supported backend.

``store`` runs every test that uses it twice: on a SQLite file (WAL applies only to files) and on
a fresh, throw-away PostgreSQL database. PostgreSQL is skipped when the server does not answer,
unless ``TRIAGE_REQUIRE_SERVICES=1`` (set in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import URL, make_url

from bot.store.seed import seed_demo_data
from bot.store.sql import SqlStore

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_S = 2.0


def _services_required() -> bool:
    return os.environ.get("TRIAGE_REQUIRE_SERVICES", "") == "1"


async def _admin_connection(url: URL) -> asyncpg.Connection:
    """A connection to the ``postgres`` maintenance database, or skip/fail if none answers."""
    try:
        return await asyncpg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user="postgres",
            password=url.password,
            database="postgres",
            timeout=CONNECT_TIMEOUT_S,
        )
    except OSError as exc:  # refused, unreachable, or TimeoutError (an OSError subclass)
        where = f"{url.host or '127.0.0.1'}:{url.port or 5432}"
        message = f"PostgreSQL on {where} is not reachable: {exc!r}"
        if _services_required():
            pytest.fail(message)
        pytest.skip(message)


@asynccontextmanager
async def _sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = await SqlStore.open("sqlite+aiosqlite:///" + str(tmp_path / "t.db"))
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _postgres_store() -> AsyncIterator[SqlStore]:
    """A store on a new database with a random name, dropped afterwards."""
    url = make_url(os.environ.get("TRIAGE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    name = f"triage_t_{secrets.token_hex(6)}"
    admin = await _admin_connection(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            store = await SqlStore.open(
                url.set(database=name).render_as_string(hide_password=False)
            )
            try:
                yield store
            finally:
                await store.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A store seeded with the demo data, on the backend named by the parameter."""
    opened = _sqlite_store(tmp_path) if request.param == "sqlite" else _postgres_store()
    async with opened as backend:
        await seed_demo_data(backend)
        yield backend
