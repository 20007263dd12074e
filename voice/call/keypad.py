"""The keypad: the caller's DTMF keys.

``0`` at any time asks for a person; while the bot asks for a value that can be keyed
(``DigitRequest``), digits are collected until ``#``, the value's length or an inter-digit pause
(a lone ``0`` still asks for a person; ``*`` starts the value again). A key press is barge-in too.
"""

from __future__ import annotations

import asyncio

from voice.brain import DigitRequest
from voice.call.events import CallerActivity, Keyed, PersonRequested
from voice.call.settings import CallSettings
from voice.rtp.session import RtpSession


class Keypad:
    """The keys the caller presses and the value being keyed; two tasks, ``read_keys`` and
    ``collect_digits``, run by the call that owns this."""

    def __init__(self, rtp: RtpSession, settings: CallSettings, caller: CallerActivity) -> None:
        self.rtp = rtp
        self.settings = settings
        self.caller = caller
        self.request: DigitRequest | None = None  # the value the dialogue asks for, if keyable
        self._keys: asyncio.Queue[str] = asyncio.Queue()
        self._person_pending = False  # a PersonRequested is queued or being handled

    def person_answered(self) -> None:
        """The request for a person was answered: a new press is a new request."""
        self._person_pending = False

    async def read_keys(self) -> None:
        while True:
            key = (await self.rtp.dtmf.get()).digit
            now = asyncio.get_running_loop().time()
            self.caller.last_activity = now
            if self.request is None:
                if key == "0" and not self._person_pending:
                    self._person_pending = True  # repeated presses: one request, not many
                    self.rtp.stop_playback()
                    self.caller.events.put_nowait(PersonRequested(now))
                continue
            self.rtp.stop_playback()  # a key press is barge-in too
            self._keys.put_nowait(key)

    async def collect_digits(self) -> None:
        """Digits for the value being asked, until '#', its length or a pause."""
        buffer = ""
        while True:
            timeout = self.settings.inter_digit_timeout_s if buffer else None
            try:
                key = await asyncio.wait_for(self._keys.get(), timeout)
            except TimeoutError:
                key = "#"
            request = self.request
            if request is None:
                buffer = ""
                continue
            if key == "*":
                buffer = ""
                continue
            if key != "#":
                buffer += key
            if key == "#" or len(buffer) >= request.max_digits:
                now = asyncio.get_running_loop().time()
                if buffer == "0" and not self._person_pending:
                    self._person_pending = True
                    self.caller.events.put_nowait(PersonRequested(now))
                elif buffer:
                    self.request = None
                    self.caller.events.put_nowait(Keyed(buffer, request, now))
                buffer = ""
