"""The gateway's HTTP application: health, the chat socket and widget, the agent console, the
REST API with its OpenAPI document.

Everything under ``/api/`` needs a console session or a bearer token (never a token in the URL);
see docs/agent-api.md. Errors of the domain become JSON answers here, at the boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from bot.channels.web import api, console
from bot.channels.web.auth import check_csrf, identify
from bot.channels.web.chat import MAX_FRAME_BYTES, ChatConfig, ChatConnection, origin_allowed
from bot.channels.web.keys import CHAT_CONFIG, CHAT_LIMITER, DESK, PRINCIPAL, RUNTIME, SOCKETS
from bot.channels.web.openapi import openapi_document
from bot.channels.web.ratelimit import RateLimiter
from bot.conversation.service import TurnResult
from bot.conversation.turn_locks import TurnBusy
from bot.errors import BadRequest, Conflict, Forbidden, NotFound
from bot.handoff.webhooks import WebhookSender
from bot.runtime import Runtime

log = logging.getLogger(__name__)

CONVERSATION_ID_MAX = 64
CLUSTER_RECOVERY_S = 2.0  # how often a cluster looks for messages a dead node left unanswered
PUBLIC_API = {("POST", "/api/session"), ("GET", "/api/openapi.json")}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def turn_as_dict(turn: TurnResult) -> dict[str, Any]:
    return {
        "conversation_id": turn.conversation_id,
        "message_id": turn.message_id,
        "language": turn.language,
        "replies": [r.as_dict() for r in turn.replies],
        "intent": {"name": turn.intent, "confidence": turn.confidence},
        "entities": [e.as_dict() for e in turn.entities],
        "route": turn.route.as_dict() if turn.route else None,
        "handoff_id": turn.handoff_id,
        "error": turn.error,
    }


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and (request.method, request.path) not in PUBLIC_API:
        runtime = request.app[RUNTIME]
        principal = await identify(
            request,
            request.app[DESK].agents,
            runtime.api_token,
            list(runtime.routing.queues),
        )
        if principal is None:
            return _error(401, "unauthorized", "sign in or give a valid bearer token")
        check_csrf(request, principal)
        request[PRINCIPAL] = principal
    return await handler(request)


@web.middleware
async def domain_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotFound as exc:
        return _error(404, "not_found", str(exc))
    except Conflict as exc:
        return _error(409, "conflict", str(exc))
    except Forbidden as exc:
        return _error(403, "forbidden", str(exc))
    except BadRequest as exc:
        return _error(400, "bad_request", str(exc))
    except TurnBusy as exc:  # nothing was stored: the caller may send it again
        response = _error(503, "busy", str(exc))
        response.headers["Retry-After"] = "1"
        return response


async def database_ready(runtime: Runtime) -> bool:
    try:
        async with runtime.store.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    except Exception:  # any driver error means "not healthy"; the body says which part
        return False
    return True


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    rasa_ready = await runtime.nlu.is_ready()
    rasa: dict[str, Any] = {"ready": rasa_ready, "urls": runtime.nlu.base_urls}
    if runtime.supervisors:
        rasa["workers"] = [
            {
                "state": h.state.value,
                "pid": h.pid,
                "restarts": h.restarts,
                "model": h.model,
                "last_exit_code": h.last_exit_code,
            }
            for h in (supervisor.health() for supervisor in runtime.supervisors)
        ]
    database = await database_ready(runtime)
    parts = {"rasa": rasa_ready, "database": database, **runtime.readiness.parts()}
    not_ready = sorted(part for part, ready in parts.items() if not ready)
    draining = runtime.readiness.draining
    if draining:  # leaving: no new chats, whatever its parts say (the proxy sends them elsewhere)
        not_ready = sorted([*not_ready, "draining"])
    body: dict[str, Any] = {
        "status": "draining" if draining else "degraded" if not_ready else "ok",
        "not_ready": not_ready,
        "rasa": rasa,
        "database": {"ready": database},
        "parts": parts,
    }
    return web.json_response(body, status=503 if not_ready else 200)


async def post_message(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    if len(conversation_id) > CONVERSATION_ID_MAX:
        return _error(400, "bad_conversation_id", "conversation id is too long")
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "bad_json", "the body must be JSON")
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return _error(400, "bad_message", 'the body must be {"text": "..."}')
    language = body.get("language")
    if language not in (None, "it", "en"):
        return _error(400, "bad_language", "language must be it or en")
    channel = body.get("channel", "api")
    if channel not in ("api", "chat", "phone", "cli"):
        return _error(400, "bad_channel", "channel must be api, chat, phone or cli")
    turn = await request.app[DESK].customer_message(
        conversation_id, body["text"], channel=channel, language=language
    )
    return web.json_response(turn_as_dict(turn))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def chat_ws(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CHAT_CONFIG]
    if not origin_allowed(request, config.allowed_origins):
        raise web.HTTPForbidden(text="this origin may not open the chat")
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    await ChatConnection(ws, request.app[DESK], config, request.app[CHAT_LIMITER]).run()
    return ws


async def widget_file(request: web.Request) -> web.FileResponse:
    name = {"/chat/widget.js": "widget.js", "/chat/widget.css": "widget.css"}[request.path]
    response = web.FileResponse(console.STATIC / name)
    response.headers["Access-Control-Allow-Origin"] = "*"  # public files for host pages
    return response


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)  # no icon; an empty answer keeps browsers' logs clean


async def demo_page(request: web.Request) -> web.FileResponse:
    """The domain pack's host page for the widget (its demo.html), else a plain one."""
    own = request.app[RUNTIME].pack.manifest.root / "demo.html"
    return web.FileResponse(own if own.is_file() else console.STATIC / "demo.html")


async def landing_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(console.STATIC / "landing.html")


async def background(app: web.Application) -> AsyncIterator[None]:
    """The desk's dispatcher, its recovery of unanswered messages and the webhook sender:
    started with the app, cancelled with it."""
    desk = app[DESK]
    sender = desk.notifier if isinstance(desk.notifier, WebhookSender) else None
    if sender is not None:
        await sender.start()
    dispatcher = asyncio.create_task(desk.run_dispatcher())
    # in a cluster, recovery goes on: a node that dies leaves messages for the others
    clustered = app[RUNTIME].settings.clustered
    recovery = asyncio.create_task(
        desk.run_recovery(again_every_s=CLUSTER_RECOVERY_S if clustered else None)
    )
    try:
        yield
    finally:
        for task in (recovery, dispatcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if sender is not None:
            await sender.stop()
        await desk.release_leases()


async def close_sockets(app: web.Application) -> None:
    """Close every chat and console socket (1001): clients reconnect to the next instance."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"service restarting")


def make_app(runtime: Runtime) -> web.Application:
    settings = runtime.settings
    app = web.Application(
        middlewares=[security_headers, domain_errors, authenticate], client_max_size=64 * 1024
    )
    app[RUNTIME] = runtime
    app[DESK] = runtime.desk
    app[CHAT_CONFIG] = ChatConfig(
        secret=runtime.resume_key,
        identity_secret=settings.identity_secret,
        allowed_origins=frozenset(settings.chat_origins),
    )
    app[CHAT_LIMITER] = RateLimiter(settings.chat_rate_per_s, settings.chat_burst)
    app[SOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(close_sockets)
    app.cleanup_ctx.append(background)
    app.router.add_get("/", landing_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_post("/api/conversations/{conversation_id}/messages", post_message)
    api.add_routes(app)
    app.router.add_get("/chat/ws", chat_ws)
    app.router.add_get("/chat/widget.js", widget_file)
    app.router.add_get("/chat/widget.css", widget_file)
    app.router.add_get("/chat/demo", demo_page)
    app.router.add_get("/favicon.ico", favicon)
    console.add_routes(app)
    return app
