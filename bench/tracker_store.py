"""The tracker store's cost per turn: SQLite (one node) against PostgreSQL (a cluster).

A turn does what Rasa and the triage channel do with the store: ``retrieve`` the tracker, add a
turn's events (action_listen, the user's message, a slot, the bot's reply), ``save`` it, and
``retrieve`` it again for the channel's answer. ``--conversations`` conversations take
``--turns`` turns each, interleaved, so every turn finds its tracker kept in memory:

* ``sqlite``: the single-node default (a cached tracker is handed out unchecked);
* ``postgres``: a cached tracker is checked against the stored version first (one query);
* ``postgres, no cache``: ``cache_size=0``, every ``retrieve`` reads the session back;
* ``postgres, other node``: every turn on a store that did not run the one before (two stores
  alternate), so each ``retrieve`` finds the version moved and reads the session back.

Run under the Rasa environment, with the PostgreSQL server on 127.0.0.1 (a throw-away database
is created and dropped):

    .venv-rasa/bin/python bench/tracker_store.py
    .venv-rasa/bin/python bench/tracker_store.py --postgres postgresql://postgres@127.0.0.1/postgres

Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered

from triage_rasa.tracker_store import TriageTrackerStore

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet, check_balance]
slots:
  customer_code:
    type: text
    mappings: [{type: custom}]
"""
)


def turn_events(turn: int) -> list[Any]:
    text = f"messaggio numero {turn}, il mio codice è CL{100000 + turn}"
    return [
        ActionExecuted("action_listen"),
        UserUttered(text, {"name": "check_balance", "confidence": 0.9}, parse_data={"text": text}),
        SlotSet("customer_code", f"CL{100000 + turn}"),
        BotUttered(f"Risposta al messaggio {turn}"),
    ]


async def run(stores: list[TriageTrackerStore], conversations: int, turns: int) -> list[float]:
    """Seconds per turn; turn t of every conversation runs on ``stores[t % len(stores)]``."""
    ids = [f"bench-{secrets.token_hex(6)}" for _ in range(conversations)]
    for sender in ids:
        tracker = await stores[0].get_or_create_tracker(sender, append_action_listen=False)
        tracker.update_with_events(
            [ActionExecuted("action_session_start"), SessionStarted()], DOMAIN
        )
        await stores[0].save(tracker)
    timings = []
    for turn in range(turns):
        store = stores[(turn + 1) % len(stores)]
        for sender in ids:
            started = time.perf_counter()
            tracker = await store.retrieve(sender)
            tracker.update_with_events(turn_events(turn), DOMAIN)
            await store.save(tracker)
            await store.retrieve(sender)
            timings.append(time.perf_counter() - started)
    return timings


def report(name: str, timings: list[float]) -> None:
    ms = sorted(t * 1000 for t in timings)
    p95 = ms[int(len(ms) * 0.95)]
    print(
        f"{name:<24} mean {statistics.fmean(ms):6.2f} ms  p50 {statistics.median(ms):6.2f} ms  "
        f"p95 {p95:6.2f} ms  ({len(ms)} turns)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    database = f"triage_bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(args.postgres)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    url = args.postgres.rsplit("/", 1)[0] + f"/{database}"
    try:
        with tempfile.TemporaryDirectory() as work:
            cases: list[tuple[str, list[TriageTrackerStore]]] = [
                ("sqlite", [TriageTrackerStore(DOMAIN, db=str(Path(work) / "t.db"))]),
                ("postgres", [TriageTrackerStore(DOMAIN, host=url)]),
                ("postgres, no cache", [TriageTrackerStore(DOMAIN, host=url, cache_size=0)]),
                (
                    "postgres, other node",
                    [TriageTrackerStore(DOMAIN, host=url), TriageTrackerStore(DOMAIN, host=url)],
                ),
            ]
            for name, stores in cases:
                report(name, asyncio.run(run(stores, args.conversations, args.turns)))
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
