"""Kamailio's dispatcher (``deploy/kamailio``) in front of two real SIP bridges, each a whole
``triage serve`` process, with ``sipp`` calling through Kamailio.

What each bridge did is read from the bridge itself, never from Kamailio: its data directory's
database (a call is a ``phone`` conversation, closed when the call ends), its answers to our
own probes, the Contact of the 200 it answered with (which a proxy does not touch, so sipp's log
names the bridge of each call), its exit; and, after a kill, a silent socket on its SIP port
that records every request Kamailio still sends there. Kamailio's own view (``kamcmd
dispatcher.list``) is used to wait until both bridges are in service and to know which bridge it
picks on equal loads, and checked only where its behaviour is the thing under test (a draining
bridge taken out, the call load counted back, its log of a refused call tried elsewhere).

The two nodes share one Rasa server that is not their child (as in ``test_crash_kills``): the
calls here carry no speech (the data directories hold no speech model, so the line takes keys
only), so no call reaches Rasa, and one Rasa instead of one per node keeps the module within
two minutes on a two-core machine, restarts included; it only makes both nodes say ready.

Without kamailio or sipp the tests skip, naming what is missing; with
``TRIAGE_REQUIRE_SERVICES=1`` (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.cluster.conftest import require
from tests.conftest import PROJECT_ROOT, _free_port
from tests.gateway_process import ExternalRasa, external_rasa_server
from tests.voice.test_sip_agent import Caller, Phone, sip
from tests.voice.test_sipp import BENIGN_SIPP_LINES, _free_udp_ports, _sipp

LOOPBACK = "127.0.0.1"
RUN_SH = PROJECT_ROOT / "deploy" / "kamailio" / "run.sh"
SCENARIOS = Path(__file__).resolve().parent / "sipp"
CALLER_HANGS_UP = SCENARIOS / "call_through_proxy.xml"
BRIDGE_HANGS_UP = SCENARIOS / "call_bridge_hangs_up.xml"
PING_INTERVAL_S = 2  # Kamailio's probing interval here (run.sh's default: 3)
PROBING_THRESHOLD = 2  # failed probes in a row before a bridge is out (the config's default)
FR_TIMER_S = 2.0  # the config's wait for any answer of a bridge
# From a bridge's death to Kamailio sending it no more calls: the probes that must fail in a
# row (one per interval), the last failing when its wait for an answer runs out, and a second.
DETECTION_BOUND_S = PROBING_THRESHOLD * PING_INTERVAL_S + FR_TIMER_S + 1.0
NODE_START_TIMEOUT_S = 90.0
NODE_EXIT_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60  # the nodes' TRIAGE_DRAIN_TIMEOUT_S: far beyond what the calls here last
SIPP_TIMEOUT_S = 40
WAIT_S = 10.0
POLL_S = 0.05


def _tool(path: str, package: str) -> str:
    """The executable at ``path`` (in /usr/sbin, which a user's PATH may lack), or skip/fail."""
    found = shutil.which(path) or (path if os.access(path, os.X_OK) else None)
    require(
        found is not None,
        f"{path} is missing (Debian package {package}): apt-get install {package}",
    )
    assert found is not None
    return found


async def eventually(
    what: str, condition: Callable[[], bool | Awaitable[bool]], within_s: float = WAIT_S
) -> None:
    """Return once ``condition()`` (sync or async) holds; fail naming ``what`` at ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        await asyncio.sleep(POLL_S)


# --- The nodes ----------------------------------------------------------------------------


@dataclass
class Node:
    """One ``triage serve`` on loopback ports of its own and a data directory that outlives it."""

    name: str
    data_dir: Path
    rasa: ExternalRasa
    action_port: int
    http_port: int = field(default_factory=_free_port)
    sip_port: int = field(default_factory=lambda: _free_udp_ports(1))
    rtp_port_min: int = field(default_factory=lambda: _free_udp_ports(20))
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        env.update(
            TRIAGE_DATA_DIR=str(self.data_dir),
            TRIAGE_HTTP_PORT=str(self.http_port),
            TRIAGE_ACTION_PORT=str(self.action_port),
            TRIAGE_SIP_PORT=str(self.sip_port),
            TRIAGE_RTP_PORT_MIN=str(self.rtp_port_min),
            TRIAGE_RTP_PORT_MAX=str(self.rtp_port_min + 18),
            TRIAGE_EXTERNAL_RASA_URL=self.rasa.url,
            TRIAGE_DRAIN_TIMEOUT_S=str(self.drain_timeout_s),
        )
        return env

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "serve.log").open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "serve", env=self.env(), stdout=log, stderr=log
            )
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + NODE_START_TIMEOUT_S
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.base + "/healthz") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready: {self.log_tail()}")
                await asyncio.sleep(0.2)

    async def exited(self, within_s: float = NODE_EXIT_TIMEOUT_S) -> int:
        assert self.proc is not None
        async with asyncio.timeout(within_s):
            return await self.proc.wait()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # at once: no drain at the end of the module
            try:
                await self.exited()
            except TimeoutError:
                await self.kill()

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(self.base + "/healthz") as resp:
            return resp.status, await resp.json()

    def calls(self) -> dict[str, int]:
        """The phone conversations in this node's database, by state (``closed``: ended)."""
        database = self.data_dir / "triage.db"
        if not database.exists():
            return {}
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT state, count(*) FROM conversations WHERE channel = 'phone' GROUP BY state"
            ).fetchall()
        return {str(state): int(count) for state, count in rows}

    def log_tail(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")[-3000:]


def ended(node: Node) -> int:
    return node.calls().get("closed", 0)


async def until_ended(node: Node, count: int) -> None:
    """Wait until ``node`` has recorded ``count`` ended calls in all."""
    await eventually(f"{node.name} records {count} ended calls", lambda: ended(node) == count)


def in_progress(node: Node) -> int:
    return sum(count for state, count in node.calls().items() if state != "closed")


# --- Kamailio -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    uri: str
    flags: str  # AP: active and probed; IP: inactive; TP: trying (failing, still chosen)
    load: int  # calls Kamailio counts on it (algorithm 10)


class Kamailio:
    """``deploy/kamailio/run.sh`` in front of the nodes' SIP ports, in a directory of its own."""

    def __init__(self, run_dir: Path, bridges: list[int]) -> None:
        self.run_dir = run_dir
        self.bridges = bridges
        self.port = _free_udp_ports(1)
        self.proc: asyncio.subprocess.Process | None = None
        _tool("/usr/sbin/kamailio", "kamailio")
        self.kamcmd = _tool("/usr/sbin/kamcmd", "kamailio")

    @property
    def log(self) -> Path:
        return self.run_dir / "kamailio.log"

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bridges = [f"{LOOPBACK}:{port}" for port in self.bridges]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(RUN_SH),
                "-i", str(PING_INTERVAL_S),
                "-t", str(PROBING_THRESHOLD),
                "-n", "2",
                str(self.run_dir),
                f"{LOOPBACK}:{self.port}",
                *bridges,
                stdout=log,
                stderr=log,
            )  # fmt: skip
        await eventually("Kamailio answers on its control socket", self._answers, 20.0)

    async def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"kamailio exited: {self.log.read_text(errors='replace')}")
        try:
            await self.destinations()
        except AssertionError:
            return False
        return True

    async def destinations(self) -> dict[int, Destination]:
        """``kamcmd dispatcher.list``, by the bridge's SIP port, in Kamailio's order."""
        done = await asyncio.create_subprocess_exec(
            self.kamcmd,
            "-s", f"unix:{self.run_dir / 'kamailio_ctl'}",
            "dispatcher.list",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output = (await done.communicate())[0].decode(errors="replace")
        assert done.returncode == 0, output
        found = re.findall(
            r"URI: sip:[\d.]+:(\d+)\s+FLAGS: (\w+).*?DLGLOAD: (\d+)", output, flags=re.DOTALL
        )
        return {
            int(port): Destination(f"sip:{port}", flags, int(load)) for port, flags, load in found
        }

    async def first_choice(self) -> int:
        """The bridge Kamailio picks when loads are equal (the first it lists)."""
        return next(iter(await self.destinations()))

    async def until_flags(self, port: int, flags: str, within_s: float) -> float:
        """Seconds until Kamailio shows ``flags`` for the bridge on ``port``."""
        started = time.monotonic()

        async def shown() -> bool:
            return (await self.destinations())[port].flags == flags

        await eventually(f"Kamailio shows {flags} for bridge {port}", shown, within_s)
        return time.monotonic() - started

    def log_lines(self, pattern: str) -> list[str]:
        return re.findall(pattern, self.log.read_text(errors="replace"))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# --- sipp -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calls:
    """A sipp run's outcome, and which bridge answered each call (from the bridge's Contact)."""

    returncode: int
    output: str
    errors: list[str]
    answered_by: dict[int, int]  # call number -> the SIP port of the bridge that answered
    hung_up: set[int]  # calls whose BYE got its 200
    messages: str  # every message sipp sent and received (-trace_msg)

    def check(self) -> None:
        assert self.returncode == 0 and not self.errors, (
            f"sipp exit {self.returncode}; errors: {self.errors}\n{self.output[-3000:]}"
        )

    def count(self, port: int) -> int:
        return sum(1 for bridge in self.answered_by.values() if bridge == port)


async def place_calls(
    kamailio: Kamailio,
    workdir: Path,
    *,
    calls: int,
    per_s: float,
    talk_ms: int = 0,
    scenario: Path = CALLER_HANGS_UP,
) -> Calls:
    """``calls`` calls through Kamailio, ``per_s`` a second, each hung up after ``talk_ms``
    (or, with ``BRIDGE_HANGS_UP``, by the bridge)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(scenario, workdir / scenario.name)
    scenario = workdir / scenario.name
    errors, logs, messages = (
        workdir / name for name in ("errors.log", "calls.log", "messages.log")
    )
    command = [
        _sipp(),
        "-sf", str(scenario),
        "-i", LOOPBACK,
        "-p", str(_free_udp_ports(1)),
        "-mi", LOOPBACK,
        "-mp", str(_free_udp_ports(4, step=2)),
        "-s", "100",
        "-m", str(calls),
        "-r", str(int(per_s * 1000)), "-rp", "1000000",
        "-d", str(talk_ms),
        "-timeout", f"{SIPP_TIMEOUT_S}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err", "-error_file", str(errors),
        "-trace_logs", "-log_file", str(logs),
        "-trace_msg", "-message_file", str(messages),
        f"{LOOPBACK}:{kamailio.port}",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(SIPP_TIMEOUT_S + 10):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    error_lines = errors.read_text(errors="replace").splitlines() if errors.exists() else []
    log = logs.read_text(errors="replace") if logs.exists() else ""
    return Calls(
        process.returncode,
        output.decode(errors="replace"),
        [line for line in error_lines if line.strip() and not BENIGN_SIPP_LINES.search(line)],
        {int(n): int(p) for n, p in re.findall(r"answered call (\d+) by bridge (\d+)", log)},
        {int(n) for n in re.findall(r"hung up call (\d+) at bridge", log)},
        messages.read_text(errors="replace") if messages.exists() else "",
    )


async def options_status(to: tuple[str, int]) -> int:
    """The status of the answer to an OPTIONS out of any dialog (a probe, a keep-alive)."""
    phone = await Phone.open()
    try:
        caller = Caller(phone, to)
        caller.send(sip(f"OPTIONS sip:{to[0]} SIP/2.0", caller.headers("OPTIONS", 1, "z9hG4bKp")))
        return (await phone.response()).status
    finally:
        await phone.close()


def through_kamailio(method: str, messages: str, kamailio: Kamailio) -> bool:
    """Whether sipp received a ``method`` request whose top Via is Kamailio's."""
    received = re.findall(
        rf"message received \[\d+\] bytes :\s+{method} \S+ SIP/2.0\r?\nVia: ([^\r\n]+)", messages
    )
    return bool(received) and all(
        via.startswith(f"SIP/2.0/UDP {LOOPBACK}:{kamailio.port};") for via in received
    )


class Tombstone(asyncio.DatagramProtocol):
    """A silent socket on a dead bridge's SIP port: what Kamailio still sends there, and when."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, str]] = []  # (monotonic time, method, Call-ID)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        method = text.split(" ", 1)[0]
        call_id = re.search(r"^(?:Call-ID|i):\s*(\S+)", text, flags=re.MULTILINE | re.IGNORECASE)
        self.received.append((time.monotonic(), method, call_id.group(1) if call_id else ""))

    def first_seen(self, method: str) -> dict[str, float]:
        """When each request of ``method`` (by Call-ID) first arrived."""
        seen: dict[str, float] = {}
        for at, got, call_id in self.received:
            if got == method:
                seen.setdefault(call_id, at)
        return seen


# --- Fixtures -------------------------------------------------------------------------------


@dataclass
class Cluster:
    a: Node
    b: Node
    kamailio: Kamailio
    work: Path

    @property
    def nodes(self) -> tuple[Node, Node]:
        return self.a, self.b

    def node_on(self, port: int) -> Node:
        return next(node for node in self.nodes if node.sip_port == port)

    def other(self, node: Node) -> Node:
        return self.b if node is self.a else self.a


@pytest.fixture(scope="module")
def sip_tools() -> None:
    """Kamailio and sipp, checked before anything starts."""
    _tool("/usr/sbin/kamailio", "kamailio")
    _tool("/usr/sbin/kamcmd", "kamailio")
    _sipp()


@pytest_asyncio.fixture(scope="module")
async def shared_rasa(
    sample_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ExternalRasa]:
    """One Rasa for both nodes, outside either (the calls carry no speech)."""
    async with external_rasa_server(sample_model, tmp_path_factory.mktemp("cluster-rasa")) as rasa:
        yield rasa


@pytest_asyncio.fixture(scope="module")
async def module_cluster(
    sip_tools: None,
    shared_rasa: ExternalRasa,
    sample_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    work = tmp_path_factory.mktemp("sip-cluster")
    # Rasa calls node a's action webhook; node b's is never called (no call reaches Rasa)
    a = Node("node a", work / "a", shared_rasa, shared_rasa.action_port)
    b = Node("node b", work / "b", shared_rasa, _free_port())
    kamailio = Kamailio(work / "kamailio", [a.sip_port, b.sip_port])
    for node in (a, b):
        models = node.data_dir / "models"
        models.mkdir(parents=True)
        (models / sample_model.name).symlink_to(sample_model)
    cluster = Cluster(a, b, kamailio, work)
    try:
        await asyncio.gather(a.start(), b.start())
        await kamailio.start()
        yield cluster
    finally:
        await kamailio.stop()
        await asyncio.gather(a.stop(), b.stop())


@pytest_asyncio.fixture
async def cluster(module_cluster: Cluster) -> Cluster:
    """Both nodes serving (a test may have killed or drained one) and in Kamailio's service."""
    await asyncio.gather(*(node.start() for node in module_cluster.nodes if not node.running))
    kamailio = module_cluster.kamailio
    for node in module_cluster.nodes:
        await kamailio.until_flags(node.sip_port, "AP", DETECTION_BOUND_S + PING_INTERVAL_S)
    return module_cluster


# --- Tests ----------------------------------------------------------------------------------


@pytest.mark.rasa
async def test_calls_spread_over_both_bridges_and_each_bye_reaches_the_bridge_of_its_call(
    cluster: Cluster,
) -> None:
    before = {node.name: ended(node) for node in cluster.nodes}
    assert await options_status((LOOPBACK, cluster.kamailio.port)) == 200, "calls can come"

    calls = await place_calls(
        cluster.kamailio, cluster.work / "spread", calls=6, per_s=6, talk_ms=2500
    )

    calls.check()
    assert sorted(calls.answered_by) == [1, 2, 3, 4, 5, 6] and calls.hung_up == {1, 2, 3, 4, 5, 6}
    # by load: six calls that overlap, each to the bridge with fewer calls: three and three
    assert [calls.count(node.sip_port) for node in cluster.nodes] == [3, 3], calls.answered_by
    for node in cluster.nodes:
        # each bridge ended, on the caller's BYE, every call it answered: none went elsewhere
        await until_ended(node, before[node.name] + calls.count(node.sip_port))
        assert in_progress(node) == 0
    loads = {port: d.load for port, d in (await cluster.kamailio.destinations()).items()}
    assert loads == {cluster.a.sip_port: 0, cluster.b.sip_port: 0}, "every BYE was counted"


@pytest.mark.rasa
async def test_a_killed_bridge_gets_no_more_calls_within_the_probing_bound(
    cluster: Cluster,
) -> None:
    victim = cluster.node_on(await cluster.kamailio.first_choice())  # where equal loads go
    survivor = cluster.other(victim)
    before = ended(survivor)

    await victim.kill()
    killed_at = time.monotonic()
    transport, tombstone = await asyncio.get_running_loop().create_datagram_endpoint(
        Tombstone, local_addr=(LOOPBACK, victim.sip_port)
    )
    try:
        # calls from the kill on, for longer than the bound: the first ones go to the dead
        # bridge (it is the first choice) until Kamailio takes it out
        span_s = DETECTION_BOUND_S + 3
        calls = await place_calls(
            cluster.kamailio, cluster.work / "kill", calls=int(span_s * 2), per_s=2, talk_ms=500
        )
        finished_at = time.monotonic()
    finally:
        transport.close()

    calls.check()
    assert set(calls.answered_by.values()) == {survivor.sip_port}, calls.answered_by
    await until_ended(survivor, before + len(calls.answered_by))
    invites = tombstone.first_seen("INVITE")
    assert invites, "the first call went to the dead bridge (the first choice), then elsewhere"
    last_invite_s = max(invites.values()) - killed_at
    assert last_invite_s <= DETECTION_BOUND_S, f"calls to the dead bridge {last_invite_s:.1f} s on"
    assert finished_at - killed_at > DETECTION_BOUND_S + 2, "calls went on past the bound"
    probes = tombstone.first_seen("OPTIONS")
    assert max(probes.values()) - killed_at > DETECTION_BOUND_S, "it is still probed, to return"
    assert (await cluster.kamailio.destinations())[victim.sip_port].flags == "IP"


@pytest.mark.rasa
async def test_a_draining_bridge_refuses_new_calls_and_probes_503_and_finishes_its_call(
    cluster: Cluster,
) -> None:
    kamailio = cluster.kamailio
    drained = cluster.node_on(await kamailio.first_choice())
    other = cluster.other(drained)
    drained_before, other_before = ended(drained), ended(other)

    # one long call on each bridge (by load), so that the next one goes to the first choice
    long_calls = asyncio.create_task(
        place_calls(kamailio, cluster.work / "long", calls=2, per_s=4, talk_ms=15_000)
    )
    drain: asyncio.subprocess.Process | None = None
    try:
        await eventually(
            "a call in progress on each bridge",
            lambda: in_progress(drained) == 1 and in_progress(other) == 1,
        )
        drain = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "drain", "--timeout", "60",
            env=drained.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip

        async def says_draining() -> bool:
            status, body = await drained.healthz()
            return status == 503 and "draining" in body["not_ready"]

        await eventually("the drained node's /healthz says draining", says_draining)

        # the bridge's own answers: a probe and a new call are refused 503, with Retry-After
        assert await options_status((LOOPBACK, drained.sip_port)) == 503
        phone = await Phone.open()
        try:
            caller = Caller(phone, (LOOPBACK, drained.sip_port))
            caller.send(caller.invite())
            refused = await phone.response()
        finally:
            await phone.close()
        assert refused.status == 503 and "Retry-After" in refused.headers

        # a new call through Kamailio, before its probes noticed: it goes to the drained bridge
        # (equal loads), is refused there, and Kamailio tries the other
        new_call = await place_calls(kamailio, cluster.work / "new", calls=1, per_s=1, talk_ms=300)
        new_call.check()
        assert new_call.answered_by == {1: other.sip_port}
        assert kamailio.log_lines(
            rf"bridge sip:{LOOPBACK}:{drained.sip_port} refused the call \(503\)"
        )

        # its OPTIONS 503 takes it out of Kamailio's service
        await kamailio.until_flags(drained.sip_port, "IP", DETECTION_BOUND_S)
        assert drained.running and in_progress(drained) == 1, "its call goes on"

        long = await long_calls
        assert await drained.exited() == 0
        output = (await drain.communicate())[0].decode(errors="replace")
    finally:
        if not long_calls.done():
            long_calls.cancel()
            await asyncio.gather(long_calls, return_exceptions=True)
        if drain is not None and drain.returncode is None:
            drain.kill()
            await drain.wait()

    # the call in progress ended with its BYE (answered by the drained bridge, which alone
    # holds the dialog), and only then did the node exit, cleanly, without waiting any longer
    long.check()
    assert long.hung_up == {1, 2} and sorted(long.answered_by.values()) == sorted(
        [drained.sip_port, other.sip_port]
    )
    assert drain is not None and drain.returncode == 0 and "exited" in output, output
    assert ended(drained) - drained_before == 1 and in_progress(drained) == 0
    await until_ended(other, other_before + 2)  # its long call and the new one
    assert "drained: no call left" in drained.log_tail()
    assert not (drained.data_dir / "triage.pid").exists()


@pytest.mark.rasa
async def test_a_second_sigterm_ends_the_drain_at_once_with_a_bye_through_kamailio(
    cluster: Cluster,
) -> None:
    node = cluster.node_on(await cluster.kamailio.first_choice())
    assert node.proc is not None
    call = asyncio.create_task(
        place_calls(
            cluster.kamailio,
            cluster.work / "bridge-bye",
            calls=1,
            per_s=1,
            scenario=BRIDGE_HANGS_UP,
        )
    )
    try:
        await eventually("the call in progress", lambda: in_progress(node) == 1)
        node.proc.send_signal(signal.SIGTERM)

        async def says_draining() -> bool:
            return (await node.healthz())[0] == 503

        await eventually("the node drains", says_draining)
        assert node.running and not call.done(), "it waits for the call"
        node.proc.send_signal(signal.SIGTERM)
        assert await node.exited() == 0
        ended_call = await call
    finally:
        if not call.done():
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)

    # the bridge's BYE went to Kamailio along the route set, and on to the caller
    ended_call.check()
    assert ended_call.answered_by == {1: node.sip_port} and ended_call.hung_up == {1}
    assert through_kamailio("BYE", ended_call.messages, cluster.kamailio)
    assert "stop requested: ending 1 call(s)" in node.log_tail()
    assert (await cluster.kamailio.destinations())[node.sip_port].load == 0


@pytest.mark.rasa
async def test_a_drain_that_times_out_ends_the_call_in_progress_with_a_bye(
    cluster: Cluster,
) -> None:
    node = cluster.node_on(await cluster.kamailio.first_choice())
    await node.stop()
    node.drain_timeout_s = 1.0
    try:
        await node.start()
        await cluster.kamailio.until_flags(node.sip_port, "AP", DETECTION_BOUND_S)
        assert node.proc is not None
        call = asyncio.create_task(
            place_calls(
                cluster.kamailio,
                cluster.work / "timeout",
                calls=1,
                per_s=1,
                scenario=BRIDGE_HANGS_UP,
            )
        )
        try:
            await eventually("the call in progress", lambda: in_progress(node) == 1)
            node.proc.send_signal(signal.SIGTERM)
            assert await node.exited() == 0
            ended_call = await call
        finally:
            if not call.done():
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
    finally:
        node.drain_timeout_s = DRAIN_TIMEOUT_S  # as the other tests expect, once restarted

    ended_call.check()
    assert ended_call.answered_by == {1: node.sip_port} and ended_call.hung_up == {1}
    assert "drain timeout (1 s): ending 1 call(s)" in node.log_tail()


# --- `triage drain` without a node ----------------------------------------------------------


async def run_drain(data_dir: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env["TRIAGE_DATA_DIR"] = str(data_dir)
    drain = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "drain", "--timeout", "5",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await drain.communicate())[0].decode(errors="replace")
    assert drain.returncode is not None
    return drain.returncode, output


async def test_drain_without_a_node_says_so_and_fails(tmp_path: Path) -> None:
    status, output = await run_drain(tmp_path)
    assert status == 1 and "no node serves" in output and "triage.pid" in output


async def test_drain_leaves_alone_a_process_that_is_not_a_node(tmp_path: Path) -> None:
    other = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        (tmp_path / "triage.pid").write_text(f"{other.pid}\n")  # a stale file, a reused pid
        status, output = await run_drain(tmp_path)
        assert status == 1 and "not a running triage serve" in output, output
        state = Path(f"/proc/{other.pid}/stat").read_text().split()[2]
        assert state != "Z", "not signalled"
    finally:
        other.kill()
        await other.wait()
