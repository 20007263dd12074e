"""``FakeBrain``: a scripted ``Brain`` for testing the call loop (never a stand-in for the bot)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from voice.brain import BrainReply, CallContext, DigitRequest, Transfer

Respond = Callable[[str], BrainReply]


@dataclass
class FakeBrain:
    """Answers ``hear`` from ``replies`` (text -> reply; anything else gets ``default``)."""

    greeting: BrainReply = field(default_factory=lambda: BrainReply("it", ("Buongiorno.",)))
    replies: Mapping[str, BrainReply] = field(default_factory=dict)
    default: BrainReply = field(default_factory=lambda: BrainReply("it", ("Come?",)))
    person: BrainReply = field(
        default_factory=lambda: BrainReply(
            "it",
            ("La passo a un collega.",),
            transfer=Transfer("h-1", "general", "sip:general@127.0.0.1:5070"),
        )
    )
    failed: BrainReply = field(
        default_factory=lambda: BrainReply("it", ("La richiameremo.",), hang_up=True)
    )
    seen: list[tuple[str, str]] = field(default_factory=list)  # (what, detail), in order
    ended_with: str | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_until_seen(self, what: str, detail: str) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: (what, detail) in self.seen)

    async def _saw(self, what: str, detail: str) -> None:
        async with self._changed:
            self.seen.append((what, detail))
            self._changed.notify_all()

    async def begin(self, call: CallContext) -> tuple[str, BrainReply]:
        await self._saw("begin", call.dialled or "")
        return "conv-1", self.greeting

    async def hear(self, conversation_id: str, text: str) -> BrainReply:
        await self._saw("hear", text)
        return self.replies.get(text, self.default)

    async def keyed(self, conversation_id: str, digits: str, request: DigitRequest) -> BrainReply:
        await self._saw("keyed", f"{request.slot}={request.prefix}{digits}")
        return self.replies.get(digits, self.default)

    async def ask_for_person(self, conversation_id: str) -> BrainReply:
        await self._saw("person", "")
        return self.person

    async def no_input(self, conversation_id: str, count: int) -> BrainReply:
        await self._saw("no_input", str(count))
        return self.person if count > 2 else BrainReply("it", ("Non la sento.",))

    async def transfer_failed(self, conversation_id: str, transfer: Transfer) -> BrainReply:
        await self._saw("transfer_failed", transfer.handoff_id)
        return self.failed

    async def transferred(self, conversation_id: str, transfer: Transfer) -> None:
        await self._saw("transferred", transfer.handoff_id)

    async def ended(self, conversation_id: str, reason: str) -> None:
        await self._saw("ended", reason)
        self.ended_with = reason
