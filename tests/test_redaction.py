"""Masking of personal data (e-mail, IBAN, codice fiscale, card and phone numbers).

The business values flows and agents need (customer codes, ticket numbers, postcodes, meter
readings, amounts, dates, times) stay readable, alone or typed one after the other.

The checksummed examples were verified by hand, not only by the module under test:
- 4111 1111 1111 1111: Luhn sum 8 (undoubled 1s) + 14 (doubled 1s) + 8 (doubled 4) = 30;
  5500 0000 0000 0004: 4 + 5 + (5 * 2 = 10 -> 1) = 10. Changing the last digit breaks both.
- IT60 X054 2811 1010 0000 0123 456 and GB82 WEST 1234 5698 7654 32: the rearranged numbers
  ("X054...456" + "IT60" and "WEST...32" + "GB82", letters as 10-35) leave 1 modulo 97;
  BE68 5390 0754 7034 likewise.
- RSSMRA85T10A562S: odd positions R S R 8 T 0 5 2 = 8+12+8+19+14+1+13+5 = 80, even positions
  S M A 5 1 A 6 = 18+12+0+5+1+0+6 = 42, 122 mod 26 = 18 -> S. BNCGVN80A01H501J: 48 + 39 = 87,
  87 mod 26 = 9 -> J. VRDLRA90D45F205R: 84 + 37 = 121, mod 26 = 17 -> R. The omocode
  RSSMRA85T10A56NH (2 -> N in the 15th place, odd value 5 -> 20): 137 mod 26 = 7 -> H.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from triage_pii.masking import hide_masked, redact

# Independent helpers to build valid numbers for the property tests.


def _luhn_sum(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        doubled = int(char) * (2 if position % 2 else 1)
        total += doubled // 10 + doubled % 10
    return total


def _with_luhn_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if _luhn_sum(body + d) % 10 == 0)


def _iban(country: str, bban: str) -> str:
    number = int("".join(str(int(char, 36)) for char in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


# E-mail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mario.rossi@example.com", "m***@example.com"),
        ("scrivetemi a Anna+bollette@posta.example.it.", "scrivetemi a A***@posta.example.it."),
        ("a@b.it o z.z@c.com", "a***@b.it o z***@c.com"),
    ],
)
def test_redact_masks_email_keeping_first_letter_and_domain(text: str, expected: str) -> None:
    assert redact(text) == expected


# Phone numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+39 02 5550 1001", "**********01"),
        ("3331234567", "********67"),
        ("mi chiami al 333-123-4567 domani", "mi chiami al ********67 domani"),
        ("il fisso è 02.5550.1001.", "il fisso è ********01."),
    ],
)
def test_redact_masks_phone_numbers_keeping_last_two_digits(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+39 333 123 4567", "**********67"),
        ("0039 333 1234567", "************67"),
        ("333-1234567", "********67"),
        ("333 1234567", "********67"),
        ("333 123 45 67", "********67"),
        ("(333) 1234567", "********67"),
        ("02 1234 5678", "********78"),
        ("(02) 12345678", "********78"),
        ("02/12345678", "********78"),
        ("0823 123456", "********56"),
        ("+393331234567", "**********67"),
        ("+44 20 7946 0958", "**********58"),
        ("+1 212 555 0100", "*********00"),
        ("00 44 20 7946 0958", "************58"),
    ],
)
def test_phone_masked_keeping_last_two_digits_when_italian_or_international(
    text: str, expected: str
) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("il mio cellulare è +39 333 123 4567, grazie", "il mio cellulare è **********67, grazie"),
        (
            "please call me on +44 20 7946 0958 after 6pm",
            "please call me on **********58 after 6pm",
        ),
        ("cap 20121, telefono (02) 12345678", "cap 20121, telefono ********78"),
        ("20121 333 1234567", "20121 ********67"),
        ("333 1234567 12873", "********67 12873"),
    ],
)
def test_phone_masked_when_embedded_in_a_sentence_or_next_to_a_business_value(
    text: str, expected: str
) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tre tre tre: 3 3 3 1 2 3 4 5 6 7", "tre tre tre: ********67"),
        ("0 2 1 2 3 4 5 6 7 8", "********78"),
        ("0 0 3 9 3 3 3 1 2 3 4 5 6 7", "************67"),
        ("3 3 3 1234567", "********67"),
    ],
)
def test_phone_masked_when_digits_are_spoken_one_by_one(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", ["1234567890123", "123456789", "il codice 987654321 è scaduto"])
def test_long_digit_run_masked_as_phone_when_compact(text: str) -> None:
    redacted = redact(text)

    assert redacted != text
    assert not any(run in redacted for run in ("1234567", "9876543"))


# Cards


def test_redact_masks_card_number() -> None:
    redacted = redact("carta 4111 1111 1111 1111 scadenza 12/27")

    assert redacted == "carta ************1111 scadenza 12/27"
    assert "4111" not in redacted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111 1111 1111 1111", "************1111"),
        ("4111-1111-1111-1111", "************1111"),
        ("4111111111111111", "************1111"),
        ("5500 0000 0000 0004", "************0004"),
        ("5500000000000004", "************0004"),
        ("3782 822463 10005", "***********0005"),
        ("378282246310005", "***********0005"),
        ("3056 930902 5904", "**********5904"),
        ("6011 0000 0000 0004", "************0004"),
        ("4222222222222", "*********2222"),
    ],
)
def test_card_masked_keeping_last_four_digits_when_luhn_valid(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "ho pagato con la carta 5500 0000 0000 0004, scade il 12/27",
            "ho pagato con la carta ************0004, scade il 12/27",
        ),
        (
            "my card number is 4111-1111-1111-1111 and the CVV is 123",
            "my card number is ************1111 and the CVV is 123",
        ),
        ("carta 4111 1111 1111 1111 12/27", "carta ************1111 12/27"),
        ("cap 20121 4111 1111 1111 1111", "cap 20121 ************1111"),
    ],
)
def test_card_masked_when_embedded_in_a_sentence(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",
        "5500 0000 0000 0005",
        "4111-1111-1111-1121",
        "la carta 3782 822463 10006 non funziona",
    ],
)
def test_card_left_readable_when_grouped_and_luhn_fails(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4111111111111112", "**************12"), ("5500000000000005", "**************05")],
)
def test_card_masked_as_long_digit_run_when_compact_and_luhn_fails(
    text: str, expected: str
) -> None:
    assert redact(text) == expected


@given(st.text(alphabet="0123456789", min_size=14, max_size=14), st.sampled_from(" -"))
def test_card_masked_keeping_last_four_digits_for_any_luhn_valid_number(
    middle: str, separator: str
) -> None:
    number = _with_luhn_digit("4" + middle)
    grouped = separator.join(number[i : i + 4] for i in range(0, 16, 4))

    for written in (number, grouped):
        assert redact(f"carta {written} grazie") == f"carta {'*' * 12}{number[-4:]} grazie"


# IBAN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IT60 X054 2811 1010 0000 0123 456", "IT*********************3456"),
        ("IT60X0542811101000000123456", "IT*********************3456"),
        ("it60 x054 2811 1010 0000 0123 456", "it*********************3456"),
        ("GB82 WEST 1234 5698 7654 32", "GB****************5432"),
        ("GB82WEST12345698765432", "GB****************5432"),
        ("BE68 5390 0754 7034", "BE**********7034"),
        ("DE89 3704 0044 0532 0130 00", "DE****************3000"),
    ],
)
def test_iban_masked_keeping_country_and_last_four_when_check_digits_valid(
    text: str, expected: str
) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "il mio IBAN è IT60 X054 2811 1010 0000 0123 456, intestato a Mario",
            "il mio IBAN è IT*********************3456, intestato a Mario",
        ),
        (
            "please refund to GB82 WEST 1234 5698 7654 32 by Friday",
            "please refund to GB****************5432 by Friday",
        ),
        ("IBAN:IT60X0542811101000000123456.", "IBAN:IT*********************3456."),
        ("conto BE68 5390 0754 7034 ciao", "conto BE**********7034 ciao"),
        (
            "BE68 5390 0754 7034 IT60 X054 2811 1010 0000 0123 456",
            "BE**********7034 IT*********************3456",
        ),
    ],
)
def test_iban_masked_when_embedded_in_a_sentence(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "IT60 X054 2811 1010 0000 0123 457",
        "IT61X0542811101000000123456",
        "GB82 WEST 1234 5698 7654 33",
        "il mio IBAN è GB83WEST12345698765432",
        "BE68 5390 0754 7035",
    ],
)
def test_iban_left_readable_when_check_digits_fail(text: str) -> None:
    assert redact(text) == text


def test_iban_left_readable_when_italian_layout_is_wrong_despite_valid_check_digits() -> None:
    text = _iban("IT", "00542811101000000123456")  # a digit where the CIN letter goes

    assert text == "IT2500542811101000000123456"
    assert redact(text) == text


@given(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.text(alphabet="0123456789", min_size=10, max_size=10),
    st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=12, max_size=12),
    st.booleans(),
)
def test_iban_masked_for_any_valid_italian_iban(
    cin: str, bank_branch: str, account: str, spaced: bool
) -> None:
    iban = _iban("IT", cin + bank_branch + account)
    written = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if spaced else iban

    assert redact(f"IBAN {written} grazie") == f"IBAN IT{'*' * 21}{iban[-4:]} grazie"


# Codice fiscale


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RSSMRA85T10A562S", "***************S"),
        ("rssmra85t10a562s", "***************s"),
        ("BNCGVN80A01H501J", "***************J"),
        ("VRDLRA90D45F205R", "***************R"),
        ("RSSMRA85T10A56NH", "***************H"),
        ("il mio codice fiscale è RSSMRA85T10A562S.", "il mio codice fiscale è ***************S."),
        ("my tax code: BNCGVN80A01H501J, thanks", "my tax code: ***************J, thanks"),
    ],
)
def test_codice_fiscale_masked_except_check_letter_when_valid(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "RSSMRA85T10A562T",
        "RSSMRA85T10A563S",
        "codice fiscale BNCGVN80A01H501K",
        "RSSMRA85T10A56NS",
        "RSSMRA85Z10A562S",
    ],
)
def test_codice_fiscale_left_readable_when_check_letter_or_layout_is_wrong(text: str) -> None:
    assert redact(text) == text


# Order of the rules and values that stay


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IT60 X054 2811 1010 0000 0123 456", "IT*********************3456"),
        ("4111111111111111", "************1111"),
        ("0039 4111 1111 1111 1111", "0039 ************1111"),
    ],
)
def test_checksummed_identifiers_masked_before_phone_rules_when_both_could_apply(
    text: str, expected: str
) -> None:
    assert redact(text) == expected


def test_all_personal_data_masked_when_given_together() -> None:
    text = (
        "Sono Mario, CF RSSMRA85T10A562S, cliente CL100001, cap 20121, lettura 12873. "
        "Cell. +39 333 123 4567, mail mario.rossi@example.com, IBAN IT60 X054 2811 1010 0000 "
        "0123 456, carta 4111 1111 1111 1111. Pratica TK123456 del 12/03/2026 ore 10:30, "
        "importo 1.234,56 €."
    )

    assert redact(text) == (
        "Sono Mario, CF ***************S, cliente CL100001, cap 20121, lettura 12873. "
        "Cell. **********67, mail m***@example.com, IBAN IT*********************3456, "
        "carta ************1111. Pratica TK123456 del 12/03/2026 ore 10:30, "
        "importo 1.234,56 €."
    )


@pytest.mark.parametrize(
    "text",
    [
        "il mio codice è CL100001",
        "il cap è 20121",
        "la lettura è 12873",
        "ho pagato 123,45 € ma la bolletta era di 1.234,56 euro",
        "pratica TK100001 aperta il 12/03/2024",
        "codice CL100001, cap 20121, lettura 12873, importo 89,90 €",
    ],
)
def test_redact_leaves_codes_postcodes_readings_and_amounts_untouched(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "20121 12873",
        "cap 20121 lettura 12873",
        "20121-12873",
        "00118 123456",
        "lettura 12873 12874 12875",
        "CL100001 TK123456",
        "cl 100001",
        "1 0 0 0 0 1",
        "2 0 1 2 1 1 2 8 7 3",
        "45,20 €",
        "1.234,56",
        "12.345.678,90",
        "12/03/2026",
        "2026-03-12",
        "2026-03-12 12873",
        "01/03/2026 10:30",
        "il 01.03.2026 alle 10.30",
        "lettura del 12/03/2026: 12873",
        "the reading on 2026-03-12 at 10:30 was 12873",
        "ticket TK123456 for customer CL100001, postcode 20121",
    ],
)
def test_business_values_left_readable_when_typed_alone_or_together(text: str) -> None:
    assert redact(text) == text


# Italian postcodes run from 00010 to 98168; those starting with 00 are Rome's, up to 00199.
postcodes = st.one_of(st.integers(10, 199), st.integers(1000, 98168)).map(lambda n: f"{n:05d}")


@given(
    postcodes,
    st.integers(min_value=100, max_value=99_999_999).map(str),
    st.sampled_from(["{p} {r}", "{r} {p}", "cap {p} lettura {r}", "{p}, {r}"]),
)
def test_postcode_and_reading_left_readable_for_any_values(
    postcode: str, reading: str, template: str
) -> None:
    text = template.format(p=postcode, r=reading)

    assert redact(text) == text


@example("0@0.0@0.0")  # once masked as an address inside another
@given(st.text(alphabet="0123456789 +-./()@abcITX*", max_size=60))
def test_redact_is_idempotent_for_any_text(text: str) -> None:
    once = redact(text)

    assert redact(once) == once


@example(100014, 123456)  # passes the mod-97 check
@given(
    st.integers(min_value=100_000, max_value=999_999),
    st.integers(min_value=100_000, max_value=999_999),
)
def test_a_customer_code_and_a_ticket_side_by_side_are_never_an_iban(
    code: int, ticket: int
) -> None:
    # one pair in 97 passes the IBAN check digits; CL issues no IBAN
    text = f"CL{code} TK{ticket}"

    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "for_the_nlu"),
    [
        ("la carta 4111 1111 1111 1111, lettura 1234", "la carta ***, lettura 1234"),
        ("scrivi a mario.rossi@example.com, grazie", "scrivi a ***, grazie"),
        ("IBAN IT60 X054 2811 1010 0000 0123 456.", "IBAN ***."),
        ("CL100001,3331234567", "CL100001,***"),
        ("CL100001/+39 333 123 4567", "CL100001/***"),
        ("cf RSSMRA85T10A562S ok", "cf *** ok"),
        ("CL100001 lettura 4521", "CL100001 lettura 4521"),
    ],
)
def test_hide_masked_hides_each_masked_span_and_nothing_around_it(
    text: str, for_the_nlu: str
) -> None:
    assert hide_masked(redact(text)) == for_the_nlu


@given(st.text(alphabet="0123456789 +-./@abcITCLX", max_size=60))
def test_hide_masked_leaves_no_visible_tail_of_any_mask(text: str) -> None:
    masked = redact(text)
    hidden = hide_masked(masked)

    if "**" in masked:  # something was masked: no star run keeps a tail or an address
        assert re.search(r"\*\*\*[A-Za-z0-9@]", hidden) is None, hidden
