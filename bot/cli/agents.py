"""``triage agents add|list``, and the first-start console account."""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys

from bot.config.routing import load_routing
from bot.config.settings import Settings
from bot.errors import BotError, ConfigError
from bot.store.sql.agents import SqlAgents
from bot.store.sql.store import SqlStore

ADMIN_ID = "admin"


async def cmd_agents_add(settings: Settings, args: argparse.Namespace) -> int:
    routing = load_routing(settings.routing_file)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else []
    unknown = sorted(set(queues) - set(routing.queues))
    if unknown:
        raise ConfigError(
            f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(routing.queues)}"
        )
    if args.role == "agent" and not queues:
        raise ConfigError("an agent needs --queues (the queues they serve)")
    password = None
    if args.password_stdin:
        password = (
            sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
        )
    store = await SqlStore.open(settings.effective_database_url)
    try:
        token = await SqlAgents(store).add(
            args.agent_id,
            args.name or args.agent_id,
            args.role,
            queues or list(routing.queues),
            password=password,
            capacity=args.capacity,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        await store.close()
    print(f"agent {args.agent_id} added ({args.role}); sign-in and API token, shown once:")
    print(token)
    return 0


async def cmd_agents_list(settings: Settings, args: argparse.Namespace) -> int:
    store = await SqlStore.open(settings.effective_database_url)
    try:
        for agent in await SqlAgents(store).all():
            login = "password+token" if agent.password_hash else "token"
            print(
                f"{agent.id:16} {agent.role:10} {agent.presence:9} {login:14} "
                f"{','.join(agent.queues)}"
            )
    finally:
        await store.close()
    return 0


async def ensure_first_account(store: SqlStore, settings: Settings, queues: list[str]) -> bool:
    """With no agent at all, create the supervisor ``admin`` with a random password written to
    ``<data dir>/admin_password`` (mode 600). Returns whether it was created now."""
    agents = SqlAgents(store)
    if await agents.all():
        return False
    password = secrets.token_urlsafe(12)
    try:
        await agents.add(ADMIN_ID, "Supervisor", "supervisor", queues, password=password)
    except BotError:  # created by another process meanwhile
        return False
    path = settings.data_dir / "admin_password"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return True


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agents", help="console accounts: add one, or list them")
    agents = p.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    a = agents.add_parser("add", help="add an agent or supervisor; prints their token once")
    a.add_argument("agent_id", help="sign-in name (letters, digits, '.', '-')")
    a.add_argument("--name", help="display name shown to customers (default: the id)")
    a.add_argument("--role", choices=("agent", "supervisor"), default="agent")
    a.add_argument("--queues", help="comma-separated queues served (supervisors: default all)")
    a.add_argument("--capacity", type=int, default=2, help="live chats at once (default 2)")
    a.add_argument(
        "--password-stdin", action="store_true", help="read a password (10+ chars) from stdin"
    )
    a.set_defaults(run=cmd_agents_add)
    ls = agents.add_parser("list", help="list the agents")
    ls.set_defaults(run=cmd_agents_list)
