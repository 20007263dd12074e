"""RFC 3261 §17 transactions over UDP, with the network replaced by a list of what was sent.

Timers are scaled down (T1 = 10 ms) and the tests check what is sent, in what order and with
what spacing, with margins that survive a loaded machine.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from voice.sip.message import SipRequest, SipResponse, parse_message
from voice.sip.response import make_response
from voice.sip.timers import T1_S, T2_S, T4_S, TIMEOUT_T1_MULTIPLE, SipTimers
from voice.sip.transaction import ClientState, InviteServerState, ServerState
from voice.sip.transaction_keys import client_key, server_key
from voice.sip.transaction_layer import MAX_LINGERING, TransactionLayer

TIMERS = SipTimers().scaled(0.02)  # T1 10 ms, T2 80 ms, T4 100 ms, 64*T1 640 ms
PEER = ("127.0.0.1", 5062)
BOUND_S = 5.0


@dataclass
class Wire:
    """Stands in for the transport: every message sent, with its loop time."""

    sent: list[tuple[float, SipRequest | SipResponse]] = field(default_factory=list)
    datagrams: list[bytes] = field(default_factory=list)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert to == PEER
        self.datagrams.append(data)
        self.sent.append((asyncio.get_running_loop().time(), parse_message(data)))

    def statuses(self) -> list[int]:
        return [m.status for _, m in self.sent if isinstance(m, SipResponse)]


def request(
    method: str,
    *,
    branch: str = "z9hG4bKtx1",
    cseq_method: str | None = None,
    to_tag: str | None = None,
    via_host: str = "192.0.2.10:5062",
) -> SipRequest:
    to = "<sip:100@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:100@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch={branch}\r\n"
        "From: <sip:caller@192.0.2.10>;tag=from1\r\n"
        f"To: {to}\r\n"
        "Call-ID: tx-call-1\r\n"
        f"CSeq: 7 {cseq_method or method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.fixture
async def layer() -> AsyncIterator[tuple[TransactionLayer, Wire]]:
    wire = Wire()
    transactions = TransactionLayer(wire.send, TIMERS)
    yield transactions, wire
    transactions.close()


def test_timer_constants_are_rfc_3261_values_and_scale_together() -> None:
    assert (T1_S, T2_S, T4_S, TIMEOUT_T1_MULTIPLE) == (0.5, 4.0, 5.0, 64)
    assert SipTimers().timeout_s == 32.0
    scaled = SipTimers().scaled(0.1)
    assert (scaled.t1_s, scaled.t2_s, scaled.t4_s) == pytest.approx((0.05, 0.4, 0.5))
    with pytest.raises(ValueError):
        SipTimers(t1_s=1.0, t2_s=0.5)


def test_a_server_transaction_is_found_by_branch_sent_by_and_method() -> None:
    invite = request("INVITE")
    assert server_key(invite) == server_key(request("ACK", cseq_method="ACK"))
    assert server_key(invite) == server_key(request("CANCEL"), method="INVITE")
    assert server_key(invite) != server_key(request("CANCEL"))
    assert server_key(invite) != server_key(request("INVITE", branch="z9hG4bKother"))
    assert server_key(invite) != server_key(request("INVITE", via_host="192.0.2.11:5062"))


def test_an_rfc_2543_request_without_the_magic_cookie_is_keyed_by_its_headers() -> None:
    old = request("INVITE", branch="1")
    assert server_key(old) is not None and server_key(old)[0] == "2543"  # type: ignore[index]
    assert server_key(old) == server_key(request("ACK", branch="1", cseq_method="ACK"))
    assert server_key(old) != server_key(request("INVITE", branch="2"))


def test_a_client_transaction_is_found_by_branch_and_cseq_method() -> None:
    bye = request("BYE")
    ok = make_response(bye, 200, to_tag="t")
    assert client_key(ok) == client_key(bye) == ("z9hG4bKtx1", "BYE")


async def test_a_retransmitted_invite_gets_the_last_provisional_again(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    invite = request("INVITE")
    transaction = transactions.invite_server(invite, PEER)
    transaction.respond(make_response(invite, 100))
    transaction.respond(make_response(invite, 180, to_tag="ours"))

    assert transactions.absorb(request("INVITE"))
    assert wire.statuses() == [100, 180, 180]
    assert transactions.stats.retransmissions_absorbed == 1
    assert not transactions.absorb(request("INVITE", branch="z9hG4bKnew"))


async def test_a_2xx_is_retransmitted_doubling_from_t1_to_t2_until_the_ack(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    invite = request("INVITE")
    transaction = transactions.invite_server(invite, PEER)
    transaction.respond(make_response(invite, 200, to_tag="ours"))
    assert transaction.state is InviteServerState.ACCEPTED

    await asyncio.sleep(TIMERS.t1_s * 25)  # 250 ms: 10, 20, 40, 80, 80 ... sent by then
    assert transaction.acknowledge(request("ACK", branch="z9hG4bKack", cseq_method="ACK"))
    sent_at = [t for t, _ in wire.sent]
    await asyncio.sleep(TIMERS.t2_s * 2)

    assert len(wire.sent) == len(sent_at), "the ACK stops the retransmissions"
    gaps = intervals(sent_at)
    assert len(gaps) >= 4
    assert gaps[0] == pytest.approx(TIMERS.t1_s, abs=0.03)
    assert gaps[2] > gaps[0], "the interval doubles"
    assert max(gaps) < TIMERS.t2_s + 0.05, "and is capped at T2"
    assert await asyncio.wait_for(transaction.wait_ack(), BOUND_S)
    assert not transaction.acknowledge(request("ACK", branch="z9hG4bKack", cseq_method="ACK"))


async def test_after_the_ack_an_invite_copy_gets_the_2xx_again_until_timer_l(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    invite = request("INVITE")
    transaction = transactions.invite_server(invite, PEER)
    transaction.respond(make_response(invite, 200, to_tag="ours"))
    transaction.acknowledge(request("ACK", branch="z9hG4bKack", cseq_method="ACK"))
    sent = len(wire.datagrams)

    assert transactions.absorb(request("INVITE"))
    assert transactions.absorb(request("ACK", cseq_method="ACK"))  # silently
    assert wire.datagrams[sent:] == [wire.datagrams[0]], "the same 200, nothing for the ACK"
    assert transactions.invite_finished(request("CANCEL"))
    assert transactions.invite_cancelled_by(request("CANCEL")) is None
    await asyncio.sleep(TIMERS.timeout_s + 0.2)
    assert len(transactions) == 0 and not transactions.absorb(request("INVITE"))


async def test_timer_h_gives_up_on_a_2xx_that_is_never_acked(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    invite = request("INVITE")
    transaction = transactions.invite_server(invite, PEER)
    started = asyncio.get_running_loop().time()
    transaction.respond(make_response(invite, 200, to_tag="ours"))

    acked = await asyncio.wait_for(transaction.wait_ack(), BOUND_S)

    waited = asyncio.get_running_loop().time() - started
    assert not acked and transaction.state is InviteServerState.TERMINATED
    assert waited == pytest.approx(TIMERS.timeout_s, abs=0.2)
    assert transactions.stats.ack_timeouts == 1 and len(transactions) == 0
    # 10+20+40 then every 80 ms up to 640 ms: at least 8 copies after the first
    assert wire.statuses().count(200) >= 8


async def test_a_non_2xx_final_waits_for_its_ack_matched_by_branch(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    invite = request("INVITE")
    transaction = transactions.invite_server(invite, PEER)
    transaction.respond(make_response(invite, 486, to_tag="ours"))
    await asyncio.sleep(TIMERS.t1_s * 4)  # Timer G fired at least once
    retransmitted = wire.statuses().count(486)

    assert transactions.absorb(request("ACK", cseq_method="ACK", to_tag="ours"))
    assert transaction.state is InviteServerState.CONFIRMED
    await asyncio.sleep(TIMERS.t2_s * 2)
    assert retransmitted >= 2 and wire.statuses().count(486) == retransmitted
    with pytest.raises(RuntimeError):
        transaction.respond(make_response(invite, 200, to_tag="ours"))
    await asyncio.sleep(TIMERS.t4_s * 1.5)  # Timer I
    assert len(transactions) == 0


async def test_a_non_invite_request_retransmitted_gets_the_same_final_until_timer_j(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    bye = request("BYE", to_tag="ours")
    transaction = transactions.server(bye, PEER)
    transaction.respond(make_response(bye, 200))
    assert transaction.state is ServerState.COMPLETED

    assert transactions.absorb(request("BYE", to_tag="ours"))
    assert wire.datagrams == [wire.datagrams[0]] * 2, "the same response, byte for byte"
    assert len(transactions) == 1
    await asyncio.sleep(TIMERS.timeout_s + 0.2)
    assert not transactions.absorb(request("BYE", to_tag="ours"))
    assert len(transactions) == 0


async def test_a_client_request_is_retransmitted_on_timer_e_until_its_final_response(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    bye = request("BYE", branch="z9hG4bKours", to_tag="theirs")
    transaction = transactions.request(bye, PEER)
    await asyncio.sleep(TIMERS.t1_s * 8)  # sent at 0, 10, 30, 70 ms
    assert len(wire.sent) >= 3 and transactions.stats.requests_retransmitted >= 2

    assert transactions.receive_response(make_response(bye, 200))
    response = await asyncio.wait_for(transaction.final_response(), BOUND_S)

    assert response is not None and response.status == 200
    assert transaction.state is ClientState.COMPLETED
    count = len(wire.sent)
    assert transactions.receive_response(make_response(bye, 200)), "absorbed in Completed"
    await asyncio.sleep(TIMERS.t2_s * 2)
    assert len(wire.sent) == count
    gaps = intervals([t for t, _ in wire.sent])
    assert gaps[1] > gaps[0]


async def test_a_provisional_response_slows_timer_e_to_t2(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, wire = layer
    refer = request("REFER", branch="z9hG4bKrefer", to_tag="theirs")
    transactions.request(refer, PEER)
    assert transactions.receive_response(make_response(refer, 100))
    await asyncio.sleep(TIMERS.t2_s * 3.5)
    gaps = intervals([t for t, _ in wire.sent])
    assert gaps and min(gaps) > TIMERS.t2_s * 0.8


async def test_timer_f_ends_an_unanswered_client_request_with_none(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, _ = layer
    transaction = transactions.request(request("BYE", branch="z9hG4bKlost"), PEER)
    assert await asyncio.wait_for(transaction.final_response(), BOUND_S) is None
    assert transaction.state is ClientState.TERMINATED
    assert transactions.stats.client_timeouts == 1


async def test_a_response_for_no_transaction_or_another_method_is_not_matched(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, _ = layer
    bye = request("BYE", branch="z9hG4bKmine", to_tag="theirs")
    transactions.request(bye, PEER)
    other = request("BYE", branch="z9hG4bKmine", cseq_method="INFO", to_tag="theirs")
    assert not transactions.receive_response(make_response(other, 200))
    assert not transactions.receive_response(make_response(request("BYE"), 200, to_tag="t"))


async def test_a_cancel_finds_the_invite_it_names(layer: tuple[TransactionLayer, Wire]) -> None:
    transactions, _ = layer
    invite = transactions.invite_server(request("INVITE"), PEER)
    assert transactions.invite_cancelled_by(request("CANCEL")) is invite
    assert transactions.invite_cancelled_by(request("CANCEL", branch="z9hG4bKx")) is None


async def test_close_ends_every_wait(layer: tuple[TransactionLayer, Wire]) -> None:
    transactions, _ = layer
    invite = transactions.invite_server(request("INVITE"), PEER)
    invite.respond(make_response(invite.request, 200, to_tag="ours"))
    client = transactions.request(request("BYE", branch="z9hG4bKc", to_tag="t"), PEER)

    transactions.close()

    assert await asyncio.wait_for(invite.wait_ack(), BOUND_S) is False
    assert await asyncio.wait_for(client.final_response(), BOUND_S) is None
    assert len(transactions) == 0
    with pytest.raises(RuntimeError):
        transactions.request(request("BYE", branch="z9hG4bKlate"), PEER)


async def test_only_non_invite_client_transactions_exist(
    layer: tuple[TransactionLayer, Wire],
) -> None:
    transactions, _ = layer
    with pytest.raises(ValueError):
        transactions.request(request("INVITE"), PEER)
    transactions.request(request("BYE", branch="z9hG4bKsame"), PEER)
    with pytest.raises(ValueError, match="fresh branch"):
        transactions.request(request("BYE", branch="z9hG4bKsame"), PEER)


async def test_finished_transactions_beyond_the_cap_forget_the_oldest_first() -> None:
    wire = Wire()
    transactions = TransactionLayer(wire.send, TIMERS, max_lingering=2)
    try:
        branches = [f"z9hG4bKcap{n}" for n in range(3)]
        for branch in branches:
            bye = request("BYE", branch=branch, to_tag="ours")
            transactions.server(bye, PEER).respond(make_response(bye, 200))

        assert len(transactions) == 2 and transactions.stats.lingering_dropped == 1
        assert not transactions.absorb(request("BYE", branch=branches[0], to_tag="ours"))
        assert transactions.absorb(request("BYE", branch=branches[2], to_tag="ours"))
    finally:
        transactions.close()
    assert MAX_LINGERING == 10_000
