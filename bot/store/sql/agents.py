"""Agents of the console, their sign-in sessions and presence."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from bot.clock import utcnow
from bot.errors import Conflict, NotFound
from bot.secrets_kdf import hash_password, new_token, token_digest, verify_password
from bot.store.sql.engine import Sessions
from bot.store.sql.tables import Agent, AgentSession

AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
ROLES = ("agent", "supervisor")
PRESENCE = ("available", "away", "offline")
SESSION_LIFETIME = timedelta(hours=12)
# verifying against a fixed hash when the name is unknown keeps sign-in time the same
_DUMMY_HASH = hash_password("not-a-real-password-" + secrets.token_hex(8))


class SqlAgents:
    def __init__(self, db: Sessions) -> None:
        self.db = db

    async def add(
        self,
        agent_id: str,
        name: str,
        role: str,
        queues: Sequence[str],
        *,
        password: str | None = None,
        capacity: int = 2,
    ) -> str:
        """Create an agent; returns a new API/sign-in token (shown once, stored as a digest)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if not AGENT_ID.fullmatch(agent_id):
            raise ValueError("an agent id is 1-64 letters, digits, '.' or '-'")
        token = new_token()
        password_hash = await asyncio.to_thread(hash_password, password) if password else None
        async with self.db.session() as s:
            if await s.get(Agent, agent_id) is not None:
                raise Conflict(f"agent {agent_id!r} already exists")
            s.add(
                Agent(
                    id=agent_id,
                    name=name,
                    role=role,
                    queues=list(queues),
                    password_hash=password_hash,
                    token_hash=token_digest(token),
                    presence="offline",
                    capacity=capacity,
                    created_at=utcnow(),
                )
            )
        return token

    async def get(self, agent_id: str) -> Agent:
        async with self.db.single() as s:
            agent = await s.get(Agent, agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id!r} does not exist")
        return agent

    async def all(self) -> Sequence[Agent]:
        async with self.db.session() as s:
            return (await s.scalars(select(Agent).order_by(Agent.id))).all()

    async def by_token(self, token: str) -> Agent | None:
        async with self.db.single() as s:
            return await s.scalar(select(Agent).where(Agent.token_hash == token_digest(token)))

    async def check_password(self, agent_id: str, password: str) -> Agent | None:
        async with self.db.session() as s:
            agent = await s.get(Agent, agent_id)
        encoded = agent.password_hash if agent and agent.password_hash else _DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, password, encoded)
        return agent if ok and agent is not None and agent.password_hash else None

    async def set_presence(self, agent_id: str, presence: str) -> None:
        if presence not in PRESENCE:
            raise ValueError(f"presence must be one of {PRESENCE}")
        async with self.db.session() as s:
            await s.execute(update(Agent).where(Agent.id == agent_id).values(presence=presence))

    async def available_for(self, queue: str | None = None) -> list[Agent]:
        async with self.db.single() as s:
            agents = (await s.scalars(select(Agent).where(Agent.presence == "available"))).all()
        return [a for a in agents if queue is None or queue in a.queues]

    async def reset_presence(self) -> None:
        """At start-up nobody is connected yet: everyone is offline until they sign in again."""
        async with self.db.session() as s:
            await s.execute(update(Agent).values(presence="offline"))

    # sessions

    async def open_session(self, agent_id: str, now: datetime | None = None) -> tuple[str, str]:
        """(cookie value, CSRF token) of a new session."""
        now = now or utcnow()
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        async with self.db.session() as s:
            await s.execute(delete(AgentSession).where(AgentSession.expires_at < now))
            s.add(
                AgentSession(
                    id=token_digest(cookie),
                    agent_id=agent_id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + SESSION_LIFETIME,
                )
            )
        return cookie, csrf

    async def session_of(self, cookie: str) -> tuple[Agent, AgentSession] | None:
        async with self.db.session() as s:
            found = await s.get(AgentSession, token_digest(cookie))
            if found is None or found.expires_at < utcnow():
                return None
            agent = await s.get(Agent, found.agent_id)
        return (agent, found) if agent is not None else None

    async def close_session(self, cookie: str) -> None:
        async with self.db.session() as s:
            await s.execute(delete(AgentSession).where(AgentSession.id == token_digest(cookie)))
