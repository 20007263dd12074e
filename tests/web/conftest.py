"""The gateway's web application over a real socket, with the real Rasa server behind it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.channels.web.app import make_app
from bot.channels.web.keys import DESK
from bot.config.settings import Settings
from bot.runtime import Runtime, make_desk
from bot.store.sql.tables import Agent


def with_own_desk(runtime: Runtime, settings: Settings | None = None) -> Runtime:
    """The session's runtime with a desk (and hub) of its own, as a new node would have."""
    settings = settings or runtime.settings
    desk = make_desk(
        settings, runtime.store, runtime.conversations, runtime.back_office, runtime.routing
    )
    return dataclasses.replace(runtime, settings=settings, desk=desk)


@pytest_asyncio.fixture
async def app(rasa_runtime: Runtime) -> web.Application:
    return make_app(with_own_desk(rasa_runtime))


@pytest_asyncio.fixture
async def client(app: web.Application) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(app)) as c:
        yield c


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[Any, Any]]:
    """Serve an app configured by the test itself (state may change only before start)."""
    async with TestClient(TestServer(app)) as c:
        yield c


async def new_agent(
    app: web.Application, *queues: str, role: str = "agent", password: str | None = None
) -> tuple[Agent, str]:
    """A new agent (unique id) and their bearer token."""
    desk = app[DESK]
    agent_id = f"a-{uuid.uuid4().hex[:8]}"
    token = await desk.agents.add(
        agent_id, f"Agente {agent_id[-4:]}", role, list(queues), password=password
    )
    return await desk.agents.get(agent_id), token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
