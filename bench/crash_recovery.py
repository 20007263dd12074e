"""Chat customers while ``triage serve`` is killed and restarted: is every acked message answered?

The trial of issue 12, item 6, as a benchmark. Starts ``triage serve`` as its own process on a
temporary data directory (SQLite, the cached model, free ports for HTTP, Rasa, the actions, SIP
and RTP), then lets ``--customers`` chat customers arrive, about ``--concurrent`` of them connected
at once. Each behaves as the widget does: ``hello``, a short scripted conversation in Italian or
English that ends with a request for a person (some do the balance flow first), a message kept
until its ``ack`` and sent again with the same id after a reconnect, a resume with
``{conversation_id, token, last_seq}`` whenever the socket drops, and reconnection with the
widget's backoff until the server is back. Meanwhile the service is killed (SIGKILL) ``--kills``
times at random moments (``--seed``), and started again on the same data directory and ports.
Each kill follows a customer drawn at random, so that the kills spread over the run however long
it takes: ``--at any`` (the default) kills a random 0-5 s after that customer arrives, which
catches a bot's turn in flight only now and then (a turn takes tens of milliseconds, a customer
thinks for seconds); ``--at turn`` kills a random 0-20 ms after the ack of one of that
customer's messages, inside its turn. Each kill reports the turns it caught in flight.

When every customer is done (or at ``--deadline-s``) the service is stopped cleanly, and the
figures come from the customers' view and from the store: messages sent, acked and stored; acked
messages never answered (no bot or system message after them, and no handoff of their
conversation): "stranded"; customers whose request for a person did not end in a handoff;
customer messages answered twice (the same reply text twice after one customer message) and
conversations handed over twice; the kill times; the wall time. A table, then one JSON line
(``--json PATH`` writes it too). It measures and does not judge: the exit code is 0 unless the
bench itself broke.

    .venv/bin/python bench/crash_recovery.py                  # 80 customers, 3 kills
    .venv/bin/python bench/crash_recovery.py --kills 5 --seed 2 --keep

Only 127.0.0.1 is used; every wait is bounded. Out of the queues' hours (the domain pack's
``routing.yml``) a customer accepts the callback offered instead of a queue: a handoff too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import aiohttp
from chat_load import cpu_calibration_ms  # bench/ is on sys.path when this file is run
from sqlalchemy import select
from turns import SCRIPTS as TURN_SCRIPTS
from turns import Script, Step

from bot.config.settings import load_settings
from bot.conversation.state import MessageStatus
from bot.nlu.evaluation import free_port
from bot.nlu.training import TrainingInputs, ensure_model
from bot.store.sql.store import SqlStore
from bot.store.sql.tables import Conversation, Handoff, Message

START_TIMEOUT_S: Final = 240.0
PORT_RELEASE_TIMEOUT_S: Final = 60.0  # the killed gateway's Rasa gets SIGTERM and must let go
PORT_POLL_S: Final = 0.2
STOP_TIMEOUT_S: Final = 60.0
CONNECT_TIMEOUT_S: Final = 10.0  # socket, hello and welcome
CLOSE_TIMEOUT_S: Final = 2.0
# A connected customer waits this long for an answer; the wait starts again after a reconnect,
# so a restart in between never counts against the service.
REPLY_TIMEOUT_S: Final = 60.0
HANDOFF_WAIT_S: Final = 10.0  # after the answer to a request for a person, for the queue frame
LINGER_S: Final = 2.0  # a customer stays this long at the end: a reply sent twice arrives now
SYSTEM_ANSWER_RETRIES: Final = 2  # "try again in a moment" (the NLU was down): a person does
BACKOFF_MIN_S: Final = 0.5  # the widget's reconnect backoff: 0.5 s doubling to 10 s, jittered
BACKOFF_MAX_S: Final = 10.0
FIRST_WAVE_SPREAD_S: Final = 5.0  # the first customers arrive over this long
LATER_ARRIVAL_SPREAD_S: Final = 1.0  # later ones this long after a place frees
KILL_DELAY_MAX_S: Final = 5.0  # --at any: a kill comes up to this long after its customer arrives
KILL_AFTER_ACK_MAX_S: Final = 0.02  # --at turn: up to this long after the ack
ANSWER_SENDERS: Final = frozenset({"bot", "system"})
CALLBACK_PAYLOAD: Final = "/affirm"  # the "yes" button of the out-of-hours callback offer


def _turn_script(name: str) -> Script:
    return next(script for script in TURN_SCRIPTS if script.name == name)


IT_REQUEST: Final = Step("voglio parlare con un operatore", "request_human")  # the words
EN_REQUEST: Final = _turn_script("en_human").steps[-1]
# bench/turns.py's conversations that end with a request for a person; its balance flows end
# with thanks, which becomes the request here
SCRIPTS: Final = (
    _turn_script("it_human"),
    _turn_script("en_human"),
    Script("it_operator", (Step("buongiorno", "greet"), IT_REQUEST)),
    Script("it_balance_then_person", (*_turn_script("it_balance").steps[:-1], IT_REQUEST)),
    Script("en_balance_then_person", (*_turn_script("en_balance").steps[:-1], EN_REQUEST)),
)


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(type=kind) as s:
        if kind == socket.SOCK_STREAM:  # as a server binds: a TIME_WAIT connection is no owner
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_STREAM, even: bool = False) -> int:
    """The first of ``count`` consecutive free ports (Rasa workers take rasa_port + i)."""
    for _ in range(200):
        first = free_port() & ~1 if even else free_port()
        if first + count <= 65536 and all(_bindable(first + i, kind) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


@dataclass(frozen=True)
class Ports:
    http: int
    action: int
    rasa: int  # rasa, rasa + 1, ... one per worker
    sip: int
    rtp: int  # rtp .. rtp + 2

    @classmethod
    def pick(cls, rasa_workers: int) -> Ports:
        return cls(
            http=free_ports(1),
            action=free_ports(1),
            rasa=free_ports(rasa_workers),
            sip=free_ports(1, socket.SOCK_DGRAM),
            rtp=free_ports(3, socket.SOCK_DGRAM, even=True),
        )


class Service:
    """``triage serve`` on one data directory and one set of ports, started again after a kill."""

    def __init__(self, data_dir: Path, ports: Ports, rasa_workers: int) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.rasa_workers = rasa_workers
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        env.update(
            TRIAGE_DATA_DIR=str(self.data_dir),
            TRIAGE_HTTP_PORT=str(self.ports.http),
            TRIAGE_ACTION_PORT=str(self.ports.action),
            TRIAGE_RASA_PORT=str(self.ports.rasa),
            TRIAGE_RASA_WORKERS=str(self.rasa_workers),
            TRIAGE_SIP_PORT=str(self.ports.sip),
            TRIAGE_RTP_PORT_MIN=str(self.ports.rtp),
            TRIAGE_RTP_PORT_MAX=str(self.ports.rtp + 2),
            TRIAGE_CHAT_RATE_PER_S="100",
            TRIAGE_CHAT_BURST="100",
        )
        return env

    async def start(self) -> float:
        """Start it and wait for ``/healthz`` 200; the seconds that took."""
        started = time.monotonic()
        with (self.data_dir / "serve.log").open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "serve", env=self._env(), stdout=log, stderr=log
            )
        async with asyncio.timeout(START_TIMEOUT_S), aiohttp.ClientSession() as probe:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"triage serve exited; see {self.data_dir / 'serve.log'}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with probe.get(self.base_url + "/healthz") as resp:
                        if resp.status == 200:
                            return time.monotonic() - started
                await asyncio.sleep(0.3)

    async def kill(self) -> None:
        """SIGKILL, then wait until its ports are free again (its Rasa workers are told to go)."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        tcp = [self.ports.http, self.ports.action]
        tcp += [self.ports.rasa + i for i in range(self.rasa_workers)]
        for _ in range(round(PORT_RELEASE_TIMEOUT_S / PORT_POLL_S)):
            if all(_bindable(p, socket.SOCK_STREAM) for p in tcp) and _bindable(
                self.ports.sip, socket.SOCK_DGRAM
            ):
                return
            await asyncio.sleep(PORT_POLL_S)
        raise RuntimeError(
            f"the killed service's ports were not freed in {PORT_RELEASE_TIMEOUT_S} s"
        )

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class KillAt(StrEnum):
    """Which moments the kills are drawn from."""

    ANY = "any"  # a random moment after a random customer arrives
    TURN = "turn"  # just after one of a random customer's messages is acked: inside its turn


class GaveUp(StrEnum):
    """Why a customer stopped before the end of their script."""

    NO_ANSWER = "no answer"  # connected for REPLY_TIMEOUT_S and nothing answered the message
    DEADLINE = "deadline"  # --deadline-s came first


@dataclass
class Sent:
    """A customer message as the client knows it: unsent until its ack, then awaiting an answer."""

    client_id: str
    text: str
    payload: str | None = None
    ack_seq: int | None = None
    acked_at: float | None = None  # time.monotonic()
    transmissions: int = 0
    answered: bool = False


class Customer:
    """The widget's side of docs/chat-protocol.md, for one scripted customer."""

    def __init__(
        self,
        number: int,
        script: Script,
        url: str,
        run_id: str,
        think_s: tuple[float, float],
        deadline: float,
        rng: random.Random,
    ) -> None:
        self.number = number
        self.script = script
        self.lang = "en" if script.name.startswith("en") else "it"
        self.url = url
        self.run_id = run_id
        self.think_s = think_s
        self.deadline = deadline
        self.rng = rng
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.conversation_id: str | None = None
        self.token: str | None = None
        self.shown: dict[int, dict[str, Any]] = {}  # seq -> message, each seq once
        self.sent: list[Sent] = []
        self.pending: Sent | None = None  # the latest message: resent after a welcome if unacked
        self.request: Sent | None = None  # the (last attempt of the) request for a person
        self.queued = False
        self.callback_booked = False
        self.reconnects = 0
        self.resume_refused = 0
        self.system_answers = 0
        self.errors: list[str] = []
        self.gave_up: GaveUp | None = None
        self.arrived = asyncio.Event()
        self.acks = 0
        self.acked = asyncio.Event()  # set at each ack and at the end; its waiter clears it
        self.done = False

    async def run(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.arrived.set()
        try:
            await self._converse()
        finally:
            await self._drop()
            self.done = True
            self.acked.set()

    async def _converse(self) -> None:
        if not await self._connect():
            self.gave_up = GaveUp.DEADLINE
            return
        steps = self.script.steps
        for number, step in enumerate(steps):
            if number:
                await self._think()
            answered = await self._say(step.text)
            if number == len(steps) - 1:
                self.request = self.sent[-1]
            if not answered:
                return
        offer = self._callback_offer()
        if offer is not None:  # out of hours: the customer takes the callback, as with the button
            await self._think()
            self.callback_booked = await self._say(offer, CALLBACK_PAYLOAD)
        else:
            await self._until(lambda: self.queued, HANDOFF_WAIT_S)
        await self._until(lambda: False, LINGER_S)

    async def _think(self) -> None:
        await asyncio.sleep(self.rng.uniform(*self.think_s))

    async def _say(self, text: str, payload: str | None = None) -> bool:
        """Send one message and wait for its answer; a system answer (the NLU was unavailable) is
        tried again after a pause, as a person would. False: the customer gave up waiting."""
        for attempt in range(1 + SYSTEM_ANSWER_RETRIES):
            if attempt:
                self.system_answers += 1
                await self._think()
            sent = Sent(f"{self.run_id}-{self.number:03d}-{len(self.sent) + 1}", text, payload)
            self.sent.append(sent)
            self.pending = sent
            await self._transmit(sent)
            if not await self._until(functools.partial(self._answered, sent), REPLY_TIMEOUT_S):
                late = time.monotonic() >= self.deadline
                self.gave_up = GaveUp.DEADLINE if late else GaveUp.NO_ANSWER
                return False
            sent.answered = True
            if self._answer_senders(sent) != {"system"}:
                return True
        return True

    def _answer_senders(self, sent: Sent) -> set[str]:
        after = sent.ack_seq or 0
        return {
            m["sender"]
            for seq, m in self.shown.items()
            if seq > after and m.get("sender") in ANSWER_SENDERS
        }

    def _answered(self, sent: Sent) -> bool:
        return sent.ack_seq is not None and (self.queued or bool(self._answer_senders(sent)))

    def _callback_offer(self) -> str | None:
        """The title of the "yes" button of a callback offer answering the request, if any."""
        if self.queued or self.request is None or self.request.ack_seq is None:
            return None
        for seq, m in sorted(self.shown.items()):
            for button in m.get("buttons") or []:
                if seq > self.request.ack_seq and button.get("payload") == CALLBACK_PAYLOAD:
                    return str(button.get("title", "sì"))
        return None

    async def _until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Read frames (reconnecting as needed) until ``done()``; False after ``timeout_s`` of
        connected waiting, or at the deadline."""
        waiting_from = time.monotonic()
        while not done():
            if self.ws is None:
                if not await self._connect():
                    return False
                waiting_from = time.monotonic()
                continue
            remaining = min(waiting_from + timeout_s, self.deadline) - time.monotonic()
            if remaining <= 0:
                return False
            await self._receive(remaining)
        return True

    async def _receive(self, timeout_s: float) -> None:
        assert self.ws is not None
        try:
            # not receive(timeout=...): aiohttp starts that timeout again after each ping, and
            # the server pings every 30 s, so a wait longer than that would never end
            async with asyncio.timeout(timeout_s):
                msg = await self.ws.receive()
        except TimeoutError:
            return
        except (ConnectionError, aiohttp.ClientError):
            await self._drop()
            return
        if msg.type != aiohttp.WSMsgType.TEXT:
            await self._drop()
            return
        await self._on_frame(json.loads(msg.data))

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        pending = self.pending
        if kind == "ack":
            if pending is not None and frame.get("id") == pending.client_id:
                pending.ack_seq = int(frame["seq"])
                pending.acked_at = time.monotonic()
                self.acks += 1
                self.acked.set()
        elif kind == "message":
            self.shown.setdefault(int(frame["seq"]), frame)
        elif kind == "history":
            for message in frame.get("messages", []):
                self.shown.setdefault(int(message["seq"]), message)
        elif kind == "queue":
            self.queued = True
        elif kind == "error":
            self.errors.append(str(frame.get("code")))
            if (
                frame.get("code") == "rate_limited"
                and pending is not None
                and frame.get("id") == pending.client_id
            ):
                await asyncio.sleep(int(frame.get("retry_after_ms", 1000)) / 1000)
                await self._transmit(pending)

    async def _transmit(self, sent: Sent) -> None:
        if self.ws is None:
            return  # sent after the next welcome
        frame: dict[str, Any] = {"type": "message", "id": sent.client_id, "text": sent.text}
        if sent.payload is not None:
            frame["payload"] = sent.payload
        try:
            await self.ws.send_json(frame)
        except (ConnectionError, aiohttp.ClientError):
            await self._drop()
            return
        sent.transmissions += 1

    def _hello(self) -> dict[str, Any]:
        resume = None
        if self.conversation_id is not None:
            resume = {
                "conversation_id": self.conversation_id,
                "token": self.token,
                "last_seq": max(self.shown, default=0),
            }
        return {"type": "hello", "v": 1, "lang": self.lang, "resume": resume, "identity": None}

    async def _connect(self) -> bool:
        """Open the socket and say hello (resuming), with the widget's backoff, until a welcome;
        then send the unacked message again with its id. False at the deadline."""
        assert self.session is not None
        attempt = 0
        while time.monotonic() < self.deadline:
            ws: aiohttp.ClientWebSocketResponse | None = None
            welcome: dict[str, Any] = {}
            with contextlib.suppress(
                TimeoutError, ConnectionError, aiohttp.ClientError, ValueError
            ):
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    ws = await self.session.ws_connect(self.url, max_msg_size=0)
                    await ws.send_json(self._hello())
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        welcome = json.loads(msg.data)
            if ws is not None and welcome.get("type") == "welcome":
                self.ws = ws
                await self._welcomed(welcome)
                return True
            if ws is not None:
                await _close(ws)
            cap = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(attempt, 10))
            await asyncio.sleep(max(BACKOFF_MIN_S, cap * self.rng.uniform(0.5, 1.0)))
            attempt += 1
        return False

    async def _welcomed(self, welcome: dict[str, Any]) -> None:
        conversation_id = str(welcome["conversation_id"])
        if self.conversation_id is not None:
            self.reconnects += 1
            if conversation_id != self.conversation_id or not welcome.get("resumed"):
                self.resume_refused += 1
                self.shown.clear()  # a new conversation, as the widget starts afresh
        self.conversation_id = conversation_id
        self.token = str(welcome["token"])
        if self.pending is not None and self.pending.ack_seq is None:
            await self._transmit(self.pending)

    async def _drop(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            await _close(ws)


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(TimeoutError, ConnectionError, aiohttp.ClientError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close()


@dataclass(frozen=True)
class Kill:
    after_customer: int  # the customer whose arrival it followed
    at_s: float  # since the customers started
    turns_in_flight: int  # customers with an acked message not answered yet
    unacked_in_flight: int  # customers with a message sent and not acked yet
    back_after_s: float  # from the kill to /healthz 200 again


async def kill_at_random(
    service: Service,
    customers: list[Customer],
    count: int,
    at: KillAt,
    rng: random.Random,
    started: float,
) -> list[Kill]:
    """``count`` kills, each at a random moment that follows a customer drawn at random (never
    the first: the service has some traffic to lose)."""
    kills: list[Kill] = []
    up_since = started
    for number in sorted(rng.sample(range(1, len(customers)), min(count, len(customers) - 1))):
        customer = customers[number]
        if at is KillAt.TURN:
            # an ack after the previous restart: one the killer waited through would be stale
            target = max(rng.randint(1, len(customer.script.steps)), customer.acks + 1)
            while customer.acks < target and not customer.done:
                customer.acked.clear()
                await customer.acked.wait()
            await asyncio.sleep(rng.uniform(0, KILL_AFTER_ACK_MAX_S))
        else:
            await customer.arrived.wait()
            await asyncio.sleep(rng.uniform(0, KILL_DELAY_MAX_S))
        # counted in the same step as the kill (no await between): what the kill interrupts
        pending = [c.pending for c in customers if not c.done and c.pending is not None]
        # acked since the service last came up: older ones are not this kill's doing
        in_flight = sum(
            p.acked_at is not None and p.acked_at > up_since and not p.answered for p in pending
        )
        unacked = sum(p.ack_seq is None for p in pending)
        killed_at = time.monotonic()
        await service.kill()
        await service.start()
        kills.append(
            Kill(
                after_customer=number,
                at_s=round(killed_at - started, 1),
                turns_in_flight=in_flight,
                unacked_in_flight=unacked,
                back_after_s=round(time.monotonic() - killed_at, 1),
            )
        )
        up_since = time.monotonic()
        print(
            f"  killed at {kills[-1].at_s} s ({kills[-1].turns_in_flight} turns in flight), "
            f"back after {kills[-1].back_after_s} s",
            flush=True,
        )
    return kills


async def arrive(
    customers: list[Customer],
    concurrent: int,
    session: aiohttp.ClientSession,
) -> None:
    """Every customer in turn, about ``concurrent`` connected at once."""
    places = asyncio.Semaphore(concurrent)

    async def one(customer: Customer) -> None:
        async with places:
            spread = FIRST_WAVE_SPREAD_S if customer.number < concurrent else LATER_ARRIVAL_SPREAD_S
            await asyncio.sleep(customer.rng.uniform(0, spread))
            await customer.run(session)

    async with asyncio.TaskGroup() as group:
        for customer in customers:
            group.create_task(one(customer))


@dataclass(frozen=True)
class Row:
    id: int
    conversation_id: str
    sender: str
    text: str
    status: str
    client_id: str | None


async def read_store(data_dir: Path) -> tuple[list[Row], dict[str, list[str]]]:
    """The chat conversations' messages in order, and their handoffs' states."""
    store = await SqlStore.open(f"sqlite+aiosqlite:///{data_dir / 'triage.db'}", create=False)
    try:
        chats = select(Conversation.id).where(Conversation.channel == "chat")
        async with store.session() as s:
            rows = (
                await s.execute(
                    select(
                        Message.id,
                        Message.conversation_id,
                        Message.sender,
                        Message.text,
                        Message.status,
                        Message.client_id,
                    )
                    .where(Message.conversation_id.in_(chats))
                    .order_by(Message.id)
                )
            ).all()
            handoff_rows = (await s.execute(select(Handoff.conversation_id, Handoff.state))).all()
    finally:
        await store.close()
    handoffs: dict[str, list[str]] = defaultdict(list)
    for conversation_id, state in handoff_rows:
        handoffs[conversation_id].append(state)
    return [Row(*r) for r in rows], dict(handoffs)


def replies_repeated(messages: Iterable[tuple[str, str]]) -> int:
    """Customer messages answered twice: the same reply text twice among the bot and system
    messages that follow one customer message (one turn never says the same thing twice)."""
    spans: list[list[str]] = []
    for sender, text in messages:
        if sender == "user":
            spans.append([])
        elif sender in ANSWER_SENDERS and spans:
            spans[-1].append(text)
    return sum(len(span) != len(set(span)) for span in spans)


def figures_of(
    customers: list[Customer], rows: list[Row], handoffs: dict[str, list[str]]
) -> dict[str, Any]:
    sent = [s for c in customers for s in c.sent]
    acked = {s.client_id for s in sent if s.ack_seq is not None}
    by_conversation: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_conversation[row.conversation_id].append(row)
    ids = {s.client_id for s in sent}
    stored = {r.client_id for r in rows if r.sender == "user" and r.client_id in ids}
    stranded: list[dict[str, Any]] = []
    for conversation_id, conversation in by_conversation.items():
        last_answer = max((r.id for r in conversation if r.sender in ANSWER_SENDERS), default=0)
        for r in conversation:
            if (
                r.sender == "user"
                and r.client_id in acked
                and r.id > last_answer
                and conversation_id not in handoffs
            ):
                stranded.append(
                    {
                        "conversation_id": conversation_id,
                        "client_id": r.client_id,
                        "messages": [f"{m.id} {m.sender} {m.status}" for m in conversation],
                    }
                )
    requests = [c for c in customers if c.request is not None and c.request.ack_seq is not None]
    return {
        "customers": {
            "sent": len(sent),
            "transmissions": sum(s.transmissions for s in sent),
            "acked": len(acked),
            "stranded": sum(s.ack_seq is not None and not s.answered for s in sent),
            "request_acked": len(requests),
            "no_handoff": sum(not (c.queued or c.callback_booked) for c in requests),
            "replies_repeated": sum(
                replies_repeated((m["sender"], m["text"]) for _, m in sorted(c.shown.items()))
                for c in customers
            ),
            "reconnects": sum(c.reconnects for c in customers),
            "resume_refused": sum(c.resume_refused for c in customers),
            "system_answers": sum(c.system_answers for c in customers),
            "gave_up": dict(Counter(str(c.gave_up) for c in customers if c.gave_up)),
            "errors": dict(Counter(e for c in customers for e in c.errors)),
        },
        "store": {
            "conversations": len(by_conversation),
            "stored": len(stored),
            "lost": len(acked - stored),
            "stranded": len(stranded),
            "still_received": sum(
                r.sender == "user" and r.status == MessageStatus.RECEIVED for r in rows
            ),
            "statuses": dict(Counter(r.status for r in rows if r.sender == "user")),
            "no_handoff": sum(c.conversation_id not in handoffs for c in requests),
            "replies_repeated": sum(
                replies_repeated((r.sender, r.text) for r in conversation)
                for conversation in by_conversation.values()
            ),
            "handoffs_repeated": sum(len(states) > 1 for states in handoffs.values()),
            "handoff_states": dict(Counter(s for states in handoffs.values() for s in states)),
        },
        "stranded": stranded,
    }


def print_table(figures: dict[str, Any]) -> None:
    c, s = figures["customers"], figures["store"]
    rows = (
        ("messages sent (transmissions)", f"{c['sent']} ({c['transmissions']})", "-"),
        ("messages acked", c["acked"], "-"),
        ("messages stored", "-", s["stored"]),
        ("acked, not stored (lost)", "-", s["lost"]),
        ("stranded (acked, never answered)", c["stranded"], s["stranded"]),
        ("customer messages still 'received'", "-", s["still_received"]),
        ("requests for a person acked", c["request_acked"], "-"),
        ("  ... not ending in a handoff", c["no_handoff"], s["no_handoff"]),
        ("messages answered twice", c["replies_repeated"], s["replies_repeated"]),
        ("conversations handed over twice", "-", s["handoffs_repeated"]),
    )
    print(f"\n{'':36} {'customers':>12} {'store':>8}")
    for label, by_customers, by_store in rows:
        print(f"{label:36} {by_customers!s:>12} {by_store!s:>8}")
    kills = figures["kills"]

    def each(key: str) -> str:
        return ", ".join(str(k[key]) for k in kills) or "-"

    print(
        f"\nkills ({figures['kill_at']}) at (s): {each('at_s')}; back after (s): "
        f"{each('back_after_s')}; turns in flight: {each('turns_in_flight')}; unacked in "
        f"flight: {each('unacked_in_flight')}"
    )
    print(
        f"customers {figures['customer_count']} ({figures['concurrent']} at once), "
        f"{s['conversations']} conversations, wall {figures['wall_s']} s; reconnects "
        f"{c['reconnects']}, resumes refused {c['resume_refused']}, system answers "
        f"{c['system_answers']}, gave up {c['gave_up']}, errors {c['errors']}"
    )
    print(f"statuses {s['statuses']}; handoffs {s['handoff_states']}")
    print(
        f"host: CPU calibration loop {figures['cpu_calibration_ms']} ms before/after, "
        f"load average {figures['load_average']}"
    )
    for item in figures["stranded"]:
        print(f"stranded: {item['conversation_id']} {item['client_id']}: {item['messages']}")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    model = await ensure_model(
        settings.rasa_python, TrainingInputs.default(settings.nlu_data_dir), settings.models_dir
    )
    data_dir = Path(tempfile.mkdtemp(prefix="triage-bench-crash-"))
    (data_dir / "models").mkdir()
    (data_dir / "models" / model.name).symlink_to(model)  # no training: the cached model
    service = Service(data_dir, Ports.pick(args.rasa_workers), args.rasa_workers)
    try:
        print(f"model {model.name}; data dir {data_dir}; starting triage serve ...", flush=True)
        await service.start()
        calibration_before = cpu_calibration_ms()
        rng = random.Random(args.seed)
        run_id = secrets.token_hex(3)
        url = service.base_url.replace("http://", "ws://") + "/chat/ws"
        started = time.monotonic()
        customers = [
            Customer(
                number,
                rng.choice(SCRIPTS),
                url,
                run_id,
                args.think,
                started + args.deadline_s,
                random.Random(rng.random()),
            )
            for number in range(args.customers)
        ]
        print(
            f"{args.customers} customers, {args.kills} kills (at {args.at}), seed {args.seed} ...",
            flush=True,
        )
        connector = aiohttp.TCPConnector(limit=0)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            asyncio.TaskGroup() as group,
        ):
            killer = group.create_task(
                kill_at_random(
                    service,
                    customers,
                    args.kills,
                    KillAt(args.at),
                    random.Random(rng.random()),
                    started,
                )
            )
            group.create_task(arrive(customers, args.concurrent, session))
        wall_s = time.monotonic() - started
        await service.stop()
        rows, handoffs = await read_store(data_dir)
    finally:
        await service.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    figures = figures_of(customers, rows, handoffs)
    figures.update(
        customer_count=args.customers,
        concurrent=args.concurrent,
        kills=[asdict(k) for k in killer.result()],
        kill_at=args.at,
        seed=args.seed,
        rasa_workers=args.rasa_workers,
        wall_s=round(wall_s, 1),
        cpu_calibration_ms=[calibration_before, cpu_calibration_ms()],
        load_average=[round(x, 2) for x in os.getloadavg()],
        data_dir=str(data_dir) if args.keep else None,
    )
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=80, help="customers in all")
    parser.add_argument("--concurrent", type=int, default=20, help="customers connected at once")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the service")
    parser.add_argument(
        "--at",
        choices=[a.value for a in KillAt],
        default=KillAt.ANY.value,
        help="kill moments: any (after a customer arrives) or turn (inside a bot's turn)",
    )
    parser.add_argument("--think-s", default="1,4", help="think time, MIN,MAX seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--deadline-s", type=float, default=600.0, help="the customers stop then")
    parser.add_argument(
        "--rasa-workers", type=int, default=min(2, os.cpu_count() or 1), help="Rasa processes"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    args.think = tuple(float(x) for x in args.think_s.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = asyncio.run(bench(args))
    print_table(figures)
    line = json.dumps(figures, ensure_ascii=False)
    print(line)
    if args.json:
        args.json.write_text(line + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
