"""The dialogue: one caller event at a time to the brain, its reply spoken (synthesised, queued
on the RTP session), then a transfer or a hang-up if the reply says so.

Silence after a prompt for ``no_input_timeout_s`` is a ``NoInput`` event (the brain reprompts,
then escalates). Hold is not silence: the no-input timer starts again when the call is resumed.

The dialogue reaches SIP only through ``CallControl`` (REFER, BYE), and the rest of the service
only through ``voice.brain.Brain``; both are small so that the loop is tested with fakes beside
the real engines' own tests.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from voice.brain import BrainReply, DigitRequest, Transfer
from voice.call.events import CallerActivity, Heard, Keyed, PersonRequested
from voice.call.keypad import Keypad
from voice.call.settings import CallEngines
from voice.call.state import CallLifecycle, CallState
from voice.call.stats import CallStats
from voice.rtp.playback import Playback
from voice.rtp.session import RtpSession
from voice.tts.base import check_speakable


class CallControl(Protocol):
    """What a call asks of its SIP dialog."""

    async def transfer(self, transfer: Transfer) -> bool:
        """Blind transfer (REFER); True once the target answered (NOTIFY 2xx), else False."""

    async def hang_up(self) -> None:
        """End the call from our side (BYE)."""


class Dialogue:
    """The turns of one call and the replies said so far; the task ``converse``, run by the
    call that owns this."""

    def __init__(
        self,
        rtp: RtpSession,
        engines: CallEngines,
        control: CallControl,
        lifecycle: CallLifecycle,
        caller: CallerActivity,
        keypad: Keypad,
        stats: CallStats,
    ) -> None:
        self.rtp = rtp
        self.brain = engines.brain
        self.synthesizer = engines.synthesizer
        self.settings = engines.settings
        self.control = control
        self.lifecycle = lifecycle
        self.caller = caller
        self.keypad = keypad
        self.stats = stats
        self.language = "it"
        self._conversation_id: str | None = None
        self._pending_latency: float | None = None
        self._acted = 0
        self._acted_changed = asyncio.Condition()

    async def converse(self, conversation_id: str, greeting: BrainReply) -> None:
        self._conversation_id = conversation_id
        await self._act(greeting)
        silent_prompts = 0
        loop = asyncio.get_running_loop()
        listening_since = loop.time()
        while self.lifecycle.state is not CallState.ENDED:
            # silence counts from the end of the last prompt or the caller's last sound
            quiet_from = max(listening_since, self.caller.last_activity)
            remaining = self.settings.no_input_timeout_s - (loop.time() - quiet_from)
            if self.caller.held:  # no silence is counted on hold: look again after a while
                remaining = self.settings.no_input_timeout_s
            try:
                event = await asyncio.wait_for(self.caller.events.get(), max(remaining, 0.05))
            except TimeoutError:
                idle_s = loop.time() - max(listening_since, self.caller.last_activity)
                if (
                    self.caller.speaking
                    or self.caller.held
                    or idle_s < self.settings.no_input_timeout_s
                ):
                    continue  # the caller is talking, keying or holding: not silence
                silent_prompts += 1
                asked = self.keypad.request
                reprompt = await self.brain.no_input(conversation_id, silent_prompts)
                # a reprompt repeats the question: digits for the value asked are still welcome
                await self._act(reprompt, keep_request=asked)
                listening_since = loop.time()
                continue
            silent_prompts = 0
            self._pending_latency = event.at
            if isinstance(event, Heard):
                reply = await self.brain.hear(conversation_id, event.text)
            elif isinstance(event, Keyed):
                reply = await self.brain.keyed(conversation_id, event.digits, event.request)
            else:
                reply = await self.brain.ask_for_person(conversation_id)
            await self._act(reply)
            if isinstance(event, PersonRequested):
                self.keypad.person_answered()
            listening_since = loop.time()

    async def wait_replies(self, count: int) -> None:
        """Wait until ``count`` replies (the greeting is the first) were said and acted on, or
        the call ended."""
        async with self._acted_changed:
            await self._acted_changed.wait_for(
                lambda: self._acted >= count or self.lifecycle.state is CallState.ENDED
            )

    async def call_over(self) -> None:
        """Wake ``wait_replies``: the call is over."""
        async with self._acted_changed:
            self._acted_changed.notify_all()

    async def _act(self, reply: BrainReply, keep_request: DigitRequest | None = None) -> None:
        try:
            await self._perform(reply, keep_request)
        finally:
            async with self._acted_changed:
                self._acted += 1
                self._acted_changed.notify_all()

    async def _perform(self, reply: BrainReply, keep_request: DigitRequest | None) -> None:
        """Say the reply, then transfer or hang up if it says so."""
        assert self._conversation_id is not None
        self.stats.replies.append(reply)
        self.language = reply.language
        self.keypad.request = reply.digits or (keep_request if reply.transfer is None else None)
        await self._say(reply.say)
        if reply.transfer is not None:
            self.lifecycle.begin_transfer()
            if await self.control.transfer(reply.transfer):
                await self.brain.transferred(self._conversation_id, reply.transfer)
                self.lifecycle.end("transferred")
                return
            self.lifecycle.transfer_failed()
            await self._act(await self.brain.transfer_failed(self._conversation_id, reply.transfer))
            return
        if reply.hang_up:
            # media and recognition stop now, not after the BYE's answer
            self.lifecycle.end("bot_hung_up")
            await self.control.hang_up()

    async def _say(self, texts: tuple[str, ...]) -> None:
        playbacks: list[Playback] = []
        for text in texts:
            try:
                check_speakable(text)
            except ValueError:
                continue
            prompt = await self.synthesizer.synthesize(text, self.language)
            playbacks.append(self.rtp.play(prompt.pcm))
        if not playbacks:
            return
        started = self._pending_latency
        self._pending_latency = None
        for playback in playbacks:
            if not await playback.wait():
                break  # barged in: the rest was dropped with it
        first = playbacks[0].first_packet_sent_at
        if first is not None:
            self.stats.reply_started_at.append(first)
        if started is not None and first is not None:
            self.stats.turn_latency_ms.append((first - started) * 1000)
