"""Runs the Rasa CLI, in the Rasa environment, with two start-up fixes applied first.

1. ``skops.io`` is imported first. Rasa 3.6 loads its LogisticRegressionClassifier with skops,
   whose first import builds a table of trusted types by scanning every module already imported.
   Imported after TensorFlow (as ``rasa run`` does) that scan took 11.8 s of a 16 s model load;
   imported first it takes about 1 s.
2. The action server's answers are validated with one validator built once. Rasa calls
   ``jsonschema.validate`` on every answer, which first checks the (large) events schema against
   the JSON Schema meta-schema and builds a new validator: profiled under chat load, that was
   58 % of the Rasa process's CPU. The same schema, the same errors, without the rebuilding.
3. Event classes are looked up by type name in a table. Rasa walks every subclass of ``Event``
   (checking each for abstractness) for every event it deserialises: 10 % of its CPU when
   loading trackers. The first class found for a name wins, as in Rasa; an unknown name falls
   back to Rasa's own lookup (and its error).

It also imports the project's Rasa-side modules next to it, ``rasa_tracker_store`` and
``rasa_channel`` (named in the endpoints and credentials files the gateway writes), before Rasa
does: Rasa replaces a tracker store it cannot import by an in-memory one with only a warning,
which would silently lose every dialogue at the next restart; here the start fails instead.

This file runs under Rasa's Python 3.10 and imports nothing from the gateway package.
"""

import runpy
import sys
from typing import Any

import skops.io  # type: ignore[import-not-found]  # noqa: F401  (imported first on purpose)


def _validate_action_results_once() -> None:
    from jsonschema import ValidationError, validators  # type: ignore[import-untyped]
    from rasa.core.actions.action import DOCS_BASE_URL, RemoteAction  # type: ignore[import-not-found]

    schema = RemoteAction.action_response_format_spec()
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    def validate_action_result(self: Any, result: dict[str, Any]) -> bool:
        try:
            validator.validate(result)
            return True
        except ValidationError as e:
            e.message += (
                ". Failed to validate Action server response from API, "
                "make sure your response from the Action endpoint is valid. "
                f"For more information about the format visit {DOCS_BASE_URL}/custom-actions"
            )
            raise e

    RemoteAction._validate_action_result = validate_action_result


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
    import rasa_channel  # type: ignore[import-not-found]  # noqa: F401  (see the docstring)
    import rasa_tracker_store  # type: ignore[import-not-found]  # noqa: F401

    sys.argv[0] = "rasa"
    runpy.run_module("rasa", run_name="__main__", alter_sys=True)
