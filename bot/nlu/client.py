"""The NLU engine seam: what the gateway needs from Rasa, as plain data.

``RasaHttpClient`` implements it over HTTP; ``FakeNluClient`` (in ``fake.py``) is for testing the
callers only. Errors are ``NluUnavailable`` (retryable) so a channel can answer politely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Entity:
    entity: str
    value: str
    start: int | None = None
    end: int | None = None
    extractor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "value": self.value, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class ParseResult:
    text: str
    intent: str | None
    confidence: float
    entities: tuple[Entity, ...] = ()
    ranking: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class BotReply:
    text: str
    buttons: tuple[tuple[str, str], ...] = ()  # (title, payload)

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "buttons": [{"title": t, "payload": p} for t, p in self.buttons]}


@dataclass(frozen=True)
class TurnOutput:
    replies: tuple[BotReply, ...]
    parse: ParseResult
    slots: dict[str, Any] = field(default_factory=dict)
    active_loop: str | None = None


class NluClient(Protocol):
    async def parse(self, text: str) -> ParseResult:
        """Intent and entities of one utterance, outside any conversation."""

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        """Send one user message through the dialogue and return the bot's replies.

        ``metadata`` (the conversation's language, its channel) reaches the session-start
        action, which sets the matching slots when Rasa opens a session. ``message_key``
        identifies the stored message: a second turn with the same key (after a crash) replaces
        whatever an interrupted first one left in the dialogue instead of adding to it.
        """

    async def set_slots(self, conversation_id: str, slots: dict[str, Any]) -> None:
        """Set dialogue slots (language, verified identity) before the next turn."""

    async def is_ready(self) -> bool:
        """Whether the server answers and has a model loaded."""

    async def close(self) -> None: ...
