"""The RFC 4475 torture messages: every one parses or is refused the way the RFC says.

The corpus lives beside the repository (``<repo>/../shared/corpora/rfc4475/``), read in binary so
every CRLF and Content-Length stays exact; its ``manifest.json`` gives each file's class and what
a UAS must do with it. Files are never copied into the project.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.errors import SdpError, SipBadRequest, SipParseError
from voice.sip.fields import CSeq
from voice.sip.message import SipRequest, SipResponse, parse_message, serialize
from voice.sip.response import make_response
from voice.sip.sdp import parse_sdp
from voice.sip.uri import parse_uri
from voice.sip.validation import KNOWN_METHODS, validate_request, validate_response

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "rfc4475"
if not (CORPUS / "manifest.json").is_file():
    pytest.skip(f"RFC 4475 corpus not found: {CORPUS} is missing", allow_module_level=True)

MANIFEST: list[dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())
ENTRIES = {entry["file"]: entry for entry in MANIFEST}
BY_CLASS = {
    klass: sorted(name for name, entry in ENTRIES.items() if entry["klass"] == klass)
    for klass in {entry["klass"] for entry in MANIFEST}
}

# The status a UAS answers each request with where RFC 4475 names one (a set where it allows
# several; None = process it). Every status listed must appear in the manifest's summary.
EXPECTED_STATUS: dict[str, set[int | None]] = {
    "intmeth.dat": {501},
    "esc02.dat": {501},
    "badinv01.dat": {400},
    "clerr.dat": {400},
    "ncl.dat": {400},
    "scalar02.dat": {400},
    "quotbal.dat": {400},
    "ltgtruri.dat": {400},
    "lwsruri.dat": {400},
    "lwsstart.dat": {400},
    "trws.dat": {400},
    "escruri.dat": {400},
    "baddate.dat": {400},
    "regbadct.dat": {400},
    "badaspec.dat": {400},
    "baddn.dat": {400},
    "badvers.dat": {505},
    "mismatch01.dat": {400},
    "mismatch02.dat": {501},
    "badbranch.dat": {400, None},
    "insuf.dat": {400},
    "unkscm.dat": {416},
    "novelsc.dat": {416},
    "bext01.dat": {420},
    "invut.dat": {415},
    "multi01.dat": {400},
    "mcl01.dat": {400},
    "sdp01.dat": {406},
    "inv2543.dat": {400, None},
}
# Requests whose summary quotes a status that is not an endpoint's to send.
NOT_FOR_A_UAS = {"zeromf.dat": "483 is what a proxy answers; an endpoint processes the OPTIONS"}
# Method names and body types of the valid messages, for a UAS that implements them all.
ALL_METHODS = KNOWN_METHODS | {"RE%47IST%45R", "!interesting-Method0123456789_*+`.%indeed'~"}
ALL_BODIES = ("application/sdp", "multipart/mixed")


def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def _unparseable(name: str) -> bool:
    try:
        parse_message(read(name))
    except SipParseError:
        return True
    return False


UNPARSEABLE = frozenset(name for name in ENTRIES if _unparseable(name))


def uas_status(name: str) -> int | None:
    """What our UAS answers: 400 for an answerable parse error, else validate_request's status."""
    try:
        message = parse_message(read(name))
    except SipBadRequest:
        return 400
    assert isinstance(message, SipRequest)
    verdict = validate_request(message)
    return None if verdict is None else verdict[0]


def refused(data: bytes) -> bool:
    """Whether a request is refused or a response dropped, by the parser or by validation."""
    try:
        message = parse_message(data)
    except SipParseError:
        return True
    if isinstance(message, SipRequest):
        return validate_request(message, methods=ALL_METHODS, content_types=ALL_BODIES) is not None
    return validate_response(message) is not None


def test_corpus_files_are_byte_exact_copies_of_the_rfc_messages() -> None:
    for name, entry in ENTRIES.items():
        data = read(name)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"])


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_corpus_message_parses_or_raises_sip_parse_error(name: str) -> None:
    try:
        message = parse_message(read(name))
    except SipParseError:
        return
    for accessor in ("call_id", "cseq", "from_addr", "to_addr", "vias", "contacts", "contact_uri"):
        try:
            getattr(message, accessor)
        except SipParseError:
            continue
    if isinstance(message, SipRequest):
        validate_request(message)
    else:
        validate_response(message)


@pytest.mark.parametrize("name", BY_CLASS["valid"])
def test_valid_messages_parse_and_round_trip(name: str) -> None:
    message = parse_message(read(name))
    again = parse_message(serialize(message))
    assert again == message
    assert list(again.headers) == list(message.headers) and again.body == message.body


@pytest.mark.parametrize("name", sorted(n for n in ENTRIES if n not in UNPARSEABLE))
def test_parsed_messages_serialise_to_a_fixed_point(name: str) -> None:
    message = parse_message(read(name))
    assert serialize(parse_message(serialize(message))) == serialize(message)


def test_only_invalid_and_content_length_messages_are_unparseable() -> None:
    assert {ENTRIES[name]["klass"] for name in UNPARSEABLE} <= {"invalid", "semantics"}
    assert {n for n in UNPARSEABLE if ENTRIES[n]["klass"] == "semantics"} == {"mcl01.dat"}


@pytest.mark.parametrize("name", BY_CLASS["invalid"])
def test_invalid_messages_are_refused(name: str) -> None:
    assert refused(read(name))


@pytest.mark.parametrize("name", BY_CLASS["valid"])
def test_valid_messages_are_accepted_by_a_uas_implementing_their_method(name: str) -> None:
    assert not refused(read(name))


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_uas_answers_the_status_the_rfc_names(name: str) -> None:
    summary = ENTRIES[name]["expected_uas_behaviour"]
    assert all(str(status) in summary for status in EXPECTED_STATUS[name] if status is not None)
    assert uas_status(name) in EXPECTED_STATUS[name]


def test_every_request_whose_summary_names_a_status_is_checked() -> None:
    for name, entry in ENTRIES.items():
        if read(name).startswith(b"SIP/"):
            continue  # responses are dropped, never answered
        if re.search(r"\b[1-6][0-9]{2}\b", entry["expected_uas_behaviour"]):
            assert name in EXPECTED_STATUS or name in NOT_FOR_A_UAS, name


def test_an_endpoint_processes_options_with_max_forwards_zero() -> None:
    assert uas_status("zeromf.dat") is None


@pytest.mark.parametrize("name", ["bigcode.dat", "scalarlg.dat"])
def test_malformed_responses_are_dropped(name: str) -> None:
    assert refused(read(name))


@pytest.mark.parametrize("name", sorted(n for n in ENTRIES if not read(n).startswith(b"SIP/")))
def test_every_refused_request_can_be_answered(name: str) -> None:
    try:
        message = parse_message(read(name))
    except SipBadRequest as exc:
        message = exc.request
    assert isinstance(message, SipRequest)
    verdict = validate_request(message) or (400, "Bad Request")
    answer = parse_message(serialize(make_response(message, *verdict, to_tag="t1")))
    assert isinstance(answer, SipResponse) and answer.status == verdict[0]
    assert answer.headers.get_all("Via") == message.headers.get_all("Via")
    assert answer.headers.get_all("Call-ID") == message.headers.get_all("Call-ID")


def test_a_request_without_the_empty_line_is_answerable() -> None:
    with pytest.raises(SipBadRequest, match="empty line") as caught:
        parse_message(read("baddn.dat"))
    assert caught.value.request.call_id == "baddn.31415@c.example.com"


# -- what the RFC says each valid message must parse into -------------------------------------


def test_wsinv_unfolds_lws_and_reads_leading_zeros() -> None:
    message = parse_message(read("wsinv.dat"))
    assert message.headers.get("Subject") == ""
    assert [via.host for via in message.vias] == [
        "192.0.2.2",
        "spindle.example.com",
        "192.168.255.111",
    ]
    assert message.vias[2].branch == "z9hG4bK30239"
    assert message.headers.get("NewFangledHeader") == (
        "newfangled value continued newfangled value"
    )
    assert message.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert message.from_addr.display_name == 'J Rosenberg \\"'
    assert message.contacts[0].display_name == 'Quoted string ""'
    assert message.contacts[0].params == (
        ("newparam", "newvalue"),
        ("secondparam", None),
        ("q", "0.33"),
    )
    assert message.to_addr.tag == "1918181833n"
    assert (message.max_forwards, message.cseq) == (68, CSeq(9, "INVITE"))
    route = parse_uri(parse_message(read("wsinv.dat")).headers.get_all("Route")[0][1:-1])
    assert route.has_param("unknown-no-value") and route.param("unknownwith") == "value"


def test_esc01_unescapes_uri_parts() -> None:
    message = parse_message(read("esc01.dat"))
    assert isinstance(message, SipRequest)
    assert message.request_uri.user == "sips:user@example.com"
    assert parse_uri(message.from_addr.uri).user == "I have spaces"
    assert parse_uri(message.to_addr.uri).user == "user"
    assert message.contact_uri is not None
    assert message.contact_uri.params == (("lr", None), ("name", "value%41"))


def test_escnull_keeps_nul_characters_in_users() -> None:
    message = parse_message(read("escnull.dat"))
    assert parse_uri(message.to_addr.uri).user == "null-\x00-null"
    assert [parse_uri(c.uri).user for c in message.contacts] == ["\x00", "\x00\x00"]


def test_esc02_method_is_not_register_and_has_two_contacts() -> None:
    message = parse_message(read("esc02.dat"))
    assert isinstance(message, SipRequest) and message.method == "RE%47IST%45R"
    assert message.from_addr.display_name == "%Z%45"
    assert len(message.contacts) == 2
    assert message.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_longreq_keeps_34_vias_and_long_values() -> None:
    message = parse_message(read("longreq.dat"))
    vias = message.vias
    assert len(vias) == 34
    assert [via.host for via in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert vias[33].branch == "very" + "long" * 50 + "branchvalue"
    assert message.from_addr.tag == "12" + "982" * 50 + "424"
    assert message.to_addr.display_name == (
        "I have a user name of " + "extreme" * 10 + " proportion"
    )


def test_dblreq_ignores_the_invite_after_content_length() -> None:
    message = parse_message(read("dblreq.dat"))
    assert isinstance(message, SipRequest)
    assert (message.method, message.body) == ("REGISTER", b"")


def test_semiuri_user_part_holds_the_parameters() -> None:
    message = parse_message(read("semiuri.dat"))
    assert isinstance(message, SipRequest)
    assert message.request_uri.user == "user;par=u@example.net"
    assert len(message.headers.get_all("Accept")) == 6


def test_transports_reads_known_and_unknown_transports() -> None:
    vias = parse_message(read("transports.dat")).vias
    assert [via.transport for via in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_body_is_framed_by_content_length() -> None:
    message = parse_message(read("mpart01.dat"))
    assert len(message.body) == 553 and b"\x00" in message.body
    assert message.content_type == "multipart/mixed"


def test_unreason_and_noreason_keep_their_reason_phrases() -> None:
    unusual = parse_message(read("unreason.dat"))
    empty = parse_message(read("noreason.dat"))
    assert isinstance(unusual, SipResponse) and isinstance(empty, SipResponse)
    assert unusual.reason.startswith("= 2**3 * 5**2 но сто девяносто")
    assert (empty.status, empty.reason) == (100, "")


def test_contact_parameters_belong_to_the_uri_only_inside_brackets() -> None:
    outside = parse_message(read("cparam01.dat")).contacts[0]
    inside = parse_message(read("cparam02.dat")).contacts[0]
    assert outside.has_param("unknownparam") and not parse_uri(outside.uri).has_param(
        "unknownparam"
    )
    assert not inside.has_param("unknownparam") and parse_uri(inside.uri).has_param("unknownparam")


def test_regescrt_contact_keeps_its_escaped_route_header() -> None:
    message = parse_message(read("regescrt.dat"))
    assert (
        message.headers.get("Contact") == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"
    )
    assert message.contact_uri is not None
    assert message.contact_uri.headers == (("Route", "<sip:sip.example.com>"),)


def test_unksm2_reads_addresses_of_any_scheme() -> None:
    message = parse_message(read("unksm2.dat"))
    assert [message.to_addr.uri, message.from_addr.uri, message.contacts[0].uri] == [
        "isbn:2983792873",
        "http://www.example.com",
        "name:John_Smith",
    ]


def test_inv2543_body_runs_to_the_end_of_the_datagram() -> None:
    message = parse_message(read("inv2543.dat"))
    assert message.top_via.branch is None and message.from_addr.tag is None
    assert message.max_forwards is None
    assert message.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")


def test_bcast_response_keeps_the_broadcast_via() -> None:
    assert parse_message(read("bcast.dat")).vias[1].host == "255.255.255.255"


def test_corpus_sdp_bodies_parse_or_raise_sdp_error() -> None:
    parsed = 0
    for name in ENTRIES:
        try:
            message = parse_message(read(name))
        except SipBadRequest as exc:
            message = exc.request
        except SipParseError:
            continue
        if message.body and message.headers.get("Content-Type") == "application/sdp":
            try:
                parse_sdp(message.body)
            except SdpError:
                continue
            parsed += 1
    assert parsed >= 10


_corpus_files = st.sampled_from(sorted(ENTRIES)).map(read)


@given(
    _corpus_files,
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8),
    st.none() | st.integers(0, 4000),
)
def test_mutated_corpus_messages_raise_nothing_but_sip_parse_error(
    data: bytes, flips: list[tuple[int, int]], cut: int | None
) -> None:
    mutated = bytearray(data if cut is None else data[:cut])
    for position, byte in flips:
        if mutated:
            mutated[position % len(mutated)] = byte
    try:
        message = parse_message(bytes(mutated))
    except SipParseError:
        return
    for accessor in ("call_id", "cseq", "from_addr", "to_addr", "vias", "contacts", "contact_uri"):
        try:
            getattr(message, accessor)
        except SipParseError:
            continue
    if isinstance(message, SipRequest):
        validate_request(message)
    else:
        validate_response(message)
    assert serialize(parse_message(serialize(message))) == serialize(message)
