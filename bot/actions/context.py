"""``ActionContext``: what the service's own actions use (the store, the routing table, the back
office, the pack's declarations); a pack's actions get a ``TurnFlowContext`` made from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bot.actions.tracker import ActionResult, Tracker
from bot.backoffice.protocol import BackOffice, OperationSpec
from bot.core.routing import RoutingTable
from bot.failpoints import NO_FAILPOINTS, Failpoints
from bot.store.action_journal import ActionJournal
from bot.store.sql import SqlStore


@dataclass(frozen=True)
class ActionContext:
    store: SqlStore
    routing: RoutingTable
    back_office: BackOffice
    operations: Mapping[str, OperationSpec] = field(default_factory=dict)
    private_slots: frozenset[str] = frozenset()  # the pack's slots kept out of envelopes
    failpoints: Failpoints = NO_FAILPOINTS

    @property
    def journal(self) -> ActionJournal:
        return ActionJournal(self.store)


Action = Callable[[ActionContext, Tracker], Awaitable[ActionResult]]
