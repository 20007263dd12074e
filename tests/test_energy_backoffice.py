"""The sample pack's embedded back office (``bot/domains/energy/backoffice.py``): its demo data
and its operations, on SQLite and PostgreSQL, writes idempotent by their key."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import func, select

from bot.clock import utcnow
from bot.domain import CustomerRecord, EmbeddedContext
from bot.domains.energy.backoffice import EnergyDemoBackOffice, embedded_back_office
from bot.domains.energy.demo_data import DEMO_CUSTOMERS, DEMO_OUTAGES
from bot.domains.energy.tables import Customer, MeterReading, Outage, Ticket
from bot.store.sql.store import SqlStore

MARIO = DEMO_CUSTOMERS[0]
OTHER = DEMO_CUSTOMERS[1]


async def call(energy: EnergyDemoBackOffice, operation: str, key: str = "k", **args: object):  # type: ignore[no-untyped-def]
    return await energy.call(operation, args, idempotency_key=key)


async def test_customers_are_found_by_id_and_by_phone(energy: EnergyDemoBackOffice) -> None:
    found = await energy.find_customer(MARIO.id)
    assert found == CustomerRecord(MARIO.id, MARIO.name, MARIO.phone, MARIO.language, MARIO.vip)
    assert await energy.find_customer("CL999999") is None
    by_phone = await energy.customer_by_phone(OTHER.phone)
    assert by_phone is not None and by_phone.id == OTHER.id and by_phone.vip
    assert await energy.customer_by_phone("+390000000000") is None


async def test_identity_is_the_postcode_of_the_supply_address(
    energy: EnergyDemoBackOffice,
) -> None:
    assert await energy.verify_identity(MARIO.id, {"postcode": MARIO.postcode}) is not None
    assert await energy.verify_identity(MARIO.id, {"postcode": OTHER.postcode}) is None
    assert await energy.verify_identity(MARIO.id, {}) is None
    assert await energy.verify_identity("CL999999", {"postcode": MARIO.postcode}) is None


async def test_account_balance_reads_the_customer_account(energy: EnergyDemoBackOffice) -> None:
    account = await call(energy, "account_balance", customer_id=MARIO.id)
    assert account["found"] and account["balance_cents"] == MARIO.balance_cents
    assert datetime.fromisoformat(account["last_invoice_due"]) > utcnow()
    assert (await call(energy, "account_balance", customer_id="CL999999")) == {"found": False}


async def test_a_meter_reading_is_stored_once_per_key(
    energy: EnergyDemoBackOffice, store: SqlStore
) -> None:
    last = await call(energy, "last_meter_reading", customer_id=MARIO.id)
    assert last == {"value": MARIO.last_reading}
    for _ in range(2):  # the same turn run again after a crash: the same key
        await call(energy, "submit_meter_reading", "turn-1", customer_id=MARIO.id, value=13000)
    await call(energy, "submit_meter_reading", "turn-2", customer_id=MARIO.id, value=13100)
    last = await call(energy, "last_meter_reading", customer_id=MARIO.id)
    assert last == {"value": 13100}
    async with store.session() as s:
        stored = await s.scalar(
            select(func.count())
            .select_from(MeterReading)
            .where(MeterReading.customer_id == MARIO.id, MeterReading.source == "customer")
        )
    assert stored == 2
    other = await call(energy, "last_meter_reading", customer_id=OTHER.id)
    assert other == {"value": OTHER.last_reading}


async def test_outages_and_tickets(energy: EnergyDemoBackOffice) -> None:
    postcode, (service, _hours) = next(iter(DEMO_OUTAGES.items()))
    outage = (await call(energy, "outage_at", postcode=postcode))["outage"]
    assert outage["service"] == service
    assert datetime.fromisoformat(outage["eta"]) > utcnow()
    assert await call(energy, "outage_at", postcode="99999") == {"outage": None}

    opened = await call(energy, "open_outage_ticket", "t-1", postcode="99999", customer_id=None)
    again = await call(energy, "open_outage_ticket", "t-1", postcode="99999", customer_id=None)
    assert again == opened and re.fullmatch(r"TK\d{6}", opened["ticket"])
    status = await call(energy, "ticket_status", ticket=opened["ticket"])
    assert status == {"ticket": {"id": opened["ticket"], "state": "open"}}
    assert await call(energy, "ticket_status", ticket="TK000000") == {"ticket": None}


async def test_update_contact_changes_the_email_and_keeps_the_address(
    energy: EnergyDemoBackOffice, store: SqlStore
) -> None:
    changed = await call(energy, "update_contact", customer_id=MARIO.id, email="m@example.it")
    assert changed == {"updated": True}
    unknown = await call(energy, "update_contact", customer_id="CL999999", email="x@example.it")
    assert unknown == {"updated": False}
    async with store.session() as s:
        customer = await s.get(Customer, MARIO.id)
    assert customer is not None
    assert (customer.email, customer.address) == ("m@example.it", MARIO.address)


async def test_opening_again_seeds_nothing_twice(
    energy: EnergyDemoBackOffice, store: SqlStore, tmp_path: object
) -> None:
    await embedded_back_office(EmbeddedContext(store.engine, store.create_tables, tmp_path))  # type: ignore[arg-type]
    async with store.session() as s:
        customers = set((await s.scalars(select(Customer.id))).all())
        outages = await s.scalar(select(func.count()).select_from(Outage))
        tickets = await s.scalar(select(func.count()).select_from(Ticket))
    assert customers == {c.id for c in DEMO_CUSTOMERS}
    assert outages == len(DEMO_OUTAGES) and tickets == 0
