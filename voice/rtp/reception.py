"""Reception quality both ways, as RTCP reports carry it (RFC 3550 §6.4): ours of the peer's
stream, and the peer's of ours.

``ReceptionStats`` follows one RTP source as RFC 3550 Appendix A.1, A.3 and A.8 do: the
extended highest sequence number across the 16-bit wrap, the packets expected and received
(duplicates count as received, so cumulative loss can go negative, as the RFC has it), the
fraction lost between two reports, and the interarrival jitter in timestamp units from the
arrival time and the RTP timestamp. ``RemoteReport`` is what the peer's last report block says
about our stream. ``ReportExchange`` is one session's side of the exchange, without sockets:
it feeds the statistics, reads the peer's compounds and writes ours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from voice.audio import TELEPHONE_RATE_HZ
from voice.rtp.jitter import MAX_DROPOUT_PACKETS, MAX_MISORDER_PACKETS
from voice.rtp.packet import SEQUENCE_MODULUS, TIMESTAMP_MODULUS, RtpPacket
from voice.rtp.rtcp import (
    MAX_CUMULATIVE_LOST,
    MIN_CUMULATIVE_LOST,
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    ntp_short,
    ntp_timestamp,
    round_trip_s,
    serialize_rtcp,
    short_units,
)

JITTER_GAIN: Final = 1 / 16  # RFC 3550 §6.4.1: the estimator's smoothing
FRACTION_UNITS: Final = 256  # a report's fraction lost is in 1/256

_HALF_TIMESTAMP_SPACE: Final = TIMESTAMP_MODULUS // 2
_UINT32_LIMIT: Final = 1 << 32


def _signed_timestamp_delta(timestamp: int, reference: int) -> int:
    delta = (timestamp - reference) % TIMESTAMP_MODULUS
    return delta - TIMESTAMP_MODULUS if delta >= _HALF_TIMESTAMP_SPACE else delta


@dataclass(frozen=True, slots=True)
class ReceptionSnapshot:
    """Our reception of the peer's stream at one moment (``RtpSession.reception``)."""

    ssrc: int
    received: int  # packets, duplicates included
    expected: int
    cumulative_lost: int  # expected - received: negative after duplicates
    highest_sequence: int  # extended
    jitter: float  # timestamp units (1/8000 s for G.711)


@dataclass(frozen=True, slots=True)
class RemoteReport:
    """The peer's last report block about our stream (``RtpSession.remote_report``)."""

    fraction_lost: float  # 0..1, since its previous report
    cumulative_lost: int
    highest_sequence: int  # extended
    jitter_ms: float
    round_trip_s: float | None  # None until the peer echoes one of our sender reports
    received_at: float  # event loop time

    @classmethod
    def from_block(
        cls,
        block: ReportBlock,
        *,
        round_trip_s: float | None,
        received_at: float,
        clock_rate_hz: int = TELEPHONE_RATE_HZ,
    ) -> RemoteReport:
        return cls(
            fraction_lost=block.fraction_lost / FRACTION_UNITS,
            cumulative_lost=block.cumulative_lost,
            highest_sequence=block.highest_sequence,
            jitter_ms=block.jitter * 1000 / clock_rate_hz,
            round_trip_s=round_trip_s,
            received_at=received_at,
        )


class ReceptionStats:
    """One source's receive statistics; ``update`` with every packet accepted from it.

    A new SSRC is a new source: make a new ``ReceptionStats``. A sequence number that jumps
    further than ``MAX_DROPOUT_PACKETS`` ahead (or ``MAX_MISORDER_PACKETS`` behind) is ignored
    unless the next packet follows it, which means the sender restarted its numbering: the
    counts start over (A.1).
    """

    def __init__(
        self, ssrc: int, first_sequence: int, clock_rate_hz: int = TELEPHONE_RATE_HZ
    ) -> None:
        self.ssrc = ssrc
        self._clock_rate_hz = clock_rate_hz
        self._jitter = 0.0
        self._restart(first_sequence)

    def _restart(self, sequence: int) -> None:
        self._base_sequence = sequence
        self._max_sequence = sequence
        self._bad_sequence: int | None = None
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._last_timing: tuple[float, int] | None = None  # (arrival in units, timestamp)

    def update(self, sequence: int, timestamp: int, arrival_s: float, *, timed: bool) -> bool:
        """Count one packet; False if it was set aside as a possible stray (see the class).

        ``timed`` packets feed the jitter estimate; RFC 4733 events are not timed (every packet
        of a key press carries the timestamp of its start).
        """
        delta = (sequence - self._max_sequence) % SEQUENCE_MODULUS
        if delta < MAX_DROPOUT_PACKETS:
            if sequence < self._max_sequence:
                self._cycles += SEQUENCE_MODULUS
            self._max_sequence = sequence
        elif delta <= SEQUENCE_MODULUS - MAX_MISORDER_PACKETS:
            if sequence != self._bad_sequence:
                self._bad_sequence = (sequence + 1) % SEQUENCE_MODULUS
                return False
            self._restart(sequence)
        # else: a duplicate or a reordered packet, counted as received
        self._received += 1
        if timed:
            self._update_jitter(timestamp, arrival_s * self._clock_rate_hz)
        return True

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        if self._last_timing is not None:
            last_arrival, last_timestamp = self._last_timing
            # D(i-1, i) = (R_i - R_i-1) - (S_i - S_i-1), the difference of the two transit times
            difference = (arrival - last_arrival) - _signed_timestamp_delta(
                timestamp, last_timestamp
            )
            self._jitter += JITTER_GAIN * (abs(difference) - self._jitter)
        self._last_timing = (arrival, timestamp)

    @property
    def _extended_max(self) -> int:
        return self._cycles + self._max_sequence

    @property
    def _expected(self) -> int:
        return self._extended_max - self._base_sequence + 1

    def snapshot(self) -> ReceptionSnapshot:
        return ReceptionSnapshot(
            ssrc=self.ssrc,
            received=self._received,
            expected=self._expected,
            cumulative_lost=self._expected - self._received,
            highest_sequence=self._extended_max,
            jitter=self._jitter,
        )

    def report_block(self, *, lsr: int = 0, dlsr: int = 0) -> ReportBlock:
        """The block for our next report (A.3); the next one's fraction lost counts from here."""
        expected = self._expected
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior, self._received_prior = expected, self._received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(FRACTION_UNITS - 1, lost_interval * FRACTION_UNITS // expected_interval)
        lost = min(max(expected - self._received, MIN_CUMULATIVE_LOST), MAX_CUMULATIVE_LOST)
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_sequence=self._extended_max % _UINT32_LIMIT,
            jitter=min(int(self._jitter), _UINT32_LIMIT - 1),
            lsr=lsr,
            dlsr=dlsr,
        )


class ReportExchange:
    """One session's side of the RTCP report exchange (RFC 3550 §6.4).

    ``now`` is the event loop's time throughout; ``wall_offset_s`` (wall clock minus loop
    clock, taken once) turns it into the time of our NTP timestamps, so that they advance with
    the loop's monotonic clock and the peer's LSR/DLSR echo measures a true round trip.
    """

    def __init__(self, ssrc: int, cname: str, *, wall_offset_s: float) -> None:
        self.ssrc = ssrc
        self._own_description = SourceDescription((SdesChunk.with_cname(ssrc, cname),))
        self._wall_offset_s = wall_offset_s
        self._reception: ReceptionStats | None = None
        self._remote_sender: tuple[SenderReport, float] | None = None  # and its arrival
        self._remote_report: RemoteReport | None = None
        self._packets_at_last_report = 0

    @property
    def reception(self) -> ReceptionSnapshot | None:
        return None if self._reception is None else self._reception.snapshot()

    @property
    def remote_report(self) -> RemoteReport | None:
        return self._remote_report

    @property
    def remote_sender_report(self) -> SenderReport | None:
        return None if self._remote_sender is None else self._remote_sender[0]

    def received_rtp(self, packet: RtpPacket, now: float, *, timed: bool) -> None:
        """Count a packet the session accepted; a new SSRC starts the statistics over."""
        if self._reception is None or self._reception.ssrc != packet.ssrc:
            self._reception = ReceptionStats(packet.ssrc, packet.sequence)
        self._reception.update(packet.sequence, packet.timestamp, now, timed=timed)

    def received_rtcp(self, packets: Iterable[RtcpPacket], now: float) -> int:
        """Take in the peer's compound; returns the number of BYE packets in it."""
        goodbyes = 0
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._remote_sender = (packet, now)
            if isinstance(packet, SenderReport | ReceiverReport):
                self._note_blocks(packet.reports, now)
            elif isinstance(packet, Goodbye):
                goodbyes += 1
        return goodbyes

    def _note_blocks(self, blocks: tuple[ReportBlock, ...], now: float) -> None:
        for block in blocks:
            if block.ssrc == self.ssrc:
                rtt = round_trip_s(block, self._ntp_at(now))
                self._remote_report = RemoteReport.from_block(
                    block, round_trip_s=rtt, received_at=now
                )

    def compound(
        self,
        now: float,
        *,
        packet_count: int,
        octet_count: int,
        rtp_timestamp: int,
        goodbye: bool = False,
    ) -> bytes:
        """Our next compound: an SR if ``packet_count`` grew since the last one, else an RR;
        the SDES CNAME; and a BYE if ``goodbye``. ``rtp_timestamp`` is our RTP clock at
        ``now``. Each call starts a new interval for the fraction lost of the next."""
        blocks = () if self._reception is None else (self._report_block(now, self._reception),)
        report: SenderReport | ReceiverReport
        if packet_count == self._packets_at_last_report:
            report = ReceiverReport(self.ssrc, blocks)
        else:
            self._packets_at_last_report = packet_count
            report = SenderReport(
                self.ssrc,
                ntp_timestamp=self._ntp_at(now),
                rtp_timestamp=rtp_timestamp % TIMESTAMP_MODULUS,
                packet_count=packet_count % _UINT32_LIMIT,
                octet_count=octet_count % _UINT32_LIMIT,
                reports=blocks,
            )
        packets: list[RtcpPacket] = [report, self._own_description]
        if goodbye:
            packets.append(Goodbye((self.ssrc,)))
        return serialize_rtcp(packets)

    def _report_block(self, now: float, reception: ReceptionStats) -> ReportBlock:
        if self._remote_sender is None or self._remote_sender[0].ssrc != reception.ssrc:
            return reception.report_block()
        sender, arrived = self._remote_sender
        return reception.report_block(
            lsr=ntp_short(sender.ntp_timestamp), dlsr=short_units(now - arrived)
        )

    def _ntp_at(self, now: float) -> int:
        return ntp_timestamp(now + self._wall_offset_s)
