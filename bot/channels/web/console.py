"""The agent console: its page, static files, and its live WebSocket (``/agent/ws``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from aiohttp import WSMsgType, web

from bot.channels.web.auth import SESSION_COOKIE
from bot.channels.web.keys import DESK, SOCKETS
from bot.live.hub import Frame
from bot.store.protocols import AgentRecord

STATIC = Path(__file__).parent / "static"
CONSOLE_MODULES = STATIC / "console"
# aiohttp's own table says application/javascript on Python < 3.12; RFC 9239 names text/javascript
JAVASCRIPT = "text/javascript; charset=utf-8"
CLOSE_RESYNC = 1013  # try again: the console reconnects and fetches its lists again
PERSONAL_FRAMES = {"message", "typing", "handoff_ended", "offer"}


def console_filter(agent: AgentRecord) -> Callable[[Frame, str | None, str | None], bool]:
    queues = frozenset(agent.queues)
    supervisor = agent.role == "supervisor"

    def wants(frame: Frame, queue: str | None, agent_id: str | None) -> bool:
        if frame.get("type") in PERSONAL_FRAMES:
            return agent_id == agent.id or (supervisor and frame.get("type") != "offer")
        return supervisor or queue is None or queue in queues or agent_id == agent.id

    return wants


async def console_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "console.html")


async def console_module(request: web.Request) -> web.FileResponse:
    """One of the console's ES modules (``console/main.js`` and what it imports).

    The type is set here, not guessed from the host: with ``nosniff``, a module script served as
    anything but JavaScript is refused. The route's pattern allows no ``/`` or ``..``; a missing
    module is a 404 from ``FileResponse``.
    """
    module = CONSOLE_MODULES / request.match_info["name"]
    return web.FileResponse(module, headers={"Content-Type": JAVASCRIPT})


async def agent_ws(request: web.Request) -> web.WebSocketResponse:
    desk = request.app[DESK]
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text="cross-origin console connections are refused")
    cookie = request.cookies.get(SESSION_COOKIE)
    found = await desk.agents.session_of(cookie) if cookie else None
    if found is None:
        raise web.HTTPUnauthorized(text="sign in first")
    agent, _ = found
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    sub = desk.hub.join_consoles(agent.id, console_filter(agent))

    async def write() -> None:
        while True:
            frame = await sub.next_frame()
            if frame is None:  # dropped: the console reconnects and fetches what it missed
                await ws.close(code=CLOSE_RESYNC, message=b"reconnect and fetch again")
                return
            try:
                await ws.send_json(frame)
            except ConnectionResetError:  # the console went away
                return

    writer = asyncio.create_task(write())
    closed = asyncio.create_task(sub.closed.wait())
    try:
        async for msg in ws:  # the console only listens; anything it sends is ignored
            if msg.type == WSMsgType.BINARY or closed.done():
                break
    finally:
        for task in (writer, closed):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        desk.hub.leave_consoles(sub)
    return ws


def add_routes(app: web.Application) -> None:
    app.router.add_get("/agent", console_page)
    app.router.add_get("/agent/ws", agent_ws)
    app.router.add_get(r"/agent/static/console/{name:[a-z][a-z0-9-]*\.js}", console_module)
    app.router.add_static("/agent/static", STATIC, show_index=False)
