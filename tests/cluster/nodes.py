"""A cluster of real ``triage serve`` nodes for the tests: ``LocalCluster`` (what ``make
cluster`` starts) on free ports, with a Redis server of the test's own, a throw-away PostgreSQL
database, HAProxy, and a webhook receiver; plus the clients a test drives it with (a chat
socket, an agent with a console socket and the REST API)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.cli.cluster import ClusterLayout, LocalCluster, Node, NodePorts
from bot.store.sql.store import SqlStore
from tests.cluster.conftest import RedisServer, require
from tests.conftest import (
    DEFAULT_POSTGRES_URL,
    _admin_connection,
    _free_port,
    _free_rasa_ports,
    write_test_routing,
)
from tests.gateway_process import free_port_pair

Frame = dict[str, Any]
WAIT_S = 30.0
API_TOKEN = "cluster-test-token"
WEBHOOK_SECRET = "cluster-test-webhook-secret"
OFFER_TIMEOUT_S = 4


class WebhookReceiver:
    """Records every webhook POST (its verified body), optionally answering slowly."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.delay_s = 0.0
        self.port = _free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers["X-Triage-Timestamp"]
        mac = hmac.new(WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        if request.headers["X-Triage-Signature"] != "sha256=" + mac.hexdigest():
            return web.Response(status=401)
        await asyncio.sleep(self.delay_s)
        self.events.append(json.loads(body))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class RunningCluster:
    cluster: LocalCluster
    redis: RedisServer
    database_url: str
    store: SqlStore  # the test's own view of the shared store (agents, leases, events)
    webhooks: WebhookReceiver

    @property
    def nodes(self) -> list[Node]:
        return self.cluster.nodes

    @property
    def proxy(self) -> str:
        return self.cluster.base

    async def ensure_running(self) -> None:
        """Every node up (a test before may have killed one)."""
        for node in self.nodes:
            if node.proc is None or node.proc.returncode is not None:
                await self.cluster.start_node(node)

    async def lease_holder(self, name: str) -> str | None:
        from sqlalchemy import select

        from bot.store.sql.tables import Lease

        async with self.store.session() as s:
            return await s.scalar(select(Lease.holder).where(Lease.name == name))

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def other(self, node: Node) -> Node:
        return next(n for n in self.nodes if n is not node)


@contextlib.asynccontextmanager
async def running_cluster(root: Path, model: Path) -> AsyncIterator[RunningCluster]:
    require(shutil.which("haproxy") is not None, "haproxy is not installed (make test installs it)")
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    from sqlalchemy.engine import make_url

    url = make_url(DEFAULT_POSTGRES_URL)
    admin = await _admin_connection(url)
    name = f"triage_n_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = url.set(database=name).render_as_string(hide_password=False)
    redis = RedisServer(_free_port(), root)
    redis.start()
    webhooks = WebhookReceiver()
    await webhooks.start()
    layout = ClusterLayout(root=root, http_port=_free_port(), sip_port=_free_port())
    for _ in range(2):
        rtp = free_port_pair()
        layout.nodes.append(
            NodePorts(
                http=_free_port(),
                sip=_free_port(),
                rtp_min=rtp,
                rtp_max=rtp + 2,
                rasa=_free_rasa_ports(1),
                action=_free_port(),
            )
        )
    routing = write_test_routing(root / "routing.yml")
    cluster = LocalCluster(
        layout,
        database_url=database_url,
        redis_url=redis.url,
        model=model,
        with_sip=False,
        extra_env={
            "TRIAGE_ROUTING_FILE": str(routing),
            "TRIAGE_API_TOKEN": API_TOKEN,
            "TRIAGE_OFFER_TIMEOUT_S": str(OFFER_TIMEOUT_S),
            "TRIAGE_CHAT_RATE_PER_S": "1000",
            "TRIAGE_CHAT_BURST": "1000",
            "TRIAGE_WEBHOOK_URL": webhooks.url,
            "TRIAGE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )
    store: SqlStore | None = None
    try:
        await redis.wait_ready()
        await cluster.start()
        store = await SqlStore.open(database_url, create=False)
        yield RunningCluster(cluster, redis, database_url, store, webhooks)
    finally:
        if store is not None:
            await store.close()
        await cluster.stop()
        await webhooks.stop()
        redis.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@dataclass
class Customer:
    """A chat socket that reads every frame into ``frames`` in the background."""

    base: str
    http: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse | None = None
    frames: list[Frame] = field(default_factory=list)
    welcome: Frame = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    async def open(self, resume: Frame | None = None, lang: str = "it") -> None:
        self.ws = await self.http.ws_connect(self.base + "/chat/ws")
        await self.ws.send_json({"type": "hello", "v": 1, "lang": lang, "resume": resume})
        self._reader = asyncio.create_task(self._read(self.ws))
        self.welcome = await self.next(lambda f: f["type"] == "welcome")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))

    @property
    def closed(self) -> bool:
        return self._reader is None or self._reader.done()

    def resume(self) -> Frame:
        seqs = [f["seq"] for f in self.frames if f["type"] == "message"] + [
            m["seq"] for f in self.frames if f["type"] == "history" for m in f["messages"]
        ]
        return {
            "conversation_id": self.welcome["conversation_id"],
            "token": self.welcome["token"],
            "last_seq": max(seqs, default=0),
        }

    async def next(self, match: Callable[[Frame], bool], timeout_s: float = WAIT_S) -> Frame:
        seen = 0
        async with asyncio.timeout(timeout_s):
            while True:
                for frame in self.frames[seen:]:
                    if match(frame):
                        return frame
                seen = len(self.frames)
                await asyncio.sleep(0.02)

    async def say(self, text: str, client_id: str | None = None) -> Frame:
        """Send a message and wait for its ack."""
        assert self.ws is not None
        client_id = client_id or secrets.token_hex(6)
        await self.ws.send_json({"type": "message", "id": client_id, "text": text})
        return await self.next(lambda f: f["type"] == "ack" and f["id"] == client_id)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@dataclass
class Agent:
    """An agent: the REST API with their bearer token, a console socket with a session."""

    id: str
    token: str
    http: aiohttp.ClientSession
    console_frames: list[Frame] = field(default_factory=list)
    console_base: str | None = None
    _console: asyncio.Task[None] | None = None

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(self, base: str, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(
            method, base + path, json=body, headers=self.auth()
        ) as resp:
            data = await resp.json()
            return resp.status, data

    async def open_console(self, base: str) -> None:
        """Sign in on ``base`` and keep a console socket open there (reopened if dropped)."""
        async with self.http.post(base + "/api/session", json={"token": self.token}) as resp:
            assert resp.status == 200, await resp.text()
        self.console_base = base
        opened = asyncio.Event()
        self._console = asyncio.create_task(self._keep_console(base, opened))
        async with asyncio.timeout(WAIT_S):
            await opened.wait()

    async def _keep_console(self, base: str, opened: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.ws_connect(base + "/agent/ws") as ws:
                    self.console_frames.append({"type": "__opened__"})
                    opened.set()
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self.console_frames.append(json.loads(msg.data))
                    self.console_frames.append({"type": "__closed__"})
            await asyncio.sleep(0.3)

    async def close_console(self) -> None:
        if self._console is not None:
            self._console.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._console
            self._console = None

    async def next_console(
        self, match: Callable[[Frame], bool], timeout_s: float = WAIT_S, after: int = 0
    ) -> Frame:
        """The first console frame from index ``after`` on that matches."""
        seen = after
        async with asyncio.timeout(timeout_s):
            while True:
                for frame in self.console_frames[seen:]:
                    if match(frame):
                        return frame
                seen = len(self.console_frames)
                await asyncio.sleep(0.02)


async def new_agent(
    cluster: RunningCluster, http: aiohttp.ClientSession, queues: list[str], capacity: int = 2
) -> Agent:
    agent_id = f"a-{secrets.token_hex(4)}"
    token = await cluster.store.agents.add(
        agent_id, f"Agente {agent_id[-4:]}", "agent", queues, capacity=capacity
    )
    await cluster.store.agents.set_presence(agent_id, "available")
    return Agent(agent_id, token, http)
