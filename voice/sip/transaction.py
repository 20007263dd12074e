"""SIP transactions over UDP (RFC 3261 §17, with the RFC 6026 "Accepted" state).

Server side, ``InviteServerTransaction`` sends what its TU gives it and owns every
retransmission: the last provisional again for a retransmitted INVITE; a 2xx every T1, 2*T1,
... capped at T2 until the TU reports the ACK (``acknowledge``; the ACK of a 2xx is its own
transaction, matched by the dialog, §13.3.1.4), giving up after Timer H (64*T1); a non-2xx on
Timer G until its ACK (matched here by branch, §17.2.3), then Timer I. ``ServerTransaction``
(non-INVITE) answers a retransmitted request with its last response until Timer J.

Client side, ``ClientTransaction`` (non-INVITE only: this user agent sends BYE, REFER and never
INVITE) retransmits on Timer E and gives up on Timer F; ``await final_response()`` is the final
response or None on time-out. Timer K absorbs retransmitted final responses.

Transactions are created, matched and kept by ``voice.sip.transaction_layer``, and reach it only
through ``TransactionHost``: the layer sends (a message is serialised once, by
``send_message``; retransmissions resend the same bytes), runs their timers (``call_later``) and
takes them back when they are done (``linger``, ``remove``). The layer calls them in turn:
``start`` a client transaction, ``receive_retransmission``, ``receive_response``, ``abandon``.
Nothing here awaits or creates tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from voice.sip.message import SipRequest, SipResponse
from voice.sip.timers import SipTimers
from voice.sip.transaction_keys import TransactionKey

_FINAL: Final = 200
_SUCCESS_END: Final = 300

Address = tuple[str, int]


@dataclass(slots=True)
class TransactionStats:
    """Counters of the transaction layer; they only grow."""

    retransmissions_absorbed: int = 0  # requests answered again from a transaction
    responses_retransmitted: int = 0  # on our timers (2xx, Timer G)
    requests_retransmitted: int = 0  # Timer E
    ack_timeouts: int = 0  # Timer H
    client_timeouts: int = 0  # Timer F
    lingering_dropped: int = 0  # finished transactions forgotten early (MAX_LINGERING)


class TransactionHost(Protocol):
    """What a transaction needs from the layer that owns it (``TransactionLayer``)."""

    loop: asyncio.AbstractEventLoop
    timers: SipTimers
    stats: TransactionStats

    def send(self, data: bytes, to: Address) -> None:
        """Send bytes serialised before (a retransmission)."""

    def send_message(self, message: SipRequest | SipResponse, to: Address) -> bytes:
        """Serialise and send ``message``; the bytes are what retransmissions resend."""

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Run ``callback`` after ``delay_s``; the transaction cancels the handle it gets."""

    def linger(
        self, transaction: Transaction, repeat: bytes | None, to: Address, duration_s: float
    ) -> None:
        """``transaction`` is done (and removed): for ``duration_s`` more, answer its
        retransmissions by sending ``repeat`` to ``to`` (None: absorb them silently)."""

    def remove(self, transaction: Transaction) -> None:
        """Forget ``transaction``: it terminated (or lingers from now on)."""


class Transaction:
    """What every transaction kind shares: its key and its timers."""

    def __init__(self, layer: TransactionHost, key: TransactionKey) -> None:
        self._layer = layer
        self.key = key
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def _start_timer(self, name: str, delay_s: float, callback: Callable[[], None]) -> None:
        self._stop_timer(name)
        self._handles[name] = self._layer.call_later(delay_s, callback)

    def _stop_timer(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _stop_timers(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def _forget(self) -> None:
        self._stop_timers()
        self._layer.remove(self)

    def _linger(self, repeat: bytes | None, to: Address, duration_s: float) -> None:
        """Done: from now on only ``repeat`` (or silence) answers a retransmission."""
        self._forget()
        self._layer.linger(self, repeat, to, duration_s)

    def abandon(self) -> None:
        """Stop every timer now (the layer is closing)."""
        self._stop_timers()


class InviteServerState(StrEnum):
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # 2xx sent (RFC 6026)
    COMPLETED = "completed"  # 3xx-6xx sent, waiting for the ACK
    CONFIRMED = "confirmed"  # ACK of a non-2xx received
    TERMINATED = "terminated"


class InviteServerTransaction(Transaction):
    """One received INVITE and every response to it; see the module docstring."""

    def __init__(
        self, layer: TransactionHost, key: TransactionKey, request: SipRequest, source: Address
    ) -> None:
        super().__init__(layer, key)
        self.request = request
        self.source = source
        self.state = InviteServerState.PROCEEDING
        self.ack: SipRequest | None = None  # the ACK that ended the 2xx retransmissions
        self._last: bytes | None = None
        self._interval_s = layer.timers.t1_s
        self._acked: asyncio.Future[bool] = layer.loop.create_future()

    @property
    def final_sent(self) -> bool:
        return self.state is not InviteServerState.PROCEEDING

    def respond(self, response: SipResponse) -> None:
        """Send a response; a final one moves the transaction on. Raises after a final one."""
        if self.state is not InviteServerState.PROCEEDING:
            raise RuntimeError(f"cannot respond to an INVITE transaction that is {self.state}")
        self._last = self._layer.send_message(response, self.source)
        if response.status < _FINAL:
            return
        timers = self._layer.timers
        self._interval_s = timers.t1_s
        if response.status < _SUCCESS_END:
            self.state = InviteServerState.ACCEPTED
            self._start_timer("retransmit", self._interval_s, self._retransmit)
            self._start_timer("H", timers.timeout_s, self._ack_timed_out)
        else:
            self.state = InviteServerState.COMPLETED
            self._start_timer("retransmit", self._interval_s, self._retransmit)
            self._start_timer("H", timers.timeout_s, self._non_2xx_ack_timed_out)

    @property
    def acked(self) -> asyncio.Future[bool]:
        """Done after a 2xx: True once ``acknowledge`` is called, False on Timer H (or close).

        A future rather than a coroutine so that a TU can wait for it alongside others; never
        cancel it.
        """
        return self._acked

    async def wait_ack(self) -> bool:
        """``acked``, awaited."""
        return await asyncio.shield(self._acked)

    def acknowledge(self, ack: SipRequest) -> bool:
        """The TU matched the ACK of our 2xx (by dialog and CSeq): stop retransmitting it.

        Returns False if no 2xx was waiting for an ACK (a retransmitted ACK). Until Timer L a
        retransmitted INVITE still gets the 2xx again (RFC 6026 "Accepted").
        """
        if self.state is not InviteServerState.ACCEPTED or self._acked.done():
            return False
        self.ack = ack
        self._acked.set_result(True)
        self._linger(self._last, self.source, self._layer.timers.timeout_s)
        return True

    def receive_retransmission(self, request: SipRequest) -> None:
        """The layer matched ``request`` (a retransmitted INVITE, or an ACK) to us."""
        if request.method == "ACK":
            if self.state is InviteServerState.COMPLETED:
                self.state = InviteServerState.CONFIRMED
                self._linger(None, self.source, self._layer.timers.t4_s)  # Timer I
            elif self.state is InviteServerState.ACCEPTED:
                # A peer that reuses the INVITE's branch for the ACK of a 2xx (against §17.1.1.3).
                self.acknowledge(request)
            return
        self._layer.stats.retransmissions_absorbed += 1
        if self._last is not None:
            self._layer.send(self._last, self.source)

    def _retransmit(self) -> None:
        if self._last is None:
            return
        self._layer.send(self._last, self.source)
        self._layer.stats.responses_retransmitted += 1
        self._interval_s = min(2 * self._interval_s, self._layer.timers.t2_s)
        self._start_timer("retransmit", self._interval_s, self._retransmit)

    def _ack_timed_out(self) -> None:
        self._layer.stats.ack_timeouts += 1
        self.state = InviteServerState.TERMINATED
        if not self._acked.done():
            self._acked.set_result(False)
        self._forget()

    def _non_2xx_ack_timed_out(self) -> None:
        self.state = InviteServerState.TERMINATED
        self._forget()

    def abandon(self) -> None:
        super().abandon()
        if not self._acked.done():
            self._acked.set_result(False)


class ServerState(StrEnum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"  # final sent; the layer answers retransmissions until Timer J


class ServerTransaction(Transaction):
    """One received non-INVITE request (§17.2.2)."""

    def __init__(
        self, layer: TransactionHost, key: TransactionKey, request: SipRequest, source: Address
    ) -> None:
        super().__init__(layer, key)
        self.request = request
        self.source = source
        self.state = ServerState.TRYING
        self._last: bytes | None = None

    @property
    def final_sent(self) -> bool:
        return self.state is ServerState.COMPLETED

    def respond(self, response: SipResponse) -> None:
        """Send a response; raises once a final response was sent."""
        if self.state not in (ServerState.TRYING, ServerState.PROCEEDING):
            raise RuntimeError(f"cannot respond to a transaction that is {self.state}")
        self._last = self._layer.send_message(response, self.source)
        if response.status < _FINAL:
            self.state = ServerState.PROCEEDING
            return
        self.state = ServerState.COMPLETED
        self._linger(self._last, self.source, self._layer.timers.timeout_s)  # Timer J

    def receive_retransmission(self, request: SipRequest) -> None:
        """The layer matched a retransmission of our request to us: answer it again."""
        self._layer.stats.retransmissions_absorbed += 1
        if self._last is not None:
            self._layer.send(self._last, self.source)


class ClientState(StrEnum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class ClientTransaction(Transaction):
    """One non-INVITE request we send (§17.1.2): BYE, REFER."""

    def __init__(
        self,
        layer: TransactionHost,
        key: TransactionKey,
        request: SipRequest,
        destination: Address,
    ) -> None:
        super().__init__(layer, key)
        self.request = request
        self.destination = destination
        self.state = ClientState.TRYING
        self._interval_s = layer.timers.t1_s
        self._final: asyncio.Future[SipResponse | None] = layer.loop.create_future()
        self._data = b""

    def start(self) -> None:
        """Send the request and start Timers E and F (the layer does, once it holds us)."""
        self._data = self._layer.send_message(self.request, self.destination)
        self._start_timer("E", self._interval_s, self._retransmit)
        self._start_timer("F", self._layer.timers.timeout_s, self._timed_out)

    async def final_response(self) -> SipResponse | None:
        """The final response, or None if none came within Timer F (or the layer closed)."""
        return await asyncio.shield(self._final)

    def receive_response(self, response: SipResponse) -> None:
        """The layer matched ``response`` to our request."""
        if self.state in (ClientState.COMPLETED, ClientState.TERMINATED):
            return  # a retransmitted final response: absorbed
        if response.status < _FINAL:
            if self.state is ClientState.TRYING:
                self.state = ClientState.PROCEEDING
                # §17.1.2.2: once a provisional arrived, retransmit every T2.
                self._interval_s = self._layer.timers.t2_s
                self._start_timer("E", self._interval_s, self._retransmit)
            return
        self.state = ClientState.COMPLETED
        self._final.set_result(response)
        self._linger(None, self.destination, self._layer.timers.t4_s)  # Timer K

    def _retransmit(self) -> None:
        self._layer.send(self._data, self.destination)
        self._layer.stats.requests_retransmitted += 1
        if self.state is ClientState.TRYING:
            self._interval_s = min(2 * self._interval_s, self._layer.timers.t2_s)
        self._start_timer("E", self._interval_s, self._retransmit)

    def _timed_out(self) -> None:
        self._layer.stats.client_timeouts += 1
        self._terminate()

    def _terminate(self) -> None:
        self.state = ClientState.TERMINATED
        if not self._final.done():
            self._final.set_result(None)
        self._forget()

    def abandon(self) -> None:
        super().abandon()
        if not self._final.done():
            self._final.set_result(None)


AnyServerTransaction = InviteServerTransaction | ServerTransaction
