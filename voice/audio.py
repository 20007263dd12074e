"""Telephone audio: G.711 µ-law/A-law, band-limited resampling and levels.

Every function here works on 16-bit signed little-endian mono PCM (``bytes``), the format the rest
of ``voice`` passes around, and is pure: no I/O, no global state beyond read-only tables.

G.711 follows the ITU-T tables as implemented by the classic Sun Microsystems ``g711.c`` (the same
quantisation as CPython's removed ``audioop``): µ-law on the 14 most significant bits, A-law on
the 13 most significant bits. Encoding is one lookup in a 65536-entry table built at import, so a
20 ms frame costs microseconds.

Cost: ``ulaw_*``/``alaw_*`` and ``Resampler.process`` on 20 ms frames take well under 1 ms and may
run on the event loop. A one-shot ``resample`` of a whole synthesised prompt (seconds of audio)
does not: call it from the synthesis worker thread or an executor.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

SAMPLE_WIDTH_BYTES: Final = 2
TELEPHONE_RATE_HZ: Final = 8000
PTIME_MS: Final = 20
SAMPLES_PER_FRAME: Final = TELEPHONE_RATE_HZ * PTIME_MS // 1000  # 160

_INT16_MIN: Final = -32768
_INT16_MAX: Final = 32767
_FULL_SCALE: Final = 32768.0

# µ-law: the encoder adds this bias (0x84 on 16 bits, 33 on the 14 bits it quantises) so that the
# segment boundaries become powers of two.
_ULAW_BIAS_14BIT: Final = 0x84 >> 2
_ULAW_CLIP_14BIT: Final = 8159
_ULAW_SEGMENT_ENDS: Final = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEGMENT_ENDS: Final = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
# A-law inverts the even bits on the wire (G.711 §A): 0x55 is that mask.
_ALAW_EVEN_BITS: Final = 0x55

# Resampler design. The pass band ends at ROLLOFF of the lower Nyquist frequency (3.68 kHz for
# 8 kHz audio: above the 3.4 kHz telephone band) and the Kaiser window's transition band ends near
# that Nyquist frequency, so images and aliases are ~60 dB down.
_RESAMPLE_HALF_TAPS: Final = 24  # filter half-length, in samples of the lower rate
_RESAMPLE_ROLLOFF: Final = 0.92
_RESAMPLE_KAISER_BETA: Final = 6.0  # about 64 dB of stop-band attenuation
_RESAMPLE_BATCH_OUTPUTS: Final = 4096  # bounds the gather buffer for long one-shot inputs

_Int16Array = npt.NDArray[np.int16]
_Float64Array = npt.NDArray[np.float64]


def _samples(pcm: bytes) -> _Int16Array:
    if len(pcm) % SAMPLE_WIDTH_BYTES:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2")


def _all_int16() -> _Int16Array:
    """Every int16 value, ordered so that index ``v & 0xFFFF`` holds ``v``."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.int16)


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_int16().astype(np.int32) >> 2
    negative = x < 0
    magnitude = np.minimum(np.where(negative, -x, x), _ULAW_CLIP_14BIT) + _ULAW_BIAS_14BIT
    segment = np.searchsorted(np.array(_ULAW_SEGMENT_ENDS), magnitude)
    # The clip level plus the bias lands just past the last segment: Sun's code, and G.711's
    # table, send the top code there.
    overflow = segment >= len(_ULAW_SEGMENT_ENDS)
    segment = np.minimum(segment, len(_ULAW_SEGMENT_ENDS) - 1)
    code = np.where(overflow, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode_table() -> _Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    bias = 0x84
    t = (((u & 0x0F) << 3) + bias) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, bias - t, t - bias).astype(np.int16)


def _build_alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_int16().astype(np.int32) >> 3
    negative = x < 0
    # One's complement for negatives: A-law has no negative zero, -1 shares a code level with 0.
    magnitude = np.where(negative, -x - 1, x)
    segment = np.searchsorted(np.array(_ALAW_SEGMENT_ENDS), magnitude)
    overflow = segment >= len(_ALAW_SEGMENT_ENDS)
    segment = np.minimum(segment, len(_ALAW_SEGMENT_ENDS) - 1)
    shift = np.maximum(segment, 1)
    code = np.where(overflow, 0x7F, (segment << 4) | ((magnitude >> shift) & 0x0F))
    mask = np.where(negative, _ALAW_EVEN_BITS, _ALAW_EVEN_BITS | 0x80)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode_table() -> _Int16Array:
    a = np.arange(256, dtype=np.int32) ^ _ALAW_EVEN_BITS
    segment = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(segment == 0, t + 8, (t + 0x108) << np.maximum(segment - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE: Final = _build_ulaw_encode_table()
_ULAW_DECODE: Final = _build_ulaw_decode_table()
_ALAW_ENCODE: Final = _build_alaw_encode_table()
_ALAW_DECODE: Final = _build_alaw_decode_table()
for _table in (_ULAW_ENCODE, _ULAW_DECODE, _ALAW_ENCODE, _ALAW_DECODE):
    _table.flags.writeable = False


def ulaw_encode(pcm: bytes) -> bytes:
    """Encode 16-bit PCM to G.711 µ-law, one byte per sample."""
    return _ULAW_ENCODE[_samples(pcm).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """Decode G.711 µ-law bytes to 16-bit PCM."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """Encode 16-bit PCM to G.711 A-law, one byte per sample."""
    return _ALAW_ENCODE[_samples(pcm).view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> bytes:
    """Decode G.711 A-law bytes to 16-bit PCM."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def rms_dbfs(pcm: bytes) -> float:
    """The RMS level of 16-bit PCM in dB relative to a full-scale square wave.

    A full-scale sine reads about -3 dBFS. Digital silence (and empty input) is ``-inf``, so
    comparisons against a threshold need no special case.
    """
    x = _samples(pcm)
    if x.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64))))
    if rms == 0.0:
        return -math.inf
    return 20.0 * math.log10(rms / _FULL_SCALE)


@lru_cache(maxsize=16)
def _polyphase_bank(up: int, down: int) -> tuple[_Float64Array, int]:
    """A Kaiser-windowed sinc low-pass split into ``up`` phases, and its half-width in inputs.

    The prototype runs at ``up`` times the input rate; row ``p`` holds taps ``p, p+up, ...`` so an
    output sample is one dot product of a row with a window of input samples (newest first).
    """
    half_width = math.ceil(_RESAMPLE_HALF_TAPS * max(1.0, down / up))
    centre = half_width * up
    length = 2 * centre + 1
    # Cutoff in cycles per sample of the up-sampled stream: ROLLOFF of the lower Nyquist.
    cutoff = _RESAMPLE_ROLLOFF * 0.5 / max(up, down)
    m = np.arange(length, dtype=np.float64) - centre
    prototype = 2.0 * cutoff * np.sinc(2.0 * cutoff * m) * np.kaiser(length, _RESAMPLE_KAISER_BETA)
    prototype *= up / prototype.sum()  # unity DC gain after zero-stuffing by ``up``
    taps_per_phase = 2 * half_width + 1
    padded = np.zeros(up * taps_per_phase, dtype=np.float64)
    padded[:length] = prototype
    bank = np.ascontiguousarray(padded.reshape(taps_per_phase, up).T)
    bank.flags.writeable = False
    return bank, half_width


class Resampler:
    """A streaming band-limited resampler for 16-bit PCM (polyphase windowed-sinc FIR).

    ``process`` takes chunks of any size and returns every output sample that its input so far
    determines; the filter history is kept between calls, so 20 ms frames join without clicks.
    Output is delay-compensated: the stream ``process(a) + process(b) + ... + flush()`` is the
    same audio as ``resample(a + b + ..., ...)``, sample for sample, and the first calls return a
    little less than their share (the filter's look-ahead, about 3 ms) until ``flush`` gives
    back the tail. One instance per stream; not thread-safe.
    """

    def __init__(self, src_rate_hz: int, dst_rate_hz: int) -> None:
        if src_rate_hz <= 0 or dst_rate_hz <= 0:
            raise ValueError(
                f"sample rates must be positive, got {src_rate_hz} Hz -> {dst_rate_hz} Hz"
            )
        self.src_rate_hz = src_rate_hz
        self.dst_rate_hz = dst_rate_hz
        common = math.gcd(src_rate_hz, dst_rate_hz)
        self._up = dst_rate_hz // common
        self._down = src_rate_hz // common
        self._passthrough = self._up == self._down
        self._bank, self._half_width = _polyphase_bank(self._up, self._down)
        self._reset()

    def _reset(self) -> None:
        # The buffer starts with the zeros that precede the signal, so the first window is full.
        self._history = 2 * self._half_width
        self._buffer: _Float64Array = np.zeros(self._history, dtype=np.float64)
        self._buffer_start = -self._history  # input index of _buffer[0]
        self._inputs = 0  # input samples received since the last flush
        self._next_output = 0

    def process(self, chunk: bytes) -> bytes:
        """Resample the next chunk of the stream; returns the output it completes."""
        x = _samples(chunk)
        if self._passthrough:
            return x.astype("<i2").tobytes()
        self._buffer = np.concatenate((self._buffer, x.astype(np.float64)))
        self._inputs += x.size
        # Output k needs inputs up to (k*down + centre) // up; centre = half_width * up.
        newest = self._buffer_start + self._buffer.size - 1
        last = ((newest - self._half_width) * self._up + self._up - 1) // self._down
        return self._emit(last)

    def flush(self) -> bytes:
        """Return the tail of the stream (the filter's look-ahead) and start a new stream."""
        if self._passthrough:
            return b""
        self._buffer = np.concatenate(
            (self._buffer, np.zeros(self._half_width + 1, dtype=np.float64))
        )
        # ceil(inputs * up / down) outputs cover the input's duration.
        last = -(-self._inputs * self._up // self._down) - 1
        tail = self._emit(last)
        self._reset()
        return tail

    def _emit(self, last: int) -> bytes:
        pieces: list[_Int16Array] = []
        taps = self._bank.shape[1]
        offsets = np.arange(taps)
        while self._next_output <= last:
            stop = min(last + 1, self._next_output + _RESAMPLE_BATCH_OUTPUTS)
            k = np.arange(self._next_output, stop, dtype=np.int64)
            position = k * self._down + self._half_width * self._up
            newest = position // self._up - self._buffer_start
            phase = position % self._up
            window = self._buffer[newest[:, None] - offsets[None, :]]
            y = np.einsum("kj,kj->k", self._bank[phase], window)
            pieces.append(np.clip(np.rint(y), _INT16_MIN, _INT16_MAX).astype("<i2"))
            self._next_output = stop
        self._drop_consumed()
        if not pieces:
            return b""
        return np.concatenate(pieces).tobytes()

    def _drop_consumed(self) -> None:
        position = self._next_output * self._down + self._half_width * self._up
        oldest_needed = position // self._up - (self._bank.shape[1] - 1)
        drop = oldest_needed - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop


def resample(pcm: bytes, src_rate_hz: int, dst_rate_hz: int) -> bytes:
    """Resample a whole 16-bit PCM clip; returns ``ceil(n * dst / src)`` samples.

    Costs about ``dst_rate_hz * 50`` multiply-adds per second of output (more when
    down-sampling by a large factor): run long clips off the event loop.
    """
    resampler = Resampler(src_rate_hz, dst_rate_hz)
    return resampler.process(pcm) + resampler.flush()
