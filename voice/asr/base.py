"""The speech-recogniser interface: what a call's audio loop feeds and the events it gets back.

Audio in is 16-bit signed little-endian mono PCM at ``ASR_RATE_HZ`` (the telephone's 8 kHz
upsampled), fed in chunks of ``MIN_CHUNK_MS`` or more. Events out:

- ``SpeechStarted``: the caller began to speak (barge-in stops the prompt on it); it comes before
  the partials and the final of every utterance;
- ``AsrPartial``: the words so far, only when they changed (streaming engines only);
- ``AsrFinal``: the utterance's words, never empty.

Silence and noise give no events. One ``Recognizer`` per call; the model behind it is shared.
The decoding itself is CPU-bound and runs in the model's executor, never on the event loop:
``DecodeQueue`` keeps one recogniser's decodes in order and one at a time.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar, TypeVarTuple

ASR_RATE_HZ: Final = 16000
SAMPLE_WIDTH_BYTES: Final = 2
BYTES_PER_MS: Final = ASR_RATE_HZ * SAMPLE_WIDTH_BYTES // 1000  # 32
MIN_CHUNK_MS: Final = 20

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking."""


@dataclass(frozen=True, slots=True)
class AsrPartial:
    """The words of the current utterance so far (they may still change)."""

    text: str


@dataclass(frozen=True, slots=True)
class AsrFinal:
    """The words of a finished utterance; ``confidence`` in [0, 1] when the engine gives one."""

    text: str
    confidence: float | None = None

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("an AsrFinal must have words; an empty utterance is no event")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")


AsrEvent = SpeechStarted | AsrPartial | AsrFinal


def check_pcm16(pcm: bytes) -> None:
    """Raise ``ValueError`` unless ``pcm`` is whole 16-bit samples."""
    if len(pcm) % SAMPLE_WIDTH_BYTES:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")


def default_decode_workers() -> int:
    """The number of cores this process may run on: the size of a model's decode executor."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Recognizer(ABC):
    """One call's speech recogniser.

    Calls on one recogniser must not overlap from several tasks except ``reset``: the call loop
    owns it. Cancelling a ``feed`` drops that chunk's events (the decode itself runs to its end).
    """

    @abstractmethod
    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        """Decode the next chunk of audio; returns the events it completes, in order.

        Raises ``ValueError`` for a chunk that is not whole 16-bit samples.
        """

    @abstractmethod
    async def flush(self) -> AsrFinal | None:
        """End of input: the final of what was said since the last final, if anything was."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the current utterance (its audio and any decode still running for it)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the decoder; later calls raise ``RuntimeError``."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class DecodeQueue:
    """Runs one recogniser's blocking calls in a shared executor, one at a time and in order.

    A decoder is not re-entrant, and its calls must follow the audio's order. The lock is
    released when the executor's job ends, not when the awaiting task does: a cancelled caller
    must not let the next call start while the decoder is still busy in its thread.
    """

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = asyncio.Lock()  # asyncio.Lock wakes its waiters first come, first served

    async def run(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """Run ``fn(*args)`` in the executor after every call queued before it has finished."""
        await self._lock.acquire()
        try:
            job = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except BaseException:
            self._lock.release()
            raise
        job.add_done_callback(self._finished)
        return await asyncio.shield(job)

    async def drain(self) -> None:
        """Wait until every queued call has finished."""
        async with self._lock:
            pass

    def _finished(self, job: asyncio.Future[Any]) -> None:
        self._lock.release()
        if not job.cancelled():
            # Marks the exception as retrieved when the caller was cancelled and never will.
            job.exception()
