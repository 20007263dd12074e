"""Lockout of sources that keep failing digest authentication (fail2ban in the agent).

``FailureThrottle`` counts, per source, the failures of the last ``window_s`` seconds; the
``max_failures``-th within the window locks the source for ``lockout_s`` seconds, after which it
starts over with a clean slate. A success clears the source's failures. Only the most recently
seen ``max_sources`` sources are remembered: the least recently seen is forgotten (and, if it
comes back, starts over), so a flood of sources costs bounded memory, not a lockout of anyone.

The key is the IP address a request came from, without the port (a guesser changes ports for
free). That is the UDP source address, which a sender on the path, or on a network without
ingress filtering, can forge: a spoofed wrong answer "from" the trunk's address counts against
the trunk, and enough of them lock it out. Where addresses can be spoofed, ``allowed_sources``
(an allow-list checked before anything else, with ingress filtering at the edge) is the first
defence; this throttle only slows down guessing from the sources that get through.

Pure: no I/O, no logging, time from an injectable ``clock``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_FAILURES: Final = 5
DEFAULT_FAILURE_WINDOW_S: Final = 60.0
DEFAULT_LOCKOUT_S: Final = 300.0
DEFAULT_MAX_SOURCES: Final = 10_000


@dataclass(slots=True)
class _Source:
    failures: deque[float]  # times of the latest failures, at most max_failures of them
    locked_until: float | None = None


class FailureThrottle:
    """See the module docstring. ``ValueError`` names a parameter that is not positive."""

    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_s: float = DEFAULT_FAILURE_WINDOW_S,
        lockout_s: float = DEFAULT_LOCKOUT_S,
        max_sources: int = DEFAULT_MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("max_failures", max_failures),
            ("window_s", window_s),
            ("lockout_s", lockout_s),
            ("max_sources", max_sources),
        ):
            if not value > 0:  # also refuses NaN
                raise ValueError(f"{name} must be positive, not {value!r}")
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        """How many sources are remembered."""
        return len(self._sources)

    def locked(self, source_ip: str) -> bool:
        """Whether ``source_ip`` is locked out now."""
        source = self._seen(source_ip)
        if source is None or source.locked_until is None:
            return False
        if self._clock() < source.locked_until:
            return True
        del self._sources[source_ip]  # the lockout is over: start over
        return False

    def record_failure(self, source_ip: str) -> bool:
        """Count a failure of ``source_ip``; True if it has just locked the source out.

        A source already locked out stays locked until its lockout ends (not extended)."""
        if self.locked(source_ip):
            return False
        now = self._clock()
        source = self._seen(source_ip)
        if source is None:
            source = self._sources[source_ip] = _Source(deque(maxlen=self.max_failures))
            if len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        failures = source.failures
        failures.append(now)
        # The deque holds the latest max_failures failures: all in the window means locked.
        if len(failures) == self.max_failures and now - failures[0] < self.window_s:
            source.locked_until = now + self.lockout_s
            return True
        return False

    def record_success(self, source_ip: str) -> None:
        """Forget the failures of ``source_ip`` (a lockout in force runs its course)."""
        if not self.locked(source_ip):
            self._sources.pop(source_ip, None)

    def _seen(self, source_ip: str) -> _Source | None:
        source = self._sources.get(source_ip)
        if source is not None:
            self._sources.move_to_end(source_ip)
        return source
