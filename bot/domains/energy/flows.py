"""The sample's self-service flows: each one's final action, run when its form completes.

A form that ended with ``flow_failed`` (identification refused too often) hands the customer to
the flow's failure queue instead (routing.yml, ``flows.<name>.on_failure``). Account data comes
from the back office's operations (pack.yml), never from a table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.domain import ActionResult, FlowAction, FlowContext, Tracker

from . import values

SERVICE_NAMES = {
    "it": {"power": "luce", "gas": "gas", "internet": "internet"},
    "en": {"power": "power", "gas": "gas", "internet": "internet"},
}


def _euro(cents: int, language: str) -> str:
    whole, part = divmod(abs(cents), 100)
    sep = "," if language == "it" else "."
    return f"{'-' if cents < 0 else ''}{whole}{sep}{part:02d}"


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


def _flow_action(flow: str, body: FlowAction) -> FlowAction:
    async def run(ctx: FlowContext, tracker: Tracker) -> ActionResult:
        if tracker.slots.get("flow_failed"):
            await ctx.record_outcome(flow, "failed", {"why": "identification"})
            result = ActionResult().set_slot("flow_failed", False).set_slot("id_attempts", 0)
            for slot in ("customer_code", "id_postcode"):
                result.set_slot(slot, None)
            return await ctx.hand_over(
                result, queue=ctx.failure_queue(flow), topic=flow, reason="failed_flow"
            )
        return await body(ctx, tracker)

    return run


async def _check_balance(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    lang = ctx.language
    account = await ctx.call("account_balance", customer_id=str(tracker.slots["customer_code"]))
    if not account.get("found"):
        raise LookupError("the verified customer is unknown to the back office")
    due = datetime.fromisoformat(account["last_invoice_due"]).astimezone(ctx.timezone)
    result = ActionResult()
    if account["balance_cents"] > 0:
        result.utter(
            "utter_balance_due",
            balance=_euro(account["balance_cents"], lang),
            last_invoice=_euro(account["last_invoice_cents"], lang),
            due_date=due.strftime("%d/%m/%Y"),
        )
    else:
        result.utter("utter_balance_clear", last_invoice=_euro(account["last_invoice_cents"], lang))
    detail = {"balance_cents": account["balance_cents"], "paid": account["last_invoice_paid"]}
    return await _finish(ctx, "check_balance", detail, result, ())


async def _submit_meter_reading(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    reading = values.meter_reading(str(tracker.slots.get("meter_reading")))
    if reading is None:
        raise ValueError("the form completed without a validated meter reading")
    await ctx.call(
        "submit_meter_reading",
        customer_id=str(tracker.slots.get("customer_code")),
        value=reading,
        conversation_id=ctx.conversation_id,
    )
    result = ActionResult().utter("utter_meter_reading_stored", meter_reading=reading)
    return await _finish(
        ctx, "submit_meter_reading", {"reading": reading}, result, ("meter_reading",)
    )


async def _report_outage(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    lang = ctx.language
    code = str(tracker.slots.get("postcode"))
    outage = (await ctx.call("outage_at", postcode=code)).get("outage")
    result = ActionResult()
    if outage is not None:
        eta = datetime.fromisoformat(outage["eta"]).astimezone(ctx.timezone).strftime("%H:%M")
        result.utter(
            "utter_known_outage",
            service=SERVICE_NAMES[lang].get(outage["service"], outage["service"]),
            postcode=code,
            eta=eta,
        )
        detail: dict[str, Any] = {"postcode": code, "known_outage": outage["service"]}
    else:
        verified = tracker.slots.get("customer_verified")
        opened = await ctx.call(
            "open_outage_ticket",
            postcode=code,
            customer_id=tracker.slots.get("customer_code") if verified else None,
            conversation_id=ctx.conversation_id,
        )
        result.utter("utter_outage_ticket_created", postcode=code, ticket_number=opened["ticket"])
        detail = {"postcode": code, "ticket": opened["ticket"]}
    return await _finish(ctx, "report_outage", detail, result, ("postcode",))


async def _update_contact(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    found = values.contact(str(tracker.slots.get("new_contact")))
    if found is None:
        raise ValueError("the form completed without a validated contact")
    kind, value = found
    customer_id = str(tracker.slots.get("customer_code"))
    await ctx.call("update_contact", customer_id=customer_id, **{kind: value})
    result = ActionResult().utter(f"utter_contact_{kind}_updated", new_contact=value)
    return await _finish(ctx, "update_contact", {"changed": kind}, result, ("new_contact",))


async def _ticket_status(ctx: FlowContext, tracker: Tracker) -> ActionResult:
    number = str(tracker.slots.get("ticket_number"))
    ticket = (await ctx.call("ticket_status", ticket=number)).get("ticket")
    result = ActionResult()
    if ticket is None:
        result.utter("utter_ticket_not_found", ticket_number=number)
        state = "not_found"
    else:
        result.utter(f"utter_ticket_{ticket['state']}", ticket_number=ticket["id"])
        state = ticket["state"]
    return await _finish(
        ctx, "ticket_status", {"ticket": number, "state": state}, result, ("ticket_number",)
    )


ACTIONS: dict[str, FlowAction] = {
    "action_check_balance": _flow_action("check_balance", _check_balance),
    "action_submit_meter_reading": _flow_action("submit_meter_reading", _submit_meter_reading),
    "action_report_outage": _flow_action("report_outage", _report_outage),
    "action_update_contact": _flow_action("update_contact", _update_contact),
    "action_ticket_status": _flow_action("ticket_status", _ticket_status),
}
