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
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from bot.nlu.supervisor import RasaSupervisor
from bot.nlu.training import TrainingInputs, ensure_model
from bot.store.sql import SqlStore
from bot.store.tables import Handoff, Message
from tests.conftest import PROJECT_ROOT, _free_port, _rasa_env_or_skip

pytestmark = pytest.mark.rasa

TEXT = "voglio parlare con un operatore"
QUEUED_REPLY = "La metto in contatto"  # the start of utter_handoff_queued in Italian
START_TIMEOUT_S = 240.0
DEATH_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 60.0


def _free_port_pair() -> int:
    """An even port whose successor is free too (RTP and RTCP)."""
    for _ in range(100):
        port = _free_port() & ~1
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 1):
                    stack.enter_context(socket.socket(type=socket.SOCK_DGRAM)).bind(
                        ("127.0.0.1", p)
                    )
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of UDP ports")


@dataclass
class Ports:
    http: int
    action: int
    sip: int
    rtp: int
    rasa: int


@dataclass(frozen=True)
class ExternalRasa:
    url: str
    action_port: int
    trackers: Path


@pytest_asyncio.fixture(scope="module")
async def model() -> Path:
    rasa_python = _rasa_env_or_skip()
    return await ensure_model(
        rasa_python,
        TrainingInputs.default(PROJECT_ROOT / "nlu_data"),
        PROJECT_ROOT / "var" / "models",
    )


@pytest_asyncio.fixture(scope="module")
async def external_rasa(
    model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ExternalRasa]:
    """A Rasa server that is not the gateway's child: it survives every kill below."""
    work = tmp_path_factory.mktemp("external-rasa")
    action_port = _free_port()
    supervisor = RasaSupervisor(
        _rasa_env_or_skip(),
        model,
        _free_port(),
        work,
        f"http://127.0.0.1:{action_port}/webhook",
    )
    await supervisor.start()
    try:
        yield ExternalRasa(supervisor.url, action_port, work / "rasa" / "trackers.db")
    finally:
        await supervisor.stop()


class Gateway:
    """``triage serve`` as its own process on a data directory that outlives it."""

    def __init__(self, data_dir: Path, ports: Ports, model: Path, rasa: ExternalRasa | None):
        self.data_dir = data_dir
        self.ports = ports
        self.rasa = rasa
        self.proc: asyncio.subprocess.Process | None = None
        models = data_dir / "models"
        models.mkdir(parents=True, exist_ok=True)
        if not (models / model.name).exists():
            (models / model.name).symlink_to(model)  # no training: the cached model

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    async def start(self, failpoints: str = "") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        env.update(
            TRIAGE_DATA_DIR=str(self.data_dir),
            TRIAGE_HTTP_PORT=str(self.ports.http),
            TRIAGE_ACTION_PORT=str(self.ports.action),
            TRIAGE_SIP_PORT=str(self.ports.sip),
            TRIAGE_RTP_PORT_MIN=str(self.ports.rtp),
            TRIAGE_RTP_PORT_MAX=str(self.ports.rtp + 2),
            TRIAGE_RASA_PORT=str(self.ports.rasa),
            TRIAGE_RASA_WORKERS="1",
            TRIAGE_FAILPOINTS=failpoints,
        )
        if self.rasa is not None:
            env["TRIAGE_EXTERNAL_RASA_URL"] = self.rasa.url
        log = (self.data_dir / "serve.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "serve", env=env, stdout=log, stderr=log
        )
        log.close()
        async with asyncio.timeout(START_TIMEOUT_S), aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"triage serve exited: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.base + "/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.3)

    async def died(self) -> int:
        assert self.proc is not None
        async with asyncio.timeout(DEATH_TIMEOUT_S):
            return await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(60):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def log_tail(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")[-3000:]


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
        rows = await store.messages(conversation_id)
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
    ports = Ports(
        http=_free_port(),
        action=rasa.action_port if rasa else _free_port(),
        sip=_free_port(),
        rtp=_free_port_pair(),
        rasa=_free_port(),
    )
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
    failpoint: str, tmp_path: Path, model: Path, external_rasa: ExternalRasa
) -> None:
    customer, result = await kill_and_resume(tmp_path, model, external_rasa, failpoint)

    assert result.statuses == ["processed"]
    assert len([t for t in result.bot_texts if QUEUED_REPLY in t]) == 1, result.bot_texts
    assert result.handoffs == [("general", "queued")]
    assert result.rasa_user_events == 1  # the dialogue holds the message once
    shown = [m for m in customer.seen_messages() if m["sender"] == "bot"]
    assert len([m for m in shown if QUEUED_REPLY in m["text"]]) == 1


async def test_a_kill_that_takes_the_supervised_rasa_down_too_loses_nothing(
    tmp_path: Path, model: Path
) -> None:
    _, result = await kill_and_resume(tmp_path, model, None, "action_ran:action_handoff")

    assert result.statuses == ["processed"]
    assert len([t for t in result.bot_texts if QUEUED_REPLY in t]) == 1, result.bot_texts
    assert result.handoffs == [("general", "queued")]


def test_the_failpoints_named_here_exist() -> None:
    from bot.failpoints import Failpoints

    Failpoints(frozenset(FAILPOINTS))  # raises on a name the service does not know
    with pytest.raises(ValueError, match="unknown failpoint"):
        Failpoints(frozenset({"turn_finished"}))
