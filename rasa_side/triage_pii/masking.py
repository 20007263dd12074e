"""Masking of personal data in stored transcripts, handoff envelopes and logs.

``redact`` runs on every stored message, so it is a handful of linear regular-expression passes
with small, bounded checks on each candidate. The passes run in this order, each on the output of
the one before, so that a stronger, checksummed identifier is masked before a looser rule could
take its digits for something else:

1. E-mail addresses keep their first character and the domain: ``m***@example.com``.
2. IBANs (ISO 13616): country code, two check digits and a BBAN, written compact or in groups of
   four separated by single spaces, in any case. Only candidates of a country that issues IBANs
   that pass the mod-97 check (and, for Italy, the 27-character ``IT`` + 2 digits + CIN letter +
   10 digits + 12 letters/digits layout) are masked: a customer code and a ticket number side by
   side (``CL100014 TK123456``) pass the check one time in 97, but ``CL`` issues no IBAN.
   The country code and the last four characters stay, the spaces go:
   ``IT60 X054 2811 1010 0000 0123 456`` -> ``IT*********************3456``.
3. Codici fiscali: 16 characters (6 letters, 2 digits, month letter, 2 digits, letter, 3 digits,
   check letter; the omocodia letters ``LMNPQRSTUV`` may stand for digits), in any case, with a
   valid check letter (the official odd/even table). Everything but the check letter is hidden:
   ``RSSMRA85T10A562S`` -> ``***************S``.
4. Payment cards: 13-19 digits passing the Luhn check, written compact or in groups split by
   spaces or by dashes (the same separator throughout, a first group of 4 digits, then groups of
   3-6 digits, as cards are printed). A number starting with ``0`` or with ``+`` is never a card.
   The last four digits stay, separators go: ``4111 1111 1111 1111`` -> ``************1111``.
   Cards are looked for first in a run of digits, phone numbers only in what is left.
5. Phone numbers keep their last two digits, everything else in the number (``+``, brackets,
   separators) goes: ``+39 333 123 4567`` -> ``**********67``. A number is phone-like when it is:

   * a compact run of 9 or more digits, as before (any long number: phone, card failing Luhn,
     account);
   * an international number: ``+`` or ``00`` and a country code, then 9-15 digits in all after
     the ``+``/``00`` (15 is the E.164 maximum; with country code ``1`` exactly 11);
   * an Italian mobile number: a group ``3xx`` followed by 6-7 more digits;
   * a landline number: an area code (``02``, ``06`` or ``0`` + 2-3 digits, optionally in
     brackets) followed by groups of at least 3 digits, 9-13 digits in all (so ``01.03.2026 10.30``
     is a date and a time);
   * digits said one by one, as speech recognisers write them (``3 3 3 1 2 3 4 5 6 7``), when the
     digits read together follow the same prefixes (``3`` with 9-10 digits, ``0`` + area code with
     9-13, ``00`` + country code); ``2 0 1 2 1 1 2 8 7 3`` stays.

   Groups are split by a space, ``-``, `` - ``, ``.`` or ``/``; a second number inside the same run
   starts only after a space (``20121 333 1234567`` masks the mobile number and keeps the
   postcode).

What stays readable, on purpose: flows and agents need the business values customers type next to
their personal data. Codes glued to their letters (``CL100001``, ``TK123456``) are seen by no
digit rule; postcodes (``20121``), counts and readings (3-8 digits), amounts (``45,20 €``,
``1.234,56``), dates (``12/03/2026``, ``2026-03-12``) and times are short or made of short groups
without a phone prefix, so they are never a phone number even when typed one after the other:
``20121 12873`` (a postcode, then a number) is two values, not a ten-digit number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from string import ascii_uppercase
from typing import NamedTuple

# an address is not part of a longer run of "@"s ("0@0.0@0.0"), so masking is idempotent
_EMAIL = re.compile(r"(?<![\w.+@-])([\w.+-])[\w.+-]*@([\w-]+\.[\w.-]+)\b(?!@)")

# IBAN candidates: 2 letters, 2 digits, then the BBAN compact or in groups of four. The exact
# length and the check are verified in code, on the longest prefix that ends at a space.
_IBAN = re.compile(
    r"(?<!\w)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?!\w)", re.IGNORECASE
)
# Countries of the IBAN registry (SWIFT, ISO 13616), with those that issue IBANs outside it
# (experimental or partial): a candidate from any other country code is not an IBAN.
_IBAN_COUNTRIES = frozenset(
    "AD AE AL AO AT AZ BA BE BF BG BH BI BJ BR BY CF CG CH CI CM CR CV CY CZ DE DJ DK DO DZ EE "
    "EG ES FI FK FO FR GA GB GE GI GL GQ GR GT GW HN HR HU IE IL IQ IR IS IT JO KM KW KZ LB LC "
    "LI LT LU LV LY MA MC MD ME MG MK ML MN MR MT MU MZ NE NI NL NO OM PK PL PS PT QA RO RS RU "
    "SA SC SD SE SI SK SM SN SO ST SV TD TG TL TN TR UA VA VG XK YE".split()
)
_IBAN_IT = re.compile(r"IT[0-9]{2}[A-Z][0-9]{10}[A-Z0-9]{12}")
_IBAN_MIN_LENGTH = 15  # Norway
_IBAN_MAX_LENGTH = 34  # ISO 13616
_IBAN_KEEP = 4

_CF_DIGIT = "[0-9LMNPQRSTUV]"  # a digit, or its omocodia letter
_CF = re.compile(
    rf"(?<!\w)[A-Z]{{6}}{_CF_DIGIT}{{2}}[ABCDEHLMPRST]{_CF_DIGIT}{{2}}[A-Z]{_CF_DIGIT}{{3}}[A-Z]"
    r"(?!\w)",
    re.IGNORECASE,
)
# Values of the characters in odd positions (1st, 3rd, ... 15th) for the check letter; a digit
# counts as the letter in its place (0 as A, 9 as J). In even positions a digit counts its value
# and a letter its place in the alphabet (A = 0).
_CF_ODD_LETTERS = "1 0 5 7 9 13 15 17 19 21 2 4 18 20 11 3 6 8 12 14 16 10 22 25 24 23"  # A-Z
_CF_ODD = dict(zip(ascii_uppercase, map(int, _CF_ODD_LETTERS.split()), strict=True))
_CF_ODD |= {str(value): _CF_ODD[letter] for value, letter in enumerate("ABCDEFGHIJ")}

# A run of digit groups: an optional "+" or a bracketed first group, then groups split by one
# separator each. Never glued to a word (CL100001, TK123456) nor to an earlier mask.
_NUMBER_RUN = re.compile(
    r"(?<![\w*])(?:\+|(\())?[0-9]+(?(1)\) ?[0-9]+)(?:(?: - |[ \u00a0./-])[0-9]+)*(?!\w)"
)
_DIGITS = re.compile(r"[0-9]+")
_SPACES = (" ", "\u00a0")
_CARD_SEPARATORS = (" ", "-")
_CARD_MIN_DIGITS, _CARD_MAX_DIGITS = 13, 19
_CARD_KEEP = 4
_PHONE_KEEP = 2
_LONG_RUN_DIGITS = 9
_MOBILE_PREFIX = re.compile(r"3[0-9]{2}")
_LANDLINE_PREFIX = re.compile(r"0(?:[26]|[1-9][0-9]{1,2})")  # 02, 06 or 3-4 digits
_INTERNATIONAL_PREFIX = re.compile(r"00(?:[2-9][0-9]{0,2}|1)?")


class _Group(NamedTuple):
    """Digits of a run between two separators, with offsets in the run."""

    digits: str
    start: int
    end: int
    separator: str  # text between the previous group and this one ("" for the first)
    spoken: bool  # single digits said one by one, merged: "3 3 3" -> "333"


def redact(text: str) -> str:
    """``text`` with e-mail addresses, IBANs, codici fiscali, card and phone numbers masked."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    text = _mask_ibans(text)
    text = _CF.sub(_mask_codice_fiscale, text)
    return _NUMBER_RUN.sub(_mask_number_run, text)


# what ``redact`` leaves of an address (``m***@example.com``), or of a number: the stars, the
# letters kept before them (an IBAN's country) and the characters kept after (a card's last four,
# a codice fiscale's check letter); nothing of the text around it
_MASKED_SPAN = re.compile(
    r"[^\s*@]?\*{2,}@[\w.-]*\w|(?<![A-Za-z0-9])[A-Za-z]{0,2}\*{2,}[A-Za-z0-9]{0,4}"
)
HIDDEN = "***"


def hide_masked(text: str) -> str:
    """``text``, already redacted, with every masked span reduced to ``***``.

    What ``redact`` leaves visible (a card's last four digits, an e-mail's first letter and
    domain) helps a person reading a transcript but must reach no entity extractor or slot
    mapping: ``************1111`` read as a meter reading of 1111 is wrong, and the tail is
    still personal data. The NLU is sent this form."""
    return _MASKED_SPAN.sub(HIDDEN, text)


# IBAN


def _mask_ibans(text: str) -> str:
    pieces: list[str] = []
    copied = position = 0
    while (match := _IBAN.search(text, position)) is not None:
        found = _iban_prefix(match.group(0))
        if found is None:
            position = match.start() + 1  # an IBAN may still start later inside the candidate
            continue
        mask, length = found
        pieces += [text[copied : match.start()], mask]
        copied = position = match.start() + length
    pieces.append(text[copied:])
    return "".join(pieces)


def _iban_prefix(candidate: str) -> tuple[str, int] | None:
    """The mask and length of the longest valid IBAN that starts ``candidate`` and ends at a space.

    The candidate may have swallowed a following word of four letters or digits ("... 7034 ciao").
    """
    end = len(candidate)
    while end >= _IBAN_MIN_LENGTH:
        compact = candidate[:end].replace(" ", "")
        if _iban_valid(compact.upper()):
            hidden = len(compact) - 2 - _IBAN_KEEP
            return f"{compact[:2]}{'*' * hidden}{compact[-_IBAN_KEEP:]}", end
        end = candidate.rfind(" ", 0, end)
    return None


def _iban_valid(iban: str) -> bool:
    """ISO 13616 check on an upper-case IBAN without spaces."""
    if not _IBAN_MIN_LENGTH <= len(iban) <= _IBAN_MAX_LENGTH or not "02" <= iban[2:4] <= "98":
        return False
    if iban[:2] not in _IBAN_COUNTRIES:
        return False
    if iban.startswith("IT") and _IBAN_IT.fullmatch(iban) is None:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# Codice fiscale


def _mask_codice_fiscale(match: re.Match[str]) -> str:
    code = match.group(0)
    if not _codice_fiscale_valid(code.upper()):
        return code
    return "*" * (len(code) - 1) + code[-1]


def _codice_fiscale_valid(code: str) -> bool:
    """Check letter of an upper-case, well-formed codice fiscale (odd/even table, mod 26)."""
    total = 0
    for index, char in enumerate(code[:15]):
        if index % 2 == 0:  # 1st, 3rd, ... character: odd position
            total += _CF_ODD[char]
        else:
            total += int(char) if char.isdigit() else ord(char) - ord("A")
    return chr(ord("A") + total % 26) == code[15]


# Cards and phone numbers


def _mask_number_run(match: re.Match[str]) -> str:
    run = match.group(0)
    lead = run[0] if run[0] in "+(" else ""
    groups = _groups(run)
    pieces: list[str] = []
    copied = 0
    for first, end, keep in _number_spans(groups, lead):
        # The mask swallows a leading "+", and the brackets of an area code it covers whole.
        takes_lead = first == 0 and (lead == "+" or (lead == "(" and end > 1))
        start = 0 if takes_lead else groups[first].start
        digits = "".join(group.digits for group in groups[first:end])
        pieces += [run[copied:start], "*" * (len(digits) - keep) + digits[-keep:]]
        copied = groups[end - 1].end
    pieces.append(run[copied:])
    return "".join(pieces)


def _groups(run: str) -> list[_Group]:
    found = [(match.group(0), match.start(), match.end()) for match in _DIGITS.finditer(run)]
    groups: list[_Group] = []
    index = 0
    while index < len(found):
        digits, start, _ = found[index]
        separator = run[found[index - 1][2] : start] if index else ""
        last = index + 1
        if len(digits) == 1:  # digits said one by one: "3 3 3 1 2 3" -> "333123"
            while (
                last < len(found)
                and len(found[last][0]) == 1
                and run[found[last - 1][2] : found[last][1]] in _SPACES
            ):
                last += 1
        spoken = last - index > 1
        digits = "".join(item[0] for item in found[index:last]) if spoken else digits
        groups.append(_Group(digits, start, found[last - 1][2], separator, spoken))
        index = last
    return groups


def _number_spans(groups: Sequence[_Group], lead: str) -> list[tuple[int, int, int]]:
    """``(first group, end group, digits kept)`` of the cards, then of the phones between them."""
    cards: list[tuple[int, int, int]] = []
    index = 0
    while index < len(groups):
        end = _card_end(groups, index, lead)
        if end is None:
            index += 1
        else:
            cards.append((index, end, _CARD_KEEP))
            index = end
    spans: list[tuple[int, int, int]] = []
    index = 0
    for card in [*cards, (len(groups), len(groups), _CARD_KEEP)]:
        while index < card[0]:
            end = _phone_end(groups, index, card[0], lead)
            if end is None:
                index += 1
            else:
                spans.append((index, end, _PHONE_KEEP))
                index = end
        if card[0] < len(groups):
            spans.append(card)
        index = card[1]
    return spans


def _starts_number(groups: Sequence[_Group], index: int) -> bool:
    """A number of several groups starts the run or follows a space, not a dash, dot or slash."""
    return index == 0 or groups[index].separator in _SPACES


def _card_end(groups: Sequence[_Group], index: int, lead: str) -> int | None:
    first = groups[index].digits
    if first.startswith("0") or (index == 0 and lead == "+"):
        return None
    if len(first) >= _CARD_MIN_DIGITS:
        valid = len(first) <= _CARD_MAX_DIGITS and _luhn_valid(first)
        return index + 1 if valid else None
    if len(first) != 4 or index + 1 == len(groups) or not _starts_number(groups, index):
        return None
    separator = groups[index + 1].separator
    if separator not in _CARD_SEPARATORS:
        return None
    digits, end = first, None
    for position in range(index + 1, len(groups)):
        group = groups[position]
        if group.separator != separator or not 3 <= len(group.digits) <= 6:
            break
        digits += group.digits
        if len(digits) > _CARD_MAX_DIGITS:
            break
        if len(digits) >= _CARD_MIN_DIGITS and _luhn_valid(digits):
            end = position + 1
    return end


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _phone_end(groups: Sequence[_Group], index: int, stop: int, lead: str) -> int | None:
    """End (at most ``stop``) of the longest phone number starting at ``groups[index]``."""
    if _starts_number(groups, index):
        end = _grouped_phone_end(groups, index, stop, international=index == 0 and lead == "+")
        if end is not None:
            return end
    return index + 1 if _phone_like_alone(groups[index]) else None


def _grouped_phone_end(
    groups: Sequence[_Group], index: int, stop: int, *, international: bool
) -> int | None:
    first = groups[index].digits
    if international:
        country = first[0]
        return _longest(groups, index, stop, lambda n: _international_length_ok(country, n))
    if _INTERNATIONAL_PREFIX.fullmatch(first):
        following = "".join(group.digits for group in groups[index : min(index + 2, stop)])
        if len(following) < 3:
            return None
        country = following[2]
        return _longest(groups, index, stop, lambda n: _international_length_ok(country, n - 2))
    if _MOBILE_PREFIX.fullmatch(first):
        return _longest(groups, index, stop, lambda n: 9 <= n <= 10)
    if _LANDLINE_PREFIX.fullmatch(first):
        return _longest(groups, index, stop, lambda n: 9 <= n <= 13, min_group=3)
    return None


def _international_length_ok(country: str, digits: int) -> bool:
    """Digits after ``+``/``00``: the North American plan has 11, the others 9 up to E.164's 15."""
    return digits == 11 if country == "1" else 9 <= digits <= 15


def _longest(
    groups: Sequence[_Group],
    index: int,
    stop: int,
    length_ok: Callable[[int], bool],
    min_group: int = 1,
) -> int | None:
    """End (at most ``stop``) of the most groups from ``index`` whose digit count is ok."""
    total, end = 0, None
    for position in range(index, stop):
        digits = groups[position].digits
        if position > index and len(digits) < min_group:
            break
        total += len(digits)
        if total > 17:  # longer than any length accepted above ("00" + 15)
            break
        if length_ok(total):
            end = position + 1
    return end


def _phone_like_alone(group: _Group) -> bool:
    digits = group.digits
    if not group.spoken:
        return len(digits) >= _LONG_RUN_DIGITS
    if _MOBILE_PREFIX.match(digits):
        return 9 <= len(digits) <= 10
    if _LANDLINE_PREFIX.match(digits):
        return 9 <= len(digits) <= 13
    if digits.startswith("00") and len(digits) > 2 and digits[2] != "0":
        return _international_length_ok(digits[2], len(digits) - 2)
    return False
