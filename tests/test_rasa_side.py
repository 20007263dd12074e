"""The project's code that runs inside Rasa, the ``triage_rasa`` package (``rasa_side/``): the
tracker store (``triage_rasa.tracker_store``), the input channel (``triage_rasa.channel``) and the
launcher's validation of action answers (``triage_rasa.launcher``): checks under the Rasa
environment, then the real server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest

from bot.nlu.training import rasa_env
from bot.runtime import Runtime

pytestmark = pytest.mark.rasa


def _run_under_rasa(rasa_python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(rasa_python), *args], env=rasa_env(), capture_output=True, text=True, timeout=300
    )


CHECKS = Path(__file__).parent / "rasa_side" / "tracker_store_checks.py"
LAUNCHER_CHECKS = Path(__file__).parent / "rasa_side" / "launcher_checks.py"
# the checks on either database (tests/test_rasa_cluster_trackers.py runs them on PostgreSQL)
COMMON_CHECK_NAMES = (
    "a_saved_tracker_is_served_from_memory_and_stored_masked",
    "a_changed_unsaved_tracker_is_read_again",
    "a_reopened_store_gives_the_same_dialogue",
    "retrieve_starts_at_the_last_session",
    "a_tracker_built_elsewhere_appends_only_what_is_new",
    "entities_read_in_masked_text_are_masked_too",
    "an_interrupted_turn_is_forgotten_from_its_message",
)
CHECK_NAMES = (*COMMON_CHECK_NAMES, "events_of_rasas_sql_store_are_taken_over")


def test_tracker_store_checks_pass_under_rasa(rasa_python: Path, tmp_path: Path) -> None:
    done = _run_under_rasa(rasa_python, str(CHECKS), "sqlite", str(tmp_path))
    passed = [line.removeprefix("ok ") for line in done.stdout.splitlines() if line[:3] == "ok "]
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert tuple(passed) == CHECK_NAMES


def test_action_answers_are_validated_as_rasa_does(rasa_python: Path) -> None:
    done = _run_under_rasa(rasa_python, str(LAUNCHER_CHECKS))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "agree on 3027 answers" in done.stdout


def _tracker_rows(runtime: Runtime, sender: str) -> list[tuple[str, str]]:
    db = runtime.settings.data_dir / "rasa" / "trackers.db"
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT type_name, data FROM tracker_events WHERE sender_id = ? ORDER BY seq",
            (sender,),
        ).fetchall()


async def test_rasa_keeps_the_dialogue_in_the_project_store_with_texts_masked(
    rasa_runtime: Runtime,
) -> None:
    conversation = f"mask-{uuid.uuid4().hex[:8]}"
    turn = await rasa_runtime.conversations.handle(
        conversation, "voglio parlare con un operatore, il mio numero è 333 1234567", channel="chat"
    )
    assert turn.error is None and turn.replies
    rows = _tracker_rows(rasa_runtime, conversation)
    user_rows = [data for kind, data in rows if kind == "user"]
    assert len(user_rows) == 1
    # the text and any entity the NLU read in the masked number
    assert "1234567" not in user_rows[0] and "333" not in user_rows[0]
    assert "operatore" in user_rows[0]
    assert any(kind == "bot" for kind, _ in rows)


async def test_the_triage_channel_rejects_malformed_turns(rasa_runtime: Runtime) -> None:
    worker = rasa_runtime.supervisors[rasa_runtime.nlu.worker_for("x")]
    url = worker.url + "/webhooks/triage/webhook"
    bad_bodies: list[object] = [
        ["not", "an", "object"],
        {"message": "ciao"},
        {"sender": "", "message": "ciao"},
        {"sender": "x", "message": 42},
        {"sender": "x", "message": "ciao", "metadata": "nope"},
        {"sender": "x", "message": "ciao", "message_id": 7},
        {"sender": "x", "message": "ciao", "message_id": ""},
    ]
    async with aiohttp.ClientSession() as http:
        for body in bad_bodies:
            async with http.post(url, json=body) as resp:
                answer = await resp.json()
                assert (resp.status, answer["error"]) == (400, "bad_request"), body
    assert _tracker_rows(rasa_runtime, "x") == []


async def test_a_turn_sent_again_with_its_key_replaces_the_first_run(
    rasa_runtime: Runtime,
) -> None:
    """The gateway runs a turn again (same message key) when it died before recording it: the
    dialogue must hold the message once, not twice."""
    conversation = f"again-{uuid.uuid4().hex[:8]}"
    nlu = rasa_runtime.nlu
    metadata = {"language": "it", "channel": "chat"}
    await nlu.turn(conversation, "buongiorno", metadata, message_key="1")
    first = await nlu.turn(conversation, "quanto devo pagare?", metadata, message_key="2")
    rerun = {**metadata, "rerun": True}  # what the gateway sends when it runs a turn again
    again = await nlu.turn(conversation, "quanto devo pagare?", rerun, message_key="2")
    assert again.parse.intent == first.parse.intent == "check_balance"
    assert [r.text for r in again.replies] == [r.text for r in first.replies]
    users = [
        json.loads(data)
        for kind, data in _tracker_rows(rasa_runtime, conversation)
        if kind == "user"
    ]
    assert [(u["text"], u["message_id"]) for u in users] == [
        ("buongiorno", "1"),
        ("quanto devo pagare?", "2"),
    ]
    # a new key is a new message, even with the same text
    await nlu.turn(conversation, "quanto devo pagare?", metadata, message_key="3")
    users = [d for kind, d in _tracker_rows(rasa_runtime, conversation) if kind == "user"]
    assert len(users) == 3
