"""The non-streaming recogniser: faster-whisper (CTranslate2 Whisper models), an optional extra.

Whisper transcribes whole utterances, so ``WhisperRecognizer`` buffers the audio, cuts it into
utterances with the energy ``Endpointer`` and transcribes each one: it emits ``SpeechStarted``
at the onset and ``AsrFinal`` at the end, no partials. A transcription takes about 0.3-0.5 s
for ``tiny.en`` on two cores, so it begins early: once the caller has been quiet for
``early_transcription_ms`` (the endpointer's ``Pause``), while the rest of the endpointing
silence runs out. If the caller speaks again, that transcription is thrown away and a later
one begins; if the silence ends the utterance, the ``feed`` that ends it waits only for what is
left of it. The cost is the transcriptions of pauses the caller spoke after.

One ``WhisperEngine`` per model, shared by every call; it owns the executor the transcriptions
run in and gives CTranslate2 as many workers, so that calls are transcribed in parallel.
The model must be a local directory: nothing is ever downloaded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from voice.asr.base import (
    ASR_RATE_HZ,
    AsrEvent,
    AsrFinal,
    DecodeQueue,
    Recognizer,
    SpeechStarted,
    check_pcm16,
    default_decode_workers,
)
from voice.asr.endpoint import EndpointConfig, Endpointer, Onset, Pause, Utterance, UtteranceEnd
from voice.asr.models import check_model
from voice.errors import EngineUnavailable, ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_BEAM_SIZE: Final = 2
# Unless told otherwise, a transcription starts once the caller has been quiet for this share of
# the endpointing silence (200 ms of 600; see the docstring).
EARLY_TRANSCRIPTION_SHARE: Final = 1 / 3
# Threads per transcription: ``None`` is one per core, so that a lone utterance is transcribed
# on every core (tiny.en, 1.5 s of speech: 0.30 s on 2 threads, 0.48 s on one); concurrent
# transcriptions share the cores.
DEFAULT_CPU_THREADS: Final[int | None] = None
# Whisper's encoder sees at most 30 s; longer utterances would be cut without our knowing.
WHISPER_WINDOW_MS: Final = 30_000
# One decoding pass at temperature 0: the default fallback ladder (up to six passes) makes the
# latency of a bad utterance unbounded, and the call loop re-prompts on a wrong answer anyway.
_TEMPERATURES: Final = (0.0,)
_FULL_SCALE: Final = 32768.0


class WhisperEngine:
    """A loaded faster-whisper model and the executor its recognisers transcribe in."""

    def __init__(self, model: Any, path: Path, executor: ThreadPoolExecutor) -> None:
        """Use ``await WhisperEngine.load(path)``; this wraps an already loaded model."""
        self.path = path
        self._model = model
        self._executor = executor
        self._closed = False

    @classmethod
    async def load(
        cls,
        path: Path,
        *,
        workers: int | None = None,
        cpu_threads: int | None = DEFAULT_CPU_THREADS,
    ) -> WhisperEngine:
        """Load a CTranslate2 Whisper model directory off the event loop.

        Raises ``ModelNotFound`` when ``path`` lacks the model's files (a missing tokenizer
        would make faster-whisper fetch one from the hub) or faster-whisper is not installed.
        """
        check_model("whisper", path)
        workers = workers or default_decode_workers()
        cpu_threads = cpu_threads or default_decode_workers()
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")
        started = time.perf_counter()
        try:
            model = await asyncio.get_running_loop().run_in_executor(
                executor, _load_model, path, workers, cpu_threads
            )
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        log.info(
            "faster-whisper model loaded",
            extra={"model": str(path), "load_s": round(time.perf_counter() - started, 2)},
        )
        return cls(model, path, executor)

    @property
    def languages(self) -> list[str]:
        """The languages the model transcribes (English only for ``.en`` models)."""
        return list(self._model.supported_languages)

    def new_recognizer(
        self,
        language: str,
        *,
        endpoint: EndpointConfig | None = None,
        beam_size: int = DEFAULT_BEAM_SIZE,
        early_transcription_ms: int | None = None,
        early_transcription: bool = True,
    ) -> WhisperRecognizer:
        """A recogniser for one call, transcribing ``language`` (an ISO 639-1 code).

        With ``early_transcription``, ``early_transcription_ms`` (by default a third of the
        endpointing silence) becomes the endpointer's ``pause_ms``, replacing any set in
        ``endpoint``; it must be shorter than the endpointing silence. Without it, each
        utterance is transcribed once it has ended.
        """
        if self._closed:
            raise RuntimeError("the whisper engine is closed")
        if language not in self.languages:
            raise ModelNotFound(
                f"the faster-whisper model in {self.path} does not transcribe {language!r} "
                f"(it knows {', '.join(self.languages[:10])}): use a multilingual model"
            )
        endpoint = endpoint if endpoint is not None else EndpointConfig()
        if endpoint.max_utterance_ms > WHISPER_WINDOW_MS:
            raise ValueError(
                f"max_utterance_ms {endpoint.max_utterance_ms} exceeds Whisper's window "
                f"of {WHISPER_WINDOW_MS} ms"
            )
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        pause_ms = None
        if early_transcription:
            pause_ms = early_transcription_ms
            if pause_ms is None:
                share = round(endpoint.trailing_silence_ms * EARLY_TRANSCRIPTION_SHARE)
                pause_ms = max(endpoint.frame_ms, share)
        endpoint = replace(endpoint, pause_ms=pause_ms)  # validates it
        return WhisperRecognizer(self, language, endpoint=endpoint, beam_size=beam_size)

    async def close(self) -> None:
        """Stop the executor once the transcriptions already queued have finished."""
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def transcribe(self, pcm: bytes, language: str, beam_size: int) -> tuple[str, float | None]:
        """Transcribe one utterance; blocking and CPU-bound: call it in ``executor``.

        Returns the words and a confidence: the geometric mean of their token probabilities.
        """
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(_FULL_SCALE)
        try:
            segments, _info = self._model.transcribe(
                audio,
                language=language,
                beam_size=beam_size,
                temperature=list(_TEMPERATURES),
                vad_filter=False,  # the endpointer already cut the utterance
                condition_on_previous_text=False,  # each utterance stands alone
                without_timestamps=True,
            )
            # transcribe() is lazy: the decoding happens while the segments are read.
            decoded = [(segment.text, segment.avg_logprob) for segment in segments]
        except RuntimeError as exc:  # CTranslate2 reports its failures as RuntimeError
            raise EngineUnavailable(f"faster-whisper failed to transcribe: {exc}") from exc
        text = "".join(part for part, _ in decoded).strip()
        if not decoded:
            return text, None
        mean_logprob = math.fsum(logprob for _, logprob in decoded) / len(decoded)
        return text, min(1.0, math.exp(mean_logprob))


def _load_model(path: Path, workers: int, cpu_threads: int) -> Any:
    try:
        # Imported here: the extra is optional, and the import takes a quarter of a second.
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ModelNotFound(
            "faster-whisper is not installed: pip install 'contact-triage[whisper]'"
        ) from exc
    try:
        return WhisperModel(
            str(path),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=workers,
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelNotFound(f"faster-whisper could not load the model in {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class TranscriptionCounts:
    """What one recogniser transcribed: utterances, and early transcriptions thrown away."""

    utterances: int
    early_used: int
    early_discarded: int


class WhisperRecognizer(Recognizer):
    """One call's recogniser on a shared ``WhisperEngine``: endpointed, then transcribed."""

    def __init__(
        self, engine: WhisperEngine, language: str, *, endpoint: EndpointConfig, beam_size: int
    ) -> None:
        self.language = language
        self._engine = engine
        self._beam_size = beam_size
        self._queue = DecodeQueue(engine.executor)
        self._endpointer = Endpointer(endpoint, sample_rate_hz=ASR_RATE_HZ)
        self._generation = 0  # bumped by reset(): transcriptions begun before it are ignored
        self._early: asyncio.Task[tuple[str, float | None]] | None = None
        self._utterances = 0
        self._early_used = 0
        self._early_discarded = 0
        self._closed = False

    @property
    def counts(self) -> TranscriptionCounts:
        return TranscriptionCounts(self._utterances, self._early_used, self._early_discarded)

    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        self._check_open()
        check_pcm16(pcm16k)
        generation = self._generation
        events: list[AsrEvent] = []
        for cut in self._endpointer.feed(pcm16k):
            if isinstance(cut, Onset):
                events.append(SpeechStarted())
            elif isinstance(cut, Pause):
                self._begin_early(cut.pcm)
            else:
                final = await self._finish(cut)
                if generation != self._generation:
                    return []  # reset() while transcribing: this chunk's events are forgotten too
                if final is not None:
                    events.append(final)
        return events

    async def flush(self) -> AsrFinal | None:
        self._check_open()
        utterance = self._endpointer.flush()
        if utterance is None:
            self._drop_early()
            return None
        return await self._finish(utterance)

    def reset(self) -> None:
        self._generation += 1
        self._drop_early()
        self._endpointer.reset()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_early()
        self._endpointer.reset()
        await self._queue.drain()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the recognizer is closed")

    def _begin_early(self, pcm: bytes) -> None:
        """Start transcribing the utterance so far; an earlier early one is no longer needed."""
        self._drop_early()
        task = asyncio.create_task(self._run(pcm))
        task.add_done_callback(_retrieve)
        self._early = task

    def _drop_early(self) -> None:
        # A transcription already in its thread runs to its end; the queue waits for it.
        if self._early is not None:
            self._early.cancel()
            self._early = None
            self._early_discarded += 1

    async def _finish(self, utterance: Utterance) -> AsrFinal | None:
        generation = self._generation
        early, self._early = self._early, None
        self._utterances += 1
        if early is not None and utterance.ended_by is UtteranceEnd.SILENCE:
            # The utterance is the early transcription's audio and quiet frames after it.
            self._early_used += 1
            text, confidence = await asyncio.shield(early)
        else:
            if early is not None:
                early.cancel()
                self._early_discarded += 1
            text, confidence = await self._run(utterance.pcm)
        if generation != self._generation or not text:
            return None
        return AsrFinal(text, confidence)

    async def _run(self, pcm: bytes) -> tuple[str, float | None]:
        return await self._queue.run(self._engine.transcribe, pcm, self.language, self._beam_size)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a discarded early transcription's failure as seen (the utterance reports its own)."""
    if not task.cancelled():
        task.exception()
