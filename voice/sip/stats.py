"""What the SIP user agent counts: its running counters, the snapshot it shows of them, and
the tasks waiting for a snapshot to satisfy them (``SipUserAgent.wait_for``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from voice.sip.transport import TransportStats


@dataclass(frozen=True, slots=True)
class SipStats:
    """A snapshot of the user agent's counters."""

    calls_started: int  # Calls run (ACK received)
    calls_ended: int
    active_calls: int  # legs from INVITE accepted to dialog ended
    end_reasons: Mapping[str, int]
    rejected: Mapping[str, int]  # requests refused or dropped, by reason
    cancelled: int
    ack_timeouts: int
    byes_sent: int
    malformed: int  # datagrams that did not parse (dropped or answered 400)
    unexpected_responses: int
    stray_acks: int
    retransmissions_absorbed: int
    transport: TransportStats


@dataclass(slots=True)
class SipCounters:
    """The counts the user agent keeps itself (the transport and the transactions keep theirs)."""

    calls_started: int = 0
    calls_ended: int = 0
    cancelled: int = 0
    ack_timeouts: int = 0
    byes_sent: int = 0
    unexpected_responses: int = 0
    stray_acks: int = 0
    end_reasons: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def snapshot(
        self, *, active_calls: int, transport: TransportStats, retransmissions_absorbed: int
    ) -> SipStats:
        """These counts with the transport's and the transaction layer's, frozen."""
        rejected = Counter(self.rejected)
        if transport.filtered:
            rejected["source_not_allowed"] = transport.filtered
        return SipStats(
            calls_started=self.calls_started,
            calls_ended=self.calls_ended,
            active_calls=active_calls,
            end_reasons=MappingProxyType(dict(self.end_reasons)),
            rejected=MappingProxyType(dict(rejected)),
            cancelled=self.cancelled,
            ack_timeouts=self.ack_timeouts,
            byes_sent=self.byes_sent,
            malformed=transport.malformed + transport.bad_requests + transport.oversized,
            unexpected_responses=self.unexpected_responses,
            stray_acks=self.stray_acks,
            retransmissions_absorbed=retransmissions_absorbed,
            transport=replace(transport),
        )


_Waiter = tuple[Callable[[SipStats], bool], asyncio.Future[SipStats]]


class StatsWaiters:
    """Futures waiting for the first snapshot that satisfies their predicate.

    ``snapshot`` is called only while someone waits: not once per datagram otherwise.
    """

    def __init__(self, snapshot: Callable[[], SipStats]) -> None:
        self._snapshot = snapshot
        self._waiters: list[_Waiter] = []

    async def wait_for(self, predicate: Callable[[SipStats], bool]) -> SipStats:
        """The first snapshot for which ``predicate`` holds, now or after a ``changed``."""
        stats = self._snapshot()
        if predicate(stats):
            return stats
        future: asyncio.Future[SipStats] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            return await future
        finally:
            self._waiters.remove(waiter)

    def changed(self) -> None:
        """The counts may have changed: wake every waiter whose predicate holds now."""
        if not self._waiters:
            return
        stats = self._snapshot()
        for predicate, future in self._waiters:
            if not future.done() and predicate(stats):
                future.set_result(stats)
