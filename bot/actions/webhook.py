"""The action webhook Rasa calls (its action-server protocol), served by the gateway on loopback.

The service's own actions (session start, fallback, handoff) are ``(ActionContext, Tracker) ->
ActionResult``; the domain pack's (its form validators and flow actions) get a
``TurnFlowContext`` instead. A form validator that finds nothing to validate raises
``RejectAction``, which Rasa turns into the form's "unhappy path" so another rule (a request for
a human) can take over. When an action cannot reach the back office, the customer is told so
plainly and handed to a person (``bot/actions/handoff.py``, reason ``backoffice_unavailable``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bot.actions import fallback, handoff, session
from bot.actions.context import Action, ActionContext
from bot.actions.flow_context import TurnFlowContext
from bot.actions.tracker import ActionResult, Tracker
from bot.backoffice.protocol import BackOfficeUnavailable
from bot.domain import FlowAction, RejectAction
from bot.errors import ConfigError
from bot.failpoints import Failpoint
from bot.store.protocols import ActionKey

log = logging.getLogger(__name__)


# Rasa runs the session start before it logs the customer message: its tracker's latest
# message is the previous turn's, so it has no turn of its own to be journaled in.
UNJOURNALED = frozenset({"action_session_start"})


def _in_flow_context(name: str, flow_action: FlowAction) -> Action:
    async def run(ctx: ActionContext, tracker: Tracker) -> ActionResult:
        if tracker.handed_over_this_turn():
            # A form's validator could not reach the back office and handed the customer over
            # (back_office_down ends the form): Rasa then runs the flow's final action as if
            # the form had completed. It must do nothing, neither fail on the values the form
            # never got nor read data for a customer whose identity was never checked.
            return ActionResult()
        flow_context = TurnFlowContext(ctx, tracker, name)
        result = await flow_action(flow_context, tracker)
        result.effects = result.effects or flow_context.had_effects
        return result

    return run


def action_registry(pack_actions: Mapping[str, FlowAction]) -> dict[str, Action]:
    """The service's own actions and the pack's; a pack may not replace one of ours."""
    registry: dict[str, Action] = {}
    for module in (fallback, handoff, session):
        registry.update(module.ACTIONS)
    for name, flow_action in pack_actions.items():
        if name in registry:
            raise ConfigError(f"the domain pack's action {name!r} would replace the service's")
        registry[name] = _in_flow_context(name, flow_action)
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
    if key is not None and tracker.is_rerun:
        recorded = await ctx.journal.recorded(key)
        if recorded is not None:  # the turn is being run again after a crash: same answer
            return recorded.status, recorded.answer
    status, answer, effects = 200, {}, False
    try:
        result = await action(ctx, tracker)
        answer, effects = result.as_json(), result.effects
    except RejectAction as exc:
        status, answer = 400, {"error": str(exc) or "rejected", "action_name": name}
    except BackOfficeUnavailable as exc:
        log.warning(
            "back office unavailable; the customer is handed over",
            extra={"action": name, "operation": exc.operation},
        )
        answer = (await handoff.back_office_down(ctx, tracker, name, exc)).as_json()
    ctx.failpoints.reach(Failpoint.ACTION_RAN, name)
    if key is not None and effects:
        # Only an answer that changed something is kept: anything else gives the same answer
        # when run again (the service's own handoff finds the one its turn made).
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


def make_action_app(ctx: ActionContext, pack_actions: Mapping[str, FlowAction]) -> web.Application:
    """The loopback-only application that serves custom actions to Rasa."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[ACTION_CONTEXT] = ctx
    app[ACTION_REGISTRY] = action_registry(pack_actions)
    app.router.add_post("/webhook", _webhook)
    return app
