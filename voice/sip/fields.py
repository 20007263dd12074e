"""Typed views of SIP header values (RFC 3261 §20, §25.1): ``NameAddr``, ``Via`` and ``CSeq``.

Each is a frozen dataclass with a ``parse_*`` function over one header value (one element of a
list header) and ``str()`` for the wire; ``parse_x(str(value)) == value``. Errors are
``SipParseError``s that name the header, never its content (which carries names and numbers).

``NameAddr`` (From, To, Contact, Route, Record-Route, Refer-To...) keeps its URI as text,
because these headers may carry any URI scheme; ``voice.sip.uri.parse_uri`` reads a SIP one.
Header parameters keep their order and their raw text (a quoted value keeps its quotes);
a parameter without a value (``;lr``) has value None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from voice.errors import SipParseError
from voice.sip.grammar import decimal, is_token, parse_quoted, quote_string, split_unquoted
from voice.sip.uri import MAX_PORT, is_valid_host

Params = tuple[tuple[str, str | None], ...]

SIP_VERSION: Final = "SIP/2.0"
MAX_CSEQ: Final = 2**31 - 1  # RFC 3261 §8.1.1.5: less than 2**31
_CSEQ_DIGITS: Final = 10
_PORT_DIGITS: Final = 5

# absoluteURI text as it may appear inside <>: a scheme, then reserved/unreserved/escaped chars.
_URI_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[A-Za-z0-9\-_.!~*'()%;/?:@&=+$,\[\]]*")
# gen-value = token / host / quoted-string; received= may hold a bare IPv6 address.
_PARAM_VALUE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
_VIA_SENT: Final = re.compile(
    r"([^\s/]+)[ \t]*/[ \t]*([^\s/]+)[ \t]*/[ \t]*([^\s/]+)[ \t]+"
    r"(\[[^\]\s]*\]|[^\s:\[]+)(?:[ \t]*:[ \t]*(\S*))?"
)
_CSEQ: Final = re.compile(r"[ \t]*([0-9]+)[ \t]+(\S+)[ \t]*")
_ADDR_SPEC_END: Final = re.compile(r"[; \t]")
_LWS_RUN: Final = re.compile(r"[ \t]+")
_LWS: Final = " \t"


def find_param(params: Params, name: str) -> tuple[bool, str | None]:
    """(present, value) of parameter ``name``, compared case-insensitively."""
    lowered = name.lower()
    for param_name, value in params:
        if param_name.lower() == lowered:
            return True, value
    return False, None


def set_param(params: Params, name: str, value: str | None) -> Params:
    """``params`` with ``name`` set to ``value``, in place if present, else appended."""
    present, _ = find_param(params, name)
    if not present:
        return (*params, (name, value))
    lowered = name.lower()
    return tuple((n, value) if n.lower() == lowered else (n, v) for n, v in params)


def format_params(params: Params) -> str:
    """``;name=value;flag`` for the wire."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def parse_params(text: str, header: str) -> Params:
    """Header parameters ``*( SEMI generic-param )``; ``text`` is empty or starts with ``;``."""
    text = text.strip(" \t")
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipParseError(f"{header} header has text where parameters should start")
    params: list[tuple[str, str | None]] = []
    for part in split_unquoted(text[1:], ";"):
        name, equals, value = part.partition("=")
        name = name.strip(" \t")
        if not is_token(name):
            raise SipParseError(f"{header} header has an empty or malformed parameter name")
        if not equals:
            params.append((name, None))
            continue
        value = value.strip(" \t")
        if value.startswith('"'):
            _, end = parse_quoted(value, 0)
            if end != len(value):
                raise SipParseError(f"{header} header has text after a quoted parameter")
        elif _PARAM_VALUE.fullmatch(value) is None:
            raise SipParseError(f"{header} header has an empty or malformed parameter value")
        params.append((name, value))
    return tuple(params)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """An address with optional display name and header parameters (From, To, Contact...).

    ``uri`` is the URI text (any scheme; ``*`` for a wildcard Contact). ``str()`` always writes
    the ``<URI>`` form, which is safe whatever the URI holds.
    """

    uri: str
    display_name: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To), or None."""
        return find_param(self.params, "tag")[1]

    def param(self, name: str) -> str | None:
        """The raw value of parameter ``name``; None if absent or valueless."""
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        """Whether parameter ``name`` is present (with or without a value)."""
        return find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with parameter ``name`` set (replaced in place or appended)."""
        return replace(self, params=set_param(self.params, name, value))

    def __str__(self) -> str:
        address = f"<{self.uri}>"
        if self.display_name is not None:
            address = f"{quote_string(self.display_name)} {address}"
        return address + format_params(self.params)


def parse_name_addr(text: str, header: str = "address") -> NameAddr:
    """Parse ``( name-addr / addr-spec ) *( SEMI param )``; ``header`` names it in errors."""
    text = text.strip(" \t")
    if not text:
        raise SipParseError(f"{header} header is empty")
    display: str | None
    if text.startswith('"'):
        display, end = parse_quoted(text, 0)
        rest = text[end:].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError(f"{header} header has a quoted display name without <URI>")
        return _bracketed(rest, display, header)
    bracket = text.find("<")
    if bracket >= 0:
        prefix = text[:bracket].strip(_LWS)
        words = _LWS_RUN.split(prefix) if prefix else []
        if not all(is_token(word) for word in words):
            raise SipParseError(f"{header} header display name is neither tokens nor quoted")
        display = " ".join(words) if words else None
        return _bracketed(text[bracket:], display, header)
    # addr-spec without <>: the URI ends at the first ';' or LWS, and may hold no ',' '?' ';'
    # (RFC 3261 §20: such URIs must be bracketed), so what follows are header parameters.
    match = _ADDR_SPEC_END.search(text)
    end = match.start() if match else len(text)
    uri = text[:end]
    if _URI_TEXT.fullmatch(uri) is None or "?" in uri or "," in uri:
        raise SipParseError(f"{header} header URI is malformed (or needs <>)")
    return NameAddr(uri, None, parse_params(text[end:], header))


def _bracketed(text: str, display: str | None, header: str) -> NameAddr:
    close = text.find(">")
    if close < 0:
        raise SipParseError(f"{header} header has '<' without '>'")
    uri = text[1:close]
    if _URI_TEXT.fullmatch(uri) is None:
        raise SipParseError(f"{header} header URI is malformed")
    return NameAddr(uri, display, parse_params(text[close + 1 :], header))


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: ``SIP/2.0/UDP host:port;branch=...;received=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = SIP_VERSION

    @property
    def branch(self) -> str | None:
        """The transaction id (RFC 3261 §8.1.1.7), or None for an RFC 2543 peer."""
        return find_param(self.params, "branch")[1]

    @property
    def received(self) -> str | None:
        """The source address a server recorded (RFC 3261 §18.2.1), or None."""
        return find_param(self.params, "received")[1]

    @property
    def rport(self) -> int | None:
        """The source port a server recorded (RFC 3581); None if absent or only requested.

        Whether the client asked for it (a bare ``;rport``) is ``has_param("rport")``.
        """
        value = find_param(self.params, "rport")[1]
        port = decimal(value, _PORT_DIGITS) if value is not None else None
        return port if port is not None and port <= MAX_PORT else None

    def param(self, name: str) -> str | None:
        """The raw value of parameter ``name``; None if absent or valueless."""
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        """Whether parameter ``name`` is present (with or without a value)."""
        return find_param(self.params, name)[0]

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with parameter ``name`` set, e.g. ``received`` and ``rport`` by a server."""
        return replace(self, params=set_param(self.params, name, value))

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    """Parse one via-parm; LWS is allowed around ``/`` and ``:`` as RFC 3261 §25.1 says."""
    semicolon = text.find(";")
    sent = (text if semicolon < 0 else text[:semicolon]).strip(_LWS)
    match = _VIA_SENT.fullmatch(sent)
    if match is None:
        raise SipParseError("Via header is not 'SIP/2.0/<transport> <host>[:<port>]'")
    name, version, transport, host, port_text = match.groups()
    if not (is_token(name) and is_token(version) and is_token(transport)):
        raise SipParseError("Via header protocol is malformed")
    if not is_valid_host(host):
        raise SipParseError("Via header host is malformed")
    port = None
    if port_text is not None:
        port = decimal(port_text, _PORT_DIGITS)
        if port is None or port > MAX_PORT:
            raise SipParseError("Via header port is malformed")
    params = parse_params(text[semicolon:], "Via") if semicolon >= 0 else ()
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


@dataclass(frozen=True, slots=True)
class CSeq:
    """The command sequence: a number below 2**31 and the request method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    """Parse ``1*DIGIT LWS Method``; the number must be below 2**31."""
    match = _CSEQ.fullmatch(text)
    if match is None or not is_token(match.group(2)):
        raise SipParseError("CSeq header is not '<number> <method>'")
    number = decimal(match.group(1).lstrip("0") or "0", _CSEQ_DIGITS)
    if number is None or number > MAX_CSEQ:
        raise SipParseError("CSeq number is not below 2**31")
    return CSeq(number, match.group(2))


def parse_media_type(text: str, header: str = "Content-Type") -> str:
    """``type/subtype`` of a media type, lower-cased, parameters dropped."""
    media, _, params = text.partition(";")
    kind, slash, subtype = media.strip(_LWS).partition("/")
    if not slash or not is_token(kind.strip(_LWS)) or not is_token(subtype.strip(_LWS)):
        raise SipParseError(f"{header} header is not 'type/subtype'")
    if params:
        parse_params(";" + params, header)
    return f"{kind.strip(_LWS)}/{subtype.strip(_LWS)}".lower()
