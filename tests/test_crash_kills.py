"""A real ``triage serve`` killed (SIGKILL) at every point of a chat customer's turn: after the
restart the acknowledged message is answered, once, and the customer is queued, once.

The customer writes "voglio parlare con un operatore" as their first message; the process kills
itself at a failpoint (``bot/failpoints.py``); a new process starts on the same database; the
customer resumes with their token and ``last_seq`` (and sends the message again, with its id,
if it was never acknowledged), as the widget does. Rasa runs in its own process that outlives
the gateway (as in the containers), so a turn it was in the middle of goes on without the
gateway and its actions fail: the case where Rasa's tracker holds a half-done turn. One case
runs Rasa supervised by the gateway, as ``make run`` does, so the kill takes Rasa down too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from bot.store.sql.store import SqlStore
from bot.store.sql.tables import Handoff, Message
from tests.gateway_process import (
    DEATH_TIMEOUT_S,
    ExternalRasa,
    Gateway,
    Ports,
    external_rasa_server,
)

pytestmark = pytest.mark.rasa

TEXT = "voglio parlare con un operatore"
QUEUED_REPLY = "La metto in contatto"  # the start of utter_handoff_queued in Italian
ANSWER_TIMEOUT_S = 60.0


@pytest_asyncio.fixture(scope="module")
async def external_rasa(
    sample_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ExternalRasa]:
    """A Rasa server that is not the gateway's child: it survives every kill below."""
    async with external_rasa_server(
        sample_model, tmp_path_factory.mktemp("external-rasa")
    ) as rasa:
        yield rasa


class Customer:
    """The widget's part of the protocol: hello (resume), message with an id, frames."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.frames: list[dict[str, Any]] = []
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: dict[str, Any] = {}

    async def connect(self, resume: dict[str, Any] | None = None) -> None:
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.base.replace("http", "ws") + "/chat/ws")
        await self.ws.send_json({"type": "hello", "v": 1, "lang": "it", "resume": resume})
        self.welcome = await self.next("welcome")

    async def next(self, kind: str | None, wait_s: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
        """The next frame of this kind (None: any), keeping every frame in ``frames``."""
        assert self.ws is not None
        try:
            async with asyncio.timeout(wait_s):
                return await self._next(kind)
        except TimeoutError:
            raise AssertionError(
                f"no {kind!r} frame in {wait_s} s; frames: {self.frames}"
            ) from None

    async def _next(self, kind: str | None) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket closed; frames so far: {self.frames}")
            frame: dict[str, Any] = json.loads(msg.data)
            self.frames.append(frame)
            if kind is None or frame["type"] == kind:
                return frame

    async def send(self, client_id: str, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_json({"type": "message", "id": client_id, "text": text})

    def seen_messages(self) -> list[dict[str, Any]]:
        shown: dict[int, dict[str, Any]] = {}
        for frame in self.frames:
            batch = frame["messages"] if frame["type"] == "history" else [frame]
            for m in batch:
                if m.get("type", "message") == "message" and "seq" in m:
                    shown.setdefault(m["seq"], m)
        return [shown[seq] for seq in sorted(shown)]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()


@dataclass(frozen=True)
class Outcome:
    statuses: list[str]
    bot_texts: list[str]
    handoffs: list[tuple[str, str]]
    rasa_user_events: int | None


async def outcome(data_dir: Path, conversation_id: str, rasa: ExternalRasa | None) -> Outcome:
    store = await SqlStore.open(f"sqlite+aiosqlite:///{data_dir / 'triage.db'}", create=False)
    try:
        rows = await store.conversations.messages(conversation_id)
        async with store.session() as s:
            handoffs = (
                await s.execute(
                    select(Handoff.queue, Handoff.state).where(
                        Handoff.conversation_id == conversation_id
                    )
                )
            ).all()
            assert await s.scalar(select(func.count()).select_from(Message)) == len(rows)
    finally:
        await store.close()
    rasa_users = None
    if rasa is not None:
        with sqlite3.connect(rasa.trackers) as db:
            (rasa_users,) = db.execute(
                "SELECT COUNT(*) FROM tracker_events WHERE sender_id = ? AND type_name = 'user'",
                (conversation_id,),
            ).fetchone()
    return Outcome(
        statuses=[m.status for m in rows if m.sender == "user"],
        bot_texts=[m.text for m in rows if m.sender == "bot"],
        handoffs=[(q, s) for q, s in handoffs],
        rasa_user_events=rasa_users,
    )


async def kill_and_resume(
    tmp_path: Path, model: Path, rasa: ExternalRasa | None, failpoint: str
) -> tuple[Customer, Outcome]:
    ports = Ports.free(action=rasa.action_port if rasa else None)
    gateway = Gateway(tmp_path / "node", ports, model, rasa)
    await gateway.start(failpoints=failpoint)
    customer = Customer(gateway.base)
    try:
        await customer.connect()
        conversation_id = customer.welcome["conversation_id"]
        token = customer.welcome["token"]  # the widget keeps it in localStorage
        await customer.send("m1", TEXT)
        acked: dict[str, Any] | None = None
        with contextlib.suppress(ConnectionError):
            acked = await customer.next("ack", wait_s=DEATH_TIMEOUT_S)
        assert await gateway.died() == -signal.SIGKILL, gateway.log_tail()
        await customer.close()

        await gateway.start()
        customer = Customer(gateway.base)
        resume = {
            "conversation_id": conversation_id,
            "token": token,
            "last_seq": acked["seq"] if acked else 0,
        }
        await customer.connect(resume=resume)
        assert customer.welcome["resumed"] is True
        if acked is None:  # never acknowledged: the widget sends it again, same id
            await customer.send("m1", TEXT)
            again = await customer.next("ack")
            assert again["id"] == "m1"
        # queued and told so, live or in the history, whatever came first
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while not (
                any(f["type"] == "queue" for f in customer.frames)
                and any(QUEUED_REPLY in m["text"] for m in customer.seen_messages())
            ):
                await customer.next(None)
        await asyncio.sleep(1.0)  # anything sent twice would arrive now
    finally:
        await customer.close()
        await gateway.stop()
    return customer, await outcome(gateway.data_dir, conversation_id, rasa)


FAILPOINTS = (
    "message_stored",
    "message_acked",
    "action_ran:action_handoff",
    "action_journaled:action_handoff",
    "turn_answered",
    "turn_recorded",
)


@pytest.mark.parametrize("failpoint", FAILPOINTS)
async def test_an_acked_message_is_answered_once_after_a_kill(
    failpoint: str, tmp_path: Path, sample_model: Path, external_rasa: ExternalRasa
) -> None:
    customer, result = await kill_and_resume(tmp_path, sample_model, external_rasa, failpoint)

    assert result.statuses == ["processed"]
    assert len([t for t in result.bot_texts if QUEUED_REPLY in t]) == 1, result.bot_texts
    assert result.handoffs == [("general", "queued")]
    assert result.rasa_user_events == 1  # the dialogue holds the message once
    shown = [m for m in customer.seen_messages() if m["sender"] == "bot"]
    assert len([m for m in shown if QUEUED_REPLY in m["text"]]) == 1


async def test_a_kill_that_takes_the_supervised_rasa_down_too_loses_nothing(
    tmp_path: Path, sample_model: Path
) -> None:
    _, result = await kill_and_resume(tmp_path, sample_model, None, "action_ran:action_handoff")

    assert result.statuses == ["processed"]
    assert len([t for t in result.bot_texts if QUEUED_REPLY in t]) == 1, result.bot_texts
    assert result.handoffs == [("general", "queued")]


def test_the_failpoints_named_here_exist() -> None:
    from bot.failpoints import Failpoints

    Failpoints(frozenset(FAILPOINTS))  # raises on a name the service does not know
    with pytest.raises(ValueError, match="unknown failpoint"):
        Failpoints(frozenset({"turn_finished"}))
