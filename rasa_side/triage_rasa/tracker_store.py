"""``TriageTrackerStore``: Rasa's dialogue trackers, durable in SQLite, live ones kept in memory.

Runs inside the Rasa process (Python 3.10, Rasa 3.6), imported by ``triage_rasa.launcher`` and
named in the ``tracker_store`` section of the endpoints file the gateway writes. It imports
nothing from the gateway; it masks with ``triage_pii.masking``, the module the gateway masks with.

Why not Rasa's ``SQLTrackerStore``: profiled under chat load it was 40 % of the Rasa process's
CPU. Every turn it read all events of the session back through the SQLAlchemy ORM, rebuilt the
tracker by replaying them, and counted the stored events again before saving. Here:

* events are appended to one SQLite table (WAL), one row per event, in one transaction per save:
  only the events the tracker gained since it was read or last saved are serialised;
* the tracker of a conversation is kept in memory after it is saved (a bounded LRU), so the
  next turn of that conversation reads nothing back. A cached tracker is handed out only while it
  is exactly what was stored: one that was changed and not saved (a turn that failed half way)
  is dropped and read again from the database;
* user and bot texts are masked (``redact``) before they are written, as in the gateway's own
  store, and so are the values of entities whose text the masking removed: the dialogue needs
  the slots it already set, not the raw text. Slot values are kept as they are, since the flows
  need them after a restart.

Conversation sessions work as in Rasa's stores: ``retrieve`` gives the events from the last
``action_session_start`` on, ``retrieve_full_tracker`` all of them. A tracker that gains a new
session is not kept in the cache, so the next ``retrieve`` starts at the new session.

Durability: SQLite in WAL mode with ``synchronous=NORMAL``. A saved turn survives the Rasa
process being killed (the supervisor restarts it and the dialogue goes on); the last turns
before a power loss may not. The gateway's store of record keeps every message regardless.

An ``events`` table left by Rasa's ``SQLTrackerStore`` in the same file is copied over once, so
dialogues in progress survive the upgrade.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rasa.core.tracker_store import (  # type: ignore[import-not-found]
    SerializedTrackerAsText,
    TrackerStore,
)
from rasa.shared.core.events import (  # type: ignore[import-not-found]
    ActionExecuted,
    SessionStarted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker  # type: ignore[import-not-found]

from triage_pii.masking import redact

log = logging.getLogger(__name__)

SESSION_START_ACTION = "action_session_start"
# How many events of a tracker object are in the database: set on every tracker handed out or
# saved, so a save writes only what came after.
PERSISTED = "_triage_persisted_events"

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


def masked_event(data: dict[str, Any]) -> dict[str, Any]:
    """The event as it is stored: the texts of user and bot messages masked, and so the values
    of entities the masking took out of the text (a number the NLU read as an entity)."""
    text = data.get("text")
    if not isinstance(text, str):
        return data
    masked = redact(text)
    if masked == text:
        return data
    data["text"] = masked
    parse_data = data.get("parse_data")
    if isinstance(parse_data, dict):
        entities = parse_data.get("entities")
        if isinstance(entities, list):
            entities = [_masked_entity(e, text, masked) for e in entities]
        data["parse_data"] = {**parse_data, "text": masked, "entities": entities}
    return data


def _masked_entity(entity: Any, text: str, masked: str) -> Any:
    value = entity.get("value") if isinstance(entity, dict) else None
    if value is None or isinstance(value, (dict, list)):
        return entity
    literal = str(value)
    if literal and literal in text and literal not in masked:
        return {**entity, "value": "*" * len(literal)}
    return entity


class TriageTrackerStore(TrackerStore, SerializedTrackerAsText):  # type: ignore[misc]
    def __init__(
        self,
        domain: Any,
        host: str | None = None,
        db: str = "trackers.db",
        cache_size: int = 2000,
        event_broker: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(domain, event_broker, **kwargs)
        self.path = Path(db)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        # the event loop's thread is the only one to use it (Rasa calls stores from its loop)
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")  # first: other workers share the file
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._copy_rasa_sql_events()
        log.info("triage tracker store ready")

    # --- reading --------------------------------------------------------------------------

    async def retrieve(self, sender_id: str) -> Any | None:
        cached = self._cache.get(sender_id)
        if cached is not None:
            if getattr(cached, PERSISTED, -1) == len(cached.events):
                self._cache.move_to_end(sender_id)
                return cached
            del self._cache[sender_id]  # changed and never saved: not what is stored
        tracker = self._load(sender_id, all_sessions=False)
        if tracker is not None:
            self._remember(sender_id, tracker)
        return tracker

    async def retrieve_full_tracker(self, conversation_id: str) -> Any | None:
        return self._load(conversation_id, all_sessions=True)

    async def keys(self) -> Iterable[str]:
        rows = self._db.execute("SELECT DISTINCT sender_id FROM tracker_events").fetchall()
        return [sender_id for (sender_id,) in rows]

    async def exists(self, conversation_id: str) -> bool:
        if conversation_id in self._cache:
            return True
        row = self._db.execute(
            "SELECT 1 FROM tracker_events WHERE sender_id = ? LIMIT 1", (conversation_id,)
        ).fetchone()
        return row is not None

    def _load(self, sender_id: str, all_sessions: bool) -> Any | None:
        start = 0
        if not all_sessions:
            (last_session,) = self._db.execute(
                "SELECT MAX(seq) FROM tracker_events WHERE sender_id = ? "
                "AND type_name = ? AND action_name = ?",
                (sender_id, ActionExecuted.type_name, SESSION_START_ACTION),
            ).fetchone()
            start = last_session or 0
        rows = self._db.execute(
            "SELECT data FROM tracker_events WHERE sender_id = ? AND seq >= ? ORDER BY seq",
            (sender_id, start),
        ).fetchall()
        if not rows:
            return None
        tracker = DialogueStateTracker.from_dict(
            sender_id,
            [json.loads(data) for (data,) in rows],
            self.domain.slots,
            self.max_event_history,
        )
        setattr(tracker, PERSISTED, len(tracker.events))
        return tracker

    # --- writing --------------------------------------------------------------------------

    async def save(self, tracker: Any) -> None:
        sender_id = tracker.sender_id
        events = list(tracker.events)
        persisted = getattr(tracker, PERSISTED, None)
        if persisted is None or persisted > len(events):
            # a tracker this store did not hand out: as Rasa's SQL store does, whatever it has
            # beyond the events of the last stored session is new
            persisted = self._stored_in_last_session(sender_id)
        new_events = events[persisted:]
        if new_events:
            self._append(sender_id, new_events)
            if self.event_broker is not None:
                await self._stream_new_events(self.event_broker, new_events, sender_id)
        setattr(tracker, PERSISTED, len(events))
        starts_session = any(isinstance(e, SessionStarted) for e in new_events)
        if persisted == 0 or (self._cache.get(sender_id) is tracker and not starts_session):
            self._remember(sender_id, tracker)
        else:
            # a new session (the next turn starts from it), or a tracker that is not the one
            # cached (a full tracker, or one built elsewhere): the next turn reads it back
            self._cache.pop(sender_id, None)

    async def forget_from_message(self, sender_id: str, message_id: str) -> bool:
        """Delete the customer message with this id and every event after it (a turn that was
        interrupted and is run again); False if the conversation has no such message."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (first,) = db.execute(
                "SELECT MIN(seq) FROM tracker_events WHERE sender_id = ? AND type_name = ? "
                "AND json_extract(data, '$.message_id') = ?",
                (sender_id, UserUttered.type_name, message_id),
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
        self._cache.pop(sender_id, None)
        return first is not None

    def _stored_in_last_session(self, sender_id: str) -> int:
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM tracker_events WHERE sender_id = ? AND seq >= COALESCE("
            " (SELECT MAX(seq) FROM tracker_events WHERE sender_id = ?"
            "  AND type_name = ? AND action_name = ?), 0)",
            (sender_id, sender_id, ActionExecuted.type_name, SESSION_START_ACTION),
        ).fetchone()
        return int(count)

    def _append(self, sender_id: str, new_events: list[Any]) -> None:
        rows = []
        for event in new_events:
            data = masked_event(event.as_dict())
            action = data.get("name") if event.type_name == ActionExecuted.type_name else None
            rows.append((event.type_name, action, json.dumps(data)))
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

    def _remember(self, sender_id: str, tracker: Any) -> None:
        self._cache[sender_id] = tracker
        self._cache.move_to_end(sender_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # --- upgrade from Rasa's SQLTrackerStore ----------------------------------------------

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
                "SELECT sender_id, type_name, action_name, data FROM events ORDER BY id"
            ).fetchall()
            next_seq: dict[str, int] = {}
            copied = []
            for sender_id, type_name, action_name, data in rows:
                seq = next_seq.get(sender_id, 0)
                next_seq[sender_id] = seq + 1
                stored = json.dumps(masked_event(json.loads(data)))
                action = action_name if type_name == ActionExecuted.type_name else None
                copied.append((sender_id, seq, type_name, action, stored))
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
