"""A second domain pack proves the seam: Assicurazioni Aurora (``tests/domains/insurance``),
selected with ``TRIAGE_DOMAIN``, with a real Rasa and the company's back office as a real HTTP
server (``tests/backoffice_server.py``) that implements the pack's operations.

With the pack selected, ``triage train`` and ``triage test`` work on its data, the chat runs its
flows and hands over to its queues with the back office's customer in the envelope, the agent API
shows the handoffs, a phone call is greeted with its prompt and transferred to its queue's SIP
URI, and nothing of the sample (its intents, tables, prompts) exists. When the back office fails
during a flow, the customer is told plainly and handed over with the failed operation.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import inspect

from bot.actions.handoff import BACK_OFFICE_DOWN
from bot.backoffice.protocol import CustomerRecord
from bot.channels.phone.brain import PhoneBrain
from bot.channels.phone.engines import open_call_engines
from bot.channels.phone.loopback import TURN_TIMEOUT_S, loopback_call
from bot.channels.web.app import make_app
from bot.config.phone_lines import load_phone_lines
from bot.config.settings import load_settings
from bot.domain import SERVICE_SLOTS
from bot.nlu.evaluation import free_port
from bot.nlu.training import TrainingInputs
from bot.runtime import Runtime, open_runtime
from bot.store.sql.tables import Handoff
from tests.backoffice_server import (
    OPERATIONS_PATH,
    VERIFY_PATH,
    BackOfficeServer,
    Failure,
)
from tests.conftest import PROJECT_ROOT, _rasa_env_or_skip
from tests.web.chatclient import ChatClient, Frame
from voice.brain import CallContext

pytestmark = pytest.mark.rasa

Client = TestClient[Any, Any]

PACK = Path(__file__).resolve().parent / "domains" / "insurance"
SAMPLE_PACK = PROJECT_ROOT / "bot" / "domains" / "energy"
SAMPLE_TABLES = {"customers", "meter_readings", "outages", "tickets"}
TOKEN = "aurora-test-token"

GIULIA = CustomerRecord("POL4471203", name="Giulia Conti", phone="+393471112233", language="it")
JAMES = CustomerRecord("POL5520874", name="James Whitfield", phone="+447700900123", language="en")
BIRTH_DATES = {GIULIA.id: "1985-03-12", JAMES.id: "1971-02-14"}
CLAIMS: dict[tuple[str, str], dict[str, Any]] = {
    (GIULIA.id, "SX240117"): {
        "found": True,
        "state": "paid",
        "amount_cents": 184050,
        "paid_on": "2026-11-20",
    },
    (GIULIA.id, "SX318842"): {"found": True, "state": "in_assessment"},
}


@dataclass
class Aurora:
    """The pack selected, its runtime and web app, and the company's back office."""

    runtime: Runtime
    client: Client
    back_office: BackOfficeServer
    opened_claims: list[dict[str, Any]]
    train_output: str
    data_dir: Path


# --- the company's back office, as the pack documents its operations (pack.yml) ---------------


def _claim_status(args: dict[str, Any]) -> dict[str, Any]:
    return CLAIMS.get((args["policy_number"], args["claim"]), {"found": False})


def _open_claim(opened: list[dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def handle(args: dict[str, Any]) -> dict[str, Any]:
        opened.append(args)
        return {"opened": True, "claim": f"SX{700000 + len(opened)}"}

    return handle


# --- the pack selected, once for the module ---------------------------------------------------


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(TRIAGE_DOMAIN=str(PACK), TRIAGE_DATA_DIR=str(data_dir), **extra)
    return env


def _triage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def _open_all_day(data_dir: Path) -> Path:
    """The pack's routing with every queue open around the clock: a handoff is then live,
    whatever the time the tests run."""
    doc = yaml.safe_load((PACK / "routing.yml").read_text(encoding="utf-8"))
    for queue in doc["queues"].values():
        queue["hours"] = {"mon-sun": "00:00-24:00"}
    path = data_dir / "routing.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest_asyncio.fixture(scope="module")
async def aurora(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Aurora]:
    _rasa_env_or_skip()
    data_dir = tmp_path_factory.mktemp("aurora")
    # models are cached by the hash of their data in the project's var/models, as for the sample
    models = PROJECT_ROOT / "var" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(models, target_is_directory=True)
    trained = await asyncio.to_thread(_triage, ["train"], _env(data_dir))
    assert trained.returncode == 0, trained.stderr
    model = Path(trained.stdout.strip().splitlines()[-1]).resolve()

    opened: list[dict[str, Any]] = []
    server = BackOfficeServer(
        customers=[GIULIA, JAMES],
        factors={cid: {"birth_date": born} for cid, born in BIRTH_DATES.items()},
        operations={"claim_status": _claim_status, "open_claim": _open_claim(opened)},
        token=TOKEN,
    )
    async with server:
        env = _env(
            data_dir,
            TRIAGE_BACKOFFICE_URL=server.url,
            TRIAGE_BACKOFFICE_TOKEN=TOKEN,
            TRIAGE_ROUTING_FILE=str(_open_all_day(data_dir)),
            TRIAGE_RASA_PORT=str(free_port()),
            # one Rasa serves the module's chats and calls: `triage test` starts its own beside it
            TRIAGE_RASA_WORKERS="1",
            TRIAGE_ACTION_PORT=str(free_port()),
            TRIAGE_API_TOKEN=TOKEN,
            TRIAGE_CHAT_BURST="50",
        )
        settings = load_settings(env)
        async with (
            open_runtime(settings, reuse_rasa=False, model=model) as runtime,
            TestClient(TestServer(make_app(runtime))) as client,
        ):
            yield Aurora(runtime, client, server, opened, trained.stdout, data_dir)


@pytest.fixture
def back_office(aurora: Aurora) -> Iterator[BackOfficeServer]:
    """The company's back office, answering by the contract again after the test."""
    yield aurora.back_office
    aurora.back_office.heal()


# --- helpers ----------------------------------------------------------------------------------


def bot_text(replies: list[Frame]) -> str:
    return " ".join(f["text"] for f in replies if f["type"] == "message" and f["sender"] == "bot")


def queue_of(replies: list[Frame]) -> Frame:
    frames = [f for f in replies if f["type"] == "queue"]
    assert frames, replies
    return frames[-1]


async def identify(chat: ChatClient, customer: CustomerRecord, born: str) -> None:
    """Answer the pack's identification questions (after a flow has asked the first)."""
    _, replies = await chat.say(customer.id)
    assert "12/03/1985" in bot_text(replies), replies  # the date-of-birth question's example
    _, replies = await chat.say(born)
    assert str(customer.name) in bot_text(replies), replies


async def handoff_of(aurora: Aurora, chat: ChatClient) -> Handoff:
    handoff = await aurora.runtime.desk.queue.active_for_conversation(chat.conversation_id)
    assert handoff is not None
    return handoff


# --- the pack's data and the CLI --------------------------------------------------------------


def test_the_pack_imports_nothing_of_the_service_but_the_domain_interface() -> None:
    imported = set()
    for source in PACK.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert {m for m in imported if m.split(".")[0] == "bot"} == {"bot.domain"}


def test_the_rasa_domain_declares_the_service_slots_and_responses() -> None:
    domain: dict[str, Any] = {}
    for part in sorted((PACK / "nlu_data" / "domain").glob("*.yml")):
        for key, value in (yaml.safe_load(part.read_text(encoding="utf-8")) or {}).items():
            domain[key] = domain.get(key, {}) | value if isinstance(value, dict) else value
    assert set(SERVICE_SLOTS) <= set(domain["slots"])
    # every response the service's own actions (bot/actions) answer with, in both languages
    builtin = {
        name
        for source in (PROJECT_ROOT / "bot" / "actions").glob("*.py")
        for name in re.findall(r'"(utter_\w+)"', source.read_text(encoding="utf-8"))
    }
    assert builtin and builtin <= set(domain["responses"])
    for name in builtin:
        conditioned = {
            v["condition"][0]["value"] for v in domain["responses"][name] if "condition" in v
        }
        assert conditioned == {"it", "en"}, name


async def test_train_caches_the_pack_model_by_the_hash_of_its_data(aurora: Aurora) -> None:
    fingerprint = TrainingInputs.default(PACK / "nlu_data").fingerprint()
    model = PROJECT_ROOT / "var" / "models" / f"triage-{fingerprint}.tar.gz"
    assert model.is_file()
    assert Path(aurora.train_output.strip()).resolve() == model.resolve()
    sample = TrainingInputs.default(PROJECT_ROOT / "nlu_data").fingerprint()
    assert sample != fingerprint


async def test_triage_test_passes_on_the_pack_held_out_files_and_conversations(
    aurora: Aurora,
) -> None:
    done = await asyncio.to_thread(_triage, ["test"], _env(aurora.data_dir))
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = dict(
        re.findall(r"== NLU held-out: (\w+)\.yml ==\n.*?accuracy:\s+([\d.]+)", done.stdout, re.S)
    )
    assert set(reports) == {"it", "en"}
    assert all(float(accuracy) >= 0.9 for accuracy in reports.values()), reports
    assert "conversation tests: passed" in done.stdout


async def test_nothing_of_the_sample_exists_with_the_pack_selected(aurora: Aurora) -> None:
    runtime = aurora.runtime
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{runtime.settings.rasa_url}/domain", headers={"Accept": "application/json"}
        ) as resp,
    ):
        model_domain = await resp.json()
    sample = yaml.safe_load((PROJECT_ROOT / "nlu_data" / "domain" / "core.yml").read_text())
    ours = yaml.safe_load((PACK / "nlu_data" / "domain" / "core.yml").read_text())
    sample_only = set(sample["intents"]) - set(ours["intents"])
    assert "check_balance" in sample_only and "report_outage" in sample_only
    assert set(ours["intents"]) <= set(model_domain["intents"])
    assert not sample_only & set(model_domain["intents"])
    assert not (set(sample["actions"]) - set(ours["actions"])) & set(model_domain["actions"])
    assert "Luce" not in json.dumps(model_domain["responses"])

    async with runtime.store.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert tables and not tables & SAMPLE_TABLES

    assert set(runtime.pack.actions) == {
        "validate_claim_status_form",
        "validate_report_claim_form",
        "action_claim_status",
        "action_report_claim",
    }
    assert set(runtime.routing.queues) == {"claims", "policies", "general"}
    welcome = load_phone_lines(runtime.settings.phone_file).welcome
    assert all("Aurora" in text and "Luce" not in text for text in welcome.values())


# --- the chat ---------------------------------------------------------------------------------


async def test_a_claim_status_is_read_for_an_identified_policy_holder(aurora: Aurora) -> None:
    chat = await ChatClient.open(aurora.client, lang="it")
    _, replies = await chat.say("buongiorno, a che punto è il mio sinistro?")
    assert "numero di polizza" in bot_text(replies)
    _, replies = await chat.say("la polizza è POL4471203")
    assert "data di nascita" in bot_text(replies)
    _, replies = await chat.say("sono nata il 12 marzo 1985")
    said = bot_text(replies)
    assert "Giulia Conti" in said and "numero del sinistro" in said
    _, replies = await chat.say("SX240117")
    assert "liquidato: 1.840,50 euro, pagati il 20/11/2026" in bot_text(replies)
    await chat.close()

    verify = aurora.back_office.requests_to(VERIFY_PATH)[-1].json()
    assert verify == {"customer_id": GIULIA.id, "factors": {"birth_date": "1985-03-12"}}
    asked = aurora.back_office.requests_to(OPERATIONS_PATH + "claim_status")[-1]
    assert asked.json()["args"] == {"policy_number": GIULIA.id, "claim": "SX240117"}
    conversation = await aurora.runtime.store.conversations.get_conversation(chat.conversation_id)
    assert (conversation.customer_id, conversation.verified) == (GIULIA.id, True)
    outcomes = await aurora.runtime.store.conversations.flow_results(chat.conversation_id)
    assert [(f.flow, f.outcome, f.detail["state"]) for f in outcomes] == [
        ("claim_status", "completed", "paid")
    ]


async def test_a_reported_claim_then_a_person_hands_over_with_the_envelope(
    aurora: Aurora,
) -> None:
    chat = await ChatClient.open(aurora.client, lang="en")
    _, replies = await chat.say(
        "Hi, someone rear-ended me on the ring road, I need to file a claim"
    )
    assert "policy number" in bot_text(replies)
    await identify(chat, JAMES, "14/02/1971")
    _, replies = await chat.say(
        "This morning at 8 a van hit the back of my car at a red light on Via Appia"
    )
    opened = aurora.opened_claims[-1]
    assert opened["policy_number"] == JAMES.id and "Via Appia" in opened["description"]
    assert f"SX{700000 + len(aurora.opened_claims)}" in bot_text(replies)
    _, replies = await chat.say("I'd like to talk to a person now please")
    assert queue_of(replies)["queue"] == "claims"  # the queue of the conversation's topic
    await chat.close()

    handoff = await handoff_of(aurora, chat)
    envelope = handoff.envelope
    assert envelope["customer"] == {
        "id": JAMES.id,
        "verified": True,
        "name": JAMES.name,
        "phone": JAMES.phone,
        "looked_up": True,
    }
    assert (envelope["queue"], envelope["topic"], envelope["reason"]) == (
        "claims",
        "report_claim",
        "explicit_request",
    )
    assert envelope["slots"]["policy_number"] == JAMES.id
    assert "birth_date" not in envelope["slots"]  # a private slot of the pack
    assert [(f["flow"], f["outcome"]) for f in envelope["self_service"]] == [
        ("report_claim", "completed")
    ]

    listed = await aurora.client.get(
        "/api/handoffs?queue=claims", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert listed.status == 200
    row = next(h for h in (await listed.json())["handoffs"] if h["id"] == handoff.id)
    assert row["customer"] == {"id": JAMES.id, "name": JAMES.name, "verified": True}
    assert row["position"] >= 1 and row["channel"] == "chat"
    shown = await aurora.client.get(
        f"/api/handoffs/{handoff.id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (await shown.json())["envelope"]["customer"]["name"] == JAMES.name


async def test_the_console_shows_the_pack_queues_and_a_policy_question_waiting(
    aurora: Aurora,
) -> None:
    chat = await ChatClient.open(aurora.client, lang="it")
    _, replies = await chat.say("vorrei sapere se la mia polizza copre la grandine")
    frame = queue_of(replies)
    assert (frame["queue"], frame["label"]) == ("policies", "ufficio polizze")
    await chat.close()
    console = await aurora.client.get("/agent")
    assert console.status == 200
    queues = await aurora.client.get("/api/queues", headers={"Authorization": f"Bearer {TOKEN}"})
    body = await queues.json()
    labels = {q["name"]: q["label"]["en"] for q in body["queues"]}
    assert labels == {
        "claims": "claims team",
        "policies": "policy team",
        "general": "customer care team",
    }
    waiting = next(q for q in body["queues"] if q["name"] == "policies")["waiting"]
    assert chat.conversation_id in {h["conversation_id"] for h in waiting}


# --- the back office down during a flow -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "failure", "operation", "action"),
    [
        pytest.param(
            VERIFY_PATH,
            Failure.STATUS_500,
            "verify_identity",
            "validate_claim_status_form",
            id="verify-500",
        ),
        pytest.param(
            OPERATIONS_PATH + "claim_status",
            Failure.HANG,
            "claim_status",
            "action_claim_status",
            id="claim-status-hangs",
        ),
    ],
)
async def test_a_back_office_down_during_a_flow_hands_over_with_the_failed_operation(
    aurora: Aurora,
    back_office: BackOfficeServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    failure: Failure,
    operation: str,
    action: str,
) -> None:
    chat = await ChatClient.open(aurora.client, lang="it")
    await chat.say("mi dice lo stato del mio sinistro?")
    if operation != "verify_identity":
        await identify(chat, GIULIA, "12/03/1985")
        last = "il numero è SX318842"
    else:
        await chat.say(GIULIA.id)
        last = "12/03/1985"
    back_office.fail(path, failure)
    before = len(back_office.requests_to(path))
    _, replies = await chat.say(last)
    said = bot_text(replies)
    assert BACK_OFFICE_DOWN["it"] in said, replies
    assert queue_of(replies)["queue"] == "claims"
    tries = len(back_office.requests_to(path)) - before
    assert tries == 2  # a read is tried once more
    await chat.close()

    handoff = await handoff_of(aurora, chat)
    assert (handoff.reason, handoff.queue) == ("backoffice_unavailable", "claims")
    assert handoff.envelope["incident"] == {
        "kind": "backoffice_unavailable",
        "operation": operation,
        "action": action,
        "flow": "claim_status",
    }
    said_by_customer = [t["text"] for t in handoff.envelope["transcript"] if t["sender"] == "user"]
    assert said_by_customer[-1] == last  # nothing the customer said is lost
    # the flow's own action, which Rasa runs when the form ends, neither failed nor went on
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


async def test_a_claim_the_back_office_cannot_open_is_handed_over_not_lost(
    aurora: Aurora, back_office: BackOfficeServer
) -> None:
    chat = await ChatClient.open(aurora.client, lang="en")
    await chat.say("I need to report a burglary at home")
    await identify(chat, JAMES, "14 February 1971")
    back_office.fail(OPERATIONS_PATH + "open_claim", Failure.STATUS_500)
    opened_before = len(aurora.opened_claims)
    sent_before = len(back_office.requests_to(OPERATIONS_PATH + "open_claim"))
    description = "Last night someone broke the kitchen window and took two laptops"
    _, replies = await chat.say(description)
    assert BACK_OFFICE_DOWN["en"] in bot_text(replies)
    assert queue_of(replies)["queue"] == "claims"
    assert len(aurora.opened_claims) == opened_before
    sent = len(back_office.requests_to(OPERATIONS_PATH + "open_claim")) - sent_before
    assert sent == 1  # a write is sent once, never retried
    await chat.close()

    handoff = await handoff_of(aurora, chat)
    assert handoff.reason == "backoffice_unavailable"
    assert handoff.envelope["incident"]["operation"] == "open_claim"
    assert handoff.envelope["slots"]["incident_description"] == description


# --- the phone --------------------------------------------------------------------------------


async def test_a_caller_keys_the_policy_date_and_claim_and_hears_its_state(
    aurora: Aurora,
) -> None:
    runtime = aurora.runtime
    brain = PhoneBrain(
        runtime.desk,
        load_phone_lines(runtime.settings.phone_file),
        runtime.pack.manifest.keyed_slots,
    )
    conversation_id, greeting = await brain.begin(CallContext(uuid.uuid4().hex, None, "800"))
    assert "Assicurazioni Aurora" in greeting.say[0]
    asked = await brain.hear(conversation_id, "vorrei sapere a che punto è il mio sinistro")
    assert asked.route == "flow:claim_status"
    assert asked.digits is not None and (asked.digits.slot, asked.digits.prefix) == (
        "policy_number",
        "POL",
    )
    born = await brain.keyed(conversation_id, "4471203", asked.digits)
    assert born.digits is not None and born.digits.slot == "birth_date"
    claim = await brain.keyed(conversation_id, "12031985", born.digits)
    assert claim.digits is not None and claim.digits.slot == "claim_number"
    state = await brain.keyed(conversation_id, "318842", claim.digits)
    assert "SX318842" in " ".join(state.say) and "perizia" in " ".join(state.say)


@pytest.mark.speech
async def test_a_call_keying_zero_is_transferred_to_the_pack_queue(aurora: Aurora) -> None:
    runtime = aurora.runtime
    lines = load_phone_lines(runtime.settings.phone_file)
    brain = PhoneBrain(runtime.desk, lines, runtime.pack.manifest.keyed_slots)
    # no speech model: the line answers with keys only, the cheapest real call
    async with (
        open_call_engines(brain, lines, models_dir=aurora.data_dir / "no-speech") as engines,
        loopback_call(engines, dialled="801") as (call, phone, running, control),
    ):
        await asyncio.wait_for(call.wait_replies(1), TURN_TIMEOUT_S)
        phone.send_dtmf("0")
        reason = await asyncio.wait_for(asyncio.shield(running), TURN_TIMEOUT_S)
    assert reason == "transferred"
    greeting = call.stats.replies[0].say
    assert greeting == (lines.welcome["en"],) and "Aurora Insurance" in greeting[0]
    [transfer] = control.transfers
    assert (transfer.queue, transfer.target_uri) == ("general", "sip:assistenza@127.0.0.1:5080")
    handoff = await runtime.store.handoffs.get_handoff(transfer.handoff_id)
    assert handoff is not None
    assert (handoff.channel, handoff.queue, handoff.state) == ("phone", "general", "queued")
