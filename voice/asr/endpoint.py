"""An energy-based endpointer: where utterances start and end in a stream of 16-bit PCM.

The audio is cut into ``frame_ms`` frames; a frame is loud when its RMS level is above
``threshold_dbfs`` (dB relative to full scale, as ``voice.audio.rms_dbfs`` reads it). Speech starts
after ``speech_start_ms`` of consecutive loud frames, and the utterance then begins
``pre_roll_ms`` before the first of them (a word's soft onset is quieter than its vowel). It ends
after ``trailing_silence_ms`` of consecutive quiet frames, or when it reaches
``max_utterance_ms``; speech still going on at that point continues as a new utterance. With
``pause_ms`` set, every run of ``pause_ms`` quiet frames inside an utterance is reported as a
``Pause`` carrying the audio so far: a non-streaming engine transcribes it while the trailing
silence runs out, and the utterance that then ends on silence is that audio plus quiet frames
(the latest ``Pause`` of an utterance that ends on silence always stands for it).

The non-streaming recogniser uses this to decide what to transcribe; the streaming one uses it
to force a final when the engine's own endpointing cannot be configured. Pure state, no I/O: a
20 ms chunk costs microseconds, so it runs on the event loop.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np

from voice.asr.base import ASR_RATE_HZ, SAMPLE_WIDTH_BYTES, check_pcm16

DEFAULT_THRESHOLD_DBFS: Final = -40.0
DEFAULT_SPEECH_START_MS: Final = 60
DEFAULT_TRAILING_SILENCE_MS: Final = 700
DEFAULT_MAX_UTTERANCE_MS: Final = 15_000
DEFAULT_PRE_ROLL_MS: Final = 200
DEFAULT_FRAME_MS: Final = 20

_FULL_SCALE: Final = 32768.0


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Endpointing parameters; durations are rounded up to whole frames."""

    threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS
    speech_start_ms: int = DEFAULT_SPEECH_START_MS
    trailing_silence_ms: int = DEFAULT_TRAILING_SILENCE_MS
    max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS
    pre_roll_ms: int = DEFAULT_PRE_ROLL_MS
    frame_ms: int = DEFAULT_FRAME_MS
    pause_ms: int | None = None  # quiet run reported as a Pause; below trailing_silence_ms

    def __post_init__(self) -> None:
        if not self.threshold_dbfs < 0.0:
            raise ValueError(f"threshold_dbfs must be below 0 dBFS, got {self.threshold_dbfs}")
        for name in ("speech_start_ms", "trailing_silence_ms", "max_utterance_ms", "frame_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.pre_roll_ms < 0:
            raise ValueError(f"pre_roll_ms must not be negative, got {self.pre_roll_ms}")
        if self.max_utterance_ms < self.speech_start_ms + self.pre_roll_ms:
            raise ValueError(
                f"max_utterance_ms ({self.max_utterance_ms}) must cover speech_start_ms "
                f"({self.speech_start_ms}) plus pre_roll_ms ({self.pre_roll_ms})"
            )
        if self.pause_ms is not None and not (
            0 < self.frames(self.pause_ms) < self.frames(self.trailing_silence_ms)
        ):
            raise ValueError(
                f"pause_ms ({self.pause_ms}) must be positive and shorter than "
                f"trailing_silence_ms ({self.trailing_silence_ms}) by at least a frame"
            )

    def frames(self, duration_ms: int) -> int:
        """How many frames make ``duration_ms``, rounded up."""
        return -(-duration_ms // self.frame_ms)


class EndpointState(enum.Enum):
    SILENCE = "silence"
    SPEECH = "speech"


class UtteranceEnd(enum.Enum):
    SILENCE = "silence"  # the trailing silence was long enough
    MAX_LENGTH = "max_length"  # cut at max_utterance_ms; the speech goes on
    FLUSH = "flush"  # end of input


@dataclass(frozen=True, slots=True)
class Onset:
    """Speech started (``speech_start_ms`` after its first loud frame)."""


@dataclass(frozen=True, slots=True)
class Pause:
    """``pause_ms`` of quiet inside an utterance: its audio so far (empty without keep_audio).

    The utterance may still go on (speech resumes: a later ``Pause`` or ``Utterance`` replaces
    this one) or end on silence, with only quiet frames after this audio.
    """

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Utterance:
    """A finished utterance: its audio (pre-roll and trailing silence included) and why it ended.

    ``pcm`` is empty when the endpointer was made with ``keep_audio=False``.
    """

    pcm: bytes
    ended_by: UtteranceEnd


EndpointEvent = Onset | Pause | Utterance


class Endpointer:
    """Cuts a PCM stream into utterances; feed it chunks of any size."""

    def __init__(
        self,
        config: EndpointConfig | None = None,
        *,
        sample_rate_hz: int = ASR_RATE_HZ,
        keep_audio: bool = True,
    ) -> None:
        self.config = config if config is not None else EndpointConfig()
        samples = sample_rate_hz * self.config.frame_ms // 1000
        if samples <= 0 or samples * 1000 != sample_rate_hz * self.config.frame_ms:
            raise ValueError(
                f"frame_ms {self.config.frame_ms} is not a whole number of samples "
                f"at {sample_rate_hz} Hz"
            )
        self._frame_samples = samples
        self._frame_bytes = samples * SAMPLE_WIDTH_BYTES
        self._threshold_power = (_FULL_SCALE * 10.0 ** (self.config.threshold_dbfs / 20.0)) ** 2
        self._keep_audio = keep_audio
        self._start_frames = self.config.frames(self.config.speech_start_ms)
        self._silence_frames = self.config.frames(self.config.trailing_silence_ms)
        self._max_frames = self.config.frames(self.config.max_utterance_ms)
        pause_ms = self.config.pause_ms
        self._pause_frames = self.config.frames(pause_ms) if pause_ms is not None else None
        # While silent, the frames a new utterance would begin with: the pre-roll and the
        # loud run that may turn into speech.
        self._lookback: deque[bytes] = deque(
            maxlen=self.config.frames(self.config.pre_roll_ms) + self._start_frames
        )
        self.reset()

    @property
    def state(self) -> EndpointState:
        return self._state

    def reset(self) -> None:
        """Forget everything: the next audio starts from silence."""
        self._state = EndpointState.SILENCE
        self._remainder = b""
        self._lookback.clear()
        self._loud_run = 0
        self._quiet_run = 0
        self._utterance: list[bytes] = []
        self._utterance_frames = 0

    def feed(self, pcm: bytes) -> list[EndpointEvent]:
        """Process the next chunk; returns the onsets and finished utterances it completes."""
        check_pcm16(pcm)
        data = self._remainder + pcm
        count = len(data) // self._frame_bytes
        self._remainder = data[count * self._frame_bytes :]
        if count == 0:
            return []
        samples = np.frombuffer(data, dtype="<i2", count=count * self._frame_samples)
        power = np.mean(
            np.square(samples.reshape(count, self._frame_samples), dtype=np.float64), axis=1
        )
        loud = (power > self._threshold_power).tolist()
        events: list[EndpointEvent] = []
        for index, is_loud in enumerate(loud):
            start = index * self._frame_bytes
            self._step(data[start : start + self._frame_bytes], is_loud, events)
        return events

    def flush(self) -> Utterance | None:
        """End of input: the utterance in progress, if speech had started."""
        utterance = None
        if self._state is EndpointState.SPEECH:
            tail = self._remainder if self._keep_audio else b""
            utterance = Utterance(b"".join(self._utterance) + tail, UtteranceEnd.FLUSH)
        self.reset()
        return utterance

    def _step(self, frame: bytes, is_loud: bool, events: list[EndpointEvent]) -> None:
        if self._state is EndpointState.SILENCE:
            self._lookback.append(frame)
            self._loud_run = self._loud_run + 1 if is_loud else 0
            if self._loud_run >= self._start_frames:
                self._begin(list(self._lookback), events)
            return
        self._append(frame)
        self._quiet_run = 0 if is_loud else self._quiet_run + 1
        if self._quiet_run == self._pause_frames and self._utterance_frames < self._max_frames:
            pcm = b"".join(self._utterance) if self._keep_audio else b""
            events.append(Pause(pcm))
        if self._quiet_run >= self._silence_frames:
            events.append(self._finish(UtteranceEnd.SILENCE))
            self._state = EndpointState.SILENCE
            self._loud_run = 0
        elif self._utterance_frames >= self._max_frames:
            events.append(self._finish(UtteranceEnd.MAX_LENGTH))
            # Still speaking: the next utterance starts here, without waiting for a new onset.
            self._begin([], events)

    def _begin(self, frames: list[bytes], events: list[EndpointEvent]) -> None:
        self._state = EndpointState.SPEECH
        self._lookback.clear()
        self._quiet_run = 0
        self._utterance = []
        self._utterance_frames = 0
        for frame in frames:
            self._append(frame)
        events.append(Onset())

    def _append(self, frame: bytes) -> None:
        self._utterance_frames += 1
        if self._keep_audio:
            self._utterance.append(frame)

    def _finish(self, ended_by: UtteranceEnd) -> Utterance:
        utterance = Utterance(b"".join(self._utterance), ended_by)
        self._utterance = []
        self._utterance_frames = 0
        return utterance
