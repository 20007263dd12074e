"""Signed webhooks on handoff events, delivered in the background with retries.

Signature: ``X-Triage-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with
``X-Triage-Timestamp`` in Unix seconds, so a receiver can reject replays. Deliveries live in
memory: events of a crash's last seconds may be lost (the handoff itself is in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp

from bot.store.sql import utcnow

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_S = (1.0, 4.0, 15.0)
TIMEOUT_S = 5.0
QUEUE_LIMIT = 10_000


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSender:
    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        body = json.dumps(
            {"event": event, "at": utcnow().isoformat(), "handoff": payload}, sort_keys=True
        ).encode()
        try:
            self._queue.put_nowait((event, body))
        except asyncio.QueueFull:
            self.failed += 1
            log.error("webhook queue full; event dropped", extra={"event": event})

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self) -> None:
        """Wait until every queued event was delivered or given up (for tests and shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                event, body = await self._queue.get()
                try:
                    await self._deliver(session, event, body)
                finally:
                    self._queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, event: str, body: bytes) -> None:
        for attempt in range(ATTEMPTS):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Triage-Event": event,
                "X-Triage-Timestamp": timestamp,
                "X-Triage-Signature": sign(self.secret, timestamp, body),
            }
            try:
                async with session.post(self.url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        self.delivered += 1
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            log.warning(
                "webhook delivery failed",
                extra={"event": event, "problem": problem, "try": attempt},
            )
            if attempt < len(BACKOFF_S):
                await asyncio.sleep(BACKOFF_S[attempt])
        self.failed += 1
