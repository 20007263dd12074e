"""``EventLog``: where ``TriageTrackerStore`` keeps the events of Rasa's dialogues, one row each.

Two implementations: ``SqliteEventLog`` (one node: a file in its data directory, each
conversation written by one Rasa process) and ``PostgresEventLog`` (a cluster: the shared
database, any node's Rasa processes may write any conversation, one turn at a time).

Rows are appended in one transaction per save and read back in order from the last session
start (``load(..., all_sessions=False)``) or from the first event. Every write changes the
conversation's *version*: a store that kept a tracker in memory compares it with the stored one
before handing the tracker out again, when other processes write (``shared``).

The methods block: they are called from Rasa's event loop, as Rasa's own stores are (see
``PostgresEventLog`` for why a thread would cost more than it saves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

# Rasa's names of the events and the action the queries look for (``ActionExecuted.type_name``,
# ``UserUttered.type_name``): stable parts of its tracker format, spelt here so that the logs
# need nothing of Rasa.
ACTION_EVENT = "action"
USER_EVENT = "user"
SESSION_START_ACTION = "action_session_start"


class EventRow(NamedTuple):
    """One event as it is stored: masked already, serialised as JSON."""

    type_name: str
    action_name: str | None
    data: str


@dataclass(frozen=True)
class StoredEvents:
    """Events read back, in order, and the version of the conversation they were read at."""

    events: list[dict[str, Any]]
    version: int


class TrackerConflict(RuntimeError):
    """A save found the conversation changed by another process since its tracker was read:
    nothing was written. The turn fails; the next one reads the conversation again."""


class EventLog(Protocol):
    shared: bool
    """Other processes may write the same conversations (a tracker kept in memory may be
    stale)."""

    def load(self, sender_id: str, all_sessions: bool) -> StoredEvents | None:
        """The conversation's events (from its last session start, or all); None if none."""
        ...

    def version(self, sender_id: str) -> int | None:
        """The conversation's version (None if never written): changed by every write."""
        ...

    def append(self, sender_id: str, rows: Sequence[EventRow], expected_version: int | None) -> int:
        """Append the rows in one transaction; the new version. With ``expected_version``, raise
        ``TrackerConflict`` (writing nothing) if the stored version is another one."""
        ...

    def stored_in_last_session(self, sender_id: str) -> int:
        """How many events are stored from the last session start on."""
        ...

    def forget_from_message(self, sender_id: str, message_id: str) -> bool:
        """Delete the user message with this id and every event after it; False if none."""
        ...

    def keys(self) -> list[str]: ...

    def exists(self, sender_id: str) -> bool: ...

    def close(self) -> None: ...
