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

``TransactionLayer`` matches arriving messages to transactions by branch (§17.1.3, §17.2.3;
RFC 2543 peers without the magic cookie by their Call-ID, From tag, CSeq and top Via) and owns
every timer: they are ``loop.call_later`` handles, cancelled when a transaction terminates and
all at once by ``close``. Nothing here awaits or creates tasks. Messages are serialised once,
here; retransmissions resend the same bytes.

A transaction whose work is done but which must still absorb retransmissions (Timers J, L, I,
K: up to 64*T1, 32 s) is kept only as the bytes of its last response, in a table swept by one
timer and bounded by ``MAX_LINGERING`` (the oldest go first). At 100 calls a second that is
thousands of transactions, and keeping each as live objects with a timer of its own made every
full garbage collection walk them (pauses of 100-200 ms, long enough to make the RTP clocks
skip frames).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from voice.errors import SipParseError
from voice.sip.message import BRANCH_MAGIC_COOKIE, SipRequest, SipResponse, serialize

T1_S: Final = 0.5  # RTT estimate (RFC 3261 §17.1.1.1)
T2_S: Final = 4.0  # the longest retransmit interval of non-INVITE requests and INVITE responses
T4_S: Final = 5.0  # the longest a message stays in the network
TIMEOUT_T1_MULTIPLE: Final = 64  # Timers B, F, H, J and L are 64*T1
DEFAULT_SIP_PORT: Final = 5060
# Finished transactions kept per table (server, client) to absorb retransmissions: beyond it
# the oldest are forgotten (and counted) so that a flood cannot grow memory without bound.
MAX_LINGERING: Final = 10_000
_FINAL: Final = 200
_SUCCESS_END: Final = 300

Address = tuple[str, int]
SendDatagram = Callable[[bytes, Address], None]
TransactionKey = tuple[str, ...]
# What a finished transaction still does: resend these bytes to a retransmission (None: absorb).
_Linger = tuple[bytes | None, Address]


@dataclass(frozen=True, slots=True)
class SipTimers:
    """The base timers; tests scale them down (``SipTimers().scaled(0.02)``)."""

    t1_s: float = T1_S
    t2_s: float = T2_S
    t4_s: float = T4_S

    def __post_init__(self) -> None:
        if not 0 < self.t1_s <= self.t2_s or self.t4_s <= 0:
            raise ValueError("SIP timers need 0 < t1_s <= t2_s and t4_s > 0")

    @property
    def timeout_s(self) -> float:
        """Timers B, F, H, J and L: how long a transaction waits before giving up."""
        return TIMEOUT_T1_MULTIPLE * self.t1_s

    def scaled(self, factor: float) -> SipTimers:
        """Every timer multiplied by ``factor``."""
        return replace(
            self, t1_s=self.t1_s * factor, t2_s=self.t2_s * factor, t4_s=self.t4_s * factor
        )


@dataclass(slots=True)
class TransactionStats:
    """Counters of the transaction layer; they only grow."""

    retransmissions_absorbed: int = 0  # requests answered again from a transaction
    responses_retransmitted: int = 0  # on our timers (2xx, Timer G)
    requests_retransmitted: int = 0  # Timer E
    ack_timeouts: int = 0  # Timer H
    client_timeouts: int = 0  # Timer F
    lingering_dropped: int = 0  # finished transactions forgotten early (MAX_LINGERING)


def server_key(request: SipRequest, method: str | None = None) -> TransactionKey | None:
    """The key a server transaction is found by (§17.2.3), or None if the Via is unreadable.

    An ACK matches its INVITE; pass ``method="INVITE"`` to find the INVITE a CANCEL names.
    """
    try:
        via = request.top_via
    except SipParseError:
        return None
    wanted = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch
    sent_by = f"{via.host.lower()}:{via.port or DEFAULT_SIP_PORT}"
    if branch is not None and branch.startswith(BRANCH_MAGIC_COOKIE):
        return ("3261", branch, sent_by, wanted)
    try:
        # RFC 2543 peers: the To tag is left out, so the ACK of a non-2xx (which carries our
        # tag) still finds its INVITE.
        return (
            "2543",
            request.uri,
            request.from_addr.tag or "",
            request.call_id,
            str(request.cseq.number),
            str(via),
            wanted,
        )
    except SipParseError:
        return None


def client_key(message: SipRequest | SipResponse) -> TransactionKey | None:
    """The key a client transaction is found by (§17.1.3): top Via branch and CSeq method."""
    try:
        branch = message.top_via.branch
        method = message.cseq.method
    except SipParseError:
        return None
    return None if branch is None else (branch, method)


class _Transaction:
    """Timers shared by every transaction kind."""

    def __init__(self, layer: TransactionLayer, key: TransactionKey) -> None:
        self._layer = layer
        self.key = key
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def _start_timer(self, name: str, delay_s: float, callback: Callable[[], None]) -> None:
        self._stop_timer(name)
        self._handles[name] = self._layer._call_later(delay_s, callback)

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
        self._layer._remove(self)

    def _linger(self, repeat: bytes | None, to: Address, duration_s: float) -> None:
        """Done: from now on only ``repeat`` (or silence) answers a retransmission."""
        self._forget()
        self._layer._linger(self, (repeat, to), duration_s)

    def abandon(self) -> None:
        """Stop every timer now (the layer is closing)."""
        self._stop_timers()


class InviteServerState(StrEnum):
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # 2xx sent (RFC 6026)
    COMPLETED = "completed"  # 3xx-6xx sent, waiting for the ACK
    CONFIRMED = "confirmed"  # ACK of a non-2xx received
    TERMINATED = "terminated"


class InviteServerTransaction(_Transaction):
    """One received INVITE and every response to it; see the module docstring."""

    def __init__(
        self, layer: TransactionLayer, key: TransactionKey, request: SipRequest, source: Address
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
        self._last = self._layer._send(response, self.source)
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

    def _receive_retransmission(self, request: SipRequest) -> None:
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


class ServerTransaction(_Transaction):
    """One received non-INVITE request (§17.2.2)."""

    def __init__(
        self, layer: TransactionLayer, key: TransactionKey, request: SipRequest, source: Address
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
        self._last = self._layer._send(response, self.source)
        if response.status < _FINAL:
            self.state = ServerState.PROCEEDING
            return
        self.state = ServerState.COMPLETED
        self._linger(self._last, self.source, self._layer.timers.timeout_s)  # Timer J

    def _receive_retransmission(self, request: SipRequest) -> None:
        self._layer.stats.retransmissions_absorbed += 1
        if self._last is not None:
            self._layer.send(self._last, self.source)


class ClientState(StrEnum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class ClientTransaction(_Transaction):
    """One non-INVITE request we send (§17.1.2): BYE, REFER."""

    def __init__(
        self,
        layer: TransactionLayer,
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

    def _start(self) -> None:
        self._data = self._layer._send(self.request, self.destination)
        self._start_timer("E", self._interval_s, self._retransmit)
        self._start_timer("F", self._layer.timers.timeout_s, self._timed_out)

    async def final_response(self) -> SipResponse | None:
        """The final response, or None if none came within Timer F (or the layer closed)."""
        return await asyncio.shield(self._final)

    def _receive_response(self, response: SipResponse) -> None:
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


class TransactionLayer:
    """Every live transaction of one user agent, and the matching of messages to them."""

    def __init__(
        self, send: SendDatagram, timers: SipTimers, *, max_lingering: int = MAX_LINGERING
    ) -> None:
        if max_lingering < 1:
            raise ValueError("max_lingering must be at least 1")
        self.loop = asyncio.get_running_loop()
        self._max_lingering = max_lingering
        self.send = send
        self.timers = timers
        self.stats = TransactionStats()
        self._servers: dict[TransactionKey, AnyServerTransaction] = {}
        self._clients: dict[TransactionKey, ClientTransaction] = {}
        # Finished transactions (see the module docstring), each table with its expiry queue
        # in time order: every entry of a queue lives as long.
        self._lingering_servers: dict[TransactionKey, _Linger] = {}
        self._lingering_clients: dict[TransactionKey, _Linger] = {}
        self._expiries: dict[float, deque[tuple[float, bool, TransactionKey]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        # Timers need no context variables; one shared context spares a copy per timer.
        self._context = contextvars.Context()
        self._closed = False

    def __len__(self) -> int:
        """Transactions alive, finished ones absorbing retransmissions included."""
        return (
            len(self._servers)
            + len(self._clients)
            + len(self._lingering_servers)
            + len(self._lingering_clients)
        )

    def absorb(self, request: SipRequest) -> bool:
        """Hand a request to the server transaction it belongs to, if any.

        True means it was a retransmission (answered again) or the ACK of a non-2xx: the TU
        must not see it. An ACK of a 2xx has its own branch and so returns False.
        """
        key = server_key(request)
        if key is None:
            return False
        transaction = self._servers.get(key)
        if transaction is None:
            lingering = self._lingering_servers.get(key)
            if lingering is None:
                return False
            repeat, to = lingering
            if request.method != "ACK":
                self.stats.retransmissions_absorbed += 1
                if repeat is not None:
                    self.send(repeat, to)
            return True
        if request.method == "ACK" and not isinstance(transaction, InviteServerTransaction):
            return False
        transaction._receive_retransmission(request)
        return True

    def invite_server(self, request: SipRequest, source: Address) -> InviteServerTransaction:
        """A new INVITE server transaction; ValueError if the request has no usable Via."""
        key = self._new_key(request)
        transaction = InviteServerTransaction(self, key, request, source)
        self._servers[key] = transaction
        return transaction

    def server(self, request: SipRequest, source: Address) -> ServerTransaction:
        """A new non-INVITE server transaction; ValueError if the request has no usable Via."""
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} has no non-INVITE server transaction")
        key = self._new_key(request)
        transaction = ServerTransaction(self, key, request, source)
        self._servers[key] = transaction
        return transaction

    def invite_cancelled_by(self, cancel: SipRequest) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL names (same branch, §9.2), or None."""
        key = server_key(cancel, method="INVITE")
        transaction = None if key is None else self._servers.get(key)
        return transaction if isinstance(transaction, InviteServerTransaction) else None

    def invite_finished(self, cancel: SipRequest) -> bool:
        """Whether the INVITE a CANCEL names is answered and done (the CANCEL gets 200)."""
        key = server_key(cancel, method="INVITE")
        return key is not None and key in self._lingering_servers

    def request(self, request: SipRequest, destination: Address) -> ClientTransaction:
        """Send a non-INVITE request in a new client transaction (its Via holds the branch)."""
        if self._closed:
            raise RuntimeError("the transaction layer is closed")
        if request.method in ("INVITE", "ACK"):
            raise ValueError("only non-INVITE client transactions are implemented")
        key = client_key(request)
        if key is None or key in self._clients:
            raise ValueError("a client request needs a Via with a fresh branch")
        transaction = ClientTransaction(self, key, request, destination)
        self._clients[key] = transaction
        transaction._start()
        return transaction

    def receive_response(self, response: SipResponse) -> bool:
        """Hand a response to its client transaction; False if none matches (drop it)."""
        key = client_key(response)
        if key is None:
            return False
        transaction = self._clients.get(key)
        if transaction is None:
            return key in self._lingering_clients  # a retransmitted final: absorbed
        transaction._receive_response(response)
        return True

    def close(self) -> None:
        """Stop every timer; pending waits return None/False."""
        self._closed = True
        for transaction in [*self._servers.values(), *self._clients.values()]:
            transaction.abandon()
        self._servers.clear()
        self._clients.clear()
        self._lingering_servers.clear()
        self._lingering_clients.clear()
        self._expiries.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _send(self, message: SipRequest | SipResponse, to: Address) -> bytes:
        data = serialize(message)
        self.send(data, to)
        return data

    def _call_later(self, delay_s: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay_s, callback, context=self._context)

    def _new_key(self, request: SipRequest) -> TransactionKey:
        key = server_key(request)
        if key is None:
            raise ValueError("the request has no readable Via to key a transaction by")
        if key in self._servers or key in self._lingering_servers:
            raise ValueError("a transaction with this key exists: absorb() the request first")
        return key

    def _linger(self, transaction: _Transaction, entry: _Linger, duration_s: float) -> None:
        if self._closed:
            return
        is_client = isinstance(transaction, ClientTransaction)
        table = self._lingering_clients if is_client else self._lingering_servers
        if transaction.key not in table and len(table) >= self._max_lingering:
            del table[next(iter(table))]  # dicts keep insertion order: the oldest goes
            self.stats.lingering_dropped += 1
        table[transaction.key] = entry
        expires = self.loop.time() + duration_s
        self._expiries.setdefault(duration_s, deque()).append((expires, is_client, transaction.key))
        if self._sweeper is None or expires < self._sweeper.when():
            self._schedule_sweep(expires)

    def _schedule_sweep(self, when: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper = self.loop.call_at(when, self._sweep, context=self._context)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for queue in self._expiries.values():
            while queue and queue[0][0] <= now:
                _, is_client, key = queue.popleft()
                table = self._lingering_clients if is_client else self._lingering_servers
                table.pop(key, None)
        heads = [queue[0][0] for queue in self._expiries.values() if queue]
        if heads:
            self._schedule_sweep(min(heads))

    def _remove(self, transaction: _Transaction) -> None:
        if isinstance(transaction, ClientTransaction):
            if self._clients.get(transaction.key) is transaction:
                del self._clients[transaction.key]
        elif self._servers.get(transaction.key) is transaction:
            del self._servers[transaction.key]
