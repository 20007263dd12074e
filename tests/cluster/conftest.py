"""Fixtures of the cluster tests: a Redis server of their own (so that a test may restart it),
a throw-away PostgreSQL database, and the engines a cluster needs (HAProxy).

Each skips, naming what is missing, when an engine is not installed or a server does not answer,
unless ``TRIAGE_REQUIRE_SERVICES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.conftest import (
    DEFAULT_POSTGRES_URL,
    _admin_connection,
    _free_port,
    _services_required,
)


def require(found: bool, message: str) -> None:
    if found:
        return
    if _services_required():
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class RedisServer:
    """``redis-server`` on a free loopback port, nothing kept on disk."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        client = aioredis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(OSError, aioredis.ConnectionError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def restart(self, down_s: float = 0.5) -> None:
        """Killed (nothing saved: every key and subscription is gone), then started again."""
        self.stop()
        await asyncio.sleep(down_s)
        self.start()
        await self.wait_ready()


@pytest_asyncio.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer(_free_port(), tmp_path)
    server.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    from sqlalchemy.engine import make_url

    url = make_url(DEFAULT_POSTGRES_URL)
    name = f"triage_c_{secrets.token_hex(6)}"
    admin = await _admin_connection(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def haproxy() -> Iterator[str]:
    path = shutil.which("haproxy")
    require(path is not None, "haproxy is not installed (make cluster-system-deps)")
    assert path is not None
    yield path
