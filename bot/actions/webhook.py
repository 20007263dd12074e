"""The action webhook Rasa calls (its action-server protocol), served by the gateway on loopback.

Each action is an async function ``(ActionContext, Tracker) -> ActionResult``. A form validator
that finds nothing to validate raises ``RejectAction``, which Rasa turns into the form's
"unhappy path" so another rule (a request for a human) can take over.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.actions.tracker import ActionResult, Tracker
from bot.core.routing import RoutingTable
from bot.failpoints import NO_FAILPOINTS, Failpoint, Failpoints
from bot.store.action_journal import ActionJournal, ActionKey
from bot.store.sql import SqlStore

log = logging.getLogger(__name__)


# Rasa runs the session start before it logs the customer message: its tracker's latest
# message is the previous turn's, so it has no turn of its own to be journaled in.
UNJOURNALED = frozenset({"action_session_start"})


@dataclass(frozen=True)
class ActionContext:
    store: SqlStore
    routing: RoutingTable
    failpoints: Failpoints = NO_FAILPOINTS

    @property
    def journal(self) -> ActionJournal:
        return ActionJournal(self.store)


Action = Callable[[ActionContext, Tracker], Awaitable[ActionResult]]


class RejectAction(Exception):
    """The action cannot run on this tracker (Rasa's ActionExecutionRejection)."""


def action_registry() -> dict[str, Action]:
    from bot.actions import fallback, flows, forms, handoff, session

    registry: dict[str, Action] = {}
    for module in (fallback, flows, forms, handoff, session):
        registry.update(module.ACTIONS)
    return registry


async def run_action(
    registry: dict[str, Action], ctx: ActionContext, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """Dispatch one webhook call; returns the HTTP status and JSON body for Rasa."""
    name = str(body.get("next_action") or "")
    action = registry.get(name)
    if action is None:
        return 404, {"error": f"no custom action named {name!r}", "action_name": name}
    tracker = Tracker.from_request(body)
    key = _journal_key(tracker, name)
    if key is not None:
        recorded = await ctx.journal.recorded(key)
        if recorded is not None:  # the turn is being run again after a crash: same answer
            return recorded.status, recorded.answer
    status, answer = 200, {}
    try:
        answer = (await action(ctx, tracker)).as_json()
    except RejectAction as exc:
        status, answer = 400, {"error": str(exc) or "rejected", "action_name": name}
    ctx.failpoints.reach(Failpoint.ACTION_RAN, name)
    if key is not None:
        await ctx.journal.record(key, status, answer)
    ctx.failpoints.reach(Failpoint.ACTION_JOURNALED, name)
    return status, answer


def _journal_key(tracker: Tracker, action: str) -> ActionKey | None:
    turn = tracker.turn_message
    if turn is None or action in UNJOURNALED:
        return None
    return ActionKey(tracker.sender_id, turn, action, tracker.runs_this_turn(action))


ACTION_CONTEXT = web.AppKey("action_context", ActionContext)
ACTION_REGISTRY = web.AppKey("action_registry", dict)


async def _webhook(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    status, payload = await run_action(
        request.app[ACTION_REGISTRY], request.app[ACTION_CONTEXT], body
    )
    if status == 404:
        log.error("Rasa asked for an unknown action", extra={"action": payload["action_name"]})
    return web.json_response(payload, status=status)


def make_action_app(ctx: ActionContext) -> web.Application:
    """The loopback-only application that serves custom actions to Rasa."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[ACTION_CONTEXT] = ctx
    app[ACTION_REGISTRY] = action_registry()
    app.router.add_post("/webhook", _webhook)
    return app
