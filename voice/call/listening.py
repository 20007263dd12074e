"""Listening, with barge-in: the caller's audio from the RTP session to the recogniser.

8 kHz frames from the RTP session are upsampled for the recogniser; its events drive barge-in (a
prompt stops once the caller has spoken for ``barge_in_min_speech_ms``, unless what they say is a
backchannel like "sì", "ok", "mhm") and a final becomes ``Heard``.

On hold, what arrives (music on hold) is not decoded, and what the caller was saying is cut off.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from voice.asr.base import ASR_RATE_HZ, AsrFinal, AsrPartial, Recognizer, SpeechStarted
from voice.audio import PTIME_MS, TELEPHONE_RATE_HZ, Resampler
from voice.call.events import CallerActivity, Heard
from voice.call.settings import CallSettings
from voice.call.stats import CallStats
from voice.rtp.session import RtpSession

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


def is_backchannel(text: str) -> bool:
    words = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
    return words in BACKCHANNELS


class Listening:
    """The call's recogniser and the audio waiting for it; two tasks, ``receive_audio`` and
    ``listen``, run by the call that owns this."""

    def __init__(
        self, rtp: RtpSession, settings: CallSettings, caller: CallerActivity, stats: CallStats
    ) -> None:
        self.rtp = rtp
        self.settings = settings
        self.caller = caller
        self.stats = stats
        self.recognizer: Recognizer | None = None  # made once the call's language is known
        self._speech_ms = 0  # of the utterance in progress, for barge-in
        self._partial = ""  # its words so far
        self._backlog: deque[bytes] = deque()
        self._audio_ready = asyncio.Event()

    def hold(self) -> None:
        """The call went on hold: drop the audio waiting and the utterance in progress."""
        self._backlog.clear()
        self.caller.speaking = False
        self._partial = ""
        if self.recognizer is not None:
            self.recognizer.reset()  # what the caller was saying is cut off by the hold

    async def close(self) -> None:
        if self.recognizer is not None:
            await self.recognizer.close()

    async def receive_audio(self) -> None:
        """Take the caller's audio off the RTP session as it comes: a streaming decoder works in
        bursts (a few hundred ms for one chunk, then nothing for the next ones), so the audio
        waits here, up to ``BACKLOG_MS``, instead of overflowing the session's queue."""
        while True:
            frame = await self.rtp.audio.get()
            if self.caller.held:
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

    async def listen(self) -> None:
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
                    self.caller.last_activity = asyncio.get_running_loop().time()
                    self.caller.speaking = True
                    self._speech_ms = 0
                    self._partial = ""
                elif isinstance(event, AsrPartial):
                    self._partial = event.text
                elif isinstance(event, AsrFinal):
                    self.caller.speaking = False
                    self._on_final(event)
            if self.caller.speaking:
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
        self.caller.events.put_nowait(Heard(final.text, asyncio.get_running_loop().time()))
