"""The speech engines of the phone line, opened once at start-up and shared by every call.

Per language, the recogniser comes from the installed models (``triage models list``): the
configured engine's model first (Vosk by default), then the other engine's; a language with no
model gets keys only, and start-up says how to install one. One synthesiser (espeak-ng through
pyttsx3) behind a prompt cache, with the static prompts rendered before the first call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.channels.phone.brain import TEXTS, PhoneBrain
from bot.config.phone_lines import LANGUAGES, PhoneLines
from voice.asr.base import ASR_RATE_HZ, Recognizer
from voice.asr.endpoint import EndpointConfig
from voice.asr.gate import VoiceGate
from voice.asr.models import model_path
from voice.asr.silent import NoSpeechRecognizer
from voice.asr.vosk import DEFAULT_KEEP_WARM, VoskModel
from voice.asr.whisper import WhisperEngine
from voice.audio import resample
from voice.call.settings import CallEngines, CallSettings
from voice.tts.cache import PromptCache
from voice.tts.pyttsx3 import Pyttsx3Synthesizer

log = logging.getLogger(__name__)

ENGINES = ("vosk", "whisper")
GATE_MARGIN_MS = 400


@dataclass(frozen=True)
class RecognizerChoice:
    language: str
    engine: str | None  # None: no model, keys only
    model: Path | None


def choose_recognizers(models_dir: Path, preferred: str) -> list[RecognizerChoice]:
    order = [preferred, *(e for e in ENGINES if e != preferred)]
    choices = []
    for language in LANGUAGES:
        found = next(
            ((e, p) for e in order if (p := model_path(models_dir, e, language)) is not None),
            None,
        )
        choices.append(
            RecognizerChoice(language, found[0], found[1])
            if found
            else RecognizerChoice(language, None, None)
        )
    return choices


def static_prompts(lines: PhoneLines) -> list[tuple[str, str]]:
    prompts = [(lines.welcome[lang], lang) for lang in LANGUAGES]
    for key in ("no_input", "transfer_failed", "recent_chat"):
        prompts += [(TEXTS[key][lang], lang) for lang in LANGUAGES]
    return prompts


@asynccontextmanager
async def open_call_engines(
    brain: PhoneBrain,
    lines: PhoneLines,
    *,
    models_dir: Path,
    preferred_engine: str = "vosk",
    endpoint_silence_ms: int = 600,
    vosk_keep_warm: int = DEFAULT_KEEP_WARM,
) -> AsyncIterator[CallEngines]:
    async with AsyncExitStack() as stack:
        synthesizer = PromptCache(Pyttsx3Synthesizer())
        stack.push_async_callback(synthesizer.close)
        factories: dict[str, Callable[[], Recognizer]] = {}
        loaded: dict[Path, VoskModel | WhisperEngine] = {}
        languages_of: dict[Path, list[str]] = {}
        for choice in choose_recognizers(models_dir, preferred_engine):
            if choice.model is None:
                log.warning(
                    "no speech model for a language: its callers can use keys only; "
                    "install one with `triage models download`",
                    extra={"language": choice.language},
                )
                factories[choice.language] = NoSpeechRecognizer
                continue
            engine = loaded.get(choice.model)
            if engine is None:
                engine = (
                    await VoskModel.load(choice.model, keep_warm=vosk_keep_warm)
                    if choice.engine == "vosk"
                    else await WhisperEngine.load(choice.model)
                )
                stack.push_async_callback(engine.close)
                loaded[choice.model] = engine
            languages_of.setdefault(choice.model, []).append(choice.language)
            factories[choice.language] = recognizer_factory(
                engine, choice.language, endpoint_silence_ms
            )
        prompts = static_prompts(lines)
        await synthesizer.prerender(prompts)
        for path, engine in loaded.items():
            if isinstance(engine, VoskModel) and engine.decoders.keep:
                warming = asyncio.create_task(
                    warm_up_vosk(engine, synthesizer, prompts, languages_of[path]),
                    name="vosk-warm-up",
                )
                warming.add_done_callback(_log_failure)
                stack.push_async_callback(_stop, warming)  # before the model closes
        timings = lines.timings
        yield CallEngines(
            brain=brain,
            synthesizer=synthesizer,
            recognizer_for=lambda language: factories.get(language, NoSpeechRecognizer)(),
            settings=CallSettings(
                no_input_timeout_s=timings.no_input_timeout_s,
                barge_in_min_speech_ms=timings.barge_in_min_speech_ms,
                inter_digit_timeout_s=timings.inter_digit_timeout_s,
            ),
        )


async def warm_up_vosk(
    model: VoskModel,
    synthesizer: PromptCache,
    prompts: list[tuple[str, str]],
    languages: list[str],
) -> int:
    """Warm the model's kept recognisers on the line's static prompts in its languages (the
    speech the service has of its own: no caller's audio); returns how many were warmed."""
    speech = []
    for text, language in prompts:
        if language in languages:
            prompt = await synthesizer.synthesize(text, language)  # static: rendered already
            speech.append(resample(prompt.pcm, prompt.sample_rate_hz, ASR_RATE_HZ))
    return await model.warm_up(speech)


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and (failure := task.exception()) is not None:
        log.error("recogniser warm-up failed", exc_info=failure)


async def _stop(task: asyncio.Task[int]) -> None:
    """Cancel a background task and wait for it (its failure was logged when it ended)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def recognizer_factory(
    engine: VoskModel | WhisperEngine, language: str, endpoint_silence_ms: int
) -> Callable[[], Recognizer]:
    """How the line makes a call's recogniser on ``engine`` (the voice benchmarks use it too)."""
    if isinstance(engine, VoskModel):
        # decode only around voice activity; the gate outwaits the recogniser's endpointing
        hangover = endpoint_silence_ms + GATE_MARGIN_MS
        return lambda: VoiceGate(
            engine.new_recognizer(endpoint_silence_ms=endpoint_silence_ms), hangover_ms=hangover
        )
    endpoint = EndpointConfig(trailing_silence_ms=endpoint_silence_ms)
    return lambda: engine.new_recognizer(language, endpoint=endpoint)
