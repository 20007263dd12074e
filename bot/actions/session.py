"""Session start: Rasa's default behaviour plus the slots the gateway passes as metadata.

Slots set through the tracker-events API before a session exists are dropped by Rasa's SQL
tracker store (their timestamps precede the session start it creates), so the conversation's
language travels as message metadata and is set here, inside the session. A customer identity
verified by the channel (a host site's signed token) is read from the store of record, never from
the metadata, so a client cannot claim one.
"""

from __future__ import annotations

from bot.actions.context import Action, ActionContext
from bot.actions.tracker import ActionResult, Tracker
from bot.backoffice.protocol import BackOfficeUnavailable
from bot.errors import NotFound

METADATA_SLOTS = {"language": ("it", "en")}


async def action_session_start(ctx: ActionContext, tracker: Tracker) -> ActionResult:
    result = ActionResult()
    result.events.append({"event": "session_started", "timestamp": None})
    metadata = tracker.slots.get("session_started_metadata") or {}
    for name, value in tracker.slots.items():  # carry over slots, as Rasa's default does
        if value is not None and name not in METADATA_SLOTS:
            result.set_slot(name, value)
    for name, allowed in METADATA_SLOTS.items():
        value = metadata.get(name) if isinstance(metadata, dict) else None
        if value in allowed:
            result.set_slot(name, value)
        elif tracker.slots.get(name) is not None:
            result.set_slot(name, tracker.slots[name])
    await _verified_identity(ctx, tracker, result)
    result.events.append({"event": "action", "name": "action_listen", "timestamp": None})
    return result


async def _verified_identity(ctx: ActionContext, tracker: Tracker, result: ActionResult) -> None:
    try:
        conversation = await ctx.store.conversations.get_conversation(tracker.sender_id)
    except NotFound:
        return
    if not (conversation.verified and conversation.customer_id):
        return
    result.set_slot("customer_code", conversation.customer_id)
    result.set_slot("customer_verified", True)
    try:  # the name is a courtesy: a back office that is down costs only that
        customer = await ctx.back_office.find_customer(conversation.customer_id)
    except BackOfficeUnavailable:
        return
    if customer is not None and customer.name:
        result.set_slot("customer_name", customer.name)


ACTIONS: dict[str, Action] = {"action_session_start": action_session_start}
