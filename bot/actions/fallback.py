"""Two-stage fallback: ask to rephrase once, then offer a human."""

from __future__ import annotations

from bot.actions.context import Action, ActionContext
from bot.actions.tracker import ActionResult, Tracker


async def action_fallback(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    if tracker.consecutive_fallbacks() >= ctx.routing.consecutive_fallbacks:
        return ActionResult().set_slot("pending_offer", "human").utter("utter_offer_human")
    return ActionResult().utter("utter_clarify")


ACTIONS: dict[str, Action] = {"action_fallback": action_fallback}
