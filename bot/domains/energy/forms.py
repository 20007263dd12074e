"""The sample's form validators: identification before account data, then each flow's values.

Rasa calls ``validate_<form>`` with the slot candidates it extracted from the last message; we
answer with the validated values (``None`` re-asks the slot) and, after too many wrong
identification answers, end the form with ``flow_failed`` so the flow's action hands over.
"""

from __future__ import annotations

from typing import Any

from bot.domain import ActionResult, FlowAction, FlowContext, RejectAction, Tracker

from . import values

IDENTIFIED_FORMS = ("check_balance_form", "submit_meter_reading_form", "update_contact_form")

# Small talk inside a form is answered (or let pass) and the slot asked again; it is never
# counted as a wrong identification answer.
SMALL_TALK = {
    "greet": None,
    "thanks": None,
    "affirm": None,
    "deny": None,
    "bot_challenge": "utter_iamabot",
}


async def _validate_identity(
    ctx: FlowContext, tracker: Tracker, candidates: dict[str, Any], result: ActionResult
) -> bool:
    """Validate customer_code / id_postcode candidates (the postcode of the supply address is
    the identity check); False when the flow has failed."""
    attempts = int(tracker.slots.get("id_attempts") or 0)
    code_value = tracker.slots.get("customer_code")
    if "customer_code" in candidates and candidates["customer_code"] is not None:
        code = values.customer_code(str(candidates["customer_code"]))
        customer = await ctx.find_customer(code) if code else None
        if customer is None:
            attempts += 1
            result.set_slot("customer_code", None).utter("utter_invalid_customer_code")
            code_value = None
        else:
            result.set_slot("customer_code", customer.id)
            code_value = customer.id
    if "id_postcode" in candidates and candidates["id_postcode"] is not None:
        given = values.postcode(str(candidates["id_postcode"]))
        customer = (
            await ctx.verify_identity(str(code_value), {"postcode": given})
            if code_value and given
            else None
        )
        if customer is not None:
            result.set_slot("id_postcode", given)
            result.set_slot("customer_verified", True)
            result.set_slot("customer_name", customer.name)
            result.utter("utter_identified", customer_name=customer.name)
        else:
            attempts += 1
            result.set_slot("id_postcode", None).utter("utter_invalid_id_postcode")
    result.set_slot("id_attempts", attempts)
    if attempts >= ctx.identification_attempts:
        result.set_slot("flow_failed", True).set_slot("requested_slot", None)
        return False
    return True


def _form_validator(form: str) -> FlowAction:
    async def validate(ctx: FlowContext, tracker: Tracker) -> ActionResult:
        candidates = tracker.slots_to_validate()
        result = ActionResult()
        if tracker.latest_intent in SMALL_TALK and not _holds_a_value(candidates):
            response = SMALL_TALK[tracker.latest_intent]
            if response:
                result.utter(response)
            for slot in candidates:
                result.set_slot(slot, None)
            return result
        needs_identity = form in IDENTIFIED_FORMS and not tracker.slots.get("customer_verified")
        if needs_identity and not await _validate_identity(ctx, tracker, candidates, result):
            return result
        customer_id = tracker.slots.get("customer_code")
        for slot, raw in candidates.items():
            if raw is None or slot in ("customer_code", "id_postcode"):
                continue
            await _validate_flow_slot(ctx, slot, str(raw), customer_id, result)
        if not candidates and tracker.latest_intent not in (None, form.removesuffix("_form")):
            raise RejectAction(f"{form}: nothing in the last message fills a slot")
        return result

    return validate


def _holds_a_value(candidates: dict[str, Any]) -> bool:
    """Whether any candidate looks like a code, number or address rather than chat."""
    text = " ".join(str(v) for v in candidates.values() if v is not None)
    return any(c.isdigit() for c in text) or "@" in text


async def _validate_flow_slot(
    ctx: FlowContext, slot: str, raw: str, customer_id: Any, result: ActionResult
) -> None:
    if slot == "meter_reading":
        reading = values.meter_reading(raw)
        if reading is None:
            result.set_slot(slot, None).utter("utter_invalid_meter_reading")
            return
        last = (
            (await ctx.call("last_meter_reading", customer_id=str(customer_id))).get("value")
            if customer_id
            else None
        )
        if last is not None and reading < last:
            result.set_slot(slot, None).utter(
                "utter_meter_reading_too_low", meter_reading=reading, last_reading=last
            )
            return
        result.set_slot(slot, str(reading))
    elif slot == "postcode":
        code = values.postcode(raw)
        result.set_slot(slot, code)
        if code is None:
            result.utter("utter_invalid_postcode")
    elif slot == "new_contact":
        found = values.contact(raw)
        result.set_slot(slot, found[1] if found else None)
        if found is None:
            result.utter("utter_invalid_new_contact")
    elif slot == "ticket_number":
        number = values.ticket_number(raw)
        ticket = (await ctx.call("ticket_status", ticket=number)).get("ticket") if number else None
        result.set_slot(slot, ticket["id"] if ticket else None)
        if number is None:
            result.utter("utter_invalid_ticket_number")
        elif ticket is None:
            result.utter("utter_ticket_not_found", ticket_number=number)


FORMS = (
    "check_balance_form",
    "submit_meter_reading_form",
    "report_outage_form",
    "update_contact_form",
    "ticket_status_form",
)

ACTIONS: dict[str, FlowAction] = {f"validate_{form}": _form_validator(form) for form in FORMS}
