"""Waiting, boundedly, for something the event loop is about to make true."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 0.01


async def eventually(what: str, condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Return once ``condition()`` holds; ``AssertionError`` naming ``what`` after ``within_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        await asyncio.sleep(POLL_S)
