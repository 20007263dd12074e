"""``RasaSupervisor``: runs the Rasa server on loopback, restarts it when it dies, reports health.

Rasa keeps its dialogue trackers (``triage_rasa.tracker_store``) in SQLite in the data directory
or, in a cluster (``tracker_db_url``), in the shared PostgreSQL, where any node's Rasa can
continue any conversation; either way a restart of the Rasa process does not lose the state of
the conversations in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import signal
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.errors import ConfigError, NluUnavailable
from bot.nlu.training import RASA_LAUNCHER_MODULE, rasa_env

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# Classes of the triage-rasa package (rasa_side/), installed in the Rasa environment; the gateway
# names them and never imports them.
TRACKER_STORE = "triage_rasa.tracker_store.TriageTrackerStore"
TRIAGE_CHANNEL = "triage_rasa.channel.TriageChannel"


class RasaState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"


@dataclass(frozen=True)
class RasaHealth:
    state: RasaState
    pid: int | None
    restarts: int
    model: str
    last_exit_code: int | None


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM if the gateway dies, even by
    SIGKILL, so no orphaned Rasa keeps holding its port."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


DATABASE_URL_KEY = "TRIAGE_DATABASE_URL"  # where the URL given to the supervisor comes from
# libpq's names of asyncpg's ``ssl`` modes (the same words)
LIBPQ_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# query parameters of SQLAlchemy's asyncpg dialect that mean nothing to libpq
ASYNCPG_ONLY_PARAMETERS = frozenset(
    {"prepared_statement_cache_size", "prepared_statement_name_func"}
)


def libpq_url(database_url: str) -> str:
    """The gateway's PostgreSQL URL (``postgresql+asyncpg://...``) as the libpq URL that Rasa's
    tracker store connects with (psycopg2): same user, password, host, port and database."""
    try:
        url = make_url(database_url)
    except ArgumentError:  # its message quotes the URL, password and all
        raise ConfigError(f"{DATABASE_URL_KEY} cannot be parsed as a URL") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{DATABASE_URL_KEY}: Rasa's trackers are shared in PostgreSQL only, "
            f"not {url.get_backend_name()}"
        )
    query: dict[str, str | tuple[str, ...]] = {
        key: value for key, value in url.query.items() if key not in ASYNCPG_ONLY_PARAMETERS
    }
    ssl = query.pop("ssl", None)
    if ssl is not None:
        if ssl not in LIBPQ_SSL_MODES:
            raise ConfigError(f"{DATABASE_URL_KEY}: ssl={ssl!r} is not one of libpq's ssl modes")
        query["sslmode"] = ssl
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def write_endpoints(
    path: Path, action_url: str, tracker_db: Path, tracker_db_url: str | None = None
) -> None:
    """Rasa's endpoints: the gateway's action webhook, and the project's tracker store, on the
    SQLite file ``tracker_db`` or, given ``tracker_db_url`` (a libpq URL), on PostgreSQL. The
    file may hold the database password: only its owner may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if tracker_db_url:
        where = f"  url: {json.dumps(tracker_db_url)}\n"
    else:
        where = f"  db: {json.dumps(str(tracker_db))}\n"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(
        "# Written by triage serve; edits are overwritten.\n"
        f"action_endpoint:\n  url: {action_url!r}\n"
        # Our actions never read the domain: do not serialise it into every action call.
        "  enable_selective_domain: true\n"
        # triage_rasa.tracker_store: durable in SQLite or PostgreSQL, live trackers in memory
        f"tracker_store:\n  type: {TRACKER_STORE!r}\n{where}",
        encoding="utf-8",
    )


def write_credentials(path: Path) -> None:
    """The input channels: the project's own (triage_rasa.channel) for the gateway's turns,
    and Rasa's REST channel for trying a model by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Written by triage serve; edits are overwritten.\n{TRIAGE_CHANNEL}:\nrest:\n",
        encoding="utf-8",
    )


class RasaSupervisor:
    def __init__(
        self,
        rasa_python: Path,
        model: Path,
        port: int,
        data_dir: Path,
        action_url: str,
        start_timeout_s: float = 180.0,
        worker: int = 0,
        tracker_db_url: str | None = None,
    ) -> None:
        """``tracker_db_url``: the gateway's PostgreSQL URL (``postgresql+asyncpg://...``) to
        keep Rasa's trackers in, shared by the nodes of a cluster; None: SQLite in
        ``data_dir``."""
        self.rasa_python = rasa_python
        self.tracker_db_url = libpq_url(tracker_db_url) if tracker_db_url else None
        self.worker = worker
        self.log_path = data_dir / "logs" / ("rasa.log" if worker == 0 else f"rasa-{worker}.log")
        self.model = model
        self.port = port
        self.data_dir = data_dir
        self.action_url = action_url
        self.start_timeout_s = start_timeout_s
        self.state = RasaState.STOPPED
        self.restarts = 0
        self.last_exit_code: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> RasaHealth:
        return RasaHealth(
            self.state,
            self._proc.pid if self._proc else None,
            self.restarts,
            self.model.name,
            self.last_exit_code,
        )

    async def start(self) -> None:
        """Start Rasa and wait until it has loaded the model; then watch it."""
        await self._spawn()
        await self._wait_ready()
        self._watch = asyncio.create_task(self._supervise(), name="rasa-supervisor")

    async def _spawn(self) -> None:
        endpoints = self.data_dir / "rasa" / "endpoints.yml"
        write_endpoints(
            endpoints,
            self.action_url,
            self.data_dir / "rasa" / "trackers.db",
            self.tracker_db_url,
        )
        credentials = self.data_dir / "rasa" / "credentials.yml"
        write_credentials(credentials)
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        args = [
            "run",
            "--enable-api",
            "--model",
            str(self.model),
            "--port",
            str(self.port),
            "--interface",
            "127.0.0.1",
            "--endpoints",
            str(endpoints),
            "--credentials",
            str(credentials),
        ]
        self._ready.clear()
        self.state = RasaState.STARTING
        with log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                str(self.rasa_python),
                "-m",
                RASA_LAUNCHER_MODULE,
                *args,
                cwd=self.data_dir / "rasa",
                env=rasa_env(),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        trackers = "postgresql" if self.tracker_db_url else "sqlite"  # never the URL: a password
        log.info(
            "rasa starting", extra={"pid": self._proc.pid, "port": self.port, "trackers": trackers}
        )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.returncode is not None:
                    self.last_exit_code = self._proc.returncode
                    raise NluUnavailable(
                        f"Rasa exited with {self._proc.returncode} while starting; "
                        f"see {self.log_path}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with http.get(f"{self.url}/status") as resp:
                        if resp.status == 200 and (await resp.json()).get("model_file"):
                            self.state = RasaState.READY
                            self._ready.set()
                            log.info("rasa ready", extra={"port": self.port})
                            return
                await asyncio.sleep(0.5)
        raise NluUnavailable(f"Rasa did not become ready in {self.start_timeout_s:.0f} s")

    async def _supervise(self) -> None:
        while True:
            proc = self._proc
            if proc is None:
                return
            code = await proc.wait()
            self.last_exit_code = code
            self.state = RasaState.RESTARTING
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            log.error("rasa exited; restarting", extra={"exit_code": code, "delay_s": delay})
            await asyncio.sleep(delay)
            self.restarts += 1
            try:
                await self._spawn()
                await self._wait_ready()
            except NluUnavailable:
                log.exception("rasa restart failed")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.state = RasaState.STOPPED
