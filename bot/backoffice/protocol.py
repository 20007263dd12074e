"""The ``BackOffice`` seam: the only way a domain pack's flows reach the company's data.

Two implementations: the sample pack's embedded demo (``bot/domains/energy/backoffice.py``), and
``HttpBackOffice`` (``http.py``), which calls the company's own systems with the JSON contract of
``docs/back-office-api.md``. ``FakeBackOffice`` (``fake.py``) is for testing callers only.

Every failure to get an answer (a timeout, a refused connection, an error status, an answer that
is not the contract's JSON) is a ``BackOfficeUnavailable`` naming the operation: the action
webhook turns it into a plain message to the customer and a handoff with reason
``backoffice_unavailable``; a flow never sees a half answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.errors import BotError

# A turn waits for the back office inside Rasa's time for the whole turn (10 s): a read that
# hangs costs the per-call time-out times (1 + retries), plus the pauses between attempts.
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 1

# The identity check and the customer look-ups are operations too, by these names, so that a
# handoff can say which one failed.
FIND_CUSTOMER = "find_customer"
CUSTOMER_BY_PHONE = "customer_by_phone"
VERIFY_IDENTITY = "verify_identity"


class BackOfficeUnavailable(BotError):
    """The back office did not give a usable answer to ``operation``."""

    retryable = True

    def __init__(self, operation: str, why: str) -> None:
        super().__init__(f"the back office failed on {operation}: {why}")
        self.operation = operation
        self.why = why


class UnknownOperation(BotError):
    """A flow called an operation its pack does not declare (a bug in the pack, not an outage)."""


@dataclass(frozen=True)
class CustomerRecord:
    """A customer as the back office knows them: what the core needs for routing and the
    handoff envelope; anything else a pack's flows need is in ``attributes``."""

    id: str
    name: str | None = None
    phone: str | None = None  # E.164
    language: str | None = None
    vip: bool = False
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "phone": self.phone,
            "language": self.language,
            "vip": self.vip,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, data: Any) -> CustomerRecord:
        """Read the contract's customer object; ``ValueError`` names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a customer must be a JSON object")
        customer_id = data.get("id")
        if not isinstance(customer_id, str) or not customer_id:
            raise ValueError("customer.id must be a non-empty string")
        for key in ("name", "phone", "language"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"customer.{key} must be a string or null")
        vip = data.get("vip", False)
        if not isinstance(vip, bool):
            raise ValueError("customer.vip must be true or false")
        attributes = data.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise ValueError("customer.attributes must be an object")
        return cls(
            customer_id, data.get("name"), data.get("phone"), data.get("language"), vip, attributes
        )


@dataclass(frozen=True)
class OperationSpec:
    """An operation a pack declares: its name and whether it only reads (a read may be retried
    after a time-out; a write is sent once, with an idempotency key)."""

    name: str
    read_only: bool


class BackOffice(Protocol):
    async def find_customer(self, customer_id: str) -> CustomerRecord | None:
        """The customer with this id, or None if there is none."""

    async def customer_by_phone(self, phone: str) -> CustomerRecord | None:
        """The one customer with this number (E.164); None if none or several."""

    async def verify_identity(
        self, customer_id: str, factors: Mapping[str, str]
    ) -> CustomerRecord | None:
        """The customer if the factors the customer gave (a postcode, a date of birth...)
        match the back office's; None if they do not or the customer is unknown."""

    async def call(
        self, operation: str, args: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """Run one of the pack's declared operations; the result is a JSON object.

        ``idempotency_key`` is the same when a crash makes a turn run again: the back office
        must answer a write it already did with the same result instead of doing it twice.
        """

    async def close(self) -> None: ...
