"""The domain-pack interface: the one module a company's pack imports.

A deployment is a domain pack (``TRIAGE_DOMAIN``: a directory, an importable package, or the
name of a pack under ``bot/domains/``; default ``energy``, the sample). A pack is a directory:

    pack.yml       name, languages, where its Rasa data is, its back office and operations,
                   the values a phone caller may key in, slots kept out of the handoff envelope
    routing.yml    intents -> flows, queues or replies; queues with hours and SIP URIs
    phone.yml      dialled numbers, languages, welcome prompts, call timings
    nlu_data/      its Rasa data (domain, NLU examples per language, rules, conversation tests,
                   held-out files), unless pack.yml points elsewhere
    __init__.py    ``ACTIONS``: its flows (form validators and flow actions); and, for a pack
                   with an embedded back office, ``embedded_back_office(ctx) -> BackOffice``

A flow's code is an async function ``(FlowContext, Tracker) -> ActionResult``. It reaches the
company's data only through the ``FlowContext`` (its back office), never a database or the
network directly, so that the same flow runs on the demo data and on the company's systems,
and a turn run again after a crash does nothing twice. When the back office fails, the flow
does nothing about it: the customer is told plainly and handed to a person (reason
``backoffice_unavailable``), with the operation that failed in the handoff envelope.

The dialogue slots the service itself reads and writes, which every pack's Rasa domain declares
(``triage domain check`` verifies): ``language``, ``customer_code``, ``customer_verified``,
``customer_name``, ``handoff_id``, ``pending_offer``, ``flow_failed``, ``id_attempts``; and the
intents it relies on (``SERVICE_INTENTS``): ``request_human`` (the phone's key 0 sends it),
``affirm`` and ``deny`` (answers to an offer, and to "are you calling about your chat?"),
``out_of_scope`` (counted with Rasa's ``nlu_fallback`` before a person is offered). A flow is
named so that its form is ``<flow>_form`` and its actions ``validate_<flow>_form`` and
``action_<flow>``: that is how a failure is traced back to the flow and its queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.actions.tracker import ActionResult, Tracker
from bot.backoffice.protocol import (
    BackOffice,
    BackOfficeUnavailable,
    CustomerRecord,
    OperationSpec,
    UnknownOperation,
)

__all__ = [
    "SERVICE_INTENTS",
    "SERVICE_SLOTS",
    "ActionResult",
    "BackOffice",
    "BackOfficeUnavailable",
    "CustomerRecord",
    "EmbeddedContext",
    "FlowAction",
    "FlowContext",
    "OperationSpec",
    "RejectAction",
    "Tracker",
    "UnknownOperation",
]

SERVICE_INTENTS = ("request_human", "affirm", "deny", "out_of_scope")
SERVICE_SLOTS = (
    "language",
    "customer_code",
    "customer_verified",
    "customer_name",
    "handoff_id",
    "pending_offer",
    "flow_failed",
    "id_attempts",
)


class RejectAction(Exception):
    """The action cannot run on this tracker (Rasa's ActionExecutionRejection): a form
    validator that finds nothing to validate raises it, so another rule can take over."""


class FlowContext(Protocol):
    """What a flow may use during one action call."""

    @property
    def conversation_id(self) -> str: ...

    @property
    def language(self) -> str:
        """The conversation's language (``it`` or ``en``)."""

    @property
    def timezone(self) -> ZoneInfo:
        """The routing table's time zone, for dates and times told to the customer."""

    @property
    def identification_attempts(self) -> int:
        """Wrong identity answers after which a flow counts as failed (routing.yml)."""

    async def find_customer(self, customer_id: str) -> CustomerRecord | None: ...

    async def verify_identity(
        self, customer_id: str, factors: Mapping[str, str]
    ) -> CustomerRecord | None:
        """The customer when the factors match; the conversation is then marked verified
        (the agent sees it; later flows skip identification)."""

    async def call(self, operation: str, **args: Any) -> dict[str, Any]:
        """Run one of the pack's operations (declared in pack.yml) on the back office, with
        an idempotency key that stays the same when a crash makes the turn run again."""

    async def record_outcome(self, flow: str, outcome: str, detail: dict[str, Any]) -> None:
        """Note what self-service did (``completed`` or ``failed``): the agent sees it."""

    def failure_queue(self, flow: str) -> str:
        """Where a failed flow's customers go (routing.yml, ``flows.<flow>.on_failure``)."""

    async def hand_over(
        self, result: ActionResult, *, queue: str, topic: str, reason: str
    ) -> ActionResult:
        """Queue the customer, or offer a callback when the queue is closed; adds the reply
        that says so to ``result``."""


FlowAction = Callable[[FlowContext, Tracker], Awaitable[ActionResult]]


@dataclass(frozen=True)
class EmbeddedContext:
    """What an embedded back office (a pack's own demo data) gets to keep its data: the store's
    database engine (SQLite or PostgreSQL; the pack owns its tables there), a way to create its
    tables (and add the nullable columns a newer release of the pack has), the data directory."""

    engine: AsyncEngine
    create_tables: Callable[[MetaData], Awaitable[None]]
    data_dir: Path
