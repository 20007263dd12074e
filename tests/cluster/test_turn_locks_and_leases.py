"""Turn locks across nodes (Redis) and leases of work done once (the store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bot.clock import utcnow
from bot.cluster.turn_locks import RedisTurnLocks
from bot.conversation.turn_locks import TurnBusy
from bot.store.sql.leases import SqlLeases
from bot.store.sql.store import SqlStore
from tests.cluster.conftest import RedisServer


@pytest_asyncio.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_turns_of_one_conversation_on_two_nodes_never_overlap(
    redis_client: aioredis.Redis,
) -> None:
    nodes = [RedisTurnLocks(redis_client, f"n{i}", wait_s=10) for i in range(2)]
    inside = 0
    overlaps = 0
    order: list[int] = []

    async def turn(i: int) -> None:
        nonlocal inside, overlaps
        async with nodes[i % 2].hold("conv"):
            inside += 1
            overlaps += inside > 1
            await asyncio.sleep(0.005)
            order.append(i)
            inside -= 1

    await asyncio.gather(*(turn(i) for i in range(40)))
    assert overlaps == 0 and sorted(order) == list(range(40))
    async with nodes[0].hold("other"), nodes[1].hold("another"):  # others never wait
        pass


async def test_a_crashed_holders_lock_lapses_and_a_live_ones_is_renewed(
    redis_client: aioredis.Redis,
) -> None:
    dead = RedisTurnLocks(redis_client, "dead", wait_s=5, ttl_s=0.6)
    assert await dead._acquire(dead.prefix + "conv", "dead:token")  # taken, never released
    other = RedisTurnLocks(redis_client, "alive", wait_s=5, ttl_s=0.6)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with other.hold("conv"):
        waited = loop.time() - started
        assert 0.3 < waited < 2.0
        await asyncio.sleep(1.5)  # longer than the time to live: renewed meanwhile
        impatient = RedisTurnLocks(redis_client, "third", wait_s=0.3, ttl_s=0.6)
        with pytest.raises(TurnBusy):
            async with impatient.hold("conv"):
                pass
    async with impatient.hold("conv"):  # released at the end of the block
        pass


async def test_without_redis_turns_go_on_under_the_local_lock(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    locks = RedisTurnLocks(client, "n", wait_s=1)
    redis_server.stop()
    try:
        async with locks.hold("conv"):
            pass
        assert locks.degraded == 1
    finally:
        await client.aclose()


async def test_a_lease_has_one_holder_until_it_lapses_or_is_released(store: SqlStore) -> None:
    leases = SqlLeases(store.db)
    now = utcnow()
    assert await leases.claim("dispatcher", "a", 5, now)
    assert not await leases.claim("dispatcher", "b", 5, now)
    assert await leases.claim("dispatcher", "a", 5, now + timedelta(seconds=4))  # renewed
    assert not await leases.claim("dispatcher", "b", 5, now + timedelta(seconds=8))
    assert await leases.claim("dispatcher", "b", 5, now + timedelta(seconds=10))  # lapsed
    assert not await leases.claim("dispatcher", "a", 5, now + timedelta(seconds=10))
    await leases.release("dispatcher", "b")
    assert await leases.claim("dispatcher", "a", 5, now + timedelta(seconds=11))


async def test_many_nodes_claiming_at_once_give_one_holder(store: SqlStore) -> None:
    leases = SqlLeases(store.db)
    now = utcnow()
    results = await asyncio.gather(
        *(leases.claim("webhooks:x", f"n{i}", 5, now) for i in range(20))
    )
    assert sum(results) == 1
