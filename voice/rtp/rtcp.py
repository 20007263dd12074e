"""RTCP (RFC 3550 §6): compound packets as frozen dataclasses and pure parse/serialise functions.

Four packet types are understood: sender reports (SR), receiver reports (RR), source
descriptions (SDES) and BYE. ``parse_rtcp`` applies the structural checks of RFC 3550 §6.1
and Appendix A.2 to a whole compound (version 2 throughout, padding only on the last packet,
lengths that add up to the datagram) and raises ``RtcpParseError`` saying what is wrong;
packets of other types (APP, RFC 4585 feedback, RFC 3611 XR) are skipped. It does not insist
that a compound begins with a report, which A.2 also suggests: real phones send other
compounds (baresip 1.0: a lone APP "PING" to open a NAT pinhole, and its BYE first, before the
SDES, at hang-up), and a well-formed packet is read whatever comes first. What we send always
begins with a report (``serialize_rtcp`` refuses anything else). The timing rules the session
follows, and that a report block needs, are here too: NTP timestamps, the report interval,
round-trip time.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from voice.errors import RtpParseError
from voice.rtp.packet import RTP_VERSION

PT_SR: Final = 200
PT_RR: Final = 201
PT_SDES: Final = 202
PT_BYE: Final = 203
PT_APP: Final = 204
SDES_END: Final = 0
SDES_CNAME: Final = 1
HEADER_BYTES: Final = 4
WORD_BYTES: Final = 4
REPORT_BLOCK_BYTES: Final = 24
MAX_COUNT: Final = 31  # the 5-bit count field: report blocks, SDES chunks, BYE sources
MAX_ITEM_BYTES: Final = 255
RTCP_MIN_INTERVAL_S: Final = 5.0  # RFC 3550 §6.2
NTP_UNIX_EPOCH_OFFSET_S: Final = 2_208_988_800  # 1900-01-01 to 1970-01-01
NTP_SHORT_UNITS_PER_S: Final = 1 << 16  # LSR, DLSR: the middle 32 bits of an NTP timestamp
MIN_CUMULATIVE_LOST: Final = -(1 << 23)
MAX_CUMULATIVE_LOST: Final = (1 << 23) - 1

_HEADER: Final = struct.Struct("!BBH")
_SSRC: Final = struct.Struct("!I")
_SENDER_INFO: Final = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packets, octets
_REPORT_BLOCK: Final = struct.Struct("!IIIIII")
_UINT8_LIMIT: Final = 1 << 8
_UINT32_LIMIT: Final = 1 << 32
_UINT64_LIMIT: Final = 1 << 64
_LOST_MASK: Final = (1 << 24) - 1


class RtcpParseError(RtpParseError):
    """An RTCP compound packet is malformed (RFC 3550 §6.1, Appendix A.2)."""


def _check_uint(name: str, value: int, limit: int) -> None:
    if not 0 <= value < limit:
        raise ValueError(f"RTCP {name} {value} is outside 0..{limit - 1}")


def _check_count(name: str, items: tuple[object, ...]) -> None:
    if len(items) > MAX_COUNT:
        raise ValueError(f"an RTCP packet holds at most {MAX_COUNT} {name}, got {len(items)}")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """What a receiver reports about one source (RFC 3550 §6.4.1).

    ``fraction_lost`` is in 1/256 since the previous report; ``highest_sequence`` is extended
    (cycles in the upper 16 bits); ``jitter`` is in RTP timestamp units; ``lsr`` is the middle
    32 bits of the NTP timestamp of the source's last SR and ``dlsr`` the delay since it, in
    1/65536 s (both 0 before any SR).
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        _check_uint("fraction lost", self.fraction_lost, _UINT8_LIMIT)
        if not MIN_CUMULATIVE_LOST <= self.cumulative_lost <= MAX_CUMULATIVE_LOST:
            raise ValueError(f"RTCP cumulative lost {self.cumulative_lost} is not 24-bit signed")
        for name in ("ssrc", "highest_sequence", "jitter", "lsr", "dlsr"):
            _check_uint(name, getattr(self, name), _UINT32_LIMIT)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR: a sender's NTP and RTP timestamps of one instant, its counts, and report blocks."""

    ssrc: int
    ntp_timestamp: int  # 64-bit, 32.32 fixed point seconds since 1900
    rtp_timestamp: int
    packet_count: int
    octet_count: int  # payload octets only
    reports: tuple[ReportBlock, ...] = ()

    def __post_init__(self) -> None:
        _check_uint("ntp_timestamp", self.ntp_timestamp, _UINT64_LIMIT)
        for name in ("ssrc", "rtp_timestamp", "packet_count", "octet_count"):
            _check_uint(name, getattr(self, name), _UINT32_LIMIT)
        _check_count("report blocks", self.reports)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR: the report blocks of a participant that sent no RTP since its last report."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __post_init__(self) -> None:
        _check_uint("ssrc", self.ssrc, _UINT32_LIMIT)
        _check_count("report blocks", self.reports)


@dataclass(frozen=True, slots=True)
class SdesItem:
    kind: int  # SDES_CNAME, ... (1..255; 0 ends a chunk on the wire)
    value: bytes

    def __post_init__(self) -> None:
        if not SDES_END < self.kind < _UINT8_LIMIT:
            raise ValueError(f"SDES item type {self.kind} is outside 1..255")
        if len(self.value) > MAX_ITEM_BYTES:
            raise ValueError(f"SDES item of {len(self.value)} bytes is longer than 255")


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[SdesItem, ...] = ()

    def __post_init__(self) -> None:
        _check_uint("ssrc", self.ssrc, _UINT32_LIMIT)

    @classmethod
    def with_cname(cls, ssrc: int, cname: str) -> SdesChunk:
        return cls(ssrc, (SdesItem(SDES_CNAME, cname.encode()),))

    @property
    def cname(self) -> str | None:
        value = next((i.value for i in self.items if i.kind == SDES_CNAME), None)
        return None if value is None else value.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...]

    def __post_init__(self) -> None:
        _check_count("SDES chunks", self.chunks)


@dataclass(frozen=True, slots=True)
class Goodbye:
    """BYE: these sources leave, with an optional reason (UTF-8, at most 255 bytes)."""

    ssrcs: tuple[int, ...]
    reason: str = ""

    def __post_init__(self) -> None:
        _check_count("BYE sources", self.ssrcs)
        for ssrc in self.ssrcs:
            _check_uint("ssrc", ssrc, _UINT32_LIMIT)
        if len(self.reason.encode()) > MAX_ITEM_BYTES:
            raise ValueError("an RTCP BYE reason is at most 255 bytes of UTF-8")


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye


# --- Parsing


def parse_rtcp(data: bytes) -> tuple[RtcpPacket, ...]:
    """Parse one compound RTCP datagram into its known packets, in order."""
    if len(data) < HEADER_BYTES or len(data) % WORD_BYTES:
        raise RtcpParseError(f"RTCP datagram of {len(data)} bytes is not whole 32-bit words")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        end = offset + HEADER_BYTES + words * WORD_BYTES
        _check_header(first, packet_type, offset, end, len(data))
        body = bytes(data[offset + HEADER_BYTES : end])
        if first & 0x20:
            body = _strip_padding(body)
        parser = _PARSERS.get(packet_type)
        if parser is not None:
            packets.append(parser(first & 0x1F, body))
        offset = end
    return tuple(packets)


def _check_header(first: int, packet_type: int, offset: int, end: int, total: int) -> None:
    version = first >> 6
    if version != RTP_VERSION:
        raise RtcpParseError(f"RTCP version is {version} at byte {offset}, expected 2")
    if end > total:
        raise RtcpParseError(
            f"RTCP packet at byte {offset} is {end - offset} bytes long, "
            f"past the {total}-byte datagram"
        )
    if first & 0x20 and end != total:
        raise RtcpParseError(f"RTCP padding on the packet at byte {offset}, not only the last")


def _strip_padding(body: bytes) -> bytes:
    padding = body[-1] if body else 0
    if not 0 < padding <= len(body):
        raise RtcpParseError(f"RTCP padding count {padding} does not fit a {len(body)}-byte body")
    return body[:-padding]


def _need(body: bytes, size: int, what: str) -> None:
    if size > len(body):
        raise RtcpParseError(f"RTCP {what} needs {size} bytes, the packet has {len(body)}")


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for index in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            body, offset + index * REPORT_BLOCK_BYTES
        )
        lost = lost_word & _LOST_MASK
        if lost > MAX_CUMULATIVE_LOST:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _parse_sr(count: int, body: bytes) -> SenderReport:
    # Bytes after the blocks are a profile-specific extension (RFC 3550 §6.4.1): ignored.
    _need(body, _SENDER_INFO.size + count * REPORT_BLOCK_BYTES, f"SR with {count} blocks")
    ssrc, ntp, rtp_timestamp, packets, octets = _SENDER_INFO.unpack_from(body)
    reports = _parse_blocks(body, _SENDER_INFO.size, count)
    return SenderReport(ssrc, ntp, rtp_timestamp, packets, octets, reports)


def _parse_rr(count: int, body: bytes) -> ReceiverReport:
    _need(body, _SSRC.size + count * REPORT_BLOCK_BYTES, f"RR with {count} blocks")
    (ssrc,) = _SSRC.unpack_from(body)
    return ReceiverReport(ssrc, _parse_blocks(body, _SSRC.size, count))


def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks = []
    offset = 0
    for _ in range(count):
        _need(body, offset + _SSRC.size, f"SDES chunk at byte {offset}")
        (ssrc,) = _SSRC.unpack_from(body, offset)
        offset += _SSRC.size
        items = []
        while True:
            _need(body, offset + 1, "SDES item list without an end")
            kind = body[offset]
            if kind == SDES_END:
                offset = (offset // WORD_BYTES + 1) * WORD_BYTES  # the end and the padding
                break
            _need(body, offset + 2, f"SDES item header at byte {offset}")
            end = offset + 2 + body[offset + 1]
            _need(body, end, f"SDES item at byte {offset}")
            items.append(SdesItem(kind, body[offset + 2 : end]))
            offset = end
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if offset != len(body):
        raise RtcpParseError(f"SDES of {count} chunks ends at byte {offset} of {len(body)}")
    return SourceDescription(tuple(chunks))


def _parse_bye(count: int, body: bytes) -> Goodbye:
    size = count * _SSRC.size
    _need(body, size, f"BYE of {count} sources")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = ""
    if size < len(body):
        _need(body, size + 1 + body[size], "BYE reason")
        reason = body[size + 1 : size + 1 + body[size]].decode(errors="replace")
    return Goodbye(ssrcs, reason)


_PARSERS: Final[dict[int, Callable[[int, bytes], RtcpPacket]]] = {
    PT_SR: _parse_sr,
    PT_RR: _parse_rr,
    PT_SDES: _parse_sdes,
    PT_BYE: _parse_bye,
}


# --- Serialising


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """Serialise a compound; it must start with an SR or RR (RFC 3550 §6.1)."""
    packets = tuple(packets)
    if not packets or not isinstance(packets[0], SenderReport | ReceiverReport):
        raise ValueError("an RTCP compound packet must start with an SR or RR")
    return b"".join(_serialize_one(packet) for packet in packets)


def _serialize_one(packet: RtcpPacket) -> bytes:
    match packet:
        case SenderReport():
            info = _SENDER_INFO.pack(
                packet.ssrc,
                packet.ntp_timestamp,
                packet.rtp_timestamp,
                packet.packet_count,
                packet.octet_count,
            )
            return _packet(PT_SR, len(packet.reports), info + _blocks(packet.reports))
        case ReceiverReport():
            body = _SSRC.pack(packet.ssrc) + _blocks(packet.reports)
            return _packet(PT_RR, len(packet.reports), body)
        case SourceDescription():
            body = b"".join(_sdes_chunk(chunk) for chunk in packet.chunks)
            return _packet(PT_SDES, len(packet.chunks), body)
        case Goodbye():
            body = struct.pack(f"!{len(packet.ssrcs)}I", *packet.ssrcs)
            if packet.reason:
                reason = packet.reason.encode()
                body += _pad(bytes((len(reason),)) + reason)
            return _packet(PT_BYE, len(packet.ssrcs), body)


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    header = _HEADER.pack((RTP_VERSION << 6) | count, packet_type, len(body) // WORD_BYTES)
    return header + body


def _blocks(blocks: tuple[ReportBlock, ...]) -> bytes:
    return b"".join(
        _REPORT_BLOCK.pack(
            b.ssrc,
            (b.fraction_lost << 24) | (b.cumulative_lost & _LOST_MASK),
            b.highest_sequence,
            b.jitter,
            b.lsr,
            b.dlsr,
        )
        for b in blocks
    )


def _sdes_chunk(chunk: SdesChunk) -> bytes:
    items = b"".join(bytes((i.kind, len(i.value))) + i.value for i in chunk.items)
    return _SSRC.pack(chunk.ssrc) + _pad(items + bytes((SDES_END,)))


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % WORD_BYTES)


# --- Timing


def ntp_timestamp(unix_time_s: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point seconds since 1900) of a Unix time."""
    seconds = math.floor(unix_time_s)
    fraction = int((unix_time_s - seconds) * _UINT32_LIMIT)
    return (((seconds + NTP_UNIX_EPOCH_OFFSET_S) << 32) | fraction) % _UINT64_LIMIT


def ntp_short(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: an SR's LSR value, in 1/65536 s."""
    return (ntp >> 16) & (_UINT32_LIMIT - 1)


def short_units(seconds: float) -> int:
    """A delay in 1/65536 s (a DLSR), capped at what 32 bits hold."""
    return min(max(0, int(seconds * NTP_SHORT_UNITS_PER_S)), _UINT32_LIMIT - 1)


def round_trip_s(block: ReportBlock, arrival_ntp: int) -> float | None:
    """RFC 3550 §6.4.1: arrival - LSR - DLSR for a block about our stream, or None before the
    peer has had one of our SRs (LSR 0). Truncation to 1/65536 s can make a loopback's
    round trip come out a unit below zero: that is 0."""
    if block.lsr == 0:
        return None
    units = (ntp_short(arrival_ntp) - block.lsr - block.dlsr) % _UINT32_LIMIT
    if units >= _UINT32_LIMIT // 2:  # negative: the clocks' truncation, not a real delay
        return 0.0
    return units / NTP_SHORT_UNITS_PER_S


def report_delay_s(
    interval_s: float, *, initial: bool, uniform: Callable[[float, float], float]
) -> float:
    """The time to the next report: the interval (half of it for the first report, §6.2),
    randomised to 0.5..1.5 times itself so that participants do not send in step (§6.3.1).

    The two-party session of a call is far below the RTCP bandwidth share at any interval of
    seconds, so the interval is the configured minimum; without timer reconsideration, the
    e - 3/2 compensation factor of §6.3.1 does not apply either."""
    base = interval_s / 2 if initial else interval_s
    return base * uniform(0.5, 1.5)


def looks_like_rtcp(data: bytes) -> bool:
    """Whether a datagram is RTCP by its first two bytes (RFC 5761 §4): version 2 and a packet
    type SR..APP, which as RTP would be the payload types 72-76 that RFC 3551 reserves."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and PT_SR <= data[1] <= PT_APP
