"""The RTCP side of one RTP session (RFC 3550 §6): its socket, where reports go, when, and what
the peer's reports said.

``RtcpChannel`` owns the socket on the port above the RTP port and a ``ReportExchange`` (the
statistics and the compounds, ``voice.rtp.reception``); the session feeds it its RTP and its
send counts and asks it, on each tick of its clock, whether a report is due. Reports go to the
media peer's port + 1 until the peer's own RTCP arrives, then to where that came from
(symmetric RTCP). Like RTP, only the latched source is listened to once there is one; before
that, the media's host, or else any of the session's ``latch_hosts``. The port is free: a NAT
may map RTCP anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Final

from voice.rtp.reception import ReportExchange
from voice.rtp.rtcp import RtcpParseError, parse_rtcp, report_delay_s
from voice.rtp.udp import RtpProtocol, RtpStats

logger = logging.getLogger(__name__)

CNAME_BYTES: Final = 12  # RFC 7022: a random CNAME of 96 bits, here 16 characters of base64
_MAX_PORT: Final = 65535

Address = tuple[str, int]


class RtcpChannel:
    """The RTCP socket of one session and the report schedule; counts go into ``stats``."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: RtpProtocol,
        stats: RtpStats,
        ssrc: int,
        *,
        interval_s: float,
        now: float,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._stats = stats
        self._interval_s = interval_s
        self.reports = ReportExchange(
            ssrc, secrets.token_urlsafe(CNAME_BYTES), wall_offset_s=time.time() - now
        )
        self._next_report_at = now + self._delay(initial=True)
        self._latched_to: Address | None = None

    def on_datagram(self, handler: Callable[[bytes, Address], None]) -> None:
        """Where the socket's datagrams go (the session, which adds what it knows)."""
        self._protocol.on_datagram = handler

    def receive(
        self,
        data: bytes,
        addr: Address,
        now: float,
        *,
        media_peer: Address | None,
        latch_hosts: frozenset[str] | None,
    ) -> None:
        """A datagram on the RTCP port; ``media_peer`` is the latched RTP source, if any."""
        try:
            packets = parse_rtcp(data)
        except RtcpParseError:
            self._stats.rtcp_malformed += 1
            return
        source = (addr[0], addr[1])
        if not self._accepts(source, media_peer, latch_hosts):
            self._stats.rtcp_foreign_source += 1
            return
        if self._latched_to is None:
            self._latched_to = source
            logger.info("RTCP peer latched", extra={"rtcp_peer": f"{source[0]}:{source[1]}"})
        self._stats.rtcp_received += 1
        self._stats.rtcp_byes_received += self.reports.received_rtcp(packets, now)

    def media_latched(self, source: Address) -> None:
        """The RTP side latched on ``source``: RTCP latched on another host starts over."""
        if self._latched_to is not None and self._latched_to[0] != source[0]:
            self._latched_to = None

    def unlatch(self) -> None:
        """A new SDP address (re-INVITE): latch again on the peer's next RTCP."""
        self._latched_to = None

    def report_due(self, now: float) -> bool:
        """Whether it is time for the next report (and, if so, schedule the one after)."""
        if now < self._next_report_at:
            return False
        self._next_report_at = now + self._delay(initial=False)
        return True

    def send_report(
        self,
        now: float,
        *,
        media_peer: Address | None,
        packet_count: int,
        octet_count: int,
        rtp_timestamp: int,
        goodbye: bool = False,
    ) -> None:
        """Send our compound (with a BYE if ``goodbye``), if we know where to."""
        destination = self._destination(media_peer)
        if destination is None:
            return
        compound = self.reports.compound(
            now,
            packet_count=packet_count,
            octet_count=octet_count,
            rtp_timestamp=rtp_timestamp,
            goodbye=goodbye,
        )
        self._transport.sendto(compound, destination)
        self._stats.rtcp_sent += 1

    async def close(self) -> None:
        self._transport.close()
        self._protocol.on_datagram = None  # it calls back into the session: no cycle left
        await self._protocol.closed

    def _accepts(
        self, source: Address, media_peer: Address | None, latch_hosts: frozenset[str] | None
    ) -> bool:
        if self._latched_to is not None:
            return source == self._latched_to
        if media_peer is not None:
            return source[0] == media_peer[0]
        return latch_hosts is None or source[0] in latch_hosts

    def _destination(self, media_peer: Address | None) -> Address | None:
        if self._latched_to is not None:
            return self._latched_to
        if media_peer is None or media_peer[1] >= _MAX_PORT:
            return None
        return media_peer[0], media_peer[1] + 1

    def _delay(self, *, initial: bool) -> float:
        return report_delay_s(self._interval_s, initial=initial, uniform=random.uniform)
