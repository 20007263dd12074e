"""``RasaHttpClient``: the NLU seam over Rasa's HTTP API on loopback.

With several Rasa processes (workers), a conversation always goes to the same one, chosen by a
stable hash of its id: each worker keeps the trackers of its conversations in memory
(``triage_rasa.tracker_store``), and Rasa's per-conversation lock only holds within a process.
Parsing outside a conversation goes to the workers in turn.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.errors import NluTimeout, NluUnavailable
from bot.nlu.client import ParseResult, TurnOutput
from bot.nlu.parsing import parse_result_from_rasa, replies_from_rasa

# Rasa handles one message at a time per process: more requests in flight only make each of
# them slower. Further turns wait here, before their time-out starts, instead of inside Rasa.
MAX_IN_FLIGHT = 4
TURN_PATH = "/webhooks/triage/webhook"


class RasaHttpClient:
    def __init__(
        self,
        base_urls: str | list[str],
        timeout_s: float = 10.0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("at least one Rasa URL is needed")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.base_url = self.base_urls[0]
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = [asyncio.Semaphore(max_in_flight) for _ in self.base_urls]
        self._next_worker = itertools.cycle(range(len(self.base_urls)))

    def worker_for(self, conversation_id: str) -> int:
        """The worker that owns a conversation (stable across gateway restarts)."""
        return zlib.crc32(conversation_id.encode("utf-8")) % len(self.base_urls)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=64)
            )
        return self._session

    async def _request(self, worker: int, method: str, path: str, json: Any = None) -> Any:
        base_url = self.base_urls[worker]
        url = base_url + path
        try:
            async with (
                self._in_flight[worker],
                self._http().request(method, url, json=json) as resp,
            ):
                if resp.status >= 400:
                    body = (await resp.text())[:300]
                    raise NluUnavailable(f"Rasa answered {resp.status} to {method} {path}: {body}")
                try:
                    return await resp.json(content_type=None)
                except ValueError as exc:
                    raise NluUnavailable(
                        f"Rasa answered {method} {path} with invalid JSON"
                    ) from exc
        except TimeoutError as exc:
            raise NluTimeout(f"Rasa did not answer {method} {path} in time") from exc
        except aiohttp.ClientError as exc:
            raise NluUnavailable(f"Rasa is not reachable at {base_url}: {exc}") from exc

    async def parse(self, text: str) -> ParseResult:
        data = await self._request(next(self._next_worker), "POST", "/model/parse", {"text": text})
        return parse_result_from_rasa(data, text)

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        payload: dict[str, Any] = {
            "sender": conversation_id,
            "message": text,
            "metadata": metadata or {},
        }
        if message_key is not None:
            payload["message_id"] = message_key
        # The project's own channel (triage_rasa.channel): the replies and the tracker's
        # state after the turn in one answer.
        answer = await self._request(self.worker_for(conversation_id), "POST", TURN_PATH, payload)
        if not isinstance(answer, dict) or not isinstance(answer.get("messages"), list):
            raise NluUnavailable("Rasa's triage channel answered without a list of messages")
        latest = answer.get("latest_message") or {}
        slots = answer.get("slots") or {}
        if not isinstance(latest, dict) or not isinstance(slots, dict):
            raise NluUnavailable("Rasa's triage channel answered a malformed tracker state")
        loop = answer.get("active_loop")
        return TurnOutput(
            replies=replies_from_rasa(answer["messages"]),
            parse=parse_result_from_rasa(latest, text),
            slots=dict(slots),
            active_loop=loop if isinstance(loop, str) else None,
        )

    async def set_slots(self, conversation_id: str, slots: dict[str, Any]) -> None:
        events = [{"event": "slot", "name": k, "value": v} for k, v in slots.items()]
        await self._request(
            self.worker_for(conversation_id),
            "POST",
            f"/conversations/{quote(conversation_id, safe='')}/tracker/events?include_events=NONE",
            events,
        )

    async def is_ready(self) -> bool:
        """Whether every worker answers and has a model loaded."""
        ready = await asyncio.gather(*(self._worker_ready(w) for w in range(len(self.base_urls))))
        return all(ready)

    async def _worker_ready(self, worker: int) -> bool:
        try:
            status = await self._request(worker, "GET", "/status")
        except NluUnavailable:
            return False
        return isinstance(status, dict) and bool(status.get("model_file"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector's transports close before the loop moves on.
            await asyncio.sleep(0)
