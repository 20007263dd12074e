"""The SIP user agent of the phone line: answers calls over UDP and runs a ``Call`` for each.

``await SipUserAgent.start(settings, engines)`` binds the socket; ``await agent.close()`` ends
every call (BYE for those in a dialog, 503 for those still ringing), then cancels and awaits
every task it owns. ``agent.stats`` is a snapshot of its counters; ``await agent.wait_for(
predicate)`` returns the first snapshot that satisfies ``predicate`` (tests and monitoring).

Draining (a node leaving a cluster without dropping calls): after ``agent.drain()`` new INVITEs
are refused 503 with Retry-After (statelessly, like the refusals below) and OPTIONS out of a
dialog is answered 503 too, so that a proxy probing the bridge (Kamailio's dispatcher) marks it
inactive and sends new calls elsewhere; the calls in progress go on, every in-dialog request
(ACK, BYE, re-INVITE, INFO, NOTIFY, OPTIONS) and CANCEL still works. ``await
agent.wait_until_idle(timeout_s)`` returns once no call is left (True) or at the timeout (False);
``close()`` then ends what remains. The states (``SipAgentState``) only move forward: ``OPEN``,
``DRAINING``, ``CLOSING``.

Receiving a request, in order: the transport drops sources outside ``allowed_sources`` and
``blocked_user_agents`` (scanners) silently and answers 400/513 to what it cannot parse;
retransmissions are answered by their transaction; then ``validate_request`` (405/501 with
Allow, 420, 415, 416...), the dialog lookup (481), shutting down or draining (503 with
Retry-After), digest authentication (401; 403 for a source locked out after
``auth_max_failures`` wrong answers, ``voice.sip.throttle``), the call limit (503 with
Retry-After) and the SDP offer (488). These refusals are stateless (RFC 3261 §8.2.7): sent once,
no transaction, no retransmission, so a spoofed INVITE is not amplified. Only an accepted INVITE
gets 100 Trying and becomes a ``CallLeg`` (``voice.sip.leg``): 180, RTP, 200, ACK, the ``Call``.
An exception while handling a request is answered 400 (a parse error) or 500 (logged), never
left with its transaction unanswered.
OPTIONS is answered 200 (statelessly) with Allow, Accept and Supported in and out of dialogs
(PBX keep-alives), except out of dialogs once draining or closing: 503 with Retry-After.
Responses that match no client transaction are dropped and counted.

No caller numbers, URIs or digits go into log text; they go, if anywhere, into ``extra``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Final, Self

from voice.brain import CallContext
from voice.call.settings import CallEngines
from voice.errors import SdpError, SipParseError
from voice.sip.auth import AuthOutcome, DigestAuthenticator
from voice.sip.capabilities import (
    ALLOWED_METHODS,
    CONTENT_TYPES,
    SUPPORTED_EXTENSIONS,
    capability_headers,
    refusal_headers,
)
from voice.sip.dialog import Dialog
from voice.sip.fields import Via
from voice.sip.leg import CallLeg, CallRecord
from voice.sip.leg_table import LegTable
from voice.sip.message import SipRequest, SipResponse, new_branch, new_tag
from voice.sip.offer_answer import DEFAULT_CODECS, answer_offer, negotiated_media
from voice.sip.parties import caller, dialled
from voice.sip.response import make_response
from voice.sip.sdp import parse_sdp
from voice.sip.settings import CLOSE_GRACE_S, SipSettings
from voice.sip.stats import SipCounters, SipStats, StatsWaiters
from voice.sip.throttle import FailureThrottle
from voice.sip.transaction import (
    Address,
    AnyServerTransaction,
    InviteServerTransaction,
    ServerTransaction,
)
from voice.sip.transaction_layer import TransactionLayer
from voice.sip.transport import SipTransport, TransportStats, parse_networks
from voice.sip.validation import SDP_MEDIA_TYPE, validate_request

log = logging.getLogger(__name__)

RECENT_CALLS: Final = 256
_PLACEHOLDER_RTP_PORT: Final = 9  # for the trial answer that picks the codec before RTP opens


class SipAgentState(StrEnum):
    """Whether the user agent takes new calls; it only moves forward, in this order."""

    OPEN = "open"  # answering new calls
    DRAINING = "draining"  # refusing new calls (503), finishing those in progress
    CLOSING = "closing"  # ending every call and stopping


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
        self._counters = SipCounters()
        self._legs = LegTable()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters = StatsWaiters(lambda: self.stats)
        self._state = SipAgentState.OPEN
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
        return self._counters.snapshot(
            active_calls=len(self._legs),
            transport=self._transport.stats if self._transport else TransportStats(),
            retransmissions_absorbed=self.transactions.stats.retransmissions_absorbed,
        )

    @property
    def state(self) -> SipAgentState:
        return self._state

    async def wait_for(self, predicate: Callable[[SipStats], bool]) -> SipStats:
        """The first stats snapshot for which ``predicate`` holds (bound it with a timeout)."""
        return await self._waiters.wait_for(predicate)

    def drain(self) -> None:
        """Refuse new calls (503) and answer probes 503 from now on; calls in progress go on.

        Draining again changes nothing; once closing, the agent refuses every new call anyway.
        """
        if self._state is not SipAgentState.OPEN:
            return
        self._state = SipAgentState.DRAINING
        log.info("SIP bridge draining: new calls refused", extra={"active_calls": len(self._legs)})
        self._waiters.changed()

    async def wait_until_idle(self, timeout_s: float) -> bool:
        """Whether the last call ended within ``timeout_s`` (True at once when there is none).

        Ringing calls count: they are answered, or cancelled, and end like any other.
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self.wait_for(lambda stats: stats.active_calls == 0)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """End every call (BYE in confirmed dialogs), cancel and await every task, unbind."""
        if self._state is SipAgentState.CLOSING:
            return
        self._state = SipAgentState.CLOSING
        for leg in self._legs.legs():
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
        return capability_headers()

    def call_started(self, leg: CallLeg) -> None:
        self._counters.calls_started += 1
        log.info("call answered", extra={"call_id": leg.context.call_id})
        self._waiters.changed()

    def bye_sent(self, leg: CallLeg) -> None:
        self._counters.byes_sent += 1

    def leg_finished(self, leg: CallLeg, record: CallRecord) -> None:
        self._legs.remove(leg)
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
        self._waiters.changed()

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
        self._waiters.changed()

    def _on_request(self, request: SipRequest, source: Address) -> None:
        if self.transactions.absorb(request):
            return
        if request.method == "ACK":
            leg = self._legs.for_request(request)
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
            self._reply(None, request, source, status, reason, refusal_headers(request, status))
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
            if self._state is not SipAgentState.OPEN and request.to_addr.tag is None:
                # a probe (Kamailio's dispatcher, a PBX): this bridge takes no new calls
                self._reply(None, request, source, 503, headers=self.headers_for(503))
                return
            headers = [*self.headers_for(200), ("Accept", SDP_MEDIA_TYPE)]
            self._reply(None, request, source, 200, headers=headers)
            return
        if method == "CANCEL":
            self._on_cancel(request, source, stateful)
            return
        if method == "INVITE" and request.to_addr.tag is None:
            self._on_new_invite(request, source, stateful)
            return
        leg = self._legs.for_request(request)
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
        leg = self._legs.for_invite(invite)
        to_tag = leg.dialog.local_tag if leg is not None else None
        self._reply(stateful(), cancel, source, 200, to_tag=to_tag)
        if leg is not None:
            leg.cancel()

    def _on_new_invite(
        self, request: SipRequest, source: Address, stateful: Callable[[], AnyServerTransaction]
    ) -> None:
        if self._legs.has_origin(request):
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
            caller=caller(request, trust_pai=bool(self.settings.allowed_sources)),
            dialled=dialled(request),
        )
        transaction = stateful()  # the INVITE will be answered: 100 Trying now
        assert isinstance(transaction, InviteServerTransaction)
        leg = CallLeg(self, transaction, dialog, offer, media, context)
        self._legs.add(leg)
        leg.ring()
        task = asyncio.create_task(leg.run(), name="sip-call-leg")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refusal(
        self, request: SipRequest, source: Address
    ) -> tuple[str, int, list[tuple[str, str]]] | None:
        """Why a new INVITE cannot be answered: (counter, status, extra headers), or None."""
        if self._state is SipAgentState.CLOSING:
            return "shutting_down", 503, self.headers_for(503)
        if self._state is SipAgentState.DRAINING:
            return "draining", 503, self.headers_for(503)
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


def _uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
