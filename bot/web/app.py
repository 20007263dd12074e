"""The gateway's HTTP application: health, the handoff API and a REST turn endpoint.

Everything under ``/api/`` needs ``Authorization: Bearer <token>`` (never a token in the URL).
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.core.conversation import TurnResult
from bot.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
CONVERSATION_ID_MAX = 64


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
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        expected = request.app[RUNTIME].api_token
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(401, "unauthorized", "a valid bearer token is required")
    response: web.StreamResponse = await handler(request)
    return response


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    rasa_ready = await runtime.nlu.is_ready()
    rasa: dict[str, Any] = {"ready": rasa_ready, "url": runtime.nlu.base_url}
    if runtime.supervisor is not None:
        h = runtime.supervisor.health()
        rasa.update(
            state=h.state.value,
            pid=h.pid,
            restarts=h.restarts,
            model=h.model,
            last_exit_code=h.last_exit_code,
        )
    database = True
    try:
        async with runtime.store.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    except Exception:  # any driver error means "not healthy"; the body says which part
        database = False
    ok = rasa_ready and database
    return web.json_response(
        {"status": "ok" if ok else "degraded", "rasa": rasa, "database": {"ready": database}},
        status=200 if ok else 503,
    )


async def get_handoff(request: web.Request) -> web.Response:
    handoff = await request.app[RUNTIME].store.get_handoff(request.match_info["handoff_id"])
    if handoff is None:
        return _error(404, "not_found", "no such handoff")
    return web.json_response(handoff.envelope)


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
    turn = await request.app[RUNTIME].conversations.handle(
        conversation_id, body["text"], channel=channel, language=language
    )
    return web.json_response(turn_as_dict(turn))


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[require_token], client_max_size=64 * 1024)
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/handoffs/{handoff_id}", get_handoff)
    app.router.add_post("/api/conversations/{conversation_id}/messages", post_message)
    return app
