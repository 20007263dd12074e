"""The training data, the held-out files, the domain and the routing table agree."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bot.config.routing import RouteKind, load_routing
from bot.nlu.evaluation import load_examples, unseen_examples
from tests.conftest import ENERGY_PACK

ROOT = Path(__file__).resolve().parent.parent
NLU = ROOT / "nlu_data"
LANGUAGES = ("it", "en")
MIN_TRAINING_EXAMPLES = 25


def _intents_of_the_contract() -> set[str]:
    rows = (NLU / "INTENTS.md").read_text().splitlines()
    route = r"^\| `(\w+)` \| (?:flow|queue|reply|fallback)\b"
    return {m.group(1) for r in rows if (m := re.match(route, r))}


@pytest.mark.parametrize("language", LANGUAGES)
def test_held_out_files_cover_every_intent_evenly(language: str) -> None:
    counts = Counter(i for _, i in load_examples(NLU / "heldout" / f"{language}.yml"))
    assert set(counts) == _intents_of_the_contract()
    assert set(counts.values()) == {10}


def test_unseen_examples_drop_near_copies_of_training_sentences() -> None:
    training = [("voglio parlare con un operatore", "request_human")]
    tests = [
        ("voglio parlare con un operatore", "request_human"),
        ("Voglio parlare con un operatore!", "request_human"),
        ("passami un collega in carne e ossa", "request_human"),
    ]
    assert unseen_examples(tests, training) == [tests[2]]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_intent_has_enough_training_examples(language: str) -> None:
    counts = Counter(i for _, i in load_examples(NLU / "data" / "nlu" / f"{language}.yml"))
    assert set(counts) == _intents_of_the_contract()
    assert min(counts.values()) >= MIN_TRAINING_EXAMPLES


def test_domain_routing_and_intent_table_agree() -> None:
    domain = yaml.safe_load((NLU / "domain" / "core.yml").read_text())
    intents = _intents_of_the_contract()
    assert set(domain["intents"]) == intents
    routing = load_routing(ENERGY_PACK / "routing.yml")
    assert intents <= set(routing.intents)
    flows = {r.name for r in routing.intents.values() if r.kind is RouteKind.FLOW}
    assert {f"{f}_form" for f in flows} == set(domain["forms"])
    for flow in flows:
        assert f"action_{flow}" in domain["actions"]
        assert f"validate_{flow}_form" in domain["actions"]


def test_every_custom_action_in_the_domain_is_served() -> None:
    from bot.actions.webhook import action_registry
    from bot.packs.loader import load_pack

    domain = yaml.safe_load((NLU / "domain" / "core.yml").read_text())
    assert set(domain["actions"]) == set(action_registry(load_pack("energy").actions))
