"""Where one call is in its life, with verb-named transitions: an illegal one raises."""

from __future__ import annotations

import asyncio
from enum import StrEnum


class CallState(StrEnum):
    ANSWERED = "answered"
    ACTIVE = "active"
    TRANSFERRING = "transferring"
    ENDED = "ended"


class CallLifecycle:
    """The call's state, and once it ended, why; ``ended`` is set then."""

    def __init__(self) -> None:
        self.state = CallState.ANSWERED
        self.end_reason: str | None = None
        self.ended = asyncio.Event()

    def activate(self) -> None:
        if self.state is not CallState.ANSWERED:
            raise RuntimeError(f"cannot start a call that is {self.state}")
        self.state = CallState.ACTIVE

    def begin_transfer(self) -> None:
        if self.state is not CallState.ACTIVE:
            raise RuntimeError(f"cannot transfer a call that is {self.state}")
        self.state = CallState.TRANSFERRING

    def transfer_failed(self) -> None:
        if self.state is CallState.TRANSFERRING:
            self.state = CallState.ACTIVE

    def end(self, reason: str) -> None:
        """End the call (idempotent): the first reason given is kept."""
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.end_reason = reason
        self.ended.set()
