"""End-to-end turn latency through the gateway's HTTP API and Rasa.

Starts a complete runtime of its own on loopback (store in a temporary data directory, the action
webhook, Rasa supervised with the project's default model, the gateway's HTTP app), then for each
concurrency level (default 1, 10 and 50) runs that many simultaneous conversations. Each
conversation replays a scripted dialogue, in Italian or English, through
``POST /api/conversations/{id}/messages`` with the API bearer token: greetings, a self-service
flow with identification (demo customers CL100001/20123 and CL100003/10138), thanks, and a
request for a human (which hands the conversation over). A level stops after ``--turns-per-level``
turns in all (a conversation cut short by that budget just ends).

Per level it reports turn latency p50/p95/max as seen by the HTTP client, turns per second, and
the failures: any response that is not HTTP 200, or whose body has a non-null ``error`` (such
as ``nlu_unavailable`` when Rasa answers too slowly), or a request that raised. Turns whose
intent or reply differs from the script's expectation are counted apart as "unexpected" (an NLU
or dialogue finding, not a transport failure).

The model is the one ``ensure_model`` keeps in the project's ``var/models`` (trained there first
if the NLU data changed). Run from the project root:

    .venv/bin/python bench/turns.py
    .venv/bin/python bench/turns.py --levels 1,10 --turns-per-level 100 --json /tmp/turns.json

Only 127.0.0.1 is used; every loop is bounded. Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.channels.web.app import make_app
from bot.config.settings import Settings, load_settings
from bot.nlu.evaluation import free_port, percentile
from bot.nlu.training import TrainingInputs, ensure_model
from bot.runtime import open_runtime


@dataclass(frozen=True)
class Step:
    text: str
    intent: str | None = None  # expected intent; None: not checked (a bare slot value)
    reply_contains: str | None = None  # a substring one of the replies must contain


@dataclass(frozen=True)
class Script:
    name: str
    steps: tuple[Step, ...]


SCRIPTS = (
    Script(
        "it_balance",
        (
            Step("buongiorno", "greet"),
            Step("vorrei sapere quanto devo pagare", "check_balance"),
            Step("CL100001"),
            Step("20123", reply_contains="84,50"),
            Step("grazie mille", "thanks"),
        ),
    ),
    Script(
        "en_meter_reading",
        (
            Step("hello", "greet"),
            Step("I want to send my meter reading", "submit_meter_reading"),
            Step("CL100003"),
            Step("10138"),
            Step("30500", reply_contains="30500"),
            Step("thank you", "thanks"),
        ),
    ),
    Script(
        "it_human",
        (
            Step("salve", "greet"),
            Step("vorrei parlare con un operatore", "request_human"),
        ),
    ),
    Script(
        "en_balance",
        (
            Step("hi", "greet"),
            Step("how much do I owe?", "check_balance"),
            Step("my customer code is CL100003"),
            Step("10138", reply_contains="129.90"),
            Step("thanks", "thanks"),
        ),
    ),
    Script(
        "en_human",
        (
            Step("good morning", "greet"),
            Step("can I speak to a human agent please", "request_human"),
        ),
    ),
)


@dataclass
class LevelStats:
    level: int
    budget: int
    started: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    handoffs: int = 0
    conversations: int = 0
    samples: list[str] = field(default_factory=list)

    def claim(self) -> bool:
        """One more turn of this level's budget (the event loop is single-threaded: no lock)."""
        if self.started >= self.budget:
            return False
        self.started += 1
        return True

    def note(self, kind: Counter[str], key: str, sample: str) -> None:
        kind[key] += 1
        if len(self.samples) < 8:
            self.samples.append(sample)


async def send_turn(
    http: aiohttp.ClientSession,
    base_url: str,
    conversation_id: str,
    step: Step,
    script: str,
    stats: LevelStats,
) -> bool:
    """One turn; False when it failed (the conversation then stops)."""
    url = f"{base_url}/api/conversations/{conversation_id}/messages"
    started = time.perf_counter()
    try:
        async with http.post(url, json={"text": step.text, "channel": "api"}) as resp:
            status = resp.status
            body: Any = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        stats.note(stats.failures, type(exc).__name__, f"{script}: {step.text!r}: {exc!r}")
        return False
    stats.latencies_ms.append((time.perf_counter() - started) * 1000)
    if status != 200 or not isinstance(body, dict):
        stats.note(stats.failures, f"http {status}", f"{script}: {step.text!r}: {body!r:.200}")
        return False
    if body.get("error") is not None:
        stats.note(stats.failures, str(body["error"]), f"{script}: {step.text!r}: {body['error']}")
        return False
    if body.get("handoff_id"):
        stats.handoffs += 1
    intent = (body.get("intent") or {}).get("name")
    if step.intent is not None and intent != step.intent:
        stats.note(
            stats.unexpected,
            f"intent {step.intent} -> {intent}",
            f"{script}: {step.text!r} gave intent {intent}, expected {step.intent}",
        )
    if step.reply_contains is not None:
        texts = [str(r.get("text", "")) for r in body.get("replies") or []]
        if not any(step.reply_contains in t for t in texts):
            stats.note(
                stats.unexpected,
                f"{script}: reply without {step.reply_contains!r}",
                f"{script}: {step.text!r} replies {texts!r:.200}",
            )
    return True


async def conversation_worker(
    http: aiohttp.ClientSession, base_url: str, worker: int, run_id: str, stats: LevelStats
) -> None:
    """Replays scripts (rotating, one fresh conversation each) until the level's budget is spent."""
    max_rounds = stats.budget  # a hard bound; the budget ends the loop long before
    for round_no in range(max_rounds):
        script = SCRIPTS[(worker + round_no) % len(SCRIPTS)]
        conversation_id = f"b{run_id}-l{stats.level}-w{worker}-r{round_no}"
        if not stats.claim():
            return
        stats.conversations += 1
        for index, step in enumerate(script.steps):
            if index and not stats.claim():
                return
            if not await send_turn(http, base_url, conversation_id, step, script.name, stats):
                break


async def run_level(
    base_url: str, token: str, level: int, budget: int, timeout_s: float, run_id: str
) -> dict[str, Any]:
    stats = LevelStats(level=level, budget=budget)
    connector = aiohttp.TCPConnector(limit=max(100, level))
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        connector=connector,
    ) as http:
        started = time.perf_counter()
        await asyncio.gather(
            *(conversation_worker(http, base_url, w, run_id, stats) for w in range(level))
        )
        wall = time.perf_counter() - started
    lat = stats.latencies_ms
    return {
        "concurrency": level,
        "conversations": stats.conversations,
        "turns": len(lat),
        "failed": sum(stats.failures.values()),
        "failures": dict(stats.failures),
        "unexpected": sum(stats.unexpected.values()),
        "unexpected_kinds": dict(stats.unexpected),
        "handoffs": stats.handoffs,
        "p50_ms": round(percentile(lat, 0.5), 1),
        "p95_ms": round(percentile(lat, 0.95), 1),
        "max_ms": round(max(lat, default=0.0), 1),
        "turns_per_s": round(len(lat) / wall, 1) if wall > 0 else 0.0,
        "wall_s": round(wall, 1),
        "samples": stats.samples,
    }


def print_table(results: list[dict[str, Any]], start_s: float) -> None:
    print(f"\nruntime start (Rasa load, store, webhook): {start_s:.1f} s")
    header = (
        f"{'concurrency':>11} {'convs':>6} {'turns':>6} {'failed':>6} {'unexp':>6} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'turns/s':>8} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['concurrency']:>11} {r['conversations']:>6} {r['turns']:>6} {r['failed']:>6} "
            f"{r['unexpected']:>6} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} "
            f"{r['turns_per_s']:>8.1f} {r['wall_s']:>7.1f}"
        )
    for r in results:
        if r["failures"] or r["unexpected_kinds"]:
            print(f"\nconcurrency {r['concurrency']}:")
            for kind, n in {**r["failures"], **r["unexpected_kinds"]}.items():
                print(f"  {n:>4} x {kind}")
            for sample in r["samples"]:
                print(f"       e.g. {sample}")


@contextlib.asynccontextmanager
async def serve(app: web.Application, port: int) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


async def bench(args: argparse.Namespace) -> int:
    base = load_settings()
    model = await ensure_model(
        base.rasa_python, TrainingInputs.default(base.nlu_data_dir), base.models_dir
    )
    print(f"model: {model}", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="triage-bench-turns-") as tmp:
        settings: Settings = base.with_overrides(
            data_dir=Path(tmp),
            http_host="127.0.0.1",
            http_port=free_port(),
            rasa_port=free_port(),
            action_port=free_port(),
            database_url=args.database_url,
        )
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(
                open_runtime(settings, model=model, reuse_rasa=False)
            )
            await stack.enter_async_context(serve(make_app(runtime), settings.http_port))
            start_s = time.monotonic() - started
            base_url = f"http://127.0.0.1:{settings.http_port}"
            token = runtime.api_token
            run_id = secrets.token_hex(3)
            # warm-up, not counted: the first turns pay for lazy initialisation
            await run_level(base_url, token, 1, 5, args.timeout, run_id + "w")
            for level in args.levels:
                print(f"concurrency {level}: {args.turns_per_level} turns ...", flush=True)
                budget = args.turns_per_level
                results.append(
                    await run_level(base_url, token, level, budget, args.timeout, run_id)
                )
    print_table(results, start_s)
    print(
        f"\n{os.cpu_count()} CPUs; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"runtime_start_s": round(start_s, 1), "levels": results}, indent=2),
            encoding="utf-8",
        )
        print(f"figures written to {args.json}")
    return 1 if any(r["failed"] for r in results) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--levels", default="1,10,50", help="comma-separated concurrency levels (default 1,10,50)"
    )
    parser.add_argument(
        "--turns-per-level", type=int, default=300, help="turns per level, all conversations"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s")
    parser.add_argument(
        "--database-url",
        default="",
        help="store URL (default: a SQLite file in the temporary data directory)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--log-level",
        default="ERROR",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the gateway's log level (WARNING shows why a turn failed)",
    )
    args = parser.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        parser.error("--levels must be comma-separated integers")
    if not args.levels or any(not 1 <= n <= 500 for n in args.levels):
        parser.error("each level must be between 1 and 500")
    if not 1 <= args.turns_per_level <= 100_000:
        parser.error("--turns-per-level must be between 1 and 100000")
    return args


_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class ExtrasFormatter(logging.Formatter):
    """Shows the ``extra={...}`` fields the gateway logs with (such as why Rasa failed)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        return f"{text} {extras}" if extras else text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(ExtrasFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, args.log_level), handlers=[handler])
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
