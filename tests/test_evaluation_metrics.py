"""The NLU evaluation arithmetic: scores, percentiles, example loading, pipeline naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config.settings import PROJECT_ROOT
from bot.nlu.evaluation import IntentScore, load_examples, percentile, pipeline_name, score


def test_score_is_perfect_for_perfect_predictions() -> None:
    pairs: list[tuple[str, str | None]] = [("greet", "greet"), ("goodbye", "goodbye")] * 3

    accuracy, macro_f1, per = score(pairs)

    assert accuracy == 1.0
    assert macro_f1 == 1.0
    assert per == {"goodbye": IntentScore(1.0, 1.0, 1.0, 3), "greet": IntentScore(1.0, 1.0, 1.0, 3)}


def test_score_matches_hand_computed_precision_recall_and_f1() -> None:
    pairs: list[tuple[str, str | None]] = [
        ("a", "a"),
        ("a", "a"),
        ("a", "b"),
        ("b", "b"),
        ("b", "a"),
        ("c", None),
    ]

    accuracy, macro_f1, per = score(pairs)

    # a: tp 2, predicted 3, gold 3 -> P 2/3, R 2/3, F1 2/3
    # b: tp 1, predicted 2, gold 2 -> P 1/2, R 1/2, F1 1/2
    # c: tp 0, predicted 0, gold 1 -> P 0, R 0, F1 0
    assert accuracy == pytest.approx(3 / 6)
    assert per["a"] == IntentScore(0.6667, 0.6667, 0.6667, 3)
    assert per["b"] == IntentScore(0.5, 0.5, 0.5, 2)
    assert per["c"] == IntentScore(0.0, 0.0, 0.0, 1)
    assert macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3, abs=1e-4)


def test_score_counts_predictions_of_unknown_intent_as_errors_only() -> None:
    pairs: list[tuple[str, str | None]] = [
        ("greet", "greet"),
        ("greet", "made_up"),
        ("goodbye", "goodbye"),
        ("goodbye", "made_up"),
    ]

    accuracy, macro_f1, per = score(pairs)

    assert accuracy == 0.5
    assert set(per) == {"greet", "goodbye"}
    # Precision of the gold intents is untouched; only their recall drops.
    assert per["greet"] == IntentScore(1.0, 0.5, 0.6667, 2)
    assert per["goodbye"] == IntentScore(1.0, 0.5, 0.6667, 2)
    assert macro_f1 == pytest.approx(0.6667)


def test_score_of_no_pairs_is_zero() -> None:
    assert score([]) == (0.0, 0.0, {})


NLU_YAML = """\
version: "3.1"
nlu:
- intent: check_balance
  examples: |
    - quanto devo pagare sul codice [CL100001](customer_code)?
    - saldo della [bolletta]{"entity": "document", "value": "invoice"} di marzo
    - importo ultima fattura
- regex: customer_code
  examples: |
    - \\bCL\\d{6}\\b
- lookup: city
  examples: |
    - Milano
    - Roma
- synonym: invoice
  examples: |
    - fattura
- intent: report_outage
  examples: |
    - siamo al buio in zona [20143](postcode)
"""


def test_load_examples_strips_annotations_and_skips_non_intent_blocks(tmp_path: Path) -> None:
    path = tmp_path / "nlu.yml"
    path.write_text(NLU_YAML, encoding="utf-8")

    assert load_examples(path) == [
        ("quanto devo pagare sul codice CL100001?", "check_balance"),
        ("saldo della bolletta di marzo", "check_balance"),
        ("importo ultima fattura", "check_balance"),
        ("siamo al buio in zona 20143", "report_outage"),
    ]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0, 1.0, 3.0, 2.0, 4.0], 0.5, 3.0),
        ([5.0, 1.0, 3.0, 2.0, 4.0], 0.0, 1.0),
        ([5.0, 1.0, 3.0, 2.0, 4.0], 1.0, 5.0),
        ([float(v) for v in range(1, 101)], 0.95, 95.0),
        ([7.0], 0.95, 7.0),
        ([], 0.5, 0.0),
    ],
)
def test_percentile_picks_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_pipeline_name_of_the_project_config_names_the_classifier() -> None:
    name = pipeline_name(PROJECT_ROOT / "nlu_data" / "config.yml")

    assert "LogisticRegressionClassifier" in name
    assert "CountVectorsFeaturizer(char_wb 1-4)" in name
    assert name.startswith("WhitespaceTokenizer + ")
