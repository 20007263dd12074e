"""Answering a request (RFC 3261 §8.2.6, §21): reason phrases and ``make_response``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from voice.errors import SipParseError
from voice.sip.fields import parse_name_addr
from voice.sip.grammar import is_token
from voice.sip.headers import Headers
from voice.sip.message import MAX_STATUS, MIN_STATUS, SipRequest, SipResponse

_FIRST_REDIRECT: Final = 300

REASON_PHRASES: Final[Mapping[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
# Indexed by status // 100.
_CLASS_REASONS: Final = (
    "",
    "Provisional",
    "Success",
    "Redirection",
    "Request Failure",
    "Server Failure",
    "Global Failure",
)


def reason_phrase(status: int) -> str:
    """The RFC reason phrase of ``status``, or its class's name for an unlisted code."""
    return REASON_PHRASES.get(status, _CLASS_REASONS[status // 100])


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response to ``request`` as RFC 3261 §8.2.6 builds it.

    Copies every Via (in order), From, To, Call-ID and CSeq; Timestamp into a 100 (§8.2.6.1);
    Record-Route into 101..299 (§12.1.1, harmless outside dialog-creating requests). A response
    above 100 to a request whose To has no tag needs ``to_tag`` (ValueError otherwise): the same
    one for every response of a dialog, from ``new_tag()``. A To that already has a tag (an
    in-dialog request) keeps it and ``to_tag`` is ignored, so a stateless 400 can always pass
    ``new_tag()``. A To the parser could not read is echoed untouched.
    """
    if not MIN_STATUS <= status <= MAX_STATUS:
        raise ValueError(f"status {status} is outside 100..699")
    if to_tag is not None and not is_token(to_tag):
        raise ValueError("a To tag must be a token")
    if body and content_type is None:
        raise ValueError("a response with a body needs its content_type")
    headers = Headers()
    for value in request.headers.get_all("Via"):
        headers.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            headers.add(name, _tagged(value, status, to_tag) if name == "To" else value)
    if status == MIN_STATUS:
        copied: tuple[str, ...] = ("Timestamp",)
    else:
        copied = ("Record-Route",) if status < _FIRST_REDIRECT else ()
    for name in copied:
        for value in request.headers.get_all(name):
            headers.add(name, value)
    for name, value in extra_headers:
        headers.add(name, value)
    if content_type is not None:
        headers.set("Content-Type", content_type)
    headers.set("Content-Length", str(len(body)))
    return SipResponse(status, reason_phrase(status) if reason is None else reason, headers, body)


def _tagged(to_value: str, status: int, to_tag: str | None) -> str:
    try:
        existing = parse_name_addr(to_value, "To").tag
    except SipParseError:
        return to_value
    if existing is not None:
        return to_value
    if to_tag is None:
        if status > MIN_STATUS:
            raise ValueError("a response above 100 needs a To tag: pass to_tag=new_tag()")
        return to_value
    return f"{to_value};tag={to_tag}"
