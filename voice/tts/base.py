"""The speech-synthesiser interface: text and a language in, a telephone-rate prompt out.

A ``Prompt`` is 16-bit signed little-endian mono PCM at 8 kHz, ready for G.711 encoding.
Synthesis is CPU-bound and runs off the event loop (the engine's own thread or an executor).
Errors: ``ValueError`` for text with nothing to say, ``ModelNotFound`` for a language that has
no voice, ``EngineUnavailable`` when the engine fails.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

PROMPT_RATE_HZ: Final = 8000
SAMPLE_WIDTH_BYTES: Final = 2


@dataclass(frozen=True, slots=True)
class Prompt:
    """Synthesised speech: 16-bit LE mono PCM at ``sample_rate_hz``."""

    pcm: bytes
    sample_rate_hz: int = PROMPT_RATE_HZ

    def __post_init__(self) -> None:
        if len(self.pcm) % SAMPLE_WIDTH_BYTES:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(self.pcm)}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")

    @property
    def duration_ms(self) -> int:
        """The prompt's length in whole milliseconds (rounded down)."""
        samples = len(self.pcm) // SAMPLE_WIDTH_BYTES
        return samples * 1000 // self.sample_rate_hz


def check_speakable(text: str) -> None:
    """Raise ``ValueError`` unless ``text`` has a letter or digit to say."""
    if not any(char.isalnum() for char in text):
        raise ValueError("nothing to say: the text has no letters or digits")


class Synthesizer(ABC):
    """A text-to-speech engine. One per process, shared by every call."""

    @abstractmethod
    def voice(self, language: str) -> str:
        """The voice that speaks ``language``; raises ``ModelNotFound`` if there is none.

        Two languages with the same voice sound the same: ``PromptCache`` keys on it.
        """

    @abstractmethod
    async def synthesize(self, text: str, language: str) -> Prompt:
        """Speak ``text`` in ``language``; returns 8 kHz audio."""

    @abstractmethod
    async def close(self) -> None:
        """Stop the engine; later calls raise ``RuntimeError``."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
