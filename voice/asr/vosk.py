"""The streaming recogniser: Vosk (Kaldi) small models.

One ``VoskModel`` per language, loaded once and shared by every call; it owns the executor that
all of its recognisers decode in (one thread per core: ``AcceptWaveform`` is CPU-bound and holds
no Python lock while it runs). One ``VoskRecognizer`` per call.

The small models decode on a graph composed on the fly (``HCLr.fst`` with ``Gr.fst``), and each
Kaldi recogniser expands and caches its own part of it as it decodes: a new recogniser spends
most of its first utterances building that cache (the Korean small model here: 0.55-0.68 s of
CPU per second of speech cold, 0.13-0.35 warm on sentences it never heard). So the model keeps
the Kaldi recognisers of calls that ended (up to ``keep_warm`` of them) and gives them to the
next calls. A recogniser is finalised before it is kept, which makes Kaldi start its next use
with a new feature pipeline and decoder (no audio, words or speaker adaptation of the earlier
caller survive); only the graph cache, which holds no caller data, carries over. After a
restart there are none: ``warm_up`` makes them ahead of the first calls, decoding speech the
service has (its own static prompts) in one low-priority thread of its own.

Finals come from Vosk's own endpointing. Builds that have ``SetEndpointerDelays`` (vosk newer
than 0.3.45) are told the configured trailing silence; older ones, such as 0.3.45, keep the
model's rules (``conf/model.conf``: 0.5-2.0 s of trailing silence), so an energy ``Endpointer``
forces the final with ``FinalResult`` after ``endpoint_silence_ms`` of quiet or at
``max_utterance_ms``. With those builds a silence longer than the model's rules cannot delay a
final, only a shorter one can hasten it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import vosk  # type: ignore[import-untyped]

from voice.asr.base import (
    ASR_RATE_HZ,
    AsrEvent,
    AsrFinal,
    AsrPartial,
    DecodeQueue,
    Recognizer,
    SpeechStarted,
    check_pcm16,
    default_decode_workers,
)
from voice.asr.endpoint import (
    DEFAULT_MAX_UTTERANCE_MS,
    EndpointConfig,
    Endpointer,
    Utterance,
)
from voice.asr.models import check_model
from voice.errors import EngineUnavailable, ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT_SILENCE_MS: Final = 700
# Warm Kaldi recognisers kept for the next calls (each holds its graph cache: tens to a couple of
# hundred MB, by the model's graph).
DEFAULT_KEEP_WARM: Final = 10
# The niceness of the warm-up thread: the calls' decodes come first.
_WARM_UP_NICENESS: Final = 10
_WARM_UP_CHUNK_BYTES: Final = 200 * ASR_RATE_HZ * 2 // 1000  # 200 ms, as a call's decodes
# Vosk's "no speech yet" timeout; a call has its own no-input timer, so keep it out of the way.
_ENDPOINTER_START_MAX_S: Final = 30.0
# Kaldi logs every model file it reads at level 0; -1 keeps warnings and errors.
_VOSK_LOG_LEVEL: Final = -1


class VoskModel:
    """A loaded Vosk model and the executor its recognisers decode in."""

    def __init__(
        self,
        model: Any,
        path: Path,
        executor: ThreadPoolExecutor,
        *,
        keep_warm: int = DEFAULT_KEEP_WARM,
    ) -> None:
        """Use ``await VoskModel.load(path)``; this wraps an already loaded model."""
        if keep_warm < 0:
            raise ValueError(f"keep_warm must be >= 0, got {keep_warm}")
        self.path = path
        self._model = model
        self._executor = executor
        self._closed = False
        self.decoders = WarmDecoders(keep_warm)

    @classmethod
    async def load(
        cls, path: Path, *, workers: int | None = None, keep_warm: int = DEFAULT_KEEP_WARM
    ) -> VoskModel:
        """Load the model in ``path`` off the event loop (about a second for a small model).

        Raises ``ModelNotFound`` when ``path`` is not a complete Vosk model directory.
        """
        check_model("vosk", path)
        executor = ThreadPoolExecutor(
            max_workers=workers or default_decode_workers(), thread_name_prefix="vosk"
        )
        started = time.perf_counter()
        try:
            model = await asyncio.get_running_loop().run_in_executor(executor, _load_model, path)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        log.info(
            "Vosk model loaded",
            extra={"model": str(path), "load_s": round(time.perf_counter() - started, 2)},
        )
        return cls(model, path, executor, keep_warm=keep_warm)

    def new_recognizer(
        self,
        *,
        endpoint_silence_ms: int = DEFAULT_ENDPOINT_SILENCE_MS,
        max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS,
    ) -> VoskRecognizer:
        """A recogniser for one call; its Kaldi decoder, a warm one when an ended call left one,
        is taken in the executor on first use and given back when the recogniser closes."""
        if self._closed:
            raise RuntimeError("the Vosk model is closed")
        return VoskRecognizer(
            self,
            endpoint_silence_ms=endpoint_silence_ms,
            max_utterance_ms=max_utterance_ms,
        )

    async def warm_up(self, speech: Sequence[bytes], count: int | None = None) -> int:
        """Make up to ``count`` (default: as many as are kept) warm Kaldi recognisers ahead of
        the calls, each decoding ``speech`` (16 kHz PCM clips) once; returns how many it made.

        Runs in a thread of its own at a lower priority, one recogniser after another; stops
        early when the model closes, when calls have given back enough warm ones, or when
        cancelled (after the recogniser in progress).
        """
        if not speech:
            return 0
        for clip in speech:
            check_pcm16(clip)
        wanted = self.decoders.keep if count is None else count
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vosk-warm-up")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        made = 0
        try:
            await loop.run_in_executor(executor, lower_thread_priority)
            while made < wanted and not self._closed and self.decoders.room():
                kept = await loop.run_in_executor(executor, self._warm_one, speech)
                if not kept:
                    break
                made += 1
        finally:
            await asyncio.to_thread(executor.shutdown, wait=True)
            log.info(
                "Vosk recognisers warmed up",
                extra={
                    "model": str(self.path),
                    "warmed": made,
                    "seconds": round(time.perf_counter() - started, 1),
                },
            )
        return made

    def _warm_one(self, speech: Sequence[bytes]) -> bool:
        kaldi = self.decoders.make(self._model)
        for clip in speech:
            for start in range(0, len(clip), _WARM_UP_CHUNK_BYTES):
                if self._closed:
                    return False
                kaldi.AcceptWaveform(clip[start : start + _WARM_UP_CHUNK_BYTES])
            kaldi.FinalResult()
        return self.decoders.give_back(kaldi)

    async def close(self) -> None:
        """Stop the executor once the decodes already queued have finished."""
        self._closed = True
        # Queued decodes still run: cancelling them would raise CancelledError in callers that
        # were never cancelled.
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self.decoders.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    @property
    def kaldi_model(self) -> Any:
        return self._model


@dataclass(frozen=True, slots=True)
class DecoderCounts:
    created: int = 0  # Kaldi recognisers made (each starts with an empty graph cache)
    reused: int = 0  # calls given a warm one
    idle: int = 0  # kept now


class WarmDecoders:
    """The finalised Kaldi recognisers of ended calls, waiting for the next ones.

    Taken and given back from the executor's threads, hence the lock.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._created = 0
        self._reused = 0

    def take(self, model: Any) -> Any:
        """A warm recogniser if one is kept, else a new one."""
        with self._lock:
            if self._idle:
                self._reused += 1
                return self._idle.pop()
        return self.make(model)

    def make(self, model: Any) -> Any:
        """A new recogniser (an empty graph cache)."""
        with self._lock:
            self._created += 1
        try:
            return vosk.KaldiRecognizer(model, ASR_RATE_HZ)
        except Exception as exc:  # vosk raises a bare Exception when Kaldi fails
            raise EngineUnavailable(f"Vosk could not create a recognizer: {exc}") from exc

    def give_back(self, kaldi: Any) -> bool:
        """Finalise ``kaldi`` (its next use starts afresh) and keep it if there is room;
        returns whether it was kept."""
        kaldi.FinalResult()
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(kaldi)
                return True
        return False

    def room(self) -> bool:
        """Whether another warm recogniser would be kept."""
        with self._lock:
            return len(self._idle) < self.keep

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()

    def counts(self) -> DecoderCounts:
        with self._lock:
            return DecoderCounts(self._created, self._reused, len(self._idle))


def lower_thread_priority() -> None:
    """Lower the calling thread's priority (Linux: a thread id is a process id here)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _WARM_UP_NICENESS)


def _load_model(path: Path) -> Any:
    vosk.SetLogLevel(_VOSK_LOG_LEVEL)
    try:
        return vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception when Kaldi rejects the files
        raise ModelNotFound(f"Vosk could not load the model in {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What one decode step produced (built in the executor thread)."""

    final: str | None  # the finished utterance's words ("" if none), None while it goes on
    confidence: float | None
    partial: str


class VoskRecognizer(Recognizer):
    """One call's streaming recogniser on a shared ``VoskModel``."""

    def __init__(
        self,
        model: VoskModel,
        *,
        endpoint_silence_ms: int = DEFAULT_ENDPOINT_SILENCE_MS,
        max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS,
    ) -> None:
        self._model = model
        self._queue = DecodeQueue(model.executor)
        self._endpoint_silence_ms = endpoint_silence_ms
        self._max_utterance_ms = max_utterance_ms
        # Checks the durations on either path.
        config = EndpointConfig(
            trailing_silence_ms=endpoint_silence_ms, max_utterance_ms=max_utterance_ms
        )
        self._native_endpointer = hasattr(vosk.KaldiRecognizer, "SetEndpointerDelays")
        # Built on the first decode: creating a Kaldi decoder takes tens of milliseconds.
        self._kaldi: Any = None
        self._endpointer: Endpointer | None = None
        if not self._native_endpointer:
            self._endpointer = Endpointer(config, keep_audio=False)
        self._partial = ""
        self._speaking = False  # SpeechStarted sent for the current utterance
        self._generation = 0  # bumped by reset(): decodes begun before it are ignored
        self._reset_pending = False
        self._closed = False

    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        self._check_open()
        check_pcm16(pcm16k)
        force_final = False
        if self._endpointer is not None:
            force_final = any(
                isinstance(event, Utterance) for event in self._endpointer.feed(pcm16k)
            )
        generation, reset_first = self._take_reset()
        decoded = await self._queue.run(self._decode, pcm16k, force_final, reset_first)
        if generation != self._generation:
            return []
        return self._events(decoded)

    async def flush(self) -> AsrFinal | None:
        self._check_open()
        if self._endpointer is not None:
            self._endpointer.flush()
        generation, reset_first = self._take_reset()
        decoded = await self._queue.run(self._decode_final, reset_first)
        if generation != self._generation:
            return None
        finals = [event for event in self._events(decoded) if isinstance(event, AsrFinal)]
        return finals[0] if finals else None

    def reset(self) -> None:
        # The decoder may be busy in its thread: the next decode resets it first.
        self._generation += 1
        self._reset_pending = True
        self._partial = ""
        self._speaking = False
        if self._endpointer is not None:
            self._endpointer.reset()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._queue.drain()
        kaldi, self._kaldi = self._kaldi, None
        if kaldi is not None and not self._model.closed:
            with contextlib.suppress(RuntimeError):  # the model closed meanwhile: drop it
                await self._queue.run(self._model.decoders.give_back, kaldi)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the recognizer is closed")

    def _take_reset(self) -> tuple[int, bool]:
        reset_first, self._reset_pending = self._reset_pending, False
        return self._generation, reset_first

    def _events(self, decoded: _Decoded) -> list[AsrEvent]:
        events: list[AsrEvent] = []
        if decoded.final is not None:
            text = decoded.final.strip()
            if text:
                if not self._speaking:
                    events.append(SpeechStarted())
                events.append(AsrFinal(text, decoded.confidence))
            self._partial = ""
            self._speaking = False
            return events
        partial = decoded.partial.strip()
        if partial and partial != self._partial:
            if not self._speaking:
                events.append(SpeechStarted())
                self._speaking = True
            events.append(AsrPartial(partial))
        self._partial = partial
        return events

    # The methods below run in the executor thread, one at a time (DecodeQueue).

    def _decoder(self) -> Any:
        if self._kaldi is None:
            kaldi = self._model.decoders.take(self._model.kaldi_model)
            kaldi.SetWords(True)  # per-word confidences, averaged into AsrFinal.confidence
            if self._native_endpointer:
                kaldi.SetEndpointerDelays(
                    _ENDPOINTER_START_MAX_S,
                    self._endpoint_silence_ms / 1000,
                    self._max_utterance_ms / 1000,
                )
            self._kaldi = kaldi
        return self._kaldi

    def _decode(self, pcm: bytes, force_final: bool, reset_first: bool) -> _Decoded:
        kaldi = self._decoder()
        if reset_first:
            kaldi.Reset()
        try:
            ended = kaldi.AcceptWaveform(pcm)
        except Exception as exc:  # vosk raises a bare Exception when the decoder fails
            raise EngineUnavailable(f"Vosk failed to decode audio: {exc}") from exc
        if ended:
            return _final(kaldi.Result())
        if force_final:
            return _final(kaldi.FinalResult())
        partial = json.loads(kaldi.PartialResult()).get("partial", "")
        return _Decoded(final=None, confidence=None, partial=str(partial))

    def _decode_final(self, reset_first: bool) -> _Decoded:
        kaldi = self._decoder()
        if reset_first:
            kaldi.Reset()
        return _final(kaldi.FinalResult())


def _final(result_json: str) -> _Decoded:
    result = json.loads(result_json)
    words = result.get("result") or []
    confidences = [float(word["conf"]) for word in words if "conf" in word]
    confidence = None
    if confidences:  # the mean of the per-word posteriors
        confidence = min(1.0, max(0.0, math.fsum(confidences) / len(confidences)))
    return _Decoded(final=str(result.get("text", "")), confidence=confidence, partial="")

