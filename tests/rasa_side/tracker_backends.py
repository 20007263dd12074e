"""What the tracker store checks share: a small domain, a session's events, and the two
databases a ``TriageTrackerStore`` can keep them in, each able to open stores on a fresh
database by name (the same name: the same database) and to read its rows back."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import psycopg2
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)

from triage_rasa.tracker_store import TriageTrackerStore

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet, ask_human]
slots:
  customer_code:
    type: text
    mappings: [{type: custom}]
"""
)
PHONE_TEXT = "il mio numero è +39 333 123 4567"

Row = tuple[int, str, str]  # seq, type name, data (JSON)


def session_events(text: str) -> list[Event]:
    return [
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
        UserUttered(text, {"name": "greet", "confidence": 0.9}, parse_data={"text": text}),
        SlotSet("customer_code", "CL100001"),
        BotUttered("Buongiorno"),
    ]


def turn_events(text: str, code: str, message_id: str | None = None) -> list[Event]:
    """A turn after the first: the user's message, a slot set, the bot's reply."""
    return [
        ActionExecuted("action_listen"),
        UserUttered(text, {"name": "ask_human", "confidence": 0.9}, message_id=message_id),
        SlotSet("customer_code", code),
        BotUttered(f"Ricevuto: {text}"),
    ]


class Backend(Protocol):
    name: str

    def store(self, database: str, **kwargs: Any) -> TriageTrackerStore:
        """A new store (a new process's) on the database of this name."""
        ...

    def rows(self, database: str, sender: str) -> list[Row]: ...


class SqliteBackend:
    name = "sqlite"

    def __init__(self, work: Path) -> None:
        self.work = work

    def path(self, database: str) -> Path:
        return self.work / f"{database}.db"

    def store(self, database: str, **kwargs: Any) -> TriageTrackerStore:
        return TriageTrackerStore(DOMAIN, db=str(self.path(database)), **kwargs)

    def rows(self, database: str, sender: str) -> list[Row]:
        with sqlite3.connect(self.path(database)) as conn:
            return conn.execute(
                "SELECT seq, type_name, data FROM tracker_events WHERE sender_id = ? ORDER BY seq",
                (sender,),
            ).fetchall()


class PostgresBackend:
    """Each database name is a schema of the (throw-away) database at ``url``."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = psycopg2.connect(url)
        self.admin.autocommit = True

    def url_for(self, database: str) -> str:
        with self.admin.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{database}"')
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}options={quote(f'-csearch_path={database}')}"

    def store(self, database: str, **kwargs: Any) -> TriageTrackerStore:
        return TriageTrackerStore(DOMAIN, host=self.url_for(database), **kwargs)

    def rows(self, database: str, sender: str) -> list[Row]:
        with self.admin.cursor() as cursor:
            cursor.execute(
                f'SELECT seq, type_name, data FROM "{database}".tracker_events '
                "WHERE sender_id = %s ORDER BY seq",
                (sender,),
            )
            return [(int(seq), kind, data) for seq, kind, data in cursor.fetchall()]

    def terminate_store_connections(self) -> int:
        """Cut every store's connection to the database, as a server restart does."""
        with self.admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'triage-rasa'"
            )
            return len(cursor.fetchall())
