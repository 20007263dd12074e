"""Jitter buffer: order, duplicates, lateness, loss, wrap, SSRC change, jumps and its bound."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.rtp.jitter import (
    JITTER_CAPACITY_PACKETS,
    JITTER_MAX_WAIT_S,
    JITTER_REORDER_PACKETS,
    JitterBuffer,
)
from voice.rtp.packet import RtpPacket

SSRC = 0xA1B2


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def _packet(sequence: int, ssrc: int = SSRC) -> RtpPacket:
    sequence %= 65536
    return RtpPacket(
        payload_type=0, sequence=sequence, timestamp=160 * sequence, ssrc=ssrc, payload=b"\xff"
    )


def _drain(buffer: JitterBuffer) -> list[int | None]:
    """Take every decided slot, as an arrival-driven consumer does."""
    out: list[int | None] = []
    while buffer.ready:
        packet = buffer.get()
        out.append(None if packet is None else packet.sequence)
    return out


def test_in_order_packets_are_ready_at_once() -> None:
    buffer = JitterBuffer()

    out = []
    for sequence in range(10, 15):
        buffer.put(_packet(sequence))
        out += _drain(buffer)

    assert out == [10, 11, 12, 13, 14]


def test_missing_packet_holds_later_ones_until_it_arrives() -> None:
    buffer = JitterBuffer(clock=FakeClock())
    buffer.put(_packet(1))
    assert _drain(buffer) == [1]

    buffer.put(_packet(3))
    held = _drain(buffer)
    buffer.put(_packet(2))

    assert held == []
    assert _drain(buffer) == [2, 3]
    assert buffer.stats.lost == 0


def test_missing_packet_is_lost_once_the_reorder_window_has_passed() -> None:
    buffer = JitterBuffer(clock=FakeClock())
    buffer.put(_packet(1))
    _drain(buffer)

    for sequence in range(3, 3 + JITTER_REORDER_PACKETS):
        buffer.put(_packet(sequence))

    assert _drain(buffer) == [None, *range(3, 3 + JITTER_REORDER_PACKETS)]
    assert buffer.stats.lost == 1


def test_missing_packet_is_lost_after_the_wait_limit() -> None:
    clock = FakeClock()
    buffer = JitterBuffer(clock=clock)
    buffer.put(_packet(1))
    _drain(buffer)
    buffer.put(_packet(4))  # 2 and 3 missing

    clock.now_s += JITTER_MAX_WAIT_S / 2
    early = _drain(buffer)
    clock.now_s += JITTER_MAX_WAIT_S / 2

    assert early == []
    assert _drain(buffer) == [None, None, 4]


def test_duplicate_packet_is_dropped_and_counted() -> None:
    buffer = JitterBuffer(clock=FakeClock())
    for sequence in (5, 7, 7, 6, 5):
        buffer.put(_packet(sequence))

    assert _drain(buffer) == [5, 6, 7]
    assert buffer.stats.duplicates == 2
    assert buffer.stats.late == 0


def test_packet_arriving_after_its_slot_was_given_up_is_dropped() -> None:
    buffer = JitterBuffer(clock=FakeClock())
    buffer.put(_packet(1))
    for sequence in range(3, 3 + JITTER_REORDER_PACKETS):
        buffer.put(_packet(sequence))
    _drain(buffer)

    buffer.put(_packet(2))

    assert len(buffer) == 0
    assert buffer.stats.late == 1


def test_empty_buffer_does_not_give_up_a_slot_not_yet_sent() -> None:
    # A sender using silence suppression pauses; its next packet must still be played.
    buffer = JitterBuffer()
    buffer.put(_packet(1))
    assert buffer.get() is not None

    idle = [buffer.get() for _ in range(50)]
    buffer.put(_packet(2))

    assert idle == [None] * 50
    assert _drain(buffer) == [2]
    assert buffer.stats.lost == 0


def test_playout_consumer_gets_none_for_a_lost_packet() -> None:
    buffer = JitterBuffer()
    for sequence in (1, 2, 4, 5):
        buffer.put(_packet(sequence))

    slots = [buffer.get() for _ in range(4)]

    assert [None if p is None else p.sequence for p in slots] == [1, 2, None, 4]


def test_sequence_wrap_keeps_order() -> None:
    buffer = JitterBuffer()
    arrivals = [65533, 65535, 65534, 1, 0, 2]

    for sequence in arrivals:
        buffer.put(_packet(sequence))

    assert _drain(buffer) == [65533, 65534, 65535, 0, 1, 2]


def test_first_arrival_need_not_be_the_first_packet_sent() -> None:
    buffer = JitterBuffer(clock=FakeClock())
    buffer.put(_packet(11))
    buffer.put(_packet(10))

    assert _drain(buffer) == [10, 11]


def test_ssrc_change_resets_the_stream() -> None:
    buffer = JitterBuffer(clock=FakeClock())
    buffer.put(_packet(100))
    buffer.put(_packet(102))  # 101 missing, so 102 is still held

    buffer.put(_packet(7, ssrc=0xBEEF))
    buffer.put(_packet(8, ssrc=0xBEEF))

    assert _drain(buffer) == [7, 8]
    assert buffer.stats.resets == 1


def test_sequence_jump_is_believed_after_two_packets_in_a_row() -> None:
    buffer = JitterBuffer()
    for sequence in (1, 2, 40000, 40001, 40002):
        buffer.put(_packet(sequence))

    assert _drain(buffer) == [40001, 40002]
    assert buffer.stats.resets == 1


def test_single_stray_packet_far_from_the_stream_is_ignored() -> None:
    buffer = JitterBuffer()
    for sequence in (1, 2, 30000, 3):
        buffer.put(_packet(sequence))

    assert _drain(buffer) == [1, 2, 3]
    assert buffer.stats.late == 1


def test_buffer_never_holds_more_than_its_capacity() -> None:
    buffer = JitterBuffer()
    buffer.put(_packet(0))
    for sequence in range(2, JITTER_CAPACITY_PACKETS + 12):  # 1 never comes; nobody drains
        buffer.put(_packet(sequence))
        assert len(buffer) <= JITTER_CAPACITY_PACKETS

    first = buffer.get()
    assert first is not None
    assert first.sequence == 12  # the newest capacity-worth were kept
    assert buffer.stats.overflow == 11  # 0 and 2..11
    assert buffer.stats.lost == 1  # the slot of 1


def test_constructor_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JitterBuffer(capacity_packets=0)


@given(
    start=st.integers(0, 65535),
    count=st.integers(1, JITTER_CAPACITY_PACKETS),
    seed=st.integers(0, 2**32),
    duplicates=st.integers(0, 5),
)
def test_any_shuffle_within_the_capacity_comes_out_in_order(
    start: int, count: int, seed: int, duplicates: int
) -> None:
    sequences = [(start + i) % 65536 for i in range(count)]
    rng = random.Random(seed)
    arrivals = sequences + [rng.choice(sequences) for _ in range(duplicates)]
    rng.shuffle(arrivals)
    buffer = JitterBuffer(reorder_packets=JITTER_CAPACITY_PACKETS, clock=FakeClock())

    for sequence in arrivals:
        buffer.put(_packet(sequence))

    # Duplicates are dropped; a packet only counts as late once its slot has been given out.
    assert _drain(buffer) == sequences
    assert buffer.stats.lost == 0
