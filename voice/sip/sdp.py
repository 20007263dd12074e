"""SDP session descriptions (RFC 4566): frozen dataclasses, ``parse_sdp`` and ``serialize_sdp``.

The structure (``v= o= s= c= t= m=`` lines, ports, addresses) is checked when parsing and a
failure is an ``SdpError`` naming the line number. Attribute values are read only when asked
for (``rtpmap``, ``fmtp``, ``ptime_ms``, ``direction``): a malformed attribute on a stream we
never use must not cost the call (the RFC 4475 corpus itself carries ``a=rtpmap:31 LPC``), so
those accessors treat one they cannot read as absent.

Lines the model does not interpret (``i= u= e= p= b= t= r= z= k=``) are kept in order in
``other`` and written back in the order RFC 4566 §5 prescribes, so
``parse_sdp(serialize_sdp(sd)) == sd``. Offer/answer lives in ``voice.sip.offer_answer``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from voice.errors import SdpError
from voice.sip.grammar import decimal

SDP_VERSION: Final = 0
MAX_PORT: Final = 65535
DEFAULT_PTIME_MS: Final = 20
_NUMBER_DIGITS: Final = 20  # o= session ids are 64-bit in practice (NTP timestamps)
_PORT_DIGITS: Final = 5
_SESSION_KINDS: Final = "osiuepcbtrzka"  # RFC 4566 §5, after v=
_MEDIA_KINDS: Final = "icbka"
_SESSION_ORDER: Final = {kind: rank for rank, kind in enumerate("iuepbtzk")} | {"r": 5}
_MEDIA_ORDER: Final = {"i": 0, "b": 1, "k": 2}
_ATTRIBUTE_NAME: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_RTPMAP: Final = re.compile(r"([0-9]{1,3})[ \t]+([^/\s]+)/([0-9]{1,6})(?:/([0-9]{1,2}))?")
_FMTP: Final = re.compile(r"(\S+)[ \t]+(.*)")
_PTIME: Final = re.compile(r"[0-9]{1,4}(?:\.[0-9]+)?")
_MIN_LINE: Final = 2  # "x="
_MIN_MEDIA_FIELDS: Final = 4
_ORIGIN_FIELDS: Final = 6
_CONNECTION_FIELDS: Final = 3

_Line = tuple[int, str, str]  # (line number, type letter, value)


class Direction(StrEnum):
    """The media direction attribute (RFC 4566 §6), from the point of view of its sender."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """Whether the side that wrote this direction sends media."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """Whether the side that wrote this direction accepts media."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def reversed(self) -> Direction:
        """The direction the other side has: sendonly for recvonly and the other way round."""
        return direction_of(sends=self.receives, receives=self.sends)


def direction_of(*, sends: bool, receives: bool) -> Direction:
    """The ``Direction`` with these two capabilities."""
    if sends:
        return Direction.SENDRECV if receives else Direction.SENDONLY
    return Direction.RECVONLY if receives else Direction.INACTIVE


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``."""

    username: str
    session_id: int
    session_version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <address>`` (a multicast address keeps its ``/ttl``)."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=<name>`` (a flag: value None) or ``a=<name>:<value>``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]``; ``encoding`` as written."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section: ``m=<media> <port>[/<count>] <proto> <fmt> ...`` and its lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    other: tuple[tuple[str, str], ...] = ()

    def attribute(self, name: str) -> str | None:
        """The value of the first attribute ``name`` (None if absent or a flag)."""
        return next((a.value for a in self.attributes if a.name == name), None)

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The rtpmap of ``payload_type``, or None if absent or unreadable."""
        for attribute in self.attributes:
            if attribute.name == "rtpmap" and attribute.value is not None:
                match = _RTPMAP.fullmatch(attribute.value.strip())
                if match and int(match.group(1)) == payload_type:
                    channels = int(match.group(4)) if match.group(4) else 1
                    return RtpMap(payload_type, match.group(2), int(match.group(3)), channels)
        return None

    def fmtp(self, payload_type: int) -> str | None:
        """The format parameters of ``payload_type`` (text after the payload type), or None."""
        for attribute in self.attributes:
            if attribute.name == "fmtp" and attribute.value is not None:
                match = _FMTP.fullmatch(attribute.value.strip())
                if match and match.group(1) == str(payload_type):
                    return match.group(2)
        return None

    @property
    def ptime_ms(self) -> int | None:
        """The packet time the sender of this description wants to receive, or None."""
        value = self.attribute("ptime")
        if value is None or _PTIME.fullmatch(value.strip()) is None:
            return None
        return round(float(value)) or None

    @property
    def direction(self) -> Direction | None:
        """This section's direction attribute, or None (then the session's applies)."""
        return _direction(self.attributes)


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body. ``other`` holds the session-level lines the model does not interpret.

    ``other`` must hold at least one ``t=`` line (RFC 4566 requires it; ``("t", "0 0")`` is an
    unbounded session).
    """

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    other: tuple[tuple[str, str], ...] = (("t", "0 0"),)

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, or None (then sendrecv applies)."""
        return _direction(self.attributes)


def media_direction(session: SessionDescription, media: MediaDescription) -> Direction:
    """The direction in force for ``media``: its own, else the session's, else sendrecv."""
    return media.direction or session.direction or Direction.SENDRECV


_DIRECTIONS: Final = frozenset(direction.value for direction in Direction)


def _direction(attributes: tuple[Attribute, ...]) -> Direction | None:
    for attribute in attributes:
        if attribute.value is None and attribute.name in _DIRECTIONS:
            return Direction(attribute.name)
    return None


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body; CRLF or bare LF line ends (RFC 4566 §5 asks parsers to take both)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError(f"SDP is not UTF-8 (byte {exc.start})") from exc
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != f"v={SDP_VERSION}":
        raise SdpError("SDP must start with v=0")
    # (line number, type, value) of the session lines, then per m= section its own line first
    session: list[_Line] = []
    sections: list[list[_Line]] = []
    current = session
    for number, line in enumerate(lines[1:], start=2):
        if len(line) < _MIN_LINE or line[1] != "=":
            raise SdpError(f"SDP line {number} is not '<type>=<value>'")
        kind, value = line[0], line[2:]
        if "\x00" in value or "\r" in value:
            raise SdpError(f"SDP line {number} holds a NUL or CR")
        if kind == "m":
            current = [(number, kind, value)]
            sections.append(current)
        elif kind not in (_SESSION_KINDS if current is session else _MEDIA_KINDS):
            raise SdpError(f"SDP line {number} has a type not allowed here")
        else:
            current.append((number, kind, value))
    return _build_session(session, sections)


def _build_session(session: list[_Line], sections: list[list[_Line]]) -> SessionDescription:
    origin: Origin | None = None
    name: str | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = []
    other: list[tuple[str, str]] = []
    for number, kind, value in session:
        if kind == "o":
            if origin is not None:
                raise SdpError(f"SDP line {number}: a second o= line")
            origin = _parse_origin(number, value)
        elif kind == "s":
            if name is not None:
                raise SdpError(f"SDP line {number}: a second s= line")
            name = value
        elif kind == "c":
            if connection is not None:
                raise SdpError(f"SDP line {number}: a second session c= line")
            connection = _parse_connection(number, value)
        elif kind == "a":
            attributes.append(_parse_attribute(number, value))
        else:
            other.append((kind, value))
    if origin is None or name is None:
        raise SdpError("SDP has no o= or no s= line")
    if not any(kind == "t" for kind, _ in other):
        raise SdpError("SDP has no t= line")
    return SessionDescription(
        origin=origin,
        session_name=name,
        connection=connection,
        attributes=tuple(attributes),
        media=tuple(_build_media(section) for section in sections),
        other=tuple(other),
    )


def _build_media(section: list[_Line]) -> MediaDescription:
    (number, _, value), *lines = section
    fields = value.split(" ")
    if len(fields) < _MIN_MEDIA_FIELDS or not all(fields):
        raise SdpError(f"SDP line {number} is not 'm=<media> <port> <proto> <fmt> ...'")
    port_text, slash, count_text = fields[1].partition("/")
    port = decimal(port_text, _PORT_DIGITS)
    count = decimal(count_text, _PORT_DIGITS) if slash else None
    if port is None or port > MAX_PORT or (slash and not count):
        raise SdpError(f"SDP line {number} has a malformed port")
    connection = None
    attributes: list[Attribute] = []
    other: list[tuple[str, str]] = []
    for line_number, kind, line_value in lines:
        if kind == "c":
            if connection is not None:
                raise SdpError(f"SDP line {line_number}: a second c= line in one media section")
            connection = _parse_connection(line_number, line_value)
        elif kind == "a":
            attributes.append(_parse_attribute(line_number, line_value))
        else:
            other.append((kind, line_value))
    return MediaDescription(
        media=fields[0],
        port=port,
        proto=fields[2],
        formats=tuple(fields[3:]),
        port_count=count,
        connection=connection,
        attributes=tuple(attributes),
        other=tuple(other),
    )


def _parse_origin(number: int, value: str) -> Origin:
    fields = value.split(" ")
    if len(fields) != _ORIGIN_FIELDS or not all(fields):
        raise SdpError(f"SDP line {number} is not 'o=<user> <id> <version> IN <type> <addr>'")
    session_id = decimal(fields[1], _NUMBER_DIGITS)
    version = decimal(fields[2], _NUMBER_DIGITS)
    if session_id is None or version is None:
        raise SdpError(f"SDP line {number} has a non-numeric session id or version")
    return Origin(fields[0], session_id, version, fields[5], fields[3], fields[4])


def _parse_connection(number: int, value: str) -> Connection:
    fields = value.split(" ")
    if len(fields) != _CONNECTION_FIELDS or not all(fields):
        raise SdpError(f"SDP line {number} is not 'c=IN <IP4|IP6> <address>'")
    return Connection(fields[2], fields[0], fields[1])


def _parse_attribute(number: int, value: str) -> Attribute:
    name, colon, attribute_value = value.partition(":")
    if _ATTRIBUTE_NAME.fullmatch(name) is None:
        raise SdpError(f"SDP line {number} has a malformed attribute name")
    return Attribute(name, attribute_value if colon else None)


def serialize_sdp(sd: SessionDescription) -> bytes:
    """The SDP body with CRLF line ends, lines in the order RFC 4566 §5 gives."""
    lines = [f"v={SDP_VERSION}", f"o={sd.origin}", f"s={sd.session_name}"]
    session_other = sorted(sd.other, key=lambda line: _SESSION_ORDER.get(line[0], 0))
    lines += [f"{kind}={value}" for kind, value in session_other if kind in "iuep"]
    if sd.connection is not None:
        lines.append(f"c={sd.connection}")
    lines += [f"{kind}={value}" for kind, value in session_other if kind not in "iuep"]
    lines += [f"a={attribute}" for attribute in sd.attributes]
    for media in sd.media:
        port = str(media.port) if media.port_count is None else f"{media.port}/{media.port_count}"
        lines.append(f"m={media.media} {port} {media.proto} {' '.join(media.formats)}")
        media_other = sorted(media.other, key=lambda line: _MEDIA_ORDER.get(line[0], 0))
        lines += [f"{kind}={value}" for kind, value in media_other if kind == "i"]
        if media.connection is not None:
            lines.append(f"c={media.connection}")
        lines += [f"{kind}={value}" for kind, value in media_other if kind != "i"]
        lines += [f"a={attribute}" for attribute in media.attributes]
    if any("\r" in line or "\n" in line or "\x00" in line for line in lines):
        raise ValueError("an SDP value cannot hold CR, LF or NUL")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
