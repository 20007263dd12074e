"""The lexical rules of RFC 3261 §25.1 that every header grammar is built from.

Tokens, quoted strings, bounded decimal numbers, and splitting a value on a separator that is
not inside a quoted string or a ``<URI>``. Pure functions; the callers turn a failure into a
``SipParseError`` that names the header, never the value (values carry names and numbers).
"""

from __future__ import annotations

import re
from typing import Final

from voice.errors import SipParseError

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE; qdtext excludes CTLs other than HTAB,
# a quoted-pair may escape anything but CR and LF.
_QUOTED: Final = re.compile(r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n])*)"')
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_ESCAPE: Final = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_DIGITS: Final = re.compile(r"[0-9]+")


def is_token(text: str) -> bool:
    """Whether ``text`` is one RFC 3261 token (methods, header names, tags, branches...)."""
    return _TOKEN.fullmatch(text) is not None


def decimal(text: str, max_digits: int) -> int | None:
    """``text`` as a non-negative integer, or None if it is not 1..``max_digits`` ASCII digits.

    The digit bound keeps a hostile value from costing a huge int conversion (and from Python's
    4300-digit conversion limit, which raises a plain ValueError).
    """
    if len(text) > max_digits or _DIGITS.fullmatch(text) is None:
        return None
    return int(text)


def parse_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted string at ``text[start]``: its unescaped content and the index after it."""
    match = _QUOTED.match(text, start)
    if match is None:
        raise SipParseError("unterminated quoted string, or one with a control character")
    return _QUOTED_PAIR.sub(r"\1", match.group(1)), match.end()


def quote_string(text: str) -> str:
    """``text`` as a quoted-string, escaping quotes, backslashes and control characters."""
    if "\r" in text or "\n" in text:
        raise ValueError("a quoted string cannot hold CR or LF")
    return '"' + _NEEDS_ESCAPE.sub(lambda m: "\\" + m.group(0), text) + '"'


def split_unquoted(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` wherever it is outside a quoted string and outside ``<>``.

    Backslash escapes inside quotes are honoured. An unterminated quote or ``<`` runs to the end
    of the text, so the last part keeps it and a parser of that part reports the error.
    """
    if '"' not in text and "<" not in text:
        return text.split(separator)
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if in_quotes:
            if char == "\\":
                index += 1
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == separator and not in_angle:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def is_balanced(text: str) -> bool:
    """Whether ``text`` closes every quoted string and ``<`` it opens (so it can be joined)."""
    if '"' not in text and "<" not in text and ">" not in text:
        return True
    in_quotes = False
    in_angle = False
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if in_quotes:
            if char == "\\":
                index += 1
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        index += 1
    return not in_quotes and not in_angle
