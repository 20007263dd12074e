"""Signed webhooks on handoff events, delivered in order from the store, with retries.

Signature: ``X-Triage-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with
``X-Triage-Timestamp`` in Unix seconds, so a receiver can reject replays. The events come from
the webhook outbox (``WebhookQueue``; in SQL ``bot.store.sql.webhook_outbox``): written with the
handoff change itself, so a crash or a restart loses none; delivery is at least once (an event
whose delivery was cut short by a crash is sent again), and each body carries ``event_id`` for
receivers to drop repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time

import aiohttp

from bot.store.protocols import Leases, PendingWebhook, WebhookQueue

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_S = (1.0, 4.0, 15.0)
TIMEOUT_S = 5.0
POLL_S = 5.0  # also look for events written while nobody woke us (another process, a restart)
# the sender's lease: renewed before each event; a node killed while delivering lets it lapse, and
# the next holder sends that event again (at least once; receivers drop repeats by event_id)
LEASE_TTL_S = 15.0


class _LeaseLost(Exception):
    """Another node holds the receiver's lease now: it delivers from the stored cursor."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_body(item: PendingWebhook) -> bytes:
    return json.dumps(
        {
            "event": item.event,
            "event_id": item.event_id,
            "at": item.at.isoformat(),
            "handoff": {
                "handoff_id": item.handoff_id,
                "conversation_id": item.conversation_id,
                "queue": item.queue,
                "state": item.state,
                "agent_id": item.agent_id,
                "customer_id": item.customer_id,  # set only when verified
                "channel": item.channel,
            },
        },
        sort_keys=True,
    ).encode()


class WebhookSender:
    """Posts every handoff event of the outbox to ``url``, one at a time, in event order."""

    def __init__(
        self,
        outbox: WebhookQueue,
        secret: str,
        leases: Leases | None = None,
        node_id: str = "node",
    ) -> None:
        self.url = outbox.url
        self.secret = secret
        self.outbox = outbox
        # one sender per receiver in a cluster: the node holding the receiver's lease
        self.leases = leases
        self.node_id = node_id
        self.lease = "webhooks:" + hashlib.sha256(outbox.url.encode()).hexdigest()[:16]
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._position = 0
        self._progress = asyncio.Condition()
        self.delivered = 0
        self.failed = 0

    def wake(self) -> None:
        """New events are in the store: look now rather than at the next poll. Never blocks."""
        self._wake.set()

    async def start(self) -> None:
        self._position = await self.outbox.cursor()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leases is not None:  # another node takes over now, not at the lapse
            await self.leases.release(self.lease, self.node_id)

    async def drain(self) -> None:
        """Wait until every event stored so far was delivered or given up (tests, shutdown)."""
        target = await self.outbox.newest()
        self.wake()
        async with self._progress:
            await self._progress.wait_for(lambda: self._position >= target)

    async def _holds_lease(self) -> bool:
        if self.leases is None:
            return True
        return await self.leases.claim(self.lease, self.node_id, LEASE_TTL_S)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        held = self.leases is None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self._wake.clear()
                was_held, held = held, await self._holds_lease()
                if held and not was_held:  # another node may have delivered meanwhile
                    self._position = await self.outbox.cursor()
                batch = await self.outbox.pending(self._position) if held else []
                for item in batch:
                    try:
                        delivered = await self._deliver(session, item)
                    except _LeaseLost:
                        held = False
                        break
                    await self.outbox.advance(item.event_id, failed=not delivered)
                    async with self._progress:
                        self._position = item.event_id
                        self._progress.notify_all()
                if not batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._wake.wait(), POLL_S if held else LEASE_TTL_S / 2
                        )

    async def _deliver(self, session: aiohttp.ClientSession, item: PendingWebhook) -> bool:
        body = webhook_body(item)
        for attempt in range(ATTEMPTS):
            if not await self._holds_lease():  # renewed before every attempt
                raise _LeaseLost
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Triage-Event": item.event,
                "X-Triage-Timestamp": timestamp,
                "X-Triage-Signature": sign(self.secret, timestamp, body),
            }
            try:
                async with session.post(self.url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        self.delivered += 1
                        return True
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            log.warning(
                "webhook delivery failed",
                extra={
                    "event": item.event,
                    "event_id": item.event_id,
                    "problem": problem,
                    "try": attempt,
                },
            )
            if attempt < len(BACKOFF_S):
                await asyncio.sleep(BACKOFF_S[attempt])
        self.failed += 1
        log.error(
            "webhook given up after every retry",
            extra={"event": item.event, "event_id": item.event_id},
        )
        return False
