"""Failpoints: named places in a turn where the process can be made to die, as a crash would.

The crash tests start ``triage serve`` with ``TRIAGE_FAILPOINTS=turn_answered`` (say), drive a
customer up to that point, and the process kills itself there with SIGKILL: no clean-up, no
flushing, exactly what a power cut or the OOM killer does. Empty (the default), ``reach`` is one
set lookup. A point may be narrowed to one action: ``action_ran:action_handoff``.
"""

from __future__ import annotations

import os
import signal
from enum import StrEnum


class Failpoint(StrEnum):
    MESSAGE_STORED = "message_stored"  # the customer's message is committed, not yet acked
    MESSAGE_ACKED = "message_acked"  # the ack is sent, the turn has not started
    ACTION_RAN = "action_ran"  # a custom action ran (its effects committed), not yet journaled
    ACTION_JOURNALED = "action_journaled"  # ... and journaled, Rasa not yet answered
    TURN_ANSWERED = "turn_answered"  # Rasa answered the turn, nothing of it recorded yet
    TURN_RECORDED = "turn_recorded"  # the turn is recorded, its replies not yet published


class Failpoints:
    def __init__(self, names: frozenset[str] = frozenset()) -> None:
        known = {str(p) for p in Failpoint}
        unknown = sorted(n for n in names if n.partition(":")[0] not in known)
        if unknown:
            raise ValueError(f"unknown failpoint(s) {', '.join(unknown)}; known: {sorted(known)}")
        self.names = names

    def reach(self, point: Failpoint, detail: str | None = None) -> None:
        if not self.names:
            return
        if point in self.names or (detail is not None and f"{point}:{detail}" in self.names):
            os.kill(os.getpid(), signal.SIGKILL)


NO_FAILPOINTS = Failpoints()
