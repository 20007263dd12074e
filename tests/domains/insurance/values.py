"""Aurora's values as customers type, say or key them: policy and claim numbers, dates of birth,
the description of what happened. Each parser returns the canonical form or None."""

from __future__ import annotations

import re
from datetime import date

POLICY_PREFIX = "POL"
POLICY_DIGITS = 7
CLAIM_PREFIX = "SX"
CLAIM_DIGITS = 6
OLDEST_BIRTH_YEAR = 1900
MIN_DESCRIPTION_WORDS = 4

# the number with or without its prefix, digits possibly spaced out as speech recognisers write
# them; never the tail of a longer number
_NOT_INSIDE = r"(?<!\w)(?<!\d\s)"
_POLICY = re.compile(
    _NOT_INSIDE + rf"(?:pol(?:izza)?)?[\s.:-]*((?:\d\s?){{{POLICY_DIGITS - 1}}}\d)(?!\s?\d)",
    re.I,
)
_CLAIM = re.compile(
    _NOT_INSIDE + rf"(?:sx|sinistro)?[\s.:-]*((?:\d\s?){{{CLAIM_DIGITS - 1}}}\d)(?!\s?\d)",
    re.I,
)
_NUMERIC_DATE = re.compile(r"(?<!\d)(\d{1,2})\s?[/.-]\s?(\d{1,2})\s?[/.-]\s?(\d{4})(?!\d)")
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_KEYED_DATE = re.compile(r"^\s*(\d{2})(\d{2})(\d{4})\s*$")  # DDMMYYYY, from the phone keys
_MONTHS = {
    **{
        m: i
        for i, m in enumerate(
            (
                "gennaio febbraio marzo aprile maggio giugno luglio agosto "
                "settembre ottobre novembre dicembre"
            ).split(),
            start=1,
        )
    },
    **{
        m: i
        for i, m in enumerate(
            (
                "january february march april may june july august "
                "september october november december"
            ).split(),
            start=1,
        )
    },
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DAY_MONTH_YEAR = re.compile(
    rf"(?<!\d)(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH})\s*,?\s+(\d{{4}})(?!\d)", re.I
)
_MONTH_DAY_YEAR = re.compile(
    rf"\b({_MONTH})\s+(\d{{1,2}})(?:st|nd|rd|th)?\s*,?\s+(\d{{4}})(?!\d)", re.I
)


def policy_number(raw: str) -> str | None:
    """``POL`` + 7 digits, from "POL4471203", "pol-447 1203", or the 7 digits alone."""
    found = _POLICY.search(raw)
    return POLICY_PREFIX + re.sub(r"\s", "", found.group(1)) if found else None


def claim_number(raw: str) -> str | None:
    """``SX`` + 6 digits, from "SX240117", "sx 240117", "sinistro 240117" or the digits alone."""
    found = _CLAIM.search(raw)
    return CLAIM_PREFIX + re.sub(r"\s", "", found.group(1)) if found else None


def birth_date(raw: str, today: date | None = None) -> str | None:
    """A date of birth as ``YYYY-MM-DD``, from "12/03/1985", "12 marzo 1985", "March 12, 1985",
    "1985-03-12" or the keys 12031985; None if there is none or it cannot be one."""
    text = raw.strip().lower()
    parts: tuple[int, int, int] | None = None
    if m := _KEYED_DATE.match(text) or _NUMERIC_DATE.search(text):
        parts = int(m.group(3)), int(m.group(2)), int(m.group(1))
    elif m := _ISO_DATE.search(text):
        parts = int(m.group(1)), int(m.group(2)), int(m.group(3))
    elif m := _DAY_MONTH_YEAR.search(text):
        parts = int(m.group(3)), _MONTHS[m.group(2)], int(m.group(1))
    elif m := _MONTH_DAY_YEAR.search(text):
        parts = int(m.group(3)), _MONTHS[m.group(1)], int(m.group(2))
    if parts is None:
        return None
    try:
        born = date(*parts)
    except ValueError:
        return None
    if born.year < OLDEST_BIRTH_YEAR or born > (today or date.today()):
        return None
    return born.isoformat()


def description(raw: str) -> str | None:
    """What happened, in the customer's words: at least a short sentence."""
    text = " ".join(raw.split())
    return text if len(re.findall(r"\w+", text)) >= MIN_DESCRIPTION_WORDS else None
