"""The ``triage`` command: train, serve, drain, cluster, nlu, shell, eval, test, agents, domain,
models, say, call.

``triage serve`` stops at once on SIGINT (Ctrl-C); SIGTERM (``triage drain``, a service manager)
drains it first: ``/healthz`` says ``draining``, the SIP bridge refuses new calls and answers
probes 503, and the calls in progress may end for up to ``TRIAGE_DRAIN_TIMEOUT_S``; a second
SIGTERM (or a SIGINT) stops it then and there.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import signal
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from bot.cli.agents import ADMIN_ID, ensure_first_account
from bot.cli.agents import add_parsers as add_agent_parsers
from bot.cli.cluster import add_parsers as add_cluster_parsers
from bot.cli.domain import add_parsers as add_domain_parsers
from bot.cli.drain import add_parsers as add_drain_parsers
from bot.cli.drain import pid_file, remove_pid_file, write_pid_file
from bot.cli.voice import add_parsers as add_voice_parsers
from bot.config.phone_lines import load_phone_lines
from bot.config.settings import Settings, load_pack_selection, load_settings
from bot.errors import BotError, ConfigError
from bot.live.hub import Frame
from bot.nlu.client import ParseResult
from bot.nlu.training import TrainingInputs, ensure_model
from bot.packs.loader import PackError, load_pack
from bot.readiness import Readiness
from bot.runtime import open_runtime
from voice.errors import VoiceError
from voice.sip.agent import SipUserAgent

log = logging.getLogger("triage")

SIP_LINE = "sip"  # the readiness part of the phone line
# The commands that run the selected pack: each loads it first, so that one whose Python does not
# import stops them all, also those that never import it (training, the tests).
RUNS_THE_PACK = frozenset({"train", "serve", "nlu", "shell", "test", "call"})
DATA_DIR_HELP = "where the database, models and logs live (default: ./var; env TRIAGE_DATA_DIR)"


def nlu_record(parse: ParseResult, language: str | None, route: dict[str, str]) -> dict[str, Any]:
    """The JSON object ``triage nlu`` prints for one utterance (a contract: see the README)."""
    return {
        "text": parse.text,
        "language": language,
        "intent": {"name": parse.intent, "confidence": round(parse.confidence, 4)},
        "entities": [e.as_dict() for e in parse.entities],
        "route": route,
    }


async def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    model = await ensure_model(
        settings.rasa_python,
        TrainingInputs.default(settings.nlu_data_dir),
        settings.models_dir,
        force=args.force,
    )
    print(model)
    return 0


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    try:
        await _serve(settings)
    finally:
        remove_pid_file(pid_file(settings.data_dir))
    return 0


async def _serve(settings: Settings) -> None:
    async with open_runtime(settings, reuse_rasa=False) as runtime:
        from bot.channels.phone.line import open_phone_line
        from bot.channels.web.app import make_app

        app = make_app(runtime)
        runtime.readiness.expect(SIP_LINE)  # /healthz says not ready until the line answers
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        base = f"http://{settings.http_host}:{settings.http_port}"
        print(
            f"triage: HTTP on {base} (health: /healthz); Rasa on {', '.join(settings.rasa_urls)} "
            "(loopback only)"
        )
        print(f"triage: chat demo page {base}/chat/demo; widget script {base}/chat/widget.js")
        created = await ensure_first_account(runtime.store, settings, list(runtime.routing.queues))
        print(
            f"triage: agent console {base}/agent"
            + (
                f"; first start: sign in as {ADMIN_ID!r} with the password in "
                f"{settings.data_dir / 'admin_password'}"
                if created
                else ""
            )
        )
        print(
            f"triage: API token in {settings.data_dir / 'api_token'}"
            if not settings.api_token
            else "triage: API token from TRIAGE_API_TOKEN"
        )
        try:
            async with open_phone_line(
                settings, runtime.desk, runtime.pack.manifest.keyed_slots
            ) as line:
                runtime.readiness.ready(SIP_LINE)
                host, port = line.local_address[:2]
                lines = load_phone_lines(settings.phone_file)
                print(f"triage: phone line (SIP over UDP) on {host}:{port}; call")
                for language in ("it", "en"):
                    print(f"        sip:{lines.number_for(language)}@{host}:{port} ({language})")
                await _serve_until_stopped(settings, runtime.readiness, line)
                runtime.readiness.gone(SIP_LINE)
        finally:
            await runner.cleanup()


async def _serve_until_stopped(
    settings: Settings, readiness: Readiness, line: SipUserAgent
) -> None:
    """Serve until SIGINT, or until SIGTERM and a drain (see the module docstring)."""
    loop = asyncio.get_running_loop()
    stop_now, drain = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop_now.set)
    loop.add_signal_handler(signal.SIGTERM, lambda: (stop_now if drain.is_set() else drain).set())
    write_pid_file(pid_file(settings.data_dir))  # `triage drain` finds this process there
    print(
        "triage: press Ctrl-C to stop; SIGTERM (`triage drain`) lets the calls end first",
        flush=True,
    )
    # What is alive now (modules, the app, the store's engine, the speech models) lives as long
    # as the process: out of the garbage collector's reach, a full collection walks only what
    # came after. Under chat load, full collections over everything paused the gateway 80-120 ms.
    gc.collect()
    gc.freeze()
    stopping = asyncio.create_task(stop_now.wait(), name="serve-stop")
    draining = asyncio.create_task(drain.wait(), name="serve-drain")
    idle: asyncio.Task[bool] | None = None
    try:
        await asyncio.wait({stopping, draining}, return_when=asyncio.FIRST_COMPLETED)
        if stop_now.is_set():
            return
        readiness.drain()
        line.drain()
        timeout_s = settings.drain_timeout_s
        print(
            f"triage: draining: {line.stats.active_calls} call(s) in progress; waiting up to "
            f"{timeout_s:g} s for them to end (SIGTERM again or Ctrl-C stops at once)",
            flush=True,
        )
        idle = asyncio.create_task(line.wait_until_idle(timeout_s), name="serve-drain-idle")
        await asyncio.wait({stopping, idle}, return_when=asyncio.FIRST_COMPLETED)
        if idle.done() and idle.result():
            print("triage: drained: no call left; stopping", flush=True)
        else:
            left = line.stats.active_calls
            why = "stop requested" if stop_now.is_set() else f"drain timeout ({timeout_s:g} s)"
            print(f"triage: {why}: ending {left} call(s) in progress; stopping", flush=True)
    finally:
        tasks = [task for task in (stopping, draining, idle) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def cmd_nlu(settings: Settings, args: argparse.Namespace) -> int:
    async with open_runtime(settings, with_actions=False) as runtime:
        # the same language detection as the service's (with the pack's vocabulary)
        detect = runtime.conversations.language_detector.detect

        async def one(text: str) -> dict[str, Any]:
            parse = await runtime.nlu.parse(text)
            language = args.lang or detect(text)
            route = runtime.routing.route_for(parse.intent).as_dict()
            return nlu_record(parse, language, route)

        if args.text:
            record = await one(" ".join(args.text))
            if args.json:
                print(json.dumps(record, ensure_ascii=False))
            else:
                _print_nlu(record, sys.stdout)
            return 0
        for line in sys.stdin:
            text = line.strip()
            if text:
                print(json.dumps(await one(text), ensure_ascii=False), flush=True)
    return 0


def _print_nlu(record: dict[str, Any], out: TextIO) -> None:
    intent = record["intent"]
    route = record["route"]
    print(f"language:  {record['language'] or 'undetected'}", file=out)
    print(f"intent:    {intent['name']} ({intent['confidence']:.2f})", file=out)
    for e in record["entities"]:
        print(f"entity:    {e['entity']} = {e['value']}", file=out)
    print(f"route:     {route['kind']} -> {route['name']}", file=out)


def queue_line(frame: Frame) -> str:
    """What the chat widget shows a waiting customer, for a ``queue`` frame of the desk."""
    label = frame["label"]
    if not frame["open"]:
        return f"queue> The queue for {label} is currently closed."
    line = f"queue> You are number {frame['position']} in the queue for {label}."
    if frame["eta_s"] is None:
        return line + " No agent is available now to estimate the wait."
    minutes = max(1, math.floor(frame["eta_s"] / 60 + 0.5))  # rounded as the widget does
    return line + f" Estimated wait: about {minutes} minute{'' if minutes == 1 else 's'}."


async def cmd_shell(settings: Settings, args: argparse.Namespace) -> int:
    async with open_runtime(settings) as runtime:
        desk = runtime.desk
        conversation_id = f"cli-{uuid.uuid4().hex[:12]}"
        print(f"triage shell: conversation {conversation_id}. Type your message; Ctrl-D ends.")
        while True:
            try:
                text = await asyncio.to_thread(input, "you> ")
            except EOFError:
                print()
                return 0
            turn = await runtime.conversations.handle(
                conversation_id, text, channel="cli", language=args.lang
            )
            for reply in turn.replies:
                print(f"bot> {reply.text}")
                for i, (title, _payload) in enumerate(reply.buttons, 1):
                    print(f"     [{i}] {title}")
            if turn.error:
                print(f"     (error: {turn.error})")
            elif turn.route is not None:
                print(
                    f"     ({turn.intent} {turn.confidence:.2f} -> "
                    f"{turn.route.kind.value}:{turn.route.name})"
                )
            if turn.handoff_id:
                print(
                    f"     (handoff envelope {turn.handoff_id} stored; "
                    f"GET /api/handoffs/{turn.handoff_id})"
                )
            # after every line: the place changes as agents serve the queue (`triage serve`)
            for frame in await desk.status_frames(conversation_id):
                if frame["type"] == "queue":
                    print(queue_line(frame))


async def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from bot.nlu.evaluation import evaluate_files, format_report

    report = await evaluate_files(
        settings, Path(args.train), Path(args.test), Path(args.config) if args.config else None
    )
    if args.json:
        print(format_report(report), file=sys.stderr)
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


async def cmd_test(settings: Settings, args: argparse.Namespace) -> int:
    from bot.nlu.evaluation import run_project_tests

    return await run_project_tests(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage",
        description="Voicebot and chatbot triage for contact centers: understand, self-serve, "
        "route to the right human queue with the whole context.",
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train the Rasa model if its data changed (cached by hash)")
    p.add_argument("--force", action="store_true", help="train even if a cached model exists")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("serve", help="start the gateway and the Rasa server it supervises")
    p.add_argument("--http-port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--http-host", help="HTTP address (default 127.0.0.1)")
    p.add_argument(
        "--sip-port",
        type=int,
        help="SIP port of the phone line (default 5060; env TRIAGE_SIP_PORT)",
    )
    # the global option, also accepted here (its own dest: a subcommand's default would
    # overwrite the value given before the command)
    p.add_argument("--data-dir", dest="command_data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.set_defaults(run=cmd_serve)
    add_drain_parsers(sub)
    add_cluster_parsers(sub)

    p = sub.add_parser("nlu", help="intent, confidence, entities and route of utterances")
    p.add_argument("--lang", choices=("it", "en"), help="language (default: detected)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "text", nargs="*", help="the utterance; without it, one per stdin line (JSON lines out)"
    )
    p.set_defaults(run=cmd_nlu)

    p = sub.add_parser("shell", help="talk to the bot in the terminal, showing routes")
    p.add_argument("--lang", choices=("it", "en"), help="language (default: detected)")
    p.set_defaults(run=cmd_shell)

    p = sub.add_parser("eval", help="train the default NLU pipeline on one file, test on another")
    p.add_argument("--train", required=True, help="Rasa NLU YAML file to train on")
    p.add_argument("--test", required=True, help="Rasa NLU YAML file to test on")
    p.add_argument("--config", help="pipeline config (default: nlu_data/config.yml)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("test", help="the project's NLU evaluation and conversation tests")
    p.set_defaults(run=cmd_test)
    add_agent_parsers(sub)
    add_domain_parsers(sub)
    add_voice_parsers(sub)
    return parser


def data_dir_of(args: argparse.Namespace) -> Path | None:
    """The ``--data-dir`` given before the command or after it; given twice, both must agree."""
    given = [args.data_dir, getattr(args, "command_data_dir", None)]
    dirs = list(dict.fromkeys(Path(d).absolute() for d in given if d))
    if len(dirs) > 1:
        raise ConfigError(
            f"--data-dir is given before the command as {dirs[0]} and after it as {dirs[1]}: "
            "give one directory"
        )
    return dirs[0] if dirs else None


def settings_for(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The environment's settings (``env``, by default the process's) with the options given."""
    return load_settings(env).with_overrides(
        data_dir=data_dir_of(args),
        http_port=getattr(args, "http_port", None),
        http_host=getattr(args, "http_host", None),
        sip_port=getattr(args, "sip_port", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "domain":
            # what diagnoses a pack must run when it does not load: no settings, only its selection
            return int(asyncio.run(args.run(load_pack_selection(), args)))
        settings = settings_for(args)
        if args.command in RUNS_THE_PACK:
            load_pack(settings.domain)
        return int(asyncio.run(args.run(settings, args)))
    except PackError as exc:
        print(
            f"triage: {exc}; `triage domain check {exc.pack}` lists every problem", file=sys.stderr
        )
        return 2
    except (BotError, VoiceError) as exc:
        print(f"triage: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
