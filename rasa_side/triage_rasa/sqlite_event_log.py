"""``SqliteEventLog``: the events of Rasa's dialogues in a SQLite file (WAL) in the node's data
directory, the single-node default.

The Rasa workers of a node share the file, but the gateway sends each conversation to one of
them (a stable hash of its id), so no other process writes a conversation a worker has in
memory: ``shared`` is False, the store checks nothing before handing out a tracker it kept, and
``append`` writes after whatever is stored. Its version is the next sequence number.

Durability: ``synchronous=NORMAL``. A saved turn survives the Rasa process being killed; the
last turns before a power loss may not. The gateway's store of record keeps every message.

An ``events`` table left by Rasa's ``SQLTrackerStore`` in the same file is copied over once, so
dialogues in progress survive the upgrade.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from triage_rasa.event_log import (
    ACTION_EVENT,
    SESSION_START_ACTION,
    USER_EVENT,
    EventRow,
    StoredEvents,
)
from triage_rasa.event_masking import event_row

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracker_events (
    sender_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type_name TEXT NOT NULL,
    action_name TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (sender_id, seq)
) WITHOUT ROWID
"""
BUSY_TIMEOUT_MS = 5000  # other workers of the node write the same file


class SqliteEventLog:
    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # the event loop's thread is the only one to use it (Rasa calls stores from its loop)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: the file is shared
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._copy_rasa_sql_events()

    def load(self, sender_id: str, all_sessions: bool) -> StoredEvents | None:
        start = 0
        if not all_sessions:
            (last_session,) = self._db.execute(
                "SELECT MAX(seq) FROM tracker_events WHERE sender_id = ? "
                "AND type_name = ? AND action_name = ?",
                (sender_id, ACTION_EVENT, SESSION_START_ACTION),
            ).fetchone()
            start = last_session or 0
        rows = self._db.execute(
            "SELECT seq, data FROM tracker_events WHERE sender_id = ? AND seq >= ? ORDER BY seq",
            (sender_id, start),
        ).fetchall()
        if not rows:
            return None
        return StoredEvents([json.loads(data) for _, data in rows], rows[-1][0] + 1)

    def version(self, sender_id: str) -> int | None:
        (last,) = self._db.execute(
            "SELECT MAX(seq) FROM tracker_events WHERE sender_id = ?", (sender_id,)
        ).fetchone()
        return None if last is None else int(last) + 1

    def append(self, sender_id: str, rows: Sequence[EventRow], expected_version: int | None) -> int:
        # expected_version is not checked: no other process writes this conversation
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (last,) = db.execute(
                "SELECT MAX(seq) FROM tracker_events WHERE sender_id = ?", (sender_id,)
            ).fetchone()
            first = 0 if last is None else last + 1
            db.executemany(
                "INSERT INTO tracker_events (sender_id, seq, type_name, action_name, data) "
                "VALUES (?, ?, ?, ?, ?)",
                [(sender_id, first + i, *row) for i, row in enumerate(rows)],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(first + len(rows))

    def stored_in_last_session(self, sender_id: str) -> int:
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM tracker_events WHERE sender_id = ? AND seq >= COALESCE("
            " (SELECT MAX(seq) FROM tracker_events WHERE sender_id = ?"
            "  AND type_name = ? AND action_name = ?), 0)",
            (sender_id, sender_id, ACTION_EVENT, SESSION_START_ACTION),
        ).fetchone()
        return int(count)

    def forget_from_message(self, sender_id: str, message_id: str) -> bool:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (first,) = db.execute(
                "SELECT MIN(seq) FROM tracker_events WHERE sender_id = ? AND type_name = ? "
                "AND json_extract(data, '$.message_id') = ?",
                (sender_id, USER_EVENT, message_id),
            ).fetchone()
            if first is not None:
                db.execute(
                    "DELETE FROM tracker_events WHERE sender_id = ? AND seq >= ?",
                    (sender_id, first),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return first is not None

    def keys(self) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT sender_id FROM tracker_events").fetchall()
        return [sender_id for (sender_id,) in rows]

    def exists(self, sender_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM tracker_events WHERE sender_id = ? LIMIT 1", (sender_id,)
        ).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()

    def _copy_rasa_sql_events(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # workers starting together: one copies, the others see it
        try:
            has_rasa_table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
            if not has_rasa_table or db.execute("SELECT 1 FROM tracker_events LIMIT 1").fetchone():
                db.execute("COMMIT")
                return
            rows = db.execute(
                "SELECT sender_id, type_name, data FROM events ORDER BY id"
            ).fetchall()
            next_seq: dict[str, int] = {}
            copied = []
            for sender_id, type_name, data in rows:
                seq = next_seq.get(sender_id, 0)
                next_seq[sender_id] = seq + 1
                copied.append((sender_id, seq, *event_row(type_name, json.loads(data))))
            db.executemany(
                "INSERT INTO tracker_events (sender_id, seq, type_name, action_name, data) "
                "VALUES (?, ?, ?, ?, ?)",
                copied,
            )
            db.execute("DROP TABLE events")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info(
            "copied %d events of %d conversations from Rasa's SQL store", len(rows), len(next_seq)
        )
