"""``FakeBackOffice``: an in-memory back office for testing callers, never a stand-in for
testing ``HttpBackOffice`` (that is tested against a real server)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.backoffice.protocol import (
    CUSTOMER_BY_PHONE,
    FIND_CUSTOMER,
    VERIFY_IDENTITY,
    BackOfficeUnavailable,
    CustomerRecord,
    UnknownOperation,
)

Operation = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class FakeCall:
    operation: str
    args: Mapping[str, Any]
    idempotency_key: str | None = None


class FakeBackOffice:
    """Customers with their identity factors (by customer id), and operations as async
    callables; ``down = True`` makes every call fail. ``calls`` records every call, failed
    ones included, in order."""

    def __init__(
        self,
        customers: Iterable[CustomerRecord] = (),
        factors: Mapping[str, Mapping[str, str]] | None = None,
        operations: Mapping[str, Operation] | None = None,
    ) -> None:
        self.customers = {c.id: c for c in customers}
        self.factors = {cid: dict(given) for cid, given in (factors or {}).items()}
        self.operations = dict(operations or {})
        self.down = False
        self.calls: list[FakeCall] = []
        self.closed = False

    def _record(self, operation: str, args: Mapping[str, Any], key: str | None = None) -> None:
        self.calls.append(FakeCall(operation, dict(args), key))
        if self.down:
            raise BackOfficeUnavailable(operation, "the fake back office is down")

    async def find_customer(self, customer_id: str) -> CustomerRecord | None:
        self._record(FIND_CUSTOMER, {"customer_id": customer_id})
        return self.customers.get(customer_id)

    async def customer_by_phone(self, phone: str) -> CustomerRecord | None:
        self._record(CUSTOMER_BY_PHONE, {"phone": phone})
        found = [c for c in self.customers.values() if c.phone == phone]
        return found[0] if len(found) == 1 else None

    async def verify_identity(
        self, customer_id: str, factors: Mapping[str, str]
    ) -> CustomerRecord | None:
        self._record(VERIFY_IDENTITY, {"customer_id": customer_id, "factors": dict(factors)})
        known = self.factors.get(customer_id, {})
        if not factors or any(known.get(k) != v for k, v in factors.items()):
            return None
        return self.customers.get(customer_id)

    async def call(
        self, operation: str, args: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        if operation not in self.operations:
            raise UnknownOperation(f"the pack does not declare the operation {operation!r}")
        self._record(operation, args, idempotency_key)
        return await self.operations[operation](args)

    async def close(self) -> None:
        self.closed = True
