"""Who is calling: a console session (cookie + CSRF header) or a bearer token.

The session cookie is HttpOnly and SameSite=Strict, and every state-changing request made with
it must echo the session's CSRF token in ``X-CSRF-Token``. Bearer tokens are not ambient (a
browser never adds them by itself), so they need no CSRF token. A token in a URL is never read.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from bot.store.agents import AgentStore
from bot.store.sql import utcnow
from bot.store.tables import Agent

SESSION_COOKIE = "triage_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SERVICE_AGENT_ID = "service"


@dataclass(frozen=True)
class Principal:
    agent: Agent
    via: str  # session | agent_token | service_token
    csrf_token: str | None = None
    cookie: str | None = None


def service_agent(queues: list[str]) -> Agent:
    return Agent(
        id=SERVICE_AGENT_ID,
        name="Service",
        role="supervisor",
        queues=queues,
        password_hash=None,
        token_hash=None,
        presence="offline",
        capacity=0,
        created_at=utcnow(),
    )


def json_error(status: int, code: str, message: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden}.get(
        status, web.HTTPBadRequest
    )
    return cls(
        text=web.json_response({"error": code, "message": message}).text,
        content_type="application/json",
    )


async def identify(
    request: web.Request, agents: AgentStore, service_token: str, all_queues: list[str]
) -> Principal | None:
    header = request.headers.get("Authorization", "")
    if header:
        if not header.startswith("Bearer "):
            return None
        token = header.removeprefix("Bearer ").strip()
        if not token:
            return None
        if hmac.compare_digest(token.encode(), service_token.encode()):
            return Principal(service_agent(all_queues), "service_token")
        agent = await agents.by_token(token)
        return Principal(agent, "agent_token") if agent is not None else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    found = await agents.session_of(cookie)
    if found is None:
        return None
    agent, session = found
    return Principal(agent, "session", session.csrf_token, cookie)


def check_csrf(request: web.Request, principal: Principal) -> None:
    if principal.via != "session" or request.method in SAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER, "")
    expected = principal.csrf_token or ""
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise json_error(403, "csrf", f"a state change needs the {CSRF_HEADER} header")
