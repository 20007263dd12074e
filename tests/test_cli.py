"""The ``triage`` command as a developer runs it, against the real Rasa server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli.main import build_parser, settings_for
from bot.runtime import Runtime
from bot.store.sql.handoffs import SqlHandoffs

TRIAGE = [sys.executable, "-m", "bot.cli"]


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        TRIAGE + args,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def _env(runtime: Runtime, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(
        TRIAGE_DATA_DIR=str(tmp_path),
        TRIAGE_RASA_PORT=str(runtime.settings.rasa_port),
        TRIAGE_ROUTING_FILE=str(runtime.settings.routing_file),
    )
    return env


def test_help_explains_every_command() -> None:
    out = _run(["--help"], dict(os.environ)).stdout
    for command in ("train", "serve", "nlu", "shell", "eval", "test", "agents"):
        assert f"\n    {command} " in out


def test_serve_takes_data_dir_after_the_command_as_before_it(tmp_path: Path) -> None:
    parser = build_parser()
    before = settings_for(parser.parse_args(["--data-dir", str(tmp_path), "serve"]), env={})
    after = settings_for(parser.parse_args(["serve", "--data-dir", str(tmp_path)]), env={})
    both = settings_for(
        parser.parse_args(["--data-dir", str(tmp_path), "serve", "--data-dir", str(tmp_path)]),
        env={},
    )
    assert before.data_dir == after.data_dir == both.data_dir == tmp_path.absolute()


def test_serve_refuses_two_different_data_dirs(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    done = _run(["--data-dir", str(first), "serve", "--data-dir", str(second)], env)
    assert done.returncode == 2
    assert "--data-dir" in done.stderr and str(first) in done.stderr and str(second) in done.stderr
    assert not first.exists() and not second.exists()  # refused before anything started


@pytest.mark.rasa
async def test_nlu_with_text_prints_one_json_result(rasa_runtime: Runtime, tmp_path: Path) -> None:
    done = await asyncio.to_thread(
        _run, ["nlu", "--json", "voglio parlare con un operatore"], _env(rasa_runtime, tmp_path)
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["text"] == "voglio parlare con un operatore"
    assert record["language"] == "it"
    assert record["intent"]["name"] == "request_human" and record["intent"]["confidence"] > 0.3
    assert record["route"] == {"kind": "queue", "name": "general"}


@pytest.mark.rasa
async def test_nlu_reads_stdin_one_json_object_per_line(
    rasa_runtime: Runtime, tmp_path: Path
) -> None:
    lines = "my postcode is 20121 and there is no power\n\nI'd like to check my balance\n"
    done = await asyncio.to_thread(
        _run, ["nlu", "--lang", "en"], _env(rasa_runtime, tmp_path), lines
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["text"] for r in records] == [
        "my postcode is 20121 and there is no power",
        "I'd like to check my balance",
    ]
    assert {"text", "language", "intent", "entities", "route"} <= records[0].keys()
    assert records[0]["route"] == {"kind": "flow", "name": "report_outage"}
    assert {"entity": "postcode", "value": "20121"}.items() <= records[0]["entities"][0].items()
    assert records[1]["route"] == {"kind": "flow", "name": "check_balance"}
    assert all(r["language"] == "en" for r in records)


@pytest.mark.rasa
async def test_eval_trains_on_one_file_and_reports_on_another(
    rasa_runtime: Runtime, tmp_path: Path
) -> None:
    train = tmp_path / "train.yml"
    test = tmp_path / "test.yml"
    train.write_text(
        'version: "3.1"\nnlu:\n'
        "- intent: greet\n  examples: |\n"
        + "".join(
            f"    - {w}\n"
            for w in (
                "hello",
                "hi",
                "good morning",
                "hey there",
                "ciao",
                "buongiorno",
                "salve",
                "hi friend",
            )
        )
        + "- intent: goodbye\n  examples: |\n"
        + "".join(
            f"    - {w}\n"
            for w in (
                "bye",
                "goodbye",
                "see you",
                "arrivederci",
                "a presto",
                "ciao ciao",
                "farewell",
                "later",
            )
        )
    )
    test.write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hello there\n'
        "- intent: goodbye\n  examples: |\n    - bye bye\n"
    )
    env = _env(rasa_runtime, tmp_path)
    done = await asyncio.to_thread(
        _run, ["eval", "--train", str(train), "--test", str(test), "--json"], env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"accuracy", "macro_f1", "train_s", "pipeline", "per_intent"} <= report.keys()
    assert report["examples"] == 2
    assert 0 <= report["accuracy"] <= 1 and report["train_s"] > 0
    assert "LogisticRegressionClassifier" in report["pipeline"]
    assert set(report["per_intent"]) == {"greet", "goodbye"}


@pytest.mark.rasa
async def test_shell_runs_a_dialogue_and_shows_the_route(
    rasa_runtime: Runtime, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(
        _run, ["shell", "--lang", "en"], _env(rasa_runtime, tmp_path), "hello\nthanks\n"
    )
    assert done.returncode == 0, done.stderr
    assert "bot> Hello" in done.stdout
    assert "(greet " in done.stdout and "-> reply:greet)" in done.stdout
    assert "(thanks " in done.stdout


@pytest.mark.rasa
async def test_shell_shows_the_queue_place_and_wait_after_every_line_while_queued(
    rasa_runtime: Runtime, tmp_path: Path
) -> None:
    env = _env(rasa_runtime, tmp_path)
    # the store the Rasa actions write the handoff to
    env["TRIAGE_DATABASE_URL"] = rasa_runtime.settings.effective_database_url
    lines = "I want to speak to an agent\nare you still there?\n"
    done = await asyncio.to_thread(_run, ["shell", "--lang", "en"], env, lines)
    assert done.returncode == 0, done.stderr
    conversation_id = done.stdout.split("conversation ", 1)[1].split(".", 1)[0]
    queue = SqlHandoffs(rasa_runtime.store)
    handoff = await queue.active_for_conversation(conversation_id)
    assert handoff is not None and handoff.queue == "general"
    label = rasa_runtime.routing.queues["general"].label("en")
    place = f"You are number {await queue.position(handoff)} in the queue for {label}."
    shown = [line.split("queue> ", 1)[1] for line in done.stdout.splitlines() if "queue> " in line]
    assert len(shown) == 2, done.stdout  # once queued, and after the line sent while waiting
    assert all(line.startswith(place) and "wait" in line for line in shown), shown


async def test_agents_add_prints_a_token_once_and_the_password_signs_in(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env["TRIAGE_DATA_DIR"] = str(tmp_path)
    added = _run(
        [
            "agents",
            "add",
            "giulia",
            "--name",
            "Giulia",
            "--queues",
            "general,billing",
            "--password-stdin",
        ],
        env,
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert len(token) >= 40 and token not in (tmp_path / "triage.db").read_bytes().decode("latin-1")
    listed = _run(["agents", "list"], env)
    assert "giulia" in listed.stdout and "general,billing" in listed.stdout
    again = _run(["agents", "add", "giulia", "--queues", "general"], env)
    assert again.returncode == 2 and "already exists" in again.stderr
    unknown = _run(["agents", "add", "marco", "--queues", "nowhere"], env)
    assert unknown.returncode == 2 and "unknown queue" in unknown.stderr

    from bot.store.sql.agents import SqlAgents
    from bot.store.sql.store import SqlStore

    store = await SqlStore.open("sqlite+aiosqlite:///" + str(tmp_path / "triage.db"))
    try:
        agents = SqlAgents(store)
        assert (await agents.check_password("giulia", "a long enough password")) is not None
        assert await agents.check_password("giulia", "wrong password!!") is None
        found = await agents.by_token(token)
        assert found is not None and found.id == "giulia" and found.queues == ["general", "billing"]
    finally:
        await store.close()
