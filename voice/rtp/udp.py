"""What an RTP session's sockets share: the session's counters and the datagram protocol that
hands each datagram to its owner (the RTP port's to the session, the RTCP port's to
``voice.rtp.control``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class RtpStats:
    """Counters of one session, for monitoring and tests; they only grow."""

    received: int = 0  # datagrams, good or bad
    sent: int = 0
    malformed: int = 0
    unexpected_payload_type: int = 0
    foreign_source: int = 0  # valid packets from a source other than the latched one
    audio_dropped: int = 0  # received frames dropped because ``audio`` was full
    dtmf_dropped: int = 0
    skipped_frames: int = 0  # send slots skipped because the event loop stalled
    send_errors: int = 0  # ICMP errors reported for our datagrams (peer port closed, ...)
    held_frames: int = 0  # send slots left empty while the peer held the call
    rtcp_sent: int = 0  # compound packets
    rtcp_received: int = 0  # valid compound packets from the peer
    rtcp_malformed: int = 0
    rtcp_foreign_source: int = 0  # valid RTCP from a source other than the peer's
    rtcp_byes_received: int = 0
    rtcp_on_rtp_port: int = 0  # RTCP multiplexed on the RTP port (not negotiated): dropped


class RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, stats: RtpStats) -> None:
        self._stats = stats
        # Set once the session exists; a datagram in the instant before that is dropped.
        self.on_datagram: Callable[[bytes, tuple[str, int]], None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.on_datagram is not None:
            self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # Linux reports an ICMP port-unreachable for an earlier sendto here; the call goes on.
        self._stats.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def bind_udp(
    stats: RtpStats, host: str, port: int
) -> tuple[asyncio.DatagramTransport, RtpProtocol]:
    return await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: RtpProtocol(stats), local_addr=(host, port)
    )
