"""Normalisation of the values customers type, say or key in during self-service flows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domains.energy.values import contact, customer_code, meter_reading, postcode, ticket_number

six_digits = st.text(alphabet="0123456789", min_size=6, max_size=6)


@pytest.mark.parametrize(
    "text",
    ["CL100001", "cl-100001", "cl 100001", "il mio codice è CL100001", "1 0 0 0 0 1", "100001"],
)
def test_customer_code_is_normalised_from_typed_or_spoken_forms(text: str) -> None:
    assert customer_code(text) == "CL100001"


@pytest.mark.parametrize("text", ["CL12345", "abc", "CL1234567", "", "CL 1 2 3 4 5"])
def test_customer_code_is_none_without_exactly_six_digits(text: str) -> None:
    assert customer_code(text) is None


def test_customer_code_is_none_when_digits_are_glued_to_a_word() -> None:
    assert customer_code("XY100001") is None


@pytest.mark.parametrize(
    "text",
    ["TK100001", "tk-100001", "tk 100001", "il numero della pratica è TK100001", "1 0 0 0 0 1"],
)
def test_ticket_number_is_normalised_from_typed_or_spoken_forms(text: str) -> None:
    assert ticket_number(text) == "TK100001"


@pytest.mark.parametrize("text", ["TK12345", "abc", "TK1234567", "CL100001"])
def test_ticket_number_is_none_without_a_valid_number(text: str) -> None:
    assert ticket_number(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20121", "20121"), ("il cap è 00184", "00184"), ("2 0 1 2 1", "20121")],
)
def test_postcode_is_found_when_text_holds_exactly_one(text: str, expected: str) -> None:
    assert postcode(text) == expected


@pytest.mark.parametrize("text", ["2012", "201211", "20121 e 00184", "abc", ""])
def test_postcode_is_none_when_absent_ambiguous_or_wrong_length(text: str) -> None:
    assert postcode(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("04521", 4521),
        ("la lettura è 12 873", 12873),
        ("1 2 8 7 3", 12873),
        ("segna 12.873", 12873),
        ("1234567", 1234567),
    ],
)
def test_meter_reading_joins_spaced_digits_into_one_number(text: str, expected: int) -> None:
    assert meter_reading(text) == expected


@pytest.mark.parametrize(
    "text", ["abc", "", "12 e 34", "ieri 4521 oggi 4600", "12345678", "la lettura è 1234 5678"]
)
def test_meter_reading_is_none_without_one_group_of_at_most_seven_digits(text: str) -> None:
    assert meter_reading(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mario.Rossi@Example.COM", "mario.rossi@example.com"),
        ("  la mia mail è Anna+bollette@Posta.IT grazie ", "anna+bollette@posta.it"),
    ],
)
def test_contact_finds_email_and_lowercases_it(text: str, expected: str) -> None:
    assert contact(text) == ("email", expected)


def test_contact_takes_a_street_with_number_as_address() -> None:
    assert contact("  Via Roma 12, Milano ") == ("address", "Via Roma 12, Milano")


@pytest.mark.parametrize("text", ["ciao", "mario@", "scrivete a mario@ grazie", "Via Roma Milano"])
def test_contact_is_none_without_email_or_plausible_address(text: str) -> None:
    assert contact(text) is None


def test_contact_rejects_an_overlong_address() -> None:
    assert contact("Via Roma 12 " + "molto " * 40) is None


@given(six_digits)
def test_prefixed_codes_round_trip_for_any_six_digits(digits: str) -> None:
    assert customer_code(f"CL{digits}") == f"CL{digits}"
    assert ticket_number(f"tk-{digits}") == f"TK{digits}"
