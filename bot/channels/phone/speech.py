"""Bot messages rendered for the ear: no URLs or emoji read aloud, buttons spoken as choices."""

from __future__ import annotations

import re
import unicodedata

from bot.nlu.client import BotReply

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#>|~]+")
_CHOICE_INTRO = {"it": "Può dire: {choices}.", "en": "You can say: {choices}."}
_OR = {"it": "oppure", "en": "or"}


def _speakable(ch: str) -> bool:
    # emoji and pictographs are symbols (So), their modifiers Sk, joiners and selectors Cf/Mn
    if ch in "\u200d\ufe0f\ufe0e":
        return False
    return unicodedata.category(ch) not in ("So", "Sk", "Cs", "Co", "Cn")


def speakable_text(text: str) -> str:
    """``text`` without URLs, emoji and markup characters, spaces normalised."""
    text = _URL.sub("", text)
    text = "".join(ch for ch in text if _speakable(ch))
    text = _MARKUP.sub(" ", text)
    return " ".join(text.split()).replace(" .", ".").replace(" ,", ",")


def spoken_choices(titles: list[str], language: str) -> str:
    names = [speakable_text(t) for t in titles if speakable_text(t)]
    if not names:
        return ""
    joined = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {_OR[language]} {names[-1]}"
    return _CHOICE_INTRO[language].format(choices=joined)


def render(replies: tuple[BotReply, ...], language: str) -> tuple[str, ...]:
    """One spoken sentence group per bot message; its buttons become a spoken list of choices."""
    lang = language if language in _OR else "it"
    spoken: list[str] = []
    for reply in replies:
        parts = [speakable_text(reply.text)]
        if reply.buttons:
            parts.append(spoken_choices([title for title, _ in reply.buttons], lang))
        sentence = " ".join(p for p in parts if p)
        if sentence:
            spoken.append(sentence)
    return tuple(spoken)
