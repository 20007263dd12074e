"""Measuring that the event loop keeps running while an engine works in its thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def loop_gaps(tick_s: float) -> AsyncIterator[list[float]]:
    """Ticks every ``tick_s`` while the block runs; yields the gaps between ticks (seconds)."""
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(tick_s)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticks = asyncio.create_task(ticker())
    try:
        yield gaps
    finally:
        ticks.cancel()
        await asyncio.gather(ticks, return_exceptions=True)
