"""``triage serve`` as its own process, on free loopback ports and a data directory that outlives
it: for the tests that kill it, restart it or watch it start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import _free_port, write_test_routing

START_TIMEOUT_S = 240.0
DEATH_TIMEOUT_S = 30.0


def free_port_pair() -> int:
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

    @classmethod
    def free(cls, action: int | None = None) -> Ports:
        """Free ports for one node; ``action`` when an outside Rasa already calls one."""
        return cls(
            http=_free_port(),
            action=action or _free_port(),
            sip=_free_port(),
            rtp=free_port_pair(),
            rasa=_free_port(),
        )


@dataclass(frozen=True)
class ExternalRasa:
    """A Rasa server that is not the gateway's child, and the action port it calls."""

    url: str
    action_port: int
    trackers: Path


@contextlib.asynccontextmanager
async def external_rasa_server(model: Path, work: Path) -> AsyncIterator[ExternalRasa]:
    """A Rasa server on the model that is no gateway's child (it outlives the gateways a test
    kills), calling the action webhook on the port it names."""
    from bot.nlu.supervisor import RasaSupervisor
    from tests.conftest import _rasa_env_or_skip

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
            # the queues open around the clock: what a test expects must not depend on the hour
            TRIAGE_ROUTING_FILE=str(write_test_routing(self.data_dir / "routing.yml")),
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
