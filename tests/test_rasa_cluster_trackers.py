"""Rasa's trackers in the shared PostgreSQL of a cluster (``triage_rasa.tracker_store`` with a
``url``, written into the endpoints file by ``RasaSupervisor(tracker_db_url=...)``): any node's
Rasa continues any conversation, and none serves a tracker another node has moved on.

The tracker store's checks run under the Rasa environment (``rasa_side/tracker_store_checks.py``
with ``postgres``), each time on a new database with a random name, dropped afterwards; then two
real Rasa servers on one model share a database and take turns in one form. PostgreSQL is
skipped when the server does not answer, unless ``TRIAGE_REQUIRE_SERVICES=1`` (as in
``conftest.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import yaml
from sqlalchemy.engine import make_url

from bot.config.settings import Settings
from bot.errors import ConfigError, NluUnavailable
from bot.nlu.rasa_http import RasaHttpClient
from bot.nlu.supervisor import RasaSupervisor, libpq_url, write_endpoints
from bot.runtime import open_runtime
from tests.conftest import (
    DEFAULT_POSTGRES_URL,
    _admin_connection,
    _free_port,
    write_test_routing,
)
from tests.test_rasa_side import CHECKS, COMMON_CHECK_NAMES, _run_under_rasa

CLUSTER_CHECK_NAMES = (
    "two_nodes_alternating_turns_each_see_the_others_events",
    "a_save_from_a_stale_tracker_writes_nothing",
    "a_turn_forgotten_on_one_node_is_not_served_from_the_others_memory",
    "many_processes_create_the_tables_at_once",
    "a_lost_connection_is_opened_again",
    "a_url_of_another_database_is_refused_without_its_password",
)
PASSWORD = "s3cret-pw"


@asynccontextmanager
async def _throwaway_database() -> AsyncIterator[str]:
    """A new PostgreSQL database with a random name, as the gateway's URL names it
    (``postgresql+asyncpg://``); dropped afterwards."""
    url = make_url(os.environ.get("TRIAGE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    name = f"triage_test_{secrets.token_hex(6)}"
    admin = await _admin_connection(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def tracker_database() -> AsyncIterator[str]:
    async with _throwaway_database() as url:
        yield url


# --- the gateway's side: the URL Rasa is given --------------------------------------------


def test_the_gateways_url_becomes_the_same_database_for_psycopg2() -> None:
    assert (
        libpq_url("postgresql+asyncpg://postgres@127.0.0.1:5432/triage")
        == "postgresql://postgres@127.0.0.1:5432/triage"
    )
    converted = libpq_url(
        "postgresql+asyncpg://triage:p%40ss@db.example:5433/triage"
        "?ssl=require&prepared_statement_cache_size=0"
    )
    assert converted == "postgresql://triage:p%40ss@db.example:5433/triage?sslmode=require"


@pytest.mark.parametrize(
    "url",
    [
        f"sqlite+aiosqlite:////tmp/{PASSWORD}.db",
        f"postgresql+asyncpg://triage:{PASSWORD}@h/db?ssl=bogus",
        f"not a url {PASSWORD}",
    ],
)
def test_a_database_url_rasa_cannot_share_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        libpq_url(url)
    assert "TRIAGE_DATABASE_URL" in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_endpoints_without_a_url_keep_the_trackers_in_sqlite(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.yml"
    write_endpoints(endpoints, "http://127.0.0.1:1/webhook", tmp_path / "trackers.db")
    store = yaml.safe_load(endpoints.read_text())["tracker_store"]
    assert store == {
        "type": "triage_rasa.tracker_store.TriageTrackerStore",
        "db": str(tmp_path / "trackers.db"),
    }


async def test_the_database_password_reaches_the_endpoints_file_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor writes the URL where Rasa reads it, readable by its owner only, and logs
    which store Rasa uses, never the URL (``/bin/true`` stands for a Rasa that exits)."""
    supervisor = RasaSupervisor(
        Path("/bin/true"),
        tmp_path / "model.tar.gz",
        _free_port(),
        tmp_path,
        "http://127.0.0.1:1/webhook",
        start_timeout_s=5,
        tracker_db_url=f"postgresql+asyncpg://triage:{PASSWORD}@127.0.0.1:5432/triage",
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NluUnavailable, match="exited"):
        await supervisor.start()
    await supervisor.stop()
    endpoints = tmp_path / "rasa" / "endpoints.yml"
    store = yaml.safe_load(endpoints.read_text())["tracker_store"]
    assert store["url"] == f"postgresql://triage:{PASSWORD}@127.0.0.1:5432/triage"
    assert "db" not in store
    assert endpoints.stat().st_mode & 0o777 == 0o600
    starting = [r for r in caplog.records if r.getMessage() == "rasa starting"]
    assert starting and all(r.__dict__["trackers"] == "postgresql" for r in starting)
    assert all(PASSWORD not in str(r.__dict__) for r in caplog.records)


# --- the tracker store under Rasa, on PostgreSQL --------------------------------------------


@pytest.mark.rasa
@pytest.mark.postgres
def test_tracker_store_checks_pass_on_postgresql_under_rasa(
    rasa_python: Path, tracker_database: str
) -> None:
    done = _run_under_rasa(rasa_python, str(CHECKS), "postgres", libpq_url(tracker_database))
    passed = [line.removeprefix("ok ") for line in done.stdout.splitlines() if line[:3] == "ok "]
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert tuple(passed) == (*COMMON_CHECK_NAMES, *CLUSTER_CHECK_NAMES)


# --- two real Rasa servers, one database -----------------------------------------------------

METADATA = {"language": "it", "channel": "chat"}
TURN_TIMEOUT_S = 60.0


@pytest.mark.rasa
@pytest.mark.postgres
async def test_a_form_started_on_one_node_is_continued_on_the_other_and_back(
    rasa_python: Path, sample_model: Path, tmp_path: Path
) -> None:
    """Node A starts the balance form, node B takes the customer code, node A (which still has
    the first turn's tracker in memory) takes the postcode and reads the balance. The action
    webhook is the gateway's, shared by both, as the nodes' would share one store."""
    settings = Settings(
        data_dir=tmp_path / "gateway",
        action_port=_free_port(),
        rasa_python=rasa_python,
        routing_file=write_test_routing(tmp_path / "routing.yml"),
        api_token="test-token",
    )
    async with (
        _throwaway_database() as database,
        open_runtime(settings, with_rasa=False, reuse_rasa=False) as runtime,
    ):
        nodes = [
            RasaSupervisor(
                rasa_python,
                sample_model,
                _free_port(),
                tmp_path / name,
                settings.action_url,
                tracker_db_url=database,
            )
            for name in ("node-a", "node-b")
        ]
        try:
            await asyncio.gather(*(node.start() for node in nodes))
            node_a, node_b = (RasaHttpClient(node.url, TURN_TIMEOUT_S) for node in nodes)
            try:
                conversation = f"cluster-{secrets.token_hex(6)}"
                await runtime.store.conversations.ensure_conversation(conversation, "chat", "it")
                first = await node_a.turn(conversation, "quanto devo pagare?", METADATA)
                assert first.active_loop == "check_balance_form", first
                second = await node_b.turn(conversation, "CL100001", METADATA)
                assert second.active_loop == "check_balance_form", second
                assert second.slots.get("customer_code") == "CL100001"
                third = await node_a.turn(conversation, "20123", METADATA)
                assert "84,50" in " ".join(r.text for r in third.replies), third
                flows = await runtime.store.conversations.flow_results(conversation)
                assert [(f.flow, f.outcome) for f in flows] == [("check_balance", "completed")]
            finally:
                await node_a.close()
                await node_b.close()
        finally:
            await asyncio.gather(*(node.stop() for node in nodes))
        conn = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
        try:
            users = await conn.fetchval(
                "SELECT count(*) FROM tracker_events WHERE sender_id = $1 AND type_name = 'user'",
                conversation,
            )
        finally:
            await conn.close()
        assert users == 3
        assert not list(tmp_path.glob("node-*/rasa/trackers.db"))  # nothing went to SQLite
