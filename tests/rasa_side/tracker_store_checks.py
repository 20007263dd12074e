"""Checks of ``TriageTrackerStore`` against Rasa's own classes, run under the Rasa environment's
Python by ``tests/test_rasa_side.py`` (SQLite) and ``tests/test_rasa_cluster_trackers.py``
(PostgreSQL) (the gateway's environment has no Rasa), against the ``triage_rasa`` package that
environment has installed.

Usage: ``python tracker_store_checks.py sqlite WORKDIR`` or ``python tracker_store_checks.py
postgres URL`` (a throw-away database: each check makes its own schema in it); prints ``ok NAME``
per check, exits 1 on the first failing one. On PostgreSQL the checks of a cluster's stores
(``cluster_tracker_checks.py``) run after the common ones.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.events import ActionExecuted, BotUttered, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from tracker_backends import (
    DOMAIN,
    PHONE_TEXT,
    Backend,
    PostgresBackend,
    SqliteBackend,
    session_events,
)

Check = Callable[[Backend], Awaitable[None]]


async def a_saved_tracker_is_served_from_memory_and_stored_masked(backend: Backend) -> None:
    store = backend.store("a")
    tracker = await store.get_or_create_tracker("c1", append_action_listen=False)
    assert len(tracker.events) == 0
    tracker.update_with_events(session_events(PHONE_TEXT), DOMAIN)
    await store.save(tracker)
    assert await store.retrieve("c1") is tracker
    stored = backend.rows("a", "c1")
    assert [seq for seq, _, _ in stored] == list(range(6))
    assert [t for _, t, _ in stored] == [e.type_name for e in tracker.events]
    user_row = stored[3][2]
    assert "333 123" not in user_row and "**********67" in user_row, user_row
    await store.save(tracker)  # nothing new: nothing written
    assert len(backend.rows("a", "c1")) == 6


async def a_changed_unsaved_tracker_is_read_again(backend: Backend) -> None:
    store = backend.store("b")
    tracker = await store.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events("ciao"), DOMAIN)
    await store.save(tracker)
    tracker.update(ActionExecuted("action_listen"))  # a turn that failed before its save
    again = await store.retrieve("c1")
    assert again is not tracker and len(again.events) == 6
    again.update(UserUttered("di nuovo", {"name": "greet", "confidence": 0.9}))
    await store.save(again)
    assert [seq for seq, _, _ in backend.rows("b", "c1")] == list(range(7))
    assert await store.retrieve("c1") is again


async def a_reopened_store_gives_the_same_dialogue(backend: Backend) -> None:
    first = backend.store("c")
    tracker = await first.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events(PHONE_TEXT), DOMAIN)
    await first.save(tracker)
    second = backend.store("c")
    back = await second.retrieve("c1")
    assert back is not None and back is not tracker
    assert [e.type_name for e in back.events] == [e.type_name for e in tracker.events]
    assert back.get_slot("customer_code") == "CL100001"
    assert back.latest_message.intent["name"] == "greet"
    assert "333 123" not in back.latest_message.text
    assert await second.retrieve("unknown") is None
    assert await second.exists("c1") and not await second.exists("unknown")
    assert list(await second.keys()) == ["c1"]


async def retrieve_starts_at_the_last_session(backend: Backend) -> None:
    store = backend.store("d")
    tracker = await store.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events("prima"), DOMAIN)
    await store.save(tracker)
    tracker.update_with_events(session_events("seconda")[:4], DOMAIN)
    await store.save(tracker)
    latest = await store.retrieve("c1")
    assert latest is not tracker  # a new session: read back from where it starts
    assert [e.type_name for e in latest.events][:2] == ["action", "session_started"]
    assert len(latest.events) == 4 and latest.latest_message.text == "seconda"
    full = await store.retrieve_full_tracker("c1")
    assert len(full.events) == 10
    # a full tracker saved with one more event appends just that one
    full.update(BotUttered("ancora"))
    await store.save(full)
    assert len(backend.rows("d", "c1")) == 11
    assert len((await store.retrieve("c1")).events) == 5


async def a_tracker_built_elsewhere_appends_only_what_is_new(backend: Backend) -> None:
    store = backend.store("e")
    tracker = await store.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events("ciao"), DOMAIN)
    await store.save(tracker)
    elsewhere = DialogueStateTracker.from_events(
        "c1", [*session_events("ciao"), BotUttered("in più")], DOMAIN.slots
    )
    await store.save(elsewhere)
    stored = backend.rows("e", "c1")
    assert len(stored) == 7 and json.loads(stored[-1][2])["text"] == "in più"


async def entities_read_in_masked_text_are_masked_too(backend: Backend) -> None:
    store = backend.store("g")
    text = "codice CL100001, telefono 333 1234567"
    entities = [
        {"entity": "customer_code", "value": "CL100001", "start": 7, "end": 15},
        {"entity": "meter_reading", "value": "1234567", "start": 30, "end": 37},
    ]
    tracker = await store.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update(UserUttered(text, {"name": "greet"}, entities, {"text": text}))
    await store.save(tracker)
    ((_, _, data),) = backend.rows("g", "c1")
    stored = json.loads(data)
    assert stored["text"] == stored["parse_data"]["text"] == "codice CL100001, telefono ********67"
    values = [e["value"] for e in stored["parse_data"]["entities"]]
    assert values == ["CL100001", "*******"], values
    assert tracker.latest_message.text == text  # the live tracker keeps the text


async def an_interrupted_turn_is_forgotten_from_its_message(backend: Backend) -> None:
    store = backend.store("h")
    tracker = await store.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events("prima"), DOMAIN)
    tracker.update_with_events(
        [
            ActionExecuted("action_listen"),
            UserUttered("seconda", {"name": "ask_human"}, message_id="42"),
            SlotSet("customer_code", "CL100002"),
            BotUttered("La passo a un collega"),
        ],
        DOMAIN,
    )
    await store.save(tracker)
    assert len(backend.rows("h", "c1")) == 10
    assert not await store.forget_from_message("c1", "41")  # no such message: nothing changes
    assert len(backend.rows("h", "c1")) == 10
    assert await store.forget_from_message("c1", "42")
    stored_types = [t for _, t, _ in backend.rows("h", "c1")]
    assert stored_types == [e.type_name for e in list(tracker.events)[:7]]
    back = await store.retrieve("c1")
    assert back is not tracker and back.latest_message.text == "prima"
    assert back.get_slot("customer_code") == "CL100001"
    assert not await store.forget_from_message("c2", "42")  # another conversation's key


async def events_of_rasas_sql_store_are_taken_over(backend: Backend) -> None:
    assert isinstance(backend, SqliteBackend)
    db = backend.path("f")
    rasa_store = SQLTrackerStore(DOMAIN, dialect="sqlite", db=str(db))
    tracker = await rasa_store.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events(PHONE_TEXT), DOMAIN)
    await rasa_store.save(tracker)
    rasa_store.engine.dispose()
    store = backend.store("f")
    back = await store.retrieve("c1")
    assert [e.type_name for e in back.events] == [e.type_name for e in tracker.events]
    assert back.get_slot("customer_code") == "CL100001"
    with sqlite3.connect(db) as conn:
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "events" not in tables, tables
    assert all("333 123" not in data for _, _, data in backend.rows("f", "c1"))


COMMON_CHECKS: list[Check] = [
    a_saved_tracker_is_served_from_memory_and_stored_masked,
    a_changed_unsaved_tracker_is_read_again,
    a_reopened_store_gives_the_same_dialogue,
    retrieve_starts_at_the_last_session,
    a_tracker_built_elsewhere_appends_only_what_is_new,
    entities_read_in_masked_text_are_masked_too,
    an_interrupted_turn_is_forgotten_from_its_message,
]
SQLITE_CHECKS: list[Check] = [events_of_rasas_sql_store_are_taken_over]


def main() -> int:
    kind, where = sys.argv[1], sys.argv[2]
    backend: Backend
    if kind == "sqlite":
        backend, checks = SqliteBackend(Path(where)), [*COMMON_CHECKS, *SQLITE_CHECKS]
    else:
        from cluster_tracker_checks import CLUSTER_CHECKS

        backend, checks = PostgresBackend(where), [*COMMON_CHECKS, *CLUSTER_CHECKS]
    for check in checks:
        try:
            asyncio.run(check(backend))
        except Exception:
            print(f"FAILED {check.__name__}")
            traceback.print_exc()
            return 1
        print(f"ok {check.__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
