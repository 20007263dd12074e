"""The SIP user agent of the phone line: answers calls over UDP and runs a ``Call`` for each.

``await SipUserAgent.start(settings, engines)`` binds the socket; ``await agent.close()`` ends
every call (BYE for those in a dialog, 503 for those still ringing), then cancels and awaits
every task it owns. ``agent.stats`` is a snapshot of its counters; ``await agent.wait_for(
predicate)`` returns the first snapshot that satisfies ``predicate`` (tests and monitoring).

Receiving a request, in order: the transport drops sources outside ``allowed_sources`` and
``blocked_user_agents`` (scanners) silently and answers 400/513 to what it cannot parse;
retransmissions are answered by their transaction; then ``validate_request`` (405/501 with
Allow, 420, 415, 416...), the dialog lookup (481), digest authentication (401; 403 for a source
locked out after ``auth_max_failures`` wrong answers, ``voice.sip.throttle``), the call limit
(503 with Retry-After) and the SDP offer (488). These refusals are stateless (RFC 3261 §8.2.7):
sent once, no transaction, no retransmission, so a spoofed INVITE is not amplified. Only an
accepted INVITE gets 100 Trying and becomes a ``CallLeg`` (``voice.sip.leg``): 180, RTP, 200,
ACK, the ``Call``. An exception while handling a request is answered 400 (a parse error) or 500
(logged), never left with its transaction unanswered.
OPTIONS is answered 200 (statelessly) with Allow, Accept and Supported in and out of dialogs
(PBX keep-alives). Responses that match no client transaction are dropped and counted.

No caller numbers, URIs or digits go into log text; they go, if anywhere, into ``extra``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, Self

from voice.brain import CallContext
from voice.call import CallEngines
from voice.errors import SdpError, SipParseError
from voice.sip.auth import AuthOutcome, DigestAuthenticator, DigestCredentials
from voice.sip.dialog import Dialog, DialogKey
from voice.sip.fields import Via, parse_name_addr
from voice.sip.leg import CallLeg, CallRecord
from voice.sip.message import SipRequest, SipResponse, new_branch, new_tag
from voice.sip.offer_answer import DEFAULT_CODECS, answer_offer, negotiated_media
from voice.sip.response import make_response
from voice.sip.sdp import parse_sdp
from voice.sip.throttle import (
    DEFAULT_FAILURE_WINDOW_S,
    DEFAULT_LOCKOUT_S,
    DEFAULT_MAX_FAILURES,
    FailureThrottle,
)
from voice.sip.transaction import (
    Address,
    AnyServerTransaction,
    InviteServerTransaction,
    ServerTransaction,
    SipTimers,
    TransactionLayer,
)
from voice.sip.transport import SipTransport, TransportStats, parse_networks
from voice.sip.uri import parse_uri
from voice.sip.validation import (
    DEFAULT_METHODS,
    SDP_MEDIA_TYPE,
    unsupported_extensions,
    validate_request,
)

log = logging.getLogger(__name__)

SCANNER_USER_AGENTS: Final = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "VaxSIPUserAgent",
    "pplsip",
    "iWar",
    "sundayddr",
)
ALLOWED_METHODS: Final = DEFAULT_METHODS
# Bodies we read: SDP, the sipfrag of REFER NOTIFYs, DTMF of INFO (answered, not interpreted).
CONTENT_TYPES: Final = (
    SDP_MEDIA_TYPE,
    "message/sipfrag",
    "application/dtmf-relay",
    "application/dtmf",
)
SUPPORTED_EXTENSIONS: Final[tuple[str, ...]] = ()  # no option tags: Require gets 420
DEFAULT_RETRY_AFTER_S: Final = 30
DEFAULT_TRANSFER_TIMEOUT_S: Final = 30.0
CLOSE_GRACE_S: Final = 5.0  # how long close() lets calls send their BYE before cancelling
RECENT_CALLS: Final = 256
_PLACEHOLDER_RTP_PORT: Final = 9  # for the trial answer that picks the codec before RTP opens
_ANONYMOUS: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class SipSettings:
    """The user agent's configuration; ``ValueError`` names a bad field."""

    host: str = "127.0.0.1"  # the IP literal the SIP and RTP sockets bind
    port: int = 5060  # 0: any free port (tests)
    advertised_host: str | None = None  # the IP in Contact, Via and SDP; default ``host``
    rtp_port_min: int = 40000
    rtp_port_max: int = 40998
    max_calls: int = 50
    allowed_sources: tuple[str, ...] = ()  # CIDRs allowed to send us SIP; empty: any
    auth: DigestCredentials | None = None  # challenge INVITEs with digest authentication
    # this many wrong digest answers from one IP within the window lock it out (403) a while
    auth_max_failures: int = DEFAULT_MAX_FAILURES
    auth_failure_window_s: float = DEFAULT_FAILURE_WINDOW_S
    auth_lockout_s: float = DEFAULT_LOCKOUT_S
    blocked_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS  # substrings, any case
    timers: SipTimers = field(default_factory=SipTimers)
    ring_s: float = 0.0  # how long to ring (180) before answering
    transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S  # REFER to the final NOTIFY
    retry_after_s: int = DEFAULT_RETRY_AFTER_S  # in 503s at the call limit
    contact_user: str = "triage"
    # closing down between a 200 and its ACK: how long to wait for the ACK, to send the BYE
    answered_shutdown_wait_s: float = 2.0

    def __post_init__(self) -> None:
        host = _ip("host", self.host)
        if self.advertised_host is not None:
            _ip("advertised_host", self.advertised_host)
        elif host.is_unspecified:
            raise ValueError("advertised_host is required when host is a wildcard address")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0..65535")
        if self.rtp_port_min % 2 or not 0 < self.rtp_port_min <= self.rtp_port_max <= 65535:
            raise ValueError("rtp_port_min..rtp_port_max must be an even start within 1..65535")
        if self.max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if self.auth_max_failures < 1:
            raise ValueError("auth_max_failures must be at least 1")
        if not (self.auth_failure_window_s > 0 and self.auth_lockout_s > 0):
            raise ValueError("auth_failure_window_s and auth_lockout_s must be > 0")
        parse_networks(self.allowed_sources)
        if self.ring_s < 0 or self.transfer_timeout_s <= 0 or self.retry_after_s < 0:
            raise ValueError("ring_s, retry_after_s must be >= 0 and transfer_timeout_s > 0")
        if not 0 <= self.answered_shutdown_wait_s <= CLOSE_GRACE_S:
            raise ValueError(f"answered_shutdown_wait_s must be in 0..{CLOSE_GRACE_S} s")
        if not self.contact_user.isalnum():
            raise ValueError("contact_user must be alphanumeric")

    @property
    def contact_host(self) -> str:
        """The IP address peers reach us at."""
        return self.advertised_host or self.host


@dataclass(frozen=True, slots=True)
class SipStats:
    """A snapshot of the user agent's counters."""

    calls_started: int  # Calls run (ACK received)
    calls_ended: int
    active_calls: int  # legs from INVITE accepted to dialog ended
    end_reasons: Mapping[str, int]
    rejected: Mapping[str, int]  # requests refused or dropped, by reason
    cancelled: int
    ack_timeouts: int
    byes_sent: int
    malformed: int  # datagrams that did not parse (dropped or answered 400)
    unexpected_responses: int
    stray_acks: int
    retransmissions_absorbed: int
    transport: TransportStats


@dataclass(slots=True)
class _Counters:
    calls_started: int = 0
    calls_ended: int = 0
    cancelled: int = 0
    ack_timeouts: int = 0
    byes_sent: int = 0
    unexpected_responses: int = 0
    stray_acks: int = 0
    end_reasons: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)


_Waiter = tuple[Callable[[SipStats], bool], asyncio.Future[SipStats]]
_Origin = tuple[str, str, int]  # Call-ID, From tag, CSeq of a dialog-creating INVITE


class SipUserAgent:
    """See the module docstring. Create with ``await SipUserAgent.start(...)``."""

    def __init__(self, settings: SipSettings, engines: CallEngines) -> None:
        self.settings = settings
        self.engines = engines
        self.transactions = TransactionLayer(self._send_datagram, settings.timers)
        self.recent_calls: deque[CallRecord] = deque(maxlen=RECENT_CALLS)
        self._transport: SipTransport | None = None
        self._authenticator = (
            DigestAuthenticator(settings.auth) if settings.auth is not None else None
        )
        self._auth_throttle = FailureThrottle(
            settings.auth_max_failures, settings.auth_failure_window_s, settings.auth_lockout_s
        )
        self._blocked = tuple(agent.lower() for agent in settings.blocked_user_agents)
        self._counters = _Counters()
        self._legs: dict[DialogKey, CallLeg] = {}
        self._legs_by_invite: dict[InviteServerTransaction, CallLeg] = {}
        self._legs_by_origin: dict[_Origin, CallLeg] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[_Waiter] = []
        self._closing = False
        self._via_host = _uri_host(settings.contact_host)
        self._via_port = 0
        self._contact = ""

    @classmethod
    async def start(cls, settings: SipSettings, engines: CallEngines) -> Self:
        """Bind ``settings.host:port`` and start answering."""
        agent = cls(settings, engines)
        agent._transport = await SipTransport.open(
            settings.host,
            settings.port,
            agent._on_message,
            allowed_sources=parse_networks(settings.allowed_sources),
            screen=agent._screen,
        )
        agent._via_port = agent._transport.local_address[1]
        agent._contact = f"<sip:{settings.contact_user}@{agent._via_host}:{agent._via_port}>"
        return agent

    @property
    def local_address(self) -> Address:
        assert self._transport is not None
        return self._transport.local_address

    @property
    def stats(self) -> SipStats:
        counters = self._counters
        transport = self._transport.stats if self._transport else TransportStats()
        rejected = Counter(counters.rejected)
        if transport.filtered:
            rejected["source_not_allowed"] = transport.filtered
        return SipStats(
            calls_started=counters.calls_started,
            calls_ended=counters.calls_ended,
            active_calls=len(self._legs),
            end_reasons=MappingProxyType(dict(counters.end_reasons)),
            rejected=MappingProxyType(dict(rejected)),
            cancelled=counters.cancelled,
            ack_timeouts=counters.ack_timeouts,
            byes_sent=counters.byes_sent,
            malformed=transport.malformed + transport.bad_requests + transport.oversized,
            unexpected_responses=counters.unexpected_responses,
            stray_acks=counters.stray_acks,
            retransmissions_absorbed=self.transactions.stats.retransmissions_absorbed,
            transport=replace(transport),
        )

    async def wait_for(self, predicate: Callable[[SipStats], bool]) -> SipStats:
        """The first stats snapshot for which ``predicate`` holds (bound it with a timeout)."""
        stats = self.stats
        if predicate(stats):
            return stats
        future: asyncio.Future[SipStats] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            return await future
        finally:
            self._waiters.remove(waiter)

    async def close(self) -> None:
        """End every call (BYE in confirmed dialogs), cancel and await every task, unbind."""
        if self._closing:
            return
        self._closing = True
        for leg in list(self._legs.values()):
            leg.shutdown()
        if self._tasks:
            # time for the BYEs, and before them for an ACK still on its way to our 200
            grace = (
                min(CLOSE_GRACE_S, self.settings.timers.timeout_s)
                + self.settings.answered_shutdown_wait_s
            )
            await asyncio.wait(set(self._tasks), timeout=grace)
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.transactions.close()
        if self._transport is not None:
            await self._transport.close()

    # --- LegHost

    def new_via(self) -> str:
        """The Via of a request we send, with a fresh branch (and rport: we may be NATed)."""
        params = (("branch", new_branch()), ("rport", None))
        return str(Via("UDP", self._via_host, self._via_port, params))

    def headers_for(self, status: int) -> list[tuple[str, str]]:
        """Extra headers of our responses: capabilities on 2xx, Retry-After on 503."""
        if status == 503:
            return [("Retry-After", str(self.settings.retry_after_s))]
        headers = [("Allow", ", ".join(ALLOWED_METHODS))]
        headers.append(("Supported", ", ".join(SUPPORTED_EXTENSIONS)))
        return headers

    def call_started(self, leg: CallLeg) -> None:
        self._counters.calls_started += 1
        log.info("call answered", extra={"call_id": leg.context.call_id})
        self._changed()

    def bye_sent(self, leg: CallLeg) -> None:
        self._counters.byes_sent += 1

    def leg_finished(self, leg: CallLeg, record: CallRecord) -> None:
        self._legs.pop(leg.dialog.key, None)
        self._legs_by_invite.pop(leg.invite, None)
        self._legs_by_origin.pop(_origin(leg.invite.request), None)
        counters = self._counters
        if record.talked:
            counters.calls_ended += 1
            counters.end_reasons[record.reason] += 1
            log.info("call ended", extra={"call_id": leg.context.call_id, "reason": record.reason})
        elif record.reason == "cancelled":
            counters.cancelled += 1
        elif record.reason == "ack_timeout":
            counters.ack_timeouts += 1
        elif record.reason == "rtp_ports":
            counters.rejected["rtp_ports"] += 1
        self.recent_calls.append(record)
        self._changed()

    # --- Receiving

    def _send(self, message: SipRequest | SipResponse, to: Address) -> None:
        if self._transport is not None:
            self._transport.send(message, to)

    def _send_datagram(self, data: bytes, to: Address) -> None:
        if self._transport is not None:
            self._transport.send_datagram(data, to)

    def _screen(self, request: SipRequest, source: Address) -> bool:
        user_agent = (request.headers.get("User-Agent") or "").lower()
        if user_agent and any(blocked in user_agent for blocked in self._blocked):
            self._counters.rejected["scanner"] += 1
            return False
        return True

    def _on_message(self, message: SipRequest | SipResponse, source: Address) -> None:
        if isinstance(message, SipResponse):
            if not self.transactions.receive_response(message):
                self._counters.unexpected_responses += 1
        else:
            self._on_request(message, source)
        if self._waiters:
            self._changed()

    def _on_request(self, request: SipRequest, source: Address) -> None:
        if self.transactions.absorb(request):
            return
        if request.method == "ACK":
            leg = self._leg_of(request)
            if leg is None or not leg.receive_ack(request):
                self._counters.stray_acks += 1
            return
        problem = validate_request(
            request,
            methods=ALLOWED_METHODS,
            extensions=SUPPORTED_EXTENSIONS,
            content_types=CONTENT_TYPES,
        )
        if problem is not None:
            status, reason = problem
            self._counters.rejected["invalid"] += 1
            self._reply(None, request, source, status, reason, _problem_headers(request, status))
            return
        opened: list[AnyServerTransaction] = []
        try:
            self._dispatch(request, source, opened)
        except SipParseError:
            status = 400
        except Exception:
            log.exception("SIP request handling failed", extra={"method": request.method})
            status = 500
        else:
            return
        # No exception leaves a transaction unanswered (it would live, and leak, forever).
        self._counters.rejected["invalid" if status == 400 else "failed"] += 1
        for transaction in opened:
            if not transaction.final_sent:
                self._reply(transaction, request, source, status)
        if not opened:
            self._reply(None, request, source, status)

    def _dispatch(
        self, request: SipRequest, source: Address, opened: list[AnyServerTransaction]
    ) -> None:
        """Answer a valid request. Refusals outside a dialog are stateless (RFC 3261 §8.2.7),
        sent once and again once per retransmission: no transaction, no Timer G to amplify a
        spoofed INVITE. The transactions opened go into ``opened``."""

        def stateful() -> AnyServerTransaction:
            transaction: AnyServerTransaction
            if request.method == "INVITE":
                transaction = self.transactions.invite_server(request, source)
                transaction.respond(make_response(request, 100))
            else:
                transaction = self.transactions.server(request, source)
            opened.append(transaction)
            return transaction

        method = request.method
        if method == "OPTIONS":
            headers = [*self.headers_for(200), ("Accept", SDP_MEDIA_TYPE)]
            self._reply(None, request, source, 200, headers=headers)
            return
        if method == "CANCEL":
            self._on_cancel(request, source, stateful)
            return
        if method == "INVITE" and request.to_addr.tag is None:
            self._on_new_invite(request, source, stateful)
            return
        leg = self._leg_of(request)
        if leg is None:
            self._counters.rejected["unknown_dialog"] += 1
            self._reply(None, request, source, 481)
            return
        transaction = stateful()
        if not leg.dialog.accepts_cseq(request):
            self._reply(transaction, request, source, 500, "CSeq Out of Order")
            return
        if isinstance(transaction, InviteServerTransaction):
            leg.receive_reinvite(transaction)
        elif method == "BYE":
            leg.receive_bye(transaction)
        elif method == "NOTIFY":
            leg.receive_notify(transaction)
        else:  # INFO (DTMF arrives as RFC 4733 events, which is what we negotiate)
            self._reply(transaction, request, source, 200)

    def _on_cancel(
        self, cancel: SipRequest, source: Address, stateful: Callable[[], AnyServerTransaction]
    ) -> None:
        invite = self.transactions.invite_cancelled_by(cancel)
        if invite is None and self.transactions.invite_finished(cancel):
            self._reply(stateful(), cancel, source, 200)  # too late: no effect
            return
        if invite is None:
            self._counters.rejected["unknown_transaction"] += 1
            self._reply(None, cancel, source, 481)
            return
        leg = self._legs_by_invite.get(invite)
        to_tag = leg.dialog.local_tag if leg is not None else None
        self._reply(stateful(), cancel, source, 200, to_tag=to_tag)
        if leg is not None:
            leg.cancel()

    def _on_new_invite(
        self, request: SipRequest, source: Address, stateful: Callable[[], AnyServerTransaction]
    ) -> None:
        origin = _origin(request)
        if origin in self._legs_by_origin:
            # The same INVITE by another path (a new branch: not a retransmission), §8.2.2.2.
            self._counters.rejected["merged"] += 1
            self._reply(None, request, source, 482, "Loop Detected")
            return
        refusal = self._refusal(request, source)
        if refusal is not None:
            reason, status, headers = refusal
            self._counters.rejected[reason] += 1
            self._reply(None, request, source, status, headers=headers)
            return
        try:
            offer = parse_sdp(request.body)
            trial = answer_offer(
                offer,
                local_ip=self.settings.contact_host,
                local_port=_PLACEHOLDER_RTP_PORT,
                session_id=0,
                supported=DEFAULT_CODECS,
            )
            media = negotiated_media(offer, trial)
        except SdpError:
            self._counters.rejected["no_media"] += 1
            warning = f'305 {self._via_host} "Incompatible media format"'
            self._reply(None, request, source, 488, headers=[("Warning", warning)])
            return
        local_tag = new_tag()
        try:
            dialog = Dialog.answering(request, local_tag, self._contact)
        except SipParseError:
            self._counters.rejected["invalid"] += 1
            self._reply(None, request, source, 400, "Missing Contact Header")
            return
        context = CallContext(
            call_id=secrets.token_hex(8),
            caller=_caller(request, trust_pai=bool(self.settings.allowed_sources)),
            dialled=_dialled(request),
        )
        transaction = stateful()  # the INVITE will be answered: 100 Trying now
        assert isinstance(transaction, InviteServerTransaction)
        leg = CallLeg(self, transaction, dialog, offer, media, context)
        self._legs[dialog.key] = leg
        self._legs_by_invite[transaction] = leg
        self._legs_by_origin[origin] = leg
        leg.ring()
        task = asyncio.create_task(leg.run(), name="sip-call-leg")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refusal(
        self, request: SipRequest, source: Address
    ) -> tuple[str, int, list[tuple[str, str]]] | None:
        """Why a new INVITE cannot be answered: (counter, status, extra headers), or None."""
        if self._closing:
            return "shutting_down", 503, self.headers_for(503)
        if self._authenticator is not None:
            source_ip = source[0]
            if self._auth_throttle.locked(source_ip):
                return "auth_locked", 403, []  # not checked: a guess in a lockout learns nothing
            outcome = self._authenticator.verify(
                request.method, request.uri, request.headers.get_all("Authorization")
            )
            # MISSING and STALE are the normal challenge exchange; only a wrong answer counts.
            if outcome is AuthOutcome.OK:
                self._auth_throttle.record_success(source_ip)
            elif outcome is AuthOutcome.INVALID and self._auth_throttle.record_failure(source_ip):
                log.warning(
                    "SIP source %s locked out after repeated digest authentication failures",
                    source_ip,
                    extra={
                        "failures": self.settings.auth_max_failures,
                        "window_s": self.settings.auth_failure_window_s,
                        "lockout_s": self.settings.auth_lockout_s,
                    },
                )
            if outcome is not AuthOutcome.OK:
                challenges = self._authenticator.challenges(stale=outcome is AuthOutcome.STALE)
                counter = "auth_failed" if outcome is AuthOutcome.INVALID else "auth_challenged"
                return counter, 401, [("WWW-Authenticate", value) for value in challenges]
        if len(self._legs) >= self.settings.max_calls:
            return "busy", 503, self.headers_for(503)
        if request.content_type != SDP_MEDIA_TYPE or not request.body:
            return "no_offer", 488, []
        return None

    def _reply(
        self,
        transaction: InviteServerTransaction | ServerTransaction | None,
        request: SipRequest,
        source: Address,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        *,
        to_tag: str | None = None,
    ) -> None:
        response = make_response(
            request, status, reason, to_tag=to_tag or new_tag(), extra_headers=headers or ()
        )
        if transaction is None:
            self._send(response, source)
        else:
            transaction.respond(response)

    def _leg_of(self, request: SipRequest) -> CallLeg | None:
        try:
            key = (request.call_id, request.to_addr.tag or "", request.from_addr.tag or "")
        except SipParseError:
            return None
        return self._legs.get(key)

    def _changed(self) -> None:
        if not self._waiters:
            return
        stats = self.stats
        for predicate, future in self._waiters:
            if not future.done() and predicate(stats):
                future.set_result(stats)


def _origin(invite: SipRequest) -> _Origin:
    return (invite.call_id, invite.from_addr.tag or "", invite.cseq.number)


def _caller(request: SipRequest, *, trust_pai: bool) -> str | None:
    """The caller's number or user: P-Asserted-Identity first if ``trust_pai``, then From.

    PAI is only believed from a trust domain (RFC 3325 §5): here, a source that passed the
    ``allowed_sources`` list (a known trunk). From is never verified: the brain takes it as a hint.
    """
    identities = request.headers.get_all("P-Asserted-Identity") if trust_pai else []
    candidates = [*identities[:1], request.headers.get("From") or ""]
    for value in candidates:
        try:
            user = parse_uri(parse_name_addr(value).uri).user
        except SipParseError:
            continue
        if user and user.lower() != _ANONYMOUS:
            return user
    return None


def _problem_headers(request: SipRequest, status: int) -> list[tuple[str, str]]:
    """What a refusal from ``validate_request`` must carry (RFC 3261 §8.2.1-§8.2.3)."""
    if status in (405, 501):
        return [("Allow", ", ".join(ALLOWED_METHODS))]
    if status == 415:
        return [("Accept", ", ".join(CONTENT_TYPES))]
    if status == 420:
        return [("Unsupported", tag) for tag in unsupported_extensions(request, ())]
    return []


def _dialled(request: SipRequest) -> str | None:
    try:
        return parse_uri(request.uri).user
    except SipParseError:
        return None


def _ip(name: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{name} must be an IP address (no DNS on the call path)") from None


def _uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
