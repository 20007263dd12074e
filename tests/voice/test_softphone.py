"""The phone line against a real softphone: baresip 1.0.0 (Debian ``baresip-core``) on loopback.

Each test starts a ``SipUserAgent`` with the fake engines and one headless baresip with its own
configuration directory (written by the test into ``tmp_path``): SIP on a free loopback port,
G.711 only, a WAV file of the test's own as the microphone (``aufile``), the ``sndfile`` filter
dumping what it hears and says into WAV files (1.0.0 has no file player: ``aufile`` is a source
only), its SIP trace (``-s``) and RTP counters (``rtp_stats``) on stdout, and the ``ctrl_tcp``
module as the remote control: netstring-framed JSON commands of the ``menu`` module (``dial``,
``sndcode``, ``hangup``, ``quit``) and the call events back. The trace is read with the
project's own ``parse_message``.

- A call from baresip is answered with a G.711 SDP answer; baresip records the greeting as real
  audio (the fake synthesizer's 440 Hz tone, exactly as long as the greeting), RTP flows both
  ways, RTCP too (baresip reads our sender reports and works out a round trip from the one
  that echoes its own), and baresip hanging up ends the call with its BYE.
- baresip keys ``0`` as RFC 4733 telephone-events; the service asks for a person and transfers
  with a REFER; baresip, a real transferee, accepts it (202, NOTIFY 100), dials the Refer-To
  target (a small SIP UAS of the test's own that answers), reports the 200 in a final NOTIFY,
  and the service ends its leg with one BYE: end reason ``transferred``.

What baresip 1.0.0 does that a PBX would not: it dials the Refer-To URI as it is, its
``?X-Handoff-Id=...&User-to-User=...`` headers left in the Request-URI and To (RFC 3261 §19.1.5
would make them header fields), and it passes the Refer-To through a printf-style format
(``ua_event`` in its ``src/ua.c``), which turns each ``%3B``/``%3D`` escape into ``?``, so the
User-to-User value arrives as ``682d31?encoding?hex``. The handoff id survives (it has no
escapes); ``handoff_ids`` accepts it from a header or from the Request-URI, and User-to-User
is not checked here (``test_sip_agent`` checks the REFER we send). baresip's RTCP (libre's)
goes to the RTP port + 1, from its own RTP port + 1: a compound SR and SDES every 5 s (not
randomised), the first 5 s into the call. Two more do not begin with a report, as RFC 3550
A.2 suggests a compound should (the service reads them all the same): as soon as the call is
up, a lone APP packet (name ``PING``, data ``PONG``) "to open a NAT pinhole"
(``stream_start_rtcp`` in its ``src/stream.c``), and when it hangs up a BYE (reason "Adjo")
and an SDES, which arrives with its SIP BYE, so before or after our
session has closed. Each SR of ours that baresip reads is a ``CALL_RTCP`` event on ctrl_tcp,
with what our report block said (``tx``: lost, jitter in µs) and the round trip (µs) it worked
out from our LSR/DLSR. Its menu hangs up a call when the ``aufile`` source ends, so the source
outlasts every call.

Without baresip (or one of its modules) the tests skip, naming it; with
``TRIAGE_REQUIRE_SERVICES=1`` (CI) they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import socket
import struct
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from tests.voice.test_sip_agent import no_leaked_tasks  # noqa: F401 (autouse fixture)
from tests.voice.test_sipp import RtpRange, bot
from tests.voice.waiting import eventually
from voice.audio import PTIME_MS
from voice.brain import BrainReply, Transfer
from voice.errors import SipParseError
from voice.fake_brain import FakeBrain
from voice.sip.message import SipRequest, SipResponse, parse_message
from voice.sip.refer import HANDOFF_HEADER
from voice.sip.uri import parse_uri
from voice.tts.fake import MS_PER_CHARACTER, TONE_HZ

LOOPBACK: Final = "127.0.0.1"
RTP_RANGE: Final[RtpRange] = {"rtp_port_min": 46000, "rtp_port_max": 46998}  # the agent's
SOFTPHONE_RTP_PORTS: Final = "47000-47998"  # baresip's own, clear of every test module's
MODULE_DIR: Final = Path("/usr/lib/baresip/modules")
MODULES: Final = ("g711.so", "aufile.so", "sndfile.so")
APP_MODULES: Final = ("account.so", "menu.so", "ctrl_tcp.so")  # menu runs the commands
RATE_HZ: Final = 8000  # aufile wants the codec's rate: G.711's
# baresip's menu hangs up when the aufile source reaches its end: longer than any test call.
SOURCE_S: Final = 20
SOURCE_TONE_HZ: Final = 1000.0  # not the greeting's 440 Hz: what baresip hears is no echo
START_S: Final = 5.0  # for baresip to open its control socket
WAIT_S: Final = 5.0  # for anything that should happen at once on loopback
TRANSFER_S: Final = 10.0  # key press to the target's INVITE: the transfer prompt is 1.3 s
# baresip's first report is 5 s into the call, ours come every 2.5..7.5 s: the first of ours
# to echo baresip's comes within 13 s.
RTCP_S: Final = 15.0
MAX_LOOPBACK_RTT_US: Final = 500_000  # a DLSR off by its units would add seconds of hold
QUIT_S: Final = 3.0  # for each step of stopping baresip: quit, SIGTERM, SIGKILL
LOUD_RMS: Final = 1000.0  # a 20 ms frame of the greeting's tone (RMS about 5600)
SILENT_RMS: Final = 10.0  # a frame of the encoded silence the bot sends between prompts
TARGET_USER: Final = "general"
HANDOFF_ID: Final = "h-1"

# baresip -s prints each SIP datagram it sends or receives between these two lines.
_TRACE: Final = re.compile(rb"\x1b\[36;1m#\nUDP (\S+) -> (\S+)\n(.*?)\x1b\[;m\n", re.DOTALL)
# rtp_stats: the audio stream's counters when a call ends.
_RTP_PACKETS: Final = re.compile(rb"\npackets:\s+(\d+)\s+(\d+)\n")


def _require(present: bool, message: str) -> None:
    if present:
        return
    if os.environ.get("TRIAGE_REQUIRE_SERVICES", "") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _baresip() -> str:
    path = shutil.which("baresip")
    _require(
        path is not None,
        "baresip is not installed (Debian package baresip-core): apt-get install baresip-core",
    )
    assert path is not None
    for module in (*MODULES, *APP_MODULES):
        _require(
            (MODULE_DIR / module).is_file(),
            f"baresip module {module} not found in {MODULE_DIR} (Debian package baresip-core)",
        )
    return path


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _write_tone(path: Path, seconds: int, hz: float, amplitude: int = 4000) -> None:
    samples = (
        round(amplitude * math.sin(2 * math.pi * hz * n / RATE_HZ))
        for n in range(seconds * RATE_HZ)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))


def _write_config(directory: Path, sip_port: int, ctrl_port: int) -> None:
    """The smallest configuration that makes calls: no audio device, no NAT helpers."""
    source = directory / "microphone.wav"
    _write_tone(source, SOURCE_S, SOURCE_TONE_HZ)
    (directory / "recordings").mkdir()
    lines = [
        "poll_method epoll",
        f"sip_listen {LOOPBACK}:{sip_port}",
        f"net_interface {LOOPBACK}",  # the media address in SDP; 'lo' is not found by name
        f"rtp_ports {SOFTPHONE_RTP_PORTS}",
        "rtp_stats yes",
        f"audio_source aufile,{source}",
        "statmode_default off",
        f"module_path {MODULE_DIR}",
        *(f"module {name}" for name in MODULES),
        *(f"module_app {name}" for name in APP_MODULES),
        f"ctrl_tcp_listen {LOOPBACK}:{ctrl_port}",
        f"snd_path {directory / 'recordings'}",
    ]
    (directory / "config").write_text("\n".join(lines) + "\n")
    (directory / "accounts").write_text(f"<sip:softphone@{LOOPBACK}>;regint=0\n")


@dataclass(frozen=True)
class Traced:
    """One SIP datagram in baresip's trace."""

    sent: bool  # by baresip (else received by it)
    peer: str  # host:port at the other end
    message: SipRequest | SipResponse

    @property
    def summary(self) -> str:
        m = self.message
        what = m.method if isinstance(m, SipRequest) else f"{m.status} ({m.cseq.method})"
        return f"{'->' if self.sent else '<-'} {self.peer} {what}"

    def is_request(self, method: str) -> bool:
        return isinstance(self.message, SipRequest) and self.message.method == method

    def is_response(self, status: int, method: str) -> bool:
        m = self.message
        return isinstance(m, SipResponse) and m.status == status and m.cseq.method == method


@dataclass
class Softphone:
    """A running baresip, driven over ctrl_tcp; see the module docstring."""

    process: asyncio.subprocess.Process
    directory: Path
    sip_address: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    output: bytearray = field(default_factory=bytearray)
    events: list[dict[str, Any]] = field(default_factory=list)
    _responses: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _tokens: Iterator[int] = field(default_factory=itertools.count)
    _output_done: bool = False

    async def command(self, name: str, params: str = "") -> dict[str, Any]:
        """Run a menu command; its response, which must be ``ok``."""
        token = f"{name}-{next(self._tokens)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self.writer.write(b"%d:%s," % (len(body), body))
        await self.writer.drain()
        try:
            response = await asyncio.wait_for(future, WAIT_S)
        except TimeoutError:
            raise AssertionError(f"baresip did not answer {name!r}\n{self.tail()}") from None
        assert response.get("ok") is True, f"baresip: {name!r} failed: {response}\n{self.tail()}"
        return response

    async def event(self, kind: str, within_s: float = WAIT_S, *, count: int = 1) -> None:
        """Wait until ``count`` events of type ``kind`` have arrived (CALL_ESTABLISHED...)."""

        def arrived() -> bool:
            return [e.get("type") for e in self.events].count(kind) >= count

        try:
            async with asyncio.timeout(within_s), self._arrived:
                await self._arrived.wait_for(arrived)
        except TimeoutError:
            seen = [e.get("type") for e in self.events]
            raise AssertionError(
                f"baresip: no {kind} (#{count}) within {within_s} s; events: {seen}\n{self.tail()}"
            ) from None

    def trace(self) -> list[Traced]:
        """Every SIP datagram baresip sent or received, in order; read it once baresip has quit
        (``close``): only then is all of its output, buffered on the way, surely here."""
        assert self.process.returncode is not None and self._output_done, "close() first"
        traced = []
        for source, destination, data in _TRACE.findall(bytes(self.output)):
            sent = source.decode() == self.sip_address
            peer = (destination if sent else source).decode()
            traced.append(Traced(sent, peer, parse_message(data)))
        return traced

    def transcript(self) -> str:
        return "\n".join(t.summary for t in self.trace())

    def rtp_packets(self) -> list[tuple[int, int]]:
        """(sent, received) RTP packets of each audio stream (once baresip has quit)."""
        assert self.process.returncode is not None and self._output_done, "close() first"
        return [(int(tx), int(rx)) for tx, rx in _RTP_PACKETS.findall(bytes(self.output))]

    def recordings(self, direction: str) -> list[Path]:
        """The sndfile dumps: ``dec`` is what baresip heard, ``enc`` what it said."""
        return sorted((self.directory / "recordings").glob(f"dump-*-{direction}.wav"))

    def tail(self, chars: int = 4000) -> str:
        return "baresip's output ends:\n" + bytes(self.output[-chars:]).decode(errors="replace")

    async def close(self) -> None:
        """quit, then SIGTERM, then SIGKILL, each bounded; the output goes to baresip.log."""
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(OSError, AssertionError):
                await self.command("quit")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), QUIT_S)
        for stop in (process.terminate, process.kill):
            if process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), QUIT_S)
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        output = self._tasks[0]  # stdout's reader (start_softphone starts it first)
        # baresip has exited: its stdout reaches EOF as soon as what is left in the pipe is read.
        if not output.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(output), QUIT_S)
        self._output_done = output.done() and not output.cancelled()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        (self.directory / "baresip.log").write_bytes(bytes(self.output))

    async def _read_control(self) -> None:
        while True:
            try:
                length = int((await self.reader.readuntil(b":"))[:-1])
                payload = await self.reader.readexactly(length + 1)  # and the ','
            except asyncio.IncompleteReadError:
                return  # baresip has quit
            message: dict[str, Any] = json.loads(payload[:-1])
            if message.get("response"):
                future = self._responses.pop(str(message.get("token")), None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("event"):
                async with self._arrived:
                    self.events.append(message)
                    self._arrived.notify_all()


async def start_softphone(directory: Path) -> Softphone:
    baresip = _baresip()
    sip_port = _free_port(socket.SOCK_DGRAM)
    ctrl_port = _free_port(socket.SOCK_STREAM)
    _write_config(directory, sip_port, ctrl_port)
    # Line-buffered stdout (coreutils' stdbuf), so that a failure message shows the latest.
    line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
    process = await asyncio.create_subprocess_exec(
        *line_buffered,
        baresip,
        "-f", str(directory),
        "-s",  # the SIP trace
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=directory,
    )  # fmt: skip
    assert process.stdout is not None
    output = bytearray()
    early = asyncio.create_task(_collect(process.stdout, output), name="baresip-output")
    try:
        reader, writer = await _connect(process, ctrl_port, output)
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        early.cancel()
        await asyncio.gather(early, return_exceptions=True)
        raise
    phone = Softphone(process, directory, f"{LOOPBACK}:{sip_port}", reader, writer, output)
    phone._tasks += [early, asyncio.create_task(phone._read_control(), name="baresip-control")]
    return phone


async def _collect(stdout: asyncio.StreamReader, output: bytearray) -> None:
    while chunk := await stdout.read(65536):
        output += chunk


async def _connect(
    process: asyncio.subprocess.Process, port: int, output: bytearray
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_S
    while True:
        if process.returncode is not None:
            raise AssertionError(
                f"baresip exited {process.returncode} at start:\n{output.decode(errors='replace')}"
            )
        try:
            return await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            if loop.time() > deadline:
                raise AssertionError(
                    f"baresip's ctrl_tcp did not listen on {port} within {START_S} s:\n"
                    + output.decode(errors="replace")
                ) from None
            await asyncio.sleep(0.05)


# --- The transfer target --------------------------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.count = 0
        self.first = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.count += 1
        self.first.set()
        self.queue.put_nowait((data, (addr[0], addr[1])))


class TransferTarget:
    """Where the REFER sends the caller (the agents' queue of a real PBX): a SIP UAS on
    loopback that answers every INVITE 180 and 200 with a PCMU answer pointing at its own
    media socket, takes the ACK and answers BYE 200. It keeps every request it got, and its
    media socket counts the RTP that arrives."""

    def __init__(
        self,
        sip: tuple[asyncio.DatagramTransport, _Datagrams],
        media: tuple[asyncio.DatagramTransport, _Datagrams],
    ) -> None:
        (self._sip_transport, self._sip), (self._media_transport, self._media) = sip, media
        self.requests: list[SipRequest] = []
        self.undecodable: list[bytes] = []
        self._changed = asyncio.Condition()
        self._server = asyncio.create_task(self._serve(), name="transfer-target")

    @classmethod
    async def open(cls) -> TransferTarget:
        loop = asyncio.get_running_loop()
        sip = await loop.create_datagram_endpoint(_Datagrams, local_addr=(LOOPBACK, 0))
        media = await loop.create_datagram_endpoint(_Datagrams, local_addr=(LOOPBACK, 0))
        return cls(sip, media)

    @property
    def port(self) -> int:
        return int(self._sip_transport.get_extra_info("sockname")[1])

    @property
    def rtp_received(self) -> int:
        return self._media.count

    async def request(self, method: str, within_s: float = WAIT_S) -> SipRequest:
        """The first request of ``method`` that arrived (waiting for it if need be)."""

        def first() -> SipRequest | None:
            return next((r for r in self.requests if r.method == method), None)

        try:
            async with asyncio.timeout(within_s), self._changed:
                found = await self._changed.wait_for(first)
        except TimeoutError:
            got = [r.method for r in self.requests]
            raise AssertionError(
                f"the transfer target got no {method} within {within_s} s; it got {got}"
            ) from None
        assert found is not None
        return found

    async def media(self, within_s: float = WAIT_S) -> None:
        """Wait for the first RTP packet."""
        try:
            await asyncio.wait_for(self._media.first.wait(), within_s)
        except TimeoutError:
            raise AssertionError(f"no RTP reached the transfer target in {within_s} s") from None

    async def close(self) -> None:
        self._server.cancel()
        await asyncio.gather(self._server, return_exceptions=True)
        self._sip_transport.close()
        self._media_transport.close()

    async def _serve(self) -> None:
        while True:
            data, source = await self._sip.queue.get()
            try:
                message = parse_message(data)
            except SipParseError:
                self.undecodable.append(data)
                continue
            if isinstance(message, SipRequest):
                self._answer(message, source)
                async with self._changed:
                    self.requests.append(message)
                    self._changed.notify_all()

    def _answer(self, request: SipRequest, source: tuple[str, int]) -> None:
        if request.method == "INVITE":
            self._send(self._response(request, 180, "Ringing"), source)
            self._send(self._response(request, 200, "OK", self._sdp()), source)
        elif request.method in ("BYE", "CANCEL", "OPTIONS"):
            self._send(self._response(request, 200, "OK"), source)

    def _response(self, request: SipRequest, status: int, reason: str, sdp: bytes = b"") -> bytes:
        to = request.headers.get("To") or ""
        if ";tag=" not in to:
            to += ";tag=target"
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {via}" for via in request.headers.get_all("Via")]
        lines += [
            f"From: {request.headers.get('From')}",
            f"To: {to}",
            f"Call-ID: {request.call_id}",
            f"CSeq: {request.cseq}",
            f"Contact: <sip:{TARGET_USER}@{LOOPBACK}:{self.port}>",
        ]
        if sdp:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(sdp)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + sdp

    def _sdp(self) -> bytes:
        lines = [
            "v=0",
            f"o=- 1 1 IN IP4 {LOOPBACK}",
            "s=-",
            f"c=IN IP4 {LOOPBACK}",
            "t=0 0",
            f"m=audio {self._media_transport.get_extra_info('sockname')[1]} RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "a=sendrecv",
        ]
        return ("\r\n".join(lines) + "\r\n").encode()

    def _send(self, data: bytes, to: tuple[str, int]) -> None:
        self._sip_transport.sendto(data, to)


def handoff_ids(invite: SipRequest) -> list[str]:
    """Where the transferee's INVITE carries the handoff id: an X-Handoff-Id header (a PBX that
    turns the Refer-To URI's headers into headers, RFC 3261 §19.1.5) or the header still inside
    the Request-URI (a phone that dials the Refer-To URI as it is)."""
    in_uri = [value for name, value in parse_uri(invite.uri).headers if name == HANDOFF_HEADER]
    return invite.headers.get_all(HANDOFF_HEADER) + in_uri


# --- The bot --------------------------------------------------------------------------------


def round_trips_us(phone: Softphone) -> list[int]:
    """For each of our sender reports that baresip read, the round trip it worked out (0 until
    one of ours echoes one of its own sender reports)."""
    return [int(e["rtcp_stats"]["rtt"]) for e in phone.events if e.get("type") == "CALL_RTCP"]


def prompt_frames(reply: BrainReply) -> int:
    """How many 20 ms frames the fake synthesizer's tone for ``reply`` lasts."""
    return sum(len(text) for text in reply.say) * MS_PER_CHARACTER // PTIME_MS


# --- Audio analysis -------------------------------------------------------------------------


def frame_levels(path: Path) -> tuple[list[float], list[int]]:
    """The RMS of each 20 ms frame of a mono 16-bit WAV file at 8 kHz, and its samples."""
    with wave.open(str(path), "rb") as recording:
        assert (recording.getnchannels(), recording.getsampwidth()) == (1, 2), path
        assert recording.getframerate() == RATE_HZ, path
        data = recording.readframes(recording.getnframes())
    samples = [s for (s,) in struct.iter_unpack("<h", data)]
    per_frame = RATE_HZ * PTIME_MS // 1000
    levels = [
        math.sqrt(sum(s * s for s in samples[i : i + per_frame]) / per_frame)
        for i in range(0, len(samples) - per_frame + 1, per_frame)
    ]
    return levels, samples


def tone_hz(samples: list[int]) -> float:
    """The frequency of a pure tone, from its zero crossings."""
    crossings = sum((a < 0) != (b < 0) for a, b in itertools.pairwise(samples))
    return crossings / 2 / (len(samples) / RATE_HZ)


def loud_runs(levels: list[float]) -> list[tuple[int, int]]:
    """(first frame, frame count) of each stretch of frames louder than ``LOUD_RMS``."""
    runs: list[tuple[int, int]] = []
    for loud, group in itertools.groupby(enumerate(levels), key=lambda f: f[1] > LOUD_RMS):
        frames = list(group)
        if loud:
            runs.append((frames[0][0], len(frames)))
    return runs


# --- Fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def softphone(tmp_path: Path) -> AsyncIterator[Softphone]:
    phone = await start_softphone(tmp_path)
    try:
        yield phone
    finally:
        await phone.close()
    assert phone.process.returncode is not None


@pytest.fixture
async def target() -> AsyncIterator[TransferTarget]:
    endpoint = await TransferTarget.open()
    yield endpoint
    await endpoint.close()


# --- Tests ----------------------------------------------------------------------------------


async def test_a_softphone_call_is_answered_with_g711_and_hears_the_greeting(
    softphone: Softphone,
) -> None:
    async with bot(**RTP_RANGE) as b:
        await softphone.command("dial", b.dial_uri)
        await softphone.event("CALL_ESTABLISHED")
        await b.until("the call started", lambda s: s.calls_started == 1)
        await eventually("the greeting synthesized", lambda: bool(b.synthesizer.requests))
        greeting_frames = prompt_frames(b.brain.greeting)
        await asyncio.sleep(greeting_frames * PTIME_MS / 1000 + 0.5)  # all of it, then silence
        await eventually(
            "baresip measured a round trip from our RTCP",
            lambda: any(rtt > 0 for rtt in round_trips_us(softphone)),
            RTCP_S,
        )
        await softphone.command("hangup")
        await softphone.event("CALL_CLOSED")
        stats = await b.until("the call ended", lambda s: s.calls_ended == 1)

    await softphone.close()  # all of its output; and sndfile completes its WAV files
    trace = softphone.trace()
    transcript = softphone.transcript()

    # SIP: INVITE with an offer, our 200 with a G.711 answer, baresip's ACK, then its BYE.
    ok = next((t.message for t in trace if t.is_response(200, "INVITE")), None)
    assert ok is not None, transcript
    assert ok.content_type == "application/sdp"
    answer = ok.body.decode()
    assert re.search(r"^m=audio \d+ RTP/AVP 0 101\r$", answer, re.MULTILINE), answer
    assert "a=rtpmap:0 PCMU/8000" in answer
    assert [t.sent for t in trace if t.is_request("ACK")] == [True], transcript
    assert [t.sent for t in trace if t.is_request("BYE")] == [True], transcript
    assert [t.sent for t in trace if t.is_response(200, "BYE")] == [False], transcript
    assert stats.end_reasons == {"caller_hung_up": 1} and stats.byes_sent == 0
    assert b.synthesizer.requests == [(text, "it") for text in b.brain.greeting.say]

    # RTP both ways: what baresip counted and what the agent counted agree.
    call = b.record()
    assert call.codec == "PCMU" and call.rtp is not None
    assert call.rtp.malformed == call.rtp.unexpected_payload_type == 0
    assert call.rtp.foreign_source == 0
    assert b.recognizers and b.recognizers[0].fed_bytes > 0, "baresip's audio reached the ASR"
    streams = softphone.rtp_packets()
    assert len(streams) == 1, f"audio streams ended: {streams}\n{softphone.tail()}"
    [(softphone_sent, softphone_received)] = streams
    assert softphone_received > greeting_frames, softphone.tail()
    assert call.rtp.sent >= softphone_received, "baresip cannot hear more than we sent"
    assert call.rtp.received <= softphone_sent
    assert call.rtp.received > greeting_frames

    # RTCP both ways. baresip read our reports: their blocks say it lost nothing, and the one
    # that echoed its own sender report gave it a loopback's round trip. Ours got its reports.
    reports = [e["rtcp_stats"] for e in softphone.events if e.get("type") == "CALL_RTCP"]
    assert reports and all(r["tx"]["lost"] == 0 for r in reports), reports
    assert 0 < max(round_trips_us(softphone)) < MAX_LOOPBACK_RTT_US, reports
    assert call.rtp.rtcp_sent >= len(reports)
    # its reports and its APP "PING" (see the module docstring); its BYE may come too late
    assert call.rtp.rtcp_received >= 2 and call.rtp.rtcp_foreign_source == 0
    assert call.rtp.rtcp_malformed == 0, call.rtp

    # The greeting as baresip heard it: the synthesizer's 440 Hz tone, as long as the greeting,
    # and nothing else loud (silence is sent between prompts).
    recordings = softphone.recordings("dec")
    assert len(recordings) == 1, f"one call, one recording of what baresip heard: {recordings}"
    [heard] = recordings
    levels, samples = frame_levels(heard)
    runs = loud_runs(levels)
    assert len(runs) == 1, f"loud stretches (first frame, frames): {runs}"
    first, frames = runs[0]
    assert abs(frames - greeting_frames) <= 1, (frames, greeting_frames)
    per_frame = RATE_HZ * PTIME_MS // 1000
    tone = samples[(first + 1) * per_frame : (first + frames - 1) * per_frame]
    assert abs(tone_hz(tone) - TONE_HZ) < 10, tone_hz(tone)
    quiet = levels[first + frames + 1 :]
    assert quiet and max(quiet) < SILENT_RMS, "after the greeting, the bot sends silence"


async def test_dtmf_zero_from_a_softphone_is_transferred_by_a_refer_it_follows(
    softphone: Softphone, target: TransferTarget
) -> None:
    target_uri = f"sip:{TARGET_USER}@{LOOPBACK}:{target.port}"
    person = BrainReply(
        "it", ("La passo a un collega.",), transfer=Transfer(HANDOFF_ID, "general", target_uri)
    )
    async with bot(FakeBrain(person=person), **RTP_RANGE) as b:
        await softphone.command("dial", b.dial_uri)
        await softphone.event("CALL_ESTABLISHED")
        await b.until("the call started", lambda s: s.calls_started == 1)
        await asyncio.sleep(prompt_frames(b.brain.greeting) * PTIME_MS / 1000 + 0.3)
        await softphone.command("sndcode", "0")

        invite = await target.request("INVITE", TRANSFER_S)
        await target.request("ACK")
        stats = await b.until("the call ended", lambda s: s.calls_ended == 1)
        await target.media()  # the caller now talks to the target
        await softphone.command("hangup")  # baresip's call with the target
        await target.request("BYE")

    await softphone.close()
    trace = softphone.trace()
    transcript = softphone.transcript()

    # The service: the key was read as RFC 4733 events (no INFO) and asked for a person.
    assert not [t for t in trace if t.is_request("INFO")], transcript
    assert [w for w, _ in b.brain.seen] == ["begin", "person", "transferred", "ended"]
    assert stats.end_reasons == {"transferred": 1} and stats.byes_sent == 1
    call = b.record()
    assert call.rtp is not None and call.rtp.received > 0
    assert call.rtp.malformed == call.rtp.unexpected_payload_type == 0

    # baresip took the REFER, 202, and reported the target's answer in a final NOTIFY.
    refers = [t.message for t in trace if t.is_request("REFER")]
    assert len(refers) == 1, transcript
    refer = refers[0]
    assert refer.headers.get(HANDOFF_HEADER) == HANDOFF_ID
    refer_to = refer.headers.get("Refer-To") or ""
    assert refer_to.startswith(f"<{target_uri}?X-Handoff-Id={HANDOFF_ID}&"), refer_to
    assert [t.sent for t in trace if t.is_response(202, "REFER")] == [True], transcript
    notifies = [t.message for t in trace if t.sent and t.is_request("NOTIFY")]
    assert notifies, transcript
    final = notifies[-1]
    assert (final.headers.get("Event") or "").startswith("refer"), final.headers.get("Event")
    assert final.content_type == "message/sipfrag"
    assert final.body.startswith(b"SIP/2.0 200"), final.body
    assert (final.headers.get("Subscription-State") or "").startswith("terminated")
    notify_answers = [
        t.message.status
        for t in trace
        if not t.sent and isinstance(t.message, SipResponse) and t.message.cseq.method == "NOTIFY"
    ]
    assert notify_answers == [200] * len(notifies), transcript

    # Our leg ended with exactly one BYE of ours, after the final NOTIFY, and baresip's 200.
    byes = [i for i, t in enumerate(trace) if not t.sent and t.is_request("BYE")]
    assert len(byes) == 1, transcript
    final_index = next(i for i, t in enumerate(trace) if t.message is final)
    assert byes[0] > final_index, transcript
    agent_address = "{}:{}".format(*b.agent.local_address)
    assert trace[byes[0]].peer == agent_address
    bye_answers = [t.peer for t in trace if t.sent and t.is_response(200, "BYE")]
    assert bye_answers == [agent_address], transcript

    # The transferee dialled the Refer-To target, with the handoff id in its INVITE.
    assert parse_uri(invite.uri).user == TARGET_USER, invite.uri
    assert handoff_ids(invite) == [HANDOFF_ID], f"{invite.uri}\n{invite.headers}"
    assert not target.undecodable and target.rtp_received > 0
