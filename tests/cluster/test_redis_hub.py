"""``RedisHub`` between two hubs standing for two nodes, on a Redis server of the test's own and
a real store: what a publication carries, catching up from the store, a Redis restart, presence,
console events on two channels delivered once."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest_asyncio
import redis.asyncio as aioredis

from bot.conversation.state import MessageStatus
from bot.handoff.desk import message_frame
from bot.live.hub import Frame, Subscription
from bot.live.redis_hub import RedisHub
from bot.store.sql.store import SqlStore
from tests.cluster.conftest import RedisServer

WAIT_S = 10.0


class StoreReader:
    """The ``LiveReader`` of the hubs: the store's messages, as the desk reads them."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.reads = 0

    async def messages_after(self, conversation_id: str, after_seq: int) -> list[Frame]:
        self.reads += 1
        rows = await self.store.conversations.messages(conversation_id, after_id=after_seq)
        return [message_frame(m) for m in rows if m.sender != "user"]

    async def console_message(self, seq: int, handoff_id: str) -> Frame | None:
        row = await self.store.conversations.message(seq)
        return None if row is None else {**message_frame(row), "handoff_id": handoff_id}

    async def status_frames(self, conversation_id: str) -> list[Frame]:
        return [{"type": "status", "conversation_id": conversation_id}]


@pytest_asyncio.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = await SqlStore.open("sqlite+aiosqlite:///" + str(tmp_path / "hub.db"))
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def hubs(
    redis_server: RedisServer, sqlite_store: SqlStore
) -> AsyncIterator[tuple[RedisHub, RedisHub, StoreReader]]:
    reader = StoreReader(sqlite_store)
    a = RedisHub(redis_server.url, "node-a", ["general", "billing"], "t")
    b = RedisHub(redis_server.url, "node-b", ["general", "billing"], "t")
    await a.start(reader)
    await b.start(reader)
    try:
        await wait_for(lambda: a.ready() and b.ready())
        yield a, b, reader
    finally:
        await a.close()
        await b.close()


async def wait_for(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.01)


def drained(sub: Subscription) -> list[Frame]:
    frames = []
    while not sub.inbox.empty():
        frames.append(sub.inbox.get_nowait())
    return frames


async def frames_until(sub: Subscription, count: int) -> list[Frame]:
    frames: list[Frame] = []
    async with asyncio.timeout(WAIT_S):
        while len(frames) < count:
            frames.append(await sub.inbox.get())
    return frames


async def bot_says(store: SqlStore, conversation_id: str, *texts: str) -> list[Frame]:
    frames = []
    for text in texts:
        row, _ = await store.conversations.add_message_once(
            conversation_id, "bot", text, MessageStatus.SENT
        )
        frames.append(message_frame(row))
    return frames


async def subscribed(hub: RedisHub, channel: str) -> None:
    """Wait until the hub's subscriber follows ``channel`` (what a new socket asks for)."""
    await wait_for(lambda: channel in hub._subscribed)


async def next_publication(pubsub: aioredis.client.PubSub) -> dict[str, bytes]:
    async with asyncio.timeout(WAIT_S):
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                return message


async def test_a_message_published_on_one_node_reaches_the_other_read_from_the_store(
    hubs: tuple[RedisHub, RedisHub, StoreReader],
    sqlite_store: SqlStore,
    redis_server: RedisServer,
) -> None:
    a, b, _ = hubs
    conversation = (await sqlite_store.conversations.ensure_conversation("c-1", "chat")).id
    sub = a.join_conversation(conversation)
    await subscribed(a, a.names.conversation(conversation))
    spy = aioredis.Redis.from_url(redis_server.url)
    pubsub = spy.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(b.names.conversation(conversation))
    try:
        (frame,) = await bot_says(sqlite_store, conversation, "Il suo codice cliente è 12345")
        b.to_conversation(conversation, frame)
        (received,) = await frames_until(sub, 1)
        assert received == frame
        published = await next_publication(pubsub)
        body = json.loads(published["data"])
        assert body["s"] == frame["seq"] and body["c"] == conversation
        assert "12345" not in published["data"].decode()  # ids only: the text stays in the store
    finally:
        await pubsub.aclose()
        await spy.aclose()


async def test_consecutive_messages_of_a_turn_are_one_publication_and_all_arrive_in_order(
    hubs: tuple[RedisHub, RedisHub, StoreReader], sqlite_store: SqlStore
) -> None:
    a, b, _ = hubs
    conversation = (await sqlite_store.conversations.ensure_conversation("c-2", "chat")).id
    sub = a.join_conversation(conversation)
    await subscribed(a, a.names.conversation(conversation))
    before = b.published
    frames = await bot_says(sqlite_store, conversation, "uno", "due", "tre")
    for frame in frames:
        b.to_conversation(conversation, frame)
    assert await frames_until(sub, 3) == frames
    assert b.published - before == 1
    await asyncio.sleep(0.2)
    assert drained(sub) == []  # nothing twice


async def test_a_message_published_before_the_subscription_took_effect_is_caught_up(
    hubs: tuple[RedisHub, RedisHub, StoreReader], sqlite_store: SqlStore
) -> None:
    a, b, _ = hubs
    conversation = (await sqlite_store.conversations.ensure_conversation("c-3", "chat")).id
    sub = a.join_conversation(conversation)
    (frame,) = await bot_says(sqlite_store, conversation, "subito")
    b.to_conversation(conversation, frame)  # a may not follow the channel yet
    assert await frames_until(sub, 1) == [frame]
    await asyncio.sleep(0.2)
    assert drained(sub) == []


async def test_after_a_redis_restart_what_was_published_meanwhile_arrives_once(
    hubs: tuple[RedisHub, RedisHub, StoreReader],
    sqlite_store: SqlStore,
    redis_server: RedisServer,
) -> None:
    a, b, _ = hubs
    conversation = (await sqlite_store.conversations.ensure_conversation("c-4", "chat")).id
    sub = a.join_conversation(conversation)
    await subscribed(a, a.names.conversation(conversation))
    (first,) = await bot_says(sqlite_store, conversation, "prima")
    b.to_conversation(conversation, first)
    assert await frames_until(sub, 1) == [first]

    redis_server.stop()
    await wait_for(lambda: not a.ready())
    (lost,) = await bot_says(sqlite_store, conversation, "durante")
    b.to_conversation(conversation, lost)  # Redis is down: this publication is lost
    await asyncio.sleep(0.3)
    redis_server.start()
    await redis_server.wait_ready()
    await wait_for(lambda: a.ready() and b.ready())
    frames = await frames_until(sub, 2)  # the lost message, then the status read again
    assert [f for f in frames if f["type"] == "message"] == [lost]
    assert {"type": "status", "conversation_id": conversation} in frames
    (after,) = await bot_says(sqlite_store, conversation, "dopo")
    b.to_conversation(conversation, after)
    assert await frames_until(sub, 1) == [after]
    await asyncio.sleep(0.3)
    assert [f for f in drained(sub) if f["type"] == "message"] == []


async def test_consoles_hear_an_event_sent_to_a_queue_and_an_agent_once_and_are_dropped_to_resync(
    hubs: tuple[RedisHub, RedisHub, StoreReader], redis_server: RedisServer
) -> None:
    a, b, _ = hubs
    console = a.join_consoles("agent-1", lambda frame, queue, agent: True)
    await subscribed(a, a.names.agent("agent-1"))
    await subscribed(a, a.names.queue("general"))
    b.to_consoles(
        {"type": "queues_changed", "handoff_id": "h-1"}, queue="general", agent_id="agent-1"
    )
    assert await frames_until(console, 1) == [{"type": "queues_changed", "handoff_id": "h-1"}]
    await asyncio.sleep(0.2)
    assert drained(console) == []

    await redis_server.restart()
    await wait_for(lambda: console.closed.is_set())  # it reconnects and fetches its lists


async def test_presence_is_seen_from_the_other_node_and_ends_when_the_socket_closes(
    hubs: tuple[RedisHub, RedisHub, StoreReader],
) -> None:
    a, b, _ = hubs
    sub = a.join_conversation("c-5")
    console = a.join_consoles("agent-2", lambda frame, queue, agent: True)
    async with asyncio.timeout(WAIT_S):
        for _ in itertools.count():
            if await b.connected(["c-5", "c-none"]) == {"c-5"} and await b.console_open("agent-2"):
                break
            await asyncio.sleep(0.02)
    assert await b.absent_for_s("c-5") == 0.0
    a.leave_conversation("c-5", sub)
    a.leave_consoles(console)
    async with asyncio.timeout(WAIT_S):
        for _ in itertools.count():
            if not await b.connected(["c-5"]) and not await b.console_open("agent-2"):
                break
            await asyncio.sleep(0.02)
    assert 0.0 <= await b.absent_for_s("c-5") < 5.0
