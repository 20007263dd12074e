"""One inbound call's SIP leg: its INVITE, dialog and RTP session, and the ``Call`` once ACKed.

``CallLeg.ring`` sends the 180; ``CallLeg.run`` (a task the user agent owns) opens the RTP
session, rings for ``ring_s``, answers 200 with the SDP answer, waits for the ACK and then runs
the ``Call``. Whatever ends it, the leg closes the media and sends BYE when, and only when, a
confirmed dialog is still up (not after the caller's BYE, not after our own ``hang_up``, not
without an ACK). The leg is the call's ``CallControl``: ``hang_up`` sends BYE, ``transfer``
sends REFER and follows its NOTIFYs.

Everything the peer does to the leg arrives through synchronous methods called by the user
agent's receive path (``cancel``, ``receive_ack``, ``receive_bye``, ``receive_reinvite``,
``receive_notify``), so a CANCEL racing the answer is decided by whichever datagram the event
loop handles first, never half-way through a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, Protocol

from voice.brain import CallContext, Transfer
from voice.call.call import Call
from voice.call.settings import CallEngines
from voice.errors import RtpPortsExhausted, SdpError, SipParseError
from voice.rtp.session import G711Codec, RtpSession
from voice.rtp.udp import RtpStats
from voice.sip.dialog import Dialog, DialogState
from voice.sip.message import SipRequest
from voice.sip.offer_answer import NegotiatedMedia, answer_offer, negotiated_media
from voice.sip.refer import (
    HANDOFF_HEADER,
    REFER_EVENT,
    SIPFRAG_TYPE,
    refer_to,
    sipfrag_status,
)
from voice.sip.response import make_response
from voice.sip.sdp import SessionDescription, parse_sdp, serialize_sdp
from voice.sip.settings import SipSettings
from voice.sip.transaction import Address, InviteServerTransaction, ServerTransaction
from voice.sip.transaction_layer import TransactionLayer
from voice.sip.validation import SDP_MEDIA_TYPE

log = logging.getLogger(__name__)

# A NOTIFY that ends the subscription without a final status: the transfer did not happen.
_TRANSFER_GAVE_NO_STATUS: Final = 500
_HOLD_ADDRESS: Final = "0.0.0.0"


class LegState(StrEnum):
    RINGING = "ringing"  # 100/180 sent, answering
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    ACTIVE = "active"  # ACKed: the Call runs
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """How one answered leg ended, for monitoring and tests (``caller`` is personal data)."""

    context: CallContext
    # the Call's end reason, or (no Call ran) cancelled, ack_timeout, caller_hung_up, shutdown,
    # rtp_ports or failed
    reason: str
    talked: bool  # whether the Call ran (an ACK arrived)
    codec: str
    rtp: RtpStats | None  # None if no RTP session could be opened


class LegHost(Protocol):
    """What a leg needs from its user agent."""

    settings: SipSettings
    engines: CallEngines
    transactions: TransactionLayer

    def headers_for(self, status: int) -> list[tuple[str, str]]: ...

    def new_via(self) -> str: ...

    def call_started(self, leg: CallLeg) -> None: ...

    def bye_sent(self, leg: CallLeg) -> None: ...

    def leg_finished(self, leg: CallLeg, record: CallRecord) -> None: ...


class CallLeg:
    """One call from INVITE to the end of its dialog; see the module docstring."""

    def __init__(
        self,
        host: LegHost,
        invite: InviteServerTransaction,
        dialog: Dialog,
        offer: SessionDescription,
        media: NegotiatedMedia,
        context: CallContext,
    ) -> None:
        self._host = host
        self._settings = host.settings
        self.invite = invite
        self.source: Address = invite.source  # in-dialog requests go back along this flow
        self.dialog = dialog
        self.context = context
        self.state = LegState.RINGING
        self._offer = offer
        self._media = media
        self._stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._invites: dict[int, InviteServerTransaction] = {invite.request.cseq.number: invite}
        self._rtp: RtpSession | None = None
        self._call: Call | None = None
        self._local_sdp: SessionDescription | None = None
        self._sdp_session_id = secrets.randbits(31)
        self._sdp_version = self._sdp_session_id
        self._sdp_remote: tuple[str, int] = (media.remote_ip, media.remote_port)
        self._notify_statuses: asyncio.Queue[int] | None = None
        self._refers_sent = 0
        # A REFER the phone accepted but whose outcome did not come in time: the phone may
        # still connect the caller to the queue, and then our leg must go.
        self._accepted_transfer: Transfer | None = None

    # --- The leg's life (the task)

    async def run(self) -> None:
        """Answer, converse, and end; never raises but CancelledError."""
        reason = "failed"
        try:
            reason = await self._answer_and_talk()
        except Exception:
            log.exception("call leg failed", extra={"call_id": self.context.call_id})
            if not self.invite.final_sent:
                self._respond_invite(500)
        finally:
            await self._finish(reason)

    def ring(self) -> None:
        """180 Ringing, sent by the receive path with the 100 (before a CANCEL can arrive)."""
        self._respond_invite(180)

    async def _answer_and_talk(self) -> str:
        if self._stop.done():
            return self._stop.result()
        try:
            self._rtp = await RtpSession.open(
                rtp_port_min=self._settings.rtp_port_min,
                rtp_port_max=self._settings.rtp_port_max,
                host=self._settings.host,
                remote=_rtp_address(self._sdp_remote),
                codec=G711Codec[self._media.codec],
                payload_type=self._media.payload_type,
                telephone_event_pt=self._media.telephone_event_pt,
                # Media only from where the SDP says or where the signalling comes from.
                latch_hosts=frozenset((self._media.remote_ip, self.source[0])),
            )
        except RtpPortsExhausted:
            log.warning(
                "RTP ports exhausted: call refused", extra={"call_id": self.context.call_id}
            )
            if not self.invite.final_sent:
                self._respond_invite(503, self._host.headers_for(503))
            return "rtp_ports"
        if self._settings.ring_s > 0 and not self._stop.done():
            await asyncio.wait((self._stop,), timeout=self._settings.ring_s)
        if self._stop.done():
            return self._stop.result()
        self._local_sdp = self._answer(self._offer, self._media.codec)
        self._respond_invite(
            200,
            self._host.headers_for(200),
            serialize_sdp(self._local_sdp),
        )
        self.state = LegState.ANSWERED
        await asyncio.wait((self.invite.acked, self._stop), return_when=asyncio.FIRST_COMPLETED)
        if self._stop.done():
            reason = self._stop.result()
            if reason == "shutdown":
                await self._end_answered_call()
            return reason
        if not self.invite.acked.result():
            log.info("no ACK for our 200: call dropped", extra={"call_id": self.context.call_id})
            return "ack_timeout"
        self.dialog.confirm()
        self.state = LegState.ACTIVE
        self._call = Call(self.context, self._rtp, self._host.engines, self)
        self._call.set_held(not self._media.direction.sends)  # a call may begin on hold
        self._host.call_started(self)
        return await self._call.run()

    async def _finish(self, reason: str) -> None:
        self.state = LegState.ENDED
        try:
            if self.dialog.state is DialogState.CONFIRMED:
                await self._send_bye()
        finally:
            self.dialog.terminate()
            rtp = self._rtp
            record = CallRecord(
                self.context,
                reason,
                self._call is not None,
                self._media.codec,
                None if rtp is None else replace(rtp.stats),
            )
            if rtp is not None:
                await rtp.close()
            # The Call holds this leg as its CallControl: dropping it breaks the cycle, so the
            # call is freed at once instead of by a (slow, loop-stalling) full collection.
            self._call = None
            self._host.leg_finished(self, record)

    # --- CallControl

    async def hang_up(self) -> None:
        """End the call from our side: BYE (a 481 or a time-out ends the dialog all the same)."""
        if self.dialog.state is DialogState.CONFIRMED:
            await self._send_bye()

    async def transfer(self, transfer: Transfer) -> bool:
        """Blind transfer (RFC 3515): REFER, then NOTIFYs until a final sipfrag status."""
        if self.dialog.state is not DialogState.CONFIRMED:
            return False
        try:
            target = refer_to(transfer.target_uri, transfer.handoff_id)
        except ValueError as exc:
            log.error(
                "transfer not attempted: %s",
                exc,
                extra={"call_id": self.context.call_id, "queue": transfer.queue},
            )
            return False
        request = self.dialog.new_request("REFER", self._host.new_via())
        request.headers.add("Contact", self.dialog.local_contact)
        request.headers.add("Refer-To", target)
        request.headers.add("Referred-By", f"<{self.dialog.local_uri}>")
        request.headers.add(HANDOFF_HEADER, transfer.handoff_id)
        statuses: asyncio.Queue[int] = asyncio.Queue()
        self._notify_statuses = statuses  # before sending: a NOTIFY may overtake the 202
        self._refers_sent += 1
        self._accepted_transfer = None
        extra = {"call_id": self.context.call_id, "queue": transfer.queue}
        accepted = False
        try:
            async with asyncio.timeout(self._settings.transfer_timeout_s):
                response = await self._host.transactions.request(
                    request, self.source
                ).final_response()
                if response is None or not 200 <= response.status < 300:
                    refused = None if response is None else response.status
                    log.info("transfer refused", extra={**extra, "status": refused})
                    return False
                accepted = True
                while (status := await statuses.get()) < 200:
                    pass  # 1xx: the target is being called
        except TimeoutError:
            log.info("transfer timed out", extra={**extra, "accepted": accepted})
            if accepted:
                self._accepted_transfer = transfer
            return False
        finally:
            if self._notify_statuses is statuses:
                self._notify_statuses = None
        log.info("transfer finished", extra={**extra, "status": status})
        return 200 <= status < 300

    # --- What the peer does (called by the user agent's receive path)

    def cancel(self) -> None:
        """A CANCEL for our INVITE: 487 unless a final response went out already."""
        if self.invite.final_sent:
            return
        self._respond_invite(487)
        self.dialog.terminate()
        self._stop_with("cancelled")

    def receive_ack(self, ack: SipRequest) -> bool:
        """The ACK of one of our 2xx (matched by dialog); False if no INVITE of ours has its
        CSeq. A repeated ACK (the peer saw our 200 twice) is absorbed."""
        try:
            cseq = ack.cseq  # ACKs skip validate_request: a malformed CSeq arrives here
        except SipParseError:
            return False
        invite = self._invites.get(cseq.number) if cseq.method == "ACK" else None
        if invite is None:
            return False
        invite.acknowledge(ack)
        return True

    def receive_bye(self, bye: ServerTransaction) -> None:
        """The caller hung up: 200, and the call ends without a BYE of ours."""
        bye.respond(make_response(bye.request, 200, to_tag=self.dialog.local_tag))
        self.dialog.terminate()
        if self._call is not None:
            self._call.peer_hung_up()
        else:
            if not self.invite.final_sent:
                self._respond_invite(487)  # BYE in the early dialog (RFC 3261 §15)
            self._stop_with("caller_hung_up")

    def receive_reinvite(self, reinvite: InviteServerTransaction) -> None:
        """A re-INVITE: answer with our SDP (same codec), following the peer's new address and
        its hold or resume (the direction it offers)."""
        request = reinvite.request
        if self.state is not LegState.ACTIVE or self._local_sdp is None:
            reinvite.respond(make_response(request, 491, to_tag=self.dialog.local_tag))
            return
        try:
            self.dialog.refresh_target(request)
        except SipParseError:  # a Contact we cannot route to (an unknown scheme, say)
            bad_contact = "Malformed Contact Header"
            reinvite.respond(
                make_response(request, 400, bad_contact, to_tag=self.dialog.local_tag)
            )
            return
        answer = self._local_sdp
        if request.body:
            try:
                offer = parse_sdp(request.body)
                answer = self._answer(offer, self._media.codec)
                media = negotiated_media(offer, answer)
            except SdpError:
                reinvite.respond(make_response(request, 488, to_tag=self.dialog.local_tag))
                return
            remote = (media.remote_ip, media.remote_port)
            if remote != self._sdp_remote and self._rtp is not None:
                self._sdp_remote = remote
                if (address := _rtp_address(remote)) is not None:
                    self._rtp.set_remote(address)
            self._local_sdp = answer
            if self._call is not None:  # hold (sendonly, inactive, 0.0.0.0) or resume
                self._call.set_held(not media.direction.sends)
        # Without an offer ours goes in the 200; the peer's answer comes in the ACK and the
        # media keeps following its latched source.
        self._invites[request.cseq.number] = reinvite
        reinvite.respond(
            make_response(
                request,
                200,
                to_tag=self.dialog.local_tag,
                extra_headers=[
                    *self._host.headers_for(200),
                    ("Contact", self.dialog.local_contact),  # RFC 3261 §12.1.1, §13.3.1.4
                ],
                body=serialize_sdp(answer),
                content_type=SDP_MEDIA_TYPE,
            )
        )

    def receive_notify(self, notify: ServerTransaction) -> None:
        """A NOTIFY of the implicit REFER subscription: 200, and its sipfrag status noted."""
        request = notify.request
        event = (request.headers.get("Event") or "").partition(";")[0].strip().lower()
        if event != REFER_EVENT:
            notify.respond(make_response(request, 489, to_tag=self.dialog.local_tag))
            return
        if not self._refers_sent:
            notify.respond(make_response(request, 481, to_tag=self.dialog.local_tag))
            return
        notify.respond(make_response(request, 200, to_tag=self.dialog.local_tag))
        status = sipfrag_status(request.body) if request.content_type == SIPFRAG_TYPE else None
        state = (request.headers.get("Subscription-State") or "").strip().lower()
        if (status is None or status < 200) and state.startswith("terminated"):
            status = _TRANSFER_GAVE_NO_STATUS
        if status is None:
            return
        if self._notify_statuses is not None:
            self._notify_statuses.put_nowait(status)
        elif self._accepted_transfer is not None and status >= 200:
            transfer, self._accepted_transfer = self._accepted_transfer, None
            if status < 300 and self._call is not None:
                # Connected after we gave up on it: the caller is with the queue now.
                log.info(
                    "transfer answered after its time-out",
                    extra={"call_id": self.context.call_id, "queue": transfer.queue},
                )
                self._call.transferred_late(transfer)

    def shutdown(self) -> None:
        """The user agent is closing: refuse a call not yet answered, end one in progress."""
        if self._call is not None:
            self._call.end("shutdown")
            return
        if not self.invite.final_sent:
            self._respond_invite(503, self._host.headers_for(503))
            self.dialog.terminate()
        self._stop_with("shutdown")

    # --- Helpers

    async def _end_answered_call(self) -> None:
        """Closing down between our 200 and its ACK: a BYE may only follow the ACK (RFC 3261
        §15), so wait a little for it; the dialog is then confirmed and ``_finish`` sends
        the BYE. Without an ACK in that time the caller's phone learns of the end by its own
        ACK timer or media timeout."""
        with contextlib.suppress(TimeoutError):
            acked = await asyncio.wait_for(
                asyncio.shield(self.invite.acked), self._settings.answered_shutdown_wait_s
            )
            if acked:
                self.dialog.confirm()

    def _stop_with(self, reason: str) -> None:
        if not self._stop.done():
            self._stop.set_result(reason)

    def _respond_invite(
        self, status: int, headers: Iterable[tuple[str, str]] = (), sdp: bytes = b""
    ) -> None:
        extra = list(headers)
        if 100 < status < 300:
            extra.append(("Contact", self.dialog.local_contact))
        self.invite.respond(
            make_response(
                self.invite.request,
                status,
                to_tag=self.dialog.local_tag,
                extra_headers=extra,
                body=sdp,
                content_type=SDP_MEDIA_TYPE if sdp else None,
            )
        )

    def _answer(self, offer: SessionDescription, codec: str) -> SessionDescription:
        """Our answer (only the codec the RTP session runs), its version raised on a change."""
        assert self._rtp is not None
        local_ip = self._settings.contact_host
        port = self._rtp.local_address[1]

        def build(version: int) -> SessionDescription:
            return answer_offer(
                offer,
                local_ip=local_ip,
                local_port=port,
                session_id=self._sdp_session_id,
                session_version=version,
                supported=(codec,),
            )

        answer = build(self._sdp_version)
        previous = self._local_sdp
        if previous is not None and (answer.media, answer.connection) != (
            previous.media,
            previous.connection,
        ):
            self._sdp_version += 1  # RFC 3264 §8: a changed description gets a new version
            answer = build(self._sdp_version)
        return answer

    async def _send_bye(self) -> None:
        request = self.dialog.new_request("BYE", self._host.new_via())
        self.dialog.terminate()  # exactly one BYE, whoever asks for it next
        try:
            transaction = self._host.transactions.request(request, self.source)
        except RuntimeError:
            return  # the user agent is closing down
        self._host.bye_sent(self)
        response = await transaction.final_response()
        if response is None:
            log.info("BYE unanswered", extra={"call_id": self.context.call_id})


def _rtp_address(address: tuple[str, int]) -> tuple[str, int] | None:
    """Where to send RTP before the peer's first packet, or None (latch on it; RFC 4961)."""
    host, port = address
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name in c=: resolving it would block the loop
    return None if host == _HOLD_ADDRESS or port <= 0 else address
