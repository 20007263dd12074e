"""Language detection on single sentences and on the held-out NLU data of both languages."""

from __future__ import annotations

import pytest

from bot.config import PROJECT_ROOT
from bot.core.language import SUPPORTED, detect_language
from bot.nlu.evaluation import load_examples

HELDOUT_DIR = PROJECT_ROOT / "nlu_data" / "heldout"
MAX_WRONG_SHARE = 0.05


@pytest.mark.parametrize(
    "text",
    [
        "Buongiorno, vorrei sapere quanto devo pagare sulla bolletta",
        "non funziona la luce in casa da stamattina",
        "posso parlare con un operatore?",
        "Perché mi avete addebitato due volte?",
    ],
)
def test_detect_language_recognises_italian(text: str) -> None:
    assert detect_language(text) == "it"


@pytest.mark.parametrize(
    "text",
    [
        "I would like to pay my bill",
        "Hello, the power is out in my street",
        "Can I speak to an agent please?",
        "What is the reading on my meter?",
    ],
)
def test_detect_language_recognises_english(text: str) -> None:
    assert detect_language(text) == "en"


@pytest.mark.parametrize("text", ["l'ultima bolletta", "dell'utenza", "c'è un guasto"])
def test_detect_language_counts_elisions_as_italian(text: str) -> None:
    assert detect_language(text) == "it"


@pytest.mark.parametrize("text", ["", "12345", "CL100001", "CL100001 20121", "+39 02 5550 1001"])
def test_detect_language_is_none_for_codes_and_digits(text: str) -> None:
    assert detect_language(text) is None


@pytest.mark.parametrize("language", SUPPORTED)
def test_detect_language_rarely_picks_the_other_language_on_heldout_data(language: str) -> None:
    examples = load_examples(HELDOUT_DIR / f"{language}.yml")
    assert len(examples) >= 50
    assert all("](" not in text for text, _ in examples)

    detected = [detect_language(text) for text, _ in examples]
    wrong = [
        text for (text, _), d in zip(examples, detected, strict=True) if d not in (language, None)
    ]

    assert len(wrong) / len(examples) <= MAX_WRONG_SHARE, wrong
    # None means "no evidence"; most sentences must still give some.
    assert detected.count(language) > len(examples) // 2
