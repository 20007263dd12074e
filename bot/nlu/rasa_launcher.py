"""Runs the Rasa CLI, in the Rasa environment, with two start-up fixes applied first.

1. ``skops.io`` is imported first. Rasa 3.6 loads its LogisticRegressionClassifier with skops,
   whose first import builds a table of trusted types by scanning every module already imported.
   Imported after TensorFlow (as ``rasa run`` does) that scan took 11.8 s of a 16 s model load;
   imported first it takes about 1 s.
2. The action server's answers are validated with one validator built once. Rasa calls
   ``jsonschema.validate`` on every answer, which first checks the (large) events schema against
   the JSON Schema meta-schema and builds a new validator: profiled under chat load, that was
   58 % of the Rasa process's CPU. The same schema, the same errors, without the rebuilding.

This file runs under Rasa's Python 3.10 and imports nothing from the gateway.
"""

import runpy
import sys
from typing import Any

import skops.io  # type: ignore[import-not-found]  # noqa: F401  (imported first on purpose)


def _validate_action_results_once() -> None:
    from jsonschema import ValidationError, validators  # type: ignore[import-not-found]
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


if __name__ == "__main__":
    _validate_action_results_once()
    sys.argv[0] = "rasa"
    runpy.run_module("rasa", run_name="__main__", alter_sys=True)
