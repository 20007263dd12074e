"""A bounded cache of synthesised prompts in front of any ``Synthesizer``.

Most of what a voicebot says is the same few sentences, and synthesis costs 10-100 ms on a
single engine thread shared by every call. Prompts are keyed by (voice, text). Concurrent
requests for a prompt that is being synthesised wait for that one synthesis.

Two kinds of prompt:
- *static* ones (the greetings, the reprompts, the line's fixed sentences), rendered at start-up
  with ``prerender`` and kept for the cache's life;
- the others, which the bot's replies fill in (and some carry a customer's data: a balance, a
  due date, a name). They are kept only when ``keep(text)`` allows it (by default, texts with no
  digits: amounts, codes and dates are never kept), for at most ``max_age_s`` from their
  synthesis, and evicted least recently used first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

from voice.tts.base import Prompt, Synthesizer

DEFAULT_MAX_PROMPTS: Final = 512  # about 30 MB of 8 kHz audio at 4 s a prompt
DEFAULT_MAX_AGE_S: Final = 600.0  # how long a prompt that is not static may be kept

_Key = tuple[str, str]  # (voice, text)


def has_no_digits(text: str) -> bool:
    """The default ``keep``: a sentence with a number in it is about someone, not kept."""
    return not any(character.isdigit() for character in text)


class PromptCache(Synthesizer):
    """Caches another synthesizer's prompts; it owns that synthesizer and closes it."""

    def __init__(
        self,
        synthesizer: Synthesizer,
        *,
        max_entries: int = DEFAULT_MAX_PROMPTS,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        keep: Callable[[str], bool] = has_no_digits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_entries`` bounds the static and the other prompts together."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._keep = keep
        self._clock = clock
        self._synthesizer = synthesizer
        self._static: dict[_Key, Prompt] = {}
        # the others, least recently used first, with the time each was synthesised
        self._prompts: OrderedDict[_Key, tuple[Prompt, float]] = OrderedDict()
        self._prerendering: set[_Key] = set()
        # One task per prompt being synthesised, owned here: a waiter that gives up must not
        # cancel the others' synthesis, and close() awaits what is left.
        self._pending: dict[_Key, asyncio.Task[Prompt]] = {}
        self._closed = False

    def __len__(self) -> int:
        self._expire()
        return len(self._static) + len(self._prompts)

    def voice(self, language: str) -> str:
        return self._synthesizer.voice(language)

    def cached(self, text: str, language: str) -> bool:
        """Whether the prompt is in the cache (does not count as a use)."""
        self._expire()
        key = (self.voice(language), text)
        return key in self._static or key in self._prompts

    async def synthesize(self, text: str, language: str) -> Prompt:
        if self._closed:
            raise RuntimeError("the prompt cache is closed")
        key = (self.voice(language), text)
        static = self._static.get(key)
        if static is not None:
            return static
        self._expire()
        entry = self._prompts.get(key)
        if entry is not None:
            self._prompts.move_to_end(key)
            return entry[0]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(
                self._synthesizer.synthesize(text, language), name="prompt-synthesis"
            )
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(task)

    async def prerender(self, items: Iterable[tuple[str, str]]) -> None:
        """Synthesise the static ``(text, language)`` prompts, kept for the cache's life
        whatever they say; raises the first failure.

        Raises ``ValueError`` if they would not all fit in the cache.
        """
        wanted = list(dict.fromkeys(items))
        keys = {(self.voice(language), text) for text, language in wanted}
        if len(keys | self._static.keys()) > self.max_entries:
            raise ValueError(
                f"{len(keys | self._static.keys())} static prompts exceed max_entries "
                f"({self.max_entries})"
            )
        for key in keys & self._prompts.keys():  # said before as a reply: static from now on
            self._static[key] = self._prompts.pop(key)[0]
        self._prerendering |= keys
        try:
            await asyncio.gather(*(self.synthesize(text, language) for text, language in wanted))
        finally:
            self._prerendering -= keys

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let the syntheses in flight finish (tens of milliseconds): cancelling them would
        # raise CancelledError in waiters that were never cancelled.
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        self._static.clear()
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
        if key in self._prerendering:
            self._static[key] = task.result()
            self._prompts.pop(key, None)
        elif self._keep(key[1]):
            self._prompts[key] = (task.result(), self._clock())
            self._prompts.move_to_end(key)
        while self._prompts and len(self._static) + len(self._prompts) > self.max_entries:
            self._prompts.popitem(last=False)

    def _expire(self) -> None:
        oldest = self._clock() - self.max_age_s
        for key in [key for key, (_, made) in self._prompts.items() if made <= oldest]:
            del self._prompts[key]
