"""RTP packet parse/serialise: hand-built headers, every malformation, round trips, captures.

Also home of ``capture_udp_payloads``, the tiny pcap reader the other voice tests use for the
RTP captures that Debian's ``sip-tester`` ships.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.errors import RtpParseError
from voice.rtp.packet import RtpExtension, RtpPacket, parse_rtp, serialize_rtp

SIPP_CAPTURE_DIRS = (Path("/usr/share/sip-tester/pcap"), Path("/usr/share/sip-tester"))
_PCAP_MAGIC_LE_US = 0xA1B2C3D4
_PCAP_MAGIC_LE_NS = 0xA1B23C4D
_LINKTYPE_ETHERNET = 1
_LINKTYPE_RAW = 101
_ETHERTYPE_IPV4 = 0x0800
_IP_PROTO_UDP = 17
_UDP_HEADER_BYTES = 8


def sipp_capture(name: str) -> Path:
    """The path of one of sip-tester's captures, or skip the test naming what is missing."""
    for directory in SIPP_CAPTURE_DIRS:
        if (directory / name).is_file():
            return directory / name
    pytest.skip(
        f"{name} not found in {[str(d) for d in SIPP_CAPTURE_DIRS]}: apt-get install sip-tester"
    )


def capture_udp_payloads(path: Path) -> list[bytes]:
    """The UDP payloads of the IPv4 packets of a classic pcap file (Ethernet or raw IP links)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    if magic in (_PCAP_MAGIC_LE_US, _PCAP_MAGIC_LE_NS):
        endian = "<"
    else:
        endian = ">"
        assert struct.unpack_from(">I", data)[0] in (_PCAP_MAGIC_LE_US, _PCAP_MAGIC_LE_NS)
    link_type = struct.unpack_from(endian + "I", data, 20)[0]
    assert link_type in (_LINKTYPE_ETHERNET, _LINKTYPE_RAW), f"unsupported link type {link_type}"
    payloads: list[bytes] = []
    offset = 24
    while offset < len(data):
        captured = struct.unpack_from(endian + "I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if link_type == _LINKTYPE_ETHERNET:
            if struct.unpack_from("!H", frame, 12)[0] != _ETHERTYPE_IPV4:
                continue
            frame = frame[14:]
        header_bytes = (frame[0] & 0x0F) * 4
        if frame[0] >> 4 != 4 or frame[9] != _IP_PROTO_UDP:
            continue
        udp_length = struct.unpack_from("!H", frame, header_bytes + 4)[0]
        start = header_bytes + _UDP_HEADER_BYTES
        payloads.append(frame[start : header_bytes + udp_length])
    return payloads


def _header(
    *,
    version: int = 2,
    padding: bool = False,
    extension: bool = False,
    csrc_count: int = 0,
    marker: bool = False,
    payload_type: int = 0,
    sequence: int = 1,
    timestamp: int = 160,
    ssrc: int = 0x12345678,
) -> bytes:
    first = (version << 6) | (padding << 5) | (extension << 4) | csrc_count
    return struct.pack("!BBHII", first, (marker << 7) | payload_type, sequence, timestamp, ssrc)


def test_parse_reads_every_fixed_header_field() -> None:
    data = _header(marker=True, payload_type=8, sequence=65535, timestamp=4_000_000_000) + b"abc"

    packet = parse_rtp(data)

    assert packet == RtpPacket(
        payload_type=8,
        sequence=65535,
        timestamp=4_000_000_000,
        ssrc=0x12345678,
        payload=b"abc",
        marker=True,
    )


def test_parse_reads_csrcs_extension_and_padding() -> None:
    data = (
        _header(padding=True, extension=True, csrc_count=2)
        + struct.pack("!II", 7, 8)
        + struct.pack("!HH", 0xBEDE, 1)
        + b"\x10\x20\x30\x40"
        + b"payload"
        + b"\x00\x00\x03"
    )

    packet = parse_rtp(data)

    assert packet.csrc == (7, 8)
    assert packet.extension == RtpExtension(0xBEDE, b"\x10\x20\x30\x40")
    assert packet.payload == b"payload"
    assert packet.padding == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "shorter than the 12-byte header"),
        (_header(version=1), "version is 1"),
        (_header(version=0) + b"x" * 20, "version is 0"),
        (_header(csrc_count=3) + b"\x00" * 8, "CSRC count 3"),
        (_header(extension=True) + b"\xbe\xde", "extension header"),
        (_header(extension=True) + struct.pack("!HH", 1, 2) + b"\x00" * 7, "extension length"),
        (_header(padding=True) + b"ab\x04", "padding of 4 bytes is longer"),
        (_header(padding=True) + b"ab\x00", "padding count byte is 0"),
    ],
    ids=[
        "short-header",
        "version-1",
        "version-0",
        "csrc-beyond-data",
        "extension-header-cut",
        "extension-length-beyond-data",
        "padding-longer-than-packet",
        "padding-count-zero",
    ],
)
def test_parse_rejects_malformed_packet_naming_the_fault(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        parse_rtp(data)


def test_parse_rejects_padding_that_would_eat_the_extension() -> None:
    data = _header(padding=True, extension=True) + struct.pack("!HH", 1, 1) + b"\x00\x00\x00\x05"

    with pytest.raises(RtpParseError, match="padding of 5 bytes"):
        parse_rtp(data)


def test_serialize_writes_header_bits_in_rfc3550_order() -> None:
    packet = RtpPacket(
        payload_type=101, sequence=0x0102, timestamp=0x03040506, ssrc=0x0708090A, marker=True
    )

    assert serialize_rtp(packet) == bytes.fromhex("80e5010203040506 0708090a".replace(" ", ""))


def test_serialize_pads_with_zeros_and_a_count_byte() -> None:
    packet = RtpPacket(payload_type=0, sequence=1, timestamp=2, ssrc=3, payload=b"p", padding=4)

    data = serialize_rtp(packet)

    assert data[0] & 0x20
    assert data[-4:] == b"\x00\x00\x00\x04"


@pytest.mark.parametrize(
    "fields",
    [
        {"payload_type": 128},
        {"sequence": 65536},
        {"timestamp": -1},
        {"ssrc": 1 << 32},
        {"csrc": tuple(range(16))},
        {"padding": 256},
    ],
    ids=["payload-type", "sequence", "timestamp", "ssrc", "csrc-count", "padding"],
)
def test_packet_rejects_out_of_range_field(fields: dict[str, Any]) -> None:
    base = RtpPacket(payload_type=0, sequence=0, timestamp=0, ssrc=0)

    with pytest.raises(ValueError, match="RTP"):
        replace(base, **fields)


def test_extension_rejects_data_that_is_not_whole_words() -> None:
    with pytest.raises(ValueError, match="whole 32-bit words"):
        RtpExtension(1, b"abc")


_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 65535),
    timestamp=st.integers(0, (1 << 32) - 1),
    ssrc=st.integers(0, (1 << 32) - 1),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, (1 << 32) - 1), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension,
        profile=st.integers(0, 65535),
        data=st.integers(0, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    padding=st.integers(0, 255),
)


@given(_packets)
def test_parse_inverts_serialize_for_any_packet(packet: RtpPacket) -> None:
    assert parse_rtp(serialize_rtp(packet)) == packet


@given(st.binary(max_size=80))
def test_parse_either_raises_rtp_parse_error_or_reserialises_exactly(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpParseError:
        return
    # Padding bytes other than the count are not kept, so compare with zeroed padding.
    expected = data
    if packet.padding:
        expected = data[: -packet.padding] + bytes(packet.padding - 1) + data[-1:]
    assert serialize_rtp(packet) == expected


def test_parse_reads_every_packet_of_the_sipp_alaw_capture() -> None:
    payloads = capture_udp_payloads(sipp_capture("g711a.pcap"))

    packets = [parse_rtp(p) for p in payloads]

    assert len(packets) > 100
    assert {p.payload_type for p in packets} == {8}
    assert len({p.ssrc for p in packets}) == 1
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(packets))
    assert [serialize_rtp(p) for p in packets] == payloads
