"""The brain a call talks to: the small interface ``bot`` implements for the voice package.

A call never sees Rasa, the store or the queue: it says what the caller did (spoke, keyed digits,
asked for a person, went silent, hung up) and gets back what to say and what to do next (listen,
collect digits, transfer, hang up). ``voice`` never imports ``bot``;
``bot.channels.phone`` implements ``Brain`` and the gateway hands it to the SIP bridge.
``FakeBrain`` (``voice.fake_brain``) is for testing the callers of this seam.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class CallContext:
    """What the bridge knows when a call is answered."""

    call_id: str  # the bridge's own id for the call (not the SIP Call-ID)
    caller: str | None  # the caller's number from From/P-Asserted-Identity, if any (unverified)
    dialled: str | None  # the number the caller dialled (request-URI user part)


@dataclass(frozen=True)
class DigitRequest:
    """The bot is asking for a value that can be keyed in: collect digits until ``#``."""

    slot: str
    max_digits: int
    prefix: str = ""  # prepended to the digits (customer codes are CL + 6 digits)


@dataclass(frozen=True)
class Transfer:
    """Hand the call to a person: REFER to ``target_uri`` carrying the handoff id."""

    handoff_id: str
    queue: str
    target_uri: str


@dataclass(frozen=True)
class BrainReply:
    """What to say (already rendered for the ear: no URLs, no emoji, choices spoken) and do."""

    language: str
    say: tuple[str, ...] = ()
    digits: DigitRequest | None = None
    transfer: Transfer | None = None
    hang_up: bool = False
    # for developers (``triage call``) and the benchmark: what the NLU made of the turn
    intent: str | None = None
    confidence: float = 0.0
    route: str | None = None  # "flow:check_balance", "queue:general", ...
    transcript: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


class Brain(Protocol):
    async def begin(self, call: CallContext) -> tuple[str, BrainReply]:
        """A call was answered: its conversation id and the greeting (by dialled number)."""

    async def hear(self, conversation_id: str, text: str) -> BrainReply:
        """The caller said ``text`` (a final transcript)."""

    async def keyed(self, conversation_id: str, digits: str, request: DigitRequest) -> BrainReply:
        """The caller keyed ``digits`` for ``request`` (without the ``#``)."""

    async def ask_for_person(self, conversation_id: str) -> BrainReply:
        """The caller pressed 0: hand them to a person, whatever the bot was doing."""

    async def no_input(self, conversation_id: str, count: int) -> BrainReply:
        """The caller said nothing for the no-input time-out, ``count`` times in a row."""

    async def transfer_failed(self, conversation_id: str, transfer: Transfer) -> BrainReply:
        """The transfer was refused or timed out: tell the caller, book a callback."""

    async def transferred(self, conversation_id: str, transfer: Transfer) -> None:
        """The transfer target accepted the call; our leg ends."""

    async def ended(self, conversation_id: str, reason: str) -> None:
        """The call ended (``caller_hung_up``, ``bot_hung_up``, ``transferred``, ``failed``)."""
