"""A bounded cache of synthesised prompts in front of any ``Synthesizer``.

Most of what a voicebot says is the same few sentences, and synthesis costs 10-100 ms on a
single engine thread shared by every call. Prompts are keyed by (voice, text) and evicted least
recently used first. Concurrent requests for a prompt that is being synthesised wait for that
one synthesis. Static prompts are rendered at start-up with ``prerender``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from voice.tts.base import Prompt, Synthesizer

DEFAULT_MAX_PROMPTS: Final = 512  # about 30 MB of 8 kHz audio at 4 s a prompt

_Key = tuple[str, str]  # (voice, text)


class PromptCache(Synthesizer):
    """Caches another synthesizer's prompts; it owns that synthesizer and closes it."""

    def __init__(self, synthesizer: Synthesizer, *, max_entries: int = DEFAULT_MAX_PROMPTS) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._synthesizer = synthesizer
        self._prompts: OrderedDict[_Key, Prompt] = OrderedDict()
        # One task per prompt being synthesised, owned here: a waiter that gives up must not
        # cancel the others' synthesis, and close() awaits what is left.
        self._pending: dict[_Key, asyncio.Task[Prompt]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._prompts)

    def voice(self, language: str) -> str:
        return self._synthesizer.voice(language)

    def cached(self, text: str, language: str) -> bool:
        """Whether the prompt is in the cache (does not count as a use)."""
        return (self.voice(language), text) in self._prompts

    async def synthesize(self, text: str, language: str) -> Prompt:
        if self._closed:
            raise RuntimeError("the prompt cache is closed")
        key = (self.voice(language), text)
        prompt = self._prompts.get(key)
        if prompt is not None:
            self._prompts.move_to_end(key)
            return prompt
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(
                self._synthesizer.synthesize(text, language), name="prompt-synthesis"
            )
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(task)

    async def prerender(self, items: Iterable[tuple[str, str]]) -> None:
        """Synthesise ``(text, language)`` prompts ahead of use; raises the first failure.

        Raises ``ValueError`` if they would not all fit in the cache.
        """
        wanted = list(dict.fromkeys(items))
        if len(wanted) > self.max_entries:
            raise ValueError(
                f"{len(wanted)} prompts to prerender exceed max_entries ({self.max_entries})"
            )
        await asyncio.gather(*(self.synthesize(text, language) for text, language in wanted))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let the syntheses in flight finish (tens of milliseconds): cancelling them would
        # raise CancelledError in waiters that were never cancelled.
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        self._prompts.clear()
        await self._synthesizer.close()

    def _settle(self, key: _Key, task: asyncio.Task[Prompt]) -> None:
        # Stores the prompt even when every waiter gave up: it was paid for.
        del self._pending[key]
        if task.cancelled():
            return
        if task.exception() is not None:  # also marks it retrieved; failures are not cached
            return
        if self._closed:
            return
        self._prompts[key] = task.result()
        self._prompts.move_to_end(key)
        while len(self._prompts) > self.max_entries:
            self._prompts.popitem(last=False)
