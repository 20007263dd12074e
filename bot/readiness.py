"""``Readiness``: which parts of a node are ready to serve, for ``/healthz``.

The node is ready when every part it runs is: the database and Rasa are asked at each probe; the
parts a command starts itself (the SIP line, say) are registered here as expected and marked
ready once they answer, so a load balancer or Kamailio never sends work to a node whose phone
line is still opening, and the answer names the part that is not ready.

A node that drains (SIGTERM, ``triage drain``) is not ready from then on, whatever its parts
say: the HTTP proxy stops sending it new chats while what it has in progress ends.
"""

from __future__ import annotations


class Readiness:
    def __init__(self) -> None:
        self._parts: dict[str, bool] = {}
        self._draining = False

    def expect(self, part: str) -> None:
        """``part`` will run on this node; it is not ready until ``ready(part)``."""
        self._parts[part] = False

    def ready(self, part: str) -> None:
        self._parts[part] = True

    def gone(self, part: str) -> None:
        """``part`` stopped (or is stopping): the node is not ready any more."""
        self._parts[part] = False

    def parts(self) -> dict[str, bool]:
        return dict(self._parts)

    def drain(self) -> None:
        """The node takes no new work from now on (there is no way back: it is leaving)."""
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining
