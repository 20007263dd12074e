"""SIP over UDP: one socket, datagrams in -> parsed messages, messages out -> datagrams.

Receiving, in this order, every step counted in ``stats``:
- a source outside ``allowed_sources`` (CIDR networks; empty allows any) is dropped unread;
- a CRLF keep-alive (RFC 5626 §4.4.1) is dropped;
- a datagram over ``MAX_MESSAGE_BYTES`` is answered 513 if its header section can be read and
  it is a request, else dropped;
- unparseable input is dropped; a malformed request whose headers could be read
  (``SipBadRequest``) is answered 400 unless it is an ACK (RFC 3261 §17.2.3) or has no Via to
  answer along;
- ``screen`` (the user agent's policy: scanners) may drop a request silently;
- the top Via of a request gets ``received`` and, when asked for, ``rport`` (RFC 3581);
- the message goes to ``on_message``. An exception there is logged and counted, never raised
  into the event loop's datagram machinery.

Responses always go back to the source address and port of the request (as RFC 3581 does for
every request, not only those asking): a peer behind NAT gets them, and a Via host name is
never resolved on the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Self

from voice.errors import SipBadRequest, SipParseError
from voice.sip.message import (
    MAX_MESSAGE_BYTES,
    SipRequest,
    SipResponse,
    new_tag,
    parse_message,
    serialize,
)
from voice.sip.response import make_response

log = logging.getLogger(__name__)

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
OnMessage = Callable[[SipRequest | SipResponse, Address], None]
Screen = Callable[[SipRequest, Address], bool]  # False: drop silently

TOO_LARGE: Final = 513
BAD_REQUEST: Final = 400
_HEAD_END: Final = b"\r\n\r\n"


@dataclass(slots=True)
class TransportStats:
    """Counters of one SIP socket; they only grow."""

    received: int = 0  # datagrams
    sent: int = 0
    filtered: int = 0  # from a source not in allowed_sources
    keepalives: int = 0
    malformed: int = 0  # unparseable, dropped
    bad_requests: int = 0  # malformed but addressable: answered 400
    oversized: int = 0  # over MAX_MESSAGE_BYTES (answered 513 when addressable)
    screened: int = 0  # dropped by the user agent's screen
    handler_errors: int = 0  # exceptions from on_message (a bug: logged with its traceback)
    send_errors: int = 0  # unwritable messages and ICMP errors


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """CIDR strings (``10.0.0.0/8``, ``192.0.2.7``) as networks; ValueError names a bad one."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ValueError(f"allowed source {cidr!r} is not an IP address or CIDR") from None
    return tuple(networks)


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._owner._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier sendto (peer gone); the transaction's timers handle it.
        self._owner.stats.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class SipTransport:
    """A bound UDP socket for SIP; open with ``await SipTransport.open(...)``."""

    def __init__(
        self,
        on_message: OnMessage,
        *,
        allowed_sources: tuple[Network, ...] = (),
        screen: Screen | None = None,
    ) -> None:
        self.stats = TransportStats()
        self._on_message = on_message
        self._allowed = allowed_sources
        self._screen = screen
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _SipProtocol | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        allowed_sources: tuple[Network, ...] = (),
        screen: Screen | None = None,
    ) -> Self:
        """Bind ``host:port`` (port 0 picks a free one) and start receiving."""
        sip = cls(on_message, allowed_sources=allowed_sources, screen=screen)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _SipProtocol(sip), local_addr=(host, port)
        )
        sip._transport, sip._protocol = transport, protocol
        return sip

    @property
    def local_address(self) -> Address:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, message: SipRequest | SipResponse, address: Address) -> None:
        """Serialise and send one message; an unwritable one is logged and counted."""
        if self._transport is None or self._transport.is_closing():
            return
        try:
            data = serialize(message)
        except ValueError:
            self.stats.send_errors += 1
            log.warning("SIP message not sent: it cannot be serialised", exc_info=True)
            return
        self.send_datagram(data, address)

    def send_datagram(self, data: bytes, address: Address) -> None:
        """Send bytes already serialised (by the transaction layer)."""
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.sendto(data, address)
        self.stats.sent += 1

    async def close(self) -> None:
        """Close the socket and wait until it is released."""
        if self._transport is None or self._protocol is None:
            return
        self._transport.close()
        await self._protocol.closed

    # --- Receiving

    def _on_datagram(self, data: bytes, source: Address) -> None:
        self.stats.received += 1
        if self._allowed and not self._is_allowed(source[0]):
            self.stats.filtered += 1
            return
        if not data.strip(b"\r\n"):
            self.stats.keepalives += 1
            return
        if len(data) > MAX_MESSAGE_BYTES:
            self.stats.oversized += 1
            self._answer_oversized(data, source)
            return
        try:
            message = parse_message(data)
        except SipBadRequest as exc:
            self._answer_bad_request(exc, source)
            return
        except SipParseError as exc:
            self.stats.malformed += 1
            log.debug("SIP datagram dropped: %s", exc)
            return
        if isinstance(message, SipRequest):
            if self._screen is not None and not self._screen(message, source):
                self.stats.screened += 1
                return
            _stamp_via(message, source)
        try:
            self._on_message(message, source)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("SIP message handler failed; the message is dropped")

    def _is_allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self._allowed)

    def _answer_bad_request(self, exc: SipBadRequest, source: Address) -> None:
        request = exc.request
        if self._screen is not None and not self._screen(request, source):
            self.stats.screened += 1
            return
        if request.method == "ACK" or "Via" not in request.headers:
            self.stats.malformed += 1
            return
        self.stats.bad_requests += 1
        self._answer(request, BAD_REQUEST, _reason(exc), source)

    def _answer_oversized(self, data: bytes, source: Address) -> None:
        head_end = data.find(_HEAD_END, 0, MAX_MESSAGE_BYTES)
        if head_end < 0:
            return
        try:
            # The header section alone: its Content-Length now exceeds the (empty) body, which
            # makes a readable request a SipBadRequest carrying its headers.
            message = parse_message(data[: head_end + len(_HEAD_END)])
        except SipBadRequest as exc:
            message = exc.request
        except SipParseError:
            return
        if not isinstance(message, SipRequest) or message.method == "ACK":
            return
        if "Via" not in message.headers:
            return
        if self._screen is not None and not self._screen(message, source):
            self.stats.screened += 1
            return
        self._answer(message, TOO_LARGE, None, source)

    def _answer(self, request: SipRequest, status: int, reason: str | None, to: Address) -> None:
        try:
            response = make_response(request, status, reason, to_tag=new_tag())
        except ValueError:
            self.stats.send_errors += 1
            return
        self.send(response, to)


def _reason(exc: SipParseError) -> str:
    # Parse errors name the problem, never a header's value, so they may go on the wire.
    text = str(exc)
    return text[:1].upper() + text[1:] if text else "Bad Request"


def _stamp_via(request: SipRequest, source: Address) -> None:
    try:
        via = request.top_via
    except SipParseError:
        return  # the user agent answers 400 Malformed Via Header
    stamped = via
    if via.host.strip("[]") != source[0]:
        stamped = stamped.with_param("received", source[0])
    if via.has_param("rport"):
        stamped = stamped.with_param("rport", str(source[1]))
    if stamped is not via:
        request.headers.replace_first("Via", str(stamped))
