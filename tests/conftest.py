"""Shared fixtures: a store of record on each supported backend, the sample pack's embedded back
office on it, and a real Rasa runtime.

``store`` runs every test that uses it twice: on a SQLite file (WAL applies only to files) and on
a fresh, throw-away PostgreSQL database. PostgreSQL is skipped when the server does not answer,
unless ``TRIAGE_REQUIRE_SERVICES=1`` (set in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import pytest_asyncio
import yaml
from sqlalchemy.engine import URL, make_url

from bot.config.settings import Settings
from bot.domain import EmbeddedContext
from bot.domains.energy.backoffice import EnergyDemoBackOffice, embedded_back_office
from bot.nlu.training import TrainingInputs, ensure_model
from bot.runtime import Runtime, open_runtime
from bot.store.sql.store import SqlStore

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
    """An empty store of record, on the backend named by the parameter."""
    opened = _sqlite_store(tmp_path) if request.param == "sqlite" else _postgres_store()
    async with opened as backend:
        yield backend


@pytest_asyncio.fixture
async def energy(store: SqlStore, tmp_path: Path) -> EnergyDemoBackOffice:
    """The sample pack's embedded back office, seeded, in the store's database."""
    return await embedded_back_office(EmbeddedContext(store.engine, store.create_tables, tmp_path))


# --- A real Rasa server with the project's trained model, once per test session -------------

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENERGY_PACK = PROJECT_ROOT / "bot" / "domains" / "energy"
CLOSED_TODAY_QUEUE = "sales"


def _rasa_env_or_skip() -> Path:
    python = PROJECT_ROOT / ".venv-rasa" / "bin" / "python"
    if not python.exists():
        message = f"the Rasa environment is missing ({python}); `make rasa-env` creates it"
        if _services_required():
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.fixture
def rasa_python() -> Path:
    """The Rasa environment's Python (a failure under TRIAGE_REQUIRE_SERVICES when missing)."""
    return _rasa_env_or_skip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RASA_WORKERS = 2  # as `triage serve` runs on two cores: conversations split between two Rasas


def _free_rasa_ports(count: int) -> int:
    """A first port such that it and the next count - 1 are free."""
    for _ in range(50):
        first = _free_port()
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def write_test_routing(path: Path) -> Path:
    """The project's routing table with every queue open around the clock, except one queue
    that is closed all of today (Europe/Rome), so out-of-hours behaviour is deterministic."""
    doc = yaml.safe_load((PROJECT_ROOT / "bot" / "domains" / "energy" / "routing.yml").read_text())
    today = datetime.now(ZoneInfo(doc["timezone"])).weekday()
    other_day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(today + 3) % 7]
    for name, queue in doc["queues"].items():
        queue["hours"] = (
            {other_day: "00:00-24:00"} if name == CLOSED_TODAY_QUEUE else {"mon-sun": "00:00-24:00"}
        )
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@pytest_asyncio.fixture(scope="session")
async def sample_model() -> Path:
    """The sample pack's model, trained once and cached by the hash of its data in the
    project's var/models, so later test runs start in seconds."""
    return await ensure_model(
        _rasa_env_or_skip(),
        TrainingInputs.default(Settings().nlu_data_dir),  # the sample pack's Rasa data
        PROJECT_ROOT / "var" / "models",
    )


@pytest_asyncio.fixture(scope="session")
async def rasa_runtime(
    tmp_path_factory: pytest.TempPathFactory, sample_model: Path
) -> AsyncIterator[Runtime]:
    """The whole gateway runtime (SQLite store, action webhook, supervised Rasa server)."""
    rasa_python = _rasa_env_or_skip()
    data_dir = tmp_path_factory.mktemp("runtime")
    settings = Settings(
        data_dir=data_dir,
        rasa_port=_free_rasa_ports(RASA_WORKERS),
        rasa_workers=RASA_WORKERS,
        action_port=_free_port(),
        rasa_python=rasa_python,
        routing_file=write_test_routing(data_dir / "routing.yml"),
        api_token="test-token",
    )
    async with open_runtime(settings, reuse_rasa=False, model=sample_model) as runtime:
        yield runtime


async def last_reading(runtime: Runtime, customer_id: str) -> int | None:
    """The customer's latest meter reading, as the sample pack's back office has it."""
    answer = await runtime.back_office.call(
        "last_meter_reading", {"customer_id": customer_id}, idempotency_key="tests"
    )
    value = answer["value"]
    return None if value is None else int(value)
