"""The keys that match SIP messages to their transactions (RFC 3261 §17.1.3, §17.2.3).

A server transaction is found by its top Via's branch and sent-by and its method (an ACK finds
its INVITE); a request from an RFC 2543 peer, whose branch lacks the magic cookie, by its
Request-URI, From tag, Call-ID, CSeq and top Via. A client transaction is found by the branch
and the CSeq method of the response.
"""

from __future__ import annotations

from typing import Final

from voice.errors import SipParseError
from voice.sip.message import BRANCH_MAGIC_COOKIE, SipRequest, SipResponse

DEFAULT_SIP_PORT: Final = 5060

TransactionKey = tuple[str, ...]


def server_key(request: SipRequest, method: str | None = None) -> TransactionKey | None:
    """The key a server transaction is found by (§17.2.3), or None if the Via is unreadable.

    An ACK matches its INVITE; pass ``method="INVITE"`` to find the INVITE a CANCEL names.
    """
    try:
        via = request.top_via
    except SipParseError:
        return None
    wanted = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch
    sent_by = f"{via.host.lower()}:{via.port or DEFAULT_SIP_PORT}"
    if branch is not None and branch.startswith(BRANCH_MAGIC_COOKIE):
        return ("3261", branch, sent_by, wanted)
    try:
        # RFC 2543 peers: the To tag is left out, so the ACK of a non-2xx (which carries our
        # tag) still finds its INVITE.
        return (
            "2543",
            request.uri,
            request.from_addr.tag or "",
            request.call_id,
            str(request.cseq.number),
            str(via),
            wanted,
        )
    except SipParseError:
        return None


def client_key(message: SipRequest | SipResponse) -> TransactionKey | None:
    """The key a client transaction is found by (§17.1.3): top Via branch and CSeq method."""
    try:
        branch = message.top_via.branch
        method = message.cseq.method
    except SipParseError:
        return None
    return None if branch is None else (branch, method)
