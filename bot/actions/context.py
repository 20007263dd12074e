"""``ActionContext``: what the service's own actions use (the store, the routing table, the back
office, the pack's declarations); a pack's actions get a ``TurnFlowContext`` made from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bot.actions.tracker import ActionResult, Tracker
from bot.backoffice.protocol import BackOffice, OperationSpec
from bot.config.routing import RoutingTable
from bot.failpoints import NO_FAILPOINTS, Failpoints
from bot.store.protocols import ActionAnswers, Store


@dataclass(frozen=True)
class ActionContext:
    store: Store
    routing: RoutingTable
    back_office: BackOffice
    operations: Mapping[str, OperationSpec] = field(default_factory=dict)
    private_slots: frozenset[str] = frozenset()  # the pack's slots kept out of envelopes
    failpoints: Failpoints = NO_FAILPOINTS

    @property
    def journal(self) -> ActionAnswers:
        return self.store.journal


Action = Callable[[ActionContext, Tracker], Awaitable[ActionResult]]
