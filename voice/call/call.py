"""One call's loop: audio in -> speech recognition -> the brain -> speech synthesis -> audio out.

``Call.run`` owns the call's tasks and cancels and awaits them when the call ends:
- *listening* (``voice.call.listening``): the caller's audio to the recogniser, barge-in, and a
  final becomes ``Heard``;
- *keys* (``voice.call.keypad``): DTMF, ``0`` for a person, digits for a value being asked;
- *dialogue* (``voice.call.dialogue``): one caller event at a time to the brain, its reply
  spoken, then a transfer or a hang-up; silence after a prompt is a ``NoInput`` event.

When the caller puts the call on hold (``set_held``), the RTP session sends nothing and the
prompt waits where it was; what arrives meanwhile (music on hold) is not decoded, and the hold
is not silence: the no-input timer starts again when the call is resumed.

The call reaches SIP only through ``CallControl`` (REFER, BYE), and the rest of the service only
through ``voice.brain.Brain``; both are small so that the loop is tested with fakes beside the
real engines' own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from voice.asr.base import Recognizer
from voice.brain import CallContext, Transfer
from voice.call.dialogue import CallControl, Dialogue
from voice.call.events import CallerActivity
from voice.call.keypad import Keypad
from voice.call.listening import Listening
from voice.call.settings import CallEngines
from voice.call.state import CallLifecycle, CallState
from voice.call.stats import CallStats
from voice.rtp.session import RtpSession

log = logging.getLogger(__name__)


class Call:
    def __init__(
        self, context: CallContext, rtp: RtpSession, engines: CallEngines, control: CallControl
    ) -> None:
        self.context = context
        self.rtp = rtp
        self.engines = engines
        self.brain = engines.brain
        self.control = control
        self.settings = engines.settings
        self.stats = CallStats()
        self.conversation_id: str | None = None
        self._lifecycle = CallLifecycle()
        self._caller = CallerActivity()
        self._listening = Listening(rtp, engines.settings, self._caller, self.stats)
        self._keypad = Keypad(rtp, engines.settings, self._caller)
        self._dialogue = Dialogue(
            rtp, engines, control, self._lifecycle, self._caller, self._keypad, self.stats
        )
        self._late_transfer: asyncio.Task[None] | None = None

    @property
    def state(self) -> CallState:
        return self._lifecycle.state

    @property
    def end_reason(self) -> str | None:
        return self._lifecycle.end_reason

    @property
    def recognizer(self) -> Recognizer | None:
        """The call's recogniser, made once the call's language is known."""
        return self._listening.recognizer

    @property
    def language(self) -> str:
        return self._dialogue.language

    @property
    def held(self) -> bool:
        return self._caller.held

    def set_held(self, held: bool) -> None:
        """The caller put the call on hold (``True``) or took it back (``False``)."""
        if held == self._caller.held:
            return
        self._caller.held = held
        self.rtp.sending = not held
        self._caller.last_activity = asyncio.get_running_loop().time()
        if held:
            self._listening.hold()

    # transitions

    def end(self, reason: str) -> None:
        """End the call (idempotent): ``run`` returns and the brain is told why."""
        self._lifecycle.end(reason)

    def peer_hung_up(self) -> None:
        """The caller sent BYE (or CANCEL)."""
        self.end("caller_hung_up")

    def transferred_late(self, transfer: Transfer) -> None:
        """A transfer reported failed (time-out) was answered after all: the call ends as
        transferred, whatever it was saying (the callback booked for it is already noted)."""
        if self.state is CallState.ENDED or self._late_transfer is not None:
            return

        async def record() -> None:
            try:
                if self.conversation_id is not None:
                    await self.brain.transferred(self.conversation_id, transfer)
            finally:
                self.end("transferred")

        self._late_transfer = asyncio.create_task(record(), name="call-transferred-late")

    # the loop

    async def run(self) -> str:
        """Greet, converse until the call ends; returns the reason it ended.

        Whatever happens (a task fails, the caller hangs up while the brain is still preparing
        the greeting), the recogniser is closed and the brain is told how the call ended."""
        self._lifecycle.activate()
        tasks: list[asyncio.Task[None]] = []
        ended = asyncio.create_task(self._lifecycle.ended.wait(), name="call-ended")
        try:
            begin = asyncio.create_task(self.brain.begin(self.context), name="call-begin")
            await asyncio.wait([begin, ended], return_when=asyncio.FIRST_COMPLETED)
            if not begin.done():  # hung up before the greeting: no conversation to talk in
                begin.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    conversation_id, _ = await begin
                    self.conversation_id = conversation_id
                return self._finished_reason()
            conversation_id, greeting = begin.result()
            self.conversation_id = conversation_id
            self._listening.recognizer = self.engines.recognizer_for(greeting.language)
            tasks = [
                asyncio.create_task(self._listening.receive_audio(), name="call-audio"),
                asyncio.create_task(self._listening.listen(), name="call-listen"),
                asyncio.create_task(self._keypad.read_keys(), name="call-keys"),
                asyncio.create_task(self._keypad.collect_digits(), name="call-digits"),
                asyncio.create_task(
                    self._dialogue.converse(conversation_id, greeting), name="call-dialogue"
                ),
            ]
            done, _ = await asyncio.wait([*tasks, ended], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not ended and not task.cancelled() and task.exception() is not None:
                    log.error("call task failed", exc_info=task.exception())
                    self.end("failed")
        except Exception:
            log.exception("call failed before its dialogue started")
            self.end("failed")
        finally:
            for task in [*tasks, ended]:
                task.cancel()
            # the tasks' own failures were logged above: only their end matters here
            await asyncio.gather(*tasks, ended, return_exceptions=True)
            if self._late_transfer is not None:  # its record is written before the end
                await asyncio.gather(self._late_transfer, return_exceptions=True)
            await self._clean_up()
        return self._finished_reason()

    async def wait_replies(self, count: int) -> None:
        """Wait until ``count`` replies (the greeting is the first) were said and acted on, or
        the call ended. For ``triage call`` and tests that play the caller."""
        await self._dialogue.wait_replies(count)

    def _finished_reason(self) -> str:
        if self.end_reason is None:
            self.end("failed")
        assert self.end_reason is not None
        return self.end_reason

    async def _clean_up(self) -> None:
        reason = self._finished_reason()
        try:
            self.rtp.stop_playback()
            await self._listening.close()
        finally:
            await self._dialogue.call_over()  # wake wait_replies
            if self.conversation_id is not None:
                await self.brain.ended(self.conversation_id, reason)
