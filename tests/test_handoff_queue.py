"""The durable handoff queue on SQLite and PostgreSQL: order, offers, races, transitions."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import utcnow
from bot.errors import Conflict, NotFound
from bot.handoff.state import (
    ABANDON,
    ACCEPT,
    CLOSE,
    EXPIRE_OFFER,
    OFFER,
    RELEASE,
    TRANSFER,
    HandoffState,
)
from bot.store.protocols import Actor, NewHandoff
from bot.store.sql.handoffs import SqlHandoffs
from bot.store.sql.store import SqlStore
from bot.store.sql.tables import Handoff
from bot.store.sql.webhook_outbox import WebhookOutbox

T0 = utcnow() - timedelta(minutes=30)


async def enqueue(
    store: SqlStore, *, queue: str = "billing", priority: int = 0, minute: int = 0
) -> Handoff:
    conversation_id = f"q-{uuid.uuid4().hex[:12]}"
    await store.conversations.ensure_conversation(conversation_id, "chat", "it")
    at = T0 + timedelta(minutes=minute)
    new = NewHandoff(
        id=str(uuid.uuid4()),
        conversation_id=conversation_id,
        customer_id=None,
        queue=queue,
        topic=queue,
        priority=priority,
        reason="explicit_request",
        mode="live",
        state="queued",
        envelope={"summary": "test"},
        created_at=at,
        channel="chat",
        language="it",
        turn_message=None,
    )
    return await store.handoffs.add_handoff(new, conversation_state="queued")


def agent(name: str, *queues: str) -> Actor:
    return Actor(name, frozenset(queues))


async def test_waiting_order_is_fifo_within_priority(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    first = await enqueue(store, minute=0)
    vip = await enqueue(store, priority=2, minute=1)
    last = await enqueue(store, minute=2)
    other_queue = await enqueue(store, queue="technical", minute=-5)
    order = [h.id for h in await q.waiting(["billing"])]
    assert order == [vip.id, first.id, last.id]
    assert [await q.position(h) for h in (vip, first, last, other_queue)] == [1, 2, 3, 1]


async def test_expired_offer_goes_back_to_its_original_position(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    first, second, third = [await enqueue(store, minute=m) for m in range(3)]
    now = utcnow()
    await q.apply(
        second.id,
        OFFER,
        agent("anna", "billing"),
        values={"offered_to": "anna", "offer_expires_at": now + timedelta(seconds=20)},
    )
    assert await q.head(["billing"]) is not None
    assert (await q.head(["billing"])).id == first.id  # type: ignore[union-attr]
    assert await q.expired_offers(now) == []
    assert await q.expired_offers(now + timedelta(seconds=21)) == [second.id]
    back = await q.apply(second.id, EXPIRE_OFFER, Actor.system())
    assert (back.state, back.offered_to) == (HandoffState.QUEUED, None)
    assert [h.id for h in await q.waiting(["billing"])] == [first.id, second.id, third.id]


async def test_an_offer_reserves_the_customer_for_its_agent(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    h = await enqueue(store)
    expires = utcnow() + timedelta(seconds=30)
    await q.apply(
        h.id, OFFER, Actor.system(), values={"offered_to": "anna", "offer_expires_at": expires}
    )
    with pytest.raises(Conflict):
        await q.apply(h.id, ACCEPT, agent("bruno", "billing"))
    accepted = await q.apply(h.id, ACCEPT, agent("anna", "billing"))
    assert (accepted.state, accepted.agent_id) == (HandoffState.ACCEPTED, "anna")
    conversation = await store.conversations.get_conversation(h.conversation_id)
    assert conversation.state == "with_agent"


async def test_two_agents_accepting_at_once_exactly_one_wins(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    handoffs = [await enqueue(store, minute=m) for m in range(5)]
    names = [f"agent{i}" for i in range(6)]
    for h in handoffs:
        results = await asyncio.gather(
            *(q.apply(h.id, ACCEPT, agent(n, "billing")) for n in names), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, Handoff)]
        losers = [r for r in results if isinstance(r, Conflict)]
        assert (len(winners), len(losers)) == (1, len(names) - 1), results
        stored = await store.handoffs.get_handoff(h.id)
        assert stored is not None and stored.agent_id == winners[0].agent_id
        accepts = [e for e in await q.events(h.id) if e.state == "accepted"]
        assert len(accepts) == 1


async def test_agent_cannot_accept_outside_their_queues(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    h = await enqueue(store, queue="retention")
    with pytest.raises(Conflict):
        await q.apply(h.id, ACCEPT, agent("anna", "billing"))
    with pytest.raises(NotFound):
        await q.apply("no-such-id", ACCEPT, agent("anna", "billing"))


async def test_only_the_accepting_agent_may_close(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    h = await enqueue(store)
    await q.apply(h.id, ACCEPT, agent("anna", "billing"))
    with pytest.raises(Conflict):
        await q.apply(h.id, CLOSE, agent("bruno", "billing"), must_own=True)
    closed = await q.apply(
        h.id, CLOSE, agent("anna", "billing"), must_own=True, values={"disposition": "resolved"}
    )
    assert (closed.state, closed.disposition) == (HandoffState.CLOSED, "resolved")
    assert closed.ended_at is not None
    conversation = await store.conversations.get_conversation(h.conversation_id)
    assert (conversation.state, conversation.closed_at is not None) == ("closed", True)
    with pytest.raises(Conflict):  # closed is final
        await q.apply(h.id, ACCEPT, agent("anna", "billing"))


async def test_transfer_keeps_the_place_earned_by_waiting(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    early = await enqueue(store, minute=0)
    waiting_tech = await enqueue(store, queue="technical", minute=5)
    await q.apply(early.id, ACCEPT, agent("anna", "billing"))
    moved = await q.apply(
        early.id,
        TRANSFER,
        agent("anna", "billing"),
        must_own=True,
        values={"queue": "technical"},
        detail={"note": "router fault", "from_queue": "billing"},
    )
    assert (moved.state, moved.queue, moved.agent_id) == (HandoffState.QUEUED, "technical", None)
    assert [h.id for h in await q.waiting(["technical"])] == [early.id, waiting_tech.id]
    events = await q.events(early.id)
    assert [e.state for e in events] == ["queued", "accepted", "queued"]
    assert events[-1].detail["note"] == "router fault"
    assert events[-1].queue == "technical"
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))


async def test_release_hands_the_conversation_back_to_the_bot(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    h = await enqueue(store)
    await q.apply(h.id, ACCEPT, agent("anna", "billing"))
    await q.apply(h.id, RELEASE, agent("anna", "billing"), values={"disposition": "returned"})
    assert (await store.conversations.get_conversation(h.conversation_id)).state == "bot"
    assert await q.active_for_conversation(h.conversation_id) is None


async def test_abandon_only_while_waiting(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    waiting, talking = await enqueue(store), await enqueue(store, minute=1)
    await q.apply(talking.id, ACCEPT, agent("anna", "billing"))
    gone = await q.apply(waiting.id, ABANDON, Actor.system())
    assert gone.state == HandoffState.ABANDONED
    with pytest.raises(Conflict):
        await q.apply(talking.id, ABANDON, Actor.system())
    assert await q.waiting() == []


async def test_mean_handle_time_comes_from_closed_handoffs(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    assert await q.mean_handle_time("billing") is None
    for minutes in (2, 4):
        h = await enqueue(store)
        start = utcnow()
        await q.apply(h.id, ACCEPT, agent("anna", "billing"), now=start)
        await q.apply(h.id, CLOSE, agent("anna", "billing"), now=start + timedelta(minutes=minutes))
    mean = await q.mean_handle_time("billing")
    assert mean is not None and abs(mean.total_seconds() - 180) < 1


async def test_agent_load_counts_accepted_and_offered(store: SqlStore) -> None:
    q = SqlHandoffs(store)
    a, b, c = [await enqueue(store, minute=m) for m in range(3)]
    await q.apply(a.id, ACCEPT, agent("anna", "billing"))
    await q.apply(
        b.id,
        OFFER,
        Actor.system(),
        values={"offered_to": "anna", "offer_expires_at": utcnow() + timedelta(seconds=9)},
    )
    assert await q.load_of("anna") == (1, 1)
    assert {h.id for h in await q.of_agent("anna")} == {a.id, b.id}
    assert await q.load_of("bruno") == (0, 0)
    assert c.id in {h.id for h in await q.waiting()}


async def test_waiting_customers_survive_a_reopen_in_the_same_order(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///" + str(tmp_path / "restart.db")
    store = await SqlStore.open(url)
    made = [await enqueue(store, priority=p, minute=m) for m, p in ((0, 0), (1, 1), (2, 0))]
    before = [h.id for h in await SqlHandoffs(store).waiting()]
    await store.close()
    reopened = await SqlStore.open(url)
    try:
        after = await SqlHandoffs(reopened).waiting()
        assert [h.id for h in after] == before == [made[1].id, made[0].id, made[2].id]
        assert all(h.envelope == {"summary": "test"} for h in after)
    finally:
        await reopened.close()


async def test_webhook_outbox_lists_the_events_after_the_cursor_in_order(store: SqlStore) -> None:
    before = await enqueue(store)  # written before the receiver was configured: never sent
    outbox = WebhookOutbox(store, "http://127.0.0.1:9/crm")
    start = await outbox.cursor()
    q = SqlHandoffs(store)
    handoff = await enqueue(store)
    await q.apply(handoff.id, OFFER, Actor.system(), values={"offered_to": "a1"})  # no webhook
    await q.apply(handoff.id, ACCEPT, agent("a1", "billing"))
    await q.apply(handoff.id, CLOSE, agent("a1", "billing"), must_own=True)
    pending = await outbox.pending(start)
    assert [(p.handoff_id, p.event, p.agent_id) for p in pending] == [
        (handoff.id, "handoff.queued", None),
        (handoff.id, "handoff.accepted", "a1"),
        (handoff.id, "handoff.closed", "a1"),
    ]
    assert before.id not in {p.handoff_id for p in pending}
    await outbox.advance(pending[1].event_id)
    await outbox.advance(pending[0].event_id)  # never moves back
    again = WebhookOutbox(store, "http://127.0.0.1:9/crm")  # as after a restart
    assert await again.cursor() == pending[1].event_id
    assert [p.event for p in await again.pending(await again.cursor())] == ["handoff.closed"]
    assert await again.newest() == pending[2].event_id
