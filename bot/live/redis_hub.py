"""``RedisHub``: the ``Hub`` of a cluster, over Redis pub/sub (redis-py's asyncio client).

Each node delivers to its own sockets through a ``MemoryHub`` and publishes what it delivered
for the other nodes, after the commit, on channels per conversation (``triage:<ns>:c:<id>``),
queue (``triage:<ns>:q:<queue>``) and agent (``triage:<ns>:a:<id>``), plus ``triage:<ns>:all``
for console events that concern everyone and for resynchronisation. A publication carries
ids, never the only copy of anything:

* a message carries its ``seq`` (its id in the store); the receiving node reads the messages its
  sockets have not seen from the store (``LiveReader``) and delivers them in order;
* a notice that the store can give again (queue position, agent joined or left, typing, closed,
  "queues changed") travels as it is: a reconnecting client asks the store for the state.

Each node keeps one subscriber connection, subscribed to the channels its sockets need. After a
Redis restart or a network cut it reconnects, resubscribes and catches up: every local
conversation reads what it missed from the store by its last ``seq``, and every console is
dropped, so it reconnects and fetches its lists again. A publication lost while Redis was away
therefore delays a message and never loses it. Publications of one node go out in order, in one
pipelined round trip per batch; consecutive messages of a conversation in a batch become one
publication (the receiver reads them all).

Presence (which conversations and consoles have a socket open somewhere) is kept in Redis hashes
that each node refreshes every ``PRESENCE_REFRESH_S`` with a time to live, so a node that dies
stops counting after ``PRESENCE_TTL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.live.hub import Frame, LiveReader, Subscription, Wants
from bot.live.memory import MemoryHub

log = logging.getLogger(__name__)

PREFIX = "triage:"
PRESENCE_REFRESH_S = 5.0
PRESENCE_TTL_S = 15.0
LEFT_KEPT_S = 86400
POLL_S = 0.05  # the subscriber applies (un)subscriptions between reads this often
RECONNECT_S = (0.2, 0.5, 1.0, 2.0)
SEEN_PUBLICATIONS = 2048  # console publications sent on two channels are delivered once


@dataclass(frozen=True)
class Names:
    """The channels and keys of one cluster: ``triage:<namespace>:...``, so that two clusters
    (a test beside a demo, say) on one Redis never hear each other (pub/sub ignores the
    database number)."""

    prefix: str

    @classmethod
    def of(cls, namespace: str) -> Names:
        return cls(f"{PREFIX}{namespace}:")

    @property
    def all(self) -> str:
        return self.prefix + "all"

    def conversation(self, conversation_id: str) -> str:
        return f"{self.prefix}c:{conversation_id}"

    def queue(self, queue: str) -> str:
        return f"{self.prefix}q:{queue}"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}a:{agent_id}"

    def presence(self, kind: str, ident: str) -> str:
        return f"{self.prefix}live:{kind}:{ident}"


@dataclass
class _Publication:
    channels: tuple[str, ...]
    body: dict[str, Any]


class RedisHub:
    def __init__(
        self, url: str, node_id: str, queues: Collection[str], namespace: str = "default"
    ) -> None:
        self.local = MemoryHub()
        self.names = Names.of(namespace)
        self.node_id = node_id
        self.queues = tuple(queues)
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )
        self.published = 0  # PUBLISH commands sent (the cluster bench counts them)
        self.published_bytes = 0  # their payloads' bytes
        self._reader: LiveReader | None = None
        self._out: list[_Publication | tuple[str, str, str]] = []
        self._out_ready = asyncio.Event()
        self._counter = itertools.count(1)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._subscribed: set[str] = set()
        self._dirty = True  # the channels the local sockets need may have changed
        self._connected = False
        self._lost_publications = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started_wall = time.time()
        self.on_state: Callable[[bool], None] = lambda up: None  # the node's readiness

    # lifecycle

    async def start(self, reader: LiveReader) -> None:
        self._reader = reader
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="hub-publisher"),
            asyncio.create_task(self._subscribe_loop(), name="hub-subscriber"),
            asyncio.create_task(self._presence_loop(), name="hub-presence"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._forget_presence()
        await self.redis.aclose()

    def ready(self) -> bool:
        return self._connected

    # customers

    def join_conversation(self, conversation_id: str) -> Subscription:
        sub = self.local.join_conversation(conversation_id)
        self._dirty = True
        self._queue_op("join", "c", conversation_id)
        return sub

    def leave_conversation(self, conversation_id: str, sub: Subscription) -> None:
        self.local.leave_conversation(conversation_id, sub)
        if not self.local.is_connected(conversation_id):
            self._dirty = True
            self._queue_op("leave", "c", conversation_id)

    async def connected(self, conversation_ids: Collection[str]) -> set[str]:
        ids = list(conversation_ids)
        try:
            alive = await self._alive("c", ids)
        except (RedisError, OSError):
            return set(ids)  # unknown: better a queue update too many than none
        return alive | await self.local.connected(ids)

    async def absent_for_s(self, conversation_id: str) -> float:
        if self.local.is_connected(conversation_id):
            return 0.0
        try:
            if await self._alive("c", [conversation_id]):
                return 0.0
            left = await self.redis.get(self.names.presence("left", conversation_id))
        except (RedisError, OSError):
            return 0.0  # unknown: nobody is abandoned while Redis is away
        since = float(left) if left else self._started_wall
        return max(0.0, time.time() - since)

    def to_conversation(self, conversation_id: str, frame: Frame) -> None:
        self.local.to_conversation(conversation_id, frame)
        body: dict[str, Any] = {"c": conversation_id}
        if frame.get("type") == "message" and isinstance(frame.get("seq"), int):
            body.update(k="m", s=frame["seq"])
        else:
            body.update(k="f", f=frame)
        self._publish((self.names.conversation(conversation_id),), body)

    # consoles

    def join_consoles(self, agent_id: str, wants: Wants) -> Subscription:
        sub = self.local.join_consoles(agent_id, wants)
        self._dirty = True
        self._queue_op("join", "a", agent_id)
        return sub

    async def console_open(self, agent_id: str) -> bool:
        if self.local.local_console_open(agent_id):
            return True
        try:
            return bool(await self._alive("a", [agent_id]))
        except (RedisError, OSError):
            return False

    def leave_consoles(self, sub: Subscription) -> None:
        self.local.leave_consoles(sub)
        if sub.agent_id is not None and not self.local.local_console_open(sub.agent_id):
            self._dirty = True
            self._queue_op("leave", "a", sub.agent_id)

    def to_consoles(
        self, frame: Frame, *, queue: str | None = None, agent_id: str | None = None
    ) -> None:
        self.local.to_consoles(frame, queue=queue, agent_id=agent_id)
        body: dict[str, Any] = {"q": queue, "a": agent_id}
        handoff_id = frame.get("handoff_id")
        if frame.get("type") == "message" and isinstance(frame.get("seq"), int) and handoff_id:
            body.update(k="m", s=frame["seq"], h=handoff_id)
        else:
            body.update(k="f", f=frame)
        channels = tuple(
            c
            for c in (
                self.names.queue(queue) if queue else None,
                self.names.agent(agent_id) if agent_id else None,
            )
            if c
        )
        self._publish(channels or (self.names.all,), body)

    # publishing

    def _publish(self, channels: tuple[str, ...], body: dict[str, Any]) -> None:
        body["o"] = self.node_id
        body["i"] = f"{self.node_id}:{next(self._counter)}"
        self._out.append(_Publication(channels, body))
        self._out_ready.set()

    def _queue_op(self, op: str, kind: str, ident: str) -> None:
        self._out.append((op, kind, ident))
        self._out_ready.set()

    async def _publish_loop(self) -> None:
        attempt = 0
        while True:
            await self._out_ready.wait()
            self._out_ready.clear()
            batch, self._out = self._out, []
            try:
                await self._send(batch)
                if self._lost_publications:  # tell every node to read again what it missed
                    self._lost_publications = False
                    resync = json.dumps({"k": "resync", "o": self.node_id})
                    await self.redis.publish(self.names.all, resync)
                attempt = 0
            except (RedisError, OSError):
                # the store has everything: the other nodes catch up after the resync
                self._lost_publications = True
                log.warning("live publications to the other nodes failed; Redis unreachable")
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1

    async def _send(self, batch: list[_Publication | tuple[str, str, str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        now = time.time()
        count = size = 0
        for item in _coalesce(batch):
            if isinstance(item, _Publication):
                data = json.dumps(item.body, separators=(",", ":"))
                for channel in item.channels:
                    pipe.publish(channel, data)
                    count += 1
                    size += len(data) + len(channel)
                continue
            op, kind, ident = item
            key = self.names.presence(kind, ident)
            if op == "join":
                pipe.hset(key, self.node_id, now + PRESENCE_TTL_S)
                pipe.pexpire(key, int(PRESENCE_TTL_S * 1000))
            else:
                pipe.hdel(key, self.node_id)
                if kind == "c":
                    pipe.set(self.names.presence("left", ident), now, ex=LEFT_KEPT_S)
        if len(pipe):
            await pipe.execute()
        self.published += count
        self.published_bytes += size

    # presence

    async def _alive(self, kind: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for ident in ids:
            pipe.hvals(self.names.presence(kind, ident))
        now = time.time()
        results = await pipe.execute()
        return {
            ident for ident, values in zip(ids, results, strict=True)
            if any(float(v) > now for v in values)
        }

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH_S)
            for ident in self.local.local_conversations():
                self._queue_op("join", "c", ident)
            for agent in self.local.local_console_agents():
                self._queue_op("join", "a", agent)

    async def _forget_presence(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for ident in self.local.local_conversations():
            pipe.hdel(self.names.presence("c", ident), self.node_id)
        for agent in self.local.local_console_agents():
            pipe.hdel(self.names.presence("a", agent), self.node_id)
        if len(pipe):
            await pipe.execute()

    # subscribing

    def _wanted(self) -> set[str]:
        wanted = {self.names.all}
        wanted |= {self.names.conversation(c) for c in self.local.local_conversations()}
        agents = self.local.local_console_agents()
        if agents:
            wanted |= {self.names.agent(a) for a in agents}
            wanted |= {self.names.queue(q) for q in self.queues}
        return wanted

    async def _subscribe_loop(self) -> None:
        attempt = 0
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                self._subscribed = set()
                self._dirty = True
                await self._follow(pubsub)
                if not first:  # what was published while we were away is in the store
                    await self._resync_local()
                first = False
                self._connected = True
                self.on_state(True)
                attempt = 0
                while True:
                    await self._follow(pubsub)
                    message = await pubsub.get_message(timeout=POLL_S)
                    if message is not None and message.get("type") == "message":
                        await self._on_publication(message["data"])
            except (RedisError, OSError):
                if self._connected:
                    log.warning("lost the live subscription to Redis; reconnecting")
                self._connected = False
                self.on_state(False)
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _follow(self, pubsub: Any) -> None:
        """(Un)subscribe to what the local sockets need now; catch up the conversations newly
        followed (a message published before the subscription took effect is in the store)."""
        if not self._dirty:
            return
        self._dirty = False
        wanted = self._wanted()
        new = wanted - self._subscribed
        gone = self._subscribed - wanted
        if new:
            await pubsub.subscribe(*sorted(new))
        if gone:
            await pubsub.unsubscribe(*sorted(gone))
        self._subscribed = wanted
        for channel in new:
            conversation = self.names.conversation("")
            if channel.startswith(conversation):
                await self._catch_up(channel.removeprefix(conversation))

    async def _on_publication(self, data: bytes | str) -> None:
        try:
            body = json.loads(data)
        except ValueError:
            log.warning("ignored a live publication that is not JSON")
            return
        if not isinstance(body, dict) or body.get("o") == self.node_id:
            return
        kind = body.get("k")
        if kind == "resync":
            await self._resync_local()
            return
        if self._already_seen(body.get("i")):
            return
        conversation_id = body.get("c")
        if isinstance(conversation_id, str):
            if kind == "m" and isinstance(body.get("s"), int):
                await self._catch_up(conversation_id, body["s"])
            elif kind == "f" and isinstance(body.get("f"), dict):
                self.local.to_conversation(conversation_id, body["f"])
            return
        queue, agent = body.get("q"), body.get("a")
        frame: Frame | None = body.get("f") if kind == "f" else None
        if kind == "m" and isinstance(body.get("s"), int) and self._reader is not None:
            frame = await self._reader.console_message(body["s"], str(body.get("h")))
        if isinstance(frame, dict):
            self.local.to_consoles(frame, queue=queue, agent_id=agent)

    def _already_seen(self, publication_id: Any) -> bool:
        if not isinstance(publication_id, str):
            return False
        if publication_id in self._seen:
            return True
        self._seen[publication_id] = None
        if len(self._seen) > SEEN_PUBLICATIONS:
            self._seen.popitem(last=False)
        return False

    async def _catch_up(self, conversation_id: str, seq: int | None = None) -> None:
        """Deliver to the local sockets of the conversation the messages they have not seen."""
        subs = self.local.subscriptions_of(conversation_id)
        if not subs or self._reader is None:
            return
        after = min(sub.last_seq for sub in subs)
        if seq is not None:
            after = min(after, seq - 1)
        frames = await self._reader.messages_after(conversation_id, after)
        for sub in subs:
            for frame in frames:
                sub.offer(frame)

    async def _resync_local(self) -> None:
        """After an outage: every local conversation reads what it missed and its status again;
        every console reconnects and fetches its lists again."""
        assert self._reader is not None
        for conversation_id in self.local.local_conversations():
            await self._catch_up(conversation_id)
            for frame in await self._reader.status_frames(conversation_id):
                self.local.to_conversation(conversation_id, frame)
        self.local.drop_consoles()


def _coalesce(
    batch: list[_Publication | tuple[str, str, str]],
) -> list[_Publication | tuple[str, str, str]]:
    """Consecutive message publications of one conversation become the last of them (the
    receiver reads every message after what it has seen)."""
    out: list[_Publication | tuple[str, str, str]] = []
    for item in batch:
        previous = out[-1] if out else None
        if (
            isinstance(item, _Publication)
            and isinstance(previous, _Publication)
            and item.body.get("k") == "m"
            and previous.body.get("k") == "m"
            and "c" in item.body
            and item.channels == previous.channels
        ):
            out[-1] = item
            continue
        out.append(item)
    return out
