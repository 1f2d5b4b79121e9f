"""One contract, every engine: the SQLite store (in its worker thread) and PostgreSQL (a real server on 127.0.0.1,
started by the tests) answer the same calls the same way."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from watcher.detect import Rules, detect
from watcher.errors import StoreError
from watcher.health import CallHealth
from watcher.model import Event, EventType, TaskSnapshot, TaskState
from watcher.store import Store
from watcher.stores import StateStore, ThreadedStore

from .callhealth import collapsed, looked

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "sqlite":
        sqlite = Store.open(tmp_path / "s.db")
        yield ThreadedStore(sqlite)
        sqlite.close()
        return
    url = request.getfixturevalue("postgres_url")
    import psycopg

    from watcher.postgres import SCHEMA, PostgresStore

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")  # a fresh database for each test
    pg = await PostgresStore.open(url, shown="postgresql://watcher@127.0.0.1/watcher")
    yield pg
    await pg.close()


async def observe(store: StateStore, task_id: int, receivers: list[str], status: str = "running") -> list[Event]:
    state, events = detect(None, TaskSnapshot(id=task_id, status=status, progress=0), T0, Rules())
    await store.record(state, [(e, receivers) for e in events], now=1000.0)
    return events


async def test_record_keeps_the_state_the_events_and_one_row_per_receiver(store: StateStore) -> None:
    events = await observe(store, 1, ["a", "b"])
    states = await store.load_states()
    assert states[1].snapshot.status == "running"
    head = await store.head("a")
    assert head is not None and head.event == events[0] and head.created_at == 1000.0
    assert await store.head("b") is not None
    assert sorted(await store.pending_receivers()) == ["a", "b"]


async def test_a_state_round_trips_whole(store: StateStore) -> None:
    snapshot = TaskSnapshot(
        id=7,
        status="running",
        name="東京キャンペーン",
        progress=40,
        total=1200,
        collection_rate=33,
        summary="s",
        suggestion="g",
        updated_at="2026-11-23T18:00:00+09:00",
        created_at="2026-11-01 10:00:00",
        start_date="2026-11-01",
        windows=(("09:00", "12:00"), ("18:00", "24:00")),
    )
    state = TaskState(
        snapshot,
        progress_since=T0,
        stalled=True,
        missing=False,
        windows_doubted_at=T0 + timedelta(minutes=5),
        updated_while_closed_at=T0 + timedelta(minutes=6),
    )
    await store.record(state, [], now=2.0)
    assert (await store.load_states())[7] == state


async def test_the_same_event_recorded_twice_is_one_row(store: StateStore) -> None:
    state, events = detect(None, TaskSnapshot(id=1, status="running"), T0, Rules())
    await store.record(state, [(e, ["a"]) for e in events], now=1.0)
    await store.record(state, [(e, ["a"]) for e in events], now=1.0)
    assert [(c.receiver, c.state, c.count) for c in await store.outbox_counts()] == [("a", "pending", 1)]


async def test_head_keeps_each_receivers_order_and_marks_move_it_on(store: StateStore) -> None:
    first = (await observe(store, 1, ["a"]))[0]
    second = (await observe(store, 2, ["a"]))[0]
    head = await store.head("a")
    assert head is not None and head.event == first
    await store.mark_retry([head.seq], "503 busy", next_attempt_at=50.0, now=10.0)
    again = await store.head("a")
    assert again is not None and again.seq == head.seq and again.attempts == 1 and again.next_attempt_at == 50.0
    await store.mark_delivered([head.seq], now=60.0)
    nxt = await store.head("a")
    assert nxt is not None and nxt.event == second
    await store.mark_dead([nxt.seq], "410 gone", now=61.0)
    assert await store.head("a") is None
    counts = {(c.receiver, c.state): c.count for c in await store.outbox_counts()}
    assert counts == {("a", "delivered"): 1, ("a", "dead"): 1}


async def test_an_event_of_no_task_and_the_metadata(store: StateStore) -> None:
    event = Event("api-1", EventType.API_UNREACHABLE.value, T0, "api", {"unreachableForSeconds": 300})
    await store.record_event(event, ["hook"], now=5.0)
    head = await store.head("hook")
    assert head is not None and head.event == event
    assert await store.meta("zone") is None
    await store.set_meta("zone", '{"name": "+09:00"}')
    await store.set_meta("zone", '{"name": "+08:00"}')
    assert await store.meta("zone") == '{"name": "+08:00"}'


async def test_a_task_the_api_never_served_is_noted_until_it_is_seen(store: StateStore) -> None:
    await store.note_unseen(9, "not found", now=1.0)
    await store.note_unseen(9, "not found", now=2.0)
    assert await _unseen(store) == {9: "not found"}
    await observe(store, 9, [])
    assert await _unseen(store) == {}


async def _unseen(store: StateStore) -> dict[int, str]:
    unseen: Any = store.sync.unseen() if isinstance(store, ThreadedStore) else await store.unseen()  # type: ignore[attr-defined]
    return {task: reason for task, (reason, _since) in unseen.items()}


async def test_prune_forgets_delivered_rows_and_their_events_only(store: StateStore) -> None:
    await observe(store, 1, ["a"])
    await observe(store, 2, ["a"])
    head = await store.head("a")
    assert head is not None
    await store.mark_delivered([head.seq], now=100.0)
    assert await store.prune(delivered_before=200.0) == 1
    assert [(c.state, c.count) for c in await store.outbox_counts()] == [("pending", 1)]


async def test_a_failed_transaction_writes_nothing(store: StateStore) -> None:
    state, events = detect(None, TaskSnapshot(id=1, status="pending"), T0, Rules())
    unbindable: Any = {"not": "a receiver"}
    with pytest.raises((StoreError, TypeError)):  # the engine refuses the value midway
        await store.record(state, [(events[0], ["a", unbindable])], now=1.0)
    assert await store.load_states() == {}
    assert await store.outbox_counts() == []


async def test_a_writable_store_says_so(store: StateStore) -> None:
    await store.check_writable()


async def test_pending_lists_a_receivers_rows_in_order_up_to_a_limit(store: StateStore) -> None:
    for task_id in (1, 2, 3):
        await observe(store, task_id, ["a", "b"])
    rows = await store.pending("a", 2)
    assert [r.event.subject for r in rows] == ["1", "2"]
    assert [r.event.subject for r in await store.pending("b", 10)] == ["1", "2", "3"]
    assert await store.pending("nobody", 10) == []


async def test_marks_settle_several_rows_at_once_and_leave_settled_rows_alone(store: StateStore) -> None:
    """A digest is one message: its rows are delivered (or retried, or dead) together."""
    for task_id in (1, 2, 3):
        await observe(store, task_id, ["a"])
    rows = await store.pending("a", 10)
    await store.mark_retry([r.seq for r in rows[:2]], "503 busy", next_attempt_at=50.0, now=10.0)
    again = await store.pending("a", 10)
    assert [(r.attempts, r.next_attempt_at) for r in again] == [(1, 50.0), (1, 50.0), (0, 1000.0)]
    await store.mark_delivered([r.seq for r in again[:2]], now=60.0)
    await store.mark_dead([rows[0].seq, rows[2].seq], "410 gone", now=61.0)  # the first was delivered: kept so
    counts = {c.state: c.count for c in await store.outbox_counts()}
    assert counts == {"delivered": 2, "dead": 1}


async def test_latest_gives_each_tasks_newest_row_of_each_type_for_a_receiver(store: StateStore) -> None:
    running = TaskSnapshot(id=5, status="running", progress=10)
    state, _ = detect(None, running, T0, Rules())
    failed = TaskSnapshot(id=5, status="stop.abnormal", progress=10)
    state, events = detect(state, failed, T0 + timedelta(minutes=1), Rules())
    await store.record(state, [(e, ["a", "b"]) for e in events], now=1000.0)
    reminder = Event("r1", EventType.FAILED.value, T0 + timedelta(hours=1), "5", {"reminder": {"count": 1}})
    await store.record_event(reminder, ["a"], now=4600.0)
    latest = await store.latest("a", [EventType.FAILED.value, EventType.STALLED.value])
    assert [(s.event.id, s.state, s.created_at, s.done_at) for s in latest] == [("r1", "pending", 4600.0, None)]
    (for_b,) = await store.latest("b", [EventType.FAILED.value])
    assert for_b.event == events[0]
    assert await store.latest("a", []) == []


async def test_tasks_added_at_run_time_are_kept_with_their_labels_and_removed(store: StateStore) -> None:
    assert await store.added_tasks() == {}
    assert await store.add_task(7, {"team": "sales"}, now=1000.0) is True
    assert await store.add_task(7, {"team": "support"}, now=2000.0) is False  # again: the labels are replaced
    assert await store.add_task(8, {}, now=3000.0) is True
    added = await store.added_tasks()
    assert sorted(added) == [7, 8]
    assert added[7].labels == {"team": "support"} and added[7].added_at == datetime.fromtimestamp(1000.0, UTC)
    assert await store.remove_task(7) is True
    assert await store.remove_task(7) is False
    assert sorted(await store.added_tasks()) == [8]


async def test_the_rules_holding_for_a_task_round_trip(store: StateStore) -> None:
    state, _ = detect(None, TaskSnapshot(id=3, status="running", progress=40), T0, Rules())
    holding = (("low collection", T0 + timedelta(minutes=1)), ("slow", T0 + timedelta(minutes=2)))
    await store.record(dataclasses.replace(state, rules=holding), [], now=1000.0)
    assert (await store.load_states())[3].rules == holding


async def test_a_tasks_call_health_round_trips_and_none_stays_none(store: StateStore) -> None:
    state, _ = detect(None, TaskSnapshot(id=3, status="running", progress=40), T0, Rules())
    await store.record(state, [], now=1000.0)
    assert (await store.load_states())[3].health is None
    observed = looked(T0, [i % 5 < 2 for i in range(120)])
    assert observed.seen and observed.hourly and observed.calls == 120  # every part of it is written and read
    for health in (observed, collapsed(T0)):
        await store.record(dataclasses.replace(state, health=health), [], now=1001.0)
        assert (await store.load_states())[3].health == health
    await store.record(state, [], now=1002.0)
    assert (await store.load_states([3]))[3].health is None


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ('"not a health"', CallHealth()),
        ("[1, 2]", CallHealth()),
        # What can be read is kept; the odd values are taken as absent.
        (
            '{"window": 7, "counted": [10, 4], "episode": {"since": "then"}, "lastLook": "2026-11-23T09:00:00+00:00"}',
            CallHealth(last_look=T0, calls=10, answered=4),
        ),
    ],
)
async def test_a_damaged_stored_health_is_read_as_far_as_it_can_be(
    store: StateStore, request: pytest.FixtureRequest, stored: str, expected: CallHealth
) -> None:
    state, _ = detect(None, TaskSnapshot(id=3, status="running"), T0, Rules())
    await store.record(dataclasses.replace(state, health=collapsed(T0)), [], now=1000.0)
    await _overwrite_health(store, request, 3, stored)
    loaded = (await store.load_states())[3]
    assert loaded.health == expected and loaded.snapshot == state.snapshot


async def _overwrite_health(store: StateStore, request: pytest.FixtureRequest, task_id: int, stored: str) -> None:
    """Put a JSON value in a task's health column behind the store's back, as damage would."""
    if isinstance(store, ThreadedStore):
        with contextlib.closing(sqlite3.connect(store.sync.path)) as db, db:
            db.execute("UPDATE tasks SET health = ? WHERE task_id = ?", (stored, task_id))
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
        await conn.execute("UPDATE voicefox_watcher.tasks SET health = %s::jsonb WHERE task_id = %s", (stored, task_id))


async def test_recent_events_are_the_newest_first_of_every_task_and_the_watcher(store: StateStore) -> None:
    for task_id in (1, 2, 3):
        state, events = detect(
            None, TaskSnapshot(id=task_id, status="running"), T0 + timedelta(minutes=task_id), Rules()
        )
        await store.record(state, [(e, ["a"]) for e in events], now=float(task_id))
    api = Event("api-1", EventType.API_UNREACHABLE.value, T0 + timedelta(minutes=9), "api", {})
    await store.record_event(api, [], now=9.0)
    recent = await store.recent_events(3)
    assert [e.subject for e in recent] == ["api", "3", "2"]
    assert recent[1].data["task"]["id"] == 3


async def test_the_delivery_report_gives_each_receivers_newest_error_and_delivery(store: StateStore) -> None:
    assert await store.delivery_report() == []
    for task_id in (1, 2, 3):
        await observe(store, task_id, ["a", "b"])
    rows = {(d.receiver, d.event.subject): d.seq for r in ("a", "b") for d in await store.pending(r, 10)}
    await store.mark_delivered([rows["a", "1"]], now=10.0)
    await store.mark_retry([rows["a", "2"]], "503 busy", next_attempt_at=99.0, now=20.0)
    await store.mark_dead([rows["a", "3"]], "410 gone", now=30.0)
    await store.mark_retry([rows["b", "1"]], "timeout", next_attempt_at=99.0, now=40.0)
    await store.mark_delivered([rows["b", "1"]], now=50.0)  # a delivery clears its row's error
    report = {d.receiver: d for d in await store.delivery_report()}
    assert (report["a"].last_error, report["a"].last_error_at, report["a"].last_delivered_at) == (
        "410 gone",
        30.0,
        10.0,
    )
    assert (report["b"].last_error, report["b"].last_error_at, report["b"].last_delivered_at) == (None, None, 50.0)
