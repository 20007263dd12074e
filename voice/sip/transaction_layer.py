"""The transaction layer of the SIP user agent (RFC 3261 §17): every live transaction.

``TransactionLayer`` matches arriving messages to transactions by branch (§17.1.3, §17.2.3;
RFC 2543 peers without the magic cookie by their Call-ID, From tag, CSeq and top Via: see
``voice.sip.transaction_keys``) and owns every timer: they are ``loop.call_later`` handles,
cancelled when a transaction terminates and all at once by ``close``. Nothing here awaits or
creates tasks. The transactions themselves (``voice.sip.transaction``) reach the layer only
through ``TransactionHost``, which it implements.

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
from typing import Final

from voice.sip.message import SipRequest, SipResponse, serialize
from voice.sip.timers import SipTimers
from voice.sip.transaction import (
    Address,
    AnyServerTransaction,
    ClientTransaction,
    InviteServerTransaction,
    ServerTransaction,
    Transaction,
    TransactionStats,
)
from voice.sip.transaction_keys import TransactionKey, client_key, server_key

# Finished transactions kept per table (server, client) to absorb retransmissions: beyond it
# the oldest are forgotten (and counted) so that a flood cannot grow memory without bound.
MAX_LINGERING: Final = 10_000

SendDatagram = Callable[[bytes, Address], None]
# What a finished transaction still does: resend these bytes to a retransmission (None: absorb).
_Linger = tuple[bytes | None, Address]


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
        transaction.receive_retransmission(request)
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
        transaction.start()
        return transaction

    def receive_response(self, response: SipResponse) -> bool:
        """Hand a response to its client transaction; False if none matches (drop it)."""
        key = client_key(response)
        if key is None:
            return False
        transaction = self._clients.get(key)
        if transaction is None:
            return key in self._lingering_clients  # a retransmitted final: absorbed
        transaction.receive_response(response)
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

    def _new_key(self, request: SipRequest) -> TransactionKey:
        key = server_key(request)
        if key is None:
            raise ValueError("the request has no readable Via to key a transaction by")
        if key in self._servers or key in self._lingering_servers:
            raise ValueError("a transaction with this key exists: absorb() the request first")
        return key

    # --- TransactionHost: what the transactions call

    def send_message(self, message: SipRequest | SipResponse, to: Address) -> bytes:
        """Serialise ``message`` once, send it and return the bytes for retransmissions."""
        data = serialize(message)
        self.send(data, to)
        return data

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """A transaction timer, in the layer's one shared context."""
        return self.loop.call_later(delay_s, callback, context=self._context)

    def linger(
        self, transaction: Transaction, repeat: bytes | None, to: Address, duration_s: float
    ) -> None:
        """Keep ``transaction`` as its last bytes for ``duration_s`` (the module docstring)."""
        if self._closed:
            return
        is_client = isinstance(transaction, ClientTransaction)
        table = self._lingering_clients if is_client else self._lingering_servers
        if transaction.key not in table and len(table) >= self._max_lingering:
            del table[next(iter(table))]  # dicts keep insertion order: the oldest goes
            self.stats.lingering_dropped += 1
        table[transaction.key] = (repeat, to)
        expires = self.loop.time() + duration_s
        self._expiries.setdefault(duration_s, deque()).append((expires, is_client, transaction.key))
        if self._sweeper is None or expires < self._sweeper.when():
            self._schedule_sweep(expires)

    def remove(self, transaction: Transaction) -> None:
        """Forget a transaction that terminated or lingers from now on."""
        if isinstance(transaction, ClientTransaction):
            if self._clients.get(transaction.key) is transaction:
                del self._clients[transaction.key]
        elif self._servers.get(transaction.key) is transaction:
            del self._servers[transaction.key]

    # --- Expiry of lingering transactions

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
