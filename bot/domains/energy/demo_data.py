"""The sample's demo data, seeded into its back office's tables so every flow works at once.

Phone numbers use the 555 range reserved for fiction; the data describes no real person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import Customer, MeterReading, Outage, utcnow


@dataclass(frozen=True)
class DemoCustomer:
    id: str
    name: str
    phone: str
    email: str
    address: str
    postcode: str
    language: str
    vip: bool
    balance_cents: int
    last_invoice_cents: int
    last_invoice_paid: bool
    last_reading: int


DEMO_CUSTOMERS = (
    DemoCustomer(
        "CL100001",
        "Mario Rossi",
        "+390255501001",
        "mario.rossi@example.it",
        "Via Torino 12, Milano",
        "20123",
        "it",
        False,
        8450,
        8450,
        False,
        12873,
    ),
    DemoCustomer(
        "CL100002",
        "Giulia Bianchi",
        "+390655501002",
        "giulia.bianchi@example.it",
        "Via Appia Nuova 88, Roma",
        "00183",
        "it",
        True,
        0,
        6120,
        True,
        4521,
    ),
    DemoCustomer(
        "CL100003",
        "John Smith",
        "+390115501003",
        "john.smith@example.com",
        "Corso Francia 5, Torino",
        "10138",
        "en",
        False,
        12990,
        6495,
        False,
        30110,
    ),
    DemoCustomer(
        "CL100004",
        "Emma Clarke",
        "+390555501004",
        "emma.clarke@example.com",
        "Via dei Calzaiuoli 3, Firenze",
        "50122",
        "en",
        True,
        2300,
        2300,
        False,
        981,
    ),
    DemoCustomer(
        "CL100005",
        "Luca Esposito",
        "+390815501005",
        "luca.esposito@example.it",
        "Via Toledo 210, Napoli",
        "80134",
        "it",
        False,
        0,
        4210,
        True,
        55012,
    ),
    DemoCustomer(
        "CL100006",
        "Sara Conti",
        "+390515501006",
        "sara.conti@example.it",
        "Via Rizzoli 7, Bologna",
        "40125",
        "it",
        False,
        15600,
        7800,
        False,
        7600,
    ),
)

# Postcodes with a known outage: (service, hours until the estimated fix).
DEMO_OUTAGES = {"20121": ("power", 3), "00184": ("gas", 5), "10121": ("internet", 2)}


async def seed(s: AsyncSession) -> int:
    """Insert the demo customers that are missing and refresh the outage ETAs; returns inserts."""
    now = utcnow()
    inserted = 0
    existing = set((await s.scalars(select(Customer.id))).all())
    for c in DEMO_CUSTOMERS:
        if c.id in existing:
            continue
        s.add(
            Customer(
                id=c.id,
                name=c.name,
                phone=c.phone,
                email=c.email,
                address=c.address,
                postcode=c.postcode,
                language=c.language,
                vip=c.vip,
                balance_cents=c.balance_cents,
                last_invoice_cents=c.last_invoice_cents,
                last_invoice_due=now + timedelta(days=12),
                last_invoice_paid=c.last_invoice_paid,
            )
        )
        s.add(
            MeterReading(
                customer_id=c.id,
                value=c.last_reading,
                source="seed",
                conversation_id=None,
                taken_at=now - timedelta(days=60),
            )
        )
        inserted += 1
    for postcode, (service, hours) in DEMO_OUTAGES.items():
        await s.merge(
            Outage(
                postcode=postcode,
                service=service,
                eta=now + timedelta(hours=hours),
                active=True,
            )
        )
    return inserted
