"""SQLite state: the last snapshot of each task and the outbox, written together in one transaction.

A row of the outbox is one (event, receiver) delivery. It is written in the same transaction as the snapshot that
produced the event, and marked delivered only after the receiver accepted it: a crash at any moment either loses
the poll (it is detected again on restart) or leaves the delivery pending (it is sent again with the same id).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from .errors import StoreError, StoreNotEmpty
from .health import CallHealth
from .model import Event, TaskSnapshot, TaskState

SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id        INTEGER PRIMARY KEY,
    snapshot       TEXT NOT NULL,
    progress_since TEXT NOT NULL,
    stalled        INTEGER NOT NULL DEFAULT 0,
    missing        INTEGER NOT NULL DEFAULT 0,
    changed_at     TEXT NOT NULL,
    windows_doubted_at TEXT,
    updated_while_closed_at TEXT,
    rules          TEXT,
    health         TEXT
);
CREATE TABLE IF NOT EXISTS added_tasks (
    task_id  INTEGER PRIMARY KEY,
    labels   TEXT NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unseen (
    task_id INTEGER PRIMARY KEY,
    reason  TEXT NOT NULL,
    since   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id      TEXT PRIMARY KEY,
    task_id INTEGER NOT NULL,
    type    TEXT NOT NULL,
    time    TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_task ON events (task_id, time);
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL REFERENCES events (id),
    receiver        TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    done_at         REAL,
    last_attempt_at REAL,
    UNIQUE (event_id, receiver)
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (receiver, state, seq);
"""

# MIGRATIONS[n] takes a store from schema n to n+1; each runs in one transaction with the version bump, so a crash
# mid-migration leaves the old version intact. Never edit a released step: add the next one.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE outbox ADD COLUMN last_attempt_at REAL"],
    2: [
        "ALTER TABLE tasks ADD COLUMN windows_doubted_at TEXT",
        "ALTER TABLE tasks ADD COLUMN updated_while_closed_at TEXT",
        "CREATE TABLE IF NOT EXISTS unseen (task_id INTEGER PRIMARY KEY, reason TEXT NOT NULL, since TEXT NOT NULL)",
    ],
    # 4: the rules holding per task (one `rule_matched` per episode), and the tasks added at run time.
    3: [
        "ALTER TABLE tasks ADD COLUMN rules TEXT",
        "CREATE TABLE IF NOT EXISTS added_tasks (task_id INTEGER PRIMARY KEY, labels TEXT NOT NULL, added_at TEXT NOT NULL)",
    ],
    # 5: what the call log has shown of each task (watcher/health.py), as JSON; NULL while it has not been read.
    4: ["ALTER TABLE tasks ADD COLUMN health TEXT"],
}


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One pending outbox row: an event for one receiver."""

    seq: int
    receiver: str
    event: Event
    created_at: float
    attempts: int
    next_attempt_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class AddedTask:
    """A task added at run time, with its labels."""

    task_id: int
    labels: dict[str, str]
    added_at: datetime


def rules_to(rules: Sequence[tuple[str, datetime]]) -> dict[str, str]:
    """The rules holding, as stored: {name: since (ISO 8601)}."""
    return {name: since.isoformat() for name, since in rules}


def rules_from(stored: Any) -> tuple[tuple[str, datetime], ...]:
    """Inverse of `rules_to`, tolerant: what cannot be read holds no rule (it fires again if it still holds)."""
    if not isinstance(stored, dict):
        return ()
    out = []
    for name, since in stored.items():
        try:
            out.append((str(name), datetime.fromisoformat(since)))
        except (TypeError, ValueError):
            continue
    return tuple(sorted(out))


def health_to(health: CallHealth | None) -> dict[str, Any] | None:
    """A task's call health, as stored (None while the call log has not been read)."""
    return health.to_dict() if health is not None else None


def health_from(stored: Any) -> CallHealth | None:
    """Inverse of `health_to`, tolerant: a damaged value is read as far as it can be (`CallHealth.from_dict`), so it
    costs history, never the task's state."""
    return CallHealth.from_dict(stored) if stored is not None else None


def json_or_damaged(text: str | None) -> Any:
    """A JSON column's value; None for NULL, and an empty object for text that is not JSON (which `rules_from` and
    `health_from` read as empty): a damaged column costs that history, never the task's state."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {}


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """An outbox row as reminders see it: its event, its state, and when it was settled."""

    seq: int
    state: str  # pending, delivered, dead
    created_at: float
    done_at: float | None  # when it was delivered or dead-lettered
    event: Event


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxCount:
    """Outbox rows of one receiver in one state."""

    receiver: str
    state: str
    count: int
    oldest: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryReport:
    """How deliveries to one receiver last went: its newest error (with when) and its newest delivery."""

    receiver: str
    last_error: str | None
    last_error_at: float | None
    last_delivered_at: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row as `watcher outbox` shows it."""

    seq: int
    receiver: str
    state: str
    event_type: str
    task_id: int
    event_id: str
    created_at: float
    attempts: int
    last_attempt_at: float | None
    next_attempt_at: float
    last_error: str | None


class _Database:
    """One SQLite connection, its transactions and reads: shared by the hot path (`Store`) and the operator's
    queries (`OutboxAdmin`), which the store hands out on its own connection."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self.path = path

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")  # this COMMIT returns only once it is on disk
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (disk full, busy): a transaction left open would make every later
                # BEGIN fail and let reads on this connection see rows that were never stored.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from None

    def check_writable(self) -> None:
        """Raise StoreError unless a write transaction can be started right now."""
        with self._transaction():
            pass

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: read failed: {exc}") from None


class Store(_Database):
    """The state database's hot path: what polling and delivery read and write; `Store.open(path)` (":memory:" for
    tests); the operator's queries are `store.admin()`."""

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open or create the database (and its directory); raise StoreError with the reason if it cannot."""
        spath = str(path)
        try:
            if spath != ":memory:":
                Path(spath).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly what we say.
            db = sqlite3.connect(spath, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + synchronous=NORMAL survives a process crash (kill -9) without loss; a power cut can drop the
            # last commits. That is harmless for snapshots without events and for delivery marks (a lost mark is a
            # redelivery under the same id); commits that record events are made durable one by one (see record).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            version = cls._schema_version(db)
            if version is None:
                db.executescript(_SCHEMA)
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{spath}: written by a newer voicefox-watcher (schema {version} > {SCHEMA_VERSION}); upgrade it"
                )
            else:
                cls._migrate(db, version)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{spath}: cannot open the state database: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{spath}: cannot create its directory: {exc.strerror}") from None
        return cls(db, spath)

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int | None:
        has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            return None
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int) -> None:
        while version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version + 1),))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            version += 1

    # -- task state ------------------------------------------------------------------------------------------------

    def membership(self) -> None:
        """No replicas share a SQLite store: one daemon has it all (PostgreSQL's store answers who holds what)."""
        return None

    def load_states(self, task_ids: Iterable[int] | None = None) -> dict[int, TaskState]:
        """Every task's last known state (or these tasks')."""
        sql = (
            "SELECT task_id, snapshot, progress_since, stalled, missing, windows_doubted_at, updated_while_closed_at,"
            " rules, health FROM tasks"
        )
        params: list[int] = []
        if task_ids is not None:
            params = list(task_ids)
            sql += f" WHERE task_id IN ({', '.join('?' * len(params))})"
        states = {}
        for task_id, snapshot, since, stalled, missing, doubted, updated, rules, health in self._read(sql, params):
            states[task_id] = TaskState(
                snapshot=TaskSnapshot.from_dict(json.loads(snapshot)),
                progress_since=datetime.fromisoformat(since),
                stalled=bool(stalled),
                missing=bool(missing),
                windows_doubted_at=datetime.fromisoformat(doubted) if doubted else None,
                updated_while_closed_at=datetime.fromisoformat(updated) if updated else None,
                rules=rules_from(json_or_damaged(rules)),
                health=health_from(json_or_damaged(health)),
            )
        return states

    def record(
        self,
        state: TaskState,
        deliveries: Sequence[tuple[Event, Sequence[str]]],
        now: float,
    ) -> None:
        """In one transaction: save the task's new state, its events, and one outbox row per receiver of each (the
        routing is decided by the caller and handed over as data: (event, receivers) pairs)."""
        # A commit with events is synced before anything can deliver them: after a power cut, an event that went out
        # is still on disk, so it is not detected afresh and announced again under a new id. Polls that only move a
        # snapshot (most changes) stay cheap.
        with self._transaction(durable=bool(deliveries)) as db:
            db.execute(
                "INSERT INTO tasks (task_id, snapshot, progress_since, stalled, missing, changed_at, windows_doubted_at,"
                " updated_while_closed_at, rules, health) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET"
                " snapshot=excluded.snapshot, progress_since=excluded.progress_since, stalled=excluded.stalled,"
                " missing=excluded.missing, changed_at=excluded.changed_at,"
                " windows_doubted_at=excluded.windows_doubted_at, updated_while_closed_at=excluded.updated_while_closed_at,"
                " rules=excluded.rules, health=excluded.health",
                (
                    state.snapshot.id,
                    json.dumps(state.snapshot.to_dict(), separators=(",", ":")),
                    state.progress_since.isoformat(),
                    int(state.stalled),
                    int(state.missing),
                    datetime.fromtimestamp(now, UTC).isoformat(),
                    state.windows_doubted_at.isoformat() if state.windows_doubted_at else None,
                    state.updated_while_closed_at.isoformat() if state.updated_while_closed_at else None,
                    _json(rules_to(state.rules)) if state.rules else None,
                    json.dumps(health_to(state.health), separators=(",", ":")) if state.health is not None else None,
                ),
            )
            db.execute("DELETE FROM unseen WHERE task_id = ?", (state.snapshot.id,))
            for event, receivers in deliveries:
                self._insert_event(db, event, receivers, now)

    def note_unseen(self, task_id: int, reason: str, now: float) -> None:
        """A task the API has never served answered with `reason` (e.g. 404): kept for `watcher status`."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO unseen (task_id, reason, since) VALUES (?, ?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET reason=excluded.reason WHERE reason != excluded.reason",
                (task_id, reason, datetime.fromtimestamp(now, UTC).isoformat()),
            )

    def unseen(self) -> dict[int, tuple[str, datetime]]:
        """Tasks never served by the API, with why and since when."""
        return {
            t: (r, datetime.fromisoformat(since))
            for t, r, since in self._read("SELECT task_id, reason, since FROM unseen")
        }

    def meta(self, key: str) -> str | None:
        """A value kept beside the state (such as the campaigns' zone), or None."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Keep a value beside the state."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def added_tasks(self) -> dict[int, AddedTask]:
        """The tasks added at run time (`watcher tasks add`), by id."""
        return {
            task_id: AddedTask(task_id, json.loads(labels), datetime.fromisoformat(added_at))
            for task_id, labels, added_at in self._read(
                "SELECT task_id, labels, added_at FROM added_tasks ORDER BY task_id"
            )
        }

    def add_task(self, task_id: int, labels: Mapping[str, str], now: float) -> bool:
        """Watch a task from now on (labels replace an earlier add's); return whether it was not added before."""
        with self._transaction(durable=True) as db:
            new = db.execute("SELECT 1 FROM added_tasks WHERE task_id = ?", (task_id,)).fetchone() is None
            db.execute(
                "INSERT INTO added_tasks (task_id, labels, added_at) VALUES (?, ?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET labels = excluded.labels",
                (task_id, _json(dict(labels)), datetime.fromtimestamp(now, UTC).isoformat()),
            )
        return new

    def remove_task(self, task_id: int) -> bool:
        """Watch an added task no more; return whether it was added."""
        with self._transaction(durable=True) as db:
            return db.execute("DELETE FROM added_tasks WHERE task_id = ?", (task_id,)).rowcount > 0

    def record_event(self, event: Event, receivers: Iterable[str], now: float) -> None:
        """Save an event that belongs to no task state (a test notification, a watcher event) with its outbox rows."""
        with self._transaction(durable=True) as db:
            self._insert_event(db, event, receivers, now)

    @staticmethod
    def _insert_event(db: sqlite3.Connection, event: Event, receivers: Iterable[str], now: float) -> None:
        db.execute(
            "INSERT OR IGNORE INTO events (id, task_id, type, time, body) VALUES (?, ?, ?, ?, ?)",
            (
                event.id,
                int(event.subject) if event.subject.isdigit() else 0,
                event.type,
                event.time.isoformat(),
                json.dumps(event.to_dict(), separators=(",", ":")),
            ),
        )
        db.executemany(
            "INSERT OR IGNORE INTO outbox (event_id, receiver, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
            [(event.id, r, now, now) for r in receivers],
        )

    # -- outbox ----------------------------------------------------------------------------------------------------

    def head(self, receiver: str) -> Delivery | None:
        """The oldest pending delivery for a receiver (deliveries to one receiver keep their order)."""
        rows = self._read(
            "SELECT o.seq, o.receiver, e.body, o.created_at, o.attempts, o.next_attempt_at FROM outbox o"
            " JOIN events e ON e.id = o.event_id WHERE o.receiver = ? AND o.state = 'pending' ORDER BY o.seq LIMIT 1",
            (receiver,),
        )
        if not rows:
            return None
        seq, rcv, body, created, attempts, next_at = rows[0]
        return Delivery(seq, rcv, Event.from_dict(json.loads(body)), created, attempts, next_at)

    def pending(self, receiver: str, limit: int) -> list[Delivery]:
        """A receiver's oldest pending deliveries, in order (the dispatcher decides which are due, held, grouped)."""
        return [
            Delivery(seq, rcv, Event.from_dict(json.loads(body)), created, attempts, next_at)
            for seq, rcv, body, created, attempts, next_at in self._read(
                "SELECT o.seq, o.receiver, e.body, o.created_at, o.attempts, o.next_attempt_at FROM outbox o"
                " JOIN events e ON e.id = o.event_id WHERE o.receiver = ? AND o.state = 'pending'"
                " ORDER BY o.seq LIMIT ?",
                (receiver, limit),
            )
        ]

    def mark_delivered(self, seqs: Sequence[int], now: float) -> None:
        """The receiver accepted these deliveries (one message, or one digest of several): all of them, or none."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET state='delivered', done_at=?, last_attempt_at=?, attempts=attempts+1, last_error=NULL"
                " WHERE seq=? AND state='pending'",
                [(now, now, seq) for seq in seqs],
            )

    def mark_retry(self, seqs: Sequence[int], error: str, next_attempt_at: float, now: float) -> None:
        """The attempt failed but may succeed later."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=?, last_attempt_at=?"
                " WHERE seq=? AND state='pending'",
                [(error[:500], next_attempt_at, now, seq) for seq in seqs],
            )

    def mark_dead(self, seqs: Sequence[int], error: str, now: float) -> None:
        """Give up on these deliveries; they stay in the outbox as dead letters."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET state='dead', attempts=attempts+1, last_error=?, done_at=?, last_attempt_at=?"
                " WHERE seq=? AND state='pending'",
                [(error[:500], now, now, seq) for seq in seqs],
            )

    def latest(self, receiver: str, types: Sequence[str]) -> list[Sent]:
        """Per task and event type among `types`, the receiver's newest outbox row (reminders continue from it)."""
        if not types:
            return []
        marks = ", ".join("?" * len(types))
        return [
            Sent(seq, state, created, done, Event.from_dict(json.loads(body)))
            for seq, state, created, done, body in self._read(
                "SELECT o.seq, o.state, o.created_at, o.done_at, e.body FROM outbox o JOIN events e ON e.id = o.event_id"
                " WHERE o.seq IN (SELECT MAX(o2.seq) FROM outbox o2 JOIN events e2 ON e2.id = o2.event_id"
                f" WHERE o2.receiver = ? AND e2.type IN ({marks}) AND e2.task_id != 0 GROUP BY e2.task_id, e2.type)"
                " ORDER BY o.seq",
                (receiver, *types),
            )
        ]

    def pending_receivers(self) -> list[str]:
        """Receivers that have pending deliveries."""
        return [r for (r,) in self._read("SELECT DISTINCT receiver FROM outbox WHERE state='pending'")]

    def outbox_counts(self) -> list[OutboxCount]:
        """How many rows each receiver has in each state, and the oldest creation time."""
        return [
            OutboxCount(*row)
            for row in self._read(
                "SELECT receiver, state, COUNT(*), MIN(created_at) FROM outbox GROUP BY receiver, state"
                " ORDER BY receiver, state"
            )
        ]

    def delivery_report(self) -> list[DeliveryReport]:
        """Per receiver with outbox rows: its newest error still recorded and its newest delivery."""
        # A delivery clears its row's error, so the newest error is that of a row still pending or given up.
        return [
            DeliveryReport(*row)
            for row in self._read(
                "SELECT receiver, (SELECT last_error FROM outbox e WHERE e.receiver = o.receiver"
                "   AND e.last_error IS NOT NULL ORDER BY e.last_attempt_at DESC, e.seq DESC LIMIT 1),"
                " MAX(CASE WHEN last_error IS NOT NULL THEN last_attempt_at END),"
                " MAX(CASE WHEN state = 'delivered' THEN done_at END)"
                " FROM outbox o GROUP BY receiver ORDER BY receiver"
            )
        ]

    def recent_events(self, limit: int) -> list[Event]:
        """The newest events of every task and of the watcher, newest first."""
        # By rowid, the order they were recorded in (a copy loads them in time order): read straight off the table's
        # b-tree, where sorting by time would scan a week of events on every refresh of the page.
        rows = self._read("SELECT body FROM events ORDER BY rowid DESC LIMIT ?", (limit,))
        return [Event.from_dict(json.loads(body)) for (body,) in rows]

    def prune(self, delivered_before: float) -> int:
        """Forget delivered rows, and events nobody waits for, older than a cut-off; return rows removed."""
        with self._transaction() as db:
            n = db.execute("DELETE FROM outbox WHERE state='delivered' AND done_at < ?", (delivered_before,)).rowcount
            db.execute(
                "DELETE FROM events WHERE time < ? AND id NOT IN (SELECT event_id FROM outbox)",
                (datetime.fromtimestamp(delivered_before, UTC).isoformat(),),
            )
        return n

    def admin(self) -> OutboxAdmin:
        """The operator's queries, on this store's connection."""
        return OutboxAdmin(self._db, self.path)

    def events(self, task_id: int | None = None, limit: int = 50) -> list[Event]:
        """The most recent events, newest first."""
        if task_id is None:
            rows = self._read("SELECT body FROM events ORDER BY time DESC LIMIT ?", (limit,))
        else:
            rows = self._read("SELECT body FROM events WHERE task_id=? ORDER BY time DESC LIMIT ?", (task_id, limit))
        return [Event.from_dict(json.loads(b)) for (b,) in rows]

    # -- copying a store (`watcher store copy`) --------------------------------------------------------------------

    @classmethod
    def open_existing(cls, path: str | Path) -> Store:
        """Open a store that is already there, never creating one: StoreError unless `path` is a watcher's store."""
        spath = str(path)
        if not Path(spath).is_file():
            raise StoreError(f"{spath}: no such store (no file there)")
        try:
            # mode=rw: never creates the file; only the schema version is read, so a file that is not ours is left as
            # it was (Store.open would lay our tables into it).
            with contextlib.closing(sqlite3.connect(f"{Path(spath).resolve().as_uri()}?mode=rw", uri=True)) as db:
                version = cls._schema_version(db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{spath}: not a voicefox-watcher store: {exc}") from None
        if version is None:
            raise StoreError(f"{spath}: not a voicefox-watcher store (it has no schema version)")
        return cls.open(spath)

    def dump(self) -> StoreDump:
        """What a copy carries (see `StoreDump`), read in one transaction: a consistent snapshot."""
        try:
            self._db.execute("BEGIN")  # deferred: a read transaction, which takes no write lock
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: read failed: {exc}") from None
        try:
            return StoreDump(
                tasks=tuple(
                    TaskRow(
                        task_id,
                        json.loads(snap),
                        datetime.fromisoformat(since),
                        bool(stalled),
                        bool(missing),
                        datetime.fromisoformat(changed),
                        datetime.fromisoformat(doubted) if doubted else None,
                        datetime.fromisoformat(updated) if updated else None,
                        json_or_damaged(rules) or None,
                        json_or_damaged(health),
                    )
                    for task_id, snap, since, stalled, missing, changed, doubted, updated, rules, health in self._read(
                        "SELECT task_id, snapshot, progress_since, stalled, missing, changed_at, windows_doubted_at,"
                        " updated_while_closed_at, rules, health FROM tasks ORDER BY task_id"
                    )
                ),
                added=tuple(self.added_tasks().values()),
                unseen=tuple(
                    (task_id, reason, datetime.fromisoformat(since))
                    for task_id, reason, since in self._read(
                        "SELECT task_id, reason, since FROM unseen ORDER BY task_id"
                    )
                ),
                meta=tuple(self._read("SELECT key, value FROM meta WHERE key != 'schema_version' ORDER BY key")),
                events=tuple(
                    EventRow(event_id, task_id, type_, datetime.fromisoformat(time_), json.loads(body))
                    for event_id, task_id, type_, time_, body in self._read(
                        "SELECT id, task_id, type, time, body FROM events WHERE id IN"
                        f" (SELECT event_id FROM outbox WHERE {QUEUED}) ORDER BY time, id"
                    )
                ),
                outbox=tuple(
                    QueuedRow(*row)
                    for row in self._read(f"SELECT {QueuedRow.COLUMNS} FROM outbox WHERE {QUEUED} ORDER BY seq")
                ),
                delivered=int(self._read("SELECT COUNT(*) FROM outbox WHERE state = 'delivered'")[0][0]),
            )
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")  # it only read: nothing to undo

    def load(self, dump: StoreDump, *, replace: bool = False) -> int:
        """Write a dump in one transaction, each row as it was (event ids and seqs too); StoreNotEmpty if this store
        already holds a watcher's state, unless `replace`: then that is deleted first, in the same transaction.
        Return how many rows were replaced."""
        with self._transaction(durable=True) as db:
            held = db.execute(held_query()).fetchone()
            if sum(held) and not replace:
                raise not_empty(self.path, *held)
            for table in ("outbox", "events", "unseen", "tasks", "added_tasks"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM meta WHERE key != 'schema_version'")
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", dump.meta)
            db.executemany(
                "INSERT INTO tasks (task_id, snapshot, progress_since, stalled, missing, changed_at,"
                " windows_doubted_at, updated_while_closed_at, rules, health) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        t.task_id,
                        _json(t.snapshot),
                        _iso(t.progress_since),
                        int(t.stalled),
                        int(t.missing),
                        _iso(t.changed_at),
                        _iso(t.windows_doubted_at),
                        _iso(t.updated_while_closed_at),
                        _json(t.rules) if t.rules else None,
                        json.dumps(t.health, separators=(",", ":")) if t.health is not None else None,
                    )
                    for t in dump.tasks
                ],
            )
            db.executemany(
                "INSERT INTO added_tasks (task_id, labels, added_at) VALUES (?, ?, ?)",
                [(a.task_id, _json(a.labels), _iso(a.added_at)) for a in dump.added],
            )
            db.executemany(
                "INSERT INTO unseen (task_id, reason, since) VALUES (?, ?, ?)",
                [(task_id, reason, _iso(since)) for task_id, reason, since in dump.unseen],
            )
            db.executemany(
                "INSERT INTO events (id, task_id, type, time, body) VALUES (?, ?, ?, ?, ?)",
                [(e.id, e.task_id, e.type, _iso(e.time), _json(e.body)) for e in dump.events],
            )
            # Explicit seqs: AUTOINCREMENT carries on past the highest, so rows the daemon adds later queue behind.
            marks = ", ".join("?" * len(dataclasses.fields(QueuedRow)))
            db.executemany(
                f"INSERT INTO outbox ({QueuedRow.COLUMNS}) VALUES ({marks})",
                [dataclasses.astuple(row) for row in dump.outbox],
            )
        return sum(held)


class OutboxAdmin(_Database):
    """The operator's queries on the outbox (`watcher outbox`): listing, counting, retrying and dropping rows. Kept
    out of `Store`, the daemon's hot path; it shares the store's connection."""

    def outbox_rows(
        self, *, states: Iterable[str], receiver: str | None = None, limit: int | None = 100
    ) -> list[OutboxRow]:
        """Outbox rows in the given states (oldest first), at most `limit` (None: all), for `watcher outbox`."""
        where, params = self._rows_where(states, receiver)
        sql = (
            "SELECT o.seq, o.receiver, o.state, e.type, e.task_id, o.event_id, o.created_at, o.attempts,"
            " o.last_attempt_at, o.next_attempt_at, o.last_error FROM outbox o JOIN events e ON e.id = o.event_id"
            f" WHERE {where} ORDER BY o.seq"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [OutboxRow(*row) for row in self._read(sql, params)]

    def outbox_total(self, *, states: Iterable[str], receiver: str | None = None) -> int:
        """How many rows `outbox_rows` would list without a limit."""
        where, params = self._rows_where(states, receiver)
        sql = f"SELECT COUNT(*) FROM outbox o JOIN events e ON e.id = o.event_id WHERE {where}"
        return int(self._read(sql, params)[0][0])

    @staticmethod
    def _rows_where(states: Iterable[str], receiver: str | None) -> tuple[str, list[Any]]:
        params: list[Any] = list(states)
        where = f"o.state IN ({','.join('?' * len(params))})"
        if receiver is not None:
            where += " AND o.receiver = ?"
            params.append(receiver)
        return where, params

    def outbox_seqs(self, seqs: Iterable[int]) -> dict[int, tuple[str, str]]:
        """(receiver, state) of each of these outbox rows that exists."""
        seqs = list(seqs)
        if not seqs:
            return {}
        rows = self._read(f"SELECT seq, receiver, state FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})", seqs)
        return {seq: (receiver, state) for seq, receiver, state in rows}

    def requeue(self, *, seqs: Iterable[int] = (), receiver: str | None = None, now: float) -> int:
        """Put dead letters (chosen by seq, or all of a receiver's, or all) back in the queue as new; return how many."""
        where, params = self._selection("dead", seqs, receiver)
        with self._transaction() as db:
            # created_at restarts so max_age counts from now: a retried dead letter gets a full new chance.
            return db.execute(
                "UPDATE outbox SET state='pending', attempts=0, next_attempt_at=?, created_at=?, done_at=NULL"
                f" WHERE {where}",
                [now, now, *params],
            ).rowcount

    def drop(self, *, state: str, seqs: Iterable[int] = (), receiver: str | None = None) -> int:
        """Delete outbox rows in `state` (chosen by seq, or all of a receiver's, or all); return how many."""
        where, params = self._selection(state, seqs, receiver)
        with self._transaction() as db:
            return db.execute(f"DELETE FROM outbox WHERE {where}", params).rowcount

    @staticmethod
    def _selection(state: str, seqs: Iterable[int], receiver: str | None) -> tuple[str, list[Any]]:
        params: list[Any] = [state]
        where = "state = ?"
        seqs = list(seqs)
        if seqs:
            where += f" AND seq IN ({','.join('?' * len(seqs))})"
            params += seqs
        if receiver is not None:
            where += " AND receiver = ?"
            params.append(receiver)
        return where, params


class StoreLock:
    """An exclusive lock beside the database, so two daemons never deliver from one store."""

    def __init__(self, db_path: str | Path) -> None:
        # Resolved, so two spellings of one store (a symlink, a relative path) share one lock.
        self.path = Path(f"{Path(db_path).resolve()}.lock")
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreError naming the holder."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")  # noqa: SIM115 - held for the life of the daemon
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StoreError(
                f"{self.path.with_suffix('')}: already in use by watcher pid {holder}; only one daemon may use a store"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Drop the lock."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# -- copying a store (`watcher store copy`): plain rows both engines read and write ------------------------------------

# The outbox rows a copy carries: what is still owed and what was given up on. Delivered rows are history.
QUEUED = "state IN ('pending', 'dead')"


def held_query(schema: str = "") -> str:
    """What a copy's target holds already (`not_empty` takes the counts): tasks, tasks never seen, events,
    deliveries, and remembered values; `schema` is the tables' prefix ("voicefox_watcher." on PostgreSQL)."""
    counts = ", ".join(f"(SELECT COUNT(*) FROM {schema}{table})" for table in ("unseen", "events", "outbox"))
    # Tasks added at run time count as tasks: a copy must not silently replace them either.
    tasks = f"(SELECT COUNT(*) FROM {schema}tasks) + (SELECT COUNT(*) FROM {schema}added_tasks)"
    return f"SELECT {tasks}, {counts}, (SELECT COUNT(*) FROM {schema}meta WHERE key <> 'schema_version')"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRow:
    """A task's state as a store keeps it."""

    task_id: int
    snapshot: dict[str, Any]
    progress_since: datetime
    stalled: bool
    missing: bool
    changed_at: datetime
    windows_doubted_at: datetime | None
    updated_while_closed_at: datetime | None
    rules: dict[str, str] | None = None  # as `rules_to` stores them
    health: Any = None  # as `health_to` stores it (a damaged value is carried as it was read)


@dataclasses.dataclass(frozen=True, slots=True)
class EventRow:
    """An event as a store keeps it (`body` is the CloudEvent, id and all)."""

    id: str
    task_id: int
    type: str
    time: datetime
    body: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedRow:
    """An outbox row a copy carries: pending or dead, with its attempts and times."""

    COLUMNS: ClassVar[str] = (
        "seq, event_id, receiver, state, created_at, attempts, next_attempt_at, last_error, done_at, last_attempt_at"
    )

    seq: int
    event_id: str
    receiver: str
    state: str
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None
    done_at: float | None
    last_attempt_at: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class StoreDump:
    """What `watcher store copy` carries from one store to another: every task's state, the tasks never seen, the
    remembered values (not the schema version: each engine keeps its own), and the pending and dead deliveries in seq
    order with their events. Delivered rows are history and stay behind; `delivered` counts them."""

    tasks: tuple[TaskRow, ...]
    unseen: tuple[tuple[int, str, datetime], ...]
    meta: tuple[tuple[str, str], ...]
    events: tuple[EventRow, ...]
    outbox: tuple[QueuedRow, ...]
    delivered: int
    added: tuple[AddedTask, ...] = ()


def not_empty(path: str, tasks: int, unseen: int, events: int, deliveries: int, meta: int) -> StoreNotEmpty:
    """The refusal to copy into a store that holds these rows already."""
    held = (
        f"{tasks} tasks, {unseen} never served by the API, {events} events, {deliveries} deliveries,"
        f" {meta} remembered values"
    )
    return StoreNotEmpty(f"{path}: already holds a watcher's state ({held})")


def _iso(when: datetime | None) -> str | None:
    # In UTC, as the daemon writes them: SQLite compares and orders these as text (prune, events()).
    if when is None:
        return None
    return (when.astimezone(UTC) if when.tzinfo else when).isoformat()


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))
