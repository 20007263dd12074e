"""``triage domain check`` and ``triage domain new``, as a pack's author runs them."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.errors import ConfigError
from bot.packs.check import BUILT_IN_RESPONSES, check_pack
from bot.packs.loader import PackError, Problem, check_manifest, read_manifest
from bot.packs.scaffold import TEMPLATE, new_pack
from tests.conftest import ENERGY_PACK, PROJECT_ROOT

TRIAGE = [sys.executable, "-m", "bot.cli"]
NEW_PACK = "acme_care"  # one name, so the generated pack's model is cached between runs


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    return subprocess.run(
        TRIAGE + args,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        cwd=PROJECT_ROOT,
        timeout=900,
        check=False,
    )


def _found(problems: list[Problem], root: Path) -> set[tuple[str, str]]:
    return {(str(p.file.relative_to(root)), p.key) for p in problems}


def _sample_copy(tmp_path: Path) -> Path:
    """The sample pack with its Rasa data inside it, as a company's pack would have it."""
    root = tmp_path / "energy"
    shutil.copytree(ENERGY_PACK, root, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT_ROOT / "nlu_data", root / "nlu_data")
    _edit(root / "pack.yml", "rasa_data: ../../../nlu_data", "rasa_data: nlu_data")
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _line_of(path: Path, text: str) -> str:
    """The key a problem in a Python file has: the line that holds ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return f"line {next(i for i, line in enumerate(lines, 1) if text in line)}"


def _with_four_faults(root: Path) -> Path:
    """A routed intent the Rasa domain lacks, a queue with no SIP URI, a flow whose validator is
    not served, and a module that imports the store."""
    routing = root / "routing.yml"
    _edit(
        routing,
        "  sales_inquiry: {queue: sales}\n",
        "  sales_inquiry: {queue: sales}\n  solar_panels: {queue: sales}\n",
    )
    _edit(routing, '    sip_uri: "sip:technical@127.0.0.1:5070"\n', "")
    _edit(root / "forms.py", '    "ticket_status_form",\n', "")
    _edit(
        root / "values.py",
        "import re\n",
        "import re\n\nfrom bot.store.sql.store import SqlStore  # noqa: F401\n",
    )
    return root


def test_check_finds_no_problem_in_the_sample_pack() -> None:
    assert check_pack("energy") == []
    done = _run(["domain", "check"])  # the default: TRIAGE_DOMAIN, unset, is the sample
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("energy: no problem (")
    assert len(done.stdout.splitlines()) == 1


def test_check_reports_every_fault_with_its_file_and_key_in_one_run(tmp_path: Path) -> None:
    root = _with_four_faults(_sample_copy(tmp_path))
    expected = {
        ("routing.yml", "intents.solar_panels"),
        ("routing.yml", "queues.technical.sip_uri"),
        ("__init__.py", "ACTIONS.validate_ticket_status_form"),
        ("values.py", _line_of(root / "values.py", "import SqlStore")),
    }
    assert _found(check_pack(str(root)), root) == expected
    done = _run(["domain", "check", str(root)])
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for file, key in expected:
        assert any(line.startswith(f"{root / file}: {key}: ") for line in lines), (file, key)
    assert any("imports bot.store.sql.store" in line for line in lines)
    assert lines[-1] == f"4 problems in the pack {root}"


def test_check_reports_faults_in_every_file_of_a_new_pack(tmp_path: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    _edit(root / "routing.yml", '    label: {it: "ufficio reclami", en: "complaints team"}\n', "")
    _edit(root / "routing.yml", "  case_status: {on_failure: customer_service}\n", "")
    _edit(root / "routing.yml", "  thanks: reply\n", "")
    _edit(root / "pack.yml", "private_slots: []", "private_slots: [date_of_birth]")
    _edit(root / "pack.yml", "case_status: {read_only: true}", "case_lookup: {read_only: true}")
    _edit(root / "phone.yml", '  en: "Hello', '  fr: "Hello')
    _edit(
        root / "nlu_data" / "domain" / "responses.yml",
        "    - condition: [{type: slot, name: language, value: en}]\n"
        '      text: "All right. What can I help you with?"\n',
        "",
    )
    _edit(root / "nlu_data" / "domain" / "core.yml", "  - validate_case_status_form\n", "")
    (root / "nlu_data" / "data" / "nlu" / "en.yml").unlink()
    (root / "extra.py").write_text("from bot import store\nfrom voice import rtp\n")
    domain = "nlu_data/domain/core.yml"
    assert _found(check_pack(str(root)), root) == {
        ("routing.yml", "queues.complaints.label.it"),
        ("routing.yml", "queues.complaints.label.en"),
        ("routing.yml", "flows.case_status.on_failure"),
        ("routing.yml", "intents.thanks"),
        (domain, "actions.validate_case_status_form"),
        ("pack.yml", "private_slots.date_of_birth"),
        ("case_status.py", _line_of(root / "case_status.py", 'ctx.call("case_status"')),
        ("phone.yml", "welcome.en"),
        ("nlu_data/domain/responses.yml", "responses.utter_nothing_to_confirm"),
        ("nlu_data/data/nlu/en.yml", ""),
        ("extra.py", "line 1"),
        ("extra.py", "line 2"),
    }


def test_check_reports_an_intent_the_service_relies_on_that_the_domain_lacks(
    tmp_path: Path,
) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    core = root / "nlu_data" / "domain" / "core.yml"
    _edit(core, "  - deny\n", "")
    found = _found(check_pack(str(root)), root)
    assert ("nlu_data/domain/core.yml", "intents.deny") in found


def test_check_reports_a_pack_whose_python_does_not_import(tmp_path: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    (root / "case_status.py").write_text("def broken(:\n")
    found = _found(check_pack(str(root)), root)
    assert ("case_status.py", "") in found  # cannot parse
    assert ("__init__.py", "") in found  # does not import


def test_check_refuses_a_place_that_holds_no_pack(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no domain pack there"):
        check_pack(str(tmp_path))
    assert _run(["domain", "check", str(tmp_path)]).returncode == 2


def test_manifest_problems_are_all_collected_and_the_reader_raises_the_first(
    tmp_path: Path,
) -> None:
    (tmp_path / "pack.yml").write_text(
        "version: 1\nname: Bad Name\nlanguages: [it]\nback_office: {kind: ftp, retries: 9}\n"
    )
    manifest, problems = check_manifest(tmp_path)
    assert manifest is not None
    assert [p.key for p in problems] == ["name", "back_office.kind", "back_office.retries"]
    with pytest.raises(PackError) as raised:
        read_manifest(tmp_path)
    assert raised.value.pack == str(tmp_path)
    assert raised.value.problem == (
        f"{tmp_path / 'pack.yml'}: name: {problems[0].message} (and 2 more problems)"
    )


def test_new_pack_passes_check_as_generated(tmp_path: Path) -> None:
    done = _run(["domain", "new", NEW_PACK, "--dir", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    root = tmp_path / NEW_PACK
    assert read_manifest(root).name == NEW_PACK
    assert not list(root.rglob("__pycache__"))
    assert "{{" not in "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    assert check_pack(str(root)) == []
    done = _run(["domain", "check"], {"TRIAGE_DOMAIN": str(root)})
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith(f"{NEW_PACK}: no problem (11 routed intents, 1 flow, 2 queues")


def test_new_pack_refuses_a_bad_name_or_an_existing_directory(tmp_path: Path) -> None:
    assert _run(["domain", "new", "Acme Care", "--dir", str(tmp_path)]).returncode == 2
    (tmp_path / NEW_PACK).mkdir()
    done = _run(["domain", "new", NEW_PACK, "--dir", str(tmp_path)])
    assert done.returncode == 2 and "exists already" in done.stderr


def test_new_pack_has_the_sample_pipeline_and_policies() -> None:
    ours = yaml.safe_load((TEMPLATE / "nlu_data" / "config.yml").read_text())
    sample = yaml.safe_load((PROJECT_ROOT / "nlu_data" / "config.yml").read_text())
    assert ours["pipeline"] == sample["pipeline"] and ours["policies"] == sample["policies"]


def test_built_in_responses_are_what_the_service_actions_utter() -> None:
    uttered = set()
    for path in (PROJECT_ROOT / "bot" / "actions").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "utter"
                and isinstance(node.args[0], ast.Constant)
            ):
                uttered.add(node.args[0].value)
    assert uttered == set(BUILT_IN_RESPONSES)


@pytest.mark.rasa
def test_new_pack_trains_and_passes_triage_test(tmp_path: Path, rasa_python: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    models = PROJECT_ROOT / "var" / "models"  # the project's model cache, as conftest uses it
    models.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(models, target_is_directory=True)
    done = _run(
        ["test"],
        {
            "TRIAGE_DOMAIN": str(root),
            "TRIAGE_DATA_DIR": str(data_dir),
            "TRIAGE_RASA_PYTHON": str(rasa_python),
        },
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("== NLU held-out:") == 2
    assert "conversation tests: passed" in done.stdout


def _broken_pack(tmp_path: Path, fault: str) -> tuple[Path, str]:
    """A pack with one fault, and what the one line about it must say."""
    if fault == "missing":
        return tmp_path / "nowhere", "no domain pack there"
    root = new_pack(NEW_PACK, tmp_path)
    if fault == "manifest":
        _edit(root / "pack.yml", "version: 1", "version: 2")
        return root, f"{root / 'pack.yml'}: version: must be 1"
    (root / "case_status.py").write_text(
        (root / "case_status.py").read_text() + '\nraise RuntimeError("pack boom")\n'
    )
    line = len((root / "case_status.py").read_text().splitlines())
    return root, f"RuntimeError: pack boom ({root / 'case_status.py'}, line {line})"


@pytest.mark.parametrize("command", ["serve", "train", "test"])
@pytest.mark.parametrize("fault", ["missing", "manifest", "python"])
def test_commands_refuse_a_broken_pack_in_one_line_naming_it(
    tmp_path: Path, command: str, fault: str
) -> None:
    root, problem = _broken_pack(tmp_path, fault)
    done = _run(
        [command],
        {
            "TRIAGE_DOMAIN": str(root),
            "TRIAGE_DATA_DIR": str(tmp_path / "var"),
            "TRIAGE_HTTP_PORT": "0",
            "TRIAGE_SIP_PORT": "0",
        },
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"triage: domain pack {root}: ")
    assert problem in line
    assert line.endswith(f"`triage domain check {root}` lists every problem")


def test_check_of_a_selected_pack_with_an_invalid_manifest_lists_every_problem(
    tmp_path: Path,
) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    _edit(root / "pack.yml", "version: 1", "version: 2")
    _edit(root / "pack.yml", f'name: "{NEW_PACK}"', 'name: "Acme Care"')
    done = _run(["domain", "check"], {"TRIAGE_DOMAIN": str(root)})
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for key in ("version", "name"):
        assert any(line.startswith(f"{root / 'pack.yml'}: {key}: ") for line in lines), key
    assert lines[-1] == f"2 problems in the pack {root}"
