"""Who is calling: a console session (cookie + CSRF header) or a bearer token.

The session cookie is HttpOnly and SameSite=Strict, and every state-changing request made with
it must echo the session's CSRF token in ``X-CSRF-Token``. Bearer tokens are not ambient (a
browser never adds them by itself), so they need no CSRF token. A token in a URL is never read.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from bot.clock import utcnow
from bot.store.protocols import AgentRecord, AgentRecords

SESSION_COOKIE = "triage_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SERVICE_AGENT_ID = "service"


@dataclass(frozen=True)
class Principal:
    agent: AgentRecord
    via: str  # session | agent_token | service_token
    csrf_token: str | None = None
    cookie: str | None = None


@dataclass(frozen=True)
class ServiceAgent:
    """The identity of a caller with the service token: a supervisor that is no person."""

    id: str
    name: str
    role: str
    queues: list[str]
    presence: str
    capacity: int
    created_at: datetime


def service_agent(queues: list[str]) -> AgentRecord:
    return ServiceAgent(
        id=SERVICE_AGENT_ID,
        name="Service",
        role="supervisor",
        queues=queues,
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
    request: web.Request, agents: AgentRecords, service_token: str, all_queues: list[str]
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
