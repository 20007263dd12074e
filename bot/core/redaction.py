"""Masking of personal data in transcripts and envelopes (e-mail, phone and card numbers).

A first layer; the web-chat work extends it (IBAN, codice fiscale, Luhn-checked cards).
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"\b([\w.+-])[\w.+-]*@([\w-]+\.[\w.-]+)\b")
_LONG_DIGITS = re.compile(r"(?<![\w])\+?\d[\d .-]{8,}\d(?![\w])")


def _mask_digits(match: re.Match[str]) -> str:
    raw = match.group(0)
    digits = [c for c in raw if c.isdigit()]
    if len(digits) < 9:
        return raw
    return "*" * (len(digits) - 2) + "".join(digits[-2:])


def redact(text: str) -> str:
    """``text`` with e-mail addresses and phone/card-like digit runs masked."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _LONG_DIGITS.sub(_mask_digits, text)
