"""SIP header fields (RFC 3261 §7.3): names, compact forms and the ordered, mutable ``Headers``.

``Headers`` is an ordered list of (name, value) with case-insensitive lookup. Names are stored
in their canonical spelling (``call-id``, ``i`` and ``CALL-ID`` are all ``Call-ID``); unknown
names keep the spelling they arrived in. Values are raw text with line folding already replaced
by a space; typed views (``Via``, ``NameAddr``, ``CSeq``...) live in ``voice.sip.fields``.

Headers whose grammar is a comma-separated list (``LIST_HEADERS``: Via, Route, Contact, Allow,
Supported...) hold one entry per element, however they arrived: ``Via: a, b`` on one line and
two ``Via`` lines give the same two entries, and ``add("Allow", "INVITE, ACK")`` adds two. On the
wire, adjacent elements of one list header are written back on one line. Commas inside quoted
strings or ``<URI>`` never split. Every other header, known or not, is one opaque value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from voice.errors import SipParseError
from voice.sip.grammar import is_balanced, is_token, split_unquoted

COMPACT_FORMS: Final[Mapping[str, str]] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES: Final = (
    "Accept Accept-Contact Accept-Encoding Accept-Language Alert-Info Allow Allow-Events "
    "Authentication-Info Authorization Call-ID Call-Info Contact Content-Disposition "
    "Content-Encoding Content-Language Content-Length Content-Type CSeq Date Error-Info Event "
    "Expires From Identity Identity-Info In-Reply-To Max-Forwards MIME-Version Min-Expires "
    "Min-SE Organization P-Asserted-Identity P-Preferred-Identity Path Priority Privacy "
    "Proxy-Authenticate Proxy-Authorization Proxy-Require RAck Reason Record-Route Refer-To "
    "Referred-By Reject-Contact Replaces Reply-To Request-Disposition Require Retry-After Route "
    "RSeq Server Service-Route Session-Expires Subject Subscription-State Supported Timestamp "
    "To Unsupported User-Agent User-to-User Via Warning WWW-Authenticate"
).split()

# Grammars of the form `Name HCOLON element *(COMMA element)` (RFC 3261 §20 and extensions).
LIST_HEADERS: Final = frozenset(
    (
        "Accept Accept-Contact Accept-Encoding Accept-Language Alert-Info Allow Allow-Events "
        "Call-Info Contact Content-Encoding Content-Language Error-Info In-Reply-To "
        "P-Asserted-Identity P-Preferred-Identity Path Proxy-Require Reason Record-Route "
        "Reject-Contact Require Route Service-Route Supported Unsupported User-to-User Via Warning"
    ).split()
)

_CANONICAL: Final[Mapping[str, str]] = {
    **{name.lower(): name for name in _KNOWN_NAMES},
    **COMPACT_FORMS,
}
_LIST_KEYS: Final = frozenset(name.lower() for name in LIST_HEADERS)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded); unknown ones as given."""
    return _CANONICAL.get(name.lower(), name)


class Headers:
    """The ordered header fields of one message; see the module docstring for the model.

    Lookups take any spelling or compact form of a name. ``add`` and ``set`` raise ValueError
    for a name that is not a token or a value with CR or LF, so no header can be injected.
    """

    __slots__ = ("_entries",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        # (lower-cased canonical name, canonical name, value)
        self._entries: list[tuple[str, str, str]] = []
        for name, value in fields:
            self.add(name, value)

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or None if it is absent."""
        key = canonical_name(name).lower()
        return next((value for k, _, value in self._entries if k == key), None)

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order (one per element for list headers)."""
        key = canonical_name(name).lower()
        return [value for k, _, value in self._entries if k == key]

    def add(self, name: str, value: str) -> None:
        """Append ``name: value`` after every existing field."""
        self._entries.extend(_new_entries(name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field by ``value``, where the first one was (else at the end)."""
        entries = _new_entries(name, value)
        key = entries[0][0]
        index = next((i for i, (k, _, _) in enumerate(self._entries) if k == key), None)
        self.remove(name)
        if index is None:
            self._entries.extend(entries)
        else:
            self._entries[index:index] = entries

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first ``name`` value only (e.g. the top Via); KeyError if it is absent."""
        replacement = _new_entries(name, value)
        if len(replacement) != 1:
            raise ValueError("replace_first takes one element of a list header, not a list")
        key = replacement[0][0]
        for index, (k, _, _) in enumerate(self._entries):
            if k == key:
                self._entries[index] = replacement[0]
                return
        raise KeyError(replacement[0][1])

    def remove(self, name: str) -> None:
        """Remove every ``name`` field; nothing happens if there is none."""
        key = canonical_name(name).lower()
        self._entries = [entry for entry in self._entries if entry[0] != key]

    def copy(self) -> Headers:
        """An independent copy (values are strings, so a shallow copy is enough)."""
        clone = Headers()
        clone._entries = list(self._entries)
        return clone

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(k == key for k, _, _ in self._entries)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((canonical, value) for _, canonical, value in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._entries] == [(k, v) for k, _, v in other._entries]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


def parse_header_lines(lines: Iterable[str]) -> Headers:
    """Headers from unfolded ``Name: value`` lines; SipParseError names the bad line's number."""
    headers = Headers()
    entries = headers._entries
    for number, line in enumerate(lines, start=1):
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise SipParseError(f"header line {number} is not 'name: value'")
        canonical = _CANONICAL.get(name.lower(), name)
        key = canonical.lower()
        value = value.strip(" \t")
        if key in _LIST_KEYS:
            entries.extend((key, canonical, element) for element in _split_list(value))
        else:
            entries.append((key, canonical, value))
    return headers


def format_header_lines(headers: Headers) -> list[str]:
    """``Name: value`` lines for the wire, adjacent elements of a list header joined by commas."""
    lines: list[str] = []
    pending_key = ""
    for key, canonical, value in headers._entries:
        # Join only elements that cannot change meaning once glued (balanced quotes and <>);
        # an empty element keeps its own line, as it arrived.
        joinable = key in _LIST_KEYS and value != "" and is_balanced(value)
        if joinable and key == pending_key:
            lines[-1] += ", " + value
            continue
        lines.append(f"{canonical}: {value}")
        pending_key = key if joinable else ""
    return lines


def _split_list(value: str) -> list[str]:
    if "," not in value:
        return [value]
    elements = [element.strip(" \t") for element in split_unquoted(value, ",")]
    # Empty elements are dropped (`a,,b` is `a, b`); an empty header stays one empty value.
    return [element for element in elements if element] or [""]


def _check_value(value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError("a header value cannot hold CR or LF")


def _new_entries(name: str, value: str) -> list[tuple[str, str, str]]:
    if not is_token(name):
        raise ValueError("a header name must be a token")
    _check_value(value)
    canonical = canonical_name(name)
    key = canonical.lower()
    value = value.strip(" \t")
    if key in _LIST_KEYS:
        return [(key, canonical, element) for element in _split_list(value)]
    return [(key, canonical, value)]
