"""The SIP user agent over real UDP on loopback, against a small SIP phone of the test's own.

The phone writes its requests as text (not with the project's serialiser) and reads what comes
back with ``parse_message``, so that each case is exact: which responses, in which order, how
often, and what they carry. The engines are the fakes (``FakeBrain``, ``FakeRecognizer``,
``FakeSynthesizer``); the real speech engines have their own tests. Timers are scaled down
(T1 = 25 ms, so Timer H is 1.6 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from voice.asr.fake import FakeRecognizer
from voice.brain import BrainReply, Transfer
from voice.call.settings import CallEngines, CallSettings
from voice.errors import SipParseError
from voice.fake_brain import FakeBrain
from voice.sip.agent import SipUserAgent
from voice.sip.auth import DigestCredentials
from voice.sip.leg import CallLeg, CallRecord
from voice.sip.message import MAX_MESSAGE_BYTES, SipRequest, SipResponse, parse_message
from voice.sip.sdp import media_direction, parse_sdp
from voice.sip.settings import SipSettings
from voice.sip.stats import SipStats
from voice.sip.timers import SipTimers
from voice.tts.fake import FakeSynthesizer

LOOPBACK = "127.0.0.1"
TIMERS = SipTimers().scaled(0.05)  # T1 25 ms, T2 200 ms, Timer H 1.6 s
RTP_RANGE = {"rtp_port_min": 44000, "rtp_port_max": 44998}
WAIT_S = 3.0  # for anything that should happen at once on loopback
QUIET_S = 0.3  # to show that nothing comes
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "rfc4475"

Address = tuple[str, int]


# --- The phone ------------------------------------------------------------------------------


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.put_nowait((data, (addr[0], addr[1])))


class Phone:
    """A SIP phone on loopback: sends text, sorts what arrives into requests and responses.

    Like a phone's transaction layer, it ACKs every non-2xx final response to its INVITEs
    (again for each copy) and keeps exact copies of an earlier message (retransmissions) out of
    the queues; ``log`` has everything, copies included, with its arrival time.
    """

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _Socket) -> None:
        self._transport = transport
        self._protocol = protocol
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.requests: asyncio.Queue[SipRequest] = asyncio.Queue()
        self.log: list[tuple[float, SipRequest | SipResponse]] = []
        self.copies = 0
        self._seen: set[bytes] = set()
        self._invites: dict[tuple[str, str], SipRequest] = {}  # (Call-ID, branch) -> INVITE
        self._reader = asyncio.create_task(self._read(), name="test-phone")

    @classmethod
    async def open(cls, host: str = LOOPBACK) -> Phone:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Socket, local_addr=(host, 0))
        return cls(transport, protocol)

    @property
    def address(self) -> Address:
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, data: bytes, to: Address) -> None:
        try:
            invite = parse_message(data)
            if isinstance(invite, SipRequest) and invite.method == "INVITE":
                self._invites[(invite.call_id, invite.top_via.branch or "")] = invite
        except SipParseError:
            pass  # the phone also sends what does not parse (corpus, size limit)
        self._transport.sendto(data, to)

    async def response(self, within_s: float = WAIT_S) -> SipResponse:
        return await asyncio.wait_for(self.responses.get(), within_s)

    async def statuses(self, count: int, within_s: float = WAIT_S) -> list[int]:
        return [(await self.response(within_s)).status for _ in range(count)]

    async def request(self, within_s: float = WAIT_S) -> SipRequest:
        return await asyncio.wait_for(self.requests.get(), within_s)

    def received(self, status: int) -> list[float]:
        """When each response with ``status`` arrived, copies included."""
        return [t for t, m in self.log if isinstance(m, SipResponse) and m.status == status]

    async def nothing_more(self, quiet_s: float = QUIET_S) -> None:
        await asyncio.sleep(quiet_s)
        assert self.responses.empty(), f"unexpected response {self.responses.get_nowait()}"
        assert self.requests.empty(), f"unexpected request {self.requests.get_nowait()}"

    def drain(self) -> None:
        """Forget what arrived unread (it stays in ``log``)."""
        for queue in (self.responses, self.requests):
            while not queue.empty():
                queue.get_nowait()

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self._transport.close()

    async def _read(self) -> None:
        while True:
            data, source = await self._protocol.datagrams.get()
            message = parse_message(data)
            self.log.append((asyncio.get_running_loop().time(), message))
            if isinstance(message, SipResponse):
                self._acknowledge(message, source)
            if data in self._seen:
                self.copies += 1
                continue
            self._seen.add(data)
            if isinstance(message, SipResponse):
                self.responses.put_nowait(message)
            else:
                self.requests.put_nowait(message)

    def _acknowledge(self, response: SipResponse, source: Address) -> None:
        try:
            if response.status < 300 or response.cseq.method != "INVITE":
                return
            key = (response.call_id, response.top_via.branch or "")
        except SipParseError:
            return  # an answer to a corpus message we never meant to ACK
        invite = self._invites.get(key)
        if invite is None:
            return
        headers = [
            ("Via", invite.headers.get("Via") or ""),
            ("From", invite.headers.get("From") or ""),
            ("To", response.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} ACK"),
            ("Max-Forwards", "70"),
        ]
        self._transport.sendto(sip(f"ACK {invite.uri} SIP/2.0", headers), source)


def sdp(rtp_port: int, *formats: tuple[int, str]) -> bytes:
    formats = formats or ((0, "PCMU"), (8, "PCMA"))
    payload_types = " ".join(str(pt) for pt, _ in formats)
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {payload_types} 101",
        *(f"a=rtpmap:{pt} {name}/8000" for pt, name in formats),
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def sip(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Caller:
    """One call's worth of SIP from the phone: builds its requests as text."""

    phone: Phone
    ua: Address
    call_id: str = field(default_factory=lambda: f"call-{secrets.token_hex(6)}")
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    number: str = "3331234567"
    user_agent: str = "test-phone/1.0"
    rtp_port: int = 40999  # nothing listens there; tests that check media pass their own
    to_tag: str | None = None  # ours from the 180/200
    dialled: str = "100"

    def headers(
        self, method: str, cseq: int, branch: str, *, to_tag: str | None = None
    ) -> list[tuple[str, str]]:
        host, port = self.phone.address
        to = f"<sip:{self.dialled}@{self.ua[0]}:{self.ua[1]}>" + (
            f";tag={to_tag}" if to_tag else ""
        )
        return [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={branch};rport"),
            ("From", f'"Mario Rossi" <sip:{self.number}@{host}:{port}>;tag={self.tag}'),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
            ("User-Agent", self.user_agent),
        ]

    @property
    def first_branch(self) -> str:
        return f"z9hG4bK-{self.call_id}-1"

    def invite(
        self,
        branch: str | None = None,
        *,
        cseq: int = 1,
        body: bytes | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        to_tag: str | None = None,
    ) -> bytes:
        host, port = self.phone.address
        body = sdp(self.rtp_port) if body is None else body
        headers = self.headers("INVITE", cseq, branch or self.first_branch, to_tag=to_tag)
        headers += [("Contact", f"<sip:phone@{host}:{port}>"), *extra]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return sip(f"INVITE sip:{self.dialled}@{self.ua[0]}:{self.ua[1]} SIP/2.0", headers, body)

    def ack(self, branch: str | None = None, *, cseq: int = 1) -> bytes:
        branch = branch or f"z9hG4bK-{self.call_id}-ack-{cseq}"
        headers = self.headers("ACK", cseq, branch, to_tag=self.to_tag)
        return sip(f"ACK sip:triage@{self.ua[0]}:{self.ua[1]} SIP/2.0", headers)

    def in_dialog(self, method: str, cseq: int, branch: str | None = None) -> bytes:
        branch = branch or f"z9hG4bK-{self.call_id}-{method.lower()}-{cseq}"
        headers = self.headers(method, cseq, branch, to_tag=self.to_tag)
        return sip(f"{method} sip:triage@{self.ua[0]}:{self.ua[1]} SIP/2.0", headers)

    def cancel(self, branch: str | None = None) -> bytes:
        headers = self.headers("CANCEL", 1, branch or self.first_branch)
        return sip(f"CANCEL sip:{self.dialled}@{self.ua[0]}:{self.ua[1]} SIP/2.0", headers)

    def send(self, data: bytes) -> None:
        self.phone.send(data, self.ua)

    async def answered(self) -> SipResponse:
        """Send the INVITE, read 100, 180, 200 and keep our To tag."""
        self.send(self.invite())
        assert await self.phone.statuses(2) == [100, 180]
        ok = await self.phone.response()
        assert ok.status == 200, ok
        self.to_tag = ok.to_addr.tag
        return ok

    async def connected(self) -> SipResponse:
        ok = await self.answered()
        self.send(self.ack())
        return ok


def reply(request: SipRequest, status: int, reason: str = "OK", *, to_tag: str = "") -> bytes:
    """A response of the phone's to a request of the agent's."""
    headers = [(name, value) for name, value in request.headers if name == "Via"]
    to = request.headers.get("To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    headers += [
        ("From", request.headers.get("From") or ""),
        ("To", to),
        ("Call-ID", request.call_id),
        ("CSeq", str(request.cseq)),
    ]
    return sip(f"SIP/2.0 {status} {reason}", headers)


# --- The agent ------------------------------------------------------------------------------


def engines(brain: FakeBrain | None = None) -> CallEngines:
    return CallEngines(
        brain or FakeBrain(),
        FakeSynthesizer(),
        lambda language: FakeRecognizer(),
        CallSettings(no_input_timeout_s=30.0),
    )


@asynccontextmanager
async def running(brain: FakeBrain | None = None, **settings: Any) -> AsyncIterator[SipUserAgent]:
    options: dict[str, Any] = {"port": 0, "timers": TIMERS, **RTP_RANGE, **settings}
    agent = await SipUserAgent.start(SipSettings(**options), engines(brain))
    try:
        yield agent
    finally:
        async with asyncio.timeout(10):
            await agent.close()
        assert agent.stats.transport.handler_errors == 0


async def until(
    agent: SipUserAgent, predicate: Callable[[SipStats], bool], within_s: float = WAIT_S
) -> SipStats:
    return await asyncio.wait_for(agent.wait_for(predicate), within_s)


def record(agent: SipUserAgent) -> CallRecord:
    assert agent.recent_calls, "no call has ended"
    return agent.recent_calls[-1]


@pytest.fixture
async def phone() -> AsyncIterator[Phone]:
    device = await Phone.open()
    yield device
    await device.close()


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        task
        for task in asyncio.all_tasks() - before
        if not task.done() and task is not asyncio.current_task()
    ]
    assert not leaked, f"tasks left running: {[t.get_name() for t in leaked]}"


# --- Calls ----------------------------------------------------------------------------------


async def test_an_invite_is_answered_with_sdp_and_the_caller_hanging_up_ends_it(
    phone: Phone,
) -> None:
    brain = FakeBrain()
    async with running(brain) as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.invite())

        trying, ringing, ok = [await phone.response() for _ in range(3)]

        assert (trying.status, ringing.status, ok.status) == (100, 180, 200)
        assert trying.to_addr.tag is None and ringing.to_addr.tag == ok.to_addr.tag
        assert ok.content_type == "application/sdp"
        answer = parse_sdp(ok.body)
        audio = answer.media[0]
        assert audio.media == "audio" and audio.formats[0] == "0" and audio.port >= 44000
        assert answer.connection is not None and answer.connection.address == LOOPBACK
        assert ok.contact_uri is not None and ok.contact_uri.port == agent.local_address[1]
        assert "INVITE" in ok.headers.get_all("Allow") and "Supported" in ok.headers
        assert ok.top_via.rport == phone.address[1]

        caller.to_tag = ok.to_addr.tag
        caller.send(caller.ack())
        await until(agent, lambda s: s.calls_started == 1)
        caller.send(caller.in_dialog("BYE", 2))
        bye_ok = await phone.response()
        stats = await until(agent, lambda s: s.calls_ended == 1)

        assert bye_ok.status == 200 and bye_ok.cseq.method == "BYE"
        assert stats.end_reasons == {"caller_hung_up": 1} and stats.byes_sent == 0
        assert stats.active_calls == 0
        ended = record(agent)
        assert ended.talked and ended.reason == "caller_hung_up" and ended.codec == "PCMU"
        assert ended.context.dialled == "100" and ended.context.caller == "3331234567"
        assert ended.context.call_id != caller.call_id
        assert ended.rtp is not None and ended.rtp.sent > 0
        assert brain.seen[0] == ("begin", "100") and brain.ended_with == "caller_hung_up"
        await phone.nothing_more()


async def test_the_caller_is_read_from_p_asserted_identity_first_from_a_trunk(
    phone: Phone,
) -> None:
    async with running(allowed_sources=(LOOPBACK,)) as agent:
        caller = Caller(phone, agent.local_address, number="anonymous")
        pai = (("P-Asserted-Identity", "<tel:+390212345678>"),)
        caller.send(caller.invite(extra=pai))
        assert await phone.statuses(3) == [100, 180, 200]
        await agent.close()
        assert record(agent).context.caller == "+390212345678"


async def test_p_asserted_identity_is_ignored_without_allowed_sources(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        pai = (("P-Asserted-Identity", "<tel:+390212345678>"),)
        caller.send(caller.invite(extra=pai))
        assert await phone.statuses(3) == [100, 180, 200]
        await agent.close()
        assert record(agent).context.caller == "3331234567"  # From: a hint, not an identity


async def test_a_retransmitted_invite_makes_exactly_one_call(phone: Phone) -> None:
    brain = FakeBrain()
    async with running(brain) as agent:
        caller = Caller(phone, agent.local_address)
        invite = caller.invite()
        caller.send(invite)
        caller.send(invite)  # before any response
        assert await phone.statuses(3) == [100, 180, 200]
        copies = phone.copies
        caller.send(invite)  # after the 200: its copy comes back
        await until(agent, lambda s: s.retransmissions_absorbed == 2)
        await asyncio.sleep(0.05)
        assert phone.copies > copies, "the 200 again"

        ok = [m for _, m in phone.log if isinstance(m, SipResponse) and m.status == 200]
        caller.to_tag = ok[0].to_addr.tag
        assert {m.to_addr.tag for m in ok} == {caller.to_tag}, "one dialog"
        caller.send(caller.ack())
        caller.send(caller.ack())  # and an ACK repeated for the repeated 200
        stats = await until(agent, lambda s: s.calls_started == 1)

        assert stats.retransmissions_absorbed == 2 and stats.stray_acks == 0
        await asyncio.sleep(QUIET_S)
        assert agent.stats.calls_started == 1 and agent.stats.active_calls == 1
        assert [w for w, _ in brain.seen].count("begin") == 1


async def test_the_same_invite_by_another_path_is_refused_482(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.answered()
        caller.send(caller.invite(branch=f"z9hG4bK-{caller.call_id}-other-path"))
        assert await phone.statuses(1) == [482]
        assert agent.stats.rejected["merged"] == 1 and agent.stats.active_calls == 1


async def test_a_lost_ack_retransmits_the_200_doubling_to_t2_then_drops_the_call(
    phone: Phone,
) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.invite())
        stats = await until(agent, lambda s: s.ack_timeouts == 1, TIMERS.timeout_s + WAIT_S)

        times = phone.received(200)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 8, "T1, 2T1, 4T1, then T2 steps until 64*T1"
        assert gaps[0] == pytest.approx(TIMERS.t1_s, abs=0.03)
        assert gaps[2] > 1.5 * gaps[0] and max(gaps) < TIMERS.t2_s + 0.08
        assert stats.calls_started == 0 and stats.active_calls == 0 and stats.byes_sent == 0
        assert record(agent).reason == "ack_timeout" and not record(agent).talked
        phone.drain()
        await phone.nothing_more()  # no BYE: without an ACK there is no dialog to end


async def test_cancel_before_the_answer_gets_200_and_the_invite_487(phone: Phone) -> None:
    async with running(ring_s=5.0) as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.invite())
        assert await phone.statuses(2) == [100, 180]

        caller.send(caller.cancel())
        cancel_ok, terminated = await phone.response(), await phone.response()

        assert (cancel_ok.status, cancel_ok.cseq.method) == (200, "CANCEL")
        assert (terminated.status, terminated.cseq.method) == (487, "INVITE")
        # the phone ACKs the 487 in the INVITE's transaction (same branch)
        stats = await until(agent, lambda s: s.cancelled == 1)
        await phone.nothing_more(TIMERS.t2_s * 2)  # the ACK stopped the 487's retransmissions
        assert agent.stats.stray_acks == 0 and stats.calls_started == 0
        assert agent.stats.active_calls == 0


async def test_a_cancel_right_behind_its_invite_is_handled_whichever_wins(
    phone: Phone, caplog: pytest.LogCaptureFixture
) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.invite())
        caller.send(caller.cancel())
        responses = [await phone.response() for _ in range(4)]
        by_method = {(r.cseq.method, r.status) for r in responses}
        assert ("CANCEL", 200) in by_method and ("INVITE", 100) in by_method
        if ("INVITE", 487) in by_method:  # the CANCEL came before our answer
            await until(agent, lambda s: s.cancelled == 1)
        else:  # it came too late: the call is answered and goes on
            assert ("INVITE", 200) in by_method
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_closing_while_a_call_rings_refuses_it_503(phone: Phone) -> None:
    async with running(ring_s=5.0) as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.invite())
        assert await phone.statuses(2) == [100, 180]
        await agent.close()
        assert await phone.statuses(1) == [503]
        assert record(agent).reason == "shutdown" and agent.stats.active_calls == 0


async def test_closing_between_the_200_and_its_ack_sends_bye_once_the_ack_comes(
    phone: Phone,
) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.answered()  # no ACK yet
        closing = asyncio.create_task(agent.close())
        await asyncio.sleep(0.2)
        assert phone.requests.empty(), "a BYE before the ACK (RFC 3261 §15)"
        caller.send(caller.ack())
        bye = await phone.request()
        assert bye.method == "BYE" and bye.call_id == caller.call_id
        caller.send(reply(bye, 200, to_tag=caller.tag))
        await asyncio.wait_for(closing, WAIT_S)
    assert record(agent).reason == "shutdown" and agent.stats.byes_sent == 1


async def test_closing_after_a_200_that_is_never_acked_ends_without_bye(phone: Phone) -> None:
    async with running(answered_shutdown_wait_s=0.3) as agent:
        caller = Caller(phone, agent.local_address)
        await caller.answered()
        await asyncio.wait_for(agent.close(), WAIT_S)
        assert record(agent).reason == "shutdown" and agent.stats.byes_sent == 0
        assert all(not isinstance(m, SipRequest) for _, m in phone.log), "no BYE"


async def test_a_cancel_after_the_answer_gets_200_and_changes_nothing(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        await until(agent, lambda s: s.calls_started == 1)
        caller.send(caller.cancel())
        assert await phone.statuses(1) == [200]
        await phone.nothing_more()
        assert agent.stats.active_calls == 1 and agent.stats.cancelled == 0


async def test_cancel_for_an_unknown_transaction_is_481(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.cancel(branch="z9hG4bK-never-sent"))
        assert await phone.statuses(1) == [481]


async def test_bye_for_an_unknown_dialog_is_481(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address, to_tag="no-such-dialog")
        caller.send(caller.in_dialog("BYE", 2))
        response = await phone.response()
        assert response.status == 481 and response.reason == "Call/Transaction Does Not Exist"


async def test_a_reinvite_keeps_the_codec_and_moves_the_media(phone: Phone) -> None:
    moved = await Phone.open()  # its socket stands in for the caller's new RTP port
    try:
        async with running() as agent:
            caller = Caller(phone, agent.local_address)
            first = await caller.connected()
            await until(agent, lambda s: s.calls_started == 1)
            new_port = moved.address[1]
            offer = sdp(new_port, (8, "PCMA"), (0, "PCMU"))  # PCMA first: must stay PCMU
            caller.send(
                caller.invite(
                    f"z9hG4bK-{caller.call_id}-reinv", cseq=2, body=offer, to_tag=caller.to_tag
                )
            )

            assert await phone.statuses(1) == [100]
            ok = await phone.response()
            assert ok.status == 200
            assert ok.contact_uri is not None and ok.contact_uri.port == agent.local_address[1]
            assert parse_sdp(ok.body).media[0].formats[0] == "0"
            assert parse_sdp(ok.body).media[0].port == parse_sdp(first.body).media[0].port
            caller.send(caller.ack(cseq=2))
            data, _ = await asyncio.wait_for(moved._protocol.datagrams.get(), WAIT_S)
            assert data[1] & 0x7F == 0, "PCMU RTP arrives at the new port"
    finally:
        await moved.close()


async def test_a_reinvite_to_hold_stops_our_media_and_one_to_resume_restarts_it(
    phone: Phone,
) -> None:
    transport, rtp = await asyncio.get_running_loop().create_datagram_endpoint(
        _Socket, local_addr=(LOOPBACK, 0)
    )  # the caller's RTP socket
    rtp_port = int(transport.get_extra_info("sockname")[1])
    packets = rtp.datagrams

    async def reinvite(cseq: int, direction: str) -> str:
        offer = sdp(rtp_port) + f"a={direction}\r\n".encode()
        branch = f"z9hG4bK-{caller.call_id}-reinv-{cseq}"
        caller.send(caller.invite(branch, cseq=cseq, body=offer, to_tag=caller.to_tag))
        assert await phone.statuses(1) == [100]
        ok = await phone.response()
        assert ok.status == 200
        caller.send(caller.ack(cseq=cseq))
        answer = parse_sdp(ok.body)
        return media_direction(answer, answer.media[0]).value

    try:
        async with running() as agent:
            caller = Caller(phone, agent.local_address, rtp_port=rtp_port)
            await caller.connected()
            await until(agent, lambda s: s.calls_started == 1)
            await asyncio.wait_for(packets.get(), WAIT_S)  # media flows

            assert await reinvite(2, "sendonly") == "recvonly"
            await asyncio.sleep(0.1)  # what was on its way
            while not packets.empty():
                packets.get_nowait()
            await asyncio.sleep(0.4)
            assert packets.empty(), "RTP sent to a caller who holds the call"

            assert await reinvite(3, "sendrecv") == "sendrecv"
            await asyncio.wait_for(packets.get(), WAIT_S)  # media flows again
            assert agent.stats.calls_ended == 0
    finally:
        transport.close()


async def test_the_bot_hanging_up_sends_exactly_one_bye(phone: Phone) -> None:
    brain = FakeBrain(greeting=BrainReply("it", ("Arrivederci.",), hang_up=True))
    async with running(brain) as agent:
        caller = Caller(phone, agent.local_address)
        ok = await caller.connected()
        bye = await phone.request()

        assert bye.method == "BYE" and bye.uri == f"sip:phone@{LOOPBACK}:{phone.address[1]}"
        assert bye.from_addr.tag == ok.to_addr.tag and bye.to_addr.tag == caller.tag
        caller.send(reply(bye, 200))
        stats = await until(agent, lambda s: s.calls_ended == 1)
        assert stats.end_reasons == {"bot_hung_up": 1} and stats.byes_sent == 1
        await phone.nothing_more()


async def test_close_ends_a_call_in_progress_with_bye(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        await until(agent, lambda s: s.calls_started == 1)
        closing = asyncio.create_task(agent.close())
        bye = await phone.request()
        caller.send(reply(bye, 200))
        await asyncio.wait_for(closing, WAIT_S)
        assert bye.method == "BYE" and record(agent).reason == "shutdown"
        assert agent.stats.byes_sent == 1


# --- Transfers ------------------------------------------------------------------------------


def transferring_brain(handoff_id: str = "h-77") -> FakeBrain:
    transfer = Transfer(handoff_id, "billing", f"sip:billing@{LOOPBACK}:5070")
    return FakeBrain(greeting=BrainReply("it", ("Un attimo.",), transfer=transfer))


def notify(caller: Caller, cseq: int, sipfrag: bytes, state: str) -> bytes:
    branch = f"z9hG4bK-{caller.call_id}-notify-{cseq}"
    headers = caller.headers("NOTIFY", cseq, branch, to_tag=caller.to_tag)
    headers += [
        ("Event", "refer"),
        ("Subscription-State", state),
        ("Content-Type", "message/sipfrag"),
    ]
    return sip(f"NOTIFY sip:triage@{caller.ua[0]}:{caller.ua[1]} SIP/2.0", headers, sipfrag)


async def test_a_transfer_is_a_refer_with_the_handoff_id_and_a_final_notify_ends_our_leg(
    phone: Phone,
) -> None:
    brain = transferring_brain("h-77")
    async with running(brain) as agent:
        caller = Caller(phone, agent.local_address)
        ok = await caller.connected()
        refer = await phone.request()

        assert refer.method == "REFER" and refer.from_addr.tag == ok.to_addr.tag
        assert refer.headers.get("Refer-To") == (
            f"<sip:billing@{LOOPBACK}:5070?X-Handoff-Id=h-77&User-to-User=682d3737%3Bencoding%3Dhex>"
        )
        assert refer.headers.get("X-Handoff-Id") == "h-77"
        assert refer.headers.get("Referred-By") == f"<sip:100@{LOOPBACK}:{agent.local_address[1]}>"
        assert refer.contact_uri is not None
        # a NOTIFY may overtake the 202: it must count all the same
        caller.send(notify(caller, 2, b"SIP/2.0 100 Trying\r\n", "active;expires=60"))
        caller.send(reply(refer, 202, "Accepted"))
        caller.send(notify(caller, 3, b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource"))
        assert [(r.status, r.cseq.method) for r in [await phone.response() for _ in range(2)]] == [
            (200, "NOTIFY"),
            (200, "NOTIFY"),
        ]
        bye = await phone.request()
        caller.send(reply(bye, 200))
        stats = await until(agent, lambda s: s.calls_ended == 1)

        assert bye.method == "BYE" and stats.end_reasons == {"transferred": 1}
        assert stats.byes_sent == 1
        assert ("transferred", "h-77") in brain.seen
        await phone.nothing_more()


async def test_a_refused_refer_is_a_failed_transfer_and_the_call_goes_on(phone: Phone) -> None:
    brain = transferring_brain()
    async with running(brain) as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        refer = await phone.request()
        caller.send(reply(refer, 603, "Decline"))
        # FakeBrain's answer to a failed transfer: "we will call you back", then hang up
        bye = await phone.request(within_s=WAIT_S * 2)
        caller.send(reply(bye, 200))
        stats = await until(agent, lambda s: s.calls_ended == 1)
        assert bye.method == "BYE" and stats.end_reasons == {"bot_hung_up": 1}
        assert ("transfer_failed", "h-77") in brain.seen and stats.byes_sent == 1


async def test_no_final_notify_within_the_transfer_timeout_is_a_failed_transfer(
    phone: Phone,
) -> None:
    brain = transferring_brain()
    async with running(brain, transfer_timeout_s=0.5) as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        refer = await phone.request()
        caller.send(reply(refer, 202, "Accepted"))
        caller.send(notify(caller, 2, b"SIP/2.0 180 Ringing\r\n", "active;expires=60"))
        assert (await phone.response()).status == 200
        bye = await phone.request(within_s=WAIT_S * 2)
        caller.send(reply(bye, 200))
        await until(agent, lambda s: s.calls_ended == 1)
        assert ("transfer_failed", "h-77") in brain.seen


@pytest.mark.parametrize(
    ("sipfrag", "reason"),
    [(b"SIP/2.0 200 OK\r\n", "transferred"), (b"SIP/2.0 486 Busy Here\r\n", "bot_hung_up")],
    ids=["answered", "busy"],
)
async def test_a_transfer_outcome_after_its_timeout(
    phone: Phone, sipfrag: bytes, reason: str
) -> None:
    # The phone accepted the REFER, but its outcome comes after we told the caller it failed:
    # answered, the caller is with the queue now and our leg goes (the booked callback is in
    # the record); a failure changes nothing: the "we will call you back" (7 s) goes on.
    brain = transferring_brain()
    brain.failed = BrainReply("it", ("La richiameremo al più presto. " * 4,), hang_up=True)
    async with running(brain, transfer_timeout_s=0.3) as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        refer = await phone.request()
        caller.send(reply(refer, 202, "Accepted"))
        await asyncio.wait_for(brain.wait_until_seen("transfer_failed", "h-77"), WAIT_S)
        caller.send(notify(caller, 2, sipfrag, "terminated;reason=noresource"))
        assert (await phone.response()).status == 200
        bye = await phone.request(within_s=WAIT_S * 4)
        caller.send(reply(bye, 200))
        stats = await until(agent, lambda s: s.calls_ended == 1)

        assert bye.method == "BYE" and stats.end_reasons == {reason: 1}
        assert (("transferred", "h-77") in brain.seen) is (reason == "transferred")
        assert brain.ended_with == reason


async def test_a_notify_outside_a_transfer_is_refused(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        caller.send(notify(caller, 2, b"SIP/2.0 200 OK\r\n", "terminated"))
        assert (await phone.response()).status == 481
        caller.to_tag = "elsewhere"
        caller.send(notify(caller, 3, b"SIP/2.0 200 OK\r\n", "terminated"))
        assert (await phone.response()).status == 481


# --- Refusals -------------------------------------------------------------------------------


async def test_options_is_answered_with_allow_accept_and_supported(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", caller.headers("OPTIONS", 1, "z9o1")))
        ok = await phone.response()
        assert ok.status == 200
        assert set(ok.headers.get_all("Allow")) >= {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"}
        assert ok.headers.get("Accept") == "application/sdp" and "Supported" in ok.headers

        await caller.connected()
        caller.send(caller.in_dialog("OPTIONS", 2))
        caller.send(caller.in_dialog("INFO", 3))
        assert await phone.statuses(2) == [200, 200]


async def test_an_unknown_method_is_501_and_a_known_one_we_do_not_take_405_both_with_allow(
    phone: Phone,
) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(
            sip(f"FROBNICATE sip:{LOOPBACK} SIP/2.0", caller.headers("FROBNICATE", 1, "z9f"))
        )
        caller.send(sip(f"REFER sip:{LOOPBACK} SIP/2.0", caller.headers("REFER", 2, "z9r")))
        unknown, refer = await phone.response(), await phone.response()
        assert unknown.status == 501 and refer.status == 405
        assert "INVITE" in unknown.headers.get_all("Allow")
        assert "REFER" not in refer.headers.get_all("Allow")


async def test_a_malformed_request_is_answered_400_and_garbage_is_dropped(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        headers = caller.headers("OPTIONS", 1, "z9bad")
        caller.send(sip(f"OPTIONS  sip:{LOOPBACK} SIP/2.0", headers))  # two spaces
        long_body = sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", headers).replace(
            b"Content-Length: 0", b"Content-Length: 500"
        )
        caller.send(long_body)
        caller.send(b"\x00\x01 not SIP at all \xff")
        caller.send(b"\r\n\r\n")  # a keep-alive
        caller.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", caller.headers("OPTIONS", 2, "z9ok")))

        assert await phone.statuses(3) == [400, 400, 200]
        stats = agent.stats
        assert stats.malformed == 3 and stats.transport.keepalives == 1
        assert stats.transport.bad_requests == 2


async def test_a_request_over_the_size_limit_is_513_when_readable(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        body = b"v=0\r\n" + b"a=x\r\n" * (MAX_MESSAGE_BYTES // 5)
        caller.send(caller.invite(body=body))
        caller.send(b"X" * (MAX_MESSAGE_BYTES + 10))  # no header section to answer along
        caller.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", caller.headers("OPTIONS", 2, "z9ok")))
        assert await phone.statuses(2) == [513, 200]
        assert agent.stats.transport.oversized == 2


async def test_the_call_limit_is_answered_503_with_retry_after(phone: Phone) -> None:
    async with running(max_calls=1, retry_after_s=17) as agent:
        await Caller(phone, agent.local_address).connected()
        second = Caller(phone, agent.local_address)
        second.send(second.invite())
        busy = await phone.response()
        assert busy.status == 503 and busy.headers.get("Retry-After") == "17"
        assert agent.stats.rejected["busy"] == 1 and agent.stats.active_calls == 1


def held_even_udp_port() -> socket.socket:
    """A socket bound to an even UDP port of loopback (RTP ports are even)."""
    for _ in range(50):
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        held.bind((LOOPBACK, 0))
        if held.getsockname()[1] % 2 == 0:
            return held
        held.close()
    raise RuntimeError("no even UDP port on loopback")


async def test_no_free_rtp_port_is_answered_503(phone: Phone) -> None:
    with held_even_udp_port() as taken:  # the whole one-port range, in use
        port = taken.getsockname()[1]
        async with running(rtp_port_min=port, rtp_port_max=port) as agent:
            caller = Caller(phone, agent.local_address)
            caller.send(caller.invite())
            assert await phone.statuses(2) == [100, 180]
            busy = await phone.response()
            assert busy.status == 503 and "Retry-After" in busy.headers
            await until(agent, lambda s: s.active_calls == 0)
            assert agent.stats.rejected["rtp_ports"] == 1
            assert record(agent).reason == "rtp_ports" and record(agent).rtp is None


async def test_an_offer_without_g711_or_without_sdp_is_488(phone: Phone) -> None:
    async with running() as agent:
        g729 = Caller(phone, agent.local_address)
        g729.send(g729.invite(body=sdp(40998, (18, "G729"))))
        no_offer = Caller(phone, agent.local_address)
        no_offer.send(no_offer.invite(body=b""))
        assert await phone.statuses(2) == [488, 488]
        assert agent.stats.rejected == {"no_media": 1, "no_offer": 1}
        assert agent.stats.active_calls == 0


async def test_a_scanner_user_agent_is_dropped_silently(phone: Phone) -> None:
    async with running() as agent:
        scanner = Caller(phone, agent.local_address, user_agent="friendly-scanner")
        scanner.send(scanner.invite())
        scanner.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", scanner.headers("OPTIONS", 2, "z9s")))
        await phone.nothing_more()
        honest = Caller(phone, agent.local_address)
        honest.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", honest.headers("OPTIONS", 1, "z9h")))
        assert await phone.statuses(1) == [200]
        assert agent.stats.rejected["scanner"] == 2


@pytest.mark.parametrize(
    ("allowed", "answered"), [(("10.0.0.0/8",), False), (("127.0.0.1",), True)]
)
async def test_only_allowed_sources_are_answered(
    phone: Phone, allowed: tuple[str, ...], answered: bool
) -> None:
    async with running(allowed_sources=allowed) as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", caller.headers("OPTIONS", 1, "z9a")))
        if answered:
            assert await phone.statuses(1) == [200]
        else:
            await phone.nothing_more()
            assert agent.stats.rejected["source_not_allowed"] == 1


def authorization(challenge: str, uri: str, password: str) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    h = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}[params["algorithm"]]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = hx(f"trunk1:{params['realm']}:{password}")
    response = hx(f"{ha1}:{params['nonce']}:00000001:c0ffee:auth:{hx(f'INVITE:{uri}')}")
    return (
        f'Digest username="trunk1", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm={params["algorithm"]}, qop=auth, '
        'nc=00000001, cnonce="c0ffee"'
    )


async def test_digest_auth_challenges_an_invite_and_accepts_the_right_answer(
    phone: Phone,
) -> None:
    credentials = DigestCredentials("triage", "trunk1", "s3cret")
    async with running(auth=credentials) as agent:
        caller = Caller(phone, agent.local_address)
        uri = f"sip:100@{agent.local_address[0]}:{agent.local_address[1]}"
        caller.send(caller.invite())
        challenge = await phone.response()
        assert challenge.status == 401
        offered = challenge.headers.get_all("WWW-Authenticate")
        assert [re.search(r"algorithm=([\w-]+)", v).group(1) for v in offered] == [  # type: ignore[union-attr]
            "SHA-256",
            "MD5",
        ]

        wrong = (("Authorization", authorization(offered[0], uri, "guess")),)
        caller.send(caller.invite(f"z9hG4bK-{caller.call_id}-2", cseq=2, extra=wrong))
        assert await phone.statuses(1) == [401]
        right = (("Authorization", authorization(offered[1], uri, "s3cret")),)
        caller.send(caller.invite(f"z9hG4bK-{caller.call_id}-3", cseq=3, extra=right))
        assert await phone.statuses(3) == [100, 180, 200]
        assert agent.stats.rejected == {"auth_challenged": 1, "auth_failed": 1}


TRUNK_AUTH = DigestCredentials("triage", "trunk1", "s3cret")
OTHER_LOOPBACK = "127.0.0.2"  # Linux routes all of 127/8 to lo: a second source address


def answer(
    caller: Caller, challenge: SipResponse, password: str, cseq: int, *, body: bytes | None = None
) -> bytes:
    """A new INVITE of the caller's answering the challenge's first ``WWW-Authenticate``."""
    uri = f"sip:{caller.dialled}@{caller.ua[0]}:{caller.ua[1]}"
    offered = challenge.headers.get_all("WWW-Authenticate")[0]
    credentials = (("Authorization", authorization(offered, uri, password)),)
    return caller.invite(
        f"z9hG4bK-{caller.call_id}-{cseq}", cseq=cseq, extra=credentials, body=body
    )


async def lock_out(caller: Caller, failures: int) -> tuple[SipResponse, int]:
    """An INVITE, then ``failures`` wrong answers: the last 401 and the last CSeq used."""
    caller.send(caller.invite())
    response = await caller.phone.response()
    for cseq in range(2, failures + 2):
        assert response.status == 401
        caller.send(answer(caller, response, "guess", cseq))
        response = await caller.phone.response()
    assert response.status == 401
    return response, failures + 1


async def talk_and_hang_up(agent: SipUserAgent, caller: Caller, cseq: int) -> None:
    """Read 100, 180, 200 of the INVITE sent with ``cseq``, ACK it, then BYE."""
    assert await caller.phone.statuses(2) == [100, 180]
    ok = await caller.phone.response()
    assert ok.status == 200, ok
    caller.to_tag = ok.to_addr.tag
    caller.send(caller.ack(cseq=cseq))
    started = agent.stats.calls_started
    await until(agent, lambda s: s.calls_started == started + 1)
    caller.send(caller.in_dialog("BYE", cseq + 1))
    assert await caller.phone.statuses(1) == [200]


async def test_wrong_digest_answers_in_a_row_lock_the_source_out_even_for_the_right_one(
    phone: Phone, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(auth=TRUNK_AUTH, auth_max_failures=3) as agent:
        caller = Caller(phone, agent.local_address)
        last_challenge, cseq = await lock_out(caller, 3)

        for later in (cseq + 1, cseq + 2):  # the password, with a nonce never used
            caller.send(answer(caller, last_challenge, "s3cret", later))
            refused = await phone.response()
            assert refused.status == 403 and "WWW-Authenticate" not in refused.headers
        other_port = await Phone.open()  # the same address from another port: still locked
        try:
            moved = Caller(other_port, agent.local_address)
            moved.send(moved.invite())
            assert await other_port.statuses(1) == [403]
        finally:
            await other_port.close()

        assert agent.stats.rejected == {"auth_challenged": 1, "auth_failed": 3, "auth_locked": 3}
    warnings = [
        r for r in caplog.records if r.name == "voice.sip.agent" and r.levelname == "WARNING"
    ]
    assert len(warnings) == 1, "one warning when the source is locked, none per request"
    text = warnings[0].getMessage()
    assert LOOPBACK in text and "locked out" in text
    assert not any(personal in text for personal in ("3331234567", "Mario", "trunk1"))


async def test_challenges_and_stale_nonces_never_lock_a_source_out(phone: Phone) -> None:
    # Authenticated INVITEs here carry no offer: 488 comes after authentication has passed,
    # and no call is left to tear down.
    async with running(auth=TRUNK_AUTH, auth_max_failures=2) as agent:
        caller = Caller(phone, agent.local_address)
        for cseq in range(1, 5):
            caller.send(caller.invite(f"z9hG4bK-{caller.call_id}-{cseq}", cseq=cseq))
        challenges = [await phone.response() for _ in range(4)]
        assert [c.status for c in challenges] == [401] * 4
        caller.send(answer(caller, challenges[-1], "s3cret", 5, body=b""))
        assert await phone.statuses(1) == [488]

        for cseq in range(6, 9):  # the same answer again: its nonce count is used up
            caller.send(answer(caller, challenges[-1], "s3cret", cseq, body=b""))
        stale = [await phone.response() for _ in range(3)]
        assert [s.status for s in stale] == [401] * 3
        assert all("stale=true" in (s.headers.get("WWW-Authenticate") or "") for s in stale)
        caller.send(answer(caller, stale[-1], "s3cret", 9, body=b""))
        assert await phone.statuses(1) == [488]
        assert agent.stats.rejected == {"auth_challenged": 7, "no_offer": 2}


async def test_a_right_answer_clears_the_wrong_answers_before_it(phone: Phone) -> None:
    async with running(auth=TRUNK_AUTH, auth_max_failures=2) as agent:
        caller = Caller(phone, agent.local_address)
        challenge, cseq = await lock_out(caller, 1)
        for _ in range(3):
            caller.send(answer(caller, challenge, "s3cret", cseq + 1, body=b""))
            assert await phone.statuses(1) == [488]
            caller.send(answer(caller, challenge, "guess", cseq + 2))
            challenge = await phone.response()
            assert challenge.status == 401
            cseq += 2
        assert agent.stats.rejected == {"auth_challenged": 1, "auth_failed": 4, "no_offer": 3}


async def test_a_locked_out_source_does_not_lock_out_another_address(phone: Phone) -> None:
    trunk_phone = await Phone.open(OTHER_LOOPBACK)
    try:
        async with running(auth=TRUNK_AUTH, auth_max_failures=2) as agent:
            guesser = Caller(phone, agent.local_address)
            _, cseq = await lock_out(guesser, 2)
            guesser.send(guesser.invite(f"z9hG4bK-{guesser.call_id}-locked", cseq=cseq + 1))
            assert await phone.statuses(1) == [403]

            trunk = Caller(trunk_phone, agent.local_address)
            trunk.send(trunk.invite())
            challenge = await trunk_phone.response()
            assert challenge.status == 401
            trunk.send(answer(trunk, challenge, "s3cret", 2))
            await talk_and_hang_up(agent, trunk, 2)

            guesser.send(guesser.invite(f"z9hG4bK-{guesser.call_id}-still", cseq=cseq + 2))
            assert await phone.statuses(1) == [403]
            assert agent.stats.rejected["auth_locked"] == 2
    finally:
        await trunk_phone.close()


async def test_once_the_lockout_is_over_the_right_answer_is_accepted_again(phone: Phone) -> None:
    async with running(auth=TRUNK_AUTH, auth_max_failures=2, auth_lockout_s=0.3) as agent:
        caller = Caller(phone, agent.local_address)
        _, cseq = await lock_out(caller, 2)
        statuses: list[int] = []
        async with asyncio.timeout(WAIT_S):  # INVITEs without credentials until challenged
            while True:
                cseq += 1
                caller.send(caller.invite(f"z9hG4bK-{caller.call_id}-{cseq}", cseq=cseq))
                challenge = await phone.response()
                statuses.append(challenge.status)
                if challenge.status != 403:
                    break
                await asyncio.sleep(0.05)

        assert statuses[0] == 403 and set(statuses[:-1]) == {403} and statuses[-1] == 401
        caller.send(answer(caller, challenge, "s3cret", cseq + 1))
        await talk_and_hang_up(agent, caller, cseq + 1)
        stats = await until(agent, lambda s: s.calls_ended == 1)
        assert stats.rejected["auth_locked"] == len(statuses) - 1


@pytest.mark.parametrize("name", ["auth_max_failures", "auth_failure_window_s", "auth_lockout_s"])
def test_sip_settings_refuse_a_lockout_setting_that_is_not_positive(name: str) -> None:
    options: dict[str, Any] = {name: 0}
    with pytest.raises(ValueError, match=name):
        SipSettings(**options)


async def test_a_response_nobody_asked_for_is_dropped_and_counted(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        headers = caller.headers("BYE", 5, "z9hG4bK-not-ours", to_tag="x")
        caller.send(sip("SIP/2.0 200 OK", headers))
        caller.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", caller.headers("OPTIONS", 1, "z9o")))
        assert await phone.statuses(1) == [200]
        assert agent.stats.unexpected_responses == 1


# --- The RFC 4475 torture messages over the wire --------------------------------------------

# What a UAS answers where RFC 4475 names it and the message can be answered at all.
CORPUS_STATUS = {
    "intmeth.dat": 501,
    "esc02.dat": 501,
    "badvers.dat": 505,
    "unkscm.dat": 416,
    "novelsc.dat": 416,
    "bext01.dat": 420,
    "invut.dat": 415,
    "sdp01.dat": 406,
    "insuf.dat": 400,
    "mismatch01.dat": 400,
    "mismatch02.dat": 501,
    "clerr.dat": 400,
    "ncl.dat": 400,
    "baddate.dat": 400,
    "escruri.dat": 400,
    "quotbal.dat": 400,
}


def _call_id(message: bytes) -> str | None:
    found = re.search(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", message, re.IGNORECASE | re.MULTILINE)
    return found.group(1).decode() if found else None


def corpus_files() -> Iterator[Path]:
    if not (CORPUS / "manifest.json").is_file():
        pytest.skip(f"RFC 4475 corpus not found: {CORPUS} is missing")
    yield from sorted(CORPUS.glob("*.dat"))


async def test_every_rfc_4475_message_over_the_wire_leaves_the_agent_answering(
    phone: Phone,
) -> None:
    files = list(corpus_files())
    async with running() as agent:
        keepalive = Caller(phone, agent.local_address, call_id="keepalive")
        for number, path in enumerate(files, start=1):
            absorbed = agent.stats.retransmissions_absorbed
            phone.send(path.read_bytes(), agent.local_address)
            options = keepalive.headers("OPTIONS", number, f"z9hG4bK-ka-{number}")
            keepalive.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", options))
            call_id = _call_id(path.read_bytes())
            answers: list[SipResponse] = []
            while True:  # loopback keeps order: the file's answers come before the OPTIONS 200
                response = await phone.response()
                if response.headers.get("Call-ID") == "keepalive":
                    assert response.status == 200, path.name
                    break
                answers.append(response)
            # a leg answers an INVITE of an earlier file later: count only this file's
            final = [
                r.status for r in answers if r.status >= 200 and r.headers.get("Call-ID") == call_id
            ]
            # Some files share a branch and sent-by (novelsc, unkscm, quotbal): the later one is,
            # by §17.2.3, a retransmission of the earlier and gets its answer again.
            repeated = agent.stats.retransmissions_absorbed > absorbed
            if path.name in CORPUS_STATUS and not repeated:
                assert final[:1] == [CORPUS_STATUS[path.name]], path.name
        stats = agent.stats
        assert stats.calls_started == 0 and stats.transport.handler_errors == 0


# --- Robustness -----------------------------------------------------------------------------


async def test_a_reinvite_whose_contact_has_an_unknown_scheme_is_400(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        await until(agent, lambda s: s.calls_started == 1)
        reinvite = caller.invite(
            f"z9hG4bK-{caller.call_id}-reinv", cseq=2, to_tag=caller.to_tag
        ).replace(f"<sip:phone@{phone.address[0]}:{phone.address[1]}>".encode(), b"<http://x/>")
        caller.send(reinvite)
        assert await phone.statuses(2) == [100, 400]
        assert agent.stats.transport.handler_errors == 0


async def test_an_unexpected_error_handling_a_request_is_answered_500(
    phone: Phone, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(leg: object, notify: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(CallLeg, "receive_notify", broken)
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        caller.send(notify(caller, 2, b"SIP/2.0 200 OK\r\n", "terminated"))
        assert await phone.statuses(1) == [500]
        assert agent.stats.rejected["failed"] == 1
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


async def test_an_ack_with_a_malformed_or_wrong_cseq_is_a_stray_ack(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.answered()
        caller.send(caller.ack().replace(b"CSeq: 1 ACK", b"CSeq: one ACK"))
        caller.send(caller.ack().replace(b"CSeq: 1 ACK", b"CSeq: 1 INVITE"))
        await until(agent, lambda s: s.stray_acks == 2)
        assert agent.stats.calls_started == 0 and agent.stats.transport.handler_errors == 0
        caller.send(caller.ack())
        await until(agent, lambda s: s.calls_started == 1)


async def test_a_dynamic_payload_type_for_pcmu_carries_the_audio(phone: Phone) -> None:
    media = await Phone.open()  # its socket stands in for the caller's RTP port
    try:
        async with running() as agent:
            caller = Caller(phone, agent.local_address, rtp_port=media.address[1])
            caller.send(caller.invite(body=sdp(media.address[1], (96, "PCMU"))))
            assert await phone.statuses(2) == [100, 180]
            ok = await phone.response()
            assert parse_sdp(ok.body).media[0].formats[0] == "96"
            data, _ = await asyncio.wait_for(media._protocol.datagrams.get(), WAIT_S)
            assert data[1] & 0x7F == 96
    finally:
        await media.close()


async def test_a_refused_invite_gets_no_100_and_no_transaction(phone: Phone) -> None:
    credentials = DigestCredentials("triage", "trunk1", "s3cret")
    async with running(auth=credentials) as agent:
        caller = Caller(phone, agent.local_address)
        invite = caller.invite()
        caller.send(invite)
        assert await phone.statuses(1) == [401]
        await asyncio.sleep(TIMERS.t1_s * 4)
        assert len(agent.transactions) == 0, "stateless: nothing to retransmit on Timer G"
        caller.send(invite)  # a retransmission gets the refusal again, once
        await asyncio.sleep(TIMERS.t1_s * 4)
        assert len(phone.received(401)) == 2 and not phone.received(100)


async def test_options_out_of_a_dialog_leaves_no_transaction(phone: Phone) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", caller.headers("OPTIONS", 1, "z9o1")))
        assert await phone.statuses(1) == [200]
        assert len(agent.transactions) == 0
