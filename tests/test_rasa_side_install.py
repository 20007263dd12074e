"""The ``rasa_side/`` distribution as each environment installs it: the Rasa environment imports
``triage_rasa`` and ``triage_pii`` as installed packages (not from the working directory, not by
file path), and the masking both sides share imports only the standard library under either
Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.nlu.supervisor import write_credentials, write_endpoints
from bot.nlu.training import RASA_VERSION, rasa_env

RASA_SIDE = Path(__file__).resolve().parent.parent / "rasa_side"

# Resolves each class name as Rasa does and prints the file its module came from.
RESOLVE_AS_RASA_DOES = """
import json, sys
from rasa.shared.utils.common import class_from_module_path
found = {name: class_from_module_path(name).__module__ for name in sys.argv[1:]}
print(json.dumps({name: sys.modules[module].__file__ for name, module in found.items()}))
"""

# Imports the masking module and prints the top-level modules it brought in beyond the
# standard library (the interpreter's own start-up imports are already loaded).
NON_STDLIB_IMPORTS = """
import json, sys
before = set(sys.modules)
import triage_pii.masking
added = {name.partition(".")[0] for name in set(sys.modules) - before}
print(json.dumps(sorted(added - set(sys.stdlib_module_names) - {"triage_pii"})))
print(triage_pii.masking.__file__)
"""


def _run(python: Path, code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", code, *args],
        cwd=cwd,
        env=rasa_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.rasa
def test_the_classes_named_in_rasas_config_load_from_the_installed_package(
    rasa_python: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    write_endpoints(config / "endpoints.yml", "http://127.0.0.1:1/webhook", config / "t.db")
    write_credentials(config / "credentials.yml")
    endpoints = yaml.safe_load((config / "endpoints.yml").read_text())
    credentials = yaml.safe_load((config / "credentials.yml").read_text())
    names = [endpoints["tracker_store"]["type"], *(k for k in credentials if "." in k)]
    # run elsewhere than the repository, so nothing is found through the working directory
    done = _run(rasa_python, RESOLVE_AS_RASA_DOES, *names, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    files = {name: Path(file) for name, file in json.loads(done.stdout.splitlines()[-1]).items()}
    assert sorted(files) == sorted(names) and len(names) == 2
    # the editable install: the Rasa process runs this checkout's rasa_side/
    assert all(file.is_relative_to(RASA_SIDE / "triage_rasa") for file in files.values()), files


def _interpreter(request: pytest.FixtureRequest, which: str) -> Path:
    if which == "gateway":
        return Path(sys.executable)
    python: Path = request.getfixturevalue("rasa_python")
    return python


@pytest.mark.parametrize("which", ["gateway", pytest.param("rasa", marks=pytest.mark.rasa)])
def test_masking_imports_only_the_standard_library_under_both_pythons(
    request: pytest.FixtureRequest, which: str, tmp_path: Path
) -> None:
    done = _run(_interpreter(request, which), NON_STDLIB_IMPORTS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    beyond_stdlib, module_file = done.stdout.splitlines()[-2:]
    assert json.loads(beyond_stdlib) == []
    assert Path(module_file).is_relative_to(RASA_SIDE / "triage_pii")


@pytest.mark.rasa
def test_the_launcher_runs_as_a_module_of_the_installed_package(
    rasa_python: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(rasa_python), "-m", "triage_rasa.launcher", "--version"],
        cwd=tmp_path,
        env=rasa_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    # `rasa --version`, run after the launcher has imported the channel and the tracker store
    assert "Rasa Version" in done.stdout and RASA_VERSION in done.stdout
