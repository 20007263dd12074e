"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966): a frozen ``SipUri``, ``parse_uri`` and
``str(uri)``.

Fields hold unescaped text: ``parse_uri("sip:%75ser@example.com").user == "user"`` and a ``%00``
stays a NUL character, never a terminator. ``str(uri)`` escapes exactly what the grammar does
not allow, so ``parse_uri(str(uri)) == uri`` for every ``SipUri``. Equality is field by field
(the scheme lower-cased, the rest as written); RFC 3261 §19.1.4 comparison (case-insensitive
hosts, parameters present on one side only) is not implemented because nothing needs it yet.

Other schemes (``http:``, ``urn:``, ``isbn:``...) are legal in To, From and Contact, so header
values keep their URIs as text (``NameAddr.uri``) and only ``parse_uri`` insists on one of
``SIP_SCHEMES``; ``uri_scheme`` reads the scheme of any URI, e.g. to answer 416.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from voice.errors import SipParseError
from voice.sip.grammar import decimal

SIP_SCHEMES: Final = ("sip", "sips", "tel")
MAX_PORT: Final = 65535
_PORT_DIGITS: Final = 5

UriParams = tuple[tuple[str, str | None], ...]
UriHeaders = tuple[tuple[str, str], ...]

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# Characters each URI part may hold unescaped (RFC 3261 §25.1); alphanumerics always may.
_UNRESERVED: Final = "-_.!~*'()"
_USER_SAFE: Final = _UNRESERVED + "&=+$,;?/"
_PASSWORD_SAFE: Final = _UNRESERVED + "&=+$,"
_PARAM_SAFE: Final = _UNRESERVED + "[]/:&+$"
_HEADER_SAFE: Final = _UNRESERVED + "[]/?:+$"
_HOST_LABEL: Final = re.compile(r"[A-Za-z0-9\-]+")
_TEL_NUMBER: Final = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_TEL_DIGIT: Final = re.compile(r"[0-9A-Fa-f*#]")


def _escaped_run(safe: str, *, allow_empty: bool = False) -> re.Pattern[str]:
    chars = "A-Za-z0-9" + re.escape(safe)
    return re.compile(rf"(?:[{chars}]|%[0-9A-Fa-f]{{2}}){'*' if allow_empty else '+'}")


_USER: Final = _escaped_run(_USER_SAFE)
_PASSWORD: Final = _escaped_run(_PASSWORD_SAFE, allow_empty=True)
_PARAM: Final = _escaped_run(_PARAM_SAFE)
_HEADER_NAME: Final = _escaped_run(_HEADER_SAFE)
_HEADER_VALUE: Final = _escaped_run(_HEADER_SAFE, allow_empty=True)


def is_valid_host(host: str) -> bool:
    """Whether ``host`` is a hostname, an IPv4 address or a bracketed IPv6 reference."""
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    return all(
        _HOST_LABEL.fullmatch(label) is not None and label[0] != "-" and label[-1] != "-"
        for label in labels
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SipUri:
    """A ``sip:``, ``sips:`` or ``tel:`` URI with unescaped fields.

    For ``tel:`` the number is ``user`` and ``host`` is empty. ``params`` and ``headers`` keep
    their order; a parameter without a value (``;lr``) has value None.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: UriParams = ()
    headers: UriHeaders = ()

    def __post_init__(self) -> None:
        if self.scheme not in SIP_SCHEMES:
            raise ValueError(f"URI scheme must be one of {SIP_SCHEMES}, not {self.scheme!r}")
        if self.port is not None and not 0 <= self.port <= MAX_PORT:
            raise ValueError(f"URI port {self.port} is outside 0..{MAX_PORT}")
        if any(not name or value == "" for name, value in self.params):
            raise ValueError("URI parameters need a name, and a value if they have one")
        if any(not name for name, _ in self.headers):
            raise ValueError("URI headers need a name")
        if self.scheme == "tel":
            if self.user is None or not _is_tel_number(self.user):
                raise ValueError("a tel URI needs a number of digits and visual separators")
            if self.host or self.port is not None or self.password is not None or self.headers:
                raise ValueError("a tel URI has no host, port, password or headers")
            return
        if not is_valid_host(self.host):
            raise ValueError("SIP URI host is not a hostname, IPv4 or [IPv6] address")
        if self.user == "":
            raise ValueError("SIP URI user must be None or non-empty")
        if self.password is not None and self.user is None:
            raise ValueError("SIP URI password needs a user")

    def param(self, name: str) -> str | None:
        """The value of URI parameter ``name`` (case-insensitive), None if absent or valueless."""
        lowered = name.lower()
        return next((v for n, v in self.params if n.lower() == lowered), None)

    def has_param(self, name: str) -> bool:
        """Whether URI parameter ``name`` is present (case-insensitive), e.g. ``lr``."""
        lowered = name.lower()
        return any(n.lower() == lowered for n, _ in self.params)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{_format_params(self.params)}"
        text = self.scheme + ":"
        if self.user is not None:
            text += _escape(self.user, _USER_SAFE)
            if self.password is not None:
                text += ":" + _escape(self.password, _PASSWORD_SAFE)
            text += "@"
        text += self.host
        if self.port is not None:
            text += f":{self.port}"
        text += _format_params(self.params)
        if self.headers:
            text += "?" + "&".join(
                f"{_escape(n, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}" for n, v in self.headers
            )
        return text


def uri_scheme(text: str) -> str:
    """The lower-cased scheme of any absolute URI; SipParseError if ``text`` has none."""
    scheme, colon, _ = text.partition(":")
    if not colon or _SCHEME.fullmatch(scheme) is None:
        raise SipParseError("URI has no scheme")
    return scheme.lower()


def parse_uri(text: str) -> SipUri:
    """Parse a ``sip:``, ``sips:`` or ``tel:`` URI; SipParseError says which part is malformed."""
    scheme = uri_scheme(text)
    if scheme not in SIP_SCHEMES:
        raise SipParseError(f"unsupported URI scheme {scheme!r}")
    rest = text[len(scheme) + 1 :]
    if scheme == "tel":
        number, semicolon, param_text = rest.partition(";")
        if not _is_tel_number(number):
            raise SipParseError("tel URI number is malformed")
        tel_params = _parse_params(param_text) if semicolon else ()
        return _checked(lambda: SipUri(scheme=scheme, user=number, params=tel_params))
    # '@' cannot appear unescaped in a host, parameter or header, so the first one ends userinfo
    # (and the user part may hold ';' and '?': RFC 4475 §3.1.1.9).
    userinfo, at, after = rest.partition("@")
    if not at:
        userinfo, after = "", rest
    hostport_params, question, header_text = after.partition("?")
    hostport, semicolon, param_text = hostport_params.partition(";")
    user = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        if _USER.fullmatch(user_text) is None:
            raise SipParseError("SIP URI user part is malformed")
        user = _unescape(user_text)
        if colon:
            if _PASSWORD.fullmatch(password_text) is None:
                raise SipParseError("SIP URI password is malformed")
            password = _unescape(password_text)
    host, port = _parse_hostport(hostport)
    params = _parse_params(param_text) if semicolon else ()
    headers = _parse_headers(header_text) if question else ()
    return _checked(
        lambda: SipUri(
            scheme=scheme,
            user=user,
            password=password,
            host=host,
            port=port,
            params=params,
            headers=headers,
        )
    )


def _checked(build: Callable[[], SipUri]) -> SipUri:
    # The parser has checked every part already; this keeps the promise that parsing raises
    # nothing but SipParseError even if the two sets of rules ever drift apart.
    try:
        return build()
    except ValueError as exc:
        raise SipParseError(f"invalid URI: {exc}") from exc


def _parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        close = text.find("]")
        host, rest = (text[: close + 1], text[close + 1 :]) if close >= 0 else (text, "")
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    if not is_valid_host(host):
        raise SipParseError("SIP URI host is malformed")
    if not rest:
        return host, None
    port = decimal(rest[1:], _PORT_DIGITS) if rest.startswith(":") else None
    if port is None or port > MAX_PORT:
        raise SipParseError("SIP URI port is malformed")
    return host, port


def _parse_params(text: str) -> UriParams:
    params: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if _PARAM.fullmatch(name) is None or (equals and _PARAM.fullmatch(value) is None):
            raise SipParseError("URI parameter is malformed")
        params.append((_unescape(name), _unescape(value) if equals else None))
    return tuple(params)


def _parse_headers(text: str) -> UriHeaders:
    headers: list[tuple[str, str]] = []
    for part in text.split("&"):
        name, equals, value = part.partition("=")
        if not equals or _HEADER_NAME.fullmatch(name) is None:
            raise SipParseError("URI header is malformed")
        if _HEADER_VALUE.fullmatch(value) is None:
            raise SipParseError("URI header value is malformed")
        headers.append((_unescape(name), _unescape(value)))
    return tuple(headers)


def _is_tel_number(text: str) -> bool:
    return _TEL_NUMBER.fullmatch(text) is not None and _TEL_DIGIT.search(text) is not None


def _format_params(params: UriParams) -> str:
    text = ""
    for name, value in params:
        text += ";" + _escape(name, _PARAM_SAFE)
        if value is not None:
            text += "=" + _escape(value, _PARAM_SAFE)
    return text


# surrogateescape keeps escaped bytes that are not UTF-8 (``%FF``) exact through a round trip.
def _escape(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogateescape")


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text
