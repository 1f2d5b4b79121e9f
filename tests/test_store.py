"""The SQLite store: snapshots and outbox rows commit together; the outbox keeps order, dead letters and retries."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from watcher.detect import Rules, detect
from watcher.errors import StoreError
from watcher.health import CallHealth
from watcher.model import Event, TaskSnapshot, TaskState
from watcher.store import SCHEMA_VERSION, Store, StoreLock

from .callhealth import collapsed

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _observe(store: Store, task_id: int, receivers: list[str], status: str = "running") -> list[Event]:
    state, events = detect(None, TaskSnapshot(id=task_id, status=status, progress=0), T0, Rules())
    store.record(state, [(e, receivers) for e in events], now=1000.0)
    return events


def test_record_saves_state_event_and_one_row_per_receiver() -> None:
    store = Store.open(":memory:")
    events = _observe(store, 1, ["a", "b"])
    assert store.load_states()[1].snapshot.status == "running"
    assert store.head("a") is not None
    assert store.head("b") is not None
    assert store.head("a").event == events[0]  # type: ignore[union-attr]
    assert {(c.receiver, c.state, c.count) for c in store.outbox_counts()} == {("a", "pending", 1), ("b", "pending", 1)}


def test_state_round_trips_with_stall_and_missing_flags() -> None:
    store = Store.open(":memory:")
    state = TaskState(TaskSnapshot(id=5, status="running", progress=40, name="n"), T0, stalled=True, missing=True)
    store.record(state, [], now=1.0)
    assert store.load_states() == {5: state}


def test_only_commits_that_record_events_wait_for_the_disk(tmp_path: Path) -> None:
    """Events are synced before they can be delivered (no re-announcement under a new id after a power cut)."""
    store = Store.open(tmp_path / "s.db")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    _observe(store, 1, ["a"])  # an `observed` event
    durable = statements[:]
    statements.clear()
    store.record(TaskState(TaskSnapshot(id=1, status="running", progress=5), T0), [], now=2.0)
    quiet = statements[:]
    statements.clear()
    store.mark_delivered([store.head("a").seq], now=3.0)  # type: ignore[union-attr]
    mark = statements[:]
    store._db.set_trace_callback(None)
    assert (
        durable.index("PRAGMA synchronous=FULL") < durable.index("COMMIT") < durable.index("PRAGMA synchronous=NORMAL")
    )
    assert not any("synchronous" in s for s in quiet + mark)  # a snapshot alone or a delivery mark: no sync
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again


def test_a_failed_transaction_writes_neither_state_nor_outbox() -> None:
    store = Store.open(":memory:")
    state, events = detect(None, TaskSnapshot(id=1, status="pending"), T0, Rules())
    unbindable: Any = {"not": "a receiver name"}  # the database refuses it halfway through the transaction
    with pytest.raises(StoreError):
        store.record(state, [(events[0], ["a", unbindable])], now=1.0)
    assert store.load_states() == {}
    assert store.outbox_counts() == []


def test_head_is_the_oldest_pending_row_and_moves_on_when_delivered() -> None:
    store = Store.open(":memory:")
    first = _observe(store, 1, ["a"])[0]
    second = _observe(store, 2, ["a"])[0]
    head = store.head("a")
    assert head is not None and head.event.id == first.id
    store.mark_delivered([head.seq], now=2.0)
    head = store.head("a")
    assert head is not None and head.event.id == second.id


def test_retry_keeps_the_row_at_the_head_with_its_next_attempt_time() -> None:
    store = Store.open(":memory:")
    _observe(store, 1, ["a"])
    _observe(store, 2, ["a"])
    head = store.head("a")
    assert head is not None
    store.mark_retry([head.seq], "503", next_attempt_at=99.0, now=1.0)
    again = store.head("a")
    assert again is not None
    assert (again.seq, again.attempts, again.next_attempt_at) == (head.seq, 1, 99.0)


def test_dead_letters_leave_the_queue_but_stay_counted() -> None:
    store = Store.open(":memory:")
    _observe(store, 1, ["a"])
    head = store.head("a")
    assert head is not None
    store.mark_dead([head.seq], "410 gone", now=3.0)
    assert store.head("a") is None
    assert [(c.state, c.count) for c in store.outbox_counts()] == [("dead", 1)]


def test_the_same_event_is_queued_once_per_receiver() -> None:
    store = Store.open(":memory:")
    state, events = detect(None, TaskSnapshot(id=1, status="pending"), T0, Rules())
    store.record(state, [(e, ["a"]) for e in events], now=1.0)
    store.record(state, [(e, ["a"]) for e in events], now=1.0)
    assert [c.count for c in store.outbox_counts()] == [1]


def test_prune_forgets_old_delivered_rows_only() -> None:
    store = Store.open(":memory:")
    _observe(store, 1, ["a"])
    _observe(store, 2, ["a"])
    head = store.head("a")
    assert head is not None
    store.mark_delivered([head.seq], now=10.0)
    assert store.prune(delivered_before=20.0) == 1
    assert [(c.state, c.count) for c in store.outbox_counts()] == [("pending", 1)]


def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "state.db"
    store = Store.open(path)
    _observe(store, 1, ["a"])
    store.close()
    reopened = Store.open(path)
    assert 1 in reopened.load_states()
    assert reopened.head("a") is not None


def test_a_file_that_is_not_a_database_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the state database"):
        Store.open(path)


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer voicefox-watcher"):
        Store.open(path)


def test_an_uncreatable_directory_is_a_clear_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create its directory"):
        Store.open(blocker / "sub" / "state.db")


def test_the_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    first = StoreLock(tmp_path / "state.db")
    first.acquire()
    try:
        with pytest.raises(StoreError, match=r"already in use by watcher pid \d+"):
            StoreLock(tmp_path / "state.db").acquire()
    finally:
        first.release()
    second = StoreLock(tmp_path / "state.db")
    second.acquire()
    second.release()


def test_recent_events_are_listed_newest_first() -> None:
    store = Store.open(":memory:")
    state, events = detect(None, TaskSnapshot(id=1, status="pending", progress=0), T0, Rules())
    store.record(state, [(e, []) for e in events], now=1.0)
    later = TaskSnapshot(id=1, status="running", progress=0)
    state2, events2 = detect(state, later, T0 + timedelta(minutes=1), Rules())
    store.record(state2, [(e, []) for e in events2], now=2.0)
    assert [e.type for e in store.events(1)] == ["voicefox.task.started", "voicefox.task.observed"]


# The schema as version 1 of voicefox-watcher wrote it: a store from then must open and keep everything.
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (task_id INTEGER PRIMARY KEY, snapshot TEXT NOT NULL, progress_since TEXT NOT NULL,
    stalled INTEGER NOT NULL DEFAULT 0, missing INTEGER NOT NULL DEFAULT 0, changed_at TEXT NOT NULL);
CREATE TABLE events (id TEXT PRIMARY KEY, task_id INTEGER NOT NULL, type TEXT NOT NULL, time TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE INDEX events_by_task ON events (task_id, time);
CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL REFERENCES events (id),
    receiver TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,
    done_at REAL, UNIQUE (event_id, receiver));
CREATE INDEX outbox_queue ON outbox (receiver, state, seq);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO tasks VALUES (7, '{"id":7,"name":"Old","status":"running","progress":40,"total":10,"collectionRate":1,"summary":"","suggestion":"","updatedAt":""}', '2026-11-01T09:00:00+00:00', 0, 0, '2026-11-01T09:00:00+00:00');
INSERT INTO events VALUES ('e1', 7, 'voicefox.task.observed', '2026-11-01T09:00:00+00:00', '{"id":"e1","type":"voicefox.task.observed","time":"2026-11-01T09:00:00+00:00","subject":"7","data":{}}');
INSERT INTO outbox (event_id, receiver, created_at, next_attempt_at) VALUES ('e1', 'hook', 1.0, 1.0);
"""


def test_a_store_from_schema_1_is_migrated_and_keeps_its_state_and_outbox(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V1)
    store = Store.open(path)
    assert store.load_states()[7].snapshot.progress == 40
    head = store.head("hook")
    assert head is not None and head.event.id == "e1"
    store.mark_retry([head.seq], "503", next_attempt_at=5.0, now=2.0)
    [row] = store.admin().outbox_rows(states=["pending"])
    assert row.last_attempt_at == 2.0
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


# The schema as version 4 wrote it (rules and tasks added at run time, no call health).
SCHEMA_V4 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (task_id INTEGER PRIMARY KEY, snapshot TEXT NOT NULL, progress_since TEXT NOT NULL,
    stalled INTEGER NOT NULL DEFAULT 0, missing INTEGER NOT NULL DEFAULT 0, changed_at TEXT NOT NULL,
    windows_doubted_at TEXT, updated_while_closed_at TEXT, rules TEXT);
CREATE TABLE added_tasks (task_id INTEGER PRIMARY KEY, labels TEXT NOT NULL, added_at TEXT NOT NULL);
CREATE TABLE unseen (task_id INTEGER PRIMARY KEY, reason TEXT NOT NULL, since TEXT NOT NULL);
CREATE TABLE events (id TEXT PRIMARY KEY, task_id INTEGER NOT NULL, type TEXT NOT NULL, time TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE INDEX events_by_task ON events (task_id, time);
CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL REFERENCES events (id),
    receiver TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,
    done_at REAL, last_attempt_at REAL, UNIQUE (event_id, receiver));
CREATE INDEX outbox_queue ON outbox (receiver, state, seq);
INSERT INTO meta VALUES ('schema_version', '4');
INSERT INTO tasks VALUES (7, '{"id":7,"name":"Old","status":"running","progress":40,"total":10,"collectionRate":1,"summary":"","suggestion":"","updatedAt":""}', '2026-11-01T09:00:00+00:00', 0, 0, '2026-11-01T09:00:00+00:00', NULL, NULL, '{"slow":"2026-11-01T09:05:00+00:00"}');
"""


def test_a_store_from_schema_4_gains_call_health_and_keeps_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_V4)
    store = Store.open(path)
    old = store.load_states()[7]
    assert old.snapshot.progress == 40 and [name for name, _ in old.rules] == ["slow"] and old.health is None
    health = collapsed(T0)
    store.record(dataclasses.replace(old, health=health), [], now=1.0)
    assert store.load_states()[7].health == health
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_a_stored_health_that_is_not_json_reads_as_empty() -> None:
    store = Store.open(":memory:")
    state, _ = detect(None, TaskSnapshot(id=1, status="running"), T0, Rules())
    store.record(dataclasses.replace(state, health=collapsed(T0)), [], now=1.0)
    store._db.execute('UPDATE tasks SET health = \'{"window": "10\' WHERE task_id = 1')  # cut short
    assert store.load_states()[1].health == CallHealth()
    assert store.dump().tasks[0].health == {}  # and a copy carries it as that


def test_dead_letters_can_be_requeued_or_dropped() -> None:
    store = Store.open(":memory:")
    for task_id in (1, 2, 3):
        _observe(store, task_id, ["a", "b"])
    for receiver in ("a", "b"):
        while (head := store.head(receiver)) is not None:
            store.mark_dead([head.seq], "410", now=5.0)
    dead_a = [r.seq for r in store.admin().outbox_rows(states=["dead"], receiver="a")]
    assert store.admin().requeue(seqs=dead_a[:1], now=100.0) == 1
    requeued = store.head("a")
    assert requeued is not None
    assert (requeued.seq, requeued.attempts, requeued.created_at) == (dead_a[0], 0, 100.0)
    assert store.admin().drop(state="dead", receiver="b") == 3
    assert store.admin().requeue(now=100.0) == 2  # the rest of a's
    assert {(c.receiver, c.state, c.count) for c in store.outbox_counts()} == {("a", "pending", 3)}


def test_outbox_rows_without_a_limit_lists_every_row_and_the_total_counts_them() -> None:
    store = Store.open(":memory:")
    for task_id in range(1, 6):
        _observe(store, task_id, ["a", "b"])
    assert len(store.admin().outbox_rows(states=["pending"], limit=2)) == 2
    assert len(store.admin().outbox_rows(states=["pending"], limit=None)) == 10
    assert store.admin().outbox_total(states=["pending"]) == 10
    assert store.admin().outbox_total(states=["pending"], receiver="a") == 5
    assert store.admin().outbox_total(states=["dead"]) == 0


@pytest.mark.anyio
async def test_a_store_call_waiting_on_a_lock_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    """Another process holds the database (`watcher outbox retry` at that moment): the daemon's write waits for it
    in its worker thread while polling and delivery go on; it completes once the lock is gone."""
    import anyio

    from watcher.stores import ThreadedStore

    sqlite = Store.open(tmp_path / "s.db")
    store = ThreadedStore(sqlite)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, held by someone else
    state, events = detect(None, TaskSnapshot(id=1, status="pending"), T0, Rules())
    recorded = anyio.Event()
    ran_meanwhile = False

    async def write() -> None:
        await store.record(state, [(e, ["a"]) for e in events], now=1.0)
        recorded.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()  # the loop goes round while the write waits
        ran_meanwhile = not recorded.is_set()
        other.execute("COMMIT")  # the other process is done
        with anyio.fail_after(10):
            await recorded.wait()
    assert ran_meanwhile
    assert (await store.load_states())[1].snapshot.status == "pending"
    other.close()
    sqlite.close()


def test_a_damaged_rules_column_costs_its_history_not_the_start(tmp_path: Path) -> None:
    # As the call health column: text that is not JSON holds no rule (it fires again if it still holds).
    import sqlite3

    from watcher.detect import Rules, detect
    from watcher.model import TaskSnapshot

    store = Store.open(tmp_path / "s.db")
    state, _ = detect(None, TaskSnapshot(id=3, status="running"), datetime(2026, 11, 23, 9, 0, tzinfo=UTC), Rules())
    store.record(state, [], now=1.0)
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE tasks SET rules = '{not json' WHERE task_id = 3")
    assert store.load_states()[3].rules == ()
    store.close()
