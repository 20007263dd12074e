"""``triage drain``: take a node out of service without dropping its calls; and the pid file
through which the command finds the node.

``triage serve`` writes its pid to ``triage.pid`` in its data directory while it serves and
removes it when it exits. ``triage drain`` sends that process SIGTERM, which starts the drain
(``/healthz`` says ``draining``, the SIP bridge refuses new calls 503 and answers probes 503, the
calls in progress go on for up to ``TRIAGE_DRAIN_TIMEOUT_S``), then waits for it to exit: exit
status 0 once it has, 1 if there is no node to drain or it still runs at ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Final

from bot.config.settings import Settings
from bot.errors import ConfigError

PID_FILE: Final = "triage.pid"
STOP_MARGIN_S: Final = 60.0  # beyond the drain timeout: closing calls, Rasa and the database
PROGRESS_S: Final = 10.0  # how often the command says it is still waiting


def pid_file(data_dir: Path) -> Path:
    return data_dir / PID_FILE


def write_pid_file(path: Path) -> None:
    """Record this process as the node serving ``path``'s data directory (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(f"{os.getpid()}\n")
    partial.replace(path)


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it is still ours (another node may have started since)."""
    if read_pid(path) == os.getpid():
        path.unlink(missing_ok=True)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _serves(pid: int) -> bool:
    """Whether ``pid`` runs and is a ``triage serve`` (a stale file may name a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel whether the process exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return b"serve" in command.split(b"\0")


async def _exited(pid: int) -> None:
    """Return once process ``pid`` has exited (told by the kernel: a pidfd, Linux 5.3+)."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:  # a pidfd becomes readable when its process terminates
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(descriptor, readable)
    try:
        await gone
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)


async def cmd_drain(settings: Settings, args: argparse.Namespace) -> int:
    timeout_s = (
        args.timeout if args.timeout is not None else settings.drain_timeout_s + STOP_MARGIN_S
    )
    if timeout_s < 0:
        raise ConfigError(f"--timeout must be at least 0 s, not {timeout_s:g}")
    path = pid_file(settings.data_dir)
    pid = read_pid(path)
    if pid is None:
        print(f"triage drain: no node serves {settings.data_dir} (no {PID_FILE})", file=sys.stderr)
        return 1
    if not _serves(pid):
        print(
            f"triage drain: {path} names pid {pid}, which is not a running triage serve "
            "(a node that did not exit cleanly left it)",
            file=sys.stderr,
        )
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"triage drain: node pid {pid} exited meanwhile")
        return 0
    except PermissionError:
        print(f"triage drain: not allowed to signal pid {pid} (run as its user)", file=sys.stderr)
        return 1
    print(
        f"triage drain: node pid {pid} is draining: /healthz says draining, new calls get 503; "
        f"waiting up to {timeout_s:g} s for its calls to end and for it to exit "
        "(it waits for calls up to its TRIAGE_DRAIN_TIMEOUT_S)",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(_exited(pid), name="drain-wait-exit")
    try:
        while (left := started + timeout_s - loop.time()) > 0:
            done, _ = await asyncio.wait({waiting}, timeout=min(PROGRESS_S, left))
            if done:
                print(f"triage drain: node pid {pid} exited after {loop.time() - started:.1f} s")
                return 0
            print(
                f"triage drain: still waiting for node pid {pid} to exit "
                f"({loop.time() - started:.0f} s)",
                flush=True,
            )
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    print(
        f"triage drain: node pid {pid} still runs after {timeout_s:g} s; it goes on draining "
        f"(`kill -INT {pid}` stops it at once, ending its calls)",
        file=sys.stderr,
    )
    return 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "drain",
        help="take the node of the data directory out of service without dropping calls: "
        "SIGTERM, then wait for it to exit",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"how long to wait for the node to exit (default: TRIAGE_DRAIN_TIMEOUT_S + "
        f"{STOP_MARGIN_S:g})",
    )
    p.add_argument(
        "--data-dir",
        dest="command_data_dir",
        metavar="DATA_DIR",
        help="the data directory of the node to drain (default: ./var; env TRIAGE_DATA_DIR)",
    )
    p.set_defaults(run=cmd_drain)
