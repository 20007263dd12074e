"""A node says ready only when every part it runs answers: ``/healthz`` of a real ``triage
serve`` never says ready before its SIP line answers OPTIONS."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.gateway_process import Gateway, Ports

pytestmark = pytest.mark.rasa


def sip_options(port: int) -> bytes:
    branch = uuid.uuid4().hex
    return (
        f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={branch[:8]}\r\n"
        f"To: <sip:probe@127.0.0.1:{port}>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answers_options(port: int, wait_s: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(wait_s)
        probe.sendto(sip_options(port), ("127.0.0.1", port))
        try:
            answer, _ = probe.recvfrom(65535)
        except TimeoutError:
            return False
    return answer.startswith(b"SIP/2.0 200")


async def test_healthz_says_ready_only_once_the_sip_line_answers(
    tmp_path: Path, sample_model: Path
) -> None:
    gateway = Gateway(tmp_path / "node", Ports.free(), sample_model, None)
    start = asyncio.create_task(gateway.start())
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(gateway.base + "/healthz") as resp:
                        body = await resp.json()
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
                    continue
                if resp.status == 200:
                    break
                assert body["not_ready"], body  # a node that is not ready says which part
                await asyncio.sleep(0.02)
        # the first "ready" already has a phone line that answers
        assert await asyncio.to_thread(answers_options, gateway.ports.sip)
        await start
    finally:
        if not start.done():
            start.cancel()
        await gateway.stop()
