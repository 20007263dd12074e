"""Speech synthesis with pyttsx3 driving espeak-ng (Debian ``espeak-ng``).

pyttsx3's engine is not thread-safe and ``runAndWait`` breaks when re-entered, so one dedicated
worker thread owns the engine while the synthesizer is open and takes jobs from a queue; each
job renders to a WAV file in the thread's temporary directory, reads it back and resamples it
to 8 kHz. ``concurrent.futures.Future`` objects carry the results back to the event loop.

espeak-ng's state (voice, rate, the synthesis callback) is per process, so only one
``Pyttsx3Synthesizer`` may be open at a time (a second raises ``EngineUnavailable``): share it,
behind a ``PromptCache``. A short sentence takes 10-100 ms. pyttsx3 prints "Audio saved to
<file>" on stdout for every prompt.

Two quirks of pyttsx3's espeak driver (2.99) shape the worker. espeak-ng synthesises in a thread
of its own, and ``runAndWait`` returns as soon as the text is queued there, so each job waits
for the driver's "finished-utterance" notice. And ``runAndWait`` first calls ``stop()``, which
cancels whatever espeak-ng is still busy with (the tail of the last prompt, a parameter change)
and the new prompt with it, so each job first waits for espeak-ng to be idle.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import tempfile
import threading
import time
import wave
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import pyttsx3  # type: ignore[import-untyped]

from voice.audio import resample
from voice.errors import EngineUnavailable, ModelNotFound, VoiceError
from voice.tts.base import PROMPT_RATE_HZ, SAMPLE_WIDTH_BYTES, Prompt, Synthesizer, check_speakable

log = logging.getLogger(__name__)

# Language -> espeak-ng voice identifier (the "File" column of `espeak-ng --voices`).
DEFAULT_VOICES: Final[Mapping[str, str]] = MappingProxyType({"it": "roa/it", "en": "gmw/en-us"})
# Slower than espeak's 175 words per minute: telephone audio loses the consonants first.
DEFAULT_RATE_WPM: Final = 160
_DRIVER: Final = "espeak"
# A prompt takes well under a second; an engine this late is stuck and the worker stops.
_SYNTHESIS_TIMEOUT_S: Final = 30.0
_IDLE_POLL_S: Final = 0.001


class _EngineEvents:
    """What pyttsx3 reports from espeak-ng's thread: errors, and the end of each utterance."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.finished = threading.Event()
        self.completed = False

    def clear(self) -> None:
        self.errors.clear()
        self.finished.clear()
        self.completed = False

    def on_error(self, name: object, exception: Exception) -> None:
        self.errors.append(exception)

    def on_finished(self, name: object, completed: bool) -> None:
        self.completed = completed
        self.finished.set()


@dataclass(frozen=True, slots=True)
class _Engine:
    engine: Any  # pyttsx3.Engine
    espeak: Any  # pyttsx3.drivers._espeak: the driver's ctypes binding of libespeak-ng
    events: _EngineEvents


class _EngineSlot:
    """The process's pyttsx3 engine, lent to the worker of the open synthesizer.

    Made once and never freed: deleting a pyttsx3 espeak engine clears espeak-ng's process-wide
    synthesis callback, whichever engine has set it since. A broken one is kept, unused.
    """

    def __init__(self) -> None:
        self.owner = threading.Lock()  # held by the open synthesizer's worker thread
        self._engine: _Engine | None = None
        self._retired: list[_Engine] = []

    def get(self) -> _Engine:
        if self._engine is None:
            try:
                # Not pyttsx3.init(): it hands its cached engine to any caller in the process.
                engine = pyttsx3.Engine(_DRIVER)
                from pyttsx3.drivers import _espeak  # type: ignore[import-untyped]
                from pyttsx3.drivers import espeak as espeak_driver
            except (ImportError, RuntimeError, OSError) as exc:
                raise EngineUnavailable(
                    f"espeak-ng could not be started ({exc}); "
                    "install it: apt-get install espeak-ng"
                ) from exc
            # The driver prints "Audio saved to <file>" for every prompt, on the service's stdout:
            # a module-level name shadows the builtin for that module only.
            espeak_driver.print = _quiet
            events = _EngineEvents()
            # pyttsx3 runs its commands inside runAndWait and reports failures only here.
            engine.connect("error", events.on_error)
            engine.connect("finished-utterance", events.on_finished)
            self._engine = _Engine(engine, _espeak, events)
        return self._engine

    def retire(self) -> None:
        if self._engine is not None:
            self._retired.append(self._engine)
            self._engine = None


_slot = _EngineSlot()


@dataclass(slots=True)
class _Job:
    text: str
    voice: str
    result: Future[Prompt] = field(default_factory=Future)


class Pyttsx3Synthesizer(Synthesizer):
    """espeak-ng voices through pyttsx3, driven by one worker thread."""

    def __init__(
        self, voices: Mapping[str, str] = DEFAULT_VOICES, *, rate_wpm: int = DEFAULT_RATE_WPM
    ) -> None:
        """Start the worker thread; ``wait_ready`` tells whether espeak-ng and the voices are there.

        ``voices`` maps a language code to an espeak-ng voice identifier.
        """
        if not voices:
            raise ValueError("at least one language needs a voice")
        if rate_wpm <= 0:
            raise ValueError(f"rate_wpm must be positive, got {rate_wpm}")
        if not _slot.owner.acquire(blocking=False):
            raise EngineUnavailable(
                "another Pyttsx3Synthesizer is open: espeak-ng allows one per process"
            )
        self._voices = dict(voices)
        self._rate_wpm = rate_wpm
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._ready: Future[None] = Future()
        self._stopped: Future[None] = Future()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pyttsx3", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            _slot.owner.release()
            raise

    def voice(self, language: str) -> str:
        try:
            return self._voices[language]
        except KeyError:
            raise ModelNotFound(
                f"no voice configured for language {language!r} "
                f"(configured: {', '.join(sorted(self._voices))})"
            ) from None

    async def wait_ready(self) -> None:
        """Wait for the engine to start; raises what stopped it (``EngineUnavailable``,
        ``ModelNotFound``). Call it at start-up to fail early."""
        await asyncio.wrap_future(self._ready)

    async def synthesize(self, text: str, language: str) -> Prompt:
        if self._closed:
            raise RuntimeError("the synthesizer is closed")
        check_speakable(text)
        job = _Job(text, self.voice(language))
        await self.wait_ready()
        if self._closed:  # while it waited
            raise RuntimeError("the synthesizer is closed")
        if self._stopped.done():
            raise _worker_stopped()
        self._jobs.put(job)
        if self._stopped.done():  # it stopped after the check above: it will never see the job
            _fail_queued(self._jobs, _worker_stopped())
        return await asyncio.wrap_future(job.result)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _fail_queued(self._jobs, RuntimeError("the synthesizer was closed"))
        self._jobs.put(None)
        await asyncio.wrap_future(self._stopped)

    # Everything below runs in the worker thread.

    def _run(self) -> None:
        try:
            self._work()
        finally:
            _slot.owner.release()
            self._stopped.set_result(None)
            _fail_queued(self._jobs, _worker_stopped())

    def _work(self) -> None:
        try:
            engine = self._open()
        except VoiceError as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        with tempfile.TemporaryDirectory(prefix="pyttsx3-") as work_dir:
            self._serve(engine, Path(work_dir) / "prompt.wav")

    def _open(self) -> _Engine:
        engine = _slot.get()
        installed = {voice.id for voice in engine.engine.getProperty("voices")}
        missing = {lang: voice for lang, voice in self._voices.items() if voice not in installed}
        if missing:
            raise ModelNotFound(
                "espeak-ng has no voice "
                + ", ".join(f"{voice!r} (for {lang!r})" for lang, voice in sorted(missing.items()))
                + "; `espeak-ng --voices` lists the installed ones (package espeak-ng-data)"
            )
        # Set directly: pyttsx3's setProperty would queue it into the next runAndWait, whose
        # stop() can cancel it before espeak-ng applies it.
        engine.espeak.SetParameter(engine.espeak.RATE, self._rate_wpm, 0)
        return engine

    def _serve(self, engine: _Engine, wav_path: Path) -> None:
        while (job := self._jobs.get()) is not None:
            if not job.result.set_running_or_notify_cancel():
                continue  # its caller gave up while it was queued
            try:
                job.result.set_result(_render(engine, job, wav_path))
            except VoiceError as exc:
                job.result.set_exception(exc)
            except Exception as exc:  # anything else leaves pyttsx3 mid-loop, unusable
                log.exception("espeak-ng worker stopped")
                _slot.retire()
                job.result.set_exception(
                    EngineUnavailable(f"espeak-ng failed ({exc!r}); recreate the synthesizer")
                )
                return


def _render(engine: _Engine, job: _Job, wav_path: Path) -> Prompt:
    events = engine.events
    events.clear()
    engine.engine.setProperty("voice", job.voice)
    engine.engine.save_to_file(job.text, str(wav_path))
    _wait_idle(engine.espeak)
    engine.engine.runAndWait()
    if not events.finished.wait(_SYNTHESIS_TIMEOUT_S):
        raise TimeoutError(f"espeak-ng did not finish within {_SYNTHESIS_TIMEOUT_S} s")
    if events.errors:
        error = events.errors[0]
        raise EngineUnavailable(f"espeak-ng could not synthesise: {error}") from error
    if not events.completed:
        raise EngineUnavailable("espeak-ng stopped before the end of the prompt")
    try:
        with wave.open(str(wav_path), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_WIDTH_BYTES:
                raise EngineUnavailable(
                    f"espeak-ng wrote {wav.getnchannels()} channels of "
                    f"{wav.getsampwidth()}-byte samples, expected mono 16-bit"
                )
            rate_hz = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise EngineUnavailable(f"espeak-ng wrote no readable audio: {exc}") from exc
    finally:
        wav_path.unlink(missing_ok=True)
    if not frames:
        raise EngineUnavailable("espeak-ng produced no audio")
    return Prompt(resample(frames, rate_hz, PROMPT_RATE_HZ), PROMPT_RATE_HZ)


def _wait_idle(espeak: Any) -> None:
    """Wait until espeak-ng's own thread has nothing left to do (the driver offers no signal)."""
    deadline = time.monotonic() + _SYNTHESIS_TIMEOUT_S
    while espeak.IsPlaying():
        if time.monotonic() > deadline:
            raise TimeoutError(f"espeak-ng stayed busy for {_SYNTHESIS_TIMEOUT_S} s")
        time.sleep(_IDLE_POLL_S)


def _quiet(*_args: object, **_kwargs: object) -> None:
    """Stands in for ``print`` inside pyttsx3's espeak driver."""


def _worker_stopped() -> EngineUnavailable:
    return EngineUnavailable("the espeak-ng worker has stopped; recreate the synthesizer")


def _fail_queued(jobs: queue.SimpleQueue[_Job | None], error: Exception) -> None:
    """Fail every job still queued (their callers are waiting), leaving the stop sentinel out."""
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return
        if job is not None and job.result.set_running_or_notify_cancel():
            job.result.set_exception(error)
