"""A scripted recogniser for testing the call loop without a speech model.

Each ``feed`` returns the next entry of the script (the events of that chunk), then nothing once
the script is used up. It keeps the real engines' contract: chunks must be whole 16-bit samples,
``flush`` returns the final of an utterance in progress, ``reset`` drops the rest of it, and
calls after ``close`` raise ``RuntimeError``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from voice.asr.base import AsrEvent, AsrFinal, AsrPartial, Recognizer, SpeechStarted, check_pcm16

DEFAULT_CHUNKS_PER_UTTERANCE = 3


class FakeRecognizer(Recognizer):
    """Returns scripted events: ``script[i]`` is what the i-th ``feed`` returns."""

    def __init__(self, script: Iterable[Sequence[AsrEvent]] = ()) -> None:
        self._script: deque[list[AsrEvent]] = deque(list(events) for events in script)
        self._speaking = False  # an utterance has started and its final not been returned
        self.fed_bytes = 0
        self.closed = False

    @classmethod
    def saying(
        cls, *texts: str, chunks_per_utterance: int = DEFAULT_CHUNKS_PER_UTTERANCE
    ) -> FakeRecognizer:
        """A script that says each text in turn, as a streaming engine would.

        Each utterance takes ``chunks_per_utterance`` chunks: ``SpeechStarted`` and the first
        word, then a partial whenever the words shown grow, then the final (confidence 1.0)
        on the last.
        """
        if chunks_per_utterance < 2:
            raise ValueError(f"an utterance needs at least 2 chunks, got {chunks_per_utterance}")
        script: list[list[AsrEvent]] = []
        for text in texts:
            words = text.split()
            if not words:
                raise ValueError("cannot script an utterance with no words")
            script.append([SpeechStarted(), AsrPartial(words[0])])
            shown = 1
            for chunk in range(1, chunks_per_utterance - 1):
                now = max(1, len(words) * (chunk + 1) // chunks_per_utterance)
                # Like the real engines: a partial only when the words changed.
                script.append([AsrPartial(" ".join(words[:now]))] if now > shown else [])
                shown = now
            script.append([AsrFinal(text, 1.0)])
        return cls(script)

    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        self._check_open()
        check_pcm16(pcm16k)
        self.fed_bytes += len(pcm16k)
        events = self._script.popleft() if self._script else []
        for event in events:
            self._speaking = not isinstance(event, AsrFinal)
        return events

    async def flush(self) -> AsrFinal | None:
        self._check_open()
        if not self._speaking:
            return None
        return self._skip_to_final()

    def reset(self) -> None:
        if self._speaking:
            self._skip_to_final()

    async def close(self) -> None:
        self.closed = True

    def _skip_to_final(self) -> AsrFinal | None:
        """Drop the rest of the utterance in progress; returns its final, if it has one."""
        self._speaking = False
        while self._script:
            events = self._script.popleft()
            for index, event in enumerate(events):
                if isinstance(event, AsrFinal):
                    rest = events[index + 1 :]
                    if rest:
                        self._script.appendleft(rest)
                    return event
        return None

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the recognizer is closed")
