"""SDP parse/serialise (RFC 4566) and offer/answer for one G.711 stream (RFC 3264)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.errors import SdpError
from voice.sip.offer_answer import (
    NegotiatedMedia,
    answer_offer,
    build_offer,
    negotiated_media,
)
from voice.sip.sdp import (
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    media_direction,
    parse_sdp,
    serialize_sdp,
)

LOCAL_IP = "192.0.2.10"
LOCAL_PORT = 40000


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def offer(*media: str, session: tuple[str, ...] = ("c=IN IP4 192.0.2.20",)) -> SessionDescription:
    return parse_sdp(sdp("v=0", "o=- 7 7 IN IP4 192.0.2.20", "s=-", *session, "t=0 0", *media))


ASTERISK_AUDIO = (
    "m=audio 10000 RTP/AVP 8 0 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
)


def answer(
    sd: SessionDescription, *, supported: tuple[str, ...] = ("PCMU", "PCMA"), ptime_ms: int = 20
) -> SessionDescription:
    return answer_offer(
        sd,
        local_ip=LOCAL_IP,
        local_port=LOCAL_PORT,
        session_id=42,
        supported=supported,
        ptime_ms=ptime_ms,
    )


# -- parse / serialise -------------------------------------------------------------------------


def test_parse_reads_session_and_media_lines() -> None:
    sd = offer(*ASTERISK_AUDIO)
    assert sd.origin == Origin("-", 7, 7, "192.0.2.20")
    assert sd.connection == Connection("192.0.2.20")
    assert sd.other == (("t", "0 0"),)
    (audio,) = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        10000,
        "RTP/AVP",
        ("8", "0", "101"),
    )
    assert audio.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp(101) == "0-16"
    assert (audio.ptime_ms, audio.direction) == (20, Direction.SENDRECV)


def test_a_canonical_body_serialises_back_byte_for_byte() -> None:
    body = sdp(
        "v=0",
        "o=alice 2890844526 2890844527 IN IP4 192.0.2.5",
        "s=Session",
        "i=info",
        "c=IN IP4 192.0.2.5",
        "b=AS:64",
        "t=0 0",
        "a=recvonly",
        "m=audio 49170/2 RTP/AVP 0 97",
        "i=voice",
        "c=IN IP6 2001:db8::5",
        "b=AS:32",
        "a=rtpmap:97 L16/16000/2",
        "m=video 0 RTP/AVP 31",
    )
    sd = parse_sdp(body)
    assert serialize_sdp(sd) == body
    assert sd.media[0].port_count == 2 and sd.media[0].rtpmap(97) == RtpMap(97, "L16", 16000, 2)
    assert media_direction(sd, sd.media[0]) == Direction.RECVONLY


def test_bare_lf_line_ends_are_accepted() -> None:
    body = sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0").replace(b"\r\n", b"\n")
    assert parse_sdp(body).origin.address == "192.0.2.1"


def test_unreadable_attributes_read_as_absent() -> None:
    audio = offer("m=video 3227 RTP/AVP 31", "a=rtpmap:31 LPC", "a=ptime:soon").media[0]
    assert audio.rtpmap(31) is None and audio.ptime_ms is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "v=0"),
        (sdp("v=1", "o=- 1 1 IN IP4 a", "s=-", "t=0 0"), "v=0"),
        (sdp("v=0", "s=-", "t=0 0"), "o="),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "t=0 0"), "s="),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-"), "t="),
        (sdp("v=0", "o=- x 1 IN IP4 a", "s=-", "t=0 0"), "line 2"),
        (sdp("v=0", "o=- 1 1 IN IP4", "s=-", "t=0 0"), "line 2"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "m=audio 70000 RTP/AVP 0"), "line 5"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "m=audio 9 RTP/AVP"), "line 5"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "m =video 3227 RTP/AVP 31"), "line 5"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "m=audio 9 RTP/AVP 0", "t=0 0"), "line 6"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "q=unknown"), "line 5"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "c=IN IP4 a", "c=IN IP4 b", "t=0 0"), "line 5"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "a=bad name"), "line 5"),
        (b"v=0\r\no=- 1 1 IN IP4 \xff\r\n", "UTF-8"),
    ],
)
def test_parse_rejects_malformed_descriptions(body: bytes, problem: str) -> None:
    with pytest.raises(SdpError, match=problem):
        parse_sdp(body)


_words = st.from_regex(r"[A-Za-z0-9.:\-]{1,12}", fullmatch=True)
_attributes = st.lists(
    st.builds(
        Attribute,
        name=st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True),
        value=st.none() | st.from_regex(r"[ -~]{0,16}", fullmatch=True),
    ),
    max_size=4,
).map(tuple)
_connections = st.none() | st.builds(Connection, address=_words)
_media = st.builds(
    MediaDescription,
    media=st.sampled_from(["audio", "video", "application"]),
    port=st.integers(0, 65535),
    proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "udp"]),
    formats=st.lists(st.from_regex(r"[0-9]{1,3}", fullmatch=True), min_size=1, max_size=4).map(
        tuple
    ),
    port_count=st.none() | st.integers(1, 8),
    connection=_connections,
    attributes=_attributes,
    other=st.lists(st.tuples(st.sampled_from("ibk"), _words), max_size=2).map(
        lambda lines: tuple(sorted(lines, key=lambda line: "ibk".index(line[0])))
    ),
)
_sessions = st.builds(
    SessionDescription,
    origin=st.builds(
        Origin,
        username=_words,
        session_id=st.integers(0, 2**63),
        session_version=st.integers(0, 2**63),
        address=_words,
    ),
    session_name=st.from_regex(r"[ -~]{1,16}", fullmatch=True),
    connection=_connections,
    attributes=_attributes,
    media=st.lists(_media, max_size=3).map(tuple),
    other=st.just((("t", "0 0"),)),
)


@given(_sessions)
def test_generated_descriptions_round_trip(sd: SessionDescription) -> None:
    assert parse_sdp(serialize_sdp(sd)) == sd


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_sdp_error(body: bytes) -> None:
    try:
        sd = parse_sdp(body)
    except SdpError:
        return
    assert parse_sdp(serialize_sdp(sd)) == sd


# -- answering ---------------------------------------------------------------------------------


def test_answer_takes_the_first_offered_codec_we_support_and_telephone_event() -> None:
    sd = answer(offer(*ASTERISK_AUDIO, "m=video 10002 RTP/AVP 96", "a=rtpmap:96 H264/90000"))
    assert serialize_sdp(sd) == sdp(
        "v=0",
        "o=- 42 42 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 40000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "m=video 0 RTP/AVP 96",
    )


def test_answer_respects_the_codecs_we_are_told_to_support() -> None:
    sd = answer(offer(*ASTERISK_AUDIO), supported=("pcmu",), ptime_ms=30)
    assert sd.media[0].formats == ("0", "101")
    assert sd.media[0].ptime_ms == 30


def test_answer_reads_codecs_from_static_payload_types_and_dynamic_rtpmaps() -> None:
    static = answer(offer("m=audio 10000 RTP/AVP 18 0"))
    dynamic = answer(offer("m=audio 10000 RTP/AVP 9 96", "a=rtpmap:96 pcma/8000"))
    assert static.media[0].formats == ("0",)
    assert dynamic.media[0].formats == ("96",)
    assert dynamic.media[0].rtpmap(96) == RtpMap(96, "PCMA", 8000)


def test_answer_keeps_the_offered_telephone_event_payload_type() -> None:
    sd = answer(offer("m=audio 10000 RTP/AVP 0 98", "a=rtpmap:98 telephone-event/8000"))
    assert sd.media[0].formats == ("0", "98") and sd.media[0].fmtp(98) == "0-16"


def test_answer_without_offered_telephone_event_has_none() -> None:
    sd = answer(offer("m=audio 10000 RTP/AVP 0"))
    assert sd.media[0].formats == ("0",) and sd.media[0].fmtp(101) is None


def test_answer_refuses_disabled_and_extra_streams_with_port_zero() -> None:
    sd = answer(
        offer(
            "m=audio 0 RTP/AVP 0",
            "m=audio 10000 RTP/SAVP 0",
            "m=audio 10002 RTP/AVP 0",
            "m=audio 10004 RTP/AVP 8",
        )
    )
    assert [(m.port, m.proto, m.formats) for m in sd.media] == [
        (0, "RTP/AVP", ("0",)),
        (0, "RTP/SAVP", ("0",)),
        (LOCAL_PORT, "RTP/AVP", ("0",)),
        (0, "RTP/AVP", ("8",)),
    ]


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        (Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDONLY, Direction.RECVONLY),
        (Direction.RECVONLY, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_answer_mirrors_the_offered_direction(offered: Direction, answered: Direction) -> None:
    at_media = answer(offer("m=audio 10000 RTP/AVP 0", f"a={offered}"))
    at_session = answer(offer("m=audio 10000 RTP/AVP 0", session=("c=IN IP4 a", f"a={offered}")))
    assert at_media.media[0].direction == at_session.media[0].direction == answered


def test_answer_treats_an_rfc_2543_hold_address_as_sendonly() -> None:
    held = answer(offer("m=audio 10000 RTP/AVP 0", session=("c=IN IP4 0.0.0.0",)))
    assert held.media[0].direction == Direction.RECVONLY


def test_answer_takes_the_connection_from_session_or_media_level() -> None:
    media_level = offer("m=audio 10000 RTP/AVP 0", "c=IN IP4 198.51.100.9", session=())
    assert answer(media_level).media[0].port == LOCAL_PORT
    no_address = offer("m=audio 10000 RTP/AVP 0", session=())
    with pytest.raises(SdpError):
        answer(no_address)


@pytest.mark.parametrize(
    "media",
    [
        ("m=audio 10000 RTP/AVP 18 9", "a=rtpmap:18 G729/8000"),
        ("m=audio 10000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"),
        ("m=audio 10000 RTP/AVP 96", "a=rtpmap:96 PCMU/8000/2"),
        ("m=audio 10000 RTP/SAVP 0",),
        ("m=audio 0 RTP/AVP 0",),
        ("m=video 10000 RTP/AVP 0",),
    ],
)
def test_answer_raises_when_no_stream_can_be_accepted(media: tuple[str, ...]) -> None:
    with pytest.raises(SdpError, match="no active"):
        answer(offer(*media))


def test_answer_copies_the_offer_timing_and_uses_our_origin() -> None:
    timed = parse_sdp(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 a",
            "s=-",
            "c=IN IP4 a",
            "t=3034423619 3042462419",
            "r=7d 1h 0 25h",
            "m=audio 9 RTP/AVP 0",
        )
    )
    sd = answer_offer(
        timed, local_ip="2001:db8::10", local_port=5004, session_id=5, session_version=6
    )
    assert sd.other == (("t", "3034423619 3042462419"), ("r", "7d 1h 0 25h"))
    assert sd.origin == Origin("-", 5, 6, "2001:db8::10", "IN", "IP6")
    assert sd.connection == Connection("2001:db8::10", "IN", "IP6")


@pytest.mark.parametrize(
    ("local_ip", "local_port", "supported", "ptime_ms", "session_id"),
    [
        ("pbx.example.com", LOCAL_PORT, ("PCMU",), 20, 1),
        (LOCAL_IP, 0, ("PCMU",), 20, 1),
        (LOCAL_IP, LOCAL_PORT, ("G729",), 20, 1),
        (LOCAL_IP, LOCAL_PORT, (), 20, 1),
        (LOCAL_IP, LOCAL_PORT, ("PCMU",), 25, 1),
        (LOCAL_IP, LOCAL_PORT, ("PCMU",), 20, -1),
    ],
)
def test_answer_refuses_bad_local_settings(
    local_ip: str, local_port: int, supported: tuple[str, ...], ptime_ms: int, session_id: int
) -> None:
    with pytest.raises(ValueError):
        answer_offer(
            offer(*ASTERISK_AUDIO),
            local_ip=local_ip,
            local_port=local_port,
            supported=supported,
            ptime_ms=ptime_ms,
            session_id=session_id,
        )


# -- our offer and the negotiated result -------------------------------------------------------


def test_build_offer_lists_codecs_in_order_with_telephone_event() -> None:
    sd = build_offer(
        local_ip=LOCAL_IP, local_port=LOCAL_PORT, session_id=9, codecs=("PCMA", "PCMU")
    )
    assert sd.media[0].formats == ("8", "0", "101")
    assert sd.media[0].fmtp(101) == "0-16"
    assert parse_sdp(serialize_sdp(sd)) == sd
    bare = build_offer(
        local_ip=LOCAL_IP, local_port=LOCAL_PORT, session_id=9, telephone_event_pt=None
    )
    assert bare.media[0].formats == ("0", "8")


def test_build_offer_refuses_a_static_telephone_event_payload_type() -> None:
    with pytest.raises(ValueError, match="dynamic"):
        build_offer(local_ip=LOCAL_IP, local_port=LOCAL_PORT, session_id=9, telephone_event_pt=8)


def test_negotiated_media_after_answering_an_offer() -> None:
    remote = offer(*ASTERISK_AUDIO[:-2], "a=ptime:30", "c=IN IP4 198.51.100.7")
    assert negotiated_media(remote, answer(remote)) == NegotiatedMedia(
        remote_ip="198.51.100.7",
        remote_port=10000,
        payload_type=8,
        codec="PCMA",
        clock_rate=8000,
        telephone_event_pt=101,
        ptime_ms=30,
        direction=Direction.SENDRECV,
    )


def test_negotiated_media_after_our_offer_uses_the_remote_payload_types() -> None:
    ours = build_offer(local_ip=LOCAL_IP, local_port=LOCAL_PORT, session_id=9)
    remote = offer("m=audio 20000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000", "a=recvonly")
    media = negotiated_media(remote, ours)
    assert (media.payload_type, media.codec, media.telephone_event_pt) == (0, "PCMU", 96)
    assert media.direction == Direction.SENDONLY  # they only receive: we only send
    assert media.ptime_ms == 20


def test_negotiated_media_drops_telephone_event_unless_both_sides_have_it() -> None:
    ours = build_offer(
        local_ip=LOCAL_IP, local_port=LOCAL_PORT, session_id=9, telephone_event_pt=None
    )
    remote = offer("m=audio 20000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000")
    assert negotiated_media(remote, ours).telephone_event_pt is None


def test_negotiated_media_never_sends_to_a_hold_address() -> None:
    remote = offer("m=audio 20000 RTP/AVP 0", session=("c=IN IP4 0.0.0.0",))
    assert negotiated_media(remote, answer(remote)).direction == Direction.RECVONLY


@pytest.mark.parametrize(
    "remote",
    [
        ("m=audio 0 RTP/AVP 0",),
        ("m=audio 20000 RTP/AVP 18",),
        ("m=audio 20000 RTP/AVP 0", "m=video 0 RTP/AVP 31"),
    ],
)
def test_negotiated_media_raises_without_a_common_active_stream(remote: tuple[str, ...]) -> None:
    ours = build_offer(local_ip=LOCAL_IP, local_port=LOCAL_PORT, session_id=9)
    with pytest.raises(SdpError):
        negotiated_media(offer(*remote), ours)


def test_serialize_refuses_values_that_would_inject_lines() -> None:
    sd = SessionDescription(origin=Origin("-", 1, 1, LOCAL_IP), session_name="x\r\na=evil")
    with pytest.raises(ValueError, match="CR"):
        serialize_sdp(sd)
