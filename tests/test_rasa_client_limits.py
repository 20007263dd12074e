"""The Rasa client keeps a bounded number of requests in flight, so a burst of turns waits in
the gateway (before its time-out starts) instead of queueing inside Rasa and timing out."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.nlu.rasa_http import RasaHttpClient

SERVICE_S = 0.1  # like Rasa: one message at a time


async def test_a_burst_waits_in_the_gateway_instead_of_timing_out() -> None:
    busy = asyncio.Lock()
    in_server = 0
    most = 0

    async def parse(request: web.Request) -> web.Response:
        nonlocal in_server, most
        in_server += 1
        most = max(most, in_server)
        try:
            async with busy:
                await asyncio.sleep(SERVICE_S)
        finally:
            in_server -= 1
        return web.json_response({"intent": {"name": "greet", "confidence": 0.9}})

    app = web.Application()
    app.router.add_post("/model/parse", parse)
    async with TestServer(app) as server:
        # 12 requests of 0.1 s each take 1.2 s in all, far over the 0.5 s time-out; with two in
        # flight none waits inside the server for more than 0.2 s.
        client = RasaHttpClient(str(server.make_url("")), timeout_s=0.5, max_in_flight=2)
        try:
            results = await asyncio.gather(*(client.parse(f"ciao {i}") for i in range(12)))
        finally:
            await client.close()
    assert [r.intent for r in results] == ["greet"] * 12
    assert most <= 2
