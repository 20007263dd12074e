"""Dialog state (RFC 3261 §12) and the pure parts of a blind transfer (RFC 3515, RFC 7433)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from voice.errors import SipParseError
from voice.sip.dialog import Dialog, DialogState
from voice.sip.message import SipRequest, parse_message, serialize
from voice.sip.refer import refer_to, sipfrag_status, user_to_user
from voice.sip.uri import parse_uri

CONTACT = "<sip:triage@192.0.2.1:5060>"


def invite(*, record_route: str = "", contact: str = "<sip:caller@192.0.2.10:5062>") -> SipRequest:
    text = (
        "INVITE sip:100@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKd1\r\n"
        + record_route
        + 'From: "Mario" <sip:3331234567@192.0.2.10>;tag=caller-tag\r\n'
        "To: <sip:100@192.0.2.1>\r\n"
        "Call-ID: dialog-1\r\n"
        "CSeq: 10 INVITE\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def in_dialog(method: str, cseq: int) -> SipRequest:
    text = (
        f"{method} sip:triage@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKd2\r\n"
        "From: <sip:3331234567@192.0.2.10>;tag=caller-tag\r\n"
        "To: <sip:100@192.0.2.1>;tag=ours\r\n"
        "Call-ID: dialog-1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:caller@198.51.100.7:5070>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def test_answering_an_invite_takes_its_identity_target_and_routes() -> None:
    dialog = Dialog.answering(
        invite(record_route="Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"),
        "ours",
        CONTACT,
    )
    assert dialog.key == ("dialog-1", "ours", "caller-tag")
    assert dialog.remote_target == "sip:caller@192.0.2.10:5062"
    assert dialog.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert dialog.remote_cseq == 10 and dialog.state is DialogState.EARLY


def test_an_invite_without_contact_cannot_make_a_dialog() -> None:
    with pytest.raises(SipParseError):
        Dialog.answering(invite(contact=""), "ours", CONTACT)


def test_a_request_in_the_dialog_swaps_from_and_to_and_counts_cseq() -> None:
    dialog = Dialog.answering(invite(), "ours", CONTACT)
    dialog.confirm()
    via = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKout1"

    bye = dialog.new_request("BYE", via)
    refer = dialog.new_request("REFER", via.replace("out1", "out2"))

    parsed = parse_message(serialize(bye))
    assert isinstance(parsed, SipRequest)
    assert parsed.uri == "sip:caller@192.0.2.10:5062"
    assert parsed.from_addr.uri == "sip:100@192.0.2.1" and parsed.from_addr.tag == "ours"
    assert parsed.to_addr.uri == "sip:3331234567@192.0.2.10"
    assert parsed.to_addr.tag == "caller-tag"
    assert parsed.call_id == "dialog-1" and parsed.max_forwards == 70
    assert (bye.cseq.number, refer.cseq.number) == (1, 2)
    assert "Route" not in parsed.headers


def test_loose_routes_become_route_headers_and_a_strict_one_the_request_uri() -> None:
    loose = Dialog.answering(
        invite(record_route="Record-Route: <sip:p1.example.com;lr>\r\n"), "a", CONTACT
    )
    request = loose.new_request("BYE", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKl")
    assert request.uri == "sip:caller@192.0.2.10:5062"
    assert request.headers.get_all("Route") == ["<sip:p1.example.com;lr>"]

    strict = Dialog.answering(
        invite(record_route="Record-Route: <sip:p1.example.com>, <sip:p2.example.com;lr>\r\n"),
        "b",
        CONTACT,
    )
    request = strict.new_request("BYE", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKs")
    assert request.uri == "sip:p1.example.com"
    assert request.headers.get_all("Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:caller@192.0.2.10:5062>",
    ]


def test_states_move_only_forward() -> None:
    dialog = Dialog.answering(invite(), "ours", CONTACT)
    dialog.confirm()
    with pytest.raises(RuntimeError):
        dialog.confirm()
    dialog.terminate()
    dialog.terminate()
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(RuntimeError):
        dialog.confirm()
    with pytest.raises(RuntimeError):
        dialog.new_request("BYE", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKt")


def test_an_out_of_order_cseq_is_refused_and_a_reinvite_refreshes_the_target() -> None:
    dialog = Dialog.answering(invite(), "ours", CONTACT)
    assert not dialog.accepts_cseq(in_dialog("BYE", 9))
    assert dialog.accepts_cseq(in_dialog("INVITE", 11))
    dialog.refresh_target(in_dialog("INVITE", 11))
    assert dialog.remote_target == "sip:caller@198.51.100.7:5070"
    assert dialog.accepts_cseq(in_dialog("ACK", 11))
    assert not dialog.accepts_cseq(in_dialog("NOTIFY", 10))


def test_refer_to_carries_the_handoff_id_as_escaped_uri_headers() -> None:
    value = refer_to("sip:general@pbx.example.com:5070", "h-42")

    assert value == (
        "<sip:general@pbx.example.com:5070"
        "?X-Handoff-Id=h-42&User-to-User=682d3432%3Bencoding%3Dhex>"
    )
    uri = parse_uri(value[1:-1])
    assert dict(uri.headers) == {"X-Handoff-Id": "h-42", "User-to-User": "682d3432;encoding=hex"}
    assert bytes.fromhex(unquote(uri.headers[1][1]).split(";")[0]).decode() == "h-42"
    assert user_to_user("h-42") == "682d3432;encoding=hex"


@pytest.mark.parametrize(
    ("target", "handoff_id"),
    [
        ("tel:+390212345", "h-1"),
        ("not a uri", "h-1"),
        ("sip:general@pbx", "h 1"),
        ("sip:general@pbx", "h\r\nX-Injected: 1"),
        ("sip:general@pbx", "x" * 65),
    ],
)
def test_refer_to_refuses_what_cannot_be_carried_safely(target: str, handoff_id: str) -> None:
    with pytest.raises(ValueError):
        refer_to(target, handoff_id)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"SIP/2.0 200 OK\r\n", 200),
        (b"SIP/2.0 100 Trying", 100),
        (b"SIP/2.0 603 Declined\r\nContent-Length: 0\r\n", 603),
        (b"sip/2.0 180 Ringing\n", 180),
        (b"", None),
        (b"HTTP/1.1 200 OK\r\n", None),
        (b"SIP/2.0 2000 OK\r\n", None),
        (b"SIP/2.0 099 Low\r\n", None),
        (b"\xff\xfe", None),
    ],
)
def test_sipfrag_status_reads_the_status_line(body: bytes, status: int | None) -> None:
    assert sipfrag_status(body) == status
