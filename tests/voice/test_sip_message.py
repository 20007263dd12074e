"""SIP messages, headers, URIs and header values: parse/serialise, builders, UAS validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.errors import SipBadRequest, SipParseError
from voice.sip.fields import CSeq, NameAddr, Via, parse_cseq, parse_name_addr, parse_via
from voice.sip.grammar import parse_quoted, quote_string
from voice.sip.headers import Headers
from voice.sip.message import (
    BRANCH_MAGIC_COOKIE,
    MAX_MESSAGE_BYTES,
    SipRequest,
    SipResponse,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    serialize,
)
from voice.sip.response import make_response
from voice.sip.uri import SipUri, parse_uri, uri_scheme
from voice.sip.validation import (
    MAX_ADDRESS_VALUES,
    MAX_VIA_VALUES,
    accepts_sdp,
    unsupported_extensions,
    validate_request,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"


def wire(*lines: str, body: bytes = b"", length: int | None = None) -> bytes:
    """A datagram from header lines; Content-Length is the body's unless ``length`` is given."""
    size = len(body) if length is None else length
    return ("\r\n".join([*lines, f"Content-Length: {size}", "", ""])).encode() + body


def invite(*extra: str, body: bytes = b"", method: str = "INVITE") -> bytes:
    return wire(
        f"{method} sip:bot@192.0.2.10 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        "To: <sip:bot@192.0.2.10>",
        'From: "Mario Rossi" <sip:mario@192.0.2.20>;tag=1928301774',
        "Call-ID: a84b4c76e66710@192.0.2.20",
        f"CSeq: 314159 {method}",
        "Contact: <sip:mario@192.0.2.20:5060>",
        *extra,
        body=body,
    )


def request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


# -- URIs --------------------------------------------------------------------------------------


def test_uri_fields_are_unescaped_when_parsed() -> None:
    uri = parse_uri("sip:%75se%72:p%40ss@example.com:5070;n%61me=v%61lue%25%34%31;lr?Ro=%3Cx%3E")
    assert (uri.user, uri.password, uri.host, uri.port) == ("user", "p@ss", "example.com", 5070)
    assert uri.params == (("name", "value%41"), ("lr", None))
    assert uri.headers == (("Ro", "<x>"),)


def test_uri_user_keeps_an_escaped_nul_instead_of_truncating() -> None:
    assert parse_uri("sip:null-%00-null@example.com").user == "null-\x00-null"


def test_uri_user_part_may_hold_semicolons_and_question_marks() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert (uri.user, uri.host, uri.params) == ("user;par=u@example.net", "example.com", ())


def test_uri_is_escaped_again_only_where_the_grammar_requires() -> None:
    uri = SipUri(user="I have spaces@", host="example.net", params=(("a=b", "c;d"),))
    assert str(uri) == "sip:I%20have%20spaces%40@example.net;a%3Db=c%3Bd"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::1]:5060", "[2001:db8::1]", 5060),
        ("sips:192.0.2.1", "192.0.2.1", None),
        ("SIP:Alice@Example.COM.", "Example.COM.", None),
    ],
)
def test_uri_hosts_are_hostnames_ipv4_or_bracketed_ipv6(
    text: str, host: str, port: int | None
) -> None:
    uri = parse_uri(text)
    assert (uri.host, uri.port, uri.scheme) == (host, port, text.split(":")[0].lower())


def test_tel_uri_keeps_its_number_and_parameters() -> None:
    uri = parse_uri("tel:+39-06-1234567;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+39-06-1234567", "")
    assert uri.param("PHONE-CONTEXT") == "example.com"
    assert str(uri) == "tel:+39-06-1234567;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:user@",
        "sip:@example.com",
        "sip:a b@example.com",
        "sip:user@exa mple.com",
        "sip:user@-example.com",
        "sip:user@example.com:99999",
        "sip:user@example.com:",
        "sip:user@example.com;",
        "sip:user@example.com;=x",
        "sip:user@example.com?novalue",
        "sip:user@[::1",
        "sip:user@[zz::1]",
        "sip:us%zzer@example.com",
        "<sip:user@example.com>",
        "tel:xyz",
        "tel:+1;",
        "http://example.com",
        "no-scheme",
    ],
)
def test_uri_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_uri_scheme_reads_any_scheme_but_rejects_bad_syntax() -> None:
    assert uri_scheme("soap.beep://192.0.2.103:3002") == "soap.beep"
    assert uri_scheme("ISBN:2983792873") == "isbn"
    with pytest.raises(SipParseError):
        uri_scheme("<sip:user@example.com>")


def test_uri_construction_rejects_impossible_fields() -> None:
    with pytest.raises(ValueError, match="scheme"):
        SipUri(scheme="http", host="example.com")
    with pytest.raises(ValueError, match="host"):
        SipUri(host="not a host")
    with pytest.raises(ValueError, match="tel"):
        SipUri(scheme="tel", user="+391", host="example.com")


_hostnames = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z][a-z0-9-]{0,8}[a-z0-9]){0,3}", fullmatch=True
)
_hosts = st.one_of(
    _hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
)
_uri_params = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.none() | st.text(min_size=1, max_size=8)),
    max_size=3,
).map(tuple)
sip_uris = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.none() | st.text(min_size=1, max_size=12),
    host=_hosts,
    port=st.none() | st.integers(0, 65535),
    params=_uri_params,
    headers=st.lists(
        st.tuples(st.text(min_size=1, max_size=6), st.text(max_size=6)), max_size=2
    ).map(tuple),
).filter(lambda uri: uri.user is not None or uri.password is None)
tel_uris = st.builds(
    SipUri,
    scheme=st.just("tel"),
    user=st.from_regex(r"\+?[0-9][0-9\-.()]{0,12}", fullmatch=True),
    params=_uri_params,
)


@given(st.one_of(sip_uris, tel_uris))
def test_uri_round_trips_through_its_text(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


# -- header values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        (
            '"J Rosenberg \\\\\\""  <sip:j@example.com>;tag=98',
            'J Rosenberg \\"',
            "sip:j@example.com",
            (("tag", "98"),),
        ),
        (
            "caller<sip:caller@example.com>;tag=323",
            "caller",
            "sip:caller@example.com",
            (("tag", "323"),),
        ),
        ("token1~` token2'+_ <sip:m@example.com>", "token1~` token2'+_", "sip:m@example.com", ()),
        (
            "sip:+1972@gw1.example.net;unknownparam",
            None,
            "sip:+1972@gw1.example.net",
            (("unknownparam", None),),
        ),
        (
            "<sip:+1972@gw1.example.net;unknownparam>",
            None,
            "sip:+1972@gw1.example.net;unknownparam",
            (),
        ),
        (
            "sip:v@chair.example.com ;   tag    = 1918181833n",
            None,
            "sip:v@chair.example.com",
            (("tag", "1918181833n"),),
        ),
        (
            "<sip:x@y> ; newparam = newvalue ; secondparam ; q = 0.33",
            None,
            "sip:x@y",
            (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")),
        ),
        ('<sip:x@y>;p="a;b,c"', None, "sip:x@y", (("p", '"a;b,c"'),)),
        ("isbn:2983792873", None, "isbn:2983792873", ()),
        ("<name:John_Smith>", None, "name:John_Smith", ()),
    ],
)
def test_name_addr_reads_display_name_uri_and_parameters(
    text: str, display: str | None, uri: str, params: tuple[tuple[str, str | None], ...]
) -> None:
    assert parse_name_addr(text) == NameAddr(uri, display, params)


@pytest.mark.parametrize(
    "text",
    [
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # RFC 4475 §3.1.2.15
        '"Watson, Thomas" < sip:t.watson@example.org >',  # §3.1.2.14
        '"Mr. J. User <sip:j.user@example.com>',  # §3.1.2.6
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # §3.1.2.13
        '"Joe" <sip:joe@example.org>;;;;',  # §3.1.2.1
        "<sip:joe@example.org",
        "<sip:joe@example.org> junk",
        '"quoted" sip:no-brackets@example.org',
        "<sip:a@b>;tag=",
        "",
    ],
)
def test_name_addr_rejects_malformed_addresses(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text, "To")


def test_name_addr_errors_name_the_header_but_not_its_content() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_name_addr("Mario Rossi, Jr <sip:+393331234567@example.com>", "From")
    assert "From" in str(caught.value)
    assert "3331234567" not in str(caught.value) and "Rossi" not in str(caught.value)


def test_name_addr_with_param_replaces_or_appends() -> None:
    address = parse_name_addr("<sip:a@b>;tag=1;lr")
    assert address.with_param("TAG", "2").params == (("tag", "2"), ("lr", None))
    assert address.with_param("x", None).params == (("tag", "1"), ("lr", None), ("x", None))
    assert address.has_param("LR") and address.param("lr") is None and address.tag == "1"


_tokens = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]+", fullmatch=True)
_header_params = st.lists(
    st.tuples(
        _tokens,
        st.none()
        | _tokens
        | st.text(max_size=8).filter(lambda t: "\r" not in t and "\n" not in t).map(quote_string),
    ),
    max_size=3,
).map(tuple)
_no_crlf = st.text(max_size=12).filter(lambda text: "\r" not in text and "\n" not in text)


@given(
    st.builds(
        NameAddr,
        uri=st.one_of(sip_uris, tel_uris).map(str),
        display_name=st.none() | _no_crlf,
        params=_header_params,
    )
)
def test_name_addr_round_trips_through_its_text(address: NameAddr) -> None:
    assert parse_name_addr(str(address)) == address


@given(_no_crlf)
def test_quoted_string_round_trips_any_text_without_crlf(text: str) -> None:
    assert parse_quoted(quote_string(text), 0) == (text, len(quote_string(text)))


def test_via_allows_lws_around_separators() -> None:
    via = parse_via("SIP  / 2.0  / tcp     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
    assert via == Via("TCP", "spindle.example.com", None, (("branch", "z9hG4bK9ikj8"),))


def test_via_reads_branch_received_and_rport() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;received=2001:db8::1;rport=62")
    assert (via.host, via.port, via.branch, via.received, via.rport) == (
        "[2001:db8::9]",
        5070,
        "z9hG4bKx",
        "2001:db8::1",
        62,
    )


def test_via_rport_flag_asks_without_giving_a_port() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKa;rport")
    assert via.rport is None and via.has_param("rport")
    answered = via.with_param("received", "198.51.100.7").with_param("rport", "5062")
    assert (
        str(answered) == "SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKa;rport=5062;received=198.51.100.7"
    )
    assert answered.rport == 5062


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 192.0.2.1",
        "SIP/2.0/UDP 192.0.2.15;;,;,,",
        "SIP/2.0/UDP host:notaport",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP bad_host",
        "SIP/2.0/UDP a b",
    ],
)
def test_via_rejects_malformed_values(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


@given(
    st.builds(
        Via,
        transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
        host=_hosts,
        port=st.none() | st.integers(0, 65535),
        params=st.lists(st.tuples(_tokens, st.none() | _tokens), max_size=3).map(tuple),
    )
)
def test_via_round_trips_through_its_text(via: Via) -> None:
    assert parse_via(str(via)) == via


def test_cseq_reads_leading_zeros_and_folded_whitespace() -> None:
    assert parse_cseq("0009   INVITE") == CSeq(9, "INVITE")


@pytest.mark.parametrize(
    "text", ["36893488147419103232 REGISTER", "2147483648 INVITE", "-1 INVITE", "1", "1 IN@VITE"]
)
def test_cseq_rejects_overflow_and_malformed_values(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_cseq(text)


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("f", "From"),
        ("t", "To"),
        ("v", "Via"),
        ("c", "Content-Type"),
        ("k", "Supported"),
        ("s", "Subject"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
        ("y", "Identity"),
    ],
)
def test_compact_header_names_are_stored_under_their_full_name(compact: str, full: str) -> None:
    value = "0" if full == "Content-Length" else "value"
    message = request(f"OPTIONS sip:a@b SIP/2.0\r\n{compact.upper()}: {value}\r\n\r\n".encode())
    assert list(message.headers) == [(full, value)]
    assert message.headers.get(compact) == message.headers.get(full.upper()) == value


def test_folded_header_lines_become_one_space() -> None:
    message = request(invite("NewFangledHeader:   newfangled value\r\n continued newfangled value"))
    assert message.headers.get("newfangledheader") == "newfangled value continued newfangled value"


def test_list_headers_split_on_commas_outside_quotes_and_brackets() -> None:
    message = request(
        invite(
            'Route: "Doe, J" <sip:p1.example.com;lr>, <sip:p2.example.com;a=b,c>',
            "Allow: INVITE, ACK,,BYE",
        )
    )
    assert message.headers.get_all("Route") == [
        '"Doe, J" <sip:p1.example.com;lr>',
        "<sip:p2.example.com;a=b,c>",
    ]
    assert message.headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]


def test_non_list_headers_keep_their_commas() -> None:
    message = request(invite("Date: Sat, 13 Nov 2010 23:29:00 GMT", "X-Note: a, b"))
    assert message.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert message.headers.get_all("x-note") == ["a, b"]


def test_an_empty_list_header_stays_one_empty_value() -> None:
    message = request(invite("Supported:"))
    assert message.headers.get_all("k") == [""]
    assert parse_message(serialize(message)) == message


def test_headers_add_set_and_remove_keep_order() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:x@y>"), ("v", "SIP/2.0/UDP b")])
    headers.set("VIA", "SIP/2.0/UDP c, SIP/2.0/UDP d")
    headers.add("Allow", "INVITE, BYE")
    assert list(headers) == [
        ("Via", "SIP/2.0/UDP c"),
        ("Via", "SIP/2.0/UDP d"),
        ("To", "<sip:x@y>"),
        ("Allow", "INVITE"),
        ("Allow", "BYE"),
    ]
    headers.replace_first("via", "SIP/2.0/UDP e")
    assert headers.get_all("Via") == ["SIP/2.0/UDP e", "SIP/2.0/UDP d"]
    headers.remove("v")
    assert "Via" not in headers and len(headers) == 3


def test_headers_refuse_injection_and_non_token_names() -> None:
    headers = Headers()
    with pytest.raises(ValueError, match="CR or LF"):
        headers.add("X-Handoff-Id", "1\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError, match="token"):
        headers.add("Bad Name", "x")
    with pytest.raises(KeyError):
        headers.replace_first("Via", "SIP/2.0/UDP a")
    headers.add("Via", "SIP/2.0/UDP a")
    with pytest.raises(ValueError, match="one element"):
        headers.replace_first("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c")


# -- framing -----------------------------------------------------------------------------------


def test_typical_invite_parses_into_typed_accessors() -> None:
    message = request(invite(body=SDP))
    assert (message.method, message.uri, message.version) == (
        "INVITE",
        "sip:bot@192.0.2.10",
        "SIP/2.0",
    )
    assert message.top_via.branch == "z9hG4bK776asdhds" and message.top_via.has_param("rport")
    assert (message.from_addr.tag, message.to_addr.tag) == ("1928301774", None)
    assert message.from_addr.display_name == "Mario Rossi"
    assert message.cseq == CSeq(314159, "INVITE")
    assert message.call_id == "a84b4c76e66710@192.0.2.20"
    assert message.contact_uri == SipUri(user="mario", host="192.0.2.20", port=5060)
    assert message.request_uri == SipUri(user="bot", host="192.0.2.10")
    assert message.max_forwards == 70
    assert message.body == SDP


def test_body_longer_than_content_length_is_truncated() -> None:
    data = invite(body=SDP).replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 5")
    assert request(data).body == SDP[:5]


def test_body_shorter_than_content_length_is_a_bad_request_with_its_headers() -> None:
    data = invite(body=SDP).replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 999")
    with pytest.raises(SipBadRequest, match="exceeds") as caught:
        parse_message(data)
    assert caught.value.request.call_id == "a84b4c76e66710@192.0.2.20"
    assert caught.value.request.body == b""


@pytest.mark.parametrize("length", ["-1", "12a", "", "1" * 40])
def test_malformed_content_length_is_a_bad_request(length: str) -> None:
    with pytest.raises(SipBadRequest, match="Content-Length"):
        parse_message(invite().replace(b"Content-Length: 0", f"Content-Length: {length}".encode()))


def test_a_response_with_a_short_body_is_dropped_not_answered() -> None:
    data = wire("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9hG4bKa", body=b"abc", length=9)
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert not isinstance(caught.value, SipBadRequest)


def test_without_content_length_the_body_runs_to_the_end_of_the_datagram() -> None:
    data = invite(body=SDP).replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert request(data).body == SDP


def test_datagrams_over_the_size_limit_are_refused_before_parsing() -> None:
    overhead = len(invite("X-Pad: "))
    at_limit = invite("X-Pad: " + "a" * (MAX_MESSAGE_BYTES - overhead))
    assert len(at_limit) == MAX_MESSAGE_BYTES and request(at_limit).method == "INVITE"
    with pytest.raises(SipParseError, match="bytes is over"):
        parse_message(invite("X-Pad: " + "a" * (MAX_MESSAGE_BYTES - overhead + 1)))


def test_crlfs_before_the_start_line_are_ignored() -> None:
    assert request(b"\r\n\r\n" + invite()).method == "INVITE"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"\xff\xfe garbage\r\n\r\n",
        b"HELLO\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\nTo: <sip:a@b>\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\n Folded: start\r\n\r\n",
        b"SIP/2.0 4294967301 better not break the receiver\r\n\r\n",
        b"SIP/2.0 099 Too Low\r\n\r\n",
        b"SIP/2.0 20 OK\r\n\r\n",
        b"SIP/2 200 OK\r\n\r\n",
    ],
)
def test_unreadable_datagrams_raise_sip_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


@pytest.mark.parametrize(
    "start_line",
    [
        "INVITE  sip:bot@192.0.2.10  SIP/2.0",
        "INVITE sip:bot@192.0.2.10 SIP/2.0  ",
        "INVITE sip:bot@192.0.2.10; lr SIP/2.0",
        "INVITE sip:bot@192.0.2.10 HTTP/1.1",
    ],
)
def test_a_malformed_request_line_with_readable_method_is_a_bad_request(start_line: str) -> None:
    data = invite().replace(b"INVITE sip:bot@192.0.2.10 SIP/2.0", start_line.encode())
    with pytest.raises(SipBadRequest) as caught:
        parse_message(data)
    assert caught.value.request.method == "INVITE"


def test_status_line_keeps_empty_and_utf8_reason_phrases() -> None:
    for reason in ["", "Trovato è", "= 2**3 * 5**2"]:
        message = parse_message(wire(f"SIP/2.0 200 {reason}", "Via: SIP/2.0/UDP h"))
        assert isinstance(message, SipResponse)
        assert (message.status, message.reason) == (200, reason)


def test_missing_or_malformed_headers_raise_from_the_typed_accessors() -> None:
    message = request(wire("OPTIONS sip:a@b SIP/2.0", "Max-Forwards: 256", "CSeq: 1 OPTIONS"))
    with pytest.raises(SipParseError, match="Call-ID"):
        _ = message.call_id
    with pytest.raises(SipParseError, match="Via"):
        _ = message.top_via
    with pytest.raises(SipParseError, match="Max-Forwards"):
        _ = message.max_forwards
    assert message.contact_uri is None and message.content_type is None


def test_parse_errors_do_not_quote_phone_numbers_or_names() -> None:
    data = invite().replace(b"CSeq: 314159 INVITE", b"CSeq: +393331234567 INVITE")
    with pytest.raises(SipParseError) as caught:
        _ = request(data).cseq
    assert "3331234567" not in str(caught.value)


# -- serialise ---------------------------------------------------------------------------------


def test_serialize_writes_crlf_lines_and_a_matching_content_length() -> None:
    message = SipRequest("OPTIONS", "sip:bot@192.0.2.10", Headers([("CSeq", "1 OPTIONS")]), b"hi")
    message.headers.add("Content-Length", "999")
    assert (
        serialize(message)
        == b"OPTIONS sip:bot@192.0.2.10 SIP/2.0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert message.headers.get("Content-Length") == "999"  # the message itself is not changed


def test_serialize_joins_adjacent_list_values_only() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a"), ("Via", "SIP/2.0/UDP b"), ("To", "<sip:x@y>")])
    headers.add("Via", "SIP/2.0/UDP c")
    text = serialize(SipResponse(200, "OK", headers)).decode()
    assert "Via: SIP/2.0/UDP a, SIP/2.0/UDP b\r\nTo: <sip:x@y>\r\nVia: SIP/2.0/UDP c\r\n" in text


@pytest.mark.parametrize(
    "message",
    [
        SipRequest("BAD METHOD", "sip:a@b"),
        SipRequest("INVITE", "sip:a@b c"),
        SipRequest("INVITE", "sip:a@b", version="HTTP/1.1"),
        SipResponse(99, "Low"),
        SipResponse(200, "OK\r\nVia: evil"),
    ],
)
def test_serialize_refuses_messages_that_cannot_be_written(
    message: SipRequest | SipResponse,
) -> None:
    with pytest.raises(ValueError):
        serialize(message)


_extension_names = _tokens.map(lambda token: "X-" + token)
_values = (
    st.text(max_size=20)
    .filter(lambda v: "\r" not in v and "\n" not in v)
    .map(lambda v: v.strip(" \t"))
)


@st.composite
def sip_messages(draw: st.DrawFn) -> SipRequest | SipResponse:
    headers = Headers()
    for _ in range(draw(st.integers(1, 3))):
        headers.add(
            "Via",
            str(
                draw(
                    st.builds(
                        Via,
                        transport=st.just("UDP"),
                        host=_hosts,
                        params=st.tuples(st.tuples(st.just("branch"), _tokens)),
                    )
                )
            ),
        )
    headers.add(
        "From",
        str(
            draw(
                st.builds(
                    NameAddr,
                    uri=sip_uris.map(str),
                    display_name=st.none() | _no_crlf,
                    params=_header_params,
                )
            )
        ),
    )
    headers.add("To", str(NameAddr(str(draw(sip_uris)))))
    headers.add("Call-ID", draw(_tokens))
    method = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS"]) | _tokens)
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for name, value in draw(st.lists(st.tuples(_extension_names, _values), max_size=4)):
        headers.add(name, value)
    headers.add("Allow", ", ".join(draw(st.lists(_tokens, min_size=1, max_size=3))))
    body = draw(st.binary(max_size=64))
    if body:
        headers.add("Content-Type", "application/octet-stream")
    headers.add("Content-Length", str(len(body)))
    if draw(st.booleans()):
        return SipRequest(method, str(draw(sip_uris)), headers, body)
    reason = draw(_values)
    return SipResponse(draw(st.integers(100, 699)), reason, headers, body)


@given(sip_messages())
def test_generated_messages_round_trip(message: SipRequest | SipResponse) -> None:
    assert parse_message(serialize(message)) == message


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_nothing_but_sip_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    assert serialize(parse_message(serialize(message))) == serialize(message)


# -- responses ---------------------------------------------------------------------------------


def test_make_response_copies_the_headers_rfc_3261_8_2_6_names() -> None:
    received = request(
        invite(
            "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2",
            "Record-Route: <sip:proxy.example.com;lr>",
            "X-Other: not copied",
        )
    )
    response = make_response(received, 180, to_tag="as83kd9bs")
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.headers.get_all("Via") == received.headers.get_all("Via")
    assert response.to_addr.tag == "as83kd9bs"
    assert response.headers.get("From") == received.headers.get("From")
    assert (response.call_id, response.cseq) == (received.call_id, received.cseq)
    assert response.headers.get_all("Record-Route") == ["<sip:proxy.example.com;lr>"]
    assert "X-Other" not in response.headers
    assert parse_message(serialize(response)) == response


def test_make_response_100_copies_timestamp_and_needs_no_tag() -> None:
    response = make_response(request(invite("Timestamp: 54")), 100)
    assert response.headers.get("Timestamp") == "54" and response.to_addr.tag is None


def test_make_response_final_failure_does_not_copy_record_route() -> None:
    response = make_response(request(invite("Record-Route: <sip:p;lr>")), 486, to_tag="t")
    assert "Record-Route" not in response.headers and response.reason == "Busy Here"


def test_make_response_needs_a_to_tag_only_when_the_to_has_none() -> None:
    with pytest.raises(ValueError, match="To tag"):
        make_response(request(invite()), 200)
    in_dialog = request(invite().replace(b"To: <sip:bot@192.0.2.10>", b"To: <sip:bot@x>;tag=ours"))
    assert make_response(in_dialog, 200).to_addr.tag == "ours"
    assert make_response(in_dialog, 400, to_tag=new_tag()).to_addr.tag == "ours"


def test_make_response_carries_a_body_with_its_type_and_length() -> None:
    response = make_response(
        request(invite()),
        200,
        to_tag="t",
        extra_headers=[("Allow", "INVITE, ACK, BYE")],
        body=SDP,
        content_type="application/sdp",
    )
    assert response.content_type == "application/sdp"
    assert response.headers.get("Content-Length") == str(len(SDP))
    assert response.headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    with pytest.raises(ValueError, match="content_type"):
        make_response(request(invite()), 200, to_tag="t", body=SDP)


def test_make_response_echoes_an_unreadable_to_untouched() -> None:
    broken = request(invite().replace(b"To: <sip:bot@192.0.2.10>", b"To: Watson, T <sip:w@x>"))
    assert make_response(broken, 400, to_tag="t").headers.get("To") == "Watson, T <sip:w@x>"


def test_make_response_uses_the_class_reason_for_unlisted_codes() -> None:
    assert make_response(request(invite()), 499, to_tag="t").reason == "Request Failure"


def test_new_identifiers_are_tokens_and_distinct() -> None:
    branches = {new_branch() for _ in range(100)}
    tags = {new_tag() for _ in range(100)}
    call_ids = {new_call_id() for _ in range(100)}
    assert len(branches) == len(tags) == len(call_ids) == 100
    assert all(branch.startswith(BRANCH_MAGIC_COOKIE) for branch in branches)
    assert all(parse_name_addr(f"<sip:a@b>;tag={tag}").tag == tag for tag in tags)


# -- UAS validation beyond the corpus ----------------------------------------------------------


def test_validate_request_accepts_a_typical_invite() -> None:
    assert validate_request(request(invite("Content-Type: application/sdp", body=SDP))) is None


def test_validate_request_tells_a_known_method_from_an_unknown_one() -> None:
    assert validate_request(request(invite(method="SUBSCRIBE"))) == (405, "Method Not Allowed")
    assert validate_request(request(invite(method="FROBNICATE"))) == (501, "Not Implemented")
    assert validate_request(request(invite(method="SUBSCRIBE")), methods=["SUBSCRIBE"]) is None


@pytest.mark.parametrize(
    ("accept", "accepted"),
    [
        (None, True),
        ("application/sdp", True),
        ("APPLICATION/SDP;level=1", True),
        ("text/plain, application/*", True),
        ("*/*", True),
        ("text/nobodyKnowsThis", False),
        ("", False),
        ("application/sdp;q=0", False),
        ("application/sdp;q=0, */*", False),
        ("application/*;q=0, application/sdp", True),
        ("application/sdpx", False),
    ],
)
def test_accepts_sdp_follows_the_most_specific_accept_range(
    accept: str | None, accepted: bool
) -> None:
    extra = [] if accept is None else [f"Accept: {accept}"]
    assert accepts_sdp(request(invite(*extra))) is accepted


def test_validate_request_checks_the_body_type_and_encoding() -> None:
    no_type = request(invite(body=SDP))
    assert validate_request(no_type) == (400, "Missing Content-Type Header")
    gzip = request(invite("Content-Type: application/sdp", "Content-Encoding: gzip", body=SDP))
    assert validate_request(gzip) == (415, "Unsupported Content Encoding")
    dtmf = request(invite("Content-Type: application/dtmf-relay", method="INFO", body=b"x"))
    assert validate_request(dtmf) == (415, "Unsupported Media Type")
    assert validate_request(dtmf, content_types=["application/dtmf-relay"]) is None


def test_validate_request_reports_bad_extensions_but_never_for_ack() -> None:
    options = request(invite("Require: 100rel, timer", method="OPTIONS"))
    assert validate_request(options, extensions=["timer"]) == (420, "Bad Extension")
    assert unsupported_extensions(options, ["TIMER"]) == ["100rel"]
    assert validate_request(request(invite("Require: 100rel", method="ACK"))) is None


def test_validate_request_allows_a_wildcard_contact_only_alone_in_register() -> None:
    register = request(
        invite(method="REGISTER").replace(b"Contact: <sip:mario@192.0.2.20:5060>", b"Contact: *")
    )
    assert validate_request(register, methods=["REGISTER"]) is None
    assert register.contacts == [NameAddr("*")]
    options = request(
        invite(method="OPTIONS").replace(b"Contact: <sip:mario@192.0.2.20:5060>", b"Contact: *")
    )
    assert validate_request(options) == (400, "Malformed Contact Header")


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_validate_request_names_the_missing_mandatory_header(name: str) -> None:
    message = request(invite())
    message.headers.remove(name)
    assert validate_request(message) == (400, f"Missing {name} Header")


def test_validate_request_refuses_duplicated_single_value_headers() -> None:
    message = request(invite("Call-ID: other@192.0.2.20"))
    assert validate_request(message) == (400, "Multiple Call-ID Headers")


@pytest.mark.parametrize(
    ("name", "value", "count"),
    [
        ("Contact", "<sip:mario@192.0.2.20>", MAX_ADDRESS_VALUES),  # plus the invite's own
        ("Record-Route", "<sip:p1.example.com;lr>", MAX_ADDRESS_VALUES + 1),
        ("Route", "<sip:p1.example.com;lr>", MAX_ADDRESS_VALUES + 1),
        ("Via", "SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKp", MAX_VIA_VALUES),
    ],
)
def test_validate_request_refuses_too_many_list_values_before_parsing_them(
    name: str, value: str, count: int
) -> None:
    many = request(invite(f"{name}: " + ", ".join([value] * count)))
    assert validate_request(many) == (400, f"Too Many {name} Values")
    fewer = request(invite(f"{name}: " + ", ".join([value] * (count - 1))))
    assert validate_request(fewer) is None


def test_the_size_limit_is_8_kib() -> None:
    assert MAX_MESSAGE_BYTES == 8192
