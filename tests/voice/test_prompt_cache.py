"""The prompt cache in front of the real espeak-ng synthesizer, its calls counted by a wrapper."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Mapping

import pytest
import pytest_asyncio

from voice.errors import EngineUnavailable, ModelNotFound
from voice.tts.base import Prompt, Synthesizer
from voice.tts.cache import PromptCache
from voice.tts.pyttsx3 import DEFAULT_VOICES, Pyttsx3Synthesizer

WELCOME = "Benvenuto nel servizio clienti."
GOODBYE = "Grazie per aver chiamato. Arrivederci."


class CountingSynthesizer(Synthesizer):
    """Passes requests to a real synthesizer, counting them; can hold them or fail the next."""

    def __init__(self, inner: Synthesizer) -> None:
        self.inner = inner
        self.calls: Counter[tuple[str, str]] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False
        self.closed = False

    def voice(self, language: str) -> str:
        return self.inner.voice(language)

    async def synthesize(self, text: str, language: str) -> Prompt:
        self.calls[(text, language)] += 1
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise EngineUnavailable("injected failure")
        return await self.inner.synthesize(text, language)

    async def close(self) -> None:
        self.closed = True
        await self.inner.close()


def _espeak(voices: Mapping[str, str] = DEFAULT_VOICES) -> Pyttsx3Synthesizer:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")
    return Pyttsx3Synthesizer(voices)


@pytest_asyncio.fixture
async def counted() -> AsyncIterator[CountingSynthesizer]:
    counting = CountingSynthesizer(_espeak())
    yield counting
    await counting.inner.close()


@pytest_asyncio.fixture
async def cache(counted: CountingSynthesizer) -> AsyncIterator[PromptCache]:
    prompts = PromptCache(counted, max_entries=4)
    yield prompts
    await prompts.close()


async def test_second_request_is_served_from_cache(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    first = await cache.synthesize(WELCOME, "it")
    second = await cache.synthesize(WELCOME, "it")
    assert second is first
    assert counted.calls[(WELCOME, "it")] == 1
    assert first.duration_ms > 1000


async def test_concurrent_same_key_requests_synthesise_once(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    counted.gate.clear()  # hold the synthesis until every request is waiting for it
    requests = [asyncio.ensure_future(cache.synthesize(WELCOME, "it")) for _ in range(10)]
    await asyncio.sleep(0.01)
    counted.gate.set()
    prompts = await asyncio.gather(*requests)
    assert counted.calls[(WELCOME, "it")] == 1
    assert all(prompt is prompts[0] for prompt in prompts)


async def test_same_text_in_another_voice_is_another_prompt(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    italian = await cache.synthesize(WELCOME, "it")
    english = await cache.synthesize(WELCOME, "en")
    assert italian.pcm != english.pcm
    assert counted.calls == Counter({(WELCOME, "it"): 1, (WELCOME, "en"): 1})


async def test_languages_sharing_a_voice_share_prompts() -> None:
    counting = CountingSynthesizer(_espeak({"it": "roa/it", "it-CH": "roa/it"}))
    async with PromptCache(counting) as prompts:
        first = await prompts.synthesize(WELCOME, "it")
        assert await prompts.synthesize(WELCOME, "it-CH") is first
    assert sum(counting.calls.values()) == 1
    assert counting.closed


async def test_least_recently_used_prompt_is_evicted(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    texts = ["Uno.", "Due.", "Tre.", "Quattro."]
    for text in texts:
        await cache.synthesize(text, "it")
    await cache.synthesize("Uno.", "it")  # now "Due." is the least recently used
    await cache.synthesize("Cinque.", "it")
    assert len(cache) == cache.max_entries
    assert not cache.cached("Due.", "it")
    assert cache.cached("Uno.", "it")
    await cache.synthesize("Due.", "it")
    assert counted.calls[("Due.", "it")] == 2
    assert counted.calls[("Uno.", "it")] == 1


async def test_failed_synthesis_is_not_cached(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    counted.fail_next = True
    with pytest.raises(EngineUnavailable, match="injected"):
        await cache.synthesize(WELCOME, "it")
    assert not cache.cached(WELCOME, "it")
    prompt = await cache.synthesize(WELCOME, "it")
    assert prompt.duration_ms > 1000
    assert counted.calls[(WELCOME, "it")] == 2


async def test_cancelled_waiter_leaves_shared_synthesis_running(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    counted.gate.clear()
    leaving = asyncio.ensure_future(cache.synthesize(WELCOME, "it"))
    staying = asyncio.ensure_future(cache.synthesize(WELCOME, "it"))
    await asyncio.sleep(0.01)
    leaving.cancel()
    counted.gate.set()
    prompt = await staying
    assert leaving.cancelled()
    assert cache.cached(WELCOME, "it")
    assert await cache.synthesize(WELCOME, "it") is prompt
    assert counted.calls[(WELCOME, "it")] == 1


async def test_prerender_fills_cache_before_use(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    await cache.prerender([(WELCOME, "it"), (GOODBYE, "it"), (WELCOME, "en"), (WELCOME, "it")])
    assert sum(counted.calls.values()) == 3
    for text, language in [(WELCOME, "it"), (GOODBYE, "it"), (WELCOME, "en")]:
        assert cache.cached(text, language)
        await cache.synthesize(text, language)
    assert sum(counted.calls.values()) == 3


async def test_prerender_beyond_capacity_raises_value_error(cache: PromptCache) -> None:
    with pytest.raises(ValueError, match="exceed max_entries"):
        await cache.prerender([(f"Messaggio {n}.", "it") for n in range(5)])


async def test_prerender_of_unknown_language_raises_model_not_found(cache: PromptCache) -> None:
    with pytest.raises(ModelNotFound, match="'de'"):
        await cache.prerender([(WELCOME, "it"), ("Willkommen.", "de")])


async def test_close_closes_wrapped_synthesizer(counted: CountingSynthesizer) -> None:
    prompts = PromptCache(counted)
    await prompts.synthesize(WELCOME, "it")
    await prompts.close()
    assert counted.closed
    with pytest.raises(RuntimeError, match="closed"):
        await prompts.synthesize(WELCOME, "it")


def test_cache_needs_room_for_one_prompt(counted: CountingSynthesizer) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        PromptCache(counted, max_entries=0)
    with pytest.raises(ValueError, match="max_age_s"):
        PromptCache(counted, max_age_s=0.0)


BALANCE = "Il suo saldo è di 84,50 euro, da pagare entro il 15 marzo."
PRESS_ZERO = "Per parlare con un operatore prema 0."


async def test_a_sentence_with_numbers_is_synthesised_every_time_and_never_kept(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    first = await cache.synthesize(BALANCE, "it")
    second = await cache.synthesize(BALANCE, "it")
    assert first is not second and second.duration_ms > 2000
    assert counted.calls[(BALANCE, "it")] == 2
    assert not cache.cached(BALANCE, "it") and len(cache) == 0


async def test_static_prompts_are_kept_whatever_they_say_and_never_evicted(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    await cache.prerender([(PRESS_ZERO, "it"), (WELCOME, "it")])
    for text in ["Uno.", "Due.", "Tre.", "Quattro.", "Cinque."]:
        await cache.synthesize(text, "it")
    assert cache.cached(PRESS_ZERO, "it") and cache.cached(WELCOME, "it")
    assert len(cache) == cache.max_entries
    assert [cache.cached(text, "it") for text in ["Tre.", "Quattro.", "Cinque."]] == [
        False,
        True,
        True,
    ]
    await cache.synthesize(PRESS_ZERO, "it")
    assert counted.calls[(PRESS_ZERO, "it")] == 1


async def test_a_reply_is_kept_at_most_max_age_s(counted: CountingSynthesizer) -> None:
    now = [1000.0]
    async with PromptCache(counted, max_age_s=60.0, clock=lambda: now[0]) as prompts:
        await prompts.prerender([(GOODBYE, "it")])
        await prompts.synthesize(WELCOME, "it")
        now[0] += 59.0
        assert prompts.cached(WELCOME, "it")
        await prompts.synthesize(WELCOME, "it")  # a use does not make it younger
        now[0] += 1.0
        assert not prompts.cached(WELCOME, "it") and len(prompts) == 1
        assert prompts.cached(GOODBYE, "it")
        await prompts.synthesize(WELCOME, "it")
    assert counted.calls[(WELCOME, "it")] == 2
    assert counted.calls[(GOODBYE, "it")] == 1


async def test_what_is_kept_follows_the_keep_rule(counted: CountingSynthesizer) -> None:
    async with PromptCache(counted, keep=lambda text: "Mario" not in text) as prompts:
        await prompts.synthesize("Buongiorno Mario.", "it")
        await prompts.synthesize(BALANCE, "it")
        assert not prompts.cached("Buongiorno Mario.", "it")
        assert prompts.cached(BALANCE, "it")


async def test_a_reply_prerendered_later_becomes_static(
    cache: PromptCache, counted: CountingSynthesizer
) -> None:
    now_cached = await cache.synthesize(WELCOME, "it")
    await cache.prerender([(WELCOME, "it")])
    for text in ["Uno.", "Due.", "Tre.", "Quattro.", "Cinque."]:
        await cache.synthesize(text, "it")
    assert await cache.synthesize(WELCOME, "it") is now_cached
    assert counted.calls[(WELCOME, "it")] == 1
