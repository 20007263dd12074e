"""RTCP packets, receive statistics and the report exchange: hand-built bytes, malformations,
round trips, and the numbers of RFC 3550 worked out by hand."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.errors import RtpParseError
from voice.rtp.packet import RtpPacket
from voice.rtp.reception import ReceptionStats, ReportExchange
from voice.rtp.rtcp import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
    looks_like_rtcp,
    ntp_short,
    ntp_timestamp,
    parse_rtcp,
    report_delay_s,
    round_trip_s,
    serialize_rtcp,
)

SSRC = 0x11223344
PEER = 0x0BADCAFE
CNAME = "Zm9vYmFyYmF6cXV4"


def _header(count: int, packet_type: int, words: int, padding: bool = False) -> bytes:
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, packet_type, words)


def _block_bytes(
    ssrc: int, fraction: int, lost: int, highest: int, jitter: int, lsr: int, dlsr: int
) -> bytes:
    lost24 = (lost & 0xFFFFFF).to_bytes(3, "big")
    return (
        struct.pack("!IB", ssrc, fraction)
        + lost24
        + struct.pack("!IIII", highest, jitter, lsr, dlsr)
    )


def _rr_bytes(ssrc: int = PEER) -> bytes:
    return _header(0, 201, 1) + struct.pack("!I", ssrc)


def _cname_bytes(ssrc: int, cname: bytes) -> bytes:
    chunk = struct.pack("!I", ssrc) + bytes((1, len(cname))) + cname + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return _header(1, 202, len(chunk) // 4) + chunk


# --- Exact bytes


def test_sender_report_bytes_follow_the_rfc_3550_layout() -> None:
    block = ReportBlock(PEER, 51, 1234, 0x0001_0005, 77, 0xB705_2000, 0x0005_4000)
    report = SenderReport(SSRC, 0xB710_8000_4000_0000, 0x0102_0304, 500, 80_000, (block,))

    expected = (
        _header(1, 200, 12)  # 28 bytes of sender info + one 24-byte block = 13 words
        + struct.pack("!I", SSRC)
        + struct.pack("!II", 0xB710_8000, 0x4000_0000)  # NTP, most and least significant words
        + struct.pack("!III", 0x0102_0304, 500, 80_000)
        + _block_bytes(PEER, 51, 1234, 0x0001_0005, 77, 0xB705_2000, 0x0005_4000)
    )
    assert serialize_rtcp([report]) == expected
    assert parse_rtcp(expected) == (report,)


def test_receiver_report_with_negative_cumulative_lost_and_sdes_bytes() -> None:
    block = ReportBlock(PEER, 0, -3, 65_540, 8, 0, 0)
    compound: list[RtcpPacket] = [
        ReceiverReport(SSRC, (block,)),
        SourceDescription((SdesChunk.with_cname(SSRC, CNAME),)),
    ]

    expected = (
        _header(1, 201, 7)
        + struct.pack("!I", SSRC)
        + struct.pack("!IB", PEER, 0)
        + b"\xff\xff\xfd"  # -3 as 24-bit two's complement
        + struct.pack("!IIII", 65_540, 8, 0, 0)
        + _cname_bytes(SSRC, CNAME.encode())
    )
    assert serialize_rtcp(compound) == expected
    parsed = parse_rtcp(expected)
    assert parsed == tuple(compound)
    assert isinstance(parsed[0], ReceiverReport) and parsed[0].reports[0].cumulative_lost == -3
    assert isinstance(parsed[1], SourceDescription) and parsed[1].chunks[0].cname == CNAME


@pytest.mark.parametrize("lost", [-(1 << 23), -1, 0, 1, (1 << 23) - 1])
def test_cumulative_lost_round_trips_across_the_24_bit_signed_range(lost: int) -> None:
    compound = [ReceiverReport(SSRC, (ReportBlock(PEER, 0, lost, 1, 0),))]

    [report] = parse_rtcp(serialize_rtcp(compound))

    assert isinstance(report, ReceiverReport)
    assert report.reports[0].cumulative_lost == lost


@pytest.mark.parametrize("lost", [-(1 << 23) - 1, 1 << 23])
def test_cumulative_lost_outside_24_bits_is_refused(lost: int) -> None:
    with pytest.raises(ValueError, match="24-bit signed"):
        ReportBlock(PEER, 0, lost, 1, 0)


def test_bye_with_a_reason_has_its_length_byte_and_padding() -> None:
    compound: list[RtcpPacket] = [ReceiverReport(SSRC), Goodbye((SSRC,), "ciao")]

    expected = (
        _rr_bytes(SSRC) + _header(1, 203, 3) + struct.pack("!I", SSRC) + b"\x04ciao\x00\x00\x00"
    )
    assert serialize_rtcp(compound) == expected
    assert parse_rtcp(expected) == tuple(compound)


def test_bye_without_reason_is_just_the_sources() -> None:
    compound: list[RtcpPacket] = [ReceiverReport(SSRC), Goodbye((SSRC, PEER))]

    data = serialize_rtcp(compound)

    assert data[8:] == _header(2, 203, 2) + struct.pack("!II", SSRC, PEER)
    assert parse_rtcp(data) == tuple(compound)


# --- Round trips

_u32 = st.integers(min_value=0, max_value=2**32 - 1)
_blocks = st.lists(
    st.builds(
        ReportBlock,
        _u32,
        st.integers(0, 255),
        st.integers(-(1 << 23), (1 << 23) - 1),
        _u32,
        _u32,
        _u32,
        _u32,
    ),
    max_size=31,
).map(tuple)
_reports = st.builds(ReceiverReport, _u32, _blocks) | st.builds(
    SenderReport, _u32, st.integers(0, 2**64 - 1), _u32, _u32, _u32, _blocks
)
_chunks = st.builds(
    SdesChunk,
    _u32,
    st.lists(st.builds(SdesItem, st.integers(1, 255), st.binary(max_size=255)), max_size=4).map(
        tuple
    ),
)
_others: st.SearchStrategy[RtcpPacket] = (
    _reports
    | st.builds(SourceDescription, st.lists(_chunks, max_size=5).map(tuple))
    | st.builds(Goodbye, st.lists(_u32, max_size=31).map(tuple), st.text(max_size=60))
)
_compounds = st.tuples(_reports, st.lists(_others, max_size=4)).map(lambda c: [c[0], *c[1]])


@settings(max_examples=200, deadline=None)
@given(_compounds)
def test_every_valid_compound_round_trips(compound: list[RtcpPacket]) -> None:
    assert parse_rtcp(serialize_rtcp(compound)) == tuple(compound)


def _parses_or_rejects(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtcpParseError:
        return
    assert isinstance(packets, tuple)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_rtcp_parse_error(data: bytes) -> None:
    _parses_or_rejects(data)


@settings(max_examples=500, deadline=None)
@given(_compounds, st.data())
def test_damaged_compounds_parse_or_raise_rtcp_parse_error(
    compound: list[RtcpPacket], data: st.DataObject
) -> None:
    damaged = bytearray(serialize_rtcp(compound))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    _parses_or_rejects(bytes(damaged[:cut]))
    _parses_or_rejects(bytes(damaged))


def test_rtcp_parse_error_is_the_voice_packages_parse_error() -> None:
    assert issubclass(RtcpParseError, RtpParseError) and issubclass(RtcpParseError, ValueError)


# --- Validity checks (RFC 3550 Appendix A.2)

_SDES = _cname_bytes(PEER, b"x")


def test_compounds_a_phone_sends_that_do_not_begin_with_a_report_are_read() -> None:
    # baresip 1.0.0: a lone APP "PING" once the call is up, and at hang-up its BYE before SDES.
    ping = _header(0, 204, 2) + struct.pack("!I", PEER) + b"PING"
    assert parse_rtcp(ping) == ()
    bye = _header(1, 203, 3) + struct.pack("!I", PEER) + b"\x04Adjo\x00\x00\x00"
    packets = parse_rtcp(bye + _SDES)
    assert [type(packet) for packet in packets] == [Goodbye, SourceDescription]
    assert packets[0] == Goodbye((PEER,), "Adjo")
    assert parse_rtcp(_SDES + _rr_bytes())[1] == parse_rtcp(_rr_bytes())[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "whole 32-bit words"),
        (_rr_bytes()[:6], "whole 32-bit words"),
        (b"\x40" + _rr_bytes()[1:], "version is 1"),
        (_rr_bytes() + b"\x00" + _SDES[1:], "version is 0"),
        (_header(0, 201, 2) + struct.pack("!I", PEER), "past the 8-byte datagram"),
        (_header(0, 201, 1, padding=True) + b"\x00\x00\x00\x04" + _SDES, "not only the last"),
        (
            _rr_bytes() + _header(1, 202, 2, padding=True) + _SDES[4:] + _rr_bytes(),
            "not only the last",
        ),
        (_rr_bytes() + _header(0, 203, 1, padding=True) + b"\x00\x00\x00\x00", "padding count 0"),
        (_rr_bytes() + _header(0, 203, 1, padding=True) + b"\x00\x00\x00\x09", "padding count 9"),
        (_header(2, 201, 7) + struct.pack("!I", PEER) + bytes(24), "RR with 2 blocks"),
        (_header(1, 200, 6) + bytes(24), "SR with 1 blocks"),
        (_rr_bytes() + _header(2, 202, 2) + _SDES[4:], "SDES chunk at byte 8"),
        (_rr_bytes() + _header(1, 202, 2) + struct.pack("!I", PEER) + b"\x01\x09xx", "item at"),
        (_rr_bytes() + _header(1, 202, 2) + struct.pack("!I", PEER) + b"\x01\x02xy", "without"),
        (_rr_bytes() + _header(1, 202, 3) + _SDES[4:] + bytes(4), "ends at byte 8 of 12"),
        (_rr_bytes() + _header(3, 203, 2) + bytes(8), "BYE of 3 sources"),
        (_rr_bytes() + _header(1, 203, 2) + struct.pack("!I", PEER) + b"\x07abc", "BYE reason"),
    ],
)
def test_malformed_compounds_are_rejected_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(RtcpParseError, match=message):
        parse_rtcp(data)


def test_unknown_packet_types_inside_a_compound_are_skipped() -> None:
    app = _header(0, 204, 3) + struct.pack("!I", PEER) + b"PINGPONG"
    rtpfb = _header(1, 205, 3) + struct.pack("!III", PEER, SSRC, 0x00050000)  # generic NACK
    psfb = _header(1, 206, 2) + struct.pack("!II", PEER, SSRC)  # picture loss indication
    xr = _header(0, 207, 1) + struct.pack("!I", PEER)

    packets = parse_rtcp(_rr_bytes() + app + rtpfb + psfb + xr + _SDES)

    assert packets == (
        ReceiverReport(PEER),
        SourceDescription((SdesChunk(PEER, (SdesItem(1, b"x"),)),)),
    )


def test_a_sender_report_profile_extension_is_ignored() -> None:
    report = SenderReport(PEER, 1 << 32, 2, 3, 4)
    data = serialize_rtcp([report])
    extended = _header(0, 200, 8) + data[4:] + b"EXT!" + b"MORE"

    assert parse_rtcp(extended) == (report,)


def test_padding_on_the_last_packet_is_removed() -> None:
    bye = _header(1, 203, 2, padding=True) + struct.pack("!I", PEER) + b"\x00\x00\x00\x04"

    assert parse_rtcp(_rr_bytes() + bye) == (ReceiverReport(PEER), Goodbye((PEER,)))


def test_a_compound_must_start_with_a_report_to_be_serialised() -> None:
    with pytest.raises(ValueError, match="must start with an SR or RR"):
        serialize_rtcp([Goodbye((SSRC,))])


def test_packets_refuse_more_than_31_entries() -> None:
    with pytest.raises(ValueError, match="at most 31"):
        Goodbye(tuple(range(32)))


def test_looks_like_rtcp_tells_reports_from_rtp() -> None:
    rtp_pcmu = bytes((0x80, 0x00)) + bytes(10)
    rtp_marker_event = bytes((0x80, 0x80 | 101)) + bytes(10)

    assert looks_like_rtcp(_rr_bytes()) and looks_like_rtcp(_SDES)
    assert not looks_like_rtcp(rtp_pcmu) and not looks_like_rtcp(rtp_marker_event)
    assert not looks_like_rtcp(b"\x80") and not looks_like_rtcp(b"\x40\xc9")


# --- Timing


def test_ntp_timestamps_count_from_1900_in_32_32_fixed_point() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(1.5) == ((2_208_988_801 << 32) | 0x8000_0000)
    assert ntp_short(0xB710_8000_4000_0000) == 0x8000_4000


def test_round_trip_time_is_the_worked_example_of_rfc_3550_section_6_4_1() -> None:
    # A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000, DLSR = 0x0005:4000: delay 6.125 s.
    block = ReportBlock(SSRC, 0, 0, 0, 0, lsr=0xB705_2000, dlsr=0x0005_4000)
    arrival = 0xB710_8000 << 16

    assert round_trip_s(block, arrival) == 6.125
    assert round_trip_s(ReportBlock(SSRC, 0, 0, 0, 0), arrival) is None
    late_by_truncation = ReportBlock(SSRC, 0, 0, 0, 0, lsr=0xB710_8000, dlsr=1)
    assert round_trip_s(late_by_truncation, arrival) == 0.0


def _recorded_uniform(value: float) -> tuple[list[tuple[float, float]], Callable[..., float]]:
    calls: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return value

    return calls, uniform


@pytest.mark.parametrize(("initial", "factor", "expected"), [(True, 0.5, 1.25), (False, 1.5, 7.5)])
def test_report_delay_is_the_interval_randomised_and_halved_at_first(
    initial: bool, factor: float, expected: float
) -> None:
    calls, uniform = _recorded_uniform(factor)

    assert report_delay_s(5.0, initial=initial, uniform=uniform) == expected
    assert calls == [(0.5, 1.5)]


# --- Reception statistics (RFC 3550 A.1, A.3, A.8)


def _feed(stats: ReceptionStats, sequences: list[int], *, start: float = 0.0) -> None:
    for n, sequence in enumerate(sequences):
        stats.update(sequence % 65536, 160 * sequence, start + 0.02 * n, timed=True)


def test_dropped_packets_show_in_fraction_and_cumulative_lost() -> None:
    stats = ReceptionStats(PEER, 0)
    _feed(stats, [s for s in range(20) if s not in (3, 7, 8, 15)])

    first = stats.report_block()

    assert (first.cumulative_lost, first.highest_sequence) == (4, 19)
    assert first.fraction_lost == 4 * 256 // 20  # 51: 20 % in 1/256
    _feed(stats, list(range(20, 30)))
    second = stats.report_block()
    assert (second.fraction_lost, second.cumulative_lost) == (0, 4)  # nothing lost since
    _feed(stats, [30, 33])
    third = stats.report_block()
    assert (third.fraction_lost, third.cumulative_lost) == (2 * 256 // 4, 6)


def test_the_sequence_wrap_extends_the_highest_sequence_number() -> None:
    stats = ReceptionStats(PEER, 65530)
    _feed(stats, [65530 + n for n in range(12) if n != 8])  # 65530..65535, 0..5 without 2

    block = stats.report_block()
    snapshot = stats.snapshot()

    assert block.highest_sequence == 65536 + 5
    assert (snapshot.expected, snapshot.received, snapshot.cumulative_lost) == (12, 11, 1)


def test_duplicates_count_as_received_and_can_make_loss_negative() -> None:
    stats = ReceptionStats(PEER, 100)
    _feed(stats, [100, 101, 102, 102, 103, 103, 103])

    block = stats.report_block()

    assert block.cumulative_lost == -3
    assert block.fraction_lost == 0
    assert block.highest_sequence == 103


def test_a_reordered_packet_is_not_a_loss() -> None:
    stats = ReceptionStats(PEER, 0)
    _feed(stats, [0, 1, 3, 2, 4])

    assert stats.report_block().cumulative_lost == 0
    assert stats.snapshot().highest_sequence == 4


def test_a_lone_far_jump_is_ignored_and_a_confirmed_one_restarts_the_counts() -> None:
    stats = ReceptionStats(PEER, 0)
    _feed(stats, list(range(10)))

    assert not stats.update(30_000, 0, 1.0, timed=True)  # a stray: not counted
    assert stats.update(10, 1600, 1.02, timed=True)
    assert (stats.snapshot().received, stats.snapshot().highest_sequence) == (11, 10)
    assert not stats.update(5000, 0, 1.04, timed=True)
    assert stats.update(5001, 160, 1.06, timed=True)  # the sender renumbered: start over
    snapshot = stats.snapshot()
    assert (snapshot.received, snapshot.expected, snapshot.highest_sequence) == (1, 1, 5001)


def test_jitter_of_a_perfectly_paced_stream_is_zero() -> None:
    stats = ReceptionStats(PEER, 0)
    _feed(stats, list(range(200)))

    assert stats.snapshot().jitter == pytest.approx(0.0, abs=1e-6)
    assert stats.report_block().jitter == 0


def test_jitter_follows_the_rfc_estimator_for_known_arrival_offsets() -> None:
    stats = ReceptionStats(PEER, 0)
    late_samples = [0, 8, 0, 16]  # each packet's arrival, after its 20 ms slot, in 1/8000 s
    for n, late in enumerate(late_samples):
        stats.update(n, 160 * n, 0.02 * n + late / 8000, timed=True)

    # J += (|D| - J) / 16 with D = 8, -8, 16: J = 0.5, then 0.96875, then 1.908203125
    assert stats.snapshot().jitter == pytest.approx(1.908203125)
    assert stats.report_block().jitter == 1


def test_untimed_packets_leave_the_jitter_alone() -> None:
    stats = ReceptionStats(PEER, 0)
    for n in range(5):  # one key press: the same timestamp, 50 ms apart
        stats.update(n, 0, 0.05 * n, timed=False)

    assert stats.snapshot().jitter == 0.0
    assert stats.snapshot().received == 5


def test_jitter_follows_the_timestamp_across_its_32_bit_wrap() -> None:
    stats = ReceptionStats(PEER, 0)
    for n in range(4):
        stats.update(n, (2**32 - 320 + 160 * n) % 2**32, 0.02 * n, timed=True)

    assert stats.snapshot().jitter == pytest.approx(0.0, abs=1e-6)


# --- The report exchange


def _rtp(sequence: int, ssrc: int = PEER) -> RtpPacket:
    return RtpPacket(0, sequence, 160 * sequence, ssrc, b"\xff" * 160)


def _exchange() -> ReportExchange:
    return ReportExchange(SSRC, CNAME, wall_offset_s=1_700_000_000.0)


def test_our_compound_is_a_receiver_report_until_we_send_then_a_sender_report() -> None:
    exchange = _exchange()

    quiet = parse_rtcp(exchange.compound(1.0, packet_count=0, octet_count=0, rtp_timestamp=0))
    talking = parse_rtcp(
        exchange.compound(2.0, packet_count=50, octet_count=8000, rtp_timestamp=8000)
    )
    again = parse_rtcp(
        exchange.compound(3.0, packet_count=50, octet_count=8000, rtp_timestamp=16000)
    )

    assert quiet == (ReceiverReport(SSRC), SourceDescription((SdesChunk.with_cname(SSRC, CNAME),)))
    sender = talking[0]
    assert isinstance(sender, SenderReport)
    assert (sender.packet_count, sender.octet_count, sender.rtp_timestamp) == (50, 8000, 8000)
    assert sender.ntp_timestamp == ntp_timestamp(1_700_000_002.0)
    assert isinstance(again[0], ReceiverReport)


def test_our_block_echoes_the_peers_last_sender_report_and_the_delay_since() -> None:
    exchange = _exchange()
    exchange.received_rtp(_rtp(7), 10.0, timed=True)
    peer_sr = SenderReport(PEER, 0x1234_5678_9ABC_DEF0, 0, 1, 160)
    exchange.received_rtcp([peer_sr], 10.0)

    report, _ = parse_rtcp(exchange.compound(10.5, packet_count=0, octet_count=0, rtp_timestamp=0))

    assert isinstance(report, ReceiverReport)
    [block] = report.reports
    assert (block.ssrc, block.highest_sequence, block.cumulative_lost) == (PEER, 7, 0)
    assert block.lsr == 0x5678_9ABC
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s


def test_a_sender_report_of_another_source_gives_no_lsr() -> None:
    exchange = _exchange()
    exchange.received_rtp(_rtp(1), 1.0, timed=True)
    exchange.received_rtcp([SenderReport(PEER + 1, 1 << 40, 0, 1, 160)], 1.0)

    report, _ = parse_rtcp(exchange.compound(2.0, packet_count=0, octet_count=0, rtp_timestamp=0))

    assert isinstance(report, ReceiverReport)
    assert (report.reports[0].lsr, report.reports[0].dlsr) == (0, 0)


def test_the_peers_block_about_us_gives_loss_jitter_and_round_trip() -> None:
    exchange = _exchange()
    ours = parse_rtcp(exchange.compound(100.0, packet_count=5, octet_count=800, rtp_timestamp=0))
    assert isinstance(ours[0], SenderReport)
    lsr = ntp_short(ours[0].ntp_timestamp)
    about_us = ReportBlock(SSRC, 64, 7, 70_000, 80, lsr=lsr, dlsr=16384)  # held 0.25 s
    about_someone_else = ReportBlock(SSRC + 1, 255, 99, 1, 1)

    goodbyes = exchange.received_rtcp(
        [ReceiverReport(PEER, (about_someone_else, about_us)), Goodbye((PEER,))], 100.4
    )

    report = exchange.remote_report
    assert report is not None and goodbyes == 1
    assert (report.fraction_lost, report.cumulative_lost, report.highest_sequence) == (
        0.25,
        7,
        70_000,
    )
    assert report.jitter_ms == 10.0  # 80 units of 1/8000 s
    assert report.round_trip_s == pytest.approx(0.15, abs=3 / 65536)
    assert report.received_at == 100.4


def test_a_new_ssrc_starts_the_reception_over() -> None:
    exchange = _exchange()
    for sequence in (1, 2, 4):
        exchange.received_rtp(_rtp(sequence), 0.0, timed=True)
    assert exchange.reception is not None and exchange.reception.cumulative_lost == 1

    exchange.received_rtp(_rtp(900, ssrc=PEER + 1), 1.0, timed=True)

    reception = exchange.reception
    assert reception is not None
    assert (reception.ssrc, reception.received, reception.cumulative_lost) == (PEER + 1, 1, 0)
