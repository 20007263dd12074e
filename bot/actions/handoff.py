"""Escalation actions: hand over to a queue (or offer a callback out of hours), answer offers.

Which queue and why are decided here from the routing table and the tracker:
- an intent routed to a queue goes to that queue;
- an explicit request for a person goes to the queue of the conversation's topic when one is
  known (the last topic or flow intent), otherwise to the fallback queue;
- a failed flow goes to the flow's failure queue; accepted fallback offers to the fallback queue;
- an action that could not reach the back office hands over to its flow's failure queue (or the
  fallback queue), with reason ``backoffice_unavailable`` and the operation in the envelope.
"""

from __future__ import annotations

from typing import Any

from bot.actions.context import Action, ActionContext
from bot.actions.tracker import ActionResult, Tracker
from bot.backoffice.protocol import BackOfficeUnavailable
from bot.clock import utcnow
from bot.config.routing import RouteKind
from bot.handoff.envelope import HandoffRequest, IntentSeen, create_handoff
from bot.handoff.state import HandoffMode

# Slots that describe the dialogue machinery, not the customer's case (a pack adds its own
# private ones, such as identity answers, in pack.yml).
INTERNAL_SLOTS = frozenset(
    {
        "requested_slot",
        "pending_offer",
        "id_attempts",
        "flow_failed",
        "handoff_id",
        "session_started_metadata",
    }
)
BACK_OFFICE_DOWN = {
    "it": "Mi scusi, in questo momento non riesco a consultare i nostri sistemi. Quello che mi ha "
    "scritto non va perso: lo passo a un collega, che lo vedrà.",
    "en": "I'm sorry, I cannot reach our systems right now. Nothing you told me is lost: I am "
    "passing it to a colleague, who will see it.",
}


def _topic_queue(ctx: ActionContext, tracker: Tracker) -> tuple[str, str]:
    """(queue, topic) from the most recent intent that names a topic."""
    for turn in reversed(tracker.user_turns()):
        route = ctx.routing.route_for(turn.intent)
        if route.kind is RouteKind.QUEUE and route.name != ctx.routing.fallback_queue:
            return route.name, str(turn.intent)
        if route.kind is RouteKind.FLOW:
            return ctx.routing.flow_failure_queue[route.name], route.name
    return ctx.routing.fallback_queue, "general"


async def hand_over(
    ctx: ActionContext,
    tracker: Tracker,
    result: ActionResult,
    queue: str,
    topic: str,
    reason: str,
    mode: HandoffMode = HandoffMode.LIVE,
    incident: dict[str, Any] | None = None,
) -> ActionResult:
    """Queue the customer (or book a callback); offers a callback first when out of hours.
    ``incident`` (what failed) goes into the envelope."""
    language = tracker.slots.get("language")
    label = ctx.routing.queues[queue].label(language if isinstance(language, str) else None)
    result.end_form()
    if mode == HandoffMode.LIVE and not ctx.routing.queue_is_open(queue, utcnow()):
        result.set_slot("pending_offer", f"callback:{queue}:{topic}:{reason}")
        return result.utter("utter_offer_callback", queue_label=label)
    private = INTERNAL_SLOTS | ctx.private_slots
    handoff = await create_handoff(
        ctx.store,
        ctx.back_office,
        ctx.routing,
        HandoffRequest(
            conversation_id=tracker.sender_id,
            queue=queue,
            topic=topic,
            reason=reason,
            mode=mode,
            intents=tuple(
                IntentSeen(t.intent, t.confidence, t.timestamp) for t in tracker.user_turns()
            ),
            slots={k: v for k, v in tracker.slots.items() if k not in private},
            turn_message=tracker.turn_message,
            incident=incident,
        ),
    )
    result.set_slot("handoff_id", handoff.id).set_slot("pending_offer", None)
    if mode == HandoffMode.CALLBACK:
        return result.utter("utter_callback_booked", queue_label=label)
    if reason == "failed_flow":
        return result.utter("utter_flow_failed", queue_label=label)
    return result.utter("utter_handoff_queued", queue_label=label)


async def action_handoff(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    intent = tracker.latest_intent
    route = ctx.routing.route_for(intent)
    if route.kind is RouteKind.QUEUE and route.name != ctx.routing.fallback_queue:
        queue, topic, reason = route.name, str(intent), "topic"
    else:
        queue, topic = _topic_queue(ctx, tracker)
        reason = "explicit_request"
    return await hand_over(ctx, tracker, ActionResult(), queue, topic, reason)


async def action_answer_offer(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    pending = tracker.slots.get("pending_offer")
    result = ActionResult().set_slot("pending_offer", None)
    if not pending:
        return result.utter("utter_nothing_to_confirm")
    if tracker.latest_intent != "affirm":
        return result.utter("utter_offer_declined")
    kind, _, rest = str(pending).partition(":")
    if kind == "callback":
        queue, topic, reason = rest.split(":", 2)
        return await hand_over(
            ctx, tracker, result, queue, topic, reason, mode=HandoffMode.CALLBACK
        )
    queue, topic = _topic_queue(ctx, tracker)
    return await hand_over(ctx, tracker, result, queue, topic, "consecutive_fallbacks")


def _flow_of_action(ctx: ActionContext, action: str) -> str | None:
    """The flow an action belongs to, by the names Rasa gives a flow's form and action."""
    for flow in ctx.routing.flow_failure_queue:
        if action in (f"action_{flow}", f"validate_{flow}_form"):
            return flow
    return None


async def back_office_down(
    ctx: ActionContext, tracker: Tracker, action: str, error: BackOfficeUnavailable
) -> ActionResult:
    """The customer is told the systems cannot be reached and handed to a person; the envelope
    says which operation failed, so the agent can do it by hand."""
    flow = _flow_of_action(ctx, action)
    queue = ctx.routing.flow_failure_queue[flow] if flow else ctx.routing.fallback_queue
    language = tracker.slots.get("language")
    result = ActionResult().say(BACK_OFFICE_DOWN[language if language == "en" else "it"])
    incident = {
        "kind": "backoffice_unavailable",
        "operation": error.operation,
        "action": action,
        "flow": flow,
    }
    return await hand_over(
        ctx, tracker, result, queue, flow or "general", "backoffice_unavailable", incident=incident
    )


ACTIONS: dict[str, Action] = {
    "action_handoff": action_handoff,
    "action_answer_offer": action_answer_offer,
}
