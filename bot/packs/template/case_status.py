"""The flow ``case_status``: a customer asks where their case stands.

Rasa runs the form ``case_status_form``, which asks for the case number and has
``validate_case_status_form`` check each answer; when it completes, ``action_case_status`` asks
the back office (the operation ``case_status`` of pack.yml) and tells the customer. After too
many answers that are not a case number (routing.yml, ``escalation.identification_attempts``)
the flow fails and the customer goes to the flow's ``on_failure`` queue.
"""

from __future__ import annotations

import re

from bot.domain import ActionResult, FlowAction, FlowContext, RejectAction, Tracker

FLOW = "case_status"
FORM = f"{FLOW}_form"
# "PR123456", "pr-123456", "PR 123456", or the six digits alone (as a phone caller keys them)
CASE_NUMBER = re.compile(r"^(?:PR)?[- ]?(\d{6})$")
# Chat inside the form: answered by asking again, never counted as a wrong answer.
SMALL_TALK = frozenset({"greet", "thanks", "affirm", "deny"})
STATES = ("open", "closed")  # what the back office answers: {"found": true, "state": "open"}


def case_number(raw: str) -> str | None:
    """The case number in its written form (``PR`` and six digits), or None."""
    match = CASE_NUMBER.match(raw.strip().upper())
    return f"PR{match.group(1)}" if match else None


async def validate_case_status_form(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    candidates = tracker.slots_to_validate()
    raw = candidates.get("case_number")
    result = ActionResult()
    if raw is None:
        if tracker.latest_intent not in (None, FLOW):
            # nothing to validate: another rule (a person, goodbye) takes over
            raise RejectAction(f"{FORM}: nothing in the last message fills a slot")
        return result
    number = case_number(str(raw))
    if number is not None:
        return result.set_slot("case_number", number)
    result.set_slot("case_number", None)
    if tracker.latest_intent in SMALL_TALK:
        return result
    attempts = int(tracker.slots.get("id_attempts") or 0) + 1
    result.set_slot("id_attempts", attempts)
    if attempts >= ctx.identification_attempts:
        # ends the form early: action_case_status hands over
        return result.set_slot("flow_failed", True).set_slot("requested_slot", None)
    return result.utter("utter_invalid_case_number")


async def action_case_status(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    result = ActionResult().set_slot("id_attempts", 0).set_slot("case_number", None)
    if tracker.slots.get("flow_failed"):
        await ctx.record_outcome(FLOW, "failed", {"why": "no valid case number"})
        result.set_slot("flow_failed", False)
        return await ctx.hand_over(
            result, queue=ctx.failure_queue(FLOW), topic=FLOW, reason="failed_flow"
        )
    number = str(tracker.slots.get("case_number"))
    answer = await ctx.call("case_status", case_number=number)
    state = answer.get("state") if answer.get("found") else None
    if state in STATES:
        result.utter(f"utter_case_{state}", case_number=number)
    else:
        result.utter("utter_case_not_found", case_number=number)
    await ctx.record_outcome(FLOW, "completed", {"case": number, "state": state or "not_found"})
    return result.utter("utter_anything_else")


ACTIONS: dict[str, FlowAction] = {
    "validate_case_status_form": validate_case_status_form,
    "action_case_status": action_case_status,
}
