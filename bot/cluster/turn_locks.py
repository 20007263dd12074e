"""``RedisTurnLocks``: a conversation's turns one at a time across the nodes of a cluster.

On a node, the turns of a conversation first queue on a local ``asyncio.Lock`` (so a node asks
Redis once per turn, not once per waiter); the holder then takes the Redis key
``triage:turn:<namespace>:<conversation>`` with ``SET NX PX`` and a random token, renews it while
the turn runs and deletes it only if it still holds it (a Lua compare-and-delete). A node that
dies holding it lets it lapse after ``ttl_s``. A turn that cannot have the lock within ``wait_s``
raises ``TurnBusy``: the message was not stored, and the client sends it again.

While Redis cannot be reached the lock is local only (logged): a customer's socket is on one node,
so what is lost is only the guarantee for two nodes working on one conversation at the same
moment, which needs a failover during the outage; turns go on rather than stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.conversation.turn_locks import LocalTurnLocks, TurnBusy

log = logging.getLogger(__name__)

KEY_PREFIX = "triage:turn:"
TTL_S = 3.0  # renewed every second while held; a dead holder's lapses within 3 s
RETRY_S = (0.005, 0.01, 0.02, 0.05, 0.1)
RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class RedisTurnLocks:
    def __init__(
        self,
        redis: aioredis.Redis,
        node_id: str,
        wait_s: float,
        ttl_s: float = TTL_S,
        namespace: str = "default",
    ) -> None:
        self.redis = redis
        self.prefix = f"{KEY_PREFIX}{namespace}:"
        self.node_id = node_id
        self.wait_s = wait_s
        self.ttl_s = ttl_s
        self.local = LocalTurnLocks()
        self.degraded = 0  # turns that ran under the local lock only (Redis unreachable)

    @contextlib.asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        async with self.local.hold(conversation_id):
            key = self.prefix + conversation_id
            token = f"{self.node_id}:{secrets.token_hex(8)}"
            held = await self._acquire(key, token)
            renewal = asyncio.create_task(self._renew(key, token)) if held else None
            try:
                yield
            finally:
                if renewal is not None:
                    renewal.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewal
                if held:
                    with contextlib.suppress(RedisError, OSError):
                        await self.redis.eval(RELEASE, 1, key, token)

    async def _acquire(self, key: str, token: str) -> bool:
        """True once held; False if Redis is unreachable (local lock only); TurnBusy after
        the bounded wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        attempt = 0
        ttl_ms = int(self.ttl_s * 1000)
        while True:
            try:
                if await self.redis.set(key, token, nx=True, px=ttl_ms):
                    return True
            except (RedisError, OSError):
                self.degraded += 1
                log.warning("turn lock taken on this node only: Redis unreachable")
                return False
            if loop.time() >= deadline:
                raise TurnBusy("another node is still answering this conversation")
            await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1

    async def _renew(self, key: str, token: str) -> None:
        ttl_ms = int(self.ttl_s * 1000)
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            with contextlib.suppress(RedisError, OSError):
                await self.redis.eval(RENEW, 1, key, token, ttl_ms)
