"""One call's loop: audio in -> speech recognition -> the brain -> speech synthesis -> audio out.

Three tasks per call, owned by ``Call.run`` and cancelled when the call ends:
- *listening*: 8 kHz frames from the RTP session are upsampled for the recogniser; its events
  drive barge-in (a prompt stops once the caller has spoken for ``barge_in_min_speech_ms``,
  unless what they say is a backchannel like "sì", "ok", "mhm") and a final becomes ``Heard``;
- *keys*: DTMF; ``0`` at any time asks for a person; while the bot asks for a value that can be
  keyed (``DigitRequest``), digits are collected until ``#``, the value's length or an
  inter-digit pause (a lone ``0`` still asks for a person; ``*`` starts the value again);
- *dialogue*: one caller event at a time to the brain, its reply spoken (synthesised, queued on
  the RTP session), then a transfer or a hang-up if the reply says so; silence after a prompt
  for ``no_input_timeout_s`` is a ``NoInput`` event (the brain reprompts, then escalates).

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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from voice.asr.base import ASR_RATE_HZ, AsrFinal, AsrPartial, Recognizer, SpeechStarted
from voice.audio import PTIME_MS, TELEPHONE_RATE_HZ, Resampler
from voice.brain import Brain, BrainReply, CallContext, DigitRequest, Transfer
from voice.rtp.playback import Playback
from voice.rtp.session import RtpSession
from voice.tts.base import Synthesizer, check_speakable

log = logging.getLogger(__name__)

FEED_FRAMES: Final = 2  # 40 ms of audio per recogniser call at least: latency vs overhead
MAX_FEED_FRAMES: Final = 25  # 500 ms at most, when the recogniser has fallen behind
BACKLOG_MS: Final = 5000  # audio waiting for the recogniser; beyond, the oldest is dropped
BACKCHANNELS: Final = frozenset(
    {
        "sì",
        "si",
        "ok",
        "okay",
        "mhm",
        "mh",
        "ehm",
        "eh",
        "ah",
        "certo",
        "esatto",
        "yes",
        "yeah",
        "yep",
        "uh huh",
        "right",
        "sure",
        "va bene",
        "d'accordo",
        "hmm",
        "hm",
        "uhm",
        "um",
    }
)


class CallState(StrEnum):
    ANSWERED = "answered"
    ACTIVE = "active"
    TRANSFERRING = "transferring"
    ENDED = "ended"


@dataclass(frozen=True)
class CallSettings:
    no_input_timeout_s: float = 7.0
    barge_in_min_speech_ms: int = 400
    inter_digit_timeout_s: float = 4.0


@dataclass(frozen=True)
class CallEngines:
    """What every call shares: the brain, the synthesiser, recognisers per language, timings."""

    brain: Brain
    synthesizer: Synthesizer
    recognizer_for: Callable[[str], Recognizer]  # a new recogniser for one call, by language
    settings: CallSettings = field(default_factory=CallSettings)


class CallControl(Protocol):
    """What a call asks of its SIP dialog."""

    async def transfer(self, transfer: Transfer) -> bool:
        """Blind transfer (REFER); True once the target answered (NOTIFY 2xx), else False."""

    async def hang_up(self) -> None:
        """End the call from our side (BYE)."""


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
class CallStats:
    """What the benchmark and ``triage call`` report about one call."""

    turn_latency_ms: list[float] = field(default_factory=list)  # caller's final -> first RTP
    reply_started_at: list[float] = field(default_factory=list)  # loop time of each reply's
    # first RTP packet (the greeting's too)
    barge_ins: int = 0
    max_backlog_ms: int = 0  # the most audio that waited for the recogniser
    backlog_dropped: int = 0  # frames dropped because the recogniser was BACKLOG_MS behind
    held_frames: int = 0  # received frames not decoded because the call was on hold
    replies: list[BrainReply] = field(default_factory=list)


def is_backchannel(text: str) -> bool:
    words = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
    return words in BACKCHANNELS


class Call:
    def __init__(
        self, context: CallContext, rtp: RtpSession, engines: CallEngines, control: CallControl
    ) -> None:
        self.context = context
        self.rtp = rtp
        self.engines = engines
        self.synthesizer = engines.synthesizer
        self.brain = engines.brain
        self.control = control
        self.settings = engines.settings
        self.recognizer: Recognizer | None = None  # made once the call's language is known
        self.state = CallState.ANSWERED
        self.stats = CallStats()
        self.conversation_id: str | None = None
        self.end_reason: str | None = None
        self.language = "it"
        self._events: asyncio.Queue[CallerEvent] = asyncio.Queue()
        self._ended = asyncio.Event()
        self._speech_ms = 0  # of the utterance in progress, for barge-in
        self._speaking = False  # the caller is in the middle of an utterance
        self._partial = ""  # its words so far
        self._last_activity = 0.0  # loop time of the caller's last key press or speech
        self._collect: DigitRequest | None = None
        self._keys: asyncio.Queue[str] = asyncio.Queue()
        self._pending_latency: float | None = None
        self._acted = 0
        self._late_transfer: asyncio.Task[None] | None = None
        self._person_pending = False  # a PersonRequested is queued or being handled
        self._backlog: deque[bytes] = deque()
        self._audio_ready = asyncio.Event()
        self._acted_changed = asyncio.Condition()
        self.held = False

    def set_held(self, held: bool) -> None:
        """The caller put the call on hold (``True``) or took it back (``False``)."""
        if held == self.held:
            return
        self.held = held
        self.rtp.sending = not held
        self._last_activity = asyncio.get_running_loop().time()
        if held:
            self._backlog.clear()
            self._speaking = False
            self._partial = ""
            if self.recognizer is not None:
                self.recognizer.reset()  # what the caller was saying is cut off by the hold

    # transitions

    def _activate(self) -> None:
        if self.state is not CallState.ANSWERED:
            raise RuntimeError(f"cannot start a call that is {self.state}")
        self.state = CallState.ACTIVE

    def _begin_transfer(self) -> None:
        if self.state is not CallState.ACTIVE:
            raise RuntimeError(f"cannot transfer a call that is {self.state}")
        self.state = CallState.TRANSFERRING

    def _transfer_failed(self) -> None:
        if self.state is CallState.TRANSFERRING:
            self.state = CallState.ACTIVE

    def end(self, reason: str) -> None:
        """End the call (idempotent): ``run`` returns and the brain is told why."""
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.end_reason = reason
        self._ended.set()

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
        self._activate()
        tasks: list[asyncio.Task[None]] = []
        ended = asyncio.create_task(self._ended.wait(), name="call-ended")
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
            self.language = greeting.language
            self.recognizer = self.engines.recognizer_for(greeting.language)
            tasks = [
                asyncio.create_task(self._receive_audio(), name="call-audio"),
                asyncio.create_task(self._listen(), name="call-listen"),
                asyncio.create_task(self._read_keys(), name="call-keys"),
                asyncio.create_task(self._collect_digits(), name="call-digits"),
                asyncio.create_task(self._dialogue(greeting), name="call-dialogue"),
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

    def _finished_reason(self) -> str:
        if self.end_reason is None:
            self.end("failed")
        assert self.end_reason is not None
        return self.end_reason

    async def _clean_up(self) -> None:
        reason = self._finished_reason()
        try:
            self.rtp.stop_playback()
            if self.recognizer is not None:
                await self.recognizer.close()
        finally:
            async with self._acted_changed:  # wake wait_replies: the call is over
                self._acted_changed.notify_all()
            if self.conversation_id is not None:
                await self.brain.ended(self.conversation_id, reason)

    async def _receive_audio(self) -> None:
        """Take the caller's audio off the RTP session as it comes: a streaming decoder works in
        bursts (a few hundred ms for one chunk, then nothing for the next ones), so the audio
        waits here, up to ``BACKLOG_MS``, instead of overflowing the session's queue."""
        while True:
            frame = await self.rtp.audio.get()
            if self.held:
                self.stats.held_frames += 1
                continue
            if len(self._backlog) >= BACKLOG_MS // PTIME_MS:
                self._backlog.popleft()
                self.stats.backlog_dropped += 1
            self._backlog.append(frame)
            self.stats.max_backlog_ms = max(
                self.stats.max_backlog_ms, len(self._backlog) * PTIME_MS
            )
            self._audio_ready.set()

    async def _listen(self) -> None:
        assert self.recognizer is not None
        upsample = Resampler(TELEPHONE_RATE_HZ, ASR_RATE_HZ)
        while True:
            while len(self._backlog) < FEED_FRAMES:
                self._audio_ready.clear()
                await self._audio_ready.wait()
            count = min(len(self._backlog), MAX_FEED_FRAMES)  # catch up in larger chunks
            frames = [self._backlog.popleft() for _ in range(count)]
            chunk = upsample.process(b"".join(frames))
            fed_ms = count * PTIME_MS
            for event in await self.recognizer.feed(chunk):
                if isinstance(event, SpeechStarted):
                    self._last_activity = asyncio.get_running_loop().time()
                    self._speaking = True
                    self._speech_ms = 0
                    self._partial = ""
                elif isinstance(event, AsrPartial):
                    self._partial = event.text
                elif isinstance(event, AsrFinal):
                    self._speaking = False
                    self._on_final(event)
            if self._speaking:
                self._speech_ms += fed_ms
                self._maybe_barge_in()

    def _maybe_barge_in(self) -> None:
        """Stop the prompt once the caller has clearly started talking over it: speech for the
        minimum time, and words so far that are not a backchannel (an engine without partials
        gives no words: the time alone decides)."""
        if not self.rtp.playing or self._speech_ms < self.settings.barge_in_min_speech_ms:
            return
        if self._partial and is_backchannel(self._partial):
            return
        self.rtp.stop_playback()
        self.stats.barge_ins += 1

    def _on_final(self, final: AsrFinal) -> None:
        if is_backchannel(final.text) and self.rtp.playing:
            return  # "mhm" while the bot speaks is listening, not a turn
        self._events.put_nowait(Heard(final.text, asyncio.get_running_loop().time()))

    async def _read_keys(self) -> None:
        while True:
            key = (await self.rtp.dtmf.get()).digit
            now = asyncio.get_running_loop().time()
            self._last_activity = now
            if self._collect is None:
                if key == "0" and not self._person_pending:
                    self._person_pending = True  # repeated presses: one request, not many
                    self.rtp.stop_playback()
                    self._events.put_nowait(PersonRequested(now))
                continue
            self.rtp.stop_playback()  # a key press is barge-in too
            self._keys.put_nowait(key)

    async def _collect_digits(self) -> None:
        """Digits for the value being asked, until '#', its length or a pause."""
        buffer = ""
        while True:
            timeout = self.settings.inter_digit_timeout_s if buffer else None
            try:
                key = await asyncio.wait_for(self._keys.get(), timeout)
            except TimeoutError:
                key = "#"
            request = self._collect
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
                    self._events.put_nowait(PersonRequested(now))
                elif buffer:
                    self._collect = None
                    self._events.put_nowait(Keyed(buffer, request, now))
                buffer = ""

    async def _dialogue(self, greeting: BrainReply) -> None:
        assert self.conversation_id is not None
        await self._act(greeting)
        silent_prompts = 0
        loop = asyncio.get_running_loop()
        listening_since = loop.time()
        while self.state is not CallState.ENDED:
            # silence counts from the end of the last prompt or the caller's last sound
            quiet_from = max(listening_since, self._last_activity)
            remaining = self.settings.no_input_timeout_s - (loop.time() - quiet_from)
            if self.held:  # no silence is counted on hold: look again after a while
                remaining = self.settings.no_input_timeout_s
            try:
                event = await asyncio.wait_for(self._events.get(), max(remaining, 0.05))
            except TimeoutError:
                idle_s = loop.time() - max(listening_since, self._last_activity)
                if self._speaking or self.held or idle_s < self.settings.no_input_timeout_s:
                    continue  # the caller is talking, keying or holding: not silence
                silent_prompts += 1
                asked = self._collect
                reprompt = await self.brain.no_input(self.conversation_id, silent_prompts)
                # a reprompt repeats the question: digits for the value asked are still welcome
                await self._act(reprompt, keep_request=asked)
                listening_since = loop.time()
                continue
            silent_prompts = 0
            self._pending_latency = event.at
            if isinstance(event, Heard):
                reply = await self.brain.hear(self.conversation_id, event.text)
            elif isinstance(event, Keyed):
                reply = await self.brain.keyed(self.conversation_id, event.digits, event.request)
            else:
                reply = await self.brain.ask_for_person(self.conversation_id)
            await self._act(reply)
            if isinstance(event, PersonRequested):
                self._person_pending = False  # asked and answered: a new press is a new request
            listening_since = loop.time()

    async def wait_replies(self, count: int) -> None:
        """Wait until ``count`` replies (the greeting is the first) were said and acted on, or
        the call ended. For ``triage call`` and tests that play the caller."""
        async with self._acted_changed:
            await self._acted_changed.wait_for(
                lambda: self._acted >= count or self.state is CallState.ENDED
            )

    async def _act(self, reply: BrainReply, keep_request: DigitRequest | None = None) -> None:
        try:
            await self._perform(reply, keep_request)
        finally:
            async with self._acted_changed:
                self._acted += 1
                self._acted_changed.notify_all()

    async def _perform(self, reply: BrainReply, keep_request: DigitRequest | None) -> None:
        """Say the reply, then transfer or hang up if it says so."""
        assert self.conversation_id is not None
        self.stats.replies.append(reply)
        self.language = reply.language
        self._collect = reply.digits or (keep_request if reply.transfer is None else None)
        await self._say(reply.say)
        if reply.transfer is not None:
            self._begin_transfer()
            if await self.control.transfer(reply.transfer):
                await self.brain.transferred(self.conversation_id, reply.transfer)
                self.end("transferred")
                return
            self._transfer_failed()
            await self._act(await self.brain.transfer_failed(self.conversation_id, reply.transfer))
            return
        if reply.hang_up:
            self.end("bot_hung_up")  # media and recognition stop now, not after the BYE's answer
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
