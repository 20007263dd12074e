"""What the caller did, as the tasks that hear it pass it to the dialogue that answers it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voice.brain import DigitRequest


@dataclass(frozen=True)
class Heard:
    text: str
    at: float  # loop time of the final: turn latency starts here


@dataclass(frozen=True)
class Keyed:
    digits: str
    request: DigitRequest
    at: float


@dataclass(frozen=True)
class PersonRequested:
    at: float


CallerEvent = Heard | Keyed | PersonRequested


@dataclass
class CallerActivity:
    """The caller's side of one call, shared by listening, the keypad and the dialogue: events
    wait in ``events`` to be answered one at a time, and the rest tells the no-input timer whether
    the caller's silence counts."""

    events: asyncio.Queue[CallerEvent] = field(default_factory=asyncio.Queue)
    last_activity: float = 0.0  # loop time of the caller's last key press or speech
    speaking: bool = False  # the caller is in the middle of an utterance
    held: bool = False  # the caller put the call on hold
