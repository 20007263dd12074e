"""Concurrent chat customers over the WebSocket: bot-reply latency, throughput, nothing lost.

Starts a complete gateway of its own on loopback (temporary data directory, the action webhook,
Rasa supervised with the project's default model), then keeps ``--customers`` chat customers
connected at once for ``--duration-s`` seconds. Each customer opens ``/chat/ws``, replays one of
the scripted conversations of ``bench/turns.py`` (Italian or English: greetings, identification,
self-service flows, requests for a person), pausing a think time between messages (uniform in
``--think-s MIN,MAX``, as people read and type), then starts a new conversation. Starts are
spread over the first think time.

Reported: bot-reply latency (from sending a message to the first bot message that follows it)
p50/p95/p99/max, the ack latency (the message is stored), customer messages per second, and
the loss check: every message a client sent must be acked and stored exactly once (the server's
count of this run's messages equals the client's).

    .venv/bin/python bench/chat_load.py                       # 200 customers, 120 s
    .venv/bin/python bench/chat_load.py --customers 50 --think-s 2,4 --duration-s 60

Only 127.0.0.1 is used; every wait is bounded. Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select
from turns import SCRIPTS, serve  # bench/ is on sys.path when this file is run

from bot.config import load_settings
from bot.nlu.evaluation import free_port, percentile
from bot.nlu.training import TrainingInputs, ensure_model
from bot.runtime import open_runtime
from bot.store.tables import Message
from bot.web.app import make_app

REPLY_TIMEOUT_S = 30.0


@dataclass
class Stats:
    reply_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    no_reply: int = 0
    errors: list[str] = field(default_factory=list)
    conversations: int = 0
    client_ids: set[str] = field(default_factory=set)


async def customer(
    session: aiohttp.ClientSession,
    url: str,
    run_id: str,
    think: tuple[float, float],
    deadline: float,
    stats: Stats,
    rng: random.Random,
) -> None:
    await asyncio.sleep(rng.uniform(0, think[1]))
    while time.monotonic() < deadline:
        script = rng.choice(SCRIPTS)
        lang = "en" if script.name.startswith("en") else "it"
        try:
            async with session.ws_connect(url, max_msg_size=0) as ws:
                await ws.send_json({"type": "hello", "v": 1, "lang": lang, "resume": None})
                welcome = await ws.receive_json(timeout=REPLY_TIMEOUT_S)
                if welcome.get("type") != "welcome":
                    stats.errors.append(f"no welcome: {welcome}")
                    return
                stats.conversations += 1
                for step in script.steps:
                    if time.monotonic() >= deadline:
                        break
                    await one_message(ws, step.text, run_id, stats)
                    await asyncio.sleep(rng.uniform(*think))
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors.append(type(exc).__name__)
            await asyncio.sleep(1)


async def one_message(
    ws: aiohttp.ClientWebSocketResponse, text: str, run_id: str, stats: Stats
) -> None:
    client_id = f"{run_id}-{secrets.token_hex(6)}"
    started = time.perf_counter()
    await ws.send_json({"type": "message", "id": client_id, "text": text})
    stats.sent += 1
    stats.client_ids.add(client_id)
    acked = replied = False
    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while not (acked and replied):
                frame = await ws.receive_json()
                kind = frame.get("type")
                if kind == "ack" and frame.get("id") == client_id:
                    acked = True
                    stats.acked += 1
                    stats.ack_ms.append((time.perf_counter() - started) * 1000)
                elif kind == "message" and frame.get("sender") in ("bot", "system") and acked:
                    replied = True
                    stats.reply_ms.append((time.perf_counter() - started) * 1000)
                elif kind == "queue" and acked:
                    replied = True  # waiting for a person: later messages get no bot reply
                elif kind == "error":
                    stats.errors.append(str(frame.get("code")))
                    return
    except TimeoutError:
        stats.no_reply += 1
    # drain what else the turn produced (queue updates, more replies) without waiting long
    with contextlib.suppress(TimeoutError):
        while True:
            await ws.receive_json(timeout=0.05)


async def bench(args: argparse.Namespace) -> int:
    base = load_settings()
    model = await ensure_model(
        base.rasa_python, TrainingInputs.default(base.nlu_data_dir), base.models_dir
    )
    print(f"model: {model}", flush=True)
    with tempfile.TemporaryDirectory(prefix="triage-bench-chat-") as tmp:
        settings = base.with_overrides(
            data_dir=Path(tmp),
            http_port=free_port(),
            rasa_port=free_port(),
            action_port=free_port(),
            database_url=args.database_url,
            chat_rate_per_s=100.0,
            chat_burst=100,
        )
        async with contextlib.AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(
                open_runtime(settings, model=model, reuse_rasa=False)
            )
            await stack.enter_async_context(serve(make_app(runtime), settings.http_port))
            url = f"http://127.0.0.1:{settings.http_port}/chat/ws"
            connector = aiohttp.TCPConnector(limit=0)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            run_id = secrets.token_hex(3)
            warm = Stats()
            await customer(
                session, url, run_id + "w", (0, 0), time.monotonic() + 3, warm, random.Random(1)
            )
            stats = Stats()
            rng = random.Random(args.seed)
            print(
                f"{args.customers} customers for {args.duration_s:.0f} s, think time "
                f"{args.think[0]}-{args.think[1]} s ...",
                flush=True,
            )
            started = time.monotonic()
            deadline = started + args.duration_s
            await asyncio.gather(
                *(
                    customer(
                        session,
                        url,
                        run_id,
                        args.think,
                        deadline,
                        stats,
                        random.Random(rng.random()),
                    )
                    for _ in range(args.customers)
                )
            )
            elapsed = time.monotonic() - started
            async with runtime.store.session() as s:
                stored = await s.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.sender == "user", Message.client_id.like(f"{run_id}-%"))
                )
    figures = report(args, stats, elapsed, int(stored or 0))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0 if figures["lost"] == 0 and not figures["no_reply"] else 1


def report(args: argparse.Namespace, stats: Stats, elapsed: float, stored: int) -> dict[str, Any]:
    def pct(values: list[float], p: float) -> float:
        return round(percentile(values, p), 1) if values else float("nan")

    figures = {
        "customers": args.customers,
        "duration_s": round(elapsed, 1),
        "think_s": list(args.think),
        "conversations": stats.conversations,
        "messages_sent": stats.sent,
        "messages_acked": stats.acked,
        "messages_stored": stored,
        "lost": stats.sent - stored,
        "no_reply": stats.no_reply,
        "errors": len(stats.errors),
        "messages_per_s": round(stats.sent / elapsed, 2),
        "reply_ms": {
            p: pct(stats.reply_ms, q)
            for p, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
        },
        "ack_ms": {p: pct(stats.ack_ms, q) for p, q in (("p50", 0.5), ("p95", 0.95))},
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    r, a = figures["reply_ms"], figures["ack_ms"]
    print(
        f"\ncustomers {args.customers}, {elapsed:.0f} s, think "
        f"{args.think[0]}-{args.think[1]} s: {stats.conversations} conversations, "
        f"{stats.sent} messages ({figures['messages_per_s']}/s)"
    )
    print(f"bot reply ms  p50 {r['p50']}  p95 {r['p95']}  p99 {r['p99']}  max {r['max']}")
    print(f"ack ms        p50 {a['p50']}  p95 {a['p95']}")
    print(
        f"sent {stats.sent}, acked {stats.acked}, stored {stored}, lost {figures['lost']}, "
        f"no reply {stats.no_reply}, errors {len(stats.errors)} {sorted(set(stats.errors))[:5]}"
    )
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=200, help="concurrent customers")
    parser.add_argument("--duration-s", type=float, default=120.0, help="how long to run")
    parser.add_argument(
        "--think-s", default="10,20", help="think time between messages, MIN,MAX seconds"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.think_s.split(","))
    args.think = (low, high)
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
