"""Faults with the real Rasa server: killed mid-conversation, down, slow."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from bot.conversation.service import ConversationService
from bot.nlu.rasa_http import RasaHttpClient
from bot.nlu.supervisor import RasaState, RasaSupervisor
from bot.runtime import Runtime

pytestmark = pytest.mark.rasa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RASA_PYTHON = PROJECT_ROOT / ".venv-rasa" / "bin" / "python"


async def _wait_until_ready(
    supervisor: RasaSupervisor, restarts: int, timeout_s: float = 240
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = supervisor.health()
        if health.restarts >= restarts and health.state is RasaState.READY:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"Rasa was not restarted in {timeout_s} s: {supervisor.health()}")


async def test_killed_rasa_is_restarted_and_the_conversation_resumes(
    rasa_runtime: Runtime,
) -> None:
    conversation = f"fault-{uuid.uuid4().hex[:8]}"
    # the worker that owns the conversation is killed; the others keep serving theirs
    supervisor = rasa_runtime.supervisors[rasa_runtime.nlu.worker_for(conversation)]
    service = rasa_runtime.conversations
    await service.handle(conversation, "quanto devo pagare?", channel="chat")
    before = supervisor.health()
    assert before.pid is not None
    os.kill(before.pid, signal.SIGKILL)
    await asyncio.sleep(0.2)

    down = await service.handle(conversation, "CL100001", channel="chat")
    assert down.error == "nlu_unavailable"
    messages = await rasa_runtime.store.conversations.messages(conversation)
    assert (messages[-2].text, messages[-2].status) == ("CL100001", "failed")

    await _wait_until_ready(supervisor, before.restarts + 1)
    assert supervisor.health().pid != before.pid
    # The dialogue state survived the restart (trackers are kept in SQLite): the form goes on.
    again = await service.handle(conversation, "CL100001", channel="chat")
    assert again.error is None and again.slots.get("requested_slot") == "id_postcode"
    done = await service.handle(conversation, "20123", channel="chat")
    assert "84,50" in " ".join(r.text for r in done.replies)


async def test_a_slow_rasa_times_out_politely_and_keeps_the_message(
    rasa_runtime: Runtime,
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow = RasaHttpClient(f"http://127.0.0.1:{port}", timeout_s=0.5)
    service = ConversationService(rasa_runtime.store, slow, rasa_runtime.routing, 2000)
    conversation = f"slow-{uuid.uuid4().hex[:8]}"
    try:
        started = time.monotonic()
        turn = await service.handle(conversation, "I want to pay my bill", channel="chat")
        assert time.monotonic() - started < 5
    finally:
        await slow.close()
        server.close()
        await server.wait_closed()
    assert turn.error == "nlu_unavailable" and turn.language == "en"
    stored = await rasa_runtime.store.conversations.messages(conversation)
    assert (stored[0].text, stored[0].status) == ("I want to pay my bill", "failed")
    # once Rasa answers again, the same conversation continues through the real server
    back = await rasa_runtime.conversations.handle(conversation, "hello", channel="chat")
    assert back.error is None and back.replies


async def test_rasa_does_not_outlive_a_killed_gateway(tmp_path: Path) -> None:
    """A gateway killed with SIGKILL takes its Rasa server with it (no orphan on the port)."""
    script = tmp_path / "gateway.py"
    script.write_text(
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from bot.nlu.supervisor import RasaSupervisor\n"
        "async def main():\n"
        f"    s = RasaSupervisor(Path({str(RASA_PYTHON)!r}), Path('/nonexistent.tar.gz'), 1,\n"
        f"        Path({str(tmp_path)!r}), 'http://127.0.0.1:9/none')\n"
        "    await s._spawn()\n"
        "    print(s.health().pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT
    )
    assert gateway.stdout is not None
    rasa_pid = int((await asyncio.wait_for(gateway.stdout.readline(), 30)).decode())
    assert _alive(rasa_pid)
    gateway.kill()
    await gateway.wait()
    for _ in range(100):  # up to 20 s
        if not _alive(rasa_pid):
            break
        await asyncio.sleep(0.2)
    assert not _alive(rasa_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
