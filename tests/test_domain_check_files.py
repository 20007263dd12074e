"""``triage domain check`` checks the files ``triage serve`` would load, and every problem in
them: the files an installation puts in place of the pack's, every invalid hours entry of every
queue, and the other files when one of them cannot be read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.config.phone_lines import load_phone_lines
from bot.errors import ConfigError
from bot.packs.check import check_pack
from bot.packs.loader import FileOverrides, Problem
from bot.packs.scaffold import new_pack
from tests.test_domain_cli import NEW_PACK, _edit, _run

# Bad entries in both queues of a new pack, and its time zone: (text, replacement, keys).
HOURS_FAULTS = [
    ("timezone: Europe/Rome", "timezone: Europe/Atlantis", ["timezone"]),
    (
        'hours: {mon-sun: "00:00-24:00"}',
        'hours: {mon-fri: "08:00-20:00", sat: "8-13", sun: "18:00-09:00"}',
        ["queues.customer_service.hours.sat", "queues.customer_service.hours.sun"],
    ),
    (
        'hours: {mon-fri: "09:00-18:00"}',
        'hours: {mon-fry: "09:00-18:00", sat-mon: "09:00-12:00", tue: "09:60-10:00"}',
        [
            "queues.complaints.hours.mon-fry",
            "queues.complaints.hours.sat-mon",
            "queues.complaints.hours.tue",
        ],
    ),
]
BAD_HOURS = ('hours: {mon-fri: "09:00-18:00"}', 'hours: {mon-fri: "18:00-09:00"}')
BAD_HOURS_KEY = "queues.complaints.hours.mon-fri"


def _found(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(str(p.file), p.key) for p in problems}


def _copy(path: Path, to: Path) -> Path:
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, to)
    return to


def test_check_lists_every_bad_hours_entry_of_every_queue(tmp_path: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    routing = root / "routing.yml"
    expected: list[str] = []
    for old, new, keys in HOURS_FAULTS:
        _edit(routing, old, new)
        expected += keys

    assert _found(check_pack(str(root))) == {(str(routing), key) for key in expected}
    done = _run(["domain", "check", str(root)])
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for key in expected:
        assert any(line.startswith(f"{routing}: {key}: ") for line in lines), key
    assert lines[-1] == f"{len(expected)} problems in the pack {root}"


def test_check_reads_the_files_the_environment_puts_in_place_of_the_packs(
    tmp_path: Path,
) -> None:
    root = new_pack(NEW_PACK, tmp_path / "packs")
    routing = _copy(root / "routing.yml", tmp_path / "site" / "routing.yml")
    phone = _copy(root / "phone.yml", tmp_path / "site" / "phone.yml")
    _edit(routing, *BAD_HOURS)
    _edit(phone, '  en: "Hello', '  fr: "Hello')
    expected = {(str(routing), BAD_HOURS_KEY), (str(phone), "welcome.en")}

    assert check_pack(str(root)) == []  # the pack's own files are fine
    overrides = FileOverrides(routing_file=routing, phone_file=phone)
    assert _found(check_pack(str(root), overrides)) == expected
    done = _run(
        ["domain", "check"],
        {
            "TRIAGE_DOMAIN": str(root),
            "TRIAGE_ROUTING_FILE": str(routing),
            "TRIAGE_PHONE_FILE": str(phone),
        },
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"checked with TRIAGE_ROUTING_FILE={routing} in place of the pack's routing.yml" in lines
    assert f"checked with TRIAGE_PHONE_FILE={phone} in place of the pack's phone.yml" in lines
    assert any(line.startswith(f"{routing}: {BAD_HOURS_KEY}: ") for line in lines)
    assert any(line.startswith(f"{phone}: welcome.en: ") for line in lines)
    assert lines[-1] == f"2 problems in the pack {root}"


def test_check_passes_a_pack_whose_broken_files_the_environment_replaces(tmp_path: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path / "packs")
    routing = _copy(root / "routing.yml", tmp_path / "site" / "routing.yml")
    rasa_data = tmp_path / "site" / "nlu_data"
    shutil.move(root / "nlu_data", rasa_data)
    _edit(root / "routing.yml", *BAD_HOURS)
    assert check_pack(str(root)) != []

    done = _run(
        ["domain", "check", str(root)],
        {"TRIAGE_ROUTING_FILE": str(routing), "TRIAGE_NLU_DATA_DIR": str(rasa_data)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"{NEW_PACK}: no problem (")


def test_check_names_a_replacement_rasa_data_directory_that_is_missing(tmp_path: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    missing = tmp_path / "elsewhere"

    found = _found(check_pack(str(root), FileOverrides(rasa_data=missing)))

    assert (str(missing), "") in found
    assert (str(root / "pack.yml"), "rasa_data") not in found


def test_check_goes_on_with_the_other_files_when_pack_yml_cannot_be_read(
    tmp_path: Path,
) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    _edit(root / "pack.yml", "version: 1", "version: [1")
    _edit(root / "routing.yml", *BAD_HOURS)
    (root / "extra.py").write_text("from bot import store\n")

    assert _found(check_pack(str(root))) == {
        (str(root / "pack.yml"), ""),
        (str(root / "routing.yml"), BAD_HOURS_KEY),
        (str(root / "extra.py"), "line 1"),
    }


def test_check_goes_on_with_routing_yml_when_the_rasa_data_is_missing(tmp_path: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    shutil.rmtree(root / "nlu_data")
    _edit(root / "routing.yml", *BAD_HOURS)

    found = _found(check_pack(str(root)))

    assert (str(root / "pack.yml"), "rasa_data") in found
    assert (str(root / "routing.yml"), BAD_HOURS_KEY) in found


def test_check_goes_on_with_the_other_files_when_routing_yml_cannot_be_read(
    tmp_path: Path,
) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    _edit(root / "routing.yml", "version: 1", "version: [1")
    _edit(root / "phone.yml", '  en: "Hello', '  fr: "Hello')

    assert _found(check_pack(str(root))) == {
        (str(root / "routing.yml"), ""),
        (str(root / "phone.yml"), "welcome.en"),
    }


def test_check_refuses_a_misspelt_variable_as_serve_does(tmp_path: Path) -> None:
    routing = _copy(new_pack(NEW_PACK, tmp_path) / "routing.yml", tmp_path / "routing.yml")

    done = _run(["domain", "check"], {"TRIAGE_ROUTNG_FILE": str(routing)})

    assert done.returncode == 2
    assert "unknown setting(s) in the environment: TRIAGE_ROUTNG_FILE" in done.stderr


# Bad entries all over a new pack's phone.yml: (text, replacement, keys).
PHONE_FAULTS = [
    ('country_code: "39"', 'country_code: "3939"', ["country_code"]),
    ('"100": {language: it}', '"abc": {language: it}', ["numbers.abc"]),
    ("  no_input_timeout_s: 7 ", "  no_input_timeout_s: 700 ", ["call.no_input_timeout_s"]),
    ("  max_reprompts: 2 ", "  max_reprompts: -1 ", ["call.max_reprompts"]),
    ("  recent_chat_window_h: 24 ", "  recent_chat_windows_h: 24 ", ["call.recent_chat_windows_h"]),
]


def test_check_lists_every_bad_entry_of_phone_yml(tmp_path: Path) -> None:
    root = new_pack(NEW_PACK, tmp_path)
    phone = root / "phone.yml"
    expected: list[str] = []
    for old, new, keys in PHONE_FAULTS:
        _edit(phone, old, new)
        expected += keys

    assert _found(check_pack(str(root))) == {(str(phone), key) for key in expected}
    with pytest.raises(ConfigError) as refused:  # serve refuses it naming every key too
        load_phone_lines(phone)
    assert sorted(line.split(": ")[1] for line in str(refused.value).splitlines()) == sorted(
        expected
    )
