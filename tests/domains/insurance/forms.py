"""Aurora's form validators: the policy holder first (policy number and date of birth, checked
by the company's back office), then each flow's own value.

Rasa calls ``validate_<form>`` with the candidates it extracted from the last message, and once
when the form starts. A customer identified earlier (in this conversation, or by the host site's
signed identity) is not asked again.
"""

from __future__ import annotations

from typing import Any

from bot.domain import ActionResult, FlowAction, FlowContext, RejectAction, Tracker

from . import values

IDENTITY_SLOTS = ("policy_number", "birth_date")
# the birth date of a customer identified otherwise (a signed identity): never sent anywhere
IDENTIFIED_OTHERWISE = "verified"
# answered and the slot asked again; never counted as a wrong identification answer
SMALL_TALK = {
    "greet": None,
    "thanks": None,
    "affirm": None,
    "deny": None,
    "bot_challenge": "utter_iamabot",
}


def _identified_before(tracker: Tracker, candidates: dict[str, Any], result: ActionResult) -> bool:
    """Fill the identity slots of a customer verified before this form; False if not. (The
    tracker's slots already hold this message's candidates, unvalidated.)"""
    customer = tracker.slots.get("customer_code")
    if not (tracker.slots.get("customer_verified") and customer):
        return False
    if "policy_number" in candidates or tracker.slots.get("policy_number") is None:
        result.set_slot("policy_number", customer)
    if "birth_date" in candidates or tracker.slots.get("birth_date") is None:
        result.set_slot("birth_date", IDENTIFIED_OTHERWISE)
    return True


async def _identify(
    ctx: FlowContext, tracker: Tracker, candidates: dict[str, Any], result: ActionResult
) -> bool:
    """Validate policy number and date of birth; False when too many answers were wrong."""
    attempts = int(tracker.slots.get("id_attempts") or 0)
    policy = tracker.slots.get("policy_number")
    if candidates.get("policy_number") is not None:
        number = values.policy_number(str(candidates["policy_number"]))
        customer = await ctx.find_customer(number) if number else None
        policy = customer.id if customer is not None else None
        result.set_slot("policy_number", policy)
        if customer is None:
            attempts += 1
            result.utter("utter_invalid_policy_number")
    if candidates.get("birth_date") is not None:
        born = values.birth_date(str(candidates["birth_date"]))
        if born is None:  # not a date at all: asked again, not a wrong answer
            result.set_slot("birth_date", None).utter("utter_invalid_birth_date")
        elif policy is None:  # said before the policy number: asked again after it
            result.set_slot("birth_date", None)
        else:
            customer = await ctx.verify_identity(str(policy), {"birth_date": born})
            if customer is None:
                attempts += 1
                result.set_slot("birth_date", None).utter("utter_identity_mismatch")
            else:
                result.set_slot("birth_date", born).set_slot("customer_verified", True)
                result.set_slot("customer_code", customer.id)
                result.set_slot("customer_name", customer.name)
                result.utter("utter_identified", customer_name=customer.name or "")
    result.set_slot("id_attempts", attempts)
    if attempts >= ctx.identification_attempts:
        result.set_slot("flow_failed", True).set_slot("requested_slot", None)
        return False
    return True


def _validate_own_slot(slot: str, raw: str, result: ActionResult) -> None:
    if slot == "claim_number":
        number = values.claim_number(raw)
        result.set_slot(slot, number)
        if number is None:
            result.utter("utter_invalid_claim_number")
    elif slot == "incident_description":
        text = values.description(raw)
        result.set_slot(slot, text)
        if text is None:
            result.utter("utter_describe_more")


def _holds_a_value(candidates: dict[str, Any]) -> bool:
    """Whether a candidate is a number, a date or an account of what happened rather than chat
    ("no, the car was parked when..." is a description, whatever its intent)."""
    for slot, raw in candidates.items():
        text = "" if raw is None else str(raw)
        if any(c.isdigit() for c in text):
            return True
        if slot == "incident_description" and values.description(text) is not None:
            return True
    return False


def _form_validator(form: str) -> FlowAction:
    flow = form.removesuffix("_form")

    async def validate(ctx: FlowContext, tracker: Tracker) -> ActionResult:
        candidates = tracker.slots_to_validate()
        result = ActionResult()
        if tracker.latest_intent in SMALL_TALK and not _holds_a_value(candidates):
            if response := SMALL_TALK[tracker.latest_intent]:
                result.utter(response)
            for slot in candidates:
                result.set_slot(slot, None)
            return result
        if not _identified_before(tracker, candidates, result) and not await _identify(
            ctx, tracker, candidates, result
        ):
            return result
        for slot, raw in candidates.items():
            if raw is not None and slot not in IDENTITY_SLOTS:
                _validate_own_slot(slot, str(raw), result)
        if not candidates and tracker.latest_intent not in (None, flow):
            raise RejectAction(f"{form}: nothing in the last message fills a slot")
        return result

    return validate


FORMS = ("claim_status_form", "report_claim_form")

ACTIONS: dict[str, FlowAction] = {f"validate_{form}": _form_validator(form) for form in FORMS}
