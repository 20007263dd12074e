"""The sample back office's tables, in the store's database: the pack's own, not the core's."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # customer code, e.g. CL100001
    name: Mapped[str] = mapped_column(String(120))
    phone: Mapped[str] = mapped_column(String(32), index=True)
    email: Mapped[str] = mapped_column(String(254))
    address: Mapped[str] = mapped_column(String(254))
    postcode: Mapped[str] = mapped_column(String(5))  # of the supply address: the identity check
    language: Mapped[str] = mapped_column(String(2))
    vip: Mapped[bool] = mapped_column(Boolean, default=False)
    balance_cents: Mapped[int] = mapped_column(Integer)
    last_invoice_cents: Mapped[int] = mapped_column(Integer)
    last_invoice_due: Mapped[datetime]
    last_invoice_paid: Mapped[bool] = mapped_column(Boolean)


class MeterReading(Base):
    __tablename__ = "meter_readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(16), index=True)
    value: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))  # seed | customer
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    taken_at: Mapped[datetime]
    request_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)


class Outage(Base):
    __tablename__ = "outages"

    postcode: Mapped[str] = mapped_column(String(5), primary_key=True)
    service: Mapped[str] = mapped_column(String(16))  # power | gas | internet
    eta: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # TK + 6 digits
    customer_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    topic: Mapped[str] = mapped_column(String(32))
    postcode: Mapped[str | None] = mapped_column(String(5), nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # open | in_progress | resolved
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    request_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
