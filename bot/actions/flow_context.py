"""``TurnFlowContext``: the ``FlowContext`` a domain pack's action gets for one call.

It is the pack's only way to the company's data (the back office) and to the service (the
conversation's identity, the outcome of a flow, a handoff). Its operation calls carry an
idempotency key made of the turn's message, the action, the action's occurrence in the turn and
the call's place in the action: the same when a crash makes the turn run again, so the back
office can answer a repeated write without doing it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from bot.actions.context import ActionContext
from bot.actions.handoff import hand_over
from bot.actions.tracker import ActionResult, Tracker
from bot.backoffice.protocol import CustomerRecord, UnknownOperation

LANGUAGES = ("it", "en")


class TurnFlowContext:
    def __init__(self, ctx: ActionContext, tracker: Tracker, action: str) -> None:
        self._ctx = ctx
        self._tracker = tracker
        turn = tracker.turn_message
        self._key_prefix = (
            f"{tracker.sender_id}:{turn}:{action}:{tracker.runs_this_turn(action)}"
            if turn is not None
            else f"{tracker.sender_id}:{uuid.uuid4().hex}:{action}"  # no stored turn to repeat
        )
        self._calls = 0
        self.had_effects = False  # a write operation called, or an outcome recorded

    @property
    def conversation_id(self) -> str:
        return self._tracker.sender_id

    @property
    def language(self) -> str:
        language = self._tracker.slots.get("language")
        return language if language in LANGUAGES else LANGUAGES[0]

    @property
    def timezone(self) -> ZoneInfo:
        return self._ctx.routing.timezone

    @property
    def identification_attempts(self) -> int:
        return self._ctx.routing.identification_attempts

    async def find_customer(self, customer_id: str) -> CustomerRecord | None:
        return await self._ctx.back_office.find_customer(customer_id)

    async def verify_identity(
        self, customer_id: str, factors: Mapping[str, str]
    ) -> CustomerRecord | None:
        customer = await self._ctx.back_office.verify_identity(customer_id, factors)
        if customer is not None:
            await self._ctx.store.conversations.update_conversation(
                self.conversation_id, customer_id=customer.id, verified=True
            )
        return customer

    async def call(self, operation: str, **args: Any) -> dict[str, Any]:
        spec = self._ctx.operations.get(operation)
        if spec is None:
            raise UnknownOperation(f"the pack declares no operation {operation!r} in pack.yml")
        key = f"{self._key_prefix}:{self._calls}"
        self._calls += 1
        self.had_effects = self.had_effects or not spec.read_only
        return await self._ctx.back_office.call(operation, args, idempotency_key=key)

    async def record_outcome(self, flow: str, outcome: str, detail: dict[str, Any]) -> None:
        self.had_effects = True
        await self._ctx.store.conversations.add_flow_result(
            self.conversation_id, flow, outcome, detail
        )

    def failure_queue(self, flow: str) -> str:
        return self._ctx.routing.flow_failure_queue[flow]

    async def hand_over(
        self, result: ActionResult, *, queue: str, topic: str, reason: str
    ) -> ActionResult:
        return await hand_over(self._ctx, self._tracker, result, queue, topic, reason)
