"""``VoiceGate``: a streaming recogniser that decodes only around voice activity.

A caller is silent for much of a call (while the bot speaks, between turns), and a streaming
decoder spends a third as much CPU on silence as on speech (Vosk's Korean small model here: real-
time factor 0.10-0.12 on silence and line noise, 0.28-0.35 on speech). The gate keeps the audio
out of the decoder until a frame is louder than ``threshold_dbfs``; it then feeds the last
``pre_roll_ms`` (so the first syllable is not lost) and everything after, until the audio has
been quiet for ``hangover_ms``, which must cover the recogniser's own endpointing silence; then it
flushes the recogniser (the final of the utterance, if it had not come) and closes again. Cost:
an RMS per 20 ms frame.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from voice.asr.base import BYTES_PER_MS, AsrEvent, AsrFinal, Recognizer, check_pcm16
from voice.audio import rms_dbfs

FRAME_MS: Final = 20
DEFAULT_THRESHOLD_DBFS: Final = -45.0
DEFAULT_PRE_ROLL_MS: Final = 300
DEFAULT_HANGOVER_MS: Final = 1200


class VoiceGate(Recognizer):
    def __init__(
        self,
        inner: Recognizer,
        *,
        threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
        pre_roll_ms: int = DEFAULT_PRE_ROLL_MS,
        hangover_ms: int = DEFAULT_HANGOVER_MS,
    ) -> None:
        if pre_roll_ms < 0 or hangover_ms < FRAME_MS:
            raise ValueError("pre_roll_ms must be >= 0 and hangover_ms at least one frame")
        self.inner = inner
        self.threshold_dbfs = threshold_dbfs
        self.hangover_ms = hangover_ms
        self._frame_bytes = FRAME_MS * BYTES_PER_MS
        self._pre_roll: deque[bytes] = deque(maxlen=max(1, pre_roll_ms // FRAME_MS))
        self._open = False
        self._quiet_ms = 0
        self._partial_frame = b""
        self.decoded_ms = 0  # audio that reached the decoder
        self.skipped_ms = 0  # audio the gate kept out

    @property
    def is_open(self) -> bool:
        return self._open

    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        check_pcm16(pcm16k)
        data = self._partial_frame + pcm16k
        whole = len(data) - len(data) % self._frame_bytes
        self._partial_frame = data[whole:]
        events: list[AsrEvent] = []
        to_decode: list[bytes] = []
        for start in range(0, whole, self._frame_bytes):
            frame = data[start : start + self._frame_bytes]
            loud = rms_dbfs(frame) > self.threshold_dbfs
            if not self._open:
                if not loud:
                    self._pre_roll.append(frame)
                    self.skipped_ms += FRAME_MS
                    continue
                self._open = True
                self._quiet_ms = 0
                to_decode.extend(self._pre_roll)
                self.skipped_ms -= FRAME_MS * len(self._pre_roll)
                self._pre_roll.clear()
            to_decode.append(frame)
            self._quiet_ms = 0 if loud else self._quiet_ms + FRAME_MS
            if self._quiet_ms >= self.hangover_ms:
                events += await self._decode(to_decode)
                to_decode = []
                final = await self.inner.flush()
                if final is not None:
                    events.append(final)
                self._open = False
        if to_decode:
            events += await self._decode(to_decode)
        return events

    async def _decode(self, frames: list[bytes]) -> list[AsrEvent]:
        self.decoded_ms += FRAME_MS * len(frames)
        return await self.inner.feed(b"".join(frames))

    async def flush(self) -> AsrFinal | None:
        self._open = False
        self._pre_roll.clear()
        return await self.inner.flush()

    def reset(self) -> None:
        self._open = False
        self._pre_roll.clear()
        self._partial_frame = b""
        self.inner.reset()

    async def close(self) -> None:
        await self.inner.close()
