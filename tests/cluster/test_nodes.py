"""A cluster of two real ``triage serve`` nodes on PostgreSQL and Redis behind HAProxy: a chat
and an agent on different nodes, a Redis restart in the middle, concurrent accepts on both
nodes, and nodes killed while they hold an offer, a form or a webhook delivery.

Needs PostgreSQL on 127.0.0.1:5432, ``redis-server`` and ``haproxy`` (``make test`` installs the
last), and the Rasa environment; without them it skips, saying which, unless
``TRIAGE_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.cluster.nodes import (
    API_TOKEN,
    OFFER_TIMEOUT_S,
    WAIT_S,
    Agent,
    Customer,
    RunningCluster,
    new_agent,
    running_cluster,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rasa]
ASK_FOR_A_PERSON = "vorrei parlare con un operatore"
# the offer, the form and the webhook tests each SIGKILL a node (the call test's comes after)
KILLS_IN_THIS_MODULE = 3


@pytest_asyncio.fixture(scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, sample_model: Path
) -> AsyncIterator[RunningCluster]:
    async with running_cluster(tmp_path_factory.mktemp("cluster"), sample_model) as running:
        yield running


@pytest_asyncio.fixture
async def http(cluster: RunningCluster) -> AsyncIterator[aiohttp.ClientSession]:
    await cluster.ensure_running()
    await cluster.cluster.wait_proxy()  # a test before may have taken nodes out of it
    # unsafe: the console's session cookie comes from an IP address (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def handoff_of(agent: Agent, base: str, conversation_id: str) -> dict[str, Any]:
    status, body = await agent.call(base, "GET", "/api/handoffs?state=waiting")
    assert status == 200, body
    (handoff,) = [h for h in body["handoffs"] if h["conversation_id"] == conversation_id]
    return handoff


async def customer_in_queue(http: aiohttp.ClientSession, base: str) -> Customer:
    customer = Customer(base, http)
    await customer.open()
    await customer.say(ASK_FOR_A_PERSON)
    await customer.next(lambda f: f["type"] == "queue")
    return customer


async def chat_with_an_agent(
    cluster: RunningCluster, http: aiohttp.ClientSession, customer_node: str, agent_node: str
) -> tuple[Customer, Agent, dict[str, Any]]:
    """A customer on one node asks for a person; an agent with a console on the other node
    sees them at the same place in the queue and accepts."""
    customer = await customer_in_queue(http, customer_node)
    agent = await new_agent(cluster, http, ["general"], capacity=3)
    await agent.open_console(agent_node)
    handoff = await handoff_of(agent, agent_node, customer.welcome["conversation_id"])
    position = [f for f in customer.frames if f["type"] == "queue"][-1]["position"]
    assert handoff["position"] == position  # the same queue on both nodes' views
    status, _ = await agent.call(agent_node, "POST", f"/api/handoffs/{handoff['id']}/accept")
    assert status == 200
    await customer.next(lambda f: f["type"] == "agent_joined")
    return customer, agent, handoff


def texts_from(frames: list[dict[str, Any]], sender: str) -> list[str]:
    return [f["text"] for f in frames if f.get("type") == "message" and f["sender"] == sender]


async def test_a_chat_on_node_a_and_its_agent_on_node_b_see_every_message_once_in_order(
    cluster: RunningCluster, http: aiohttp.ClientSession
) -> None:
    a, b = cluster.nodes
    customer, agent, handoff = await chat_with_an_agent(cluster, http, a.base, b.base)

    count = 200

    async def customer_writes() -> None:
        for i in range(count):
            await customer.say(f"cliente {i}")

    async def agent_writes() -> None:
        for i in range(count):
            status, body = await agent.call(
                b.base, "POST", f"/api/handoffs/{handoff['id']}/messages", {"text": f"agente {i}"}
            )
            assert status == 200, body

    await asyncio.gather(customer_writes(), agent_writes())
    expected_agent = [f"agente {i}" for i in range(count)]
    expected_customer = [f"cliente {i}" for i in range(count)]
    async with asyncio.timeout(WAIT_S):
        for _ in itertools.count():
            if len(texts_from(customer.frames, "agent")) >= count and len(
                texts_from(agent.console_frames, "user")
            ) >= count:
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # anything doubled would arrive now
    assert texts_from(customer.frames, "agent") == expected_agent
    assert texts_from(agent.console_frames, "user") == expected_customer
    seqs = [f["seq"] for f in customer.frames if f.get("type") == "message"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    await customer.close()
    await agent.close_console()


async def console_view(agent: Agent, base: str, conversation_id: str) -> list[str]:
    """What a console shows after a reconnect: the transcript fetched again, merged by seq with
    the frames it had (as console.js does on ``open(again)``)."""
    status, body = await agent.call(base, "GET", f"/api/conversations/{conversation_id}")
    assert status == 200, body
    by_seq = {m["seq"]: m for m in body["messages"]}
    for frame in agent.console_frames:
        if frame.get("type") == "message" and frame.get("conversation_id") == conversation_id:
            by_seq.setdefault(frame["seq"], frame)
    return [by_seq[s]["text"] for s in sorted(by_seq) if by_seq[s]["sender"] == "user"]


async def test_a_redis_restart_in_the_middle_of_a_chat_loses_and_doubles_nothing(
    cluster: RunningCluster, http: aiohttp.ClientSession
) -> None:
    a, b = cluster.nodes
    customer, agent, handoff = await chat_with_an_agent(cluster, http, a.base, b.base)
    conversation_id = customer.welcome["conversation_id"]

    async def exchange(start: int, stop: int) -> None:
        for i in range(start, stop):
            await customer.say(f"cliente {i}")
            status, body = await agent.call(
                b.base, "POST", f"/api/handoffs/{handoff['id']}/messages", {"text": f"agente {i}"}
            )
            assert status == 200, body

    await exchange(0, 20)
    restart = asyncio.create_task(cluster.redis.restart(down_s=1.0))
    await exchange(20, 40)  # some of these go out while Redis is down
    await restart
    await exchange(40, 60)
    expected = [f"agente {i}" for i in range(60)]
    async with asyncio.timeout(WAIT_S):
        for _ in itertools.count():
            if len(texts_from(customer.frames, "agent")) >= 60:
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    assert texts_from(customer.frames, "agent") == expected
    assert await console_view(agent, b.base, conversation_id) == [
        ASK_FOR_A_PERSON,
        *(f"cliente {i}" for i in range(60)),
    ]
    await customer.close()
    await agent.close_console()


async def test_fifty_concurrent_accepts_on_both_nodes_accept_each_handoff_once_within_capacity(
    cluster: RunningCluster, http: aiohttp.ClientSession
) -> None:
    customers = [await customer_in_queue(http, cluster.proxy) for _ in range(10)]
    agents = [await new_agent(cluster, http, ["general"], capacity=2) for _ in range(5)]
    any_agent = agents[0]
    handoffs = [
        (await handoff_of(any_agent, cluster.nodes[0].base, c.welcome["conversation_id"]))["id"]
        for c in customers
    ]

    async def accept(i: int) -> tuple[int, str, str]:
        agent = agents[i % len(agents)]
        node = cluster.nodes[i % 2]
        handoff_id = handoffs[i % len(handoffs)]
        status, _ = await agent.call(node.base, "POST", f"/api/handoffs/{handoff_id}/accept")
        return status, handoff_id, agent.id

    results = await asyncio.gather(*(accept(i) for i in range(50)))
    assert {status for status, _, _ in results} <= {200, 409}
    won = [(h, a) for status, h, a in results if status == 200]
    assert len({h for h, _ in won}) == len(won)  # no handoff accepted twice
    for agent in agents:
        held = [h for h, a in won if a == agent.id]
        assert len(held) <= 2  # no agent over capacity
    assert len(won) == 10  # 5 agents x 2 seats for 10 customers
    for customer in customers:
        await customer.close()


async def test_the_other_node_offers_again_what_a_killed_node_had_offered(
    cluster: RunningCluster, http: aiohttp.ClientSession
) -> None:
    agent = await new_agent(cluster, http, ["billing"], capacity=1)
    holder_name = await cluster.lease_holder("dispatcher")
    assert holder_name is not None
    holder = cluster.node(holder_name)
    survivor = cluster.other(holder)
    await agent.open_console(holder.base)
    customer = Customer(survivor.base, http)
    await customer.open()
    await customer.say("mi avete addebitato due volte la bolletta, voglio un operatore")
    offer = await agent.next_console(lambda f: f["type"] == "offer")
    await agent.close_console()
    await cluster.cluster.kill(holder)  # the node that made the offer dies with it
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    before = len(agent.console_frames)
    await agent.open_console(survivor.base)
    again = await agent.next_console(
        lambda f: f["type"] == "offer" and f["handoff_id"] == offer["handoff_id"],
        timeout_s=WAIT_S,
        after=before,
    )
    assert again["expires_at"] != offer["expires_at"]  # a new offer, not the old one resent
    assert loop.time() - killed_at < OFFER_TIMEOUT_S + 10
    await customer.close()
    await agent.close_console()


async def test_a_customer_of_a_killed_node_continues_the_form_on_the_other_one(
    cluster: RunningCluster, http: aiohttp.ClientSession
) -> None:
    doomed = cluster.nodes[0]
    customer = Customer(doomed.base, http)
    await customer.open()
    await customer.say("buongiorno, vorrei sapere quanto devo pagare")
    await customer.say("CL100001")
    asked = await customer.next(lambda f: f["type"] == "message" and "CAP" in f["text"])
    assert "84,50" not in asked["text"]
    await cluster.cluster.kill(doomed)
    resume = customer.resume()
    await customer.close()

    again = Customer(cluster.proxy, http)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await again.open(resume=resume)
    assert again.welcome["resumed"] is True
    ack = await again.say("20123")
    # the form goes on where it was, on the other node: verified, then the balance
    await again.next(
        lambda f: f["type"] == "message" and f["seq"] > ack["seq"] and "84,50" in f["text"]
    )
    assert loop.time() - started < 5.0
    await again.close()


async def test_webhooks_reach_the_receiver_in_order_when_the_sending_node_is_killed(
    cluster: RunningCluster, http: aiohttp.ClientSession
) -> None:
    from sqlalchemy import select

    from bot.store.sql.tables import HandoffEvent, Lease

    receiver = cluster.webhooks
    receiver.delay_s = 0.3  # deliveries in flight when the node dies
    try:
        already = len(receiver.events)
        customers = [await customer_in_queue(http, cluster.proxy) for _ in range(6)]
        async with asyncio.timeout(WAIT_S):
            for _ in itertools.count():
                if len(receiver.events) > already:
                    break
                await asyncio.sleep(0.05)
        async with cluster.store.session() as s:
            holder = await s.scalar(select(Lease.holder).where(Lease.name.like("webhooks:%")))
        assert holder is not None
        await cluster.cluster.kill(cluster.node(holder))
        more = [await customer_in_queue(http, cluster.proxy) for _ in range(3)]
        async with cluster.store.session() as s:
            stored = list(
                await s.scalars(
                    select(HandoffEvent.id)
                    .where(HandoffEvent.webhook.is_not(None))
                    .order_by(HandoffEvent.id)
                )
            )
        try:
            async with asyncio.timeout(90):  # the lease lapses, the other node takes over
                for _ in itertools.count():
                    if {e["event_id"] for e in receiver.events} >= set(stored):
                        break
                    await asyncio.sleep(0.1)
        except TimeoutError:
            async with cluster.store.session() as s:
                leases = (await s.execute(select(Lease.name, Lease.holder, Lease.expires_at))).all()
            missing = sorted(set(stored) - {e["event_id"] for e in receiver.events})
            raise AssertionError(
                f"events never delivered: {missing}; leases {leases}; "
                f"received {[e['event_id'] for e in receiver.events][-20:]}"
            ) from None
    finally:
        receiver.delay_s = 0.0
    received = [e["event_id"] for e in receiver.events]
    first_seen = list(dict.fromkeys(received))
    assert first_seen == sorted(first_seen), received  # in order for this receiver
    # a repeat is a delivery that a kill cut short, sent again by the next holder: at most one
    # per node killed in this module (the earlier tests' kills may have held the sender's lease)
    counts = Counter(received)
    assert max(counts.values()) <= 2, received
    assert sum(n - 1 for n in counts.values()) <= KILLS_IN_THIS_MODULE, received
    for customer in customers + more:
        await customer.close()


async def test_a_handoff_made_by_a_call_on_a_node_that_dies_stays_in_the_queue(
    cluster: RunningCluster, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    from tests.voice.test_sipp import run_sipp

    bridge = cluster.nodes[1]
    run = await run_sipp(
        "dtmf_transfer_after_prompt.xml", ("127.0.0.1", bridge.ports.sip), tmp_path, "-s", "100"
    )
    run.check()  # keyed 0: transferred to the queue with a REFER naming the handoff
    handoff_id = run.messages.split("X-Handoff-Id: ", 1)[1].split()[0]
    await cluster.cluster.kill(bridge)
    survivor = cluster.other(bridge)
    service = {"Authorization": f"Bearer {API_TOKEN}"}  # a supervisor of every queue
    async with http.get(f"{survivor.base}/api/handoffs/{handoff_id}", headers=service) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["handoff"]["state"] == "queued" and body["handoff"]["channel"] == "phone"
    assert body["envelope"]["channel"] == "phone" and body["envelope"]["queue"]
    assert body["handoff"]["position"] is not None  # still in its place in the queue
