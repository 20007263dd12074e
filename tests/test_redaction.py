"""Masking of e-mail addresses, phone and card numbers; business values stay readable."""

from __future__ import annotations

import pytest

from bot.core.redaction import redact


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


def test_redact_masks_card_number() -> None:
    redacted = redact("carta 4111 1111 1111 1111 scadenza 12/27")

    assert redacted == "carta **************11 scadenza 12/27"
    assert "4111" not in redacted


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
