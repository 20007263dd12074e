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


def _recording_rasa(name: str, seen: list[tuple[str, str, str | None]]) -> web.Application:
    async def turn(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((name, request.path, body["sender"]))
        return web.json_response({"messages": [{"text": f"from {name}"}], "slots": {}})

    async def parse(request: web.Request) -> web.Response:
        seen.append((name, request.path, None))
        return web.json_response({"intent": {"name": "greet", "confidence": 0.9}})

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"model_file": "m.tar.gz" if name == "a" else ""})

    app = web.Application()
    app.router.add_post("/webhooks/triage/webhook", turn)
    app.router.add_post("/model/parse", parse)
    app.router.add_get("/status", status)
    return app


async def test_a_conversation_always_goes_to_the_same_rasa_worker() -> None:
    seen: list[tuple[str, str, str | None]] = []
    async with (
        TestServer(_recording_rasa("a", seen)) as a,
        TestServer(_recording_rasa("b", seen)) as b,
    ):
        client = RasaHttpClient([str(a.make_url("")), str(b.make_url(""))])
        try:
            conversations = [f"web-{i}" for i in range(40)]
            for _ in range(3):
                for conversation in conversations:
                    await client.turn(conversation, "ciao")
            for _ in range(4):
                await client.parse("ciao")
            ready = await client.is_ready()
        finally:
            await client.close()
    turns = [(worker, sender) for worker, path, sender in seen if path.startswith("/webhooks")]
    owner: dict[str | None, set[str]] = {}
    for worker, sender in turns:
        owner.setdefault(sender, set()).add(worker)
    assert all(len(workers) == 1 for workers in owner.values())  # every turn to its owner
    by_worker = [w for w, _ in turns]
    assert 20 <= by_worker.count("a") <= 100 and 20 <= by_worker.count("b") <= 100
    assert [w for w, path, _ in seen if path == "/model/parse"] == ["a", "b", "a", "b"]
    assert ready is False  # worker b has no model loaded
