"""Speech synthesis with the real espeak-ng through pyttsx3, and the FakeSynthesizer's contract."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from tests.voice.loop_ticks import loop_gaps
from voice.audio import rms_dbfs
from voice.errors import EngineUnavailable, ModelNotFound
from voice.tts.base import PROMPT_RATE_HZ, Prompt, Synthesizer
from voice.tts.fake import MS_PER_CHARACTER, FakeSynthesizer
from voice.tts.pyttsx3 import Pyttsx3Synthesizer

SENTENCES = {
    "it": "Buongiorno, sono l'assistente virtuale. Come posso aiutarla?",
    "en": "Good morning, I am the virtual assistant. How can I help you?",
}
# espeak-ng at 160 words per minute: about 0.3-0.5 s a word, pauses included.
MIN_MS_PER_WORD = 150
MAX_MS_PER_WORD = 700
AUDIBLE_DBFS = -35.0
TICK_S = 0.010
MAX_TICK_GAP_S = 0.05
COUNT = "uno due tre quattro cinque sei sette otto nove dieci undici dodici".split()


def _espeak_or_skip() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")


@pytest_asyncio.fixture
async def espeak() -> AsyncIterator[Pyttsx3Synthesizer]:
    _espeak_or_skip()
    synthesizer = Pyttsx3Synthesizer()
    try:
        await synthesizer.wait_ready()
        yield synthesizer
    finally:
        await synthesizer.close()


@pytest.mark.parametrize("language", ["it", "en"])
async def test_sentence_gives_audible_telephone_audio(
    espeak: Pyttsx3Synthesizer, language: str
) -> None:
    text = SENTENCES[language]
    prompt = await espeak.synthesize(text, language)
    assert prompt.sample_rate_hz == PROMPT_RATE_HZ
    words = len(text.split())
    assert words * MIN_MS_PER_WORD <= prompt.duration_ms <= words * MAX_MS_PER_WORD
    assert rms_dbfs(prompt.pcm) > AUDIBLE_DBFS


async def test_languages_use_their_own_voices(espeak: Pyttsx3Synthesizer) -> None:
    italian = await espeak.synthesize("Buongiorno", "it")
    english = await espeak.synthesize("Buongiorno", "en")
    assert espeak.voice("it") != espeak.voice("en")
    assert italian.pcm != english.pcm


async def test_concurrent_requests_are_served_by_one_thread(espeak: Pyttsx3Synthesizer) -> None:
    texts = [" ".join(COUNT[:n]) for n in range(1, len(COUNT) + 1)]
    together = await asyncio.gather(*(espeak.synthesize(text, "it") for text in texts))
    one_by_one = [await espeak.synthesize(text, "it") for text in texts]
    assert [thread.name for thread in threading.enumerate()].count("pyttsx3") == 1
    # espeak-ng's output varies by a few samples from run to run; counting to n takes longer
    # for every n, so each result must be its own text's audio.
    durations = [prompt.duration_ms for prompt in together]
    assert durations == sorted(durations)
    assert len(set(durations)) == len(durations)
    for concurrent, sequential in zip(together, one_by_one, strict=True):
        assert concurrent.duration_ms == pytest.approx(sequential.duration_ms, rel=0.05)


async def test_event_loop_keeps_running_while_synthesising(espeak: Pyttsx3Synthesizer) -> None:
    async with loop_gaps(TICK_S) as gaps:
        started = time.perf_counter()
        await asyncio.gather(*(espeak.synthesize(SENTENCES["it"] * 3, "it") for _ in range(4)))
        synthesis_s = time.perf_counter() - started
    assert synthesis_s > 2 * MAX_TICK_GAP_S, f"too quick ({synthesis_s:.2f} s) to show anything"
    assert max(gaps) < MAX_TICK_GAP_S, f"the loop stalled {max(gaps) * 1000:.0f} ms"


async def test_close_fails_queued_requests_with_runtime_error() -> None:
    _espeak_or_skip()
    synthesizer = Pyttsx3Synthesizer()
    await synthesizer.wait_ready()
    requests = [
        asyncio.ensure_future(synthesizer.synthesize(f"{SENTENCES['it']} {n}", "it"))
        for n in range(20)
    ]
    await asyncio.sleep(0)  # let every request reach the queue
    await synthesizer.close()
    results = await asyncio.gather(*requests, return_exceptions=True)
    assert all(isinstance(result, Prompt | RuntimeError) for result in results), results
    assert any(isinstance(result, RuntimeError) for result in results)


async def test_missing_voice_raises_model_not_found() -> None:
    _espeak_or_skip()
    synthesizer = Pyttsx3Synthesizer({"it": "roa/it", "xx": "nope/xx"})
    try:
        with pytest.raises(ModelNotFound, match="nope/xx"):
            await synthesizer.wait_ready()
        with pytest.raises(ModelNotFound, match="nope/xx"):
            await synthesizer.synthesize("ciao", "it")
    finally:
        await synthesizer.close()


async def test_second_open_synthesizer_is_refused(espeak: Pyttsx3Synthesizer) -> None:
    with pytest.raises(EngineUnavailable, match="one per process"):
        Pyttsx3Synthesizer()


async def test_synthesizer_works_again_after_close() -> None:
    _espeak_or_skip()
    for _ in range(2):
        async with Pyttsx3Synthesizer() as synthesizer:
            prompt = await synthesizer.synthesize(SENTENCES["en"], "en")
            assert rms_dbfs(prompt.pcm) > AUDIBLE_DBFS


# The contract, on the real engine and on the fake.


@pytest.fixture(params=["espeak", "fake"])
def make_synthesizer(request: pytest.FixtureRequest) -> Callable[[], Synthesizer]:
    if request.param == "espeak":
        _espeak_or_skip()
        return Pyttsx3Synthesizer
    return FakeSynthesizer


@pytest.mark.parametrize("text", ["", "   ", "...!?"])
async def test_text_without_words_raises_value_error(
    make_synthesizer: Callable[[], Synthesizer], text: str
) -> None:
    async with make_synthesizer() as synthesizer:
        with pytest.raises(ValueError, match="nothing to say"):
            await synthesizer.synthesize(text, "it")


async def test_unknown_language_raises_model_not_found(
    make_synthesizer: Callable[[], Synthesizer],
) -> None:
    async with make_synthesizer() as synthesizer:
        with pytest.raises(ModelNotFound, match="'de'"):
            await synthesizer.synthesize("Guten Tag", "de")


async def test_longer_text_gives_longer_prompt(make_synthesizer: Callable[[], Synthesizer]) -> None:
    async with make_synthesizer() as synthesizer:
        short = await synthesizer.synthesize("Buongiorno", "it")
        long = await synthesizer.synthesize(SENTENCES["it"], "it")
    assert short.sample_rate_hz == long.sample_rate_hz == PROMPT_RATE_HZ
    assert long.duration_ms > 2 * short.duration_ms
    assert rms_dbfs(long.pcm) > AUDIBLE_DBFS


async def test_calls_after_close_raise_runtime_error(
    make_synthesizer: Callable[[], Synthesizer],
) -> None:
    synthesizer = make_synthesizer()
    await synthesizer.synthesize("ciao", "it")
    await synthesizer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await synthesizer.synthesize("ciao", "it")


async def test_fake_prompt_length_is_proportional_to_text() -> None:
    fake = FakeSynthesizer()
    prompt = await fake.synthesize("ciao a tutti", "it")
    again = await fake.synthesize("ciao a tutti", "it")
    assert prompt.duration_ms == len("ciao a tutti") * MS_PER_CHARACTER
    assert prompt == again
    assert fake.requests == [("ciao a tutti", "it")] * 2


def test_prompt_rejects_odd_length_pcm() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        Prompt(b"\x00\x01\x02")
