"""Checks of ``triage_rasa.launcher``'s validation of action-server answers against Rasa's own,
run under the Rasa environment's Python by ``tests/test_rasa_side.py``.

For valid answers and for thousands of mutated ones, the launcher's validators must accept and
reject exactly what ``jsonschema.validate`` with Rasa's schema does. Prints a summary line and
exits 1 on the first disagreement.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import sys
from typing import Any

from jsonschema import ValidationError, validators
from rasa.core.actions.action import RemoteAction

from triage_rasa.launcher import event_validators, validate_action_result

VALID_EVENTS: list[dict[str, Any]] = [
    {"event": "slot", "name": "customer_code", "value": "CL100001", "timestamp": None},
    {"event": "slot", "name": "verified", "value": True},
    {"event": "active_loop", "name": None, "timestamp": None},
    {"event": "active_loop", "name": "check_balance_form"},
    {"event": "session_started", "timestamp": None},
    {"event": "action", "name": "action_listen", "timestamp": None},
    {"event": "followup", "name": "utter_greet"},
    {"event": "bot", "text": "Buongiorno", "data": {}, "metadata": {}},
    {"event": "user", "text": "ciao", "parse_data": {"intent": {"name": "greet", "confidence": 1}}},
    {"event": "reset_slots"},
    {"event": "restart"},
    {"event": "rewind"},
    {"event": "pause"},
    {"event": "resume"},
    {"event": "undo"},
    {"event": "export"},
    {"event": "agent", "text": "hi"},
    {"event": "entities", "entities": [{"entity": "month", "value": "march"}]},
    {"event": "reminder", "intent": "remind", "date_time": "2026-11-23T10:00:00"},
    {"event": "cancel_reminder", "name": "r1"},
    {"event": "action_execution_rejected", "name": "action_x"},
    {"event": "form_validation", "validate": False},
    {"event": "loop_interrupted", "is_interrupted": True},
    {"event": "form", "name": "check_balance_form"},
    {"event": "user_featurization", "use_text_for_featurization": False},
]
ODD_VALUES: list[Any] = [None, 0, 1.5, "", "x", [], {}, [1], {"a": 1}, True]


def mutate(rng: random.Random, result: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(result)
    choice = rng.randrange(6)
    if choice == 0 or not out["events"]:
        out[rng.choice(["events", "responses"])] = rng.choice(ODD_VALUES)
    elif choice == 1:
        out["events"][rng.randrange(len(out["events"]))] = rng.choice(ODD_VALUES)
    else:
        event = out["events"][rng.randrange(len(out["events"]))]
        key = rng.choice([*event.keys(), "event", "timestamp", "metadata", "name", "value"])
        if choice == 2:
            event.pop(key, None)
        else:
            event[key] = rng.choice([*ODD_VALUES, "slot", "user", "nonsense"])
    return out


def accepted_by_rasa(schema: dict[str, Any], result: Any) -> bool:
    """What ``jsonschema.validate(result, schema)``, as Rasa calls it, decides (the validator is
    built once here: building it for each of thousands of answers would take minutes)."""
    return bool(reference_validator(schema).is_valid(result))


@functools.cache
def _reference_validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def reference_validator(schema: dict[str, Any]) -> Any:
    return _reference_validator(json.dumps(schema, sort_keys=True))


def accepted_by_launcher(envelope: Any, per_event: dict[str, Any], result: Any) -> bool:
    try:
        validate_action_result(envelope, per_event, result)
    except ValidationError:
        return False
    return True


def main() -> int:
    schema = RemoteAction.action_response_format_spec()
    envelope, per_event = event_validators()
    rng = random.Random(20261123)
    cases: list[Any] = [{"events": [e], "responses": []} for e in VALID_EVENTS]
    cases.append({"events": VALID_EVENTS, "responses": [{"text": "ok", "buttons": []}]})
    cases.append({})
    for _ in range(3000):
        picked = rng.sample(VALID_EVENTS, rng.randint(1, 4))
        cases.append(mutate(rng, {"events": picked, "responses": [{"text": "ok"}]}))
    agree = {True: 0, False: 0}
    for case in cases:
        expected = accepted_by_rasa(schema, case)
        if accepted_by_launcher(envelope, per_event, case) != expected:
            print(f"DISAGREE rasa={'accepts' if expected else 'rejects'}: {case!r}")
            return 1
        agree[expected] += 1
    print(f"agree on {len(cases)} answers: {agree[True]} accepted, {agree[False]} rejected")
    return 0 if agree[True] >= len(VALID_EVENTS) and agree[False] > 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
