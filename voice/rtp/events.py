"""RFC 4733 telephone events (DTMF over RTP): payload parse/serialise, detection, generation.

An event is one key press. Its packets share an RTP timestamp (the event's start) and carry a
growing duration; the last one has the end bit and is sent three times. ``DtmfDetector`` turns
that stream, with loss, duplication and reordering, into exactly one ``DtmfDigit`` per press;
``dtmf_packets`` generates the stream for sending.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from voice.audio import PTIME_MS, TELEPHONE_RATE_HZ
from voice.errors import RtpParseError
from voice.rtp.packet import SEQUENCE_MODULUS, TIMESTAMP_MODULUS, RtpPacket

TELEPHONE_EVENT_BYTES: Final = 4
DTMF_DIGITS: Final = "0123456789*#ABCD"  # RFC 4733 §3.2: event codes 0..15, in this order
MAX_VOLUME_DBM0: Final = 63  # the volume field is -dBm0, 6 bits
MAX_DURATION_UNITS: Final = 0xFFFF
DEFAULT_DTMF_DURATION_MS: Final = 100
DEFAULT_DTMF_VOLUME_DBM0: Final = 10  # -10 dBm0: a typical keypad level
END_PACKET_REPEATS: Final = 3  # RFC 4733 §2.5.1.4
# A press whose end packets were all lost is reported once no packet of it arrived for this long
# (updates come every 50 ms at most, RFC 4733 §2.5.1.2, so this is several missed updates).
DTMF_END_TIMEOUT_S: Final = 0.5
# Completed presses remembered so that a late or repeated packet of one is not a new press.
_RECENT_EVENTS: Final = 8

_PAYLOAD: Final = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 payload: ``duration`` is in RTP timestamp units, ``volume`` in -dBm0."""

    event: int
    end: bool
    volume: int
    duration: int

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 0xFF:
            raise ValueError(f"telephone event code {self.event} is outside 0..255")
        if not 0 <= self.volume <= MAX_VOLUME_DBM0:
            raise ValueError(f"telephone event volume {self.volume} is outside 0..63")
        if not 0 <= self.duration <= MAX_DURATION_UNITS:
            raise ValueError(f"telephone event duration {self.duration} is not a 16-bit value")


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key press received from the peer. ``digit`` is personal data: never log its value."""

    digit: str
    duration_ms: int


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Parse a telephone-event payload; raises ``RtpParseError`` if it is not 4 bytes."""
    if len(payload) != TELEPHONE_EVENT_BYTES:
        raise RtpParseError(
            f"telephone-event payload is {len(payload)} bytes, expected {TELEPHONE_EVENT_BYTES}"
        )
    event, flags, duration = _PAYLOAD.unpack(payload)
    # Bit 0x40 is reserved: senders set it to 0 and receivers ignore it (RFC 4733 §2.3).
    return TelephoneEvent(
        event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration
    )


def serialize_telephone_event(event: TelephoneEvent) -> bytes:
    """Serialise a telephone-event payload (4 bytes)."""
    return _PAYLOAD.pack(event.event, (0x80 if event.end else 0) | event.volume, event.duration)


def event_code(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit (``0-9 * # A-D``; lower-case letters accepted)."""
    code = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError("not a DTMF digit: expected one of 0-9 * # A-D")
    return code


def dtmf_packets(
    digit: str,
    *,
    ssrc: int,
    sequence: int,
    timestamp: int,
    payload_type: int,
    duration_ms: int = DEFAULT_DTMF_DURATION_MS,
    volume: int = DEFAULT_DTMF_VOLUME_DBM0,
    clock_rate_hz: int = TELEPHONE_RATE_HZ,
    interval_ms: int = PTIME_MS,
) -> list[RtpPacket]:
    """The packets that send one key press, to go out one per ``interval_ms``.

    All share ``timestamp`` (the event's start); the first has the marker bit; durations grow by
    one interval up to ``duration_ms`` (rounded up to whole intervals), whose end packet is sent
    ``END_PACKET_REPEATS`` times. Sequence numbers run on from ``sequence``, one per packet.
    """
    code = event_code(digit)
    if duration_ms <= 0 or interval_ms <= 0:
        raise ValueError("DTMF duration and interval must be positive")
    step = clock_rate_hz * interval_ms // 1000
    steps = -(-duration_ms // interval_ms)
    if steps * step > MAX_DURATION_UNITS:
        raise ValueError(f"a DTMF duration of {duration_ms} ms does not fit one event")
    durations = [step * (i + 1) for i in range(steps)]
    ends = [False] * (steps - 1) + [True] * END_PACKET_REPEATS
    durations += [durations[-1]] * (END_PACKET_REPEATS - 1)
    return [
        RtpPacket(
            payload_type=payload_type,
            sequence=(sequence + i) % SEQUENCE_MODULUS,
            timestamp=timestamp % TIMESTAMP_MODULUS,
            ssrc=ssrc,
            payload=serialize_telephone_event(TelephoneEvent(code, end, volume, duration)),
            marker=i == 0,
        )
        for i, (duration, end) in enumerate(zip(durations, ends, strict=True))
    ]


@dataclass(slots=True)
class _Press:
    key: tuple[int, int, int]  # (ssrc, timestamp, event code)
    event: int
    timestamp: int
    duration: int  # of the current segment, in timestamp units
    last_seen_s: float
    earlier_segments: int = 0  # timestamp units of the segments before this one


class DtmfDetector:
    """One ``DtmfDigit`` per key press from a stream of telephone-event packets.

    A press is reported when its first end packet arrives; its repeats are ignored. If every end
    packet is lost the press is still reported, once: when a packet of a new press arrives, or
    when ``poll`` finds it silent for ``end_timeout_s``. Events outside 0-15 (flash, tones) are
    ignored. A long press split into segments (RFC 4733 §2.5.1.3) counts once.
    """

    def __init__(
        self,
        clock_rate_hz: int = TELEPHONE_RATE_HZ,
        end_timeout_s: float = DTMF_END_TIMEOUT_S,
    ) -> None:
        self._clock_rate_hz = clock_rate_hz
        self._end_timeout_s = end_timeout_s
        self._open: _Press | None = None
        self._done: deque[tuple[int, int, int]] = deque(maxlen=_RECENT_EVENTS)

    def feed(self, packet: RtpPacket, now_s: float) -> list[DtmfDigit]:
        """Take one telephone-event packet; returns the presses it completes (0, 1 or 2).

        Raises ``RtpParseError`` for a malformed payload, leaving the detector's state as it was.
        """
        event = parse_telephone_event(packet.payload)
        if event.event >= len(DTMF_DIGITS):
            return []
        key = (packet.ssrc, packet.timestamp, event.event)
        if key in self._done:
            return []
        digits: list[DtmfDigit] = []
        press = self._open
        if press is not None and press.key != key:
            if self._continues(press, packet, event):
                press.key, press.timestamp = key, packet.timestamp
                press.earlier_segments += press.duration
                press.duration = 0
            else:
                digits.append(self._finish(press))
                press = None
        if press is None:
            press = _Press(key, event.event, packet.timestamp, 0, now_s)
            self._open = press
        press.duration = max(press.duration, event.duration)
        press.last_seen_s = now_s
        if event.end:
            digits.append(self._finish(press))
        return digits

    def poll(self, now_s: float) -> DtmfDigit | None:
        """Report a press whose end packets never came, once it has been silent long enough."""
        press = self._open
        if press is not None and now_s - press.last_seen_s >= self._end_timeout_s:
            return self._finish(press)
        return None

    @staticmethod
    def _continues(press: _Press, packet: RtpPacket, event: TelephoneEvent) -> bool:
        # A new segment of the same long press starts where the previous one's duration ends.
        return (
            event.event == press.event
            and packet.ssrc == press.key[0]
            and packet.timestamp == (press.timestamp + press.duration) % TIMESTAMP_MODULUS
            and press.duration == MAX_DURATION_UNITS
        )

    def _finish(self, press: _Press) -> DtmfDigit:
        self._done.append(press.key)
        self._open = None
        return DtmfDigit(
            digit=DTMF_DIGITS[press.event],
            duration_ms=(press.earlier_segments + press.duration) * 1000 // self._clock_rate_hz,
        )
