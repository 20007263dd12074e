"""Aurora's two self-service flows, each one's final action, run when its form completes:

- ``claim_status``: the state of a claim of the identified policy holder (operation
  ``claim_status``);
- ``report_claim``: the policy holder says what happened and a claim is opened (operation
  ``open_claim``, a write: the back office answers a repeated idempotency key with the same
  claim).

A form that ended with ``flow_failed`` (identification refused too often), a claim in a state the
flow cannot explain, or a claim the company will not open here, goes to a person instead
(routing.yml, ``flows.<name>.on_failure``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from bot.domain import ActionResult, FlowAction, FlowContext, Tracker

from . import values

CLAIM_STATES = ("received", "in_assessment", "paid")


def _euro(cents: int, language: str) -> str:
    whole, part = divmod(cents, 100)
    thousands = f"{whole:,}".replace(",", "." if language == "it" else ",")
    return f"{thousands}{',' if language == 'it' else '.'}{part:02d}"


async def _finish(
    ctx: FlowContext,
    flow: str,
    detail: dict[str, Any],
    result: ActionResult,
    reset: tuple[str, ...],
) -> ActionResult:
    await ctx.record_outcome(flow, "completed", detail)
    for slot in reset:
        result.set_slot(slot, None)
    return result.utter("utter_anything_else")


async def _to_a_person(
    ctx: FlowContext, flow: str, why: str, result: ActionResult, reset: tuple[str, ...] = ()
) -> ActionResult:
    await ctx.record_outcome(flow, "failed", {"why": why})
    for slot in reset:
        result.set_slot(slot, None)
    return await ctx.hand_over(
        result, queue=ctx.failure_queue(flow), topic=flow, reason="failed_flow"
    )


def _flow_action(flow: str, body: FlowAction) -> FlowAction:
    async def run(ctx: FlowContext, tracker: Tracker) -> ActionResult:
        if tracker.slots.get("flow_failed"):
            result = ActionResult().set_slot("flow_failed", False).set_slot("id_attempts", 0)
            return await _to_a_person(
                ctx, flow, "identification", result, ("policy_number", "birth_date")
            )
        return await body(ctx, tracker)

    return run


async def _claim_status(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    number = values.claim_number(str(tracker.slots.get("claim_number")))
    if number is None:
        raise ValueError("the form completed without a validated claim number")
    claim = await ctx.call(
        "claim_status", policy_number=str(tracker.slots.get("policy_number")), claim=number
    )
    result = ActionResult()
    state = claim.get("state") if claim.get("found") else "not_found"
    if state == "not_found":
        result.utter("utter_claim_not_found", claim_number=number)
    elif state == "paid":
        paid_on = date.fromisoformat(str(claim["paid_on"])).strftime("%d/%m/%Y")
        amount = _euro(int(claim["amount_cents"]), ctx.language)
        result.utter("utter_claim_paid", claim_number=number, amount=amount, paid_on=paid_on)
    elif state in CLAIM_STATES:
        result.utter(f"utter_claim_{state}", claim_number=number)
    else:
        return await _to_a_person(
            ctx, "claim_status", f"state {state!r}", result, ("claim_number",)
        )
    detail = {"claim": number, "state": state}
    return await _finish(ctx, "claim_status", detail, result, ("claim_number",))


async def _report_claim(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    text = values.description(str(tracker.slots.get("incident_description")))
    if text is None:
        raise ValueError("the form completed without a description")
    opened = await ctx.call(
        "open_claim",
        policy_number=str(tracker.slots.get("policy_number")),
        description=text,
        conversation_id=ctx.conversation_id,
    )
    result = ActionResult()
    if not opened.get("opened"):
        result.utter("utter_claim_not_opened")
        return await _to_a_person(
            ctx, "report_claim", str(opened.get("reason")), result, ("incident_description",)
        )
    claim = str(opened["claim"])
    result.utter("utter_claim_opened", claim_number=claim)
    return await _finish(ctx, "report_claim", {"claim": claim}, result, ("incident_description",))


ACTIONS: dict[str, FlowAction] = {
    "action_claim_status": _flow_action("claim_status", _claim_status),
    "action_report_claim": _flow_action("report_claim", _report_claim),
}
