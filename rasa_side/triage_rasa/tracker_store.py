"""``TriageTrackerStore``: Rasa's dialogue trackers, durable in SQLite (one node) or PostgreSQL
(a cluster), live ones kept in memory.

Runs inside the Rasa process (Python 3.10, Rasa 3.6), imported by ``triage_rasa.launcher`` and
named in the ``tracker_store`` section of the endpoints file the gateway writes. It imports
nothing from the gateway; it masks with ``triage_pii.masking``, the module the gateway masks with.

Why not Rasa's ``SQLTrackerStore``: profiled under chat load it was 40 % of the Rasa process's
CPU. Every turn it read all events of the session back through the SQLAlchemy ORM, rebuilt the
tracker by replaying them, and counted the stored events again before saving. Here:

* events are appended to one table, one row per event, in one transaction per save (an
  ``EventLog``: ``SqliteEventLog`` in the node's data directory by default, ``PostgresEventLog``
  when the endpoints file gives a ``url``): only the events the tracker gained since it was read
  or last saved are serialised;
* the tracker of a conversation is kept in memory after it is saved (a bounded LRU), so the
  next turn of that conversation reads nothing back. A cached tracker is handed out only while it
  is exactly what was stored: one that was changed and not saved (a turn that failed half way)
  is dropped and read again from the database. In a cluster another node's Rasa may have run
  the conversation's last turns: before handing out a cached tracker the store compares its
  version with the stored one and reads the tracker again if they differ. The check is one
  primary-key lookup (0.09 ms on loopback) where reading a session back and replaying it took
  5 ms (``bench/tracker_store.py``: 1.3 ms per turn with the cache, 8 ms without). A save of a
  tracker read at an older version than the stored one writes nothing and fails
  (``TrackerConflict``);
* user and bot texts are masked (``redact``) before they are written, as in the gateway's own
  store, and so are the values of entities whose text the masking removed: the dialogue needs
  the slots it already set, not the raw text. Slot values are kept as they are, since the flows
  need them after a restart.

Conversation sessions work as in Rasa's stores: ``retrieve`` gives the events from the last
``action_session_start`` on, ``retrieve_full_tracker`` all of them. A tracker that gains a new
session is not kept in the cache, so the next ``retrieve`` starts at the new session.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rasa.core.tracker_store import (  # type: ignore[import-not-found]
    SerializedTrackerAsText,
    TrackerStore,
)
from rasa.shared.core.events import SessionStarted  # type: ignore[import-not-found]
from rasa.shared.core.trackers import DialogueStateTracker  # type: ignore[import-not-found]

from triage_rasa.event_log import EventLog, TrackerConflict
from triage_rasa.event_masking import event_row, masked_event
from triage_rasa.postgres_event_log import PostgresEventLog  # not lazily: see open_event_log
from triage_rasa.sqlite_event_log import SqliteEventLog

__all__ = ["TrackerConflict", "TriageTrackerStore", "masked_event"]

log = logging.getLogger(__name__)

# How many events of a tracker object are in the database, and the conversation's version they
# were read or saved at: set on every tracker handed out or saved, so a save writes only what
# came after, and a cached tracker can be checked against the database.
PERSISTED = "_triage_persisted_events"
VERSION = "_triage_stored_version"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_event_log(url: str | None, db: Path) -> EventLog:
    """PostgreSQL when a URL is given (a cluster), else the SQLite file ``db``.

    ``PostgresEventLog`` (and psycopg2) is imported with this module, not here when a URL asks
    for it: Rasa turns an ImportError raised while it builds the store into an in-memory store
    and a warning, which would lose every dialogue at the next restart."""
    if not url:
        return SqliteEventLog(db)
    if not url.startswith(POSTGRES_SCHEMES):
        # the URL may carry a password: name its scheme only
        scheme = url.partition("://")[0]
        raise ValueError(f"tracker_store url: expected postgresql://..., not {scheme}://")
    return PostgresEventLog(url)


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
        """``host`` is the endpoints file's ``url`` (Rasa passes it under that name): a
        ``postgresql://`` URL for a cluster; without it events go to the SQLite file ``db``."""
        super().__init__(domain, event_broker, **kwargs)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._events = open_event_log(host, Path(db))
        log.info("triage tracker store ready", extra={"backend": type(self._events).__name__})

    # --- reading --------------------------------------------------------------------------

    async def retrieve(self, sender_id: str) -> Any | None:
        cached = self._cache.get(sender_id)
        if cached is not None:
            if self._is_current(sender_id, cached):
                self._cache.move_to_end(sender_id)
                return cached
            self._cache.pop(sender_id, None)
        tracker = self._load(sender_id, all_sessions=False)
        if tracker is not None:
            self._remember(sender_id, tracker)
        return tracker

    async def retrieve_full_tracker(self, conversation_id: str) -> Any | None:
        return self._load(conversation_id, all_sessions=True)

    async def keys(self) -> Iterable[str]:
        return self._events.keys()

    async def exists(self, conversation_id: str) -> bool:
        if conversation_id in self._cache and not self._events.shared:
            return True
        return self._events.exists(conversation_id)

    def _is_current(self, sender_id: str, tracker: Any) -> bool:
        if getattr(tracker, PERSISTED, -1) != len(tracker.events):
            return False  # changed and never saved: not what is stored
        if not self._events.shared:
            return True  # no other process writes this conversation
        return self._events.version(sender_id) == getattr(tracker, VERSION, None)

    def _load(self, sender_id: str, all_sessions: bool) -> Any | None:
        stored = self._events.load(sender_id, all_sessions)
        if stored is None:
            return None
        tracker = DialogueStateTracker.from_dict(
            sender_id, stored.events, self.domain.slots, self.max_event_history
        )
        setattr(tracker, PERSISTED, len(tracker.events))
        setattr(tracker, VERSION, stored.version)
        return tracker

    # --- writing --------------------------------------------------------------------------

    async def save(self, tracker: Any) -> None:
        sender_id = tracker.sender_id
        events = list(tracker.events)
        persisted = getattr(tracker, PERSISTED, None)
        expected_version = getattr(tracker, VERSION, None)
        if persisted is None or persisted > len(events):
            # a tracker this store did not hand out: as Rasa's SQL store does, whatever it has
            # beyond the events of the last stored session is new
            persisted = self._events.stored_in_last_session(sender_id)
            expected_version = None
        new_events = events[persisted:]
        if new_events:
            rows = [event_row(event.type_name, event.as_dict()) for event in new_events]
            try:
                version = self._events.append(sender_id, rows, expected_version)
            except TrackerConflict:
                self._cache.pop(sender_id, None)
                raise
            setattr(tracker, VERSION, version)
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
        self._cache.pop(sender_id, None)
        return self._events.forget_from_message(sender_id, message_id)

    def _remember(self, sender_id: str, tracker: Any) -> None:
        self._cache[sender_id] = tracker
        self._cache.move_to_end(sender_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
