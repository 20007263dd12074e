"""Runs the Rasa CLI, in the Rasa environment, with ``skops.io`` imported first.

Rasa 3.6 loads its LogisticRegressionClassifier with skops, whose first import builds a table of
trusted types by scanning every module already imported. Imported after TensorFlow (as ``rasa
run`` does) that scan took 11.8 s of a 16 s model load; imported first it takes about 1 s.
This file runs under Rasa's Python 3.10 and imports nothing from the gateway.
"""

import runpy
import sys

import skops.io  # type: ignore[import-not-found]  # noqa: F401  (imported first on purpose)

if __name__ == "__main__":
    sys.argv[0] = "rasa"
    runpy.run_module("rasa", run_name="__main__", alter_sys=True)
