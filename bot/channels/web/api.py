"""REST handlers for agents, supervisors and integrations (see docs/agent-api.md)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aiohttp import web

from bot.channels.web.auth import SESSION_COOKIE, Principal
from bot.channels.web.keys import DESK, PRINCIPAL, RUNTIME
from bot.clock import utcnow
from bot.errors import BadRequest, Forbidden, NotFound
from bot.handoff.desk import Desk, message_frame
from bot.handoff.state import WAITING, HandoffState, numbered
from bot.store.protocols import AgentRecord, HandoffRecord

MAX_AGENT_TEXT = 4000
MAX_NOTE = 1000


def agent_json(agent: AgentRecord) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "role": agent.role,
        "queues": list(agent.queues),
        "presence": agent.presence,
    }


def handoff_json(h: HandoffRecord, position: int | None = None) -> dict[str, Any]:
    customer = h.envelope.get("customer") or {}
    intents = [i.get("intent") for i in h.envelope.get("intents") or [] if i.get("intent")]
    started = h.enqueued_at or h.created_at
    return {
        "id": h.id,
        "conversation_id": h.conversation_id,
        "state": h.state,
        "queue": h.queue,
        "priority": h.priority,
        "channel": h.channel,
        "language": h.language,
        "topic": h.topic,
        "reason": h.reason,
        "mode": h.mode,
        "waited_s": int((utcnow() - started).total_seconds()),
        "position": position,
        "offered_to": h.offered_to,
        "offer_expires_at": h.offer_expires_at.isoformat() if h.offer_expires_at else None,
        "agent_id": h.agent_id,
        "customer": {
            "id": customer.get("id"),
            "name": customer.get("name"),
            "verified": bool(customer.get("verified")),
        },
        "intent": intents[-1] if intents else None,
        "created_at": h.created_at.isoformat(),
    }


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _visible_queues(agent: AgentRecord, desk: Desk) -> list[str]:
    return list(desk.routing.queues) if agent.role == "supervisor" else list(agent.queues)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "bad_json", "message": "the body must be JSON"}',
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, limit: int, *, required: bool = True) -> str:
    value = body.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"{key} must be a non-empty string")
    if len(value) > limit:
        raise BadRequest(f"{key} is longer than {limit} characters")
    return value


# sessions


async def post_session(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    body = await _body(request)
    agent = None
    if isinstance(body.get("token"), str):
        agent = await desk.agents.by_token(body["token"])
    elif isinstance(body.get("agent_id"), str) and isinstance(body.get("password"), str):
        agent = await desk.agents.check_password(body["agent_id"], body["password"][:1024])
    if agent is None:
        await asyncio.sleep(0.2)  # slows guessing; the KDF already costs ~50 ms
        return web.json_response(
            {"error": "bad_credentials", "message": "unknown agent or wrong password"},
            status=401,
        )
    cookie, csrf = await desk.agents.open_session(agent.id)
    response = web.json_response({"agent": agent_json(agent), "csrf_token": csrf})
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
        max_age=12 * 3600,
    )
    return response


async def get_session(request: web.Request) -> web.Response:
    p = _principal(request)
    agent = await request.app[DESK].agents.get(p.agent.id) if p.via != "service_token" else p.agent
    return web.json_response({"agent": agent_json(agent), "csrf_token": p.csrf_token})


async def delete_session(request: web.Request) -> web.Response:
    p = _principal(request)
    desk = request.app[DESK]
    if p.cookie:
        await desk.agents.close_session(p.cookie)
        await desk.set_presence(p.agent, "offline")
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def put_presence(request: web.Request) -> web.Response:
    p = _principal(request)
    if p.via == "service_token":
        raise Forbidden("the service token has no presence")
    presence = (await _body(request)).get("presence")
    if presence not in ("available", "away"):
        raise BadRequest("presence must be available or away")
    await request.app[DESK].set_presence(p.agent, presence)
    return web.json_response({"presence": presence})


# queues and handoffs


async def get_queues(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    agent = _principal(request).agent
    names = _visible_queues(agent, desk)
    waiting = await desk.queue.waiting(names)
    available = await desk.agents.available_for()
    now = utcnow()
    queues = []
    for name in names:
        rows = [h for h in waiting if h.queue == name]
        queue = desk.routing.queues[name]
        oldest = min((h.enqueued_at or h.created_at for h in rows), default=None)
        queues.append(
            {
                "name": name,
                "label": dict(queue.labels),
                "open": desk.routing.queue_is_open(name, now),
                "waiting": [handoff_json(h, i) for i, h in enumerate(rows, start=1)],
                "longest_wait_s": int((now - oldest).total_seconds()) if oldest else 0,
                "agents_available": sum(1 for a in available if name in a.queues),
            }
        )
    mine = [handoff_json(h) for h in await desk.queue.of_agent(agent.id)]
    transfer_queues = [
        {"name": name, "label": dict(q.labels)} for name, q in desk.routing.queues.items()
    ]
    return web.json_response({"queues": queues, "mine": mine, "transfer_queues": transfer_queues})


async def list_handoffs(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    agent = _principal(request).agent
    names = _visible_queues(agent, desk)
    queue = request.query.get("queue")
    if queue is not None:
        if queue not in names:
            raise Forbidden("not one of your queues")
        names = [queue]
    state = request.query.get("state", "waiting")
    if state == "waiting":  # whole queues in service order: positions come from this one query
        handoffs = [handoff_json(h, p) for p, h in numbered(await desk.queue.waiting(names))]
    elif state == HandoffState.CALLBACK_REQUESTED:
        handoffs = [handoff_json(h) for h in await desk.queue.callbacks(names)]
    else:
        raise BadRequest("state must be waiting or callback_requested")
    return web.json_response({"handoffs": handoffs})


async def _visible_handoff(request: web.Request) -> HandoffRecord:
    desk = request.app[DESK]
    agent = _principal(request).agent
    handoff = await desk.queue.get_handoff(request.match_info["handoff_id"])
    if handoff is None:
        raise NotFound("no such handoff")
    if agent.role != "supervisor" and handoff.queue not in agent.queues:
        raise Forbidden("this handoff is not in one of your queues")
    return handoff


async def get_handoff(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    handoff = await _visible_handoff(request)
    events = [
        {
            "state": e.state,
            "queue": e.queue,
            "agent_id": e.agent_id,
            "at": e.at.isoformat(),
            "detail": e.detail,
        }
        for e in await desk.queue.events(handoff.id)
    ]
    envelope = {**handoff.envelope, "state_history": events}
    messages = [
        {k: v for k, v in message_frame(m).items() if k != "type"}
        for m in await desk.store.conversations.messages(handoff.conversation_id)
    ]
    position = await desk.queue.position(handoff) if handoff.state in WAITING else None
    return web.json_response(
        {
            "handoff": handoff_json(handoff, position),
            "envelope": envelope,
            "events": events,
            "messages": messages,
        }
    )


async def accept(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    handoff = await desk.accept(_principal(request).agent, request.match_info["handoff_id"])
    return web.json_response({"handoff": handoff_json(handoff)})


async def decline(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    handoff = await desk.decline(_principal(request).agent, request.match_info["handoff_id"])
    return web.json_response({"handoff": handoff_json(handoff)})


async def post_agent_message(request: web.Request) -> web.Response:
    text = _text(await _body(request), "text", MAX_AGENT_TEXT)
    desk = request.app[DESK]
    frame = await desk.agent_message(
        _principal(request).agent, request.match_info["handoff_id"], text
    )
    return web.json_response({"message": {k: v for k, v in frame.items() if k != "type"}})


async def post_typing(request: web.Request) -> web.Response:
    on = (await _body(request)).get("on")
    if not isinstance(on, bool):
        raise BadRequest("on must be true or false")
    desk = request.app[DESK]
    await desk.agent_typing(_principal(request).agent, request.match_info["handoff_id"], on)
    return web.Response(status=204)


async def transfer(request: web.Request) -> web.Response:
    body = await _body(request)
    queue = _text(body, "queue", 64)
    note = _text(body, "note", MAX_NOTE, required=False)
    desk = request.app[DESK]
    handoff = await desk.transfer(
        _principal(request).agent, request.match_info["handoff_id"], queue, note
    )
    return web.json_response({"handoff": handoff_json(handoff)})


async def close(request: web.Request) -> web.Response:
    disposition = _text(await _body(request), "disposition", 32)
    desk = request.app[DESK]
    handoff = await desk.close(
        _principal(request).agent, request.match_info["handoff_id"], disposition
    )
    return web.json_response({"handoff": handoff_json(handoff)})


async def release(request: web.Request) -> web.Response:
    note = _text(await _body(request), "note", MAX_NOTE, required=False)
    desk = request.app[DESK]
    handoff = await desk.release(
        _principal(request).agent, request.match_info["handoff_id"], note
    )
    return web.json_response({"handoff": handoff_json(handoff)})


# conversations and metrics


async def get_conversation(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    agent = _principal(request).agent
    conversation = await desk.store.conversations.get_conversation(
        request.match_info["conversation_id"]
    )
    if agent.role != "supervisor":
        handoff = await desk.queue.active_for_conversation(conversation.id)
        if handoff is None or (handoff.queue not in agent.queues and handoff.agent_id != agent.id):
            raise Forbidden("this conversation is not in one of your queues")
    messages = [
        {k: v for k, v in message_frame(m).items() if k != "type"}
        for m in await desk.store.conversations.messages(conversation.id)
    ]
    return web.json_response(
        {
            "conversation": {
                "id": conversation.id,
                "channel": conversation.channel,
                "language": conversation.language,
                "state": conversation.state,
                "customer_id": conversation.customer_id if conversation.verified else None,
                "verified": conversation.verified,
                "rating": conversation.rating,
                "created_at": conversation.created_at.isoformat(),
            },
            "messages": messages,
        }
    )


async def get_metrics(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    agent = _principal(request).agent
    if agent.role != "supervisor":
        raise Forbidden("metrics are for supervisors")
    try:
        hours = float(request.query.get("hours", "24"))
    except ValueError:
        raise BadRequest("hours must be a number") from None
    if not 0 < hours <= 24 * 31:
        raise BadRequest("hours must be within 0-744")
    now = utcnow()
    figures = await desk.store.metrics.window_figures(now - timedelta(hours=hours))
    waiting = await desk.queue.waiting()
    available = await desk.agents.available_for()
    queues = []
    for name in desk.routing.queues:
        rows = [h for h in waiting if h.queue == name]
        oldest = min((h.enqueued_at or h.created_at for h in rows), default=None)
        queues.append(
            {
                "name": name,
                "waiting": len(rows),
                "longest_wait_s": int((now - oldest).total_seconds()) if oldest else 0,
                "agents_available": sum(1 for a in available if name in a.queues),
            }
        )
    agents = []
    for a in await desk.agents.all():
        accepted, _ = await desk.queue.load_of(a.id)
        agents.append({"id": a.id, "name": a.name, "presence": a.presence, "active": accepted})
    runtime = request.app[RUNTIME]
    return web.json_response(
        {
            "window_h": hours,
            "queues": queues,
            "agents": agents,
            "handoff_rate_by_intent": [
                {
                    "intent": r.intent,
                    "conversations": r.conversations,
                    "handoffs": r.handoffs,
                    "rate": round(r.rate, 4),
                }
                for r in figures.by_intent
            ],
            "containment_rate": round(figures.containment_rate, 4),
            "abandonment_rate": round(figures.abandonment_rate, 4),
            "conversations": figures.conversations,
            "handoffs": figures.handed_off,
            "health": {"rasa": await runtime.nlu.is_ready(), "database": True},
        }
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/session", post_session)
    r.add_get("/api/session", get_session)
    r.add_delete("/api/session", delete_session)
    r.add_put("/api/agents/me/presence", put_presence)
    r.add_get("/api/queues", get_queues)
    r.add_get("/api/handoffs", list_handoffs)
    r.add_get("/api/handoffs/{handoff_id}", get_handoff)
    r.add_post("/api/handoffs/{handoff_id}/accept", accept)
    r.add_post("/api/handoffs/{handoff_id}/decline", decline)
    r.add_post("/api/handoffs/{handoff_id}/messages", post_agent_message)
    r.add_post("/api/handoffs/{handoff_id}/typing", post_typing)
    r.add_post("/api/handoffs/{handoff_id}/transfer", transfer)
    r.add_post("/api/handoffs/{handoff_id}/close", close)
    r.add_post("/api/handoffs/{handoff_id}/release", release)
    r.add_get("/api/conversations/{conversation_id}", get_conversation)
    r.add_get("/api/metrics", get_metrics)
