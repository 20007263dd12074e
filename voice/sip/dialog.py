"""A SIP dialog as its UAS sees it (RFC 3261 §12): identity, sequence numbers, target, routes.

``Dialog.answering(invite, local_tag)`` builds the dialog an INVITE creates when we answer it
(§12.1.1): the Call-ID, our tag (the To tag of every response) and the caller's (its From tag),
the caller's Contact as the remote target, and the Record-Route set in order. ``new_request``
builds a request inside it (§12.2.1.1, loose or strict routing); ``accepts_cseq`` applies the
ordering rule of §12.2.2; ``refresh_target`` takes the Contact of a re-INVITE.

``DialogState`` is early (180 sent) -> confirmed (ACK received) -> terminated, through
``confirm()`` and ``terminate()``; anything else raises. Where requests are sent is not the
dialog's business: the user agent sends them back to the address the INVITE came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from voice.errors import SipParseError
from voice.sip.fields import CSeq, NameAddr, parse_name_addr
from voice.sip.message import SipRequest
from voice.sip.uri import parse_uri

MAX_FORWARDS: Final = 70
FIRST_LOCAL_CSEQ: Final = 1

DialogKey = tuple[str, str, str]  # (Call-ID, local tag, remote tag)


class DialogState(StrEnum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Dialog:
    """The state of one dialog; see the module docstring."""

    call_id: str
    local_tag: str
    remote_tag: str  # empty for an RFC 2543 caller that sent no From tag
    local_uri: str  # the To URI of the INVITE
    remote_uri: str  # its From URI
    remote_target: str  # the caller's Contact URI
    route_set: tuple[str, ...]  # Record-Route values, in the order received (§12.1.1)
    local_contact: str  # our Contact header value
    remote_cseq: int
    local_cseq: int = FIRST_LOCAL_CSEQ - 1
    state: DialogState = DialogState.EARLY

    @classmethod
    def answering(cls, invite: SipRequest, local_tag: str, local_contact: str) -> Dialog:
        """The dialog our answer to ``invite`` creates; SipParseError if it has no Contact."""
        target = invite.contact_uri
        if target is None:
            raise SipParseError("an INVITE needs a Contact to create a dialog")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_addr.tag or "",
            local_uri=invite.to_addr.uri,
            remote_uri=invite.from_addr.uri,
            remote_target=str(target),
            route_set=tuple(invite.headers.get_all("Record-Route")),
            local_contact=local_contact,
            remote_cseq=invite.cseq.number,
        )

    @property
    def key(self) -> DialogKey:
        return (self.call_id, self.local_tag, self.remote_tag)

    # transitions

    def confirm(self) -> None:
        """The ACK of our 2xx arrived."""
        if self.state is not DialogState.EARLY:
            raise RuntimeError(f"cannot confirm a dialog that is {self.state}")
        self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        """A BYE was sent or received, or the INVITE failed (idempotent)."""
        self.state = DialogState.TERMINATED

    # requests

    def accepts_cseq(self, request: SipRequest) -> bool:
        """Whether an in-dialog request's CSeq is in order; if not, answer 500 (§12.2.2)."""
        if request.method in ("ACK", "CANCEL"):
            return True  # they carry the number of the request they belong to
        number = request.cseq.number
        if number < self.remote_cseq:
            return False
        # An equal number is tolerated: retransmissions never get here (their transaction
        # absorbs them), and refusing an odd peer's reuse would cost the call for nothing.
        self.remote_cseq = number
        return True

    def refresh_target(self, request: SipRequest) -> None:
        """A target refresh request (re-INVITE) replaces the remote target (§12.2.2)."""
        target = request.contact_uri
        if target is not None:
            self.remote_target = str(target)

    def new_request(self, method: str, via: str) -> SipRequest:
        """A request in this dialog with the next local CSeq; ``via`` holds a fresh branch."""
        if self.state is DialogState.TERMINATED:
            raise RuntimeError(f"cannot send {method} in a terminated dialog")
        self.local_cseq += 1
        request_uri, routes = self._routing()
        request = SipRequest(method, request_uri)
        headers = request.headers
        headers.add("Via", via)
        headers.add("Max-Forwards", str(MAX_FORWARDS))
        for route in routes:
            headers.add("Route", route)
        headers.add("From", str(NameAddr(self.local_uri, params=(("tag", self.local_tag),))))
        remote_params = (("tag", self.remote_tag),) if self.remote_tag else ()
        headers.add("To", str(NameAddr(self.remote_uri, params=remote_params)))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", str(CSeq(self.local_cseq, method)))
        return request

    def _routing(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0], "Route")
        if _is_loose(first.uri):
            return self.remote_target, list(self.route_set)
        # Strict routing (RFC 2543 proxies): the first route becomes the Request-URI and the
        # remote target goes last (§12.2.1.1).
        return _without_headers(first.uri), [*self.route_set[1:], f"<{self.remote_target}>"]


def _is_loose(uri: str) -> bool:
    try:
        return parse_uri(uri).has_param("lr")
    except SipParseError:
        return True  # an unreadable route: treat it as loose, so the Request-URI stays valid


def _without_headers(uri: str) -> str:
    return uri.partition("?")[0]
