"""The SDP offer/answer model (RFC 3264) for one G.711 audio stream with RFC 4733 events.

``answer_offer`` answers a remote offer: the first audio stream it can take gets the first
offered codec we support and, if offered, telephone-event (its payload type kept, ``0-16``);
every other ``m=`` line is refused with port 0, and ``SdpError`` means "answer 488".
``build_offer`` writes our own offer. ``negotiated_media`` reads, from the remote description
and our own (offer and answer in either role), where to send RTP and with which payload types.

Payload types in ``NegotiatedMedia`` are the remote side's: the ones to send with. When we
answered they equal ours, since an answer reuses the offer's numbers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from voice.errors import SdpError
from voice.sip.grammar import decimal
from voice.sip.sdp import (
    DEFAULT_PTIME_MS,
    MAX_PORT,
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
    direction_of,
    media_direction,
)

RTP_PROFILE: Final = "RTP/AVP"
G711_CLOCK_HZ: Final = 8000
# Static payload types of RFC 3551 table 4 for the codecs we implement.
STATIC_PAYLOAD_TYPES: Final = {"PCMU": 0, "PCMA": 8}
TELEPHONE_EVENT: Final = "telephone-event"
TELEPHONE_EVENTS: Final = "0-16"  # DTMF 0-9 * # A-D and flash (RFC 4733 §3.2)
DEFAULT_TELEPHONE_EVENT_PT: Final = 101
DEFAULT_CODECS: Final = ("PCMU", "PCMA")
MIN_DYNAMIC_PAYLOAD_TYPE: Final = 96
MAX_PAYLOAD_TYPE: Final = 127
# G.711 frames are cut in 10 ms steps; beyond 60 ms the delay is audible on a voice bot.
MIN_PTIME_MS: Final = 10
MAX_PTIME_MS: Final = 60
PTIME_STEP_MS: Final = 10
_HOLD_ADDRESS: Final = "0.0.0.0"  # RFC 2543 hold, still sent by old PBXs (RFC 3264 §8.4)
_ANONYMOUS_USER: Final = "-"


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """Where and how to exchange audio after offer/answer, from our side of the call.

    ``direction`` is ours: ``sends`` says whether we may send audio, ``receives`` whether the
    remote will send. ``ptime_ms`` is the packet time the remote asked to receive.
    """

    remote_ip: str
    remote_port: int
    payload_type: int
    codec: str
    clock_rate: int
    telephone_event_pt: int | None
    ptime_ms: int
    direction: Direction


def answer_offer(
    offer: SessionDescription,
    *,
    local_ip: str,
    local_port: int,
    session_id: int,
    session_version: int | None = None,
    supported: Sequence[str] = DEFAULT_CODECS,
    ptime_ms: int = DEFAULT_PTIME_MS,
) -> SessionDescription:
    """Our answer to ``offer`` (RFC 3264 §6); SdpError if no audio stream can be accepted.

    ``session_version`` defaults to ``session_id``; raise it for each later answer in the
    same session (re-INVITE).
    """
    _check_codecs(supported)
    _check_ptime(ptime_ms)
    wanted = {codec.upper() for codec in supported}
    answered: list[MediaDescription] = []
    accepted = False
    for media in offer.media:
        choice = None if accepted else _acceptable(offer, media, wanted)
        if choice is None:
            # Refused streams keep the offer's media, proto and formats (RFC 3264 §6).
            answered.append(MediaDescription(media.media, 0, media.proto, media.formats))
            continue
        payload_type, codec = choice
        direction = _offered_direction(offer, media).reversed()
        answered.append(
            _audio_media(
                local_port, [(payload_type, codec)], _telephone_event_pt(media), ptime_ms, direction
            )
        )
        accepted = True
    if not accepted:
        raise SdpError(
            f"the offer has no active {RTP_PROFILE} audio stream with a codec we support"
        )
    return SessionDescription(
        origin=_origin(local_ip, session_id, session_version),
        connection=_connection(local_ip),
        media=tuple(answered),
        # The answer's t= must equal the offer's (RFC 3264 §6).
        other=tuple((kind, value) for kind, value in offer.other if kind in "tr"),
    )


def build_offer(
    *,
    local_ip: str,
    local_port: int,
    session_id: int,
    session_version: int | None = None,
    codecs: Sequence[str] = DEFAULT_CODECS,
    telephone_event_pt: int | None = DEFAULT_TELEPHONE_EVENT_PT,
    ptime_ms: int = DEFAULT_PTIME_MS,
    direction: Direction = Direction.SENDRECV,
) -> SessionDescription:
    """Our offer: one audio stream with ``codecs`` in preference order and telephone-event."""
    _check_codecs(codecs)
    _check_ptime(ptime_ms)
    formats = [(STATIC_PAYLOAD_TYPES[codec.upper()], codec.upper()) for codec in codecs]
    if telephone_event_pt is not None and not (
        MIN_DYNAMIC_PAYLOAD_TYPE <= telephone_event_pt <= MAX_PAYLOAD_TYPE
    ):
        raise ValueError("telephone-event needs a dynamic payload type in 96..127")
    return SessionDescription(
        origin=_origin(local_ip, session_id, session_version),
        connection=_connection(local_ip),
        media=(_audio_media(local_port, formats, telephone_event_pt, ptime_ms, direction),),
    )


def negotiated_media(remote: SessionDescription, local: SessionDescription) -> NegotiatedMedia:
    """What to send where, from the remote description and our own (either may be the offer).

    The audio stream is the first whose ``m=`` line is active on both sides (m-lines pair up by
    position, RFC 3264 §6); the codec is the first of the remote's formats we listed too.
    """
    if len(remote.media) != len(local.media):
        raise SdpError("offer and answer have different numbers of m= lines")
    for remote_media, local_media in zip(remote.media, local.media, strict=True):
        if not (_is_active_audio(remote_media) and _is_active_audio(local_media)):
            continue
        ours = {c for fmt in local_media.formats if (c := _codec(local_media, fmt)) is not None}
        chosen = _first_codec(remote_media, ours)
        if chosen is None:
            raise SdpError("the two descriptions share no audio codec")
        connection = remote_media.connection or remote.connection
        if connection is None:
            raise SdpError("the remote audio stream has no c= address")
        remote_direction = media_direction(remote, remote_media)
        local_direction = media_direction(local, local_media)
        theirs = remote_direction.reversed()
        hold = connection.address == _HOLD_ADDRESS
        telephone_event = _telephone_event_pt(remote_media)
        return NegotiatedMedia(
            remote_ip=connection.address,
            remote_port=remote_media.port,
            payload_type=chosen[0],
            codec=chosen[1],
            clock_rate=G711_CLOCK_HZ,
            telephone_event_pt=telephone_event if _telephone_event_pt(local_media) else None,
            ptime_ms=remote_media.ptime_ms or DEFAULT_PTIME_MS,
            direction=direction_of(
                sends=local_direction.sends and theirs.sends and not hold,
                receives=local_direction.receives and theirs.receives,
            ),
        )
    raise SdpError("no audio stream is active on both sides")


def _acceptable(
    offer: SessionDescription, media: MediaDescription, wanted: set[str]
) -> tuple[int, str] | None:
    if not _is_active_audio(media) or (media.connection or offer.connection) is None:
        return None
    return _first_codec(media, wanted)


def _first_codec(media: MediaDescription, wanted: set[str]) -> tuple[int, str] | None:
    """The first of the stream's formats that is a codec in ``wanted``, as (pt, codec)."""
    for fmt in media.formats:
        codec = _codec(media, fmt)
        if codec is not None and codec in wanted:
            return int(fmt), codec
    return None


def _is_active_audio(media: MediaDescription) -> bool:
    return media.media == "audio" and media.port != 0 and media.proto.upper() == RTP_PROFILE


def _codec(media: MediaDescription, fmt: str) -> str | None:
    """The G.711 codec a format names (by rtpmap, else by static number), or None."""
    payload_type = _payload_type(fmt)
    if payload_type is None:
        return None
    rtpmap = media.rtpmap(payload_type)
    if rtpmap is not None:
        name = rtpmap.encoding.upper()
        mono_g711 = rtpmap.clock_rate == G711_CLOCK_HZ and rtpmap.channels == 1
        return name if mono_g711 and name in STATIC_PAYLOAD_TYPES else None
    return next((name for name, pt in STATIC_PAYLOAD_TYPES.items() if pt == payload_type), None)


def _payload_type(fmt: str) -> int | None:
    payload_type = decimal(fmt, 3)
    return payload_type if payload_type is not None and payload_type <= MAX_PAYLOAD_TYPE else None


def _telephone_event_pt(media: MediaDescription) -> int | None:
    for fmt in media.formats:
        payload_type = _payload_type(fmt)
        rtpmap = None if payload_type is None else media.rtpmap(payload_type)
        if (
            rtpmap is not None
            and rtpmap.encoding.lower() == TELEPHONE_EVENT
            and rtpmap.clock_rate == G711_CLOCK_HZ
        ):
            return rtpmap.payload_type
    return None


def _offered_direction(offer: SessionDescription, media: MediaDescription) -> Direction:
    direction = media_direction(offer, media)
    connection = media.connection or offer.connection
    if connection is not None and connection.address == _HOLD_ADDRESS:
        # c=0.0.0.0 says "do not send to me" (RFC 3264 §8.4): the offerer only sends.
        return direction_of(sends=direction.sends, receives=False)
    return direction


def _audio_media(
    port: int,
    formats: list[tuple[int, str]],
    telephone_event_pt: int | None,
    ptime_ms: int,
    direction: Direction,
) -> MediaDescription:
    if not 0 < port <= MAX_PORT:
        raise ValueError(f"local RTP port {port} is outside 1..65535")
    payload_types = [str(pt) for pt, _ in formats]
    attributes = [Attribute("rtpmap", f"{pt} {codec}/{G711_CLOCK_HZ}") for pt, codec in formats]
    if telephone_event_pt is not None:
        payload_types.append(str(telephone_event_pt))
        attributes += [
            Attribute("rtpmap", f"{telephone_event_pt} {TELEPHONE_EVENT}/{G711_CLOCK_HZ}"),
            Attribute("fmtp", f"{telephone_event_pt} {TELEPHONE_EVENTS}"),
        ]
    attributes += [Attribute("ptime", str(ptime_ms)), Attribute(direction.value)]
    return MediaDescription(
        "audio", port, RTP_PROFILE, tuple(payload_types), attributes=tuple(attributes)
    )


def _origin(local_ip: str, session_id: int, session_version: int | None) -> Origin:
    version = session_id if session_version is None else session_version
    if session_id < 0 or version < 0:
        raise ValueError("SDP session id and version must not be negative")
    return Origin(_ANONYMOUS_USER, session_id, version, local_ip, "IN", _addrtype(local_ip))


def _connection(local_ip: str) -> Connection:
    return Connection(local_ip, "IN", _addrtype(local_ip))


def _addrtype(local_ip: str) -> str:
    try:
        address = ipaddress.ip_address(local_ip)
    except ValueError as exc:
        raise ValueError("local_ip must be an IPv4 or IPv6 address") from exc
    return "IP4" if isinstance(address, ipaddress.IPv4Address) else "IP6"


def _check_codecs(codecs: Sequence[str]) -> None:
    if not codecs:
        raise ValueError("at least one codec is needed")
    unknown = [codec for codec in codecs if codec.upper() not in STATIC_PAYLOAD_TYPES]
    if unknown:
        raise ValueError(f"unsupported codecs {unknown}; known: {sorted(STATIC_PAYLOAD_TYPES)}")


def _check_ptime(ptime_ms: int) -> None:
    if not MIN_PTIME_MS <= ptime_ms <= MAX_PTIME_MS or ptime_ms % PTIME_STEP_MS:
        raise ValueError("ptime_ms must be a multiple of 10 in 10..60")
