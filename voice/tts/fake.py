"""A deterministic synthesizer for testing callers without espeak-ng.

It speaks a tone whose length is proportional to the text (``MS_PER_CHARACTER``), at 8 kHz like
the real engine, and keeps the real engine's contract: ``ValueError`` for text with nothing to
say, ``ModelNotFound`` for a language without a voice, ``RuntimeError`` after ``close``. It
records every request in ``requests``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np

from voice.errors import ModelNotFound
from voice.tts.base import PROMPT_RATE_HZ, Prompt, Synthesizer, check_speakable

MS_PER_CHARACTER: Final = 60  # about espeak-ng's pace at 160 words per minute
TONE_HZ: Final = 440.0
TONE_AMPLITUDE: Final = 8000  # about -12 dBFS
DEFAULT_LANGUAGES: Final = ("it", "en")


class FakeSynthesizer(Synthesizer):
    """Says every text as a 440 Hz tone of ``MS_PER_CHARACTER`` per character."""

    def __init__(self, languages: Iterable[str] = DEFAULT_LANGUAGES) -> None:
        self.languages = frozenset(languages)
        self.requests: list[tuple[str, str]] = []  # (text, language), in order
        self.closed = False

    def voice(self, language: str) -> str:
        if language not in self.languages:
            raise ModelNotFound(f"no voice configured for language {language!r}")
        return f"fake-{language}"

    async def synthesize(self, text: str, language: str) -> Prompt:
        if self.closed:
            raise RuntimeError("the synthesizer is closed")
        check_speakable(text)
        self.voice(language)
        self.requests.append((text, language))
        samples = len(text) * MS_PER_CHARACTER * PROMPT_RATE_HZ // 1000
        t = np.arange(samples, dtype=np.float64) / PROMPT_RATE_HZ
        tone = np.rint(TONE_AMPLITUDE * np.sin(2.0 * np.pi * TONE_HZ * t)).astype("<i2")
        return Prompt(tone.tobytes(), PROMPT_RATE_HZ)

    async def close(self) -> None:
        self.closed = True
