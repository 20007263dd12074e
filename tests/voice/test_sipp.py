"""The SIP user agent against the real ``sipp`` (Debian ``sip-tester``) on loopback.

Each test starts a ``SipUserAgent`` with the fake engines, runs one sipp scenario from
``tests/voice/sipp/`` against it as a subprocess (``-m 1``, bounded in time) and checks both
sides: sipp's exit code (0: every call went as the scenario says, including its regexp checks)
and error log, and the agent's own record of the call. sipp runs in a temporary directory that
holds a copy of the scenario and links to sip-tester's captures, so that ``play_pcap_audio``
finds them next to the scenario and every trace file stays there.

Without sipp the tests skip, naming it; with ``TRIAGE_REQUIRE_SERVICES=1`` (CI) they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

import pytest

from voice.asr.fake import FakeRecognizer
from voice.brain import BrainReply
from voice.call.settings import CallEngines, CallSettings
from voice.fake_brain import FakeBrain
from voice.sip.agent import SipUserAgent
from voice.sip.leg import CallRecord
from voice.sip.settings import SipSettings
from voice.sip.stats import SipStats
from voice.sip.timers import SipTimers
from voice.tts.fake import MS_PER_CHARACTER, FakeSynthesizer

LOOPBACK = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "sipp"
CAPTURE_DIRS = (Path("/usr/share/sip-tester/pcap"), Path("/usr/share/sip-tester"))
CAPTURES = ("g711a.pcap", "dtmf_2833_0.pcap")


class RtpRange(TypedDict):
    rtp_port_min: int
    rtp_port_max: int


RTP_RANGE: RtpRange = {"rtp_port_min": 45000, "rtp_port_max": 45998}
SIPP_TIMEOUT_S = 30  # sipp's own -timeout; the test waits a little longer
WAIT_S = 5.0
# A good run writes no error log. Once something is logged, sipp adds these notes (the header,
# what it read from each capture, an epoll complaint when its RTP echo socket closes), which
# are not failures by themselves.
BENIGN_SIPP_LINES = re.compile(
    r"The following events occurred:|In pcap .*, npkts|max pkt length|base port"
    r"|Failed to delete FD from epoll"
)


def _sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        message = "sipp is not installed (Debian package sip-tester): apt-get install sip-tester"
        if os.environ.get("TRIAGE_REQUIRE_SERVICES", "") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _capture(name: str) -> Path:
    for directory in CAPTURE_DIRS:
        if (directory / name).is_file():
            return directory / name
    message = f"sip-tester's {name} not found in {[str(d) for d in CAPTURE_DIRS]}"
    if os.environ.get("TRIAGE_REQUIRE_SERVICES", "") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _free_udp_ports(count: int, step: int = 1) -> int:
    """A first port such that it and ``count - 1`` more, ``step`` apart, are free for UDP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOOPBACK, 0))
            first = int(probe.getsockname()[1])
        if first % 2 or first + step * count > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + step * count, step):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind((LOOPBACK, port))
            return first
        except OSError:
            continue
    raise RuntimeError("no free UDP ports on loopback")


@dataclass(frozen=True)
class SippRun:
    returncode: int
    output: str
    errors: list[str]  # error log lines that are not known to be benign
    messages: str  # the -trace_msg log: every message sent and received

    def received(self, start_line: str) -> list[datetime]:
        """When sipp received each message starting with ``start_line``, copies included."""
        pattern = re.compile(
            r"-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\r?\n"
            r"UDP message received \[\d+\] bytes :\r?\n\r?\n" + re.escape(start_line)
        )
        return [
            datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            for m in pattern.finditer(self.messages)
        ]

    def check(self) -> None:
        assert self.returncode == 0 and not self.errors, (
            f"sipp exit {self.returncode}; errors: {self.errors}\n{self.output[-3000:]}"
        )


async def run_sipp(scenario: str, target: tuple[str, int], workdir: Path, *extra: str) -> SippRun:
    sipp = _sipp()
    shutil.copy(SCENARIOS / scenario, workdir / scenario)
    for name in CAPTURES:
        link = workdir / name
        if not link.exists():
            link.symlink_to(_capture(name))
    sip_port = _free_udp_ports(1)
    media_port = _free_udp_ports(2, step=2)  # sipp echoes on the port and the port + 2
    errors, messages = workdir / "errors.log", workdir / "messages.log"
    command = [
        sipp,
        "-sf", scenario,
        "-i", LOOPBACK,
        "-p", str(sip_port),
        "-mi", LOOPBACK,
        "-mp", str(media_port),
        "-s", "100",
        "-m", "1",
        "-timeout", f"{SIPP_TIMEOUT_S}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err", "-error_file", str(errors),
        "-trace_msg", "-message_file", str(messages),
        *extra,
        f"{target[0]}:{target[1]}",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(SIPP_TIMEOUT_S + 10):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    error_lines = errors.read_text(errors="replace").splitlines() if errors.exists() else []
    unexpected = [
        line for line in error_lines if line.strip() and not BENIGN_SIPP_LINES.search(line)
    ]
    return SippRun(
        process.returncode,
        output.decode(errors="replace"),
        unexpected,
        messages.read_text(errors="replace") if messages.exists() else "",
    )


@dataclass
class Bot:
    agent: SipUserAgent
    brain: FakeBrain
    recognizers: list[FakeRecognizer]
    synthesizer: FakeSynthesizer

    def record(self) -> CallRecord:
        assert self.agent.recent_calls, "no call ended"
        return self.agent.recent_calls[-1]

    @property
    def dial_uri(self) -> str:
        host, port = self.agent.local_address
        return f"sip:100@{host}:{port}"

    async def until(
        self, what: str, predicate: Callable[[SipStats], bool], within_s: float = WAIT_S
    ) -> SipStats:
        try:
            return await asyncio.wait_for(self.agent.wait_for(predicate), within_s)
        except TimeoutError:
            raise AssertionError(
                f"the agent: {what} not within {within_s} s; {self.agent.stats}"
            ) from None


@asynccontextmanager
async def bot(brain: FakeBrain | None = None, **settings: Any) -> AsyncIterator[Bot]:
    recognizers: list[FakeRecognizer] = []

    def recognizer_for(language: str) -> FakeRecognizer:
        recognizers.append(FakeRecognizer())
        return recognizers[-1]

    brain = brain or FakeBrain()
    synthesizer = FakeSynthesizer()
    engines = CallEngines(brain, synthesizer, recognizer_for, CallSettings(no_input_timeout_s=30.0))
    options: dict[str, Any] = {"port": 0, **RTP_RANGE, **settings}
    agent = await SipUserAgent.start(SipSettings(**options), engines)
    try:
        yield Bot(agent, brain, recognizers, synthesizer)
    finally:
        async with asyncio.timeout(10):
            await agent.close()
        assert agent.stats.transport.handler_errors == 0


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    _sipp()
    yield tmp_path


async def test_a_call_answered_with_g711_carries_audio_both_ways(workdir: Path) -> None:
    async with bot() as b:
        run = await run_sipp("call_media.xml", b.agent.local_address, workdir, "-rtp_echo")
        run.check()
        stats = await asyncio.wait_for(b.agent.wait_for(lambda s: s.calls_ended == 1), WAIT_S)

    call = b.record()
    assert stats.end_reasons == {"caller_hung_up": 1} and stats.byes_sent == 0
    assert call.codec == "PCMA" and call.rtp is not None
    # Peer -> bot: the capture's A-law audio reached the recogniser, decoded.
    assert b.recognizers[0].fed_bytes > 0
    # Bot -> peer: sipp echoes every packet it receives. The capture alone is 30 ms packets,
    # fewer than the 50 a second the bot sends, so receiving more than we sent needs the echo.
    assert call.rtp.received > call.rtp.sent > 50
    assert call.rtp.foreign_source == 0 and call.rtp.malformed == 0


async def test_dtmf_zero_transfers_with_a_refer_carrying_the_handoff_id(workdir: Path) -> None:
    async with bot() as b:  # FakeBrain's person reply: transfer h-1 to the general queue
        run = await run_sipp("dtmf_transfer.xml", b.agent.local_address, workdir)
        run.check()
        stats = await asyncio.wait_for(b.agent.wait_for(lambda s: s.calls_ended == 1), WAIT_S)

    assert stats.end_reasons == {"transferred": 1} and stats.byes_sent == 1
    assert [w for w, _ in b.brain.seen] == ["begin", "person", "transferred", "ended"]
    assert "X-Handoff-Id: h-1" in run.messages
    assert "X-Handoff-Id=h-1&User-to-User=682d31%3Bencoding%3Dhex" in run.messages
    assert len(run.received("BYE ")) == 1


async def test_cancel_before_the_answer_ends_with_487_and_no_call(workdir: Path) -> None:
    async with bot(ring_s=5.0) as b:
        run = await run_sipp("cancel.xml", b.agent.local_address, workdir)
        run.check()
        stats = await asyncio.wait_for(b.agent.wait_for(lambda s: s.cancelled == 1), WAIT_S)

    assert stats.calls_started == 0 and stats.stray_acks == 0 and not b.brain.seen
    assert len(run.received("SIP/2.0 487")) == 1, "ACKed at once: never retransmitted"


async def test_the_caller_hanging_up_mid_prompt_ends_the_call(workdir: Path) -> None:
    greeting = "Benvenuto nel servizio clienti. " * 8
    brain = FakeBrain(greeting=BrainReply("it", (greeting,)))
    async with bot(brain) as b:
        run = await run_sipp("hangup_mid_prompt.xml", b.agent.local_address, workdir)
        run.check()
        stats = await asyncio.wait_for(b.agent.wait_for(lambda s: s.calls_ended == 1), WAIT_S)

    call = b.record()
    assert stats.end_reasons == {"caller_hung_up": 1} and stats.byes_sent == 0
    assert b.brain.ended_with == "caller_hung_up"
    assert b.synthesizer.requests == [(greeting, "it")]
    assert call.rtp is not None
    greeting_frames = len(greeting) * MS_PER_CHARACTER // 20
    assert 0 < call.rtp.sent < greeting_frames / 2, "the BYE came early in the greeting"


async def test_a_lost_ack_has_the_200_retransmitted_until_timer_h(workdir: Path) -> None:
    timers = SipTimers().scaled(0.04)  # T1 20 ms, T2 160 ms, Timer H 1.28 s: inside the pause
    async with bot(timers=timers) as b:
        run = await run_sipp("lost_ack.xml", b.agent.local_address, workdir)
        run.check()
        stats = await asyncio.wait_for(b.agent.wait_for(lambda s: s.ack_timeouts == 1), WAIT_S)

    assert stats.calls_started == 0 and stats.byes_sent == 0 and stats.active_calls == 0
    arrivals = run.received("SIP/2.0 200 OK")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 8, f"the 200 and its retransmissions: {len(arrivals)}"
    assert gaps[2] > 1.5 * gaps[0], "the interval doubles from T1"
    assert max(gaps) < timers.t2_s + 0.08, "up to T2"


async def test_a_retransmitted_invite_makes_one_call(workdir: Path) -> None:
    async with bot() as b:
        run = await run_sipp("invite_retransmitted.xml", b.agent.local_address, workdir)
        run.check()
        stats = await asyncio.wait_for(b.agent.wait_for(lambda s: s.calls_ended == 1), WAIT_S)

    assert stats.calls_started == 1 and stats.retransmissions_absorbed == 1
    assert [w for w, _ in b.brain.seen].count("begin") == 1
    assert len(run.received("SIP/2.0 200 OK")) == 3  # the answer, its repeat, the BYE's


async def test_options_is_answered_out_of_dialog(workdir: Path) -> None:
    async with bot() as b:
        run = await run_sipp("options.xml", b.agent.local_address, workdir)
        run.check()
    assert b.agent.stats.calls_started == 0
