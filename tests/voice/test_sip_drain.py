"""A draining SIP user agent over real UDP on loopback: it refuses new calls 503 and answers
probes 503, while the calls in progress go on to their end.

The phone, the callers and the running agent are those of ``test_sip_agent`` (same timers, the
fake engines); what is new here is ``agent.drain()`` and ``agent.wait_until_idle()``.
"""

from __future__ import annotations

import asyncio

from tests.voice import test_sip_agent as agent_tests
from tests.voice.test_sip_agent import (
    LOOPBACK,
    TIMERS,
    WAIT_S,
    Caller,
    Phone,
    record,
    reply,
    running,
    sip,
    until,
)
from voice.sip.agent import SipAgentState

# the phone on loopback and the check that no test leaves a task behind, as for the other tests
phone = agent_tests.phone
no_leaked_tasks = agent_tests.no_leaked_tasks

IDLE_WAIT_S = 0.3  # long enough for a call that goes on to show it does


def options(caller: Caller, cseq: int) -> bytes:
    """An OPTIONS out of any dialog (no To tag), as Kamailio's dispatcher probes a bridge."""
    return sip(f"OPTIONS sip:{LOOPBACK} SIP/2.0", caller.headers("OPTIONS", cseq, f"z9o{cseq}"))


async def test_a_draining_agent_refuses_a_new_invite_503_with_retry_after_statelessly(
    phone: Phone,
) -> None:
    async with running(retry_after_s=11) as agent:
        agent.drain()
        caller = Caller(phone, agent.local_address)
        invite = caller.invite()
        caller.send(invite)

        refused = await phone.response()
        assert refused.status == 503 and refused.headers.get("Retry-After") == "11"
        await asyncio.sleep(TIMERS.t1_s * 4)
        assert len(agent.transactions) == 0, "stateless: nothing to retransmit on Timer G"
        caller.send(invite)  # a retransmission gets the refusal again, once
        await asyncio.sleep(TIMERS.t1_s * 4)
        assert len(phone.received(503)) == 2 and not phone.received(100)
        stats = agent.stats
        assert stats.rejected["draining"] == 2 and stats.calls_started == 0
        assert stats.active_calls == 0 and agent.state is SipAgentState.DRAINING


async def test_a_draining_agent_answers_a_probe_503_and_options_in_a_dialog_200(
    phone: Phone,
) -> None:
    async with running(retry_after_s=11) as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(options(caller, 1))
        assert await phone.statuses(1) == [200]
        await caller.connected()
        await until(agent, lambda s: s.calls_started == 1)

        agent.drain()
        caller.send(options(caller, 2))
        probe = await phone.response()
        caller.send(caller.in_dialog("OPTIONS", 3))
        in_dialog = await phone.response()

        assert probe.status == 503 and probe.headers.get("Retry-After") == "11"
        assert in_dialog.status == 200 and "INVITE" in in_dialog.headers.get_all("Allow")
        assert len(agent.transactions) == 1, "the in-dialog OPTIONS only; the probe: stateless"


async def test_a_call_in_progress_goes_on_while_draining_and_ends_with_its_bye(
    phone: Phone,
) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        await until(agent, lambda s: s.calls_started == 1)

        agent.drain()
        caller.send(caller.invite(f"z9hG4bK-{caller.call_id}-reinv", cseq=2, to_tag=caller.to_tag))
        assert await phone.statuses(2) == [100, 200], "a re-INVITE of the call is answered"
        caller.send(caller.ack(cseq=2))
        caller.send(caller.in_dialog("INFO", 3))
        assert await phone.statuses(1) == [200]
        assert not await agent.wait_until_idle(IDLE_WAIT_S), "the call is still there"

        idle = asyncio.create_task(agent.wait_until_idle(WAIT_S))
        caller.send(caller.in_dialog("BYE", 4))
        assert await phone.statuses(1) == [200]
        assert await asyncio.wait_for(idle, WAIT_S)

        assert record(agent).reason == "caller_hung_up" and agent.stats.active_calls == 0
        assert agent.stats.rejected.get("draining", 0) == 0 and agent.stats.stray_acks == 0


async def test_a_call_ringing_when_the_drain_starts_is_answered(phone: Phone) -> None:
    async with running(ring_s=0.3) as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.invite())
        assert await phone.statuses(2) == [100, 180]

        agent.drain()
        ok = await phone.response()
        assert ok.status == 200
        caller.to_tag = ok.to_addr.tag
        caller.send(caller.ack())
        await until(agent, lambda s: s.calls_started == 1)
        caller.send(caller.in_dialog("BYE", 2))
        assert await phone.statuses(1) == [200]
        assert await agent.wait_until_idle(WAIT_S)


async def test_a_call_ringing_when_the_drain_starts_can_still_be_cancelled(phone: Phone) -> None:
    async with running(ring_s=5.0) as agent:
        caller = Caller(phone, agent.local_address)
        caller.send(caller.invite())
        assert await phone.statuses(2) == [100, 180]

        agent.drain()
        caller.send(caller.cancel())
        cancel_ok, terminated = await phone.response(), await phone.response()

        assert (cancel_ok.status, cancel_ok.cseq.method) == (200, "CANCEL")
        assert (terminated.status, terminated.cseq.method) == (487, "INVITE")
        assert await agent.wait_until_idle(WAIT_S)
        assert agent.stats.cancelled == 1


async def test_waiting_until_idle_without_calls_returns_at_once() -> None:
    async with running() as agent:
        agent.drain()
        assert await asyncio.wait_for(agent.wait_until_idle(0), WAIT_S)


async def test_closing_after_a_drain_that_timed_out_ends_the_remaining_call_with_bye(
    phone: Phone,
) -> None:
    async with running() as agent:
        caller = Caller(phone, agent.local_address)
        await caller.connected()
        await until(agent, lambda s: s.calls_started == 1)
        agent.drain()
        assert not await agent.wait_until_idle(IDLE_WAIT_S)

        closing = asyncio.create_task(agent.close())
        bye = await phone.request()
        caller.send(reply(bye, 200))
        await asyncio.wait_for(closing, WAIT_S)

        assert bye.method == "BYE" and record(agent).reason == "shutdown"
        assert agent.state is SipAgentState.CLOSING


async def test_the_state_only_moves_forward() -> None:
    async with running() as agent:
        seen = [agent.state]
        agent.drain()
        agent.drain()  # a second `triage drain`: nothing more happens
        seen.append(agent.state)
        await agent.close()
        agent.drain()
        seen.append(agent.state)
    assert seen == [SipAgentState.OPEN, SipAgentState.DRAINING, SipAgentState.CLOSING]
