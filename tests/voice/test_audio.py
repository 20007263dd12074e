"""G.711, resampling and levels, checked against an independent reference and real captures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.voice.test_rtp_packet import capture_udp_payloads, sipp_capture
from voice import audio
from voice.rtp.packet import parse_rtp

# --- An independent scalar G.711 reference: the classic Sun Microsystems g711.c, line by line.

_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _search(value: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if value <= end:
            return i
    return len(table)


def sun_linear2ulaw(pcm_val: int) -> int:
    pcm_val >>= 2
    if pcm_val < 0:
        pcm_val = -pcm_val
        mask = 0x7F
    else:
        mask = 0xFF
    pcm_val = min(pcm_val, 8159) + (0x84 >> 2)
    seg = _search(pcm_val, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm_val >> (seg + 1)) & 0xF)) ^ mask


def sun_ulaw2linear(u_val: int) -> int:
    u_val = ~u_val & 0xFF
    t = ((u_val & 0x0F) << 3) + 0x84
    t <<= (u_val & 0x70) >> 4
    return 0x84 - t if u_val & 0x80 else t - 0x84


def sun_linear2alaw(pcm_val: int) -> int:
    pcm_val >>= 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm_val = -pcm_val - 1
    seg = _search(pcm_val, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm_val >> (1 if seg < 2 else seg)) & 0xF
    return aval ^ mask


def sun_alaw2linear(a_val: int) -> int:
    a_val ^= 0x55
    t = (a_val & 0x0F) << 4
    seg = (a_val & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a_val & 0x80 else -t


ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2")
ALL_CODES = bytes(range(256))


def _pcm(samples: np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def _values(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def test_ulaw_encode_matches_reference_for_every_sample_value() -> None:
    expected = bytes(sun_linear2ulaw(int(v)) for v in ALL_SAMPLES)

    assert audio.ulaw_encode(_pcm(ALL_SAMPLES)) == expected


def test_alaw_encode_matches_reference_for_every_sample_value() -> None:
    expected = bytes(sun_linear2alaw(int(v)) for v in ALL_SAMPLES)

    assert audio.alaw_encode(_pcm(ALL_SAMPLES)) == expected


def test_ulaw_decode_matches_reference_for_every_code() -> None:
    assert _values(audio.ulaw_decode(ALL_CODES)).tolist() == [sun_ulaw2linear(c) for c in ALL_CODES]


def test_alaw_decode_matches_reference_for_every_code() -> None:
    assert _values(audio.alaw_decode(ALL_CODES)).tolist() == [sun_alaw2linear(c) for c in ALL_CODES]


def test_decode_gives_g711_table_values_at_the_extremes() -> None:
    # From G.711's tables: µ-law 0xFF/0x7F are ±0 and 0x80/0x00 the largest magnitude (8031 on
    # the 14-bit scale, x4); A-law 0xD5/0x55 the smallest (±1 on 13 bits, x8), 0xAA/0x2A the
    # largest (4032, x8).
    assert _values(audio.ulaw_decode(b"\xff\x7f\x80\x00")).tolist() == [0, 0, 32124, -32124]
    assert _values(audio.alaw_decode(b"\xd5\x55\xaa\x2a")).tolist() == [8, -8, 32256, -32256]


def test_alaw_decode_then_encode_returns_every_code() -> None:
    assert audio.alaw_encode(audio.alaw_decode(ALL_CODES)) == ALL_CODES


def test_ulaw_decode_then_encode_returns_every_code_but_negative_zero() -> None:
    round_trip = audio.ulaw_encode(audio.ulaw_decode(ALL_CODES))

    differing = [c for c in ALL_CODES if round_trip[c] != c]
    assert differing == [0x7F]  # -0 decodes to 0, which encodes as +0 (0xFF)
    assert round_trip[0x7F] == 0xFF


@pytest.mark.parametrize("encode", [audio.ulaw_encode, audio.alaw_encode])
def test_encode_rejects_odd_byte_count(encode: object) -> None:
    assert callable(encode)
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        encode(b"\x00\x01\x02")


def test_alaw_capture_decodes_to_plausible_speech_band_audio() -> None:
    packets = [parse_rtp(p) for p in capture_udp_payloads(sipp_capture("g711a.pcap"))]
    payload = b"".join(p.payload for p in packets)

    pcm = audio.alaw_decode(payload)

    samples = _values(pcm)
    assert len(samples) == len(payload)
    assert -40.0 < audio.rms_dbfs(pcm) < -10.0
    assert np.abs(samples).max() < 30000  # a real recording, not clipped noise
    spectrum = np.abs(np.fft.rfft((samples - samples.mean()) * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / audio.TELEPHONE_RATE_HZ)
    speech_band = spectrum[(freqs > 200) & (freqs < 3500)].sum()
    assert speech_band / spectrum.sum() > 0.5
    # The real stream survives our decode/encode bit for bit.
    assert audio.alaw_encode(pcm) == payload


# --- Levels


def test_rms_dbfs_is_zero_for_full_scale_square() -> None:
    square = np.tile(np.array([32767, -32768], dtype="<i2"), 80)

    assert audio.rms_dbfs(_pcm(square)) == pytest.approx(0.0, abs=0.001)


def test_rms_dbfs_of_sine_is_amplitude_over_root_two() -> None:
    t = np.arange(8000) / 8000
    sine = np.rint(1000 * np.sin(2 * np.pi * 440 * t))

    assert audio.rms_dbfs(_pcm(sine)) == pytest.approx(
        20 * math.log10(1000 / math.sqrt(2) / 32768), abs=0.01
    )


def test_rms_dbfs_is_minus_infinity_for_silence_and_empty_input() -> None:
    assert audio.rms_dbfs(bytes(320)) == -math.inf
    assert audio.rms_dbfs(b"") == -math.inf


# --- Resampling


def _tone(freq_hz: float, rate_hz: int, seconds: float = 1.0, amplitude: float = 10000.0) -> bytes:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return _pcm(np.rint(amplitude * np.sin(2 * np.pi * freq_hz * t)))


def _band_energy(pcm: bytes, rate_hz: int, low_hz: float, high_hz: float) -> float:
    x = _values(pcm).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate_hz)
    return float(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum())


def _db(ratio: float) -> float:
    return 10 * math.log10(ratio) if ratio > 0 else -math.inf


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 8000)])
def test_resample_keeps_a_1khz_tone_level_and_pitch(src: int, dst: int) -> None:
    tone = _tone(1000, src)

    out = audio.resample(tone, src, dst)

    assert audio.rms_dbfs(out) == pytest.approx(audio.rms_dbfs(tone), abs=0.2)
    assert _band_energy(out, dst, 900, 1100) / _band_energy(out, dst, 0, dst / 2) > 0.999


def test_resample_up_attenuates_images_above_the_old_nyquist() -> None:
    out = audio.resample(_tone(3000, 8000), 8000, 16000)  # the image would sit at 5 kHz

    assert _db(_band_energy(out, 16000, 4000, 8000) / _band_energy(out, 16000, 0, 4000)) < -50


@pytest.mark.parametrize(("src", "freq_hz"), [(16000, 6000), (22050, 5000), (22050, 9000)], ids=str)
def test_resample_down_attenuates_energy_above_the_new_nyquist(src: int, freq_hz: float) -> None:
    tone = _tone(freq_hz, src)

    out = audio.resample(tone, src, 8000)

    # Away from the tone's abrupt start and end, whose clicks are broadband and pass the filter.
    steady = out[2 * 400 : -2 * 400]
    assert audio.rms_dbfs(steady) < audio.rms_dbfs(tone) - 60


def test_resample_has_no_delay_against_an_ideal_tone() -> None:
    out = _values(audio.resample(_tone(440, 8000), 8000, 16000)).astype(np.float64)

    ideal = 10000 * np.sin(2 * np.pi * 440 * np.arange(len(out)) / 16000)
    middle = slice(200, len(out) - 200)  # away from the edges, where the input starts/stops
    assert np.abs(out[middle] - ideal[middle]).max() < 30  # 0.3 % of the amplitude


@pytest.mark.parametrize(
    ("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 8000), (8000, 8000)]
)
@pytest.mark.parametrize("samples", [0, 1, 159, 160, 2205, 8000])
def test_resample_returns_ceil_of_scaled_length(src: int, dst: int, samples: int) -> None:
    out = audio.resample(bytes(2 * samples), src, dst)

    assert len(out) // 2 == -(-samples * dst // src)


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 8000)])
def test_streaming_20ms_frames_equals_one_shot(src: int, dst: int) -> None:
    rng = np.random.default_rng(4)
    pcm = _pcm(rng.integers(-20000, 20000, size=src))  # 1 s of white noise: every frequency
    frame_bytes = 2 * src * audio.PTIME_MS // 1000
    resampler = audio.Resampler(src, dst)

    streamed = b"".join(
        resampler.process(pcm[i : i + frame_bytes]) for i in range(0, len(pcm), frame_bytes)
    )
    streamed += resampler.flush()

    one_shot = audio.resample(pcm, src, dst)
    assert len(streamed) == len(one_shot)
    assert np.abs(_values(streamed) - _values(one_shot)).max() <= 1  # float summation order


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 1000), max_size=12),
    rates=st.sampled_from([(8000, 16000), (16000, 8000), (22050, 8000), (8000, 8000)]),
)
def test_streaming_any_chunking_equals_one_shot(cuts: list[int], rates: tuple[int, int]) -> None:
    src, dst = rates
    pcm = _tone(700, src, seconds=0.07)
    bounds = sorted({0, len(pcm) // 2, *[min(c, len(pcm) // 2) for c in cuts]})
    resampler = audio.Resampler(src, dst)

    streamed = b"".join(
        resampler.process(pcm[2 * a : 2 * b]) for a, b in itertools.pairwise(bounds)
    )
    streamed += resampler.flush()

    one_shot = audio.resample(pcm, src, dst)
    assert len(streamed) == len(one_shot)
    assert np.abs(_values(streamed) - _values(one_shot)).max() <= 1


def test_resampler_flush_starts_a_fresh_stream() -> None:
    resampler = audio.Resampler(8000, 16000)
    first = resampler.process(_tone(300, 8000, 0.1)) + resampler.flush()

    second = resampler.process(_tone(300, 8000, 0.1)) + resampler.flush()

    assert second == first


def test_resampler_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="sample rates must be positive"):
        audio.Resampler(0, 8000)
