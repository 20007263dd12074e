"""What a UAS answers to a request that parsed but must not be processed (RFC 3261 §8.2), and
whether a response is fit to hand to a client transaction.

``validate_request`` returns ``(status, reason)`` or None, checking in the RFC's order: the
version (505), the syntax of every header the UA relies on and the number of Via, Contact,
Route and Record-Route values (400), the method (405 known but not
ours, 501 unknown), the CSeq method (400), the Request-URI scheme (416), Require (420), the body
(415), and for INVITE whether the caller accepts an SDP answer (406). The caller adds the
headers those statuses need: Allow (405/501), Unsupported (420, from ``unsupported_extensions``)
and Accept (415). An ACK is never answered (§17.2.3): drop one that fails.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

from voice.errors import SipParseError
from voice.sip.fields import SIP_VERSION, parse_media_type
from voice.sip.message import SipMessage, SipRequest, SipResponse
from voice.sip.uri import SIP_SCHEMES, parse_uri, uri_scheme

KNOWN_METHODS: Final = frozenset(
    "ACK BYE CANCEL INFO INVITE MESSAGE NOTIFY OPTIONS PRACK PUBLISH REFER REGISTER SUBSCRIBE "
    "UPDATE".split()
)
# What the triage user agent implements by default: calls, their DTMF INFO and the NOTIFYs
# that report on the REFER it sends to transfer a call.
DEFAULT_METHODS: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "NOTIFY")
DEFAULT_CONTENT_TYPES: Final = ("application/sdp",)
SDP_MEDIA_TYPE: Final = "application/sdp"

_MANDATORY: Final = ("Via", "From", "To", "Call-ID", "CSeq")
_SINGLE_VALUED: Final = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type")
_NO_420: Final = ("ACK", "CANCEL")  # §8.2.2.3
# Caps on the list headers the UA parses element by element: parsing 1,500 Contacts costs
# ~20 ms of event loop. A request cannot have crossed more proxies than the recommended initial
# Max-Forwards (70, §8.1.1.6; RFC 4475's longreq has 34 Vias); a UAS needs few Contacts/routes.
MAX_VIA_VALUES: Final = 70
MAX_ADDRESS_VALUES: Final = 16
_CAPPED: Final = (
    ("Via", MAX_VIA_VALUES),
    ("Contact", MAX_ADDRESS_VALUES),
    ("Route", MAX_ADDRESS_VALUES),
    ("Record-Route", MAX_ADDRESS_VALUES),
)
# callid = word [ "@" word ]; word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`"
# / "'" / "~" / "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}")
_WORD: Final = r"""[A-Za-z0-9\-.!%*_+`'~()<>:\\"/\[\]?{}]+"""
_CALL_ID: Final = re.compile(rf"{_WORD}(?:@{_WORD})?")
_RFC1123_DATE: Final = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_QVALUE: Final = re.compile(r"(0(\.[0-9]{0,3})?|1(\.0{0,3})?)")
_SDP_RANGES: Final = {SDP_MEDIA_TYPE: 3, "application/*": 2, "*/*": 1}  # by specificity


def validate_request(
    request: SipRequest,
    *,
    methods: Collection[str] = DEFAULT_METHODS,
    extensions: Collection[str] = (),
    content_types: Collection[str] = DEFAULT_CONTENT_TYPES,
) -> tuple[int, str] | None:
    """The status and reason a UAS must answer ``request`` with, or None if it may process it.

    ``methods`` are the methods this UAS implements, ``extensions`` the option tags it supports
    (for Require), ``content_types`` the body types it reads (lower-case ``type/subtype``).
    """
    if request.version.upper() != SIP_VERSION:
        return 505, "Version Not Supported"
    problem = _header_problem(request) or _request_uri_problem(request)
    if problem:
        return 400, problem
    if request.method not in methods:
        if request.method in KNOWN_METHODS:
            return 405, "Method Not Allowed"
        return 501, "Not Implemented"
    if request.cseq.method != request.method:
        return 400, "CSeq Method Does Not Match Request"
    if uri_scheme(request.uri) not in SIP_SCHEMES:
        return 416, "Unsupported URI Scheme"
    if request.method not in _NO_420 and unsupported_extensions(request, extensions):
        return 420, "Bad Extension"
    if request.body:
        body_problem = _body_problem(request, content_types)
        if body_problem:
            return body_problem
    if request.method == "INVITE" and not accepts_sdp(request):
        return 406, "Not Acceptable"
    return None


def validate_response(response: SipResponse) -> str | None:
    """Why a response must be dropped (RFC 3261 §18.1.2), or None if a client may match it."""
    if response.version.upper() != SIP_VERSION:
        return "unsupported SIP version"
    return _header_problem(response)


def unsupported_extensions(request: SipRequest, extensions: Collection[str]) -> list[str]:
    """The Require option tags not in ``extensions``: the value of a 420's Unsupported header."""
    supported = {tag.lower() for tag in extensions}
    return [
        tag for tag in request.headers.get_all("Require") if tag and tag.lower() not in supported
    ]


def accepts_sdp(request: SipRequest) -> bool:
    """Whether the request's Accept allows an ``application/sdp`` body in the answer.

    No Accept means SDP (§20.1); an empty one means no body at all. The most specific matching
    range decides (``application/sdp`` over ``application/*`` over ``*/*``), and q=0 refuses.
    """
    ranges = request.headers.get_all("Accept")
    if not ranges:
        return True
    best_specificity, best_q = 0, 0.0
    for media_range in ranges:
        media, _, param_text = media_range.partition(";")
        media = media.strip(" \t").lower()
        specificity = _SDP_RANGES.get(media, 0)
        if specificity > best_specificity:
            best_specificity, best_q = specificity, _qvalue(param_text)
    return best_specificity > 0 and best_q > 0


def _qvalue(param_text: str) -> float:
    for param in param_text.split(";"):
        name, _, value = param.partition("=")
        if name.strip(" \t").lower() == "q":
            value = value.strip(" \t")
            # A malformed q is read as the default rather than refusing the request outright.
            return float(value) if _QVALUE.fullmatch(value) else 1.0
    return 1.0


def _header_problem(message: SipMessage) -> str | None:
    headers = message.headers
    for name in _MANDATORY:
        if name not in headers:
            return f"Missing {name} Header"
    for name in _SINGLE_VALUED:
        if len(headers.get_all(name)) > 1:
            return f"Multiple {name} Headers"
    for name, cap in _CAPPED:
        if len(headers.get_all(name)) > cap:
            return f"Too Many {name} Values"
    checks = (
        ("Via", lambda: message.vias),
        ("From", lambda: _check_address_uri(message.from_addr.uri)),
        ("To", lambda: _check_address_uri(message.to_addr.uri)),
        ("CSeq", lambda: message.cseq),
        ("Max-Forwards", lambda: message.max_forwards),
        ("Contact", lambda: _check_contacts(message)),
        ("Content-Type", lambda: message.content_type),
    )
    for name, check in checks:
        try:
            check()
        except SipParseError:
            return f"Malformed {name} Header"
    if _CALL_ID.fullmatch(message.call_id) is None:
        return "Malformed Call-ID Header"
    date = headers.get("Date")
    if date is not None and _RFC1123_DATE.fullmatch(date) is None:
        return "Malformed Date Header"
    return None


def _check_address_uri(uri: str) -> None:
    # Any scheme may name a party (RFC 4475 §3.3.4); one that claims to be SIP must be valid.
    if uri_scheme(uri) in SIP_SCHEMES:
        parse_uri(uri)


def _check_contacts(message: SipMessage) -> None:
    contacts = message.contacts
    for contact in contacts:
        if contact.uri == "*":
            is_register = isinstance(message, SipRequest) and message.method == "REGISTER"
            if not is_register or len(contacts) > 1:
                raise SipParseError("a wildcard Contact is only valid alone in a REGISTER")
        else:
            _check_address_uri(contact.uri)


def _request_uri_problem(request: SipRequest) -> str | None:
    try:
        scheme = uri_scheme(request.uri)
        if scheme not in SIP_SCHEMES:
            return None  # well-formed enough to be refused with 416 after the method checks
        uri = parse_uri(request.uri)
    except SipParseError:
        return "Malformed Request-URI"
    if uri.headers:
        return "Request-URI Must Not Carry Headers"  # RFC 3261 §19.1.1, table 1
    return None


def _body_problem(request: SipRequest, content_types: Collection[str]) -> tuple[int, str] | None:
    content_type = request.content_type
    if content_type is None:
        return 400, "Missing Content-Type Header"
    encodings = [e.lower() for e in request.headers.get_all("Content-Encoding") if e]
    if any(encoding != "identity" for encoding in encodings):
        return 415, "Unsupported Content Encoding"
    if content_type not in {parse_media_type(t) for t in content_types}:
        return 415, "Unsupported Media Type"
    return None
