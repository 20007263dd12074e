"""Language detection on single sentences and on the held-out NLU data of both languages."""

from __future__ import annotations

import pytest

from bot.config.settings import PROJECT_ROOT
from bot.conversation.language import GENERIC, SUPPORTED
from bot.nlu.evaluation import load_examples
from bot.runtime import language_detector

NLU_DATA = PROJECT_ROOT / "nlu_data"
HELDOUT_DIR = NLU_DATA / "heldout"
MAX_WRONG_SHARE = 0.05
SAMPLE = language_detector(NLU_DATA, SUPPORTED)  # the sample pack's vocabulary added


def detect_language(text: str) -> str | None:
    return SAMPLE.detect(text)


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


@pytest.mark.parametrize(
    ("text", "language"),
    [("quanto devo pagare sulla bolletta", "it"), ("what is the reading on the meter", "en")],
)
def test_a_packs_vocabulary_is_evidence_its_function_words_alone_are_not(
    text: str, language: str
) -> None:
    assert SAMPLE.detect(text) == language
    # "bolletta" and "meter" are the sample's words, not the languages': taken away, the rest
    # of these sentences still decides, but the domain words alone do not
    word = "bolletta" if language == "it" else "meter"
    assert GENERIC.detect(word) is None
    assert SAMPLE.detect(word) == language
