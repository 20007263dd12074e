"""SIP messages (RFC 3261 §7): ``SipRequest``, ``SipResponse``, ``parse_message``, ``serialize``.

A message is its start line, an ordered ``Headers`` of raw text values and a ``bytes`` body.
Typed accessors (``call_id``, ``cseq``, ``from_addr``, ``to_addr``, ``vias``, ``top_via``,
``contacts``, ``contact_uri``, ``max_forwards``, ``content_type``, ``request_uri``) parse on
demand and raise ``SipParseError`` for a missing or malformed header; ``validate_request`` and
``validate_response`` (``voice.sip.validation``) read them all once, so after validation they
do not raise. Messages are mutable (a transport adds ``received`` to the top Via, a dialog
builds requests); the typed values are frozen and go back in with ``str()``. The receive path
of a transport, with ``make_response`` from ``voice.sip.response``::

    try:
        message = parse_message(datagram)          # one whole UDP datagram
    except SipBadRequest as exc:                   # readable but malformed: answer 400
        if exc.request.method != "ACK":
            send(serialize(make_response(exc.request, 400, to_tag=new_tag())))
        return
    except SipParseError:                          # unreadable: count and drop
        return
    if isinstance(message, SipRequest):
        via = message.top_via                      # RFC 3261 §18.2.1, RFC 3581
        message.headers.replace_first("Via", str(via.with_param("received", source_ip)))
        if (problem := validate_request(message)) is not None:
            ...                                    # answer it, unless it is an ACK

and a request built from scratch::

    request = SipRequest("OPTIONS", str(target))
    request.headers.add("Via", str(Via("UDP", local_ip, local_port, (("branch", new_branch()),))))
    request.headers.add("CSeq", str(CSeq(1, "OPTIONS")))   # ... From, To, Call-ID, Max-Forwards

``serialize`` always writes a Content-Length that matches the body, so a builder never sets it.
Parse errors never quote header values: they carry phone numbers and names, and end up in logs.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Final

from voice.errors import SipBadRequest, SipParseError
from voice.sip.fields import (
    SIP_VERSION,
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_media_type,
    parse_name_addr,
    parse_via,
)
from voice.sip.grammar import decimal, is_token
from voice.sip.headers import Headers, format_header_lines, parse_header_lines
from voice.sip.uri import SipUri, parse_uri

BRANCH_MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 §8.1.1.7
# Real SIP-over-UDP messages stay under ~4 KiB (RFC 3261 §18.1.1 sends anything over 1300 bytes
# by TCP). Refusing bigger datagrams up front bounds the parse of a hostile one to a few ms.
MAX_MESSAGE_BYTES: Final = 8192  # RFC 4475's longest torture message is 3.5 kB
MIN_STATUS: Final = 100
MAX_STATUS: Final = 699
MAX_MAX_FORWARDS: Final = 255
_TAG_BYTES: Final = 8  # 64 random bits; RFC 3261 §19.3 asks for at least 32
_BRANCH_BYTES: Final = 12
_CALL_ID_BYTES: Final = 16
_CONTENT_LENGTH_DIGITS: Final = 9
_MAX_FORWARDS_DIGITS: Final = 3

_FOLD: Final = re.compile(r"\r\n[ \t]+")
_VERSION: Final = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_URI_CHARS: Final = re.compile(r"[^\x00-\x20\x7f]+")
_HEAD_END: Final = b"\r\n\r\n"


class SipMessage:
    """What requests and responses share: headers, body and the typed header accessors."""

    __slots__ = ()
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        """The Call-ID value."""
        return self._single("Call-ID")

    @property
    def cseq(self) -> CSeq:
        """The CSeq number and method."""
        return parse_cseq(self._single("CSeq"))

    @property
    def from_addr(self) -> NameAddr:
        """The From address; its ``tag`` is the caller's dialog tag."""
        return parse_name_addr(self._single("From"), "From")

    @property
    def to_addr(self) -> NameAddr:
        """The To address; its ``tag`` is None outside a dialog."""
        return parse_name_addr(self._single("To"), "To")

    @property
    def vias(self) -> list[Via]:
        """Every Via, top (most recent hop) first."""
        return [parse_via(value) for value in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        """The first Via: its branch identifies the transaction, its host the response target."""
        value = self.headers.get("Via")
        if value is None:
            raise SipParseError("missing Via header")
        return parse_via(value)

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact; a wildcard ``Contact: *`` (REGISTER only) has ``uri == "*"``."""
        return [
            NameAddr("*") if value == "*" else parse_name_addr(value, "Contact")
            for value in self.headers.get_all("Contact")
        ]

    @property
    def contact_uri(self) -> SipUri | None:
        """The first Contact's URI (the remote target of a dialog), or None without Contact."""
        contacts = self.contacts
        return parse_uri(contacts[0].uri) if contacts else None

    @property
    def max_forwards(self) -> int | None:
        """The Max-Forwards value (0..255), or None when absent (RFC 2543 peers omit it)."""
        values = self.headers.get_all("Max-Forwards")
        if not values:
            return None
        hops = decimal(values[0].lstrip("0") or "0", _MAX_FORWARDS_DIGITS)
        if len(values) > 1 or hops is None or hops > MAX_MAX_FORWARDS:
            raise SipParseError("Max-Forwards header is not one number in 0..255")
        return hops

    @property
    def content_type(self) -> str | None:
        """The body's ``type/subtype``, lower-cased without parameters, or None."""
        value = self.headers.get("Content-Type")
        return None if value is None else parse_media_type(value)

    def _single(self, name: str) -> str:
        values = self.headers.get_all(name)
        if not values:
            raise SipParseError(f"missing {name} header")
        if len(values) > 1:
            raise SipParseError(f"more than one {name} header")
        return values[0]


@dataclass(slots=True)
class SipRequest(SipMessage):
    """A request: method (case-sensitive), Request-URI text, headers, body."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def request_uri(self) -> SipUri:
        """The Request-URI parsed (SipParseError for a non-SIP scheme: answer 416)."""
        return parse_uri(self.uri)


@dataclass(slots=True)
class SipResponse(SipMessage):
    """A response: status code 100..699, reason phrase (may be empty), headers, body."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one UDP datagram into a request or response.

    Raises ``SipBadRequest`` (with the request as read) for a malformed request whose headers
    could be read, and ``SipParseError`` for anything else it cannot read, including a datagram
    over ``MAX_MESSAGE_BYTES``. Octets after
    Content-Length are discarded (RFC 3261 §18.3); without Content-Length the body runs to the
    end of the datagram.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"datagram of {len(data)} bytes is over {MAX_MESSAGE_BYTES}")
    data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line are ignored (keep-alives)
    if not data:
        raise SipParseError("empty datagram")
    head_end = data.find(_HEAD_END)
    framing_problem = None
    if head_end < 0:
        head, body = data.removesuffix(b"\r\n"), b""
        framing_problem = "no empty line after the header section"
    else:
        head, body = data[:head_end], data[head_end + len(_HEAD_END) :]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not UTF-8 (byte {exc.start})") from exc
    start_line, _, header_text = text.partition("\r\n")
    lines = _FOLD.sub(" ", header_text).split("\r\n") if header_text else []
    if "\r" in start_line or "\n" in start_line or any("\r" in ln or "\n" in ln for ln in lines):
        raise SipParseError("bare CR or LF in the header section")
    if start_line[:4].upper() == "SIP/":
        response = _parse_status_line(start_line)
        response.headers = parse_header_lines(lines)
        response.body, problem = _frame_body(response.headers, body)
        if framing_problem or problem:
            raise SipParseError(framing_problem or problem)
        return response
    request, line_problem = _parse_request_line(start_line)
    request.headers = parse_header_lines(lines)
    request.body, problem = _frame_body(request.headers, body)
    problem = line_problem or framing_problem or problem
    if problem:
        request.body = b""
        raise SipBadRequest(problem, request)
    return request


def _parse_status_line(line: str) -> SipResponse:
    version, _, rest = line.partition(" ")
    code_text, _, reason = rest.partition(" ")
    if _VERSION.fullmatch(version) is None:
        raise SipParseError("status line has a malformed SIP version")
    code = decimal(code_text, 3)
    if len(code_text) != 3 or code is None or not MIN_STATUS <= code <= MAX_STATUS:
        raise SipParseError("status code is not three digits in 100..699")
    return SipResponse(code, reason, version=version.upper())


def _parse_request_line(line: str) -> tuple[SipRequest, str | None]:
    # Exactly `Method SP Request-URI SP SIP-Version` (§25.1 allows no other whitespace). When only
    # the method is readable the request can still be answered, so the rest is kept as the URI.
    parts = line.split(" ")
    method = parts[0]
    if not is_token(method):
        raise SipParseError("start line is neither a request line nor a status line")
    if len(parts) != 3 or _URI_CHARS.fullmatch(parts[1]) is None:
        return SipRequest(method, line[len(method) :].strip()), "malformed request line"
    if _VERSION.fullmatch(parts[2]) is None:
        return SipRequest(method, parts[1]), "request line has a malformed SIP version"
    return SipRequest(method, parts[1], version=parts[2].upper()), None


def _frame_body(headers: Headers, body: bytes) -> tuple[bytes, str | None]:
    lengths = headers.get_all("Content-Length")
    if not lengths:
        return body, None
    if len(lengths) > 1:
        return body, "more than one Content-Length header"
    length = decimal(lengths[0], _CONTENT_LENGTH_DIGITS)
    if length is None:
        return body, "Content-Length is not a non-negative integer"
    if length > len(body):
        return body, f"Content-Length {length} exceeds the {len(body)} octets of the body"
    return body[:length], None


def serialize(message: SipRequest | SipResponse) -> bytes:
    """The wire form (CRLF lines, Content-Length matching the body); ValueError if unwritable."""
    if isinstance(message, SipRequest):
        if not is_token(message.method) or _URI_CHARS.fullmatch(message.uri) is None:
            raise ValueError("request needs a token method and a URI without whitespace")
        start = f"{message.method} {message.uri} {message.version}"
    else:
        if not MIN_STATUS <= message.status <= MAX_STATUS:
            raise ValueError(f"status {message.status} is outside 100..699")
        if "\r" in message.reason or "\n" in message.reason:
            raise ValueError("a reason phrase cannot hold CR or LF")
        start = f"{message.version} {message.status} {message.reason}"
    if _VERSION.fullmatch(message.version) is None:
        raise ValueError("SIP version must look like SIP/2.0")
    headers = message.headers
    lengths = headers.get_all("Content-Length")
    if len(lengths) != 1 or decimal(lengths[0], _CONTENT_LENGTH_DIGITS) != len(message.body):
        headers = headers.copy()
        headers.set("Content-Length", str(len(message.body)))
    lines = [start, *format_header_lines(headers), "", ""]
    return "\r\n".join(lines).encode("utf-8") + message.body


def new_tag() -> str:
    """A fresh random From/To tag (64 bits, hex)."""
    return secrets.token_hex(_TAG_BYTES)


def new_branch() -> str:
    """A fresh Via branch with the RFC 3261 magic cookie."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(_BRANCH_BYTES)


def new_call_id() -> str:
    """A fresh random Call-ID (128 bits, hex); no host part, so no address is leaked."""
    return secrets.token_hex(_CALL_ID_BYTES)
