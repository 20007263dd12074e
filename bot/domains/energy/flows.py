"""The self-service flows' final actions: read or change account data, record the outcome.

Each runs when its form completes. A form that ended with ``flow_failed`` hands the customer to
the flow's failure queue instead (``config/routing.yml``, ``flows.<name>.on_failure``).
"""

from __future__ import annotations

from typing import Any

from bot.actions.handoff import hand_over
from bot.actions.tracker import ActionResult, Tracker
from bot.actions.webhook import Action, ActionContext
from bot.core import values

SERVICE_NAMES = {
    "it": {"power": "luce", "gas": "gas", "internet": "internet"},
    "en": {"power": "power", "gas": "gas", "internet": "internet"},
}


def _euro(cents: int, language: str) -> str:
    whole, part = divmod(abs(cents), 100)
    sep = "," if language == "it" else "."
    return f"{'-' if cents < 0 else ''}{whole}{sep}{part:02d}"


def _language(tracker: Tracker) -> str:
    lang = tracker.slots.get("language")
    return lang if lang in ("it", "en") else "it"


async def _finish(
    ctx: ActionContext,
    tracker: Tracker,
    flow: str,
    detail: dict[str, Any],
    result: ActionResult,
    reset: tuple[str, ...],
) -> ActionResult:
    await ctx.store.add_flow_result(tracker.sender_id, flow, "completed", detail)
    for slot in reset:
        result.set_slot(slot, None)
    return result.utter("utter_anything_else")


def _flow_action(flow: str, body: Any) -> Action:
    async def run(ctx: ActionContext, tracker: Tracker) -> ActionResult:
        if tracker.slots.get("flow_failed"):
            await ctx.store.add_flow_result(
                tracker.sender_id, flow, "failed", {"why": "identification"}
            )
            result = ActionResult().set_slot("flow_failed", False).set_slot("id_attempts", 0)
            for slot in ("customer_code", "id_postcode"):
                result.set_slot(slot, None)
            queue = ctx.routing.flow_failure_queue[flow]
            return await hand_over(ctx, tracker, result, queue, flow, "failed_flow")
        return await body(ctx, tracker)  # type: ignore[no-any-return]

    return run


async def _check_balance(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    lang = _language(tracker)
    customer = await ctx.store.get_customer(str(tracker.slots.get("customer_code")))
    result = ActionResult()
    if customer is None:
        raise LookupError("verified customer vanished from the store")
    due = customer.last_invoice_due.astimezone(ctx.routing.timezone).strftime("%d/%m/%Y")
    if customer.balance_cents > 0:
        result.utter(
            "utter_balance_due",
            balance=_euro(customer.balance_cents, lang),
            last_invoice=_euro(customer.last_invoice_cents, lang),
            due_date=due,
        )
    else:
        result.utter("utter_balance_clear", last_invoice=_euro(customer.last_invoice_cents, lang))
    detail = {"balance_cents": customer.balance_cents, "paid": customer.last_invoice_paid}
    return await _finish(ctx, tracker, "check_balance", detail, result, ())


async def _submit_meter_reading(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    reading = values.meter_reading(str(tracker.slots.get("meter_reading")))
    customer_id = str(tracker.slots.get("customer_code"))
    if reading is None:
        raise ValueError("the form completed without a validated meter reading")
    await ctx.store.add_meter_reading(customer_id, reading, tracker.sender_id)
    result = ActionResult().utter("utter_meter_reading_stored", meter_reading=reading)
    return await _finish(
        ctx, tracker, "submit_meter_reading", {"reading": reading}, result, ("meter_reading",)
    )


async def _report_outage(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    lang = _language(tracker)
    code = str(tracker.slots.get("postcode"))
    outage = await ctx.store.active_outage(code)
    result = ActionResult()
    if outage is not None:
        eta = outage.eta.astimezone(ctx.routing.timezone).strftime("%H:%M")
        result.utter(
            "utter_known_outage",
            service=SERVICE_NAMES[lang].get(outage.service, outage.service),
            postcode=code,
            eta=eta,
        )
        detail: dict[str, Any] = {"postcode": code, "known_outage": outage.service}
    else:
        verified = tracker.slots.get("customer_verified")
        ticket = await ctx.store.create_ticket(
            "outage",
            customer_id=tracker.slots.get("customer_code") if verified else None,
            conversation_id=tracker.sender_id,
            postcode=code,
        )
        result.utter("utter_outage_ticket_created", postcode=code, ticket_number=ticket.id)
        detail = {"postcode": code, "ticket": ticket.id}
    return await _finish(ctx, tracker, "report_outage", detail, result, ("postcode",))


async def _update_contact(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    found = values.contact(str(tracker.slots.get("new_contact")))
    if found is None:
        raise ValueError("the form completed without a validated contact")
    kind, value = found
    customer_id = str(tracker.slots.get("customer_code"))
    if kind == "email":
        await ctx.store.update_contact(customer_id, email=value)
    else:
        await ctx.store.update_contact(customer_id, address=value)
    result = ActionResult().utter(f"utter_contact_{kind}_updated", new_contact=value)
    return await _finish(
        ctx, tracker, "update_contact", {"changed": kind}, result, ("new_contact",)
    )


async def _ticket_status(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    number = str(tracker.slots.get("ticket_number"))
    ticket = await ctx.store.get_ticket(number)
    result = ActionResult()
    if ticket is None:
        result.utter("utter_ticket_not_found", ticket_number=number)
        state = "not_found"
    else:
        result.utter(f"utter_ticket_{ticket.state}", ticket_number=ticket.id)
        state = ticket.state
    return await _finish(
        ctx,
        tracker,
        "ticket_status",
        {"ticket": number, "state": state},
        result,
        ("ticket_number",),
    )


ACTIONS: dict[str, Action] = {
    "action_check_balance": _flow_action("check_balance", _check_balance),
    "action_submit_meter_reading": _flow_action("submit_meter_reading", _submit_meter_reading),
    "action_report_outage": _flow_action("report_outage", _report_outage),
    "action_update_contact": _flow_action("update_contact", _update_contact),
    "action_ticket_status": _flow_action("ticket_status", _ticket_status),
}
