"""Runs the Rasa CLI, in the Rasa environment, with five fixes applied first.

1. ``skops.io`` is imported first. Rasa 3.6 loads its LogisticRegressionClassifier with skops,
   whose first import builds a table of trusted types by scanning every module already imported.
   Imported after TensorFlow (as ``rasa run`` does) that scan took 11.8 s of a 16 s model load;
   imported first it takes about 1 s.
2. The action server's answers are validated with validators built once. Rasa calls
   ``jsonschema.validate`` on every answer, which first checks the (large) events schema against
   the JSON Schema meta-schema and builds a new validator: profiled under chat load, that was
   58 % of the Rasa process's CPU. Each event is then checked against the schema of its own
   event type rather than ``oneOf`` all 23 (see ``event_validators``): the same answers
   accepted and rejected.
3. Event classes are looked up by type name in a table. Rasa walks every subclass of ``Event``
   (checking each for abstractness) for every event it deserialises: 10 % of its CPU when
   loading trackers. The first class found for a name wins, as in Rasa; an unknown name falls
   back to Rasa's own lookup (and its error).
4. Once the model is loaded, every object alive is moved out of the garbage collector's reach
   (``gc.freeze``). Rasa with TensorFlow, scikit-learn and the model holds about 500,000
   objects, and each full collection walked all of them: 315-335 ms, during which no message is
   answered (the longest bot replies under chat load). What the process creates afterwards
   (trackers, requests) is collected as before.
5. A tracker store error fails the turn instead of being answered from a blank dialogue (see
   ``_tracker_store_errors_fail_the_turn``).

It also imports the package's ``tracker_store`` and ``channel`` (named in the endpoints and
credentials files the gateway writes) before Rasa does: Rasa replaces a tracker store it cannot
import by an in-memory one with only a warning, which would silently lose every dialogue at the
next restart; here the start fails instead.

Run as ``python -m triage_rasa.launcher ARGS`` (``rasa ARGS``) under Rasa's Python 3.10; it
imports nothing from the gateway package.
"""

import runpy
import sys
from typing import Any

import skops.io  # type: ignore[import-not-found]  # noqa: F401  (imported first on purpose)


def event_validators() -> tuple[Any, dict[str, Any]]:
    """Validators equivalent to Rasa's action-result schema, built once: one for the answer with
    its events checked only for an ``event`` name, and one per event type for the event itself.

    Rasa's schema checks each event against ``oneOf`` 23 alternatives, one per event name (each
    pins ``event`` to a constant), so an event is valid exactly when it is valid under the
    alternative of its own name: checking that one alone gives the same answer for a fraction
    of the work (profiled under chat load, the ``oneOf`` was still 11 % of Rasa's CPU).
    """
    from jsonschema import validators  # type: ignore[import-untyped]
    from rasa.core.actions.action import RemoteAction  # type: ignore[import-not-found]

    schema = RemoteAction.action_response_format_spec()
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    items = schema["properties"]["events"]["items"]
    base = {key: value for key, value in items.items() if key != "oneOf"}
    per_event = {
        alternative["properties"]["event"]["const"]: validator_class({"allOf": [base, alternative]})
        for alternative in items["oneOf"]
    }
    envelope_schema = {
        **schema,
        "properties": {**schema["properties"], "events": {"type": "array", "items": base}},
    }
    return validator_class(envelope_schema), per_event


def validate_action_result(envelope: Any, per_event: dict[str, Any], result: Any) -> None:
    """Raises ``jsonschema.ValidationError`` where Rasa's own validation would."""
    from jsonschema import ValidationError

    envelope.validate(result)
    for event in result.get("events") or ():
        validator = per_event.get(event["event"])
        if validator is None:
            raise ValidationError(f"{event['event']!r} is not a known event type")
        validator.validate(event)


def _validate_action_results_once() -> None:
    from jsonschema import ValidationError
    from rasa.core.actions.action import DOCS_BASE_URL, RemoteAction

    envelope, per_event = event_validators()

    def rasa_validate_action_result(self: Any, result: dict[str, Any]) -> bool:
        try:
            validate_action_result(envelope, per_event, result)
            return True
        except ValidationError as e:
            e.message += (
                ". Failed to validate Action server response from API, "
                "make sure your response from the Action endpoint is valid. "
                f"For more information about the format visit {DOCS_BASE_URL}/custom-actions"
            )
            raise e

    RemoteAction._validate_action_result = rasa_validate_action_result


def _freeze_after_model_load() -> None:
    import gc

    from rasa.core import agent as agent_module  # type: ignore[import-not-found]

    load_agent = agent_module.load_agent

    async def load_agent_then_freeze(*args: Any, **kwargs: Any) -> Any:
        agent = await load_agent(*args, **kwargs)
        gc.collect()
        gc.freeze()
        return agent

    agent_module.load_agent = load_agent_then_freeze


def _tracker_store_errors_fail_the_turn() -> None:
    """Rasa wraps the tracker store in a ``FailSafeTrackerStore`` that, when the store fails,
    answers from a blank in-memory dialogue (a read) or keeps the turn in memory only (a save),
    and still answers 200. With the trackers in a database on the network that would silently
    restart or fork a customer's dialogue: the error fails the turn instead, and the gateway
    tells the customer and answers the message later."""
    from rasa.core import agent as agent_module
    from rasa.core.tracker_store import FailSafeTrackerStore  # type: ignore[import-not-found]

    def reraise(error: Exception) -> None:
        raise error

    def fail_loudly(store: Any) -> Any:
        return FailSafeTrackerStore(store, on_tracker_store_error=reraise)

    agent_module.FailSafeTrackerStore = fail_loudly


def _resolve_event_types_by_table() -> None:
    import rasa.shared.utils.common as common  # type: ignore[import-not-found]
    from rasa.shared.core import events  # type: ignore[import-not-found]

    original = events.Event.resolve_by_type
    table: dict[str, Any] = {}

    def resolve_by_type(type_name: str, default: Any = None) -> Any:
        found = table.get(type_name)
        if found is None:  # first use, or a class defined since: build the table again
            for cls in common.all_subclasses(events.Event):
                table.setdefault(cls.type_name, cls)
            found = table.get(type_name)
        return found if found is not None else original(type_name, default)

    events.Event.resolve_by_type = staticmethod(resolve_by_type)


if __name__ == "__main__":
    _validate_action_results_once()
    _resolve_event_types_by_table()
    _freeze_after_model_load()
    _tracker_store_errors_fail_the_turn()
    from triage_rasa import channel, tracker_store  # noqa: F401  (see the docstring)

    sys.argv[0] = "rasa"
    runpy.run_module("rasa", run_name="__main__", alter_sys=True)
