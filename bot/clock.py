"""The time the gateway stamps on what it stores: aware UTC datetimes, never naive ones."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
