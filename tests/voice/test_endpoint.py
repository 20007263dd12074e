"""The energy endpointer: onsets, trailing silence, maximum length, pre-roll, chunking."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.asr.base import ASR_RATE_HZ, BYTES_PER_MS
from voice.asr.endpoint import (
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    EndpointState,
    Onset,
    Pause,
    Utterance,
    UtteranceEnd,
)
from voice.audio import rms_dbfs

CONFIG = EndpointConfig(
    threshold_dbfs=-40.0,
    speech_start_ms=60,
    trailing_silence_ms=300,
    max_utterance_ms=2000,
    pre_roll_ms=100,
)
FRAME_MS = CONFIG.frame_ms


def tone(duration_ms: int, dbfs: float = -20.0, hz: float = 300.0) -> bytes:
    """A sine at ``dbfs`` RMS (a vowel stands in for speech: the endpointer only sees energy)."""
    t = np.arange(duration_ms * ASR_RATE_HZ // 1000) / ASR_RATE_HZ
    amplitude = 32768.0 * 10 ** (dbfs / 20) * float(np.sqrt(2))
    return bytes(np.rint(amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())


def noise(duration_ms: int, dbfs: float, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    sigma = 32768.0 * 10 ** (dbfs / 20)
    samples = rng.normal(0.0, sigma, duration_ms * ASR_RATE_HZ // 1000)
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def silence(duration_ms: int) -> bytes:
    return bytes(duration_ms * BYTES_PER_MS)


def feed_in_chunks(endpointer: Endpointer, pcm: bytes, chunk_ms: int = 20) -> list[EndpointEvent]:
    step = chunk_ms * BYTES_PER_MS
    events: list[EndpointEvent] = []
    for start in range(0, len(pcm), step):
        events += endpointer.feed(pcm[start : start + step])
    return events


def test_test_signals_have_the_levels_they_claim() -> None:
    assert rms_dbfs(tone(200, -20.0)) == pytest.approx(-20.0, abs=0.2)
    assert rms_dbfs(noise(200, -60.0)) == pytest.approx(-60.0, abs=0.5)


def test_onset_reported_after_speech_start_ms_of_loud_audio() -> None:
    endpointer = Endpointer(CONFIG)
    assert endpointer.feed(silence(200) + tone(40)) == []
    before = endpointer.state
    assert endpointer.feed(tone(20)) == [Onset()]
    assert (before, endpointer.state) == (EndpointState.SILENCE, EndpointState.SPEECH)


@pytest.mark.parametrize(
    "audio",
    [silence(3000), noise(3000, -60.0), noise(3000, -45.0)],
    ids=["zeros", "noise-60dBFS", "noise-45dBFS"],
)
def test_silence_and_low_noise_give_no_events(audio: bytes) -> None:
    endpointer = Endpointer(CONFIG)
    assert feed_in_chunks(endpointer, audio) == []
    assert endpointer.flush() is None


def test_clicks_shorter_than_speech_start_are_not_speech() -> None:
    endpointer = Endpointer(CONFIG)
    clicks = (tone(40) + silence(100)) * 10
    assert feed_in_chunks(endpointer, clicks) == []


def test_utterance_ends_after_trailing_silence() -> None:
    endpointer = Endpointer(CONFIG)
    events = feed_in_chunks(endpointer, silence(500) + tone(600) + silence(280))
    assert events == [Onset()]
    events = endpointer.feed(silence(20))
    assert len(events) == 1
    assert isinstance(events[0], Utterance)
    assert events[0].ended_by is UtteranceEnd.SILENCE
    assert endpointer.state is EndpointState.SILENCE


def test_utterance_audio_starts_pre_roll_before_speech() -> None:
    endpointer = Endpointer(CONFIG)
    speech = tone(600)
    events = feed_in_chunks(endpointer, silence(500) + speech + silence(300))
    utterance = events[-1]
    assert isinstance(utterance, Utterance)
    assert utterance.pcm == silence(CONFIG.pre_roll_ms) + speech + silence(300)


def test_pause_shorter_than_trailing_silence_keeps_one_utterance() -> None:
    endpointer = Endpointer(CONFIG)
    audio = tone(300) + silence(200) + tone(300) + silence(400)
    events = feed_in_chunks(endpointer, audio)
    assert [type(event) for event in events] == [Onset, Utterance]


def test_long_speech_is_cut_at_max_utterance_and_continues() -> None:
    endpointer = Endpointer(CONFIG)
    events = feed_in_chunks(endpointer, silence(200) + tone(4500))
    cuts = [event for event in events if isinstance(event, Utterance)]
    assert [type(event) for event in events] == [Onset, Utterance, Onset, Utterance, Onset]
    assert all(cut.ended_by is UtteranceEnd.MAX_LENGTH for cut in cuts)
    assert [len(cut.pcm) for cut in cuts] == [CONFIG.max_utterance_ms * BYTES_PER_MS] * 2
    rest = endpointer.flush()
    assert rest is not None
    assert rest.ended_by is UtteranceEnd.FLUSH
    # 100 ms pre-roll + 4500 ms of tone, less the two full cuts.
    assert len(rest.pcm) == (100 + 4500 - 2 * CONFIG.max_utterance_ms) * BYTES_PER_MS


def test_flush_returns_utterance_in_progress_with_partial_frame() -> None:
    endpointer = Endpointer(CONFIG)
    audio = tone(300) + tone(7)  # 7 ms: not a whole frame, still part of what was said
    assert endpointer.feed(audio) == [Onset()]
    utterance = endpointer.flush()
    assert utterance is not None
    assert utterance.pcm == audio
    assert endpointer.flush() is None


def test_reset_forgets_utterance_in_progress() -> None:
    endpointer = Endpointer(CONFIG)
    assert endpointer.feed(tone(300)) == [Onset()]
    endpointer.reset()
    assert endpointer.state is EndpointState.SILENCE
    assert endpointer.feed(silence(400)) == []
    assert endpointer.flush() is None


def test_keep_audio_false_reports_cuts_without_audio() -> None:
    endpointer = Endpointer(CONFIG, keep_audio=False)
    events = feed_in_chunks(endpointer, tone(300) + silence(300))
    assert events == [Onset(), Utterance(b"", UtteranceEnd.SILENCE)]


PAUSING = dataclasses.replace(CONFIG, pause_ms=100)


def test_no_pause_events_without_pause_ms() -> None:
    events = feed_in_chunks(Endpointer(CONFIG), tone(300) + silence(200) + tone(300) + silence(400))
    assert not any(isinstance(event, Pause) for event in events)


def test_pause_carries_the_audio_the_utterance_then_ends_with() -> None:
    endpointer = Endpointer(PAUSING)
    speech = tone(400)
    events = feed_in_chunks(endpointer, silence(200) + speech + silence(100))
    assert events == [Onset(), Pause(silence(100) + speech + silence(100))]
    events = feed_in_chunks(endpointer, silence(200))
    assert events == [Utterance(silence(100) + speech + silence(300), UtteranceEnd.SILENCE)]


def test_speech_after_a_pause_gives_a_later_pause_for_the_same_utterance() -> None:
    endpointer = Endpointer(PAUSING)
    first, second = tone(200), tone(300, hz=500.0)
    events = feed_in_chunks(endpointer, first + silence(160) + second + silence(300))
    assert [type(event) for event in events] == [Onset, Pause, Pause, Utterance]
    early, late, utterance = events[1], events[2], events[3]
    assert isinstance(early, Pause) and isinstance(late, Pause)
    assert isinstance(utterance, Utterance)
    assert early.pcm == first + silence(100)
    assert late.pcm == first + silence(160) + second + silence(100)
    assert utterance.pcm.startswith(late.pcm)


def test_pause_without_audio_when_keep_audio_false() -> None:
    endpointer = Endpointer(PAUSING, keep_audio=False)
    events = feed_in_chunks(endpointer, tone(300) + silence(300))
    assert events == [Onset(), Pause(b""), Utterance(b"", UtteranceEnd.SILENCE)]


def test_odd_length_chunk_raises_value_error() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        Endpointer(CONFIG).feed(b"\x00\x01\x02")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold_dbfs": 0.0}, "threshold_dbfs"),
        ({"speech_start_ms": 0}, "speech_start_ms"),
        ({"trailing_silence_ms": -20}, "trailing_silence_ms"),
        ({"frame_ms": 0}, "frame_ms"),
        ({"pre_roll_ms": -1}, "pre_roll_ms"),
        ({"max_utterance_ms": 100, "pre_roll_ms": 100}, "max_utterance_ms"),
        ({"pause_ms": 0}, "pause_ms"),
        ({"pause_ms": 300}, "pause_ms"),
        ({"pause_ms": 290}, "pause_ms"),  # rounds up to the 300 ms of trailing silence
    ],
)
def test_config_rejects_invalid_values(changes: dict[str, float], message: str) -> None:
    defaults = {
        "threshold_dbfs": -40.0,
        "speech_start_ms": 60,
        "trailing_silence_ms": 300,
        "max_utterance_ms": 2000,
        "pre_roll_ms": 100,
        "frame_ms": 20,
    }
    arguments = defaults | changes
    with pytest.raises(ValueError, match=message):
        EndpointConfig(**arguments)  # type: ignore[arg-type]


def test_frame_that_is_not_whole_samples_rejected() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        Endpointer(EndpointConfig(frame_ms=20), sample_rate_hz=44_100 // 2 + 1)


# A signal is a list of (loud?, duration in frames) segments.
_segments = st.lists(
    st.tuples(st.booleans(), st.integers(min_value=1, max_value=40)), min_size=1, max_size=12
)


def _signal(segments: list[tuple[bool, int]]) -> bytes:
    return b"".join(
        tone(frames * FRAME_MS) if loud else noise(frames * FRAME_MS, -70.0)
        for loud, frames in segments
    )


@settings(max_examples=60, deadline=None)
@given(segments=_segments, cuts=st.lists(st.integers(min_value=0, max_value=200_000)))
def test_events_do_not_depend_on_chunking(
    segments: list[tuple[bool, int]], cuts: list[int]
) -> None:
    audio = _signal(segments)
    whole = Endpointer(CONFIG)
    expected = whole.feed(audio)
    expected_rest = whole.flush()
    chunked = Endpointer(CONFIG)
    bounds = sorted({0, len(audio), *(cut - cut % 2 for cut in cuts if cut < len(audio))})
    events: list[EndpointEvent] = []
    for start, end in itertools.pairwise(bounds):
        events += chunked.feed(audio[start:end])
    assert events == expected
    assert chunked.flush() == expected_rest


@settings(max_examples=60, deadline=None)
@given(segments=_segments)
def test_every_utterance_follows_an_onset_and_keeps_its_speech(
    segments: list[tuple[bool, int]],
) -> None:
    audio = _signal(segments)
    endpointer = Endpointer(CONFIG)
    events: list[EndpointEvent] = [*endpointer.feed(audio)]
    rest = endpointer.flush()
    if rest is not None:
        events.append(rest)
    open_utterance = False
    for event in events:
        if isinstance(event, Onset):
            assert not open_utterance
            open_utterance = True
        else:
            assert open_utterance
            open_utterance = False
            assert len(event.pcm) <= CONFIG.max_utterance_ms * BYTES_PER_MS
    # Any loud run of speech_start_ms or more is inside some utterance.
    long_runs = sum(1 for loud, frames in segments if loud and frames * FRAME_MS >= 60)
    if long_runs:
        assert any(isinstance(event, Onset) for event in events)
    utterance_audio = sum(len(e.pcm) for e in events if isinstance(e, Utterance))
    assert utterance_audio <= len(audio)


@settings(max_examples=80, deadline=None)
@given(segments=_segments)
def test_an_utterance_ending_on_silence_is_its_last_pause_and_quiet(
    segments: list[tuple[bool, int]],
) -> None:
    endpointer = Endpointer(PAUSING)
    last_pause: Pause | None = None
    for event in endpointer.feed(_signal(segments)):
        if isinstance(event, Pause):
            last_pause = event
        elif isinstance(event, Utterance):
            if event.ended_by is UtteranceEnd.SILENCE:
                assert last_pause is not None
                assert event.pcm.startswith(last_pause.pcm)
                tail = event.pcm[len(last_pause.pcm) :]
                assert len(tail) == (300 - 100) * BYTES_PER_MS
                assert rms_dbfs(tail) < PAUSING.threshold_dbfs
            last_pause = None
