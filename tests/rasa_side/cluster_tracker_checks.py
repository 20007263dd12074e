"""Checks of ``TriageTrackerStore`` on PostgreSQL as a cluster uses it: two stores on one
database stand for the Rasa processes of two nodes, and a conversation's turns move between
them (run by ``tracker_store_checks.py postgres URL``, after the checks common to both
databases)."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

from rasa.shared.core.events import BotUttered
from tracker_backends import (
    DOMAIN,
    Backend,
    PostgresBackend,
    session_events,
    turn_events,
)

from triage_rasa.event_log import TrackerConflict
from triage_rasa.tracker_store import TriageTrackerStore


async def two_nodes_alternating_turns_each_see_the_others_events(backend: Backend) -> None:
    node_a, node_b = backend.store("n1"), backend.store("n1")
    first = await node_a.get_or_create_tracker("c1", append_action_listen=False)
    first.update_with_events(session_events("da A"), DOMAIN)
    await node_a.save(first)
    assert await node_a.retrieve("c1") is first  # nobody else wrote: served from memory
    on_b = await node_b.retrieve("c1")
    assert on_b is not None and len(on_b.events) == 6
    on_b.update_with_events(turn_events("da B", "CL100002"), DOMAIN)
    await node_b.save(on_b)
    # A had the tracker in memory, B wrote since: A reads B's turn
    on_a = await node_a.retrieve("c1")
    assert on_a is not first and len(on_a.events) == 10
    assert on_a.latest_message.text == "da B" and on_a.get_slot("customer_code") == "CL100002"
    on_a.update_with_events(turn_events("ancora da A", "CL100003"), DOMAIN)
    await node_a.save(on_a)
    again_on_b = await node_b.retrieve("c1")
    assert again_on_b is not on_b and len(again_on_b.events) == 14
    assert again_on_b.latest_message.text == "ancora da A"
    assert again_on_b.get_slot("customer_code") == "CL100003"
    assert await node_b.retrieve("c1") is again_on_b
    stored = backend.rows("n1", "c1")
    assert [seq for seq, _, _ in stored] == list(range(14))
    assert [t for _, t, _ in stored] == [e.type_name for e in again_on_b.events]


async def a_save_from_a_stale_tracker_writes_nothing(backend: Backend) -> None:
    node_a, node_b = backend.store("n2"), backend.store("n2")
    tracker = await node_a.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events("ciao"), DOMAIN)
    await node_a.save(tracker)
    stale = await node_a.retrieve("c1")
    on_b = await node_b.retrieve("c1")
    on_b.update_with_events(turn_events("da B", "CL100002"), DOMAIN)
    await node_b.save(on_b)
    stale.update(BotUttered("da un turno che nessuno ha chiesto"))
    try:
        await node_a.save(stale)
    except TrackerConflict:
        pass
    else:
        raise AssertionError("a tracker older than the stored dialogue was saved")
    assert len(backend.rows("n2", "c1")) == 10
    fresh = await node_a.retrieve("c1")
    assert fresh is not stale and fresh.latest_message.text == "da B"


async def a_turn_forgotten_on_one_node_is_not_served_from_the_others_memory(
    backend: Backend,
) -> None:
    """The gateway runs a turn again on node A (same message id): node B, which kept the first
    run in memory, sees it gone; node C, which kept it too, sees the rerun in its place (a
    tracker of the same length)."""
    node_a, node_b, node_c = backend.store("n3"), backend.store("n3"), backend.store("n3")
    tracker = await node_a.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events("ciao"), DOMAIN)
    tracker.update_with_events(turn_events("prima versione", "CL100002", "42"), DOMAIN)
    await node_a.save(tracker)
    kept_b, kept_c = await node_b.retrieve("c1"), await node_c.retrieve("c1")
    assert kept_b.latest_message.text == kept_c.latest_message.text == "prima versione"
    assert await node_a.forget_from_message("c1", "42")
    after_forget = await node_b.retrieve("c1")
    assert after_forget is not kept_b and len(after_forget.events) == 7
    assert after_forget.latest_message.text == "ciao"
    rerun = await node_a.retrieve("c1")
    rerun.update_with_events(turn_events("seconda versione", "CL100003", "42")[1:], DOMAIN)
    await node_a.save(rerun)
    assert len(rerun.events) == len(kept_c.events)
    seen = await node_c.retrieve("c1")
    assert seen is not kept_c and seen.latest_message.text == "seconda versione"
    assert seen.get_slot("customer_code") == "CL100003"


def stores_started_at_once(url: str, count: int) -> list[BaseException]:
    """Open ``count`` stores on ``url`` from as many threads released together (psycopg2 lets
    go of the GIL while it waits on the server); what they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            TriageTrackerStore(DOMAIN, host=url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


async def many_processes_create_the_tables_at_once(backend: Backend) -> None:
    assert isinstance(backend, PostgresBackend)
    for attempt in range(5):  # each on a new schema: the race is on the first creation
        database = f"t{attempt}"
        errors = stores_started_at_once(backend.url_for(database), 8)
        assert not errors, errors
        store = backend.store(database)
        tracker = await store.get_or_create_tracker("c1", append_action_listen=False)
        tracker.update_with_events(session_events("ciao"), DOMAIN)
        await store.save(tracker)
        assert len(backend.rows(database, "c1")) == 6


async def a_lost_connection_is_opened_again(backend: Backend) -> None:
    assert isinstance(backend, PostgresBackend)
    node_a, node_b = backend.store("n4"), backend.store("n4")
    tracker = await node_a.get_or_create_tracker("c1", append_action_listen=False)
    tracker.update_with_events(session_events("ciao"), DOMAIN)
    await node_a.save(tracker)
    assert await node_a.retrieve("c1") is tracker
    assert backend.terminate_store_connections() >= 2  # as a restart of the server does
    on_b = await node_b.retrieve("c1")
    on_b.update_with_events(turn_events("dopo il riavvio", "CL100002"), DOMAIN)
    await node_b.save(on_b)
    on_a = await node_a.retrieve("c1")
    assert on_a is not tracker and on_a.latest_message.text == "dopo il riavvio"


async def a_url_of_another_database_is_refused_without_its_password(backend: Backend) -> None:
    try:
        TriageTrackerStore(DOMAIN, host="mysql://triage:s3cret@127.0.0.1/triage")
    except ValueError as exc:
        assert "mysql" in str(exc) and "s3cret" not in str(exc), str(exc)
    else:
        raise AssertionError("a mysql:// URL was accepted")


CLUSTER_CHECKS: list[Callable[[Backend], Awaitable[None]]] = [
    two_nodes_alternating_turns_each_see_the_others_events,
    a_save_from_a_stale_tracker_writes_nothing,
    a_turn_forgotten_on_one_node_is_not_served_from_the_others_memory,
    many_processes_create_the_tables_at_once,
    a_lost_connection_is_opened_again,
    a_url_of_another_database_is_refused_without_its_password,
]
