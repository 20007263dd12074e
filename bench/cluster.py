"""The cluster's benchmarks: what a message costs the shared engines, the overhead of cluster
mode under chat load, failover after a node is killed, and the capacity model built on them.

Three phases, each runnable alone (``--phases``):

* ``costs``: a clustered node in this process (PostgreSQL, Redis, its supervised Rasa), with a
  live socket subscribed to each conversation, replays the scripted conversations of
  ``bench/turns.py`` through the desk (the chat's hot path), then messages to an agent during a
  handoff. Counted per customer message: the gateway's PostgreSQL round trips (statements,
  BEGINs and COMMITs, by SQLAlchemy's events on its engine), all transactions in the database
  (``pg_stat_database``, so Rasa's tracker store too), Redis publications and other Redis
  commands (the server's ``INFO commandstats``), and bytes published.
* ``overhead``: ``bench/chat_load.py``'s customers (200 by default) against one node on SQLite,
  then against two nodes on PostgreSQL and Redis behind HAProxy, in the same run: bot-reply
  p95 of each and their ratio (target: at most 1.3), and nothing lost.
* ``failover``: ``--reps`` times, customers connected to one node, mid-conversation, the node
  killed (SIGKILL) while their messages are in flight; each reconnects through the proxy and
  resumes. Measured: seconds from reconnecting to being back in the conversation (welcome with
  ``resumed``), and acked messages lost (an acked message that is not stored or never answered).

    .venv/bin/python bench/cluster.py                          # all three phases
    .venv/bin/python bench/cluster.py --phases costs --conversations 40

Needs PostgreSQL on 127.0.0.1:5432 (trust), Redis (``--redis-url``), haproxy and the Rasa
environment. Each phase makes its own database and drops it. Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import redis.asyncio as aioredis
from sqlalchemy import event
from turns import SCRIPTS  # bench/ is on sys.path when this file is run

from bot.config.settings import PROJECT_ROOT, Settings, load_settings
from bot.nlu.evaluation import free_port
from bot.nlu.training import TrainingInputs, ensure_model
from bot.runtime import open_runtime

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# set while the desk handles a customer message: what runs then is the message's hot path (the
# actions of a flow run in the action webhook's own tasks, counted apart)
HOT_PATH: contextvars.ContextVar[bool] = contextvars.ContextVar("hot_path", default=False)
COUNTS: EngineCounts  # the hot path's counts (set by ``costs``)
PER_MESSAGE: list[int] = []  # hot-path round trips of each customer message


async def one_message(desk: Any, conversation_id: str, text: str) -> None:
    before = COUNTS.round_trips
    token = HOT_PATH.set(True)
    try:
        await desk.customer_message(
            conversation_id, text, channel="chat", client_id=secrets.token_hex(6)
        )
    finally:
        HOT_PATH.reset(token)
    PER_MESSAGE.append(COUNTS.round_trips - before)
ASYNCPG_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/"


@contextlib.asynccontextmanager
async def fresh_database(prefix: str) -> Any:
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def pg_transactions(database: str) -> int:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        # the statistics collector reports with a delay: ask it to flush what it has
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        row = await admin.fetchrow(
            "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = $1",
            database,
        )
        return int(row["n"]) if row else 0
    finally:
        await admin.close()


async def redis_commands(url: str) -> dict[str, int]:
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@dataclass
class EngineCounts:
    statements: int = 0
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0

    @property
    def round_trips(self) -> int:
        return self.statements + self.begins + self.commits + self.rollbacks

    def minus(self, other: EngineCounts) -> EngineCounts:
        return EngineCounts(
            self.statements - other.statements,
            self.begins - other.begins,
            self.commits - other.commits,
            self.rollbacks - other.rollbacks,
        )


@dataclass
class Phase:
    messages: int = 0
    engine: EngineCounts = field(default_factory=EngineCounts)
    engine_all: EngineCounts = field(default_factory=EngineCounts)
    pg_transactions: int = 0
    redis: dict[str, int] = field(default_factory=dict)
    published_bytes: int = 0
    per_message: list[int] = field(default_factory=list)


def per_message(phase: Phase) -> dict[str, Any]:
    n = max(1, phase.messages)
    publish = phase.redis.get("publish", 0)
    other = sum(v for k, v in phase.redis.items() if k != "publish")
    return {
        "messages": phase.messages,
        "gateway_pg_round_trips": round(phase.engine.round_trips / n, 2),
        "gateway_pg_statements": round(phase.engine.statements / n, 2),
        "gateway_pg_round_trips_distribution": {
            str(k): phase.per_message.count(k) for k in sorted(set(phase.per_message))
        },
        "gateway_pg_transactions": round(phase.engine.commits / n, 2),
        "gateway_pg_round_trips_with_actions_and_background": round(
            phase.engine_all.round_trips / n, 2
        ),
        "all_pg_transactions": round(phase.pg_transactions / n, 2),
        "redis_publications": round(publish / n, 2),
        "redis_bytes_published": round(phase.published_bytes / n),
        "redis_other_commands": round(other / n, 2),
        "redis_commands_by_name": {k: round(v / n, 2) for k, v in sorted(phase.redis.items())},
    }


async def costs(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    base = load_settings()
    async with fresh_database("triage_bench_costs") as database:
        with tempfile.TemporaryDirectory(prefix="triage-bench-costs-") as tmp:
            settings = Settings(
                data_dir=Path(tmp),
                routing_file=open_around_the_clock(base.routing_file, Path(tmp)),
                database_url=ASYNCPG_BASE + database,
                redis_url=args.redis_url,
                node_id="bench",
                rasa_workers=1,
                rasa_port=free_port(),
                action_port=free_port(),
                rasa_python=base.rasa_python,
                api_token="bench",
                chat_rate_per_s=1000,
                chat_burst=1000,
            )
            async with open_runtime(settings, reuse_rasa=False, model=model) as runtime:
                global COUNTS
                counts = COUNTS = EngineCounts()  # in the turn itself (HOT_PATH set)
                everything = EngineCounts()  # also the actions of flows and background work
                sync_engine = runtime.store.engine.sync_engine

                def on_statement(*_: Any) -> None:
                    everything.statements += 1
                    if HOT_PATH.get():
                        counts.statements += 1

                def on(kind: str) -> Any:
                    def count(conn: Any, *_: Any) -> None:
                        # a session for one statement runs in autocommit: its BEGIN and COMMIT
                        # events send nothing to the server
                        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                            return
                        setattr(everything, kind, getattr(everything, kind) + 1)
                        if HOT_PATH.get():
                            setattr(counts, kind, getattr(counts, kind) + 1)

                    return count

                event.listen(sync_engine, "before_cursor_execute", on_statement)
                event.listen(sync_engine, "begin", on("begins"))
                event.listen(sync_engine, "commit", on("commits"))
                event.listen(sync_engine, "rollback", on("rollbacks"))
                desk = runtime.desk
                await desk.run_recovery()  # waits for Rasa
                # warm-up (not counted): prepared statements, caches, Rasa's first turns
                await replay(desk, args.conversations // 4 or 1, "warm")
                bot = await measured(desk, counts, everything, database, args, "bot")
                relayed = await measured(desk, counts, everything, database, args, "relayed")
    return {"bot_turns": per_message(bot), "messages_in_a_handoff": per_message(relayed)}


def open_around_the_clock(routing_file: Path, work: Path) -> Path:
    """The pack's routing with every queue open at all hours: the figures must not depend on
    the time of day the bench runs at (a closed queue offers a callback instead)."""
    import yaml

    doc = yaml.safe_load(routing_file.read_text(encoding="utf-8"))
    for queue in doc["queues"].values():
        queue["hours"] = {"mon-sun": "00:00-24:00"}
    path = work / "routing.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


async def replay(desk: Any, conversations: int, run: str) -> int:
    """The scripted conversations through the desk, a live socket on each; returns messages."""
    sent = 0
    for i in range(conversations):
        script = SCRIPTS[i % len(SCRIPTS)]
        conversation_id = f"bench-{run}-{i}-{secrets.token_hex(3)}"
        sub = desk.hub.join_conversation(conversation_id)
        try:
            for step in script.steps:
                await one_message(desk, conversation_id, step.text)
                sent += 1
        finally:
            desk.hub.leave_conversation(conversation_id, sub)
    return sent


async def in_handoff(desk: Any, conversations: int, per_conversation: int) -> int:
    """Customers who asked for a person write while they wait or talk to the agent."""
    sent = 0
    for i in range(conversations):
        conversation_id = f"bench-handoff-{i}-{secrets.token_hex(3)}"
        sub = desk.hub.join_conversation(conversation_id)
        try:
            await desk.customer_message(conversation_id, "voglio parlare con un operatore",
                                        channel="chat", client_id=secrets.token_hex(6))
            await asyncio.sleep(0.5)  # the queue updates of the new handoff are out
            for j in range(per_conversation):
                await one_message(desk, conversation_id, f"messaggio {j}")
                sent += 1
        finally:
            desk.hub.leave_conversation(conversation_id, sub)
    return sent


async def measured(
    desk: Any,
    counts: EngineCounts,
    everything: EngineCounts,
    database: str,
    args: argparse.Namespace,
    kind: str,
) -> Phase:
    await asyncio.sleep(0.5)  # publications of what came before are out
    engine_before = EngineCounts(**vars(counts))
    all_before = EngineCounts(**vars(everything))
    PER_MESSAGE.clear()
    pg_before = await pg_transactions(database)
    redis_before = await redis_commands(args.redis_url)
    published_before = getattr(desk.hub, "published_bytes", 0)
    if kind == "bot":
        messages = await replay(desk, args.conversations, "bot")
    else:
        messages = await in_handoff(desk, max(1, args.conversations // 4), 8)
    await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # PostgreSQL's statistics are reported about once a second
    redis_after = await redis_commands(args.redis_url)
    phase = Phase(
        messages=messages,
        engine=counts.minus(engine_before),
        engine_all=everything.minus(all_before),
        pg_transactions=await pg_transactions(database) - pg_before,
        redis={
            k: v - redis_before.get(k, 0)
            for k, v in redis_after.items()
            if v - redis_before.get(k, 0) and k not in ("info",)
        },
    )
    phase.published_bytes = getattr(desk.hub, "published_bytes", 0) - published_before
    phase.per_message = list(PER_MESSAGE)
    return phase


# --- overhead: chat load on one node against two nodes behind the proxy --------------------


async def chat_load_on(url: str, args: argparse.Namespace, run_id: str) -> Any:
    """``bench/chat_load.py``'s customers against ``url`` (a node or the proxy)."""
    import random

    import aiohttp
    from chat_load import Stats, customer

    ws_url = url.replace("http://", "ws://") + "/chat/ws"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await customer(session, ws_url, run_id + "w", (0, 0), time.monotonic() + 3, Stats(),
                       random.Random(1))
        stats = Stats()
        rng = random.Random(args.seed)
        started = time.monotonic()
        deadline = started + args.duration_s
        await asyncio.gather(
            *(
                customer(session, ws_url, run_id, args.think, deadline, stats,
                         random.Random(rng.random()))
                for _ in range(args.customers)
            )
        )
        return stats, time.monotonic() - started


def load_figures(stats: Any, elapsed: float, stored: int) -> dict[str, Any]:
    from bot.nlu.evaluation import percentile

    def pct(values: list[float], p: float) -> float:
        return round(percentile(values, p), 1) if values else float("nan")

    return {
        "messages_sent": stats.sent,
        "messages_acked": stats.acked,
        "messages_stored": stored,
        "lost": stats.sent - stored,
        "no_reply": stats.no_reply,
        "errors": len(stats.errors),
        "messages_per_s": round(stats.sent / elapsed, 2),
        "reply_ms": {p: pct(stats.reply_ms, q)
                     for p, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
    }


async def stored_of_run(database_url: str, run_id: str) -> int:
    from sqlalchemy import func, select

    from bot.store.sql.store import SqlStore
    from bot.store.sql.tables import Message

    store = await SqlStore.open(database_url, create=False)
    try:
        async with store.session() as s:
            count = await s.scalar(
                select(func.count()).select_from(Message).where(
                    Message.sender == "user", Message.client_id.like(f"{run_id}-%")
                )
            )
    finally:
        await store.close()
    return int(count or 0)


async def overhead(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    from chat_load import gateway_process

    figures: dict[str, Any] = {"customers": args.customers, "duration_s": args.duration_s,
                               "think_s": list(args.think)}
    with tempfile.TemporaryDirectory(prefix="triage-bench-single-") as tmp_name:
        tmp = Path(tmp_name)
        single = argparse.Namespace(rasa_workers=2, database_url="")
        async with gateway_process(tmp, model, single) as base_url:
            run_id = secrets.token_hex(3)
            print(f"one node on SQLite: {args.customers} customers ...", flush=True)
            stats, elapsed = await chat_load_on(base_url, args, run_id)
        stored = await stored_of_run(f"sqlite+aiosqlite:///{tmp / 'triage.db'}", run_id)
        figures["single_node_sqlite"] = load_figures(stats, elapsed, stored)
    async with fresh_database("triage_bench_cluster") as database, local_cluster(
        database, args, model
    ) as cluster:
        run_id = secrets.token_hex(3)
        print(f"two nodes behind HAProxy: {args.customers} customers ...", flush=True)
        stats, elapsed = await chat_load_on(cluster.base, args, run_id)
        stored = await stored_of_run(ASYNCPG_BASE + database, run_id)
        figures["two_nodes_proxy"] = load_figures(stats, elapsed, stored)
    one = figures["single_node_sqlite"]["reply_ms"]["p95"]
    two = figures["two_nodes_proxy"]["reply_ms"]["p95"]
    figures["p95_ratio"] = round(two / one, 2) if one else None
    return figures


@contextlib.asynccontextmanager
async def local_cluster(database: str, args: argparse.Namespace, model: Path) -> Any:
    from bot.cli.cluster import ClusterLayout, LocalCluster, NodePorts

    root = Path(tempfile.mkdtemp(prefix="triage-bench-cluster-"))
    layout = ClusterLayout(root=root, http_port=free_port(), sip_port=free_port())
    for i in range(2):
        layout.nodes.append(NodePorts(http=free_port(), sip=free_port(), rtp_min=43000 + 1000 * i,
                                      rtp_max=43998 + 1000 * i, rasa=free_port(),
                                      action=free_port()))
    cluster = LocalCluster(
        layout, database_url=ASYNCPG_BASE + database, redis_url=args.redis_url, model=model,
        with_sip=False,
        extra_env={"TRIAGE_CHAT_RATE_PER_S": "100", "TRIAGE_CHAT_BURST": "100",
                   "TRIAGE_API_TOKEN": "bench"},
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def print_overhead(f: dict[str, Any]) -> None:
    print(f"\n{f['customers']} customers, {f['duration_s']:.0f} s each, think {f['think_s']} s")
    for name in ("single_node_sqlite", "two_nodes_proxy"):
        r = f[name]
        print(
            f"{name:20s} reply ms p50 {r['reply_ms']['p50']} p95 {r['reply_ms']['p95']} "
            f"p99 {r['reply_ms']['p99']}; {r['messages_per_s']} msg/s; sent {r['messages_sent']}"
            f" acked {r['messages_acked']} stored {r['messages_stored']} lost {r['lost']} "
            f"no reply {r['no_reply']} errors {r['errors']}"
        )
    print(f"p95 two nodes / one node: {f['p95_ratio']} (target <= 1.3)")


# --- failover: a node killed under its customers ---------------------------------------------


@dataclass
class Resumed:
    reconnect_s: float  # reconnect to the welcome that resumes the conversation
    answered_s: float  # reconnect to the answer of the message in flight at the kill


async def failover(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    import random

    rng = random.Random(args.seed)
    resumed: list[Resumed] = []
    acked_lost = 0
    acked_total = 0
    unanswered = 0
    async with fresh_database("triage_bench_failover") as database, local_cluster(
        database, args, model
    ) as cluster:
        for rep in range(args.reps):
            victim = cluster.nodes[rep % 2]
            results = await one_failover(cluster, victim, args.per_rep, rng)
            for r in results:
                acked_total += len(set(r["acked"]))
                if r["resumed"] is not None:
                    resumed.append(r["resumed"])
                else:
                    unanswered += 1
                    print(f"  a customer not back: {r.get('why_not')}", flush=True)
            acked_lost += await lost_acked(ASYNCPG_BASE + database, results)
            print(f"rep {rep + 1}/{args.reps}: killed {victim.name}; "
                  f"{sum(len(set(r['acked'])) for r in results)} messages acked", flush=True)
            await cluster.start_node(victim)
            await cluster.wait_proxy()
    from bot.nlu.evaluation import percentile

    reconnect = [r.reconnect_s for r in resumed]
    answered = [r.answered_s for r in resumed]
    return {
        "reps": args.reps,
        "customers_per_rep": args.per_rep,
        "acked_messages": acked_total,
        "acked_lost": acked_lost,
        "customers_not_back": unanswered,
        "reconnect_s": {"p50": round(percentile(reconnect, 0.5), 2),
                        "p95": round(percentile(reconnect, 0.95), 2),
                        "max": round(max(reconnect), 2)} if reconnect else None,
        "answered_s": {"p50": round(percentile(answered, 0.5), 2),
                       "p95": round(percentile(answered, 0.95), 2),
                       "max": round(max(answered), 2)} if answered else None,
    }


async def one_failover(cluster: Any, victim: Any, customers: int, rng: Any) -> list[dict[str, Any]]:
    """Customers on ``victim`` mid-conversation; the node killed while their messages are in
    flight; each resumes through the proxy as the widget does."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        sessions = []
        for _ in range(customers):
            ws = await http.ws_connect(victim.base + "/chat/ws")
            await ws.send_json({"type": "hello", "v": 1, "lang": "it", "resume": None})
            welcome = await ws.receive_json(timeout=30)
            await ws.send_json({"type": "message", "id": secrets.token_hex(6),
                                "text": "vorrei sapere quanto devo pagare"})
            sessions.append({"ws": ws, "welcome": welcome, "acked": [], "seqs": [0],
                             "pending": None, "resumed": None})
        for sess in sessions:  # the form asks for the customer code: everyone is mid-form
            await read_until(sess, lambda f: f["type"] == "message" and f["sender"] == "bot")
        for sess in sessions:
            sess["pending"] = secrets.token_hex(6)
            frame = {"type": "message", "id": sess["pending"], "text": "CL100001"}
            await sess["ws"].send_json(frame)
        await asyncio.sleep(rng.uniform(0.0, 0.08))  # some acked and answered, some in flight
        await cluster.kill(victim)
        for sess in sessions:
            with contextlib.suppress(Exception):
                async for msg in sess["ws"]:  # what reached the customer before the kill
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        note(sess, json.loads(msg.data))
            await sess["ws"].close()
        await asyncio.gather(*(resume(http, cluster.base, sess) for sess in sessions))
        for sess in sessions:
            await sess["ws"].close()
        return sessions


def note(sess: dict[str, Any], frame: dict[str, Any]) -> None:
    """What a customer saw: acks, the seqs of messages, and whether a bot or system message
    came after the message in flight (its ack may come after the answer: a resend after the
    reconnect is acked then)."""
    kind = frame.get("type")
    shown = frame["messages"] if kind == "history" else [frame] if kind == "message" else []
    for message in shown:
        sess["seqs"].append(message["seq"])
        if message["sender"] in ("bot", "system"):
            sess.setdefault("bot_seqs", []).append(message["seq"])
    if kind == "ack":
        sess["acked"].append(frame["id"])
        if frame["id"] == sess["pending"]:
            sess["pending_seq"] = frame["seq"]
    pending_seq = sess.get("pending_seq")
    if pending_seq is not None and any(s > pending_seq for s in sess.get("bot_seqs", ())):
        sess["answered"] = True


async def read_until(sess: dict[str, Any], match: Any, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await sess["ws"].receive_json()
            note(sess, frame)
            if match(frame):
                return


async def resume(http: Any, proxy: str, sess: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    welcome = sess["welcome"]
    for _ in range(50):  # the widget's reconnection, without the backoff's waits
        try:
            sess["ws"] = await http.ws_connect(proxy + "/chat/ws")
            await sess["ws"].send_json({"type": "hello", "v": 1, "lang": "it", "resume": {
                "conversation_id": welcome["conversation_id"], "token": welcome["token"],
                "last_seq": max(sess["seqs"])}})
            again = await sess["ws"].receive_json(timeout=10)
            break
        except Exception:  # refused, reset or a 502 while the proxy notices: try again
            await asyncio.sleep(0.1)
    else:
        sess["why_not"] = "could not reconnect"
        return
    if not again.get("resumed"):
        sess["why_not"] = f"not resumed: {again}"
        return
    back_s = loop.time() - started
    if sess["pending"] not in sess["acked"]:  # the widget sends what was never acked again
        await sess["ws"].send_json({"type": "message", "id": sess["pending"], "text": "CL100001"})
    with contextlib.suppress(TimeoutError):
        await read_until(sess, lambda f: bool(sess.get("answered")), timeout_s=30)
    if sess.get("answered"):
        sess["resumed"] = Resumed(back_s, loop.time() - started)
    else:
        sess["why_not"] = (
            "no answer after the message in flight within 30 s "
            f"(acked {sess['pending'] in sess['acked']}, seq {sess.get('pending_seq')}, "
            f"seqs {sorted(set(sess['seqs']))[-4:]})"
        )


async def lost_acked(database_url: str, sessions: list[dict[str, Any]]) -> int:
    """Acked messages missing from the store or never answered (no reply after them)."""
    from sqlalchemy import select

    from bot.store.sql.store import SqlStore
    from bot.store.sql.tables import Message

    store = await SqlStore.open(database_url, create=False)
    lost = 0
    try:
        for sess in sessions:
            cid = sess["welcome"]["conversation_id"]
            async with store.session() as s:
                rows = list(await s.scalars(select(Message).where(Message.conversation_id == cid)
                                            .order_by(Message.id)))
            for client_id in set(sess["acked"]):
                mine = [m for m in rows if m.client_id == client_id]
                if len(mine) != 1 or not any(
                    m.sender in ("bot", "system") and m.id > mine[0].id for m in rows
                ):
                    lost += 1
    finally:
        await store.close()
    return lost


def print_failover(f: dict[str, Any]) -> None:
    print(f"\nfailover: {f['reps']} kills, {f['customers_per_rep']} customers on the killed "
          f"node each time: {f['acked_messages']} acked messages, {f['acked_lost']} lost; "
          f"{f['customers_not_back']} customers not back")
    print(f"back in the conversation (s from reconnecting): {f['reconnect_s']}")
    print(f"message in flight answered (s from reconnecting): {f['answered_s']}")


def print_costs(figures: dict[str, Any]) -> None:
    print("\nper customer message        hot-path PG round trips (stmts, txns)  +actions/bg  "
          "all PG txns  Redis publications  other Redis commands")
    for name, f in figures.items():
        print(
            f"{name:28s} {f['gateway_pg_round_trips']:6.2f} ({f['gateway_pg_statements']:.2f}, "
            f"{f['gateway_pg_transactions']:.2f}){'':19s}"
            f"{f['gateway_pg_round_trips_with_actions_and_background']:6.2f}{'':6s}"
            f"{f['all_pg_transactions']:6.2f}"
            f"{f['redis_publications']:14.2f}{f['redis_other_commands']:18.2f}"
        )
        print(f"{'':28s} hot-path round trips: messages: "
              f"{f['gateway_pg_round_trips_distribution']}")
        print(f"{'':28s} Redis bytes published per message: {f['redis_bytes_published']}")
        print(f"{'':28s} Redis: {f['redis_commands_by_name']}")


async def bench(args: argparse.Namespace) -> int:
    base = load_settings()
    model = await ensure_model(
        base.rasa_python, TrainingInputs.default(base.nlu_data_dir), PROJECT_ROOT / "var" / "models"
    )
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    if "costs" in args.phases:
        results["costs"] = await costs(args, model)
        print_costs(results["costs"])
    if "overhead" in args.phases:
        results["overhead"] = await overhead(args, model)
        print_overhead(results["overhead"])
    if "failover" in args.phases:
        results["failover"] = await failover(args, model)
        print_failover(results["failover"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--phases", default="costs,overhead,failover")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--conversations", type=int, default=40, help="costs: conversations")
    parser.add_argument("--customers", type=int, default=200, help="overhead: chat customers")
    parser.add_argument("--duration-s", type=float, default=120.0, help="overhead: per setup")
    parser.add_argument("--think-s", default="10,20", help="overhead: MIN,MAX seconds")
    parser.add_argument("--reps", type=int, default=20, help="failover: kills")
    parser.add_argument("--per-rep", type=int, default=8, help="failover: customers per kill")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.think_s.split(","))
    args.think = (low, high)
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    start = time.time()
    sys.exit(main())
