"""The sample's embedded back office: the demo customers, readings, outages and tickets of Luce e
Rete, in tables of the pack's own in the store's database, seeded on start.

It answers the same operations (pack.yml) a company would implement over HTTP
(``docs/back-office-api.md``), so the flows cannot tell the two apart. Writes are idempotent by
their key: a turn run again after a crash stores its reading, or opens its ticket, once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.domain import CustomerRecord, EmbeddedContext, UnknownOperation

from .demo_data import seed
from .tables import Base, Customer, MeterReading, Outage, Ticket, utcnow


def _aware(value: datetime) -> datetime:
    """SQLite keeps no zone: what it stored in UTC comes back naive."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _record(customer: Customer) -> CustomerRecord:
    return CustomerRecord(
        customer.id, customer.name, customer.phone, customer.language, customer.vip
    )


class EnergyDemoBackOffice:
    def __init__(self, ctx: EmbeddedContext) -> None:
        self._sessions = async_sessionmaker(ctx.engine, expire_on_commit=False)
        self._create_tables = ctx.create_tables

    async def open(self) -> None:
        await self._create_tables(Base.metadata)
        async with self._sessions() as s, s.begin():
            await seed(s)

    async def find_customer(self, customer_id: str) -> CustomerRecord | None:
        async with self._sessions() as s:
            customer = await s.get(Customer, customer_id)
        return _record(customer) if customer else None

    async def customer_by_phone(self, phone: str) -> CustomerRecord | None:
        async with self._sessions() as s:
            rows = (await s.scalars(select(Customer).where(Customer.phone == phone).limit(2))).all()
        return _record(rows[0]) if len(rows) == 1 else None

    async def verify_identity(
        self, customer_id: str, factors: Mapping[str, str]
    ) -> CustomerRecord | None:
        async with self._sessions() as s:
            customer = await s.get(Customer, customer_id)
        if customer is None or factors.get("postcode") != customer.postcode:
            return None
        return _record(customer)

    async def call(
        self, operation: str, args: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            raise UnknownOperation(f"the energy demo back office has no operation {operation!r}")
        result: dict[str, Any] = await handler(dict(args), idempotency_key)
        return result

    async def close(self) -> None:
        return None

    # operations (pack.yml)

    async def _op_account_balance(self, args: dict[str, Any], key: str) -> dict[str, Any]:
        async with self._sessions() as s:
            customer = await s.get(Customer, str(args["customer_id"]))
        if customer is None:
            return {"found": False}
        return {
            "found": True,
            "balance_cents": customer.balance_cents,
            "last_invoice_cents": customer.last_invoice_cents,
            "last_invoice_due": _aware(customer.last_invoice_due).isoformat(),
            "last_invoice_paid": customer.last_invoice_paid,
        }

    async def _op_last_meter_reading(self, args: dict[str, Any], key: str) -> dict[str, Any]:
        async with self._sessions() as s:
            value = await s.scalar(
                select(MeterReading.value)
                .where(MeterReading.customer_id == str(args["customer_id"]))
                .order_by(MeterReading.taken_at.desc(), MeterReading.id.desc())
                .limit(1)
            )
        return {"value": value}

    async def _op_submit_meter_reading(self, args: dict[str, Any], key: str) -> dict[str, Any]:
        async with self._sessions() as s, s.begin():
            done = await s.scalar(select(MeterReading.id).where(MeterReading.request_key == key))
            if done is None:
                s.add(
                    MeterReading(
                        customer_id=str(args["customer_id"]),
                        value=int(args["value"]),
                        source="customer",
                        conversation_id=args.get("conversation_id"),
                        taken_at=utcnow(),
                        request_key=key,
                    )
                )
        return {"stored": True}

    async def _op_outage_at(self, args: dict[str, Any], key: str) -> dict[str, Any]:
        async with self._sessions() as s:
            outage = await s.scalar(
                select(Outage).where(
                    Outage.postcode == str(args["postcode"]), Outage.active.is_(True)
                )
            )
        if outage is None:
            return {"outage": None}
        return {"outage": {"service": outage.service, "eta": _aware(outage.eta).isoformat()}}

    async def _op_open_outage_ticket(self, args: dict[str, Any], key: str) -> dict[str, Any]:
        async with self._sessions() as s:
            done = await s.scalar(select(Ticket.id).where(Ticket.request_key == key))
        if done is not None:
            return {"ticket": done}
        for _ in range(20):
            now = utcnow()
            ticket = Ticket(
                id=f"TK{secrets.randbelow(900000) + 100000}",
                customer_id=args.get("customer_id"),
                conversation_id=args.get("conversation_id"),
                topic="outage",
                postcode=str(args["postcode"]),
                state="open",
                created_at=now,
                updated_at=now,
                request_key=key,
            )
            try:
                async with self._sessions() as s, s.begin():
                    s.add(ticket)
                return {"ticket": ticket.id}
            except IntegrityError:
                continue
        raise RuntimeError("could not allocate a free ticket number")

    async def _op_update_contact(self, args: dict[str, Any], key: str) -> dict[str, Any]:
        values = {k: str(args[k]) for k in ("email", "address") if args.get(k)}
        if not values:
            raise ValueError("update_contact needs an email or an address")
        async with self._sessions() as s, s.begin():
            result = await s.execute(
                update(Customer).where(Customer.id == str(args["customer_id"])).values(**values)
            )
        return {"updated": bool(result.rowcount)}  # type: ignore[attr-defined]

    async def _op_ticket_status(self, args: dict[str, Any], key: str) -> dict[str, Any]:
        async with self._sessions() as s:
            ticket = await s.get(Ticket, str(args["ticket"]))
        if ticket is None:
            return {"ticket": None}
        return {"ticket": {"id": ticket.id, "state": ticket.state}}


async def embedded_back_office(ctx: EmbeddedContext) -> EnergyDemoBackOffice:
    back_office = EnergyDemoBackOffice(ctx)
    await back_office.open()
    return back_office
