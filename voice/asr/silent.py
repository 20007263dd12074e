"""``NoSpeechRecognizer``: what a call gets in a language with no speech model installed.

The call goes on with keys only (``0`` for a person, digits for values); start-up says which
languages lack a model and how to install one (``triage models download``).
"""

from __future__ import annotations

from voice.asr.base import AsrEvent, AsrFinal, Recognizer, check_pcm16


class NoSpeechRecognizer(Recognizer):
    def __init__(self) -> None:
        self.closed = False

    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        if self.closed:
            raise RuntimeError("the recognizer is closed")
        check_pcm16(pcm16k)
        return []

    async def flush(self) -> AsrFinal | None:
        return None

    def reset(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True
