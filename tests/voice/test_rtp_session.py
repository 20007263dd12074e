"""The RTP session over real UDP on loopback, against a small peer socket of the test's own
(for RTCP, a pair of them: the peer's RTP port and the RTCP port above it), or another session."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from tests.voice.test_rtp_packet import capture_udp_payloads, sipp_capture
from tests.voice.waiting import eventually
from voice import audio
from voice.errors import RtpPortsExhausted
from voice.rtp.events import DtmfDetector, DtmfDigit, dtmf_packets, parse_telephone_event
from voice.rtp.packet import RtpPacket, parse_rtp, serialize_rtp
from voice.rtp.playback import FRAME_BYTES
from voice.rtp.rtcp import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    ntp_short,
    parse_rtcp,
    serialize_rtcp,
    short_units,
)
from voice.rtp.session import RECEIVE_FILL_AFTER_S, G711Codec, RtpSession

LOOPBACK = "127.0.0.1"
PORT_MIN = 42000
PORT_MAX = 42998
PT_EVENT = 101
PEER_SSRC = 0x0BADCAFE
RECV_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Received:
    packet: RtpPacket
    source: tuple[str, int]
    at: float


class Peer(asyncio.DatagramProtocol):
    """The far end: a plain UDP socket that records what arrives and sends what it is told."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        self.received.put_nowait(Received(parse_rtp(data), (addr[0], addr[1]), now))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def recv(self) -> Received:
        return await asyncio.wait_for(self.received.get(), RECV_TIMEOUT_S)

    async def recv_many(self, count: int) -> list[Received]:
        return [await self.recv() for _ in range(count)]

    def forget(self) -> None:
        while not self.received.empty():
            self.received.get_nowait()


async def _open_peer() -> Peer:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=(LOOPBACK, 0))
    peer.transport = transport
    return peer


@pytest.fixture(autouse=True)
async def no_leaked_clock_tasks() -> AsyncIterator[None]:
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t.get_name() == "rtp-clock" and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, "an RtpSession was not closed"


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    peer = await _open_peer()
    yield peer
    assert peer.transport is not None
    peer.transport.close()


@contextlib.asynccontextmanager
async def _session(
    remote: tuple[str, int] | None, codec: G711Codec = G711Codec.PCMU
) -> AsyncIterator[RtpSession]:
    session = await RtpSession.open(
        rtp_port_min=PORT_MIN, rtp_port_max=PORT_MAX, host=LOOPBACK, remote=remote, codec=codec
    )
    try:
        yield session
    finally:
        await session.close()


@pytest.fixture
async def session(peer: Peer) -> AsyncIterator[RtpSession]:
    async with _session(peer.address) as session:
        yield session


def _tone(seconds: float, freq_hz: float = 440.0) -> bytes:
    t = np.arange(int(audio.TELEPHONE_RATE_HZ * seconds)) / audio.TELEPHONE_RATE_HZ
    samples: np.ndarray = np.rint(8000 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2")
    return samples.tobytes()


def _audio_packet(sequence: int, payload: bytes, pt: int = 0) -> bytes:
    return serialize_rtp(
        RtpPacket(pt, sequence % 65536, (160 * sequence) % 2**32, PEER_SSRC, payload)
    )


async def _next_audio(session: RtpSession) -> bytes:
    return await asyncio.wait_for(session.audio.get(), RECV_TIMEOUT_S)


def _is_silence(received: Received, codec: G711Codec = G711Codec.PCMU) -> bool:
    return received.packet.payload == codec.encode(bytes(FRAME_BYTES))


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, port))
    return sock


@contextlib.contextmanager
def _busy_ports(*offsets: int) -> Iterator[int]:
    """Find an even base port whose base+offsets (and every port up to the RTP/RTCP pair after
    them) are free; hold base+offsets."""
    for base in range(43000, 44000, 8):
        probes: list[socket.socket] = []
        try:
            for k in range(max(offsets) + 4):
                probes.append(_bind(base + k))
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
        held = [_bind(base + k) for k in offsets]
        try:
            yield base
        finally:
            for sock in held:
                sock.close()
        return
    pytest.fail("no free port block found in 43000..44000")


# --- Ports


async def test_open_binds_a_free_even_port_skipping_busy_ones() -> None:
    with _busy_ports(0, 4) as base:
        session = await RtpSession.open(
            rtp_port_min=base, rtp_port_max=base + 4, host=LOOPBACK, remote=None
        )
        try:
            assert session.local_address == (LOOPBACK, base + 2)
        finally:
            await session.close()


async def test_open_skips_an_even_port_whose_rtcp_port_is_busy() -> None:
    with _busy_ports(1) as base:
        for _ in range(8):  # the search starts at a random port: most runs try base first
            session = await RtpSession.open(
                rtp_port_min=base, rtp_port_max=base + 2, host=LOOPBACK, remote=None
            )
            try:
                assert session.local_address == (LOOPBACK, base + 2)
            finally:
                await session.close()
            _bind(base).close()  # an RTP port bound while its RTCP port was busy is given back


async def test_open_raises_retryable_error_when_every_port_is_busy() -> None:
    with _busy_ports(0, 2) as base, pytest.raises(RtpPortsExhausted) as caught:
        await RtpSession.open(rtp_port_min=base, rtp_port_max=base + 3, host=LOOPBACK)

    assert caught.value.retryable


@pytest.mark.parametrize(("low", "high"), [(42001, 42010), (42010, 42000), (0, 10), (65534, 65536)])
async def test_open_rejects_bad_port_range(low: int, high: int) -> None:
    with pytest.raises(ValueError, match=r"rtp_port_min\.\.rtp_port_max"):
        await RtpSession.open(rtp_port_min=low, rtp_port_max=high, host=LOOPBACK)


async def test_open_rejects_host_name_as_remote() -> None:
    with pytest.raises(ValueError, match="must be an IP literal"):
        await RtpSession.open(
            rtp_port_min=PORT_MIN, rtp_port_max=PORT_MAX, remote=("localhost", 4000)
        )


# --- Sending


async def test_sender_paces_20ms_frames_with_consecutive_sequence_and_timestamps(
    peer: Peer, session: RtpSession
) -> None:
    got = await peer.recv_many(51)

    packets = [r.packet for r in got]
    assert {p.ssrc for p in packets} == {session.ssrc}
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(packets))
    assert all((b.timestamp - a.timestamp) % 2**32 == 160 for a, b in itertools.pairwise(packets))
    # 50 intervals of 20 ms: about 1 s; the bounds are wide for a busy 2-core machine.
    assert 0.8 < got[-1].at - got[0].at < 1.5


@pytest.mark.parametrize("codec", [G711Codec.PCMU, G711Codec.PCMA])
async def test_sender_sends_encoded_silence_when_nothing_plays(
    peer: Peer, codec: G711Codec
) -> None:
    async with _session(peer.address, codec):
        got = await peer.recv_many(5)

    assert {r.packet.payload_type for r in got} == {codec.value}
    expected = {G711Codec.PCMU: b"\xff" * 160, G711Codec.PCMA: b"\xd5" * 160}[codec]
    assert {r.packet.payload for r in got} == {expected}
    assert not any(r.packet.marker for r in got)


async def test_playback_sends_the_audio_with_a_marker_on_the_first_frame(
    peer: Peer, session: RtpSession
) -> None:
    clip = _tone(0.1) + _tone(0.005)  # 5.25 frames: the last one padded with silence
    playback = session.play(clip)

    assert await asyncio.wait_for(playback.wait(), RECV_TIMEOUT_S)

    got = [r for r in await peer.recv_many(25)]
    start = next(i for i, r in enumerate(got) if not _is_silence(r))
    spoken = got[start : start + 6]
    assert [r.packet.marker for r in spoken] == [True] + [False] * 5
    expected = audio.ulaw_encode(clip.ljust(6 * FRAME_BYTES, b"\x00"))
    assert b"".join(r.packet.payload for r in spoken) == expected
    assert _is_silence(got[start + 6])
    assert playback.completed
    assert playback.sent_ms == 120
    assert playback.first_packet_sent_at is not None
    assert spoken[0].at - playback.first_packet_sent_at < 0.1


async def test_playbacks_queue_one_after_the_other(peer: Peer, session: RtpSession) -> None:
    clips = [_tone(0.06, 300), _tone(0.06, 600)]
    first, second = (session.play(clip) for clip in clips)

    assert await asyncio.wait_for(second.wait(), RECV_TIMEOUT_S)

    assert first.done and first.completed
    assert first.first_packet_sent_at is not None
    assert second.first_packet_sent_at is not None
    assert second.first_packet_sent_at > first.first_packet_sent_at
    got = await peer.recv_many(20)
    start = next(i for i, r in enumerate(got) if not _is_silence(r))
    spoken = got[start : start + 6]
    assert b"".join(r.packet.payload for r in spoken) == audio.ulaw_encode(b"".join(clips))
    assert [r.packet.marker for r in spoken] == [True] + [False] * 5  # one talkspurt


async def test_stop_playback_silences_the_very_next_frame(peer: Peer, session: RtpSession) -> None:
    first_sequence = (await peer.recv()).packet.sequence
    sent_before_play = session.stats.sent
    playback = session.play(_tone(2.0))
    while _is_silence(await peer.recv()):
        pass
    await peer.recv_many(3)

    session.stop_playback()
    sent_at_stop = session.stats.sent

    assert await asyncio.wait_for(playback.wait(), 0.001) is False
    assert not session.playing
    later = [
        r
        for r in await peer.recv_many(60)
        if (r.packet.sequence - first_sequence) % 65536 >= sent_at_stop
    ]
    assert len(later) >= 10
    assert all(_is_silence(r) for r in later)
    assert sent_before_play < sent_at_stop
    assert playback.sent_ms < 2000


async def test_on_hold_nothing_is_sent_and_the_prompt_goes_on_where_it_stopped(
    peer: Peer, session: RtpSession
) -> None:
    clip = _tone(0.2, 300) + _tone(0.2, 600)  # 20 frames
    playback = session.play(clip)
    while _is_silence(first := await peer.recv()):
        pass
    await peer.recv_many(2)  # three frames of the prompt have arrived
    session.sending = False
    sent_at_hold = session.stats.sent
    await asyncio.sleep(0.3)  # 15 send slots
    peer.forget()
    assert session.stats.sent - sent_at_hold <= 1, "sent while on hold"  # one in flight
    assert session.stats.held_frames >= 10
    assert not playback.done

    session.sending = True
    assert await asyncio.wait_for(playback.wait(), RECV_TIMEOUT_S)
    resumed = [r for r in await peer.recv_many(22) if not _is_silence(r)]
    frames_before = (resumed[0].packet.sequence - first.packet.sequence) % 65536
    spoken = b"".join(r.packet.payload for r in resumed[: 20 - frames_before])
    assert spoken == audio.ulaw_encode(clip[frames_before * FRAME_BYTES :]), "not where it stopped"
    assert resumed[0].packet.marker, "the prompt goes on in a new talkspurt"
    gap = (resumed[0].packet.timestamp - first.packet.timestamp) % 2**32
    assert gap >= (frames_before + 10) * 160, "the timestamps show the pause"


async def test_play_rejects_odd_byte_count(session: RtpSession) -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        session.play(b"\x00\x01\x02")


async def test_send_dtmf_sends_an_rfc4733_event_in_the_media_stream(
    peer: Peer, session: RtpSession
) -> None:
    session.send_dtmf("5")

    got = await peer.recv_many(20)

    packets = [r.packet for r in got]
    events = [p for p in packets if p.payload_type == PT_EVENT]
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(packets))
    assert events[0].marker
    assert len({p.timestamp for p in events}) == 1
    detector = DtmfDetector()
    digits = [d for i, p in enumerate(events) for d in detector.feed(p, i * 0.02)]
    assert [d.digit for d in digits] == ["5"]
    assert parse_telephone_event(events[-1].payload).duration == 800
    after = packets[packets.index(events[-1]) + 1]
    assert (after.timestamp - events[0].timestamp) % 2**32 == 160 * len(events)


async def test_send_dtmf_rejects_a_non_dtmf_character(session: RtpSession) -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        session.send_dtmf("x")


async def test_sender_skips_missed_frames_after_the_loop_stalls(
    peer: Peer, session: RtpSession
) -> None:
    await peer.recv_many(2)
    time.sleep(0.4)  # noqa: ASYNC251 -- the stalled event loop is what this test is about

    got = await peer.recv_many(25)

    packets = [r.packet for r in got]
    steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(packets)]
    jumps = [step for step in steps if step != 160]
    # The timestamp follows the clock across the stall (about 0.4 s = 3200 units, in one jump);
    # the sequence numbers stay consecutive: nothing was lost, there was nothing to send.
    assert len(jumps) == 1
    assert 0.3 * 8000 < jumps[0] < 0.6 * 8000
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(packets))
    assert session.stats.skipped_frames >= 10
    # No burst of stale frames after it: arrivals keep the 20 ms pace.
    after = got[steps.index(jumps[0]) + 1 :]
    assert after[-1].at - after[0].at > 0.6 * 0.02 * (len(after) - 1)


# --- Receiving


async def test_received_audio_is_decoded_in_sequence_order(peer: Peer, session: RtpSession) -> None:
    frames = {n: bytes([n]) * 160 for n in (1, 2, 3)}
    for n in (1, 3, 2):
        peer.send(_audio_packet(n, frames[n]), session.local_address)

    decoded = [await _next_audio(session) for _ in range(3)]

    assert decoded == [audio.ulaw_decode(frames[n]) for n in (1, 2, 3)]


async def test_received_pcma_is_decoded_with_the_alaw_table(peer: Peer) -> None:
    async with _session(peer.address, G711Codec.PCMA) as session:
        peer.send(_audio_packet(1, b"\xaa" * 160, pt=8), session.local_address)

        assert await _next_audio(session) == audio.alaw_decode(b"\xaa" * 160)


async def test_lost_packet_is_delivered_as_silence_of_its_length(
    peer: Peer, session: RtpSession
) -> None:
    for n in (1, 3, 4, 5):
        peer.send(_audio_packet(n, b"\x80" * 80), session.local_address)

    decoded = [await _next_audio(session) for _ in range(5)]

    loud = audio.ulaw_decode(b"\x80" * 80)
    assert decoded == [loud, bytes(160), loud, loud, loud]
    assert session.jitter_stats.lost == 1


async def test_silence_is_delivered_while_the_peer_sends_nothing(
    peer: Peer, session: RtpSession
) -> None:
    peer.send(_audio_packet(1, b"\x80" * 160), session.local_address)
    assert await _next_audio(session) == audio.ulaw_decode(b"\x80" * 160)
    loop = asyncio.get_running_loop()
    started = loop.time()

    fill = [await _next_audio(session) for _ in range(5)]

    assert fill == [bytes(FRAME_BYTES)] * 5
    assert loop.time() - started >= RECEIVE_FILL_AFTER_S


async def test_dtmf_packets_in_become_digits_out(peer: Peer, session: RtpSession) -> None:
    sequence = 0
    for i, digit in enumerate("12#"):
        packets = dtmf_packets(
            digit, ssrc=PEER_SSRC, sequence=sequence, timestamp=8000 * i, payload_type=PT_EVENT
        )
        sequence += len(packets)
        for packet in packets:
            peer.send(serialize_rtp(packet), session.local_address)

    digits = [await asyncio.wait_for(session.dtmf.get(), RECV_TIMEOUT_S) for _ in range(3)]

    assert digits == [DtmfDigit("1", 100), DtmfDigit("2", 100), DtmfDigit("#", 100)]
    await asyncio.sleep(0.1)
    assert session.dtmf.empty()


async def test_sipp_dtmf_capture_replayed_over_udp_gives_its_digit_once(
    peer: Peer, session: RtpSession
) -> None:
    for datagram in capture_udp_payloads(sipp_capture("dtmf_2833_1.pcap")):
        peer.send(datagram, session.local_address)
        await asyncio.sleep(0.005)

    digit = await asyncio.wait_for(session.dtmf.get(), RECV_TIMEOUT_S)

    assert digit.digit == "1"
    await asyncio.sleep(0.6)  # past the detector's end timeout: no second report
    assert session.dtmf.empty()


async def test_junk_is_counted_and_dropped_and_the_session_keeps_working(
    peer: Peer, session: RtpSession
) -> None:
    target = session.local_address
    peer.send(b"junk", target)  # shorter than a header
    peer.send(bytes(12), target)  # version 0
    peer.send(_audio_packet(1, b"\x00" * 20, pt=18), target)  # G.729: not negotiated
    peer.send(_audio_packet(2, b"\x01\x02\x03", pt=PT_EVENT), target)  # 3-byte event payload
    peer.send(_audio_packet(3, b"\x80" * 160), target)

    assert await _next_audio(session) == audio.ulaw_decode(b"\x80" * 160)
    assert session.stats.malformed == 3
    assert session.stats.unexpected_payload_type == 1
    assert session.stats.received == 5
    peer.forget()
    assert len(await peer.recv_many(3)) == 3  # still sending


async def test_sender_latches_to_the_first_valid_packets_source(
    peer: Peer, session: RtpSession
) -> None:
    # ``peer`` is the SDP address; the real media arrives from another socket (a NAT, say).
    real = await _open_peer()
    try:
        await peer.recv()
        real.send(b"junk", session.local_address)  # not valid: must not latch
        await asyncio.sleep(0.05)
        assert not session.latched
        real.send(_audio_packet(1, b"\xff" * 160), session.local_address)
        await asyncio.wait_for(real.recv(), RECV_TIMEOUT_S)
        peer.forget()

        await real.recv_many(5)

        assert session.remote_address == real.address
        assert peer.received.empty()
        # Now the SDP address is a stranger: its packets are dropped and counted.
        await _next_audio(session)
        peer.send(_audio_packet(2, b"\x80" * 160), session.local_address)
        await asyncio.sleep(0.05)
        assert session.stats.foreign_source == 1
        delivered = []
        while not session.audio.empty():
            delivered.append(session.audio.get_nowait())
        assert audio.ulaw_decode(b"\x80" * 160) not in delivered
    finally:
        assert real.transport is not None
        real.transport.close()


async def test_set_remote_moves_the_stream_and_allows_a_new_latch(
    peer: Peer, session: RtpSession
) -> None:
    other = await _open_peer()
    try:
        peer.send(_audio_packet(1, b"\xff" * 160), session.local_address)
        await _next_audio(session)

        session.set_remote(other.address)

        await asyncio.wait_for(other.recv(), RECV_TIMEOUT_S)
        assert not session.latched
    finally:
        assert other.transport is not None
        other.transport.close()


# --- Lifecycle


async def test_close_ends_tasks_playbacks_and_frees_the_port(peer: Peer) -> None:
    session = await RtpSession.open(
        rtp_port_min=PORT_MIN, rtp_port_max=PORT_MAX, host=LOOPBACK, remote=peer.address
    )
    port = session.local_address[1]
    playback = session.play(_tone(1.0))
    await peer.recv()

    await session.close()

    assert not [t for t in asyncio.all_tasks() if t.get_name() == "rtp-clock"]
    assert playback.done and not playback.completed
    with pytest.raises(RuntimeError, match="closed"):
        session.play(_tone(0.02))
    _bind(port).close()  # the port is free again
    await session.close()  # closing twice is harmless


async def test_session_without_remote_sends_nothing_until_one_is_set(peer: Peer) -> None:
    async with _session(None) as session:
        await asyncio.sleep(0.1)
        assert session.stats.sent == 0
        session.set_remote(peer.address)

        received = await peer.recv()

    assert received.packet.ssrc == session.ssrc
    assert math.isfinite(received.at)


async def test_dtmf_press_whose_end_packets_are_lost_is_reported_after_the_timeout(
    peer: Peer, session: RtpSession
) -> None:
    packets = dtmf_packets("7", ssrc=PEER_SSRC, sequence=0, timestamp=0, payload_type=PT_EVENT)
    for packet in packets[:-3]:  # the three end packets never arrive
        peer.send(serialize_rtp(packet), session.local_address)

    digit = await asyncio.wait_for(session.dtmf.get(), RECV_TIMEOUT_S)

    assert digit.digit == "7"


async def test_audio_queue_keeps_the_newest_frames_when_nobody_reads(
    peer: Peer, session: RtpSession
) -> None:
    for n in range(60):
        peer.send(_audio_packet(n, bytes([n]) * 160), session.local_address)
    await asyncio.sleep(0.2)  # loopback delivers in well under a millisecond per datagram
    assert session.stats.received == 60

    frames = [session.audio.get_nowait() for _ in range(session.audio.qsize())]

    spoken = [f for f in frames if f != bytes(FRAME_BYTES)]  # without the quiet-peer fill
    assert session.stats.audio_dropped >= 10
    assert spoken[-1] == audio.ulaw_decode(bytes([59]) * 160)
    assert audio.ulaw_decode(bytes([0]) * 160) not in spoken


async def test_session_keeps_sending_when_the_peer_port_is_closed(peer: Peer) -> None:
    closed = await _open_peer()
    address = closed.address
    assert closed.transport is not None
    closed.transport.close()

    async with _session(address) as session:
        await asyncio.sleep(0.2)
        session.set_remote(peer.address)

        assert (await peer.recv()).packet.ssrc == session.ssrc
        assert session.stats.sent >= 5


async def test_send_errors_are_counted_not_raised() -> None:
    # Broadcast without SO_BROADCAST: every sendto fails with EACCES, locally.
    async with _session(("255.255.255.255", 4000)) as session:
        await asyncio.sleep(0.1)

        assert session.stats.send_errors >= 3
        session.play(_tone(0.04))
        await asyncio.sleep(0.1)
        assert session.stats.send_errors >= 5


async def test_a_dynamic_audio_payload_type_is_sent_and_accepted(peer: Peer) -> None:
    session = await RtpSession.open(
        rtp_port_min=PORT_MIN,
        rtp_port_max=PORT_MAX,
        host=LOOPBACK,
        remote=peer.address,
        codec=G711Codec.PCMU,
        payload_type=96,  # a=rtpmap:96 PCMU/8000
    )
    try:
        assert (await peer.recv()).packet.payload_type == 96
        peer.send(_audio_packet(1, b"\x80" * 160, pt=96), session.local_address)
        peer.send(_audio_packet(2, b"\x80" * 160, pt=0), session.local_address)  # not negotiated
        assert await _next_audio(session) == audio.ulaw_decode(b"\x80" * 160)
        await asyncio.sleep(0.05)
        assert session.stats.unexpected_payload_type == 1
    finally:
        await session.close()


@pytest.mark.parametrize(("allowed", "latches"), [("127.0.0.2", False), (LOOPBACK, True)])
async def test_only_latch_hosts_can_take_the_media(peer: Peer, allowed: str, latches: bool) -> None:
    session = await RtpSession.open(
        rtp_port_min=PORT_MIN,
        rtp_port_max=PORT_MAX,
        host=LOOPBACK,
        remote=("127.0.0.2", 9),
        latch_hosts=frozenset({allowed}),
    )
    try:
        peer.send(_audio_packet(1, b"\x80" * 160), session.local_address)  # from 127.0.0.1
        await asyncio.sleep(0.1)
        assert session.latched is latches
        assert session.stats.foreign_source == (0 if latches else 1)
        assert session.remote_address == (peer.address if latches else ("127.0.0.2", 9))
        assert session.audio.empty() is not latches
    finally:
        await session.close()


# --- Control (RTCP)

RTCP_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True)
class ReceivedRtcp:
    packets: tuple[RtcpPacket, ...]
    source: tuple[str, int]
    at: float

    def blocks_about(self, ssrc: int) -> list[ReportBlock]:
        return [
            block
            for packet in self.packets
            if isinstance(packet, SenderReport | ReceiverReport)
            for block in packet.reports
            if block.ssrc == ssrc
        ]


class ControlPeer(asyncio.DatagramProtocol):
    """The far end's RTCP socket: it keeps what arrives, parsed only when the test reads it, so
    that a malformed report of ours fails the test where it is read."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int], float]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        self.received.put_nowait((data, (addr[0], addr[1]), now))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, packets: list[RtcpPacket], to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(serialize_rtcp(packets), to)

    async def recv(self, within_s: float = RECV_TIMEOUT_S) -> ReceivedRtcp:
        data, source, at = await asyncio.wait_for(self.received.get(), within_s)
        return ReceivedRtcp(parse_rtcp(data), source, at)

    async def recv_sender_report(self) -> tuple[SenderReport, ReceivedRtcp]:
        while True:
            received = await self.recv()
            if isinstance(received.packets[0], SenderReport):
                return received.packets[0], received


@dataclass
class PeerPair:
    """A peer with an even RTP port and its RTCP socket on the port above, as RFC 3550 has it."""

    rtp: Peer
    rtcp: ControlPeer

    def close(self) -> None:
        for transport in (self.rtp.transport, self.rtcp.transport):
            assert transport is not None
            transport.close()


def _free_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(100):
        rtp = _bind(0)
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            try:
                return rtp, _bind(port + 1)
            except OSError:
                pass
        rtp.close()
    pytest.fail("no free even/odd UDP port pair on loopback")


async def _open_control_peer(sock: socket.socket | None = None) -> ControlPeer:
    loop = asyncio.get_running_loop()
    if sock is None:
        sock = _bind(0)
    transport, control = await loop.create_datagram_endpoint(ControlPeer, sock=sock)
    control.transport = transport
    return control


@pytest.fixture
async def pair() -> AsyncIterator[PeerPair]:
    rtp_sock, rtcp_sock = _free_pair()
    loop = asyncio.get_running_loop()
    rtp_transport, rtp = await loop.create_datagram_endpoint(Peer, sock=rtp_sock)
    rtp.transport = rtp_transport
    peer = PeerPair(rtp, await _open_control_peer(rtcp_sock))
    yield peer
    peer.close()


@contextlib.asynccontextmanager
async def _reporting_session(remote: tuple[str, int] | None) -> AsyncIterator[RtpSession]:
    session = await RtpSession.open(
        rtp_port_min=PORT_MIN,
        rtp_port_max=PORT_MAX,
        host=LOOPBACK,
        remote=remote,
        rtcp_interval_s=RTCP_INTERVAL_S,
    )
    try:
        yield session
    finally:
        await session.close()


def _rtcp_address(session: RtpSession) -> tuple[str, int]:
    host, port = session.local_address
    return host, port + 1


async def test_two_sessions_report_to_each_other_and_measure_the_round_trip() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with _reporting_session(None) as a, _reporting_session(a.local_address) as b:
        a.set_remote(b.local_address)

        def both_measured() -> bool:
            reports = (a.remote_report, b.remote_report)
            return all(r is not None and r.round_trip_s is not None for r in reports)

        await eventually("both round trips measured", both_measured)
        elapsed = loop.time() - started

        for us, them in ((a, b), (b, a)):
            report, sender = us.remote_report, us.remote_sender_report
            assert report is not None and sender is not None
            assert sender.ssrc == them.ssrc
            assert 0 < sender.packet_count <= them.stats.sent
            assert (report.cumulative_lost, report.fraction_lost) == (0, 0.0)
            assert report.round_trip_s is not None and 0 <= report.round_trip_s < elapsed
            assert us.stats.rtcp_received >= 1 and us.stats.rtcp_malformed == 0
            assert us.reception is not None and us.reception.ssrc == them.ssrc

        await a.close()  # its last report carries the final counts, with a BYE
        await eventually("a's BYE seen", lambda: b.stats.rtcp_byes_received == 1)

        final = b.remote_sender_report
        assert final is not None
        assert final.packet_count == a.stats.sent
        assert final.octet_count == a.stats.sent * 160  # silence frames: 160 bytes each
        assert b.reception is not None and b.reception.received == a.stats.sent


async def test_sender_report_counts_and_timestamps_match_the_rtp_sent(pair: PeerPair) -> None:
    async with _reporting_session(pair.rtp.address) as session:
        first = await pair.rtp.recv()
        report, received = await pair.rtcp.recv_sender_report()
        await asyncio.sleep(0.1)  # every packet the report counts has surely arrived
        got = [first, *[pair.rtp.received.get_nowait() for _ in range(pair.rtp.received.qsize())]]

    assert report.ssrc == session.ssrc
    assert received.source == _rtcp_address(session)
    by_offset = {(r.packet.sequence - first.packet.sequence) % 65536: r.packet for r in got}
    last_counted = by_offset[report.packet_count - 1]
    assert report.octet_count == 160 * report.packet_count
    # The report's RTP timestamp is the media clock when it was written, just after the last
    # packet it counts was sent: the same clock, in the same units (a second is 8000).
    assert 0 <= (report.rtp_timestamp - last_counted.timestamp) % 2**32 < 8000
    wall_clock_s = (report.ntp_timestamp >> 32) - 2_208_988_800
    assert abs(wall_clock_s - time.time()) < 60
    [description] = [p for p in received.packets if isinstance(p, SourceDescription)]
    [chunk] = description.chunks
    assert chunk.ssrc == session.ssrc and chunk.cname is not None and len(chunk.cname) == 16


async def test_two_sessions_have_different_cnames(pair: PeerPair) -> None:
    cnames = []
    for _ in range(2):
        async with _reporting_session(pair.rtp.address):
            report = await pair.rtcp.recv()
        [description] = [p for p in report.packets if isinstance(p, SourceDescription)]
        cnames.append(description.chunks[0].cname)
        while not pair.rtcp.received.empty():
            pair.rtcp.received.get_nowait()

    assert cnames[0] != cnames[1]


async def test_our_receiver_report_shows_the_packets_the_peer_never_sent(pair: PeerPair) -> None:
    missing = {5, 11, 12, 30}
    async with _reporting_session(pair.rtp.address) as session:
        for n in range(40):
            if n not in missing:
                pair.rtp.send(_audio_packet(1000 + n, b"\xff" * 160), session.local_address)
        blocks: list[ReportBlock] = []
        while not blocks or blocks[-1].highest_sequence != 1039:
            blocks += (await pair.rtcp.recv()).blocks_about(PEER_SSRC)

        assert session.reception is not None
        assert (session.reception.expected, session.reception.received) == (40, 36)

    assert blocks[-1].cumulative_lost == len(missing)
    # Each block's fraction is its own interval's loss (RFC 3550 A.3), as the peer works it out
    # from the extended highest sequence numbers and cumulative losses of successive blocks.
    expected_before, lost_before = 0, 0
    for block in blocks:
        expected_now = block.highest_sequence - 1000 + 1
        expected_interval = expected_now - expected_before
        lost_interval = block.cumulative_lost - lost_before
        fraction = lost_interval * 256 // expected_interval if lost_interval > 0 else 0
        assert block.fraction_lost == fraction, blocks
        expected_before, lost_before = expected_now, block.cumulative_lost
    assert any(block.fraction_lost > 0 for block in blocks)


async def test_the_peers_report_about_us_gives_its_loss_jitter_and_our_round_trip(
    pair: PeerPair,
) -> None:
    hold_s = 0.5
    async with _reporting_session(pair.rtp.address) as session:
        ours, received = await pair.rtcp.recv_sender_report()
        await asyncio.sleep(hold_s)
        block = ReportBlock(
            session.ssrc,
            fraction_lost=64,
            cumulative_lost=7,
            highest_sequence=70_000,
            jitter=80,
            lsr=ntp_short(ours.ntp_timestamp),
            dlsr=short_units(hold_s),
        )
        pair.rtcp.send([ReceiverReport(PEER_SSRC, (block,))], _rtcp_address(session))
        await eventually("the peer's report", lambda: session.remote_report is not None)

    report = session.remote_report
    assert report is not None
    assert (report.fraction_lost, report.cumulative_lost, report.highest_sequence) == (
        0.25,
        7,
        70_000,
    )
    assert report.jitter_ms == 10.0  # 80 units of 1/8000 s
    # The round trip leaves out the time the peer held the report (DLSR): without DLSR it would
    # be at least hold_s. It is at least what the session saw go by, less the hold.
    assert report.round_trip_s is not None and report.round_trip_s < hold_s
    slack = 3 / 65536  # three truncations to 1/65536 s
    assert report.round_trip_s >= report.received_at - received.at - hold_s - slack


async def test_junk_on_the_rtcp_port_is_counted_and_the_session_goes_on(pair: PeerPair) -> None:
    async with _reporting_session(pair.rtp.address) as session:
        target = _rtcp_address(session)
        assert pair.rtcp.transport is not None
        pair.rtcp.transport.sendto(b"junk!", target)  # not whole words
        pair.rtcp.transport.sendto(bytes(8), target)  # version 0
        pair.rtcp.transport.sendto(b"\x80\xc9\x00\x09" + bytes(8), target)  # too short
        pair.rtcp.send([ReceiverReport(PEER_SSRC)], target)

        await eventually("the valid report", lambda: session.stats.rtcp_received == 1)
        assert session.stats.rtcp_malformed == 3
        assert session.stats.rtcp_byes_received == 0
        while not pair.rtcp.received.empty():
            pair.rtcp.received.get_nowait()
        assert isinstance((await pair.rtcp.recv()).packets[0], SenderReport)
        pair.rtp.forget()
        assert len(await pair.rtp.recv_many(3)) == 3  # and the media goes on


async def test_a_bye_that_comes_first_as_baresip_sends_it_is_read(pair: PeerPair) -> None:
    async with _reporting_session(pair.rtp.address) as session:
        bye_first = serialize_rtcp([ReceiverReport(PEER_SSRC), Goodbye((PEER_SSRC,))])[8:]
        assert pair.rtcp.transport is not None
        pair.rtcp.transport.sendto(bye_first, _rtcp_address(session))
        await eventually("the BYE", lambda: session.stats.rtcp_byes_received == 1)
        assert session.stats.rtcp_received == 1 and session.stats.rtcp_malformed == 0


async def test_close_sends_one_bye_compound_the_peer_sees(pair: PeerPair) -> None:
    async with _reporting_session(pair.rtp.address) as session:
        reports = [await pair.rtcp.recv()]
        sent_before = session.stats.rtcp_sent
    while not any(isinstance(p, Goodbye) for p in reports[-1].packets):
        reports.append(await pair.rtcp.recv())  # what was in flight, then the BYE

    report, description, goodbye = reports[-1].packets
    assert isinstance(report, SenderReport | ReceiverReport)
    # An SR unless no RTP went out since the last report, whose SR then has the final count.
    last_sr = [p for r in reports for p in r.packets if isinstance(p, SenderReport)][-1]
    assert last_sr.packet_count == session.stats.sent
    assert isinstance(description, SourceDescription)
    assert description.chunks[0].ssrc == session.ssrc
    assert goodbye == Goodbye((session.ssrc,))
    assert session.stats.rtcp_sent == sent_before + 1
    await asyncio.sleep(0.3)  # longer than the interval: nothing more comes
    assert pair.rtcp.received.empty()


async def test_no_rtcp_is_sent_without_a_remote_not_even_a_bye() -> None:
    async with _reporting_session(None) as session:
        await asyncio.sleep(0.3)
    assert session.stats.rtcp_sent == 0


async def test_rtcp_goes_where_the_peers_rtcp_comes_from(pair: PeerPair) -> None:
    elsewhere = await _open_control_peer()  # the peer's RTCP seen through a NAT, say
    stranger = await _open_control_peer()
    try:
        async with _reporting_session(pair.rtp.address) as session:
            await pair.rtcp.recv()  # before the peer's RTCP: to its RTP port + 1
            elsewhere.send([ReceiverReport(PEER_SSRC)], _rtcp_address(session))
            await eventually("the peer's RTCP", lambda: session.stats.rtcp_received == 1)

            report = await elsewhere.recv()

            assert isinstance(report.packets[0], SenderReport)
            assert report.packets[0].ssrc == session.ssrc
            stranger.send([ReceiverReport(0x5757), Goodbye((0x5757,))], _rtcp_address(session))
            await eventually("the stranger", lambda: session.stats.rtcp_foreign_source == 1)
            assert session.stats.rtcp_byes_received == 0
            assert session.stats.rtcp_received == 1
    finally:
        for control in (elsewhere, stranger):
            assert control.transport is not None
            control.transport.close()


async def test_rtcp_on_the_rtp_port_is_counted_apart_not_as_malformed_rtp(
    peer: Peer, session: RtpSession
) -> None:
    report = SenderReport(PEER_SSRC, 1 << 32, 0, 1, 160)
    description = SourceDescription((SdesChunk.with_cname(PEER_SSRC, "peer"),))
    peer.send(serialize_rtcp([ReceiverReport(PEER_SSRC)]), session.local_address)
    peer.send(serialize_rtcp([report, description]), session.local_address)
    peer.send(_audio_packet(1, b"\x80" * 160), session.local_address)

    await _next_audio(session)

    assert session.stats.rtcp_on_rtp_port == 2
    assert session.stats.malformed == session.stats.unexpected_payload_type == 0
    assert session.stats.rtcp_received == 0
