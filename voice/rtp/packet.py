"""RTP packets (RFC 3550 §5.1): a frozen dataclass and pure parse/serialise functions.

``parse_rtp`` raises ``RtpParseError`` (a ``ValueError``) naming what is wrong and where, so the
session can count and drop a bad datagram without catching anything broader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from voice.errors import RtpParseError

RTP_VERSION: Final = 2
FIXED_HEADER_BYTES: Final = 12
CSRC_BYTES: Final = 4
EXTENSION_HEADER_BYTES: Final = 4
EXTENSION_WORD_BYTES: Final = 4
MAX_CSRC_COUNT: Final = 15
MAX_PAYLOAD_TYPE: Final = 127
MAX_PADDING_BYTES: Final = 255
SEQUENCE_MODULUS: Final = 1 << 16
TIMESTAMP_MODULUS: Final = 1 << 32

_FIXED_HEADER: Final = struct.Struct("!BBHII")
_EXTENSION_HEADER: Final = struct.Struct("!HH")
_UINT16_LIMIT: Final = 1 << 16
_UINT32_LIMIT: Final = 1 << 32


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The one header extension RFC 3550 allows: a profile-defined id and 32-bit words of data."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile < _UINT16_LIMIT:
            raise ValueError(f"RTP extension profile {self.profile} is not a 16-bit value")
        if len(self.data) % EXTENSION_WORD_BYTES:
            raise ValueError(
                f"RTP extension data must be whole 32-bit words, got {len(self.data)} bytes"
            )
        if len(self.data) // EXTENSION_WORD_BYTES >= _UINT16_LIMIT:
            raise ValueError(f"RTP extension data of {len(self.data)} bytes is too long")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. The version is always ``RTP_VERSION`` (2), so it is not a field.

    ``padding`` is the number of padding bytes after the payload, including the final count
    byte (0 = none); ``sequence`` and ``timestamp`` are the raw wrapping 16- and 32-bit values.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"RTP payload type {self.payload_type} is outside 0..127")
        if not 0 <= self.sequence < _UINT16_LIMIT:
            raise ValueError(f"RTP sequence number {self.sequence} is not a 16-bit value")
        if not 0 <= self.timestamp < _UINT32_LIMIT:
            raise ValueError(f"RTP timestamp {self.timestamp} is not a 32-bit value")
        if not 0 <= self.ssrc < _UINT32_LIMIT:
            raise ValueError(f"RTP SSRC {self.ssrc} is not a 32-bit value")
        if len(self.csrc) > MAX_CSRC_COUNT:
            raise ValueError(f"RTP allows at most 15 CSRCs, got {len(self.csrc)}")
        if any(not 0 <= c < _UINT32_LIMIT for c in self.csrc):
            raise ValueError("every RTP CSRC must be a 32-bit value")
        if not 0 <= self.padding <= MAX_PADDING_BYTES:
            raise ValueError(f"RTP padding of {self.padding} bytes is outside 0..255")


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP datagram. Raises ``RtpParseError`` saying which field is inconsistent."""
    if len(data) < FIXED_HEADER_BYTES:
        raise RtpParseError(
            f"RTP packet of {len(data)} bytes is shorter than the {FIXED_HEADER_BYTES}-byte header"
        )
    first, second, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpParseError(f"RTP version is {version}, expected {RTP_VERSION}")
    has_padding = bool(first & 0x20)
    has_extension = bool(first & 0x10)
    csrc_count = first & 0x0F
    offset = FIXED_HEADER_BYTES + csrc_count * CSRC_BYTES
    if offset > len(data):
        raise RtpParseError(
            f"RTP CSRC count {csrc_count} needs {offset} header bytes, packet has {len(data)}"
        )
    csrc = struct.unpack_from(f"!{csrc_count}I", data, FIXED_HEADER_BYTES)

    extension = None
    if has_extension:
        if offset + EXTENSION_HEADER_BYTES > len(data):
            raise RtpParseError(
                f"RTP extension header at byte {offset} runs past the {len(data)}-byte packet"
            )
        profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        start = offset + EXTENSION_HEADER_BYTES
        offset = start + words * EXTENSION_WORD_BYTES
        if offset > len(data):
            raise RtpParseError(
                f"RTP extension length of {words} words runs past the {len(data)}-byte packet"
            )
        extension = RtpExtension(profile, bytes(data[start:offset]))

    end = len(data)
    padding = 0
    if has_padding:
        padding = data[-1]
        if padding == 0:
            raise RtpParseError("RTP padding bit set but the padding count byte is 0")
        if padding > end - offset:
            raise RtpParseError(
                f"RTP padding of {padding} bytes is longer than the {end - offset} bytes "
                "after the header"
            )
        end -= padding

    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrc=tuple(csrc),
        extension=extension,
        padding=padding,
    )


def serialize_rtp(packet: RtpPacket) -> bytes:
    """Serialise a packet; ``parse_rtp(serialize_rtp(p)) == p`` for every valid packet."""
    first = (
        (RTP_VERSION << 6)
        | (0x20 if packet.padding else 0)
        | (0x10 if packet.extension is not None else 0)
        | len(packet.csrc)
    )
    second = (0x80 if packet.marker else 0) | packet.payload_type
    parts = [
        _FIXED_HEADER.pack(first, second, packet.sequence, packet.timestamp, packet.ssrc),
        struct.pack(f"!{len(packet.csrc)}I", *packet.csrc),
    ]
    if packet.extension is not None:
        words = len(packet.extension.data) // EXTENSION_WORD_BYTES
        parts.append(_EXTENSION_HEADER.pack(packet.extension.profile, words))
        parts.append(packet.extension.data)
    parts.append(packet.payload)
    if packet.padding:
        parts.append(bytes(packet.padding - 1) + bytes((packet.padding,)))
    return b"".join(parts)
