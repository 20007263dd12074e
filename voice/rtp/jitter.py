"""A small receive-side jitter buffer, keyed on RTP sequence numbers.

It puts packets back in order, drops duplicates and packets that come after their slot has been
given up, follows the 16-bit sequence wrap, resets when the sender's SSRC changes or its sequence
jumps (RFC 3550 §A.1: a jump is believed once two packets in a row agree), and never holds more
than ``capacity_packets``.

The consumer takes *slots*, one per packet the sender sent: ``get`` returns the packet, or
``None`` for a lost one, for which the caller conceals (inserts silence). It works for both kinds
of consumer:

- one driven by arrivals (the RTP session feeding ASR): after each ``put``, take slots while
  ``ready``. A missing packet holds the slots after it back until ``reorder_packets`` later ones
  have arrived or the oldest of them has waited ``max_wait_s``, so in-order audio adds no delay;
- one driven by a playout clock: call ``get`` once per frame time; an empty buffer gives ``None``
  without moving on, so a sender that paused (silence suppression) resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from voice.audio import PTIME_MS
from voice.rtp.packet import SEQUENCE_MODULUS, RtpPacket

JITTER_CAPACITY_PACKETS: Final = 25  # 500 ms of 20 ms packets
JITTER_CAPACITY_MS: Final = JITTER_CAPACITY_PACKETS * PTIME_MS
JITTER_REORDER_PACKETS: Final = 3  # later packets that prove a missing one lost
JITTER_MAX_WAIT_S: Final = 0.06  # how long a missing packet may hold later ones back
# RFC 3550 §A.1: a packet further than these from the expected sequence number is either a stray
# or the start of a new numbering; two in a row mean the latter.
MAX_DROPOUT_PACKETS: Final = 3000
MAX_MISORDER_PACKETS: Final = 100

_HALF_SEQUENCE_SPACE: Final = SEQUENCE_MODULUS // 2


@dataclass(slots=True)
class JitterStats:
    """Counters for monitoring; they only grow (``reset`` of the stream keeps them)."""

    received: int = 0
    duplicates: int = 0
    late: int = 0  # arrived after their slot was given up (or a stray far from the stream)
    lost: int = 0  # slots given up with no packet (each was a ``None`` from ``get``)
    overflow: int = 0  # packets discarded because the buffer was full
    resets: int = 0  # SSRC changes and sequence jumps


def _sequence_offset(sequence: int, reference: int) -> int:
    """``sequence - reference`` on the 16-bit circle, in -32768..32767."""
    offset = (sequence - reference) % SEQUENCE_MODULUS
    return offset - SEQUENCE_MODULUS if offset >= _HALF_SEQUENCE_SPACE else offset


class JitterBuffer:
    """Reorders one RTP stream; see the module docstring for the two ways to consume it."""

    def __init__(
        self,
        capacity_packets: int = JITTER_CAPACITY_PACKETS,
        reorder_packets: int = JITTER_REORDER_PACKETS,
        max_wait_s: float = JITTER_MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity_packets < 1 or reorder_packets < 1:
            raise ValueError("jitter buffer capacity and reorder window must be at least 1")
        self._capacity = capacity_packets
        self._reorder = reorder_packets
        self._max_wait_s = max_wait_s
        self._clock = clock
        self.stats = JitterStats()
        self._slots: dict[int, tuple[RtpPacket, float]] = {}  # sequence -> (packet, arrival)
        self._head: int | None = None  # sequence number of the next slot to give out
        self._ssrc: int | None = None
        self._started = False  # a slot has been given out since the last reset
        self._resync: int | None = None  # the sequence number that would confirm a jump

    def __len__(self) -> int:
        return len(self._slots)

    def put(self, packet: RtpPacket) -> None:
        """Add a packet; it is dropped (and counted) if it is a duplicate or too late."""
        self.stats.received += 1
        if self._ssrc != packet.ssrc:
            if self._ssrc is not None:
                self.stats.resets += 1
            self._restart(packet)
        assert self._head is not None
        offset = _sequence_offset(packet.sequence, self._head)
        if offset >= MAX_DROPOUT_PACKETS or offset < -MAX_MISORDER_PACKETS:
            if packet.sequence != self._resync:
                self._resync = (packet.sequence + 1) % SEQUENCE_MODULUS
                self.stats.late += 1
                return
            self.stats.resets += 1
            self._restart(packet)
            offset = 0
        if offset < 0:
            if self._started or -offset + self._span() > self._capacity:
                self.stats.late += 1
                return
            # Nothing given out yet: the first packet to arrive was not the first sent.
            self._head, offset = packet.sequence, 0
        if packet.sequence in self._slots:
            self.stats.duplicates += 1
            return
        if offset >= self._capacity:
            self._skip_to((packet.sequence - self._capacity + 1) % SEQUENCE_MODULUS)
        self._slots[packet.sequence] = (packet, self._clock())

    @property
    def ready(self) -> bool:
        """Whether the next slot is decided: its packet is here, or it is taken to be lost."""
        if self._head is None or not self._slots:
            return False
        if self._head in self._slots or len(self._slots) >= self._reorder:
            return True
        oldest_arrival = min(arrival for _, arrival in self._slots.values())
        return self._clock() - oldest_arrival >= self._max_wait_s

    def get(self) -> RtpPacket | None:
        """Give out the next slot: its packet, or ``None`` if it is missing (conceal it).

        With nothing buffered it returns ``None`` and stays on the same slot, so a packet that
        is merely not sent yet is not given up.
        """
        if self._head is None or not self._slots:
            return None
        entry = self._slots.pop(self._head, None)
        self._head = (self._head + 1) % SEQUENCE_MODULUS
        self._started = True
        if entry is None:
            self.stats.lost += 1
            return None
        return entry[0]

    def _span(self) -> int:
        """Slots from the head to the newest buffered packet, inclusive (0 when empty)."""
        assert self._head is not None
        head = self._head
        return max((_sequence_offset(s, head) + 1 for s in self._slots), default=0)

    def _restart(self, packet: RtpPacket) -> None:
        self._slots.clear()
        self._ssrc = packet.ssrc
        self._head = packet.sequence
        self._started = False
        self._resync = None

    def _skip_to(self, head: int) -> None:
        assert self._head is not None
        while self._head != head:
            if self._slots.pop(self._head, None) is None:
                self.stats.lost += 1
            else:
                self.stats.overflow += 1
            self._head = (self._head + 1) % SEQUENCE_MODULUS
        self._started = True
