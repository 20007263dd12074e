"""One call's RTP media: one UDP socket for both directions and a sender paced on an absolute clock.

Receiving. Every datagram is parsed; malformed ones, ones of a payload type that was not
negotiated (the G.711 codec or telephone-event) and, once latched, ones from another source are
counted in ``stats`` and dropped, never raised. Audio goes through the jitter buffer, is decoded
to 8 kHz 16-bit PCM and put on ``audio`` (an ``asyncio.Queue[bytes]``), one item per RTP packet
(usually 20 ms) or a stretch of silence for a lost packet. When the peer sends nothing for
``RECEIVE_FILL_AFTER_S`` (silence suppression, hold) a 20 ms silence frame is put there every
20 ms instead, so that a speech endpointer downstream still sees the silence that ends an
utterance. DTMF key presses become ``DtmfDigit`` items on ``dtmf``. Both queues are bounded: if
the consumer falls behind, the oldest items are dropped and counted, so memory stays bounded.

Sending. A clock task sends one packet every ``PTIME_MS`` at ``start + n * PTIME_MS`` of
``loop.time()``: the queued playback audio (``play``), DTMF events (``send_dtmf``), or encoded
silence when there is nothing to say, which keeps the peer's jitter buffer fed and its NAT
binding and media latch open. The RTP timestamp is derived from ``n``, so it follows the
schedule even when frames had to be skipped after the loop stalled.

Addressing (symmetric RTP, "comedia"). Packets go to the address from the SDP until the first
valid packet from the peer arrives; from then on they go to that packet's source, and packets
from any other source are dropped (a stray or injected stream cannot take the call over).
With ``latch_hosts`` only packets from those IPs can be latched on (RTP bleed: a stranger
spraying the port range cannot take the media before the peer's first packet).
``set_remote`` (a re-INVITE) starts over, and allows the new SDP address.

Control (RTCP, RFC 3550 §6). The port above the RTP port carries RTCP, bound with it. Every
``rtcp_interval_s`` (5 s, randomised to 0.5..1.5 times; the first after half of it) a compound
goes to the peer: a sender report if we sent RTP since the last one (else a receiver report),
with a report block on the peer's stream (``reception``), and an SDES with a random per-session
CNAME; ``close`` sends one more with a BYE. It goes to the RTP peer's port + 1 until the peer's
own RTCP arrives, then to where that came from (symmetric RTCP); like RTP, RTCP from any other
source is then counted and dropped. From the peer's reports the session keeps its last sender
report (``remote_sender_report``: its counts, and the LSR/DLSR of our block) and its block
about our stream, with the round-trip time (``remote_report``). RTCP multiplexed on the RTP
port (RFC 5761) is not negotiated: such packets are counted as ``rtcp_on_rtp_port``. The RTCP
socket, its latching and schedule are ``voice.rtp.control``'s.

Hold. While ``sending`` is false (the peer's SDP says ``sendonly`` or ``inactive``: it put us
on hold, RFC 3264 §5.1) nothing is sent and playback and DTMF wait where they are; the clock
keeps its schedule, so the RTP timestamps on resuming show the pause, and a prompt that goes
on after it starts a new talkspurt (marker bit).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import logging
import secrets
from collections import deque
from dataclasses import replace
from types import TracebackType
from typing import Final, Self, TypeVar

from voice.audio import (
    PTIME_MS,
    SAMPLE_WIDTH_BYTES,
    SAMPLES_PER_FRAME,
    TELEPHONE_RATE_HZ,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from voice.errors import RtpParseError, RtpPortsExhausted
from voice.rtp.control import RtcpChannel
from voice.rtp.events import (
    DEFAULT_DTMF_DURATION_MS,
    DtmfDetector,
    DtmfDigit,
    dtmf_packets,
    event_code,
)
from voice.rtp.jitter import JitterBuffer, JitterStats
from voice.rtp.packet import (
    SEQUENCE_MODULUS,
    TIMESTAMP_MODULUS,
    RtpPacket,
    parse_rtp,
    serialize_rtp,
)
from voice.rtp.playback import FRAME_BYTES, Playback
from voice.rtp.reception import ReceptionSnapshot, RemoteReport
from voice.rtp.rtcp import (
    RTCP_MIN_INTERVAL_S,
    SenderReport,
    looks_like_rtcp,
)
from voice.rtp.udp import RtpProtocol, RtpStats, bind_udp

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

PTIME_S: Final = PTIME_MS / 1000
DEFAULT_TELEPHONE_EVENT_PT: Final = 101
AUDIO_QUEUE_FRAMES: Final = 50  # 1 s of received audio waiting for its consumer
DTMF_QUEUE_DIGITS: Final = 32
RECEIVE_FILL_AFTER_S: Final = 0.1  # peer silent this long: deliver silence frames instead
MAX_CLOCK_LAG_S: Final = 0.1  # a sender later than this skips the missed frames, no burst
DTMF_GAP_FRAMES: Final = 2  # silence between two sent key presses (40 ms)
_MAX_PORT: Final = 65535
_MAX_PAYLOAD_TYPE: Final = 127


class G711Codec(enum.Enum):
    """The negotiated audio codec, by SDP encoding name; the value is its static payload type."""

    PCMU = 0
    PCMA = 8

    def encode(self, pcm: bytes) -> bytes:
        return ulaw_encode(pcm) if self is G711Codec.PCMU else alaw_encode(pcm)

    def decode(self, payload: bytes) -> bytes:
        return ulaw_decode(payload) if self is G711Codec.PCMU else alaw_decode(payload)


def _check_ip_address(address: tuple[str, int]) -> tuple[str, int]:
    try:
        ipaddress.ip_address(address[0])
    except ValueError:
        # A host name would make every sendto resolve it, blocking the loop.
        raise ValueError(f"RTP peer address must be an IP literal, got {address[0]!r}") from None
    if not 0 < address[1] <= _MAX_PORT:
        raise ValueError(f"RTP peer port {address[1]} is outside 1..65535")
    return address[0], address[1]


class RtpSession:
    """The media of one call. Open with ``await RtpSession.open(...)``; ``close()`` when done.

    The session owns its clock task and sockets and releases them in ``close`` (also on leaving
    ``async with``). All methods are called from the event loop thread; the per-packet work
    (parse, G.711, jitter buffer) is microseconds, so it runs inline.
    """

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: RtpProtocol,
        stats: RtpStats,
        *,
        rtcp: tuple[asyncio.DatagramTransport, RtpProtocol],
        remote: tuple[str, int] | None,
        codec: G711Codec,
        payload_type: int,
        telephone_event_pt: int | None,
        latch_hosts: frozenset[str] | None,
        rtcp_interval_s: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._transport = transport
        self._protocol = protocol
        self._codec = codec
        self._payload_type = payload_type
        self._telephone_event_pt = telephone_event_pt
        self._remote = remote
        self._latched_to: tuple[str, int] | None = None
        self._latch_hosts = latch_hosts
        self.stats = stats
        self.audio: asyncio.Queue[bytes] = asyncio.Queue(AUDIO_QUEUE_FRAMES)
        self.dtmf: asyncio.Queue[DtmfDigit] = asyncio.Queue(DTMF_QUEUE_DIGITS)
        # Receiving
        self._jitter = JitterBuffer(clock=loop.time)
        self._detector = DtmfDetector()
        self._last_audio_arrival: float | None = None
        self._concealment_bytes = FRAME_BYTES
        # Sending: random initial values, RFC 3550 §5.1
        self.ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp0 = secrets.randbits(32)
        self._silence = codec.encode(bytes(FRAME_BYTES))
        self._playbacks: deque[Playback] = deque()
        self._talkspurt = False
        self._digits: deque[tuple[str, int]] = deque()
        self._dtmf_out: deque[RtpPacket] = deque()
        self._dtmf_gap = 0
        self._octets_sent = 0
        self.sending = True  # False while the peer holds the call: nothing is sent
        self._clock_start = loop.time()  # the clock task's, once it runs
        self._control = RtcpChannel(
            *rtcp, self.stats, self.ssrc, interval_s=rtcp_interval_s, now=self._clock_start
        )
        self._closed = False
        self._clock_task = loop.create_task(self._run_clock(), name="rtp-clock")
        self._clock_task.add_done_callback(self._clock_ended)
        protocol.on_datagram = self._on_datagram
        self._control.on_datagram(self._on_rtcp)

    @classmethod
    async def open(
        cls,
        *,
        rtp_port_min: int,
        rtp_port_max: int,
        host: str = "0.0.0.0",
        remote: tuple[str, int] | None = None,
        codec: G711Codec = G711Codec.PCMU,
        payload_type: int | None = None,
        telephone_event_pt: int | None = DEFAULT_TELEPHONE_EVENT_PT,
        latch_hosts: frozenset[str] | None = None,
        rtcp_interval_s: float = RTCP_MIN_INTERVAL_S,
    ) -> Self:
        """Bind an even port of ``rtp_port_min..rtp_port_max`` on ``host`` for RTP, the port
        above it for RTCP, and start the clock.

        ``remote`` is the address from the peer's SDP (an IP literal), or ``None`` until it is
        known (``set_remote``). Busy ports are skipped; the search starts at a random even port
        of the range so that concurrent calls rarely collide. ``payload_type`` is the audio
        payload type negotiated in SDP (a dynamic one, say 96 for PCMU), by default the codec's
        static one. ``latch_hosts``, if given, are the only IPs media is accepted and latched
        from (the SDP address and the signalling source): packets from any other are counted
        as ``foreign_source``; ``None`` latches on the first valid packet from anywhere.
        ``rtcp_interval_s`` is the mean time between RTCP reports (RFC 3550's minimum, 5 s, by
        default; tests use less). Raises ``RtpPortsExhausted`` when no even port is free with
        the odd one above it, ``ValueError`` for a bad range, address or interval.
        """
        if rtp_port_min % 2 or not 0 < rtp_port_min <= rtp_port_max <= _MAX_PORT:
            raise ValueError(
                f"rtp_port_min..rtp_port_max must be an even start within 1..65535, "
                f"got {rtp_port_min}..{rtp_port_max}"
            )
        audio_pt = codec.value if payload_type is None else payload_type
        if not 0 <= audio_pt <= _MAX_PAYLOAD_TYPE:
            raise ValueError(f"audio payload type {audio_pt} is outside 0..127")
        if telephone_event_pt is not None and (
            not 0 <= telephone_event_pt <= _MAX_PAYLOAD_TYPE or telephone_event_pt == audio_pt
        ):
            raise ValueError(f"telephone-event payload type {telephone_event_pt} is not usable")
        if not rtcp_interval_s > 0:
            raise ValueError(f"rtcp_interval_s must be positive, got {rtcp_interval_s}")
        if remote is not None:
            remote = _check_ip_address(remote)
        stats = RtpStats()
        ports = list(range(rtp_port_min, rtp_port_max + 1, 2))
        first = secrets.randbelow(len(ports))
        for port in ports[first:] + ports[:first]:
            try:
                transport, protocol = await bind_udp(stats, host, port)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            try:
                rtcp = await bind_udp(stats, host, port + 1)
            except OSError as exc:
                transport.close()
                await protocol.closed
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            return cls(
                transport,
                protocol,
                stats,
                rtcp=rtcp,
                remote=remote,
                codec=codec,
                payload_type=audio_pt,
                telephone_event_pt=telephone_event_pt,
                latch_hosts=latch_hosts,
                rtcp_interval_s=rtcp_interval_s,
            )
        raise RtpPortsExhausted(
            f"no free even RTP port with a free RTCP port above it in "
            f"{rtp_port_min}..{rtp_port_max} on {host}"
        )

    # --- Public interface

    @property
    def local_address(self) -> tuple[str, int]:
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where packets are sent now: the SDP address, or the latched source."""
        return self._remote

    @property
    def latched(self) -> bool:
        return self._latched_to is not None

    @property
    def jitter_stats(self) -> JitterStats:
        return self._jitter.stats

    @property
    def playing(self) -> bool:
        return bool(self._playbacks)

    @property
    def reception(self) -> ReceptionSnapshot | None:
        """Our reception of the peer's current source, or None before its first packet."""
        return self._control.reports.reception

    @property
    def remote_report(self) -> RemoteReport | None:
        """The peer's latest RTCP report block about our stream, or None before one."""
        return self._control.reports.remote_report

    @property
    def remote_sender_report(self) -> SenderReport | None:
        """The peer's latest RTCP sender report, or None before one."""
        return self._control.reports.remote_sender_report

    def set_remote(self, remote: tuple[str, int]) -> None:
        """Send to a new SDP address (re-INVITE) and latch again on the peer's next packet."""
        self._remote = _check_ip_address(remote)
        self._latched_to = None
        self._control.unlatch()
        if self._latch_hosts is not None:
            self._latch_hosts = self._latch_hosts | {self._remote[0]}

    def play(self, pcm8k: bytes) -> Playback:
        """Queue 8 kHz 16-bit PCM after any audio already queued; returns its ``Playback``."""
        self._check_open()
        if len(pcm8k) % SAMPLE_WIDTH_BYTES:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm8k)}")
        playback = Playback(pcm8k)
        if pcm8k:
            self._playbacks.append(playback)
        else:
            playback.finish(completed=True)
        return playback

    def stop_playback(self) -> None:
        """Drop all queued audio now (barge-in): the next packet sent is silence."""
        while self._playbacks:
            self._playbacks.popleft().finish(completed=False)

    def send_dtmf(self, digit: str, duration_ms: int = DEFAULT_DTMF_DURATION_MS) -> None:
        """Queue one RFC 4733 key press; it pauses playback while it is sent."""
        self._check_open()
        event_code(digit)
        if self._telephone_event_pt is None:
            raise ValueError("telephone-event was not negotiated for this call")
        if duration_ms <= 0:
            raise ValueError(f"DTMF duration must be positive, got {duration_ms} ms")
        self._digits.append((digit, duration_ms))

    async def close(self) -> None:
        """Stop the clock, end every playback (not completed) and release the socket."""
        if self._closed:
            return
        self._closed = True
        self.stop_playback()
        self._clock_task.cancel()
        try:
            await self._clock_task
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        finally:
            self._send_report(self._loop.time(), goodbye=True)
            self._transport.close()
            # The protocols call back into the session: without this they form reference
            # cycles, and under call churn the full collections that free them stall the loop.
            self._protocol.on_datagram = None
            await self._protocol.closed
            await self._control.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- Receiving

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self._loop.time()
        self.stats.received += 1
        if looks_like_rtcp(data):
            self.stats.rtcp_on_rtp_port += 1
            return
        try:
            packet = parse_rtp(data)
        except RtpParseError as exc:
            self.stats.malformed += 1
            logger.debug("RTP packet dropped: %s", exc)
            return
        is_audio = packet.payload_type == self._payload_type
        is_event = (
            self._telephone_event_pt is not None and packet.payload_type == self._telephone_event_pt
        )
        if not (is_audio or is_event):
            self.stats.unexpected_payload_type += 1
            return
        source = (addr[0], addr[1])
        latched, hosts = self._latched_to, self._latch_hosts
        if (latched is not None and source != latched) or (
            latched is None and hosts is not None and source[0] not in hosts
        ):
            self.stats.foreign_source += 1
            return
        digits: list[DtmfDigit] = []
        if is_event:
            try:
                digits = self._detector.feed(packet, now)
            except RtpParseError as exc:
                self.stats.malformed += 1
                logger.debug("RTP telephone-event dropped: %s", exc)
                return
        if self._latched_to is None:
            self._latched_to = self._remote = source
            self._control.media_latched(source)
            logger.info("RTP peer latched", extra={"rtp_peer": f"{source[0]}:{source[1]}"})
        self._control.reports.received_rtp(packet, now, timed=is_audio)
        if is_event:
            for digit in digits:
                self._deliver(self.dtmf, digit)
            return
        self._last_audio_arrival = now
        self._jitter.put(packet)
        self._drain_jitter()

    def _drain_jitter(self) -> None:
        while self._jitter.ready:
            packet = self._jitter.get()
            if packet is None:
                self._deliver(self.audio, bytes(self._concealment_bytes))
            elif packet.payload:
                self._concealment_bytes = len(packet.payload) * SAMPLE_WIDTH_BYTES
                self._deliver(self.audio, self._codec.decode(packet.payload))

    def _receive_tick(self, now: float) -> None:
        self._drain_jitter()  # a missing packet may have waited long enough
        digit = self._detector.poll(now)
        if digit is not None:
            self._deliver(self.dtmf, digit)
        last = self._last_audio_arrival
        if last is not None and now - last >= RECEIVE_FILL_AFTER_S and not len(self._jitter):
            self._deliver(self.audio, bytes(FRAME_BYTES))

    def _deliver(self, queue: asyncio.Queue[_T], item: _T) -> None:
        if queue.full():
            queue.get_nowait()
            if queue is self.audio:
                self.stats.audio_dropped += 1
            else:
                self.stats.dtmf_dropped += 1
        queue.put_nowait(item)

    # --- Sending

    async def _run_clock(self) -> None:
        start = self._clock_start = self._loop.time()
        tick = 0
        while True:
            lag = self._loop.time() - (start + tick * PTIME_S)
            if lag > MAX_CLOCK_LAG_S:
                skipped = int(lag / PTIME_S)
                tick += skipped
                self.stats.skipped_frames += skipped
                self._talkspurt = False  # the peer sees a timestamp jump: mark the restart
            # Always yield, even when late, so that received packets are handled between frames.
            await asyncio.sleep(max(0.0, start + tick * PTIME_S - self._loop.time()))
            timestamp = (self._timestamp0 + tick * SAMPLES_PER_FRAME) % TIMESTAMP_MODULUS
            now = self._loop.time()
            self._send_frame(timestamp, now)
            self._receive_tick(now)
            if self._control.report_due(now):
                self._send_report(now)
            tick += 1

    def _send_frame(self, timestamp: int, now: float) -> None:
        if not self.sending:
            self.stats.held_frames += 1
            self._talkspurt = False
            return
        if not self._dtmf_out and not self._dtmf_gap and self._digits:
            digit, duration_ms = self._digits.popleft()
            assert self._telephone_event_pt is not None
            self._dtmf_out.extend(
                dtmf_packets(
                    digit,
                    ssrc=self.ssrc,
                    sequence=0,  # renumbered as each one is sent
                    timestamp=timestamp,
                    payload_type=self._telephone_event_pt,
                    duration_ms=duration_ms,
                )
            )
        if self._dtmf_out:
            self._send(self._dtmf_out.popleft())
            self._talkspurt = False
            if not self._dtmf_out:
                self._dtmf_gap = DTMF_GAP_FRAMES
            return
        if self._dtmf_gap:
            self._dtmf_gap -= 1
        elif self._playbacks:
            playback = self._playbacks[0]
            payload = self._codec.encode(playback.next_frame())
            self._send_media(timestamp, payload, marker=not self._talkspurt)
            self._talkspurt = True
            if playback.first_packet_sent_at is None:
                playback.first_packet_sent_at = now
            if playback.exhausted:
                self._playbacks.popleft().finish(completed=True)
            return
        self._send_media(timestamp, self._silence, marker=False)
        self._talkspurt = False

    def _send_media(self, timestamp: int, payload: bytes, *, marker: bool) -> None:
        self._send(
            RtpPacket(
                payload_type=self._payload_type,
                sequence=0,
                timestamp=timestamp,
                ssrc=self.ssrc,
                payload=payload,
                marker=marker,
            )
        )

    def _send(self, packet: RtpPacket) -> None:
        if self._remote is None:
            return
        packet = replace(packet, sequence=self._sequence)
        self._sequence = (self._sequence + 1) % SEQUENCE_MODULUS
        self._transport.sendto(serialize_rtp(packet), self._remote)
        self.stats.sent += 1
        self._octets_sent += len(packet.payload)

    # --- Control

    def _on_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self._loop.time()
        self._control.receive(
            data, addr, now, media_peer=self._latched_to, latch_hosts=self._latch_hosts
        )

    def _send_report(self, now: float, *, goodbye: bool = False) -> None:
        elapsed = round((now - self._clock_start) * TELEPHONE_RATE_HZ)
        self._control.send_report(
            now,
            media_peer=self._remote,
            packet_count=self.stats.sent,
            octet_count=self._octets_sent,
            rtp_timestamp=self._timestamp0 + elapsed,
            goodbye=goodbye,
        )

    # --- Lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the RTP session is closed")

    def _clock_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # close() raises it too; this makes a dead sender visible before the call ends.
            logger.error("RTP clock task failed", exc_info=task.exception())
