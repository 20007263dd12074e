"""RFC 4733 telephone events: payloads, generated streams, and detection under loss/reordering."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.voice.test_rtp_packet import capture_udp_payloads, sipp_capture
from voice.errors import RtpParseError
from voice.rtp.events import (
    DTMF_END_TIMEOUT_S,
    DtmfDetector,
    DtmfDigit,
    TelephoneEvent,
    dtmf_packets,
    event_code,
    parse_telephone_event,
    serialize_telephone_event,
)
from voice.rtp.packet import RtpPacket, parse_rtp

PT_EVENT = 101
SSRC = 0x5EED
PACKET_INTERVAL_S = 0.02


def _press(digit: str, timestamp: int, sequence: int = 0, **kwargs: int) -> list[RtpPacket]:
    return dtmf_packets(
        digit, ssrc=SSRC, sequence=sequence, timestamp=timestamp, payload_type=PT_EVENT, **kwargs
    )


def _feed_all(detector: DtmfDetector, packets: list[RtpPacket], start_s: float = 0.0) -> str:
    digits: list[DtmfDigit] = []
    for i, packet in enumerate(packets):
        digits += detector.feed(packet, start_s + i * PACKET_INTERVAL_S)
    return "".join(d.digit for d in digits)


def test_parse_reads_event_end_volume_and_duration() -> None:
    # The end packet of sip-tester's DTMF "1" capture.
    assert parse_telephone_event(bytes.fromhex("018a08c0")) == TelephoneEvent(
        event=1, end=True, volume=10, duration=2240
    )


def test_parse_ignores_the_reserved_bit() -> None:
    assert parse_telephone_event(bytes.fromhex("0bca0140")) == TelephoneEvent(11, True, 10, 320)


@pytest.mark.parametrize("payload", [b"", b"\x01\x0a\x00", b"\x01\x0a\x00\x00\x00"])
def test_parse_rejects_payload_that_is_not_four_bytes(payload: bytes) -> None:
    with pytest.raises(RtpParseError, match=f"is {len(payload)} bytes, expected 4"):
        parse_telephone_event(payload)


@given(
    st.builds(
        TelephoneEvent,
        event=st.integers(0, 255),
        end=st.booleans(),
        volume=st.integers(0, 63),
        duration=st.integers(0, 65535),
    )
)
def test_parse_inverts_serialize_for_any_event(event: TelephoneEvent) -> None:
    assert parse_telephone_event(serialize_telephone_event(event)) == event


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((256, False, 0, 0), "code 256"),
        ((1, False, 64, 0), "volume 64"),
        ((1, False, 0, -1), "duration"),
    ],
)
def test_event_rejects_out_of_range_field(fields: tuple[int, bool, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TelephoneEvent(*fields)


def test_event_code_follows_rfc4733_table() -> None:
    codes = {d: event_code(d) for d in "0123456789*#ABCD"}

    assert codes == {
        **{str(n): n for n in range(10)},
        "*": 10,
        "#": 11,
        "A": 12,
        "B": 13,
        "C": 14,
        "D": 15,
    }
    assert event_code("a") == 12


@pytest.mark.parametrize("digit", ["E", "", "12", " ", "\u0661"])
def test_event_code_rejects_non_dtmf_character(digit: str) -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        event_code(digit)


def test_dtmf_packets_build_one_rfc4733_event() -> None:
    packets = _press("#", timestamp=16000, sequence=65534, duration_ms=100)

    events = [parse_telephone_event(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {16000}
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1, 2, 3, 4]
    assert {e.event for e in events} == {11}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3


def test_dtmf_packets_round_duration_up_to_whole_intervals() -> None:
    packets = _press("5", timestamp=0, duration_ms=50)

    assert parse_telephone_event(packets[-1].payload).duration == 480  # 60 ms


def test_dtmf_packets_reject_duration_beyond_one_event() -> None:
    with pytest.raises(ValueError, match="does not fit one event"):
        _press("5", timestamp=0, duration_ms=9000)


def test_detector_yields_each_digit_of_a_sequence_once() -> None:
    detector = DtmfDetector()
    packets: list[RtpPacket] = []
    for i, digit in enumerate("0123456789*#ABCD"):
        packets += _press(digit, timestamp=8000 * i, sequence=len(packets))

    assert _feed_all(detector, packets) == "0123456789*#ABCD"


def test_detector_reports_duration_of_the_press() -> None:
    digits = DtmfDetector().feed(_press("7", timestamp=0, duration_ms=200)[-1], 0.0)

    assert digits == [DtmfDigit("7", 200)]


def test_detector_collapses_duplicated_and_reordered_packets() -> None:
    packets = _press("3", timestamp=320) + _press("4", timestamp=8000)
    doubled = [p for p in packets for _ in range(2)]
    first_press = doubled[:14]
    random.Random(7).shuffle(first_press)  # the first press arrives in any order
    assert first_press != doubled[:14]

    assert _feed_all(DtmfDetector(), first_press + doubled[14:]) == "34"


def test_detector_reports_press_with_lost_end_when_next_press_starts() -> None:
    first = [p for p in _press("9", timestamp=0) if not parse_telephone_event(p.payload).end]

    assert _feed_all(DtmfDetector(), first + _press("9", timestamp=4000)) == "99"


def test_detector_reports_press_with_lost_end_after_timeout_once() -> None:
    detector = DtmfDetector()
    updates = [p for p in _press("2", timestamp=0) if not parse_telephone_event(p.payload).end]
    assert _feed_all(detector, updates) == ""
    last_packet_s = (len(updates) - 1) * PACKET_INTERVAL_S

    early = detector.poll(last_packet_s + DTMF_END_TIMEOUT_S / 2)
    late = detector.poll(last_packet_s + DTMF_END_TIMEOUT_S)
    again = detector.poll(last_packet_s + 3 * DTMF_END_TIMEOUT_S)

    assert early is None
    assert late == DtmfDigit("2", 80)
    assert again is None


def test_detector_ignores_late_packets_of_a_finished_press() -> None:
    detector = DtmfDetector()
    first = _press("1", timestamp=0)
    _feed_all(detector, first + _press("2", timestamp=4000))

    assert _feed_all(detector, first[:2] + first[-1:]) == ""


def test_detector_reports_press_seen_only_by_its_end_packets() -> None:
    end_packets = _press("0", timestamp=0)[-3:]

    assert _feed_all(DtmfDetector(), end_packets) == "0"


def test_detector_counts_one_long_press_split_in_segments() -> None:
    # RFC 4733 §2.5.1.3: at the 16-bit duration limit the press goes on under a new timestamp.
    detector = DtmfDetector()
    segment = [
        RtpPacket(PT_EVENT, i, 0, SSRC, serialize_telephone_event(TelephoneEvent(5, False, 10, d)))
        for i, d in enumerate((32000, 65535))
    ]
    rest = _press("5", timestamp=65535, sequence=2, duration_ms=1000)

    digits = [d for i, p in enumerate(segment + rest) for d in detector.feed(p, i * 0.05)]

    assert [d.digit for d in digits] == ["5"]
    assert digits[0].duration_ms == (65535 + 8000) * 1000 // 8000


def test_detector_ignores_non_dtmf_events() -> None:
    flash = RtpPacket(
        PT_EVENT, 0, 0, SSRC, serialize_telephone_event(TelephoneEvent(16, True, 10, 800))
    )

    assert DtmfDetector().feed(flash, 0.0) == []


def test_detector_raises_on_malformed_payload_and_keeps_its_state() -> None:
    detector = DtmfDetector()
    packets = _press("6", timestamp=0)
    detector.feed(packets[0], 0.0)

    with pytest.raises(RtpParseError):
        detector.feed(RtpPacket(PT_EVENT, 1, 0, SSRC, b"\x06"), 0.02)

    assert _feed_all(detector, packets[1:], 0.04) == "6"


_SIPP_DTMF_CAPTURES = [(str(n), f"dtmf_2833_{n}.pcap") for n in range(10)] + [
    ("#", "dtmf_2833_pound.pcap"),
    ("*", "dtmf_2833_star.pcap"),
]


@pytest.mark.parametrize(
    ("digit", "capture"), _SIPP_DTMF_CAPTURES, ids=[c for _, c in _SIPP_DTMF_CAPTURES]
)
def test_detector_yields_the_digit_of_a_sipp_capture_once(digit: str, capture: str) -> None:
    packets = [parse_rtp(p) for p in capture_udp_payloads(sipp_capture(capture))]
    assert {p.payload_type for p in packets} == {PT_EVENT}
    detector = DtmfDetector()

    received = _feed_all(detector, packets)

    assert received == digit
    assert detector.poll(len(packets) * PACKET_INTERVAL_S + 10 * DTMF_END_TIMEOUT_S) is None
