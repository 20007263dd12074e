"""The streaming recogniser: Vosk (Kaldi) small models.

One ``VoskModel`` per language, loaded once and shared by every call; it owns the executor that
all of its recognisers decode in (one thread per core: ``AcceptWaveform`` is CPU-bound and holds
no Python lock while it runs). One ``VoskRecognizer`` per call.

Finals come from Vosk's own endpointing. Builds that have ``SetEndpointerDelays`` (vosk newer
than 0.3.45) are told the configured trailing silence; older ones, such as 0.3.45, keep the
model's rules (``conf/model.conf``: 0.5-2.0 s of trailing silence), so an energy ``Endpointer``
forces the final with ``FinalResult`` after ``endpoint_silence_ms`` of quiet or at
``max_utterance_ms``. With those builds a silence longer than the model's rules cannot delay a
final, only a shorter one can hasten it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
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
# Vosk's "no speech yet" timeout; a call has its own no-input timer, so keep it out of the way.
_ENDPOINTER_START_MAX_S: Final = 30.0
# Kaldi logs every model file it reads at level 0; -1 keeps warnings and errors.
_VOSK_LOG_LEVEL: Final = -1


class VoskModel:
    """A loaded Vosk model and the executor its recognisers decode in."""

    def __init__(self, model: Any, path: Path, executor: ThreadPoolExecutor) -> None:
        """Use ``await VoskModel.load(path)``; this wraps an already loaded model."""
        self.path = path
        self._model = model
        self._executor = executor
        self._closed = False

    @classmethod
    async def load(cls, path: Path, *, workers: int | None = None) -> VoskModel:
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
        return cls(model, path, executor)

    def new_recognizer(
        self,
        *,
        endpoint_silence_ms: int = DEFAULT_ENDPOINT_SILENCE_MS,
        max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS,
    ) -> VoskRecognizer:
        """A recogniser for one call; its Kaldi decoder is made in the executor on first use."""
        if self._closed:
            raise RuntimeError("the Vosk model is closed")
        return VoskRecognizer(
            self,
            endpoint_silence_ms=endpoint_silence_ms,
            max_utterance_ms=max_utterance_ms,
        )

    async def close(self) -> None:
        """Stop the executor once the decodes already queued have finished."""
        self._closed = True
        # Queued decodes still run: cancelling them would raise CancelledError in callers that
        # were never cancelled.
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    @property
    def kaldi_model(self) -> Any:
        return self._model


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
        self._kaldi = None

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
            try:
                kaldi = vosk.KaldiRecognizer(self._model.kaldi_model, ASR_RATE_HZ)
            except Exception as exc:  # vosk raises a bare Exception when Kaldi fails
                raise EngineUnavailable(f"Vosk could not create a recognizer: {exc}") from exc
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

