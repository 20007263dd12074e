"""Normalisation of the values the sample's customers give in flows (typed, spoken or keyed).

Each function takes free text and returns the canonical value, or ``None`` when the text holds
no valid value. Speech recognisers and DTMF give bare digits, so codes are accepted without
their letter prefix.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"(?<![\w])(c\s*l|t\s*k)?[\s-]*(\d{6})(?!\d)", re.IGNORECASE)
_POSTCODE = re.compile(r"(?<!\d)(\d{5})(?!\d)")
_DIGIT_GROUP = re.compile(r"\d+")
_EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$")
_EMAIL_IN_TEXT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
MAX_METER_DIGITS = 7


def _code(text: str, prefix: str) -> str | None:
    """``prefix`` + 6 digits, written with that prefix or none, never with the other one."""
    for source in (text, _join_spaced_digits(text)):
        for match in _CODE.finditer(source):
            if (match.group(1) or "").replace(" ", "").upper() in ("", prefix):
                return prefix + match.group(2)
    return None


def customer_code(text: str) -> str | None:
    """``CL`` + 6 digits from "CL482913", "cl-482913" or "4 8 2 9 1 3" (digits spoken apart)."""
    return _code(text, "CL")


def ticket_number(text: str) -> str | None:
    return _code(text, "TK")


def postcode(text: str) -> str | None:
    matches = _POSTCODE.findall(text) or _POSTCODE.findall(_join_spaced_digits(text))
    return matches[0] if len(matches) == 1 else None


def meter_reading(text: str) -> int | None:
    """The reading when the text holds exactly one group of digits (spaces between digits ok)."""
    groups = _DIGIT_GROUP.findall(_join_spaced_digits(text))
    if len(groups) != 1 or len(groups[0]) > MAX_METER_DIGITS:
        return None
    return int(groups[0])


def contact(text: str) -> tuple[str, str] | None:
    """``("email", address)`` or ``("address", text)`` for a plausible postal address."""
    stripped = text.strip()
    found = _EMAIL_IN_TEXT.search(stripped)
    if found and _EMAIL.match(found.group(0)):
        return "email", found.group(0).lower()
    if "@" in stripped:
        return None
    words = stripped.split()
    if len(words) >= 3 and any(c.isdigit() for c in stripped) and len(stripped) <= 200:
        return "address", stripped
    return None


def _join_spaced_digits(text: str) -> str:
    """ "4 8 2 9 1 3" -> "482913": recognisers and people often say digits one by one."""
    return re.sub(r"(?<=\d)[ .-](?=\d)", "", text)
