"""A small protocol client for tests: a chat socket that collects frames."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

Frame = dict[str, Any]
WAIT_S = 20.0


class ChatClient:
    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self.welcome: Frame = {}

    @classmethod
    async def open(
        cls,
        client: TestClient[Any, Any],
        *,
        lang: str | None = "it",
        resume: Frame | None = None,
        identity: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ChatClient:
        ws = await client.ws_connect("/chat/ws", headers=headers or {})
        chat = cls(ws)
        await ws.send_json(
            {"type": "hello", "v": 1, "lang": lang, "resume": resume, "identity": identity}
        )
        chat.welcome = await chat.next(lambda f: f["type"] == "welcome")
        return chat

    @property
    def conversation_id(self) -> str:
        return str(self.welcome["conversation_id"])

    def resume_frame(self, last_seq: int = 0) -> Frame:
        return {
            "conversation_id": self.welcome["conversation_id"],
            "token": self.welcome["token"],
            "last_seq": last_seq,
        }

    async def receive(self, wait_s: float = WAIT_S) -> Frame | None:
        msg = await self.ws.receive(timeout=wait_s)
        if msg.type != WSMsgType.TEXT:
            return None
        frame: Frame = msg.json()
        self.frames.append(frame)
        return frame

    async def next(self, wanted: Callable[[Frame], bool], wait_s: float = WAIT_S) -> Frame:
        """The next frame that ``wanted`` accepts (earlier ones are kept in ``frames``)."""
        async with asyncio.timeout(wait_s):
            while True:
                frame = await self.receive(wait_s)
                if frame is None:
                    raise AssertionError(f"socket closed ({self.ws.close_code}); got {self.frames}")
                if wanted(frame):
                    return frame

    async def say(
        self, text: str, payload: str | None = None, *, expect_reply: bool = True
    ) -> tuple[Frame, list[Frame]]:
        """Send a message; return its ack and what followed it up to a quiet moment."""
        client_id = uuid.uuid4().hex
        frame: Frame = {"type": "message", "id": client_id, "text": text}
        if payload is not None:
            frame["payload"] = payload
        await self.ws.send_json(frame)
        ack = await self.next(lambda f: f["type"] in ("ack", "error") and f.get("id") == client_id)
        replies: list[Frame] = []
        if expect_reply and ack["type"] == "ack":
            replies.append(await self.next(lambda f: f["type"] == "message"))
        while True:
            try:
                got = await self.receive(wait_s=0.8)
            except TimeoutError:
                return ack, replies
            if got is None:
                return ack, replies
            replies.append(got)

    async def close(self) -> None:
        await self.ws.close()
