"""``FakeNluClient``: a scripted NLU seam for testing callers, never a stand-in for Rasa."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.errors import NluUnavailable
from bot.nlu.client import BotReply, ParseResult, TurnOutput


class FakeNluClient:
    """Answers each turn with ``respond(text)``; ``down = True`` makes every call fail."""

    def __init__(self, respond: Callable[[str], tuple[str, list[str]]] | None = None) -> None:
        self._respond = respond or (lambda text: ("inform", [f"echo: {text}"]))
        self.down = False
        self.turns: list[tuple[str, str]] = []
        self.message_keys: list[str | None] = []
        self.slots: dict[str, dict[str, Any]] = {}

    def _check(self) -> None:
        if self.down:
            raise NluUnavailable("fake NLU is down")

    async def parse(self, text: str) -> ParseResult:
        self._check()
        intent, _ = self._respond(text)
        return ParseResult(text=text, intent=intent, confidence=0.9)

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        self._check()
        self.turns.append((conversation_id, text))
        self.message_keys.append(message_key)
        if conversation_id not in self.slots and metadata and "language" in metadata:
            # like Rasa's session start: the first message's metadata sets the language slot
            self.slots[conversation_id] = {"language": metadata["language"]}
        intent, texts = self._respond(text)
        return TurnOutput(
            replies=tuple(BotReply(t) for t in texts),
            parse=ParseResult(text=text, intent=intent, confidence=0.9),
            slots=dict(self.slots.get(conversation_id, {})),
        )

    async def set_slots(self, conversation_id: str, slots: dict[str, Any]) -> None:
        self._check()
        self.slots.setdefault(conversation_id, {}).update(slots)

    async def is_ready(self) -> bool:
        return not self.down

    async def close(self) -> None:
        return None
