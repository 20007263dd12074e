"""Writing RTP captures for sipp's ``play_pcap_audio``: speech of the test's own as G.711 RTP."""

from __future__ import annotations

import struct
from pathlib import Path

from voice.audio import SAMPLES_PER_FRAME, alaw_encode, ulaw_encode
from voice.rtp.packet import RtpPacket, serialize_rtp

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet links
_FRAME_BYTES = SAMPLES_PER_FRAME * 2


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, src_port: int, dst_port: int) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ethernet = b"\x00" * 12 + b"\x08\x00"
    return ethernet + ip + udp


def write_rtp_pcap(path: Path, pcm8k: bytes, *, codec: str = "PCMU") -> Path:
    """``pcm8k`` (16-bit mono at 8 kHz) as 20 ms G.711 RTP packets, timed 20 ms apart."""
    encode, payload_type = (ulaw_encode, 0) if codec == "PCMU" else (alaw_encode, 8)
    records = [_PCAP_HEADER]
    for n, start in enumerate(range(0, len(pcm8k), _FRAME_BYTES)):
        frame = pcm8k[start : start + _FRAME_BYTES].ljust(_FRAME_BYTES, b"\x00")
        packet = serialize_rtp(
            RtpPacket(
                payload_type=payload_type,
                sequence=n & 0xFFFF,
                timestamp=(n * SAMPLES_PER_FRAME) & 0xFFFFFFFF,
                ssrc=0x5EED,
                payload=encode(frame),
                marker=n == 0,
            )
        )
        data = _frame(packet, 6000, 6002)
        micros = n * 20_000
        records.append(
            struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(data), len(data))
            + data
        )
    path.write_bytes(b"".join(records))
    return path
