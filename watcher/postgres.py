"""PostgreSQL: the store for teams that run the watcher on the database they already operate (`store.url`).

The same contract as the embedded SQLite store (`stores.StateStore`): one transaction writes a task's new state, its
events and their outbox rows; a row is marked delivered only after the receiver accepted it. Every call is
asynchronous (psycopg 3 with its connection pool), so nothing waits on the database on the event loop. The tables live
in a schema of their own, `voicefox_watcher`, versioned like SQLite's (MIGRATIONS; never edit a released step).

psycopg rather than asyncpg: it is the PostgreSQL community's own driver, speaks libpq's connection strings and
environment (PGPASSWORD, PGSSLMODE, a service file: what operators of a managed database already have), binds
parameters server-side, and its pool checks connections and reconnects after a failover.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import StaleState, StoreError
from .model import Event, TaskSnapshot, TaskState
from .store import (
    QUEUED,
    AddedTask,
    Delivery,
    DeliveryReport,
    EventRow,
    OutboxCount,
    OutboxRow,
    QueuedRow,
    Sent,
    StoreDump,
    TaskRow,
    health_from,
    health_to,
    held_query,
    not_empty,
    rules_from,
    rules_to,
)

if TYPE_CHECKING:
    from .replicas import Membership

SCHEMA = "voicefox_watcher"
SCHEMA_VERSION = 5

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.tasks (
    task_id        BIGINT PRIMARY KEY,
    snapshot       JSONB NOT NULL,
    progress_since TIMESTAMPTZ NOT NULL,
    stalled        BOOLEAN NOT NULL DEFAULT false,
    missing        BOOLEAN NOT NULL DEFAULT false,
    changed_at     TIMESTAMPTZ NOT NULL,
    windows_doubted_at TIMESTAMPTZ,
    updated_while_closed_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.unseen (
    task_id BIGINT PRIMARY KEY,
    reason  TEXT NOT NULL,
    since   TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    id      TEXT PRIMARY KEY,
    task_id BIGINT NOT NULL,
    type    TEXT NOT NULL,
    time    TIMESTAMPTZ NOT NULL,
    body    JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_task ON {SCHEMA}.events (task_id, time);
CREATE INDEX IF NOT EXISTS events_by_time ON {SCHEMA}.events (time DESC, id DESC);
CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
    seq             BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES {SCHEMA}.events (id),
    receiver        TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    created_at      DOUBLE PRECISION NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error      TEXT,
    done_at         DOUBLE PRECISION,
    last_attempt_at DOUBLE PRECISION,
    UNIQUE (event_id, receiver)
);
CREATE INDEX IF NOT EXISTS outbox_queue ON {SCHEMA}.outbox (receiver, state, seq);
"""

# MIGRATIONS[n] takes the schema from version n to n+1, in one transaction with the version bump. A new database is
# created at version 1 and migrated like an old one, so every step is exercised on every install.
MIGRATIONS: dict[int, list[str]] = {
    # 2: replicas. A task row's version (compare-and-set: a snapshot is written only over the version its writer
    # read), the replica that claimed an outbox row (only it may mark the row), the replicas alive and their leases.
    1: [
        f"ALTER TABLE {SCHEMA}.tasks ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
        f"ALTER TABLE {SCHEMA}.outbox ADD COLUMN claimed_by TEXT",
        f"""CREATE TABLE {SCHEMA}.replicas (
            id         TEXT PRIMARY KEY,
            host       TEXT NOT NULL,
            pid        INTEGER NOT NULL,
            version    TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            seen_at    TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )""",
        # A lease lasts as long as its owner's replica row: renewing is one row per replica, however many tasks.
        f"""CREATE TABLE {SCHEMA}.leases (
            kind        TEXT NOT NULL,
            key         TEXT NOT NULL,
            owner       TEXT NOT NULL,
            acquired_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (kind, key)
        )""",
        f"CREATE INDEX leases_by_owner ON {SCHEMA}.leases (owner)",
    ],
    # 3: the rules holding per task (one `rule_matched` per episode), and the tasks added at run time.
    2: [
        f"ALTER TABLE {SCHEMA}.tasks ADD COLUMN rules JSONB",
        f"""CREATE TABLE {SCHEMA}.added_tasks (
            task_id  BIGINT PRIMARY KEY,
            labels   JSONB NOT NULL,
            added_at TIMESTAMPTZ NOT NULL
        )""",
    ],
    # 4: what the call log has shown of each task (watcher/health.py); NULL while it has not been read.
    3: [f"ALTER TABLE {SCHEMA}.tasks ADD COLUMN health JSONB"],
    # 5: the newest events read straight off an index (`recent_events`, every refresh of the status page), not by
    # sorting a week of them.
    4: [f"CREATE INDEX IF NOT EXISTS events_by_time ON {SCHEMA}.events (time DESC, id DESC)"],
}

# Only one watcher may create or migrate the schema at a time (a rolling deploy starts several at once).
_MIGRATION_LOCK = 0x766F696365666F78  # "voicefox"
# Every running daemon holds this lock shared; a tool that must be alone with the database (`watcher store copy`)
# takes it exclusive, and so waits for no daemon and lets none start meanwhile.
_DAEMON_LOCK = 0x766F696365666F79
_LEASE_LOCK = 0x766F696365666F7A  # one replica's round of leases at a time
CHANNEL = "voicefox_watcher"  # LISTEN/NOTIFY: new outbox rows, replicas joining and leaving, push hints


def _missing_extra() -> StoreError:
    return StoreError("store.url: PostgreSQL needs the [postgres] extra: pip install 'voicefox-watcher[postgres]'")


class PostgresStore:
    """The `StateStore` contract on PostgreSQL; open with `await PostgresStore.open(url)`, close with `close()`."""

    def __init__(self, pool: Any, shown: str, conninfo: str = "") -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._lock: Any = None  # the connection holding the daemons' shared lock, while held
        self.path = shown  # the URL without its password: what messages may name
        # Who this process is among the replicas: its leases and outbox claims carry this id.
        self.replica = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        # The version of each task row as this process last read or wrote it: a snapshot is written only over that
        # version (compare-and-set), so two replicas polling one task never both announce its change.
        self._versions: dict[int, int] = {}

    @classmethod
    async def open(cls, url: str, *, shown: str, max_size: int = 4, connect_timeout: float = 10.0) -> PostgresStore:
        """Connect, create or migrate the schema, and return the store; StoreError (naming `shown`) if it cannot."""
        try:
            import psycopg
            from psycopg.rows import tuple_row
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            raise _missing_extra() from None
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=connect_timeout,
            open=False,
            kwargs={"autocommit": True, "row_factory": tuple_row},
            check=AsyncConnectionPool.check_connection,  # a connection a failover dropped is replaced, not used
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
            store = cls(pool, shown, url)
            await store._migrate()
        except (psycopg.Error, TimeoutError, OSError) as exc:
            await pool.close()
            raise StoreError(f"{shown}: cannot open the PostgreSQL store: {_reason(exc)}") from None
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        """Close every connection (and so give up the one-daemon lock)."""
        if self._lock is not None:
            await self._lock.close()
            self._lock = None
        await self._pool.close()

    async def lock(self) -> None:
        """Hold the daemons' lock, shared: any number of replicas run together, but not beside a tool that must be
        alone with the database (`watcher store copy`). A session lock: it goes with this process's connection, so a
        killed daemon frees it as soon as the server notices the connection gone."""
        await self._session_lock(
            "pg_try_advisory_lock_shared", "in use by `watcher store copy`; start the watcher when it has finished"
        )

    async def lock_alone(self) -> None:
        """Hold the daemons' lock exclusively (`watcher store copy`): refused while any replica runs on this database,
        and no replica starts until it is given up."""
        await self._session_lock(
            "pg_try_advisory_lock", "already in use by a running watcher; stop every replica on this database first"
        )

    async def _session_lock(self, function: str, refused: str) -> None:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            cursor = await conn.execute(f"SELECT {function}(%s)", (_DAEMON_LOCK,))
            row = await cursor.fetchone()
        except (psycopg.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot take the daemons' lock: {_reason(exc)}") from None
        if not row or not row[0]:
            await conn.close()
            raise StoreError(f"{self.path}: {refused}")
        self._lock = conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        import psycopg

        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.Error, TimeoutError, OSError) as exc:
            raise StoreError(f"{self.path}: {_reason(exc)}") from None

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._transaction() as conn:
            cursor = await conn.execute(sql, params)
            return list(await cursor.fetchall())

    async def _migrate(self) -> None:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cursor = await conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'")
            row = await cursor.fetchone()
            version = int(row[0]) if row else None
            if version is None:
                await conn.execute(_CREATE)
                await conn.execute(f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('schema_version', '1')")
                version = 1
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer voicefox-watcher (schema {version} > {SCHEMA_VERSION}); upgrade it"
                )
            while version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
                version += 1
                await conn.execute(f"UPDATE {SCHEMA}.meta SET value = %s WHERE key = 'schema_version'", (str(version),))

    # -- the contract ------------------------------------------------------------------------------------------

    async def load_states(self, task_ids: Iterable[int] | None = None, *, claim: bool = False) -> dict[int, TaskState]:
        """Every task's last known state (or these tasks'). `claim`: this process will write these states, so the
        version read of each is remembered, and a write is made only over it (`record`). A mere reader (the status
        page, reminders) does not claim: else it would move the guard past another replica's write."""
        sql = (
            "SELECT task_id, version, snapshot, progress_since, stalled, missing, windows_doubted_at,"
            f" updated_while_closed_at, rules, health FROM {SCHEMA}.tasks"
        )
        params: tuple[Any, ...] = ()
        if task_ids is not None:
            task_ids = list(task_ids)
            sql += " WHERE task_id = ANY(%s)"
            params = (task_ids,)
            if claim:
                for task_id in task_ids:
                    self._versions.pop(task_id, None)  # a task with no row yet: the next write inserts it
        states = {}
        for task_id, version, snapshot, since, stalled, missing, doubted, updated, rules, health in await self._read(
            sql, params
        ):
            if claim:
                self._versions[task_id] = version
            states[task_id] = TaskState(
                snapshot=TaskSnapshot.from_dict(snapshot),
                progress_since=since,
                stalled=stalled,
                missing=missing,
                windows_doubted_at=doubted,
                updated_while_closed_at=updated,
                rules=rules_from(rules),
                health=health_from(health),
            )
        return states

    async def record(self, state: TaskState, deliveries: Sequence[tuple[Event, Sequence[str]]], now: float) -> None:
        """In one transaction: a task's new state, its events, and one outbox row per (event, receiver); only over the
        version of the task row this process read (else StaleState, and nothing is written)."""
        from psycopg.types.json import Jsonb

        task_id = state.snapshot.id
        read = self._versions.get(task_id)
        values = (
            Jsonb(state.snapshot.to_dict()),
            state.progress_since,
            state.stalled,
            state.missing,
            datetime.fromtimestamp(now, UTC),
            state.windows_doubted_at,
            state.updated_while_closed_at,
            Jsonb(rules_to(state.rules)) if state.rules else None,
            Jsonb(health_to(state.health)) if state.health is not None else None,
        )
        async with self._transaction() as conn:
            if read is None:
                cursor = await conn.execute(
                    f"INSERT INTO {SCHEMA}.tasks (snapshot, progress_since, stalled, missing, changed_at,"
                    " windows_doubted_at, updated_while_closed_at, rules, health, task_id, version)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1) ON CONFLICT (task_id) DO NOTHING"
                    " RETURNING version",
                    (*values, task_id),
                )
            else:
                cursor = await conn.execute(
                    f"UPDATE {SCHEMA}.tasks SET snapshot = %s, progress_since = %s, stalled = %s, missing = %s,"
                    " changed_at = %s, windows_doubted_at = %s, updated_while_closed_at = %s, rules = %s,"
                    " health = %s, version = version + 1"
                    " WHERE task_id = %s AND version = %s RETURNING version",
                    (*values, task_id, read),
                )
            row = await cursor.fetchone()
            if row is None:
                raise StaleState(f"{self.path}: task {task_id} was written by another replica since this one read it")
            await conn.execute(f"DELETE FROM {SCHEMA}.unseen WHERE task_id = %s", (task_id,))
            for event, receivers in deliveries:
                await self._insert_event(conn, event, receivers, now)
        self._versions[task_id] = row[0]

    async def added_tasks(self) -> dict[int, AddedTask]:
        """The tasks added at run time (`watcher tasks add`), by id."""
        rows = await self._read(f"SELECT task_id, labels, added_at FROM {SCHEMA}.added_tasks ORDER BY task_id")
        return {task_id: AddedTask(task_id, dict(labels), added_at) for task_id, labels, added_at in rows}

    async def add_task(self, task_id: int, labels: Mapping[str, str], now: float) -> bool:
        """Watch a task from now on (labels replace an earlier add's); return whether it was not added before."""
        from psycopg.types.json import Jsonb

        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {SCHEMA}.added_tasks (task_id, labels, added_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (task_id) DO UPDATE SET labels = excluded.labels RETURNING (xmax = 0)",
                (task_id, Jsonb(dict(labels)), datetime.fromtimestamp(now, UTC)),
            )
            row = await cursor.fetchone()
            await conn.execute("SELECT pg_notify(%s, 'tasks')", (CHANNEL,))  # the other replicas reload the list
        return bool(row and row[0])

    async def remove_task(self, task_id: int) -> bool:
        """Watch an added task no more; return whether it was added."""
        async with self._transaction() as conn:
            cursor = await conn.execute(f"DELETE FROM {SCHEMA}.added_tasks WHERE task_id = %s", (task_id,))
            removed = bool(cursor.rowcount > 0)
            if removed:
                await conn.execute("SELECT pg_notify(%s, 'tasks')", (CHANNEL,))
        return removed

    async def record_event(self, event: Event, receivers: Iterable[str], now: float) -> None:
        """An event of no task (the API's, a test) with its outbox rows."""
        async with self._transaction() as conn:
            await self._insert_event(conn, event, list(receivers), now)

    @staticmethod
    async def _insert_event(conn: Any, event: Event, receivers: Iterable[str], now: float) -> None:
        from psycopg.types.json import Jsonb

        await conn.execute(
            f"INSERT INTO {SCHEMA}.events (id, task_id, type, time, body) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (
                event.id,
                int(event.subject) if event.subject.isdigit() else 0,
                event.type,
                event.time,
                Jsonb(event.to_dict()),
            ),
        )
        rows = [(event.id, receiver, now, now) for receiver in receivers]
        if rows:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    f"INSERT INTO {SCHEMA}.outbox (event_id, receiver, created_at, next_attempt_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (event_id, receiver) DO NOTHING",
                    rows,
                )
            await conn.execute("SELECT pg_notify(%s, 'outbox')", (CHANNEL,))  # sent on commit; the replicas wake

    async def note_unseen(self, task_id: int, reason: str, now: float) -> None:
        """A task the API has never served answered with `reason`."""
        async with self._transaction() as conn:
            await conn.execute(
                f"INSERT INTO {SCHEMA}.unseen (task_id, reason, since) VALUES (%s, %s, %s)"
                f" ON CONFLICT (task_id) DO UPDATE SET reason = excluded.reason"
                f" WHERE {SCHEMA}.unseen.reason <> excluded.reason",
                (task_id, reason, datetime.fromtimestamp(now, UTC)),
            )

    async def unseen(self) -> dict[int, tuple[str, datetime]]:
        """Tasks never served by the API, with why and since when."""
        rows = await self._read(f"SELECT task_id, reason, since FROM {SCHEMA}.unseen")
        return {task_id: (reason, since) for task_id, reason, since in rows}

    async def meta(self, key: str) -> str | None:
        """A value kept beside the state."""
        rows = await self._read(f"SELECT value FROM {SCHEMA}.meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        """Keep a value beside the state."""
        async with self._transaction() as conn:
            await conn.execute(
                f"INSERT INTO {SCHEMA}.meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def head(self, receiver: str) -> Delivery | None:
        """The oldest pending delivery of a receiver, claimed by this replica (only the claimant may mark it).

        SKIP LOCKED so that a replica never waits on a row another is marking; and the row claimed must be the head
        itself, so that a locked head is never overtaken by the row behind it: then nothing is claimed this time."""
        rows = await self._read(
            f"WITH claimed AS (UPDATE {SCHEMA}.outbox o SET claimed_by = %s WHERE o.seq = ("
            f"   SELECT seq FROM {SCHEMA}.outbox WHERE receiver = %s AND state = 'pending' ORDER BY seq LIMIT 1"
            "    FOR UPDATE SKIP LOCKED)"
            f" AND o.seq = (SELECT min(seq) FROM {SCHEMA}.outbox WHERE receiver = %s AND state = 'pending')"
            " RETURNING o.seq, o.receiver, o.event_id, o.created_at, o.attempts, o.next_attempt_at)"
            f" SELECT c.seq, c.receiver, e.body, c.created_at, c.attempts, c.next_attempt_at FROM claimed c"
            f" JOIN {SCHEMA}.events e ON e.id = c.event_id",
            (self.replica, receiver, receiver),
        )
        if not rows:
            return None
        seq, rcv, body, created, attempts, next_at = rows[0]
        return Delivery(seq, rcv, Event.from_dict(body), created, attempts, next_at)

    async def pending(self, receiver: str, limit: int) -> list[Delivery]:
        """A receiver's oldest pending deliveries, in order, claimed by this replica (only the claimant may mark them).

        SKIP LOCKED so that a replica never waits on a row another is marking; and the first row claimed must be the
        head itself, so that a locked head is never overtaken by the rows behind it: then nothing is claimed."""
        rows = await self._read(
            f"WITH candidates AS (SELECT seq FROM {SCHEMA}.outbox WHERE receiver = %s AND state = 'pending'"
            "   ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED),"
            f" claimed AS (UPDATE {SCHEMA}.outbox o SET claimed_by = %s FROM candidates c WHERE o.seq = c.seq"
            "   AND (SELECT min(seq) FROM candidates)"
            f"     = (SELECT min(seq) FROM {SCHEMA}.outbox WHERE receiver = %s AND state = 'pending')"
            "   RETURNING o.seq, o.receiver, o.event_id, o.created_at, o.attempts, o.next_attempt_at)"
            f" SELECT c.seq, c.receiver, e.body, c.created_at, c.attempts, c.next_attempt_at FROM claimed c"
            f" JOIN {SCHEMA}.events e ON e.id = c.event_id ORDER BY c.seq",
            (receiver, limit, self.replica, receiver),
        )
        return [
            Delivery(seq, rcv, Event.from_dict(body), created, attempts, next_at)
            for seq, rcv, body, created, attempts, next_at in rows
        ]

    async def mark_delivered(self, seqs: Sequence[int], now: float) -> None:
        """The receiver accepted them (rows another replica has claimed since are left to that one)."""
        await self._mark(
            "state = 'delivered', done_at = %s, last_attempt_at = %s, attempts = attempts + 1, last_error = NULL",
            (now, now),
            seqs,
        )

    async def mark_retry(self, seqs: Sequence[int], error: str, next_attempt_at: float, now: float) -> None:
        """The attempt failed; try again later."""
        await self._mark(
            "attempts = attempts + 1, last_error = %s, next_attempt_at = %s, last_attempt_at = %s",
            (error[:500], next_attempt_at, now),
            seqs,
        )

    async def mark_dead(self, seqs: Sequence[int], error: str, now: float) -> None:
        """Give up on them: dead letters."""
        await self._mark(
            "state = 'dead', attempts = attempts + 1, last_error = %s, done_at = %s, last_attempt_at = %s",
            (error[:500], now, now),
            seqs,
        )

    async def _mark(self, assignments: str, params: tuple[Any, ...], seqs: Sequence[int]) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                f"UPDATE {SCHEMA}.outbox SET {assignments}"
                " WHERE seq = ANY(%s) AND state = 'pending' AND claimed_by = %s",
                (*params, list(seqs), self.replica),
            )

    async def latest(self, receiver: str, types: Sequence[str]) -> list[Sent]:
        """Per task and event type among `types`, the receiver's newest outbox row (reminders continue from it)."""
        if not types:
            return []
        rows = await self._read(
            f"SELECT DISTINCT ON (e.task_id, e.type) o.seq, o.state, o.created_at, o.done_at, e.body"
            f" FROM {SCHEMA}.outbox o JOIN {SCHEMA}.events e ON e.id = o.event_id"
            " WHERE o.receiver = %s AND e.type = ANY(%s) AND e.task_id != 0 ORDER BY e.task_id, e.type, o.seq DESC",
            (receiver, list(types)),
        )
        return sorted(
            (Sent(seq, state, created, done, Event.from_dict(body)) for seq, state, created, done, body in rows),
            key=lambda sent: sent.seq,
        )

    async def pending_receivers(self) -> list[str]:
        """Receivers with pending deliveries."""
        return [
            r for (r,) in await self._read(f"SELECT DISTINCT receiver FROM {SCHEMA}.outbox WHERE state = 'pending'")
        ]

    async def outbox_counts(self) -> list[OutboxCount]:
        """Rows per receiver and state, with the oldest creation time."""
        rows = await self._read(
            f"SELECT receiver, state, COUNT(*), MIN(created_at) FROM {SCHEMA}.outbox GROUP BY receiver, state"
            " ORDER BY receiver, state"
        )
        return [OutboxCount(receiver, state, int(count), oldest) for receiver, state, count, oldest in rows]

    async def delivery_report(self) -> list[DeliveryReport]:
        """Per receiver with outbox rows: its newest error still recorded and its newest delivery."""
        rows = await self._read(
            f"SELECT receiver, (SELECT last_error FROM {SCHEMA}.outbox e WHERE e.receiver = o.receiver"
            "   AND e.last_error IS NOT NULL ORDER BY e.last_attempt_at DESC NULLS LAST, e.seq DESC LIMIT 1),"
            " MAX(last_attempt_at) FILTER (WHERE last_error IS NOT NULL),"
            " MAX(done_at) FILTER (WHERE state = 'delivered')"
            f" FROM {SCHEMA}.outbox o GROUP BY receiver ORDER BY receiver"
        )
        return [DeliveryReport(*row) for row in rows]

    async def recent_events(self, limit: int) -> list[Event]:
        """The newest events of every task and of the watcher, newest first."""
        rows = await self._read(f"SELECT body FROM {SCHEMA}.events ORDER BY time DESC, id DESC LIMIT %s", (limit,))
        return [Event.from_dict(body) for (body,) in rows]

    async def prune(self, delivered_before: float) -> int:
        """Forget delivered rows, and events nobody waits for, older than a cut-off; return rows removed."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"DELETE FROM {SCHEMA}.outbox WHERE state = 'delivered' AND done_at < %s", (delivered_before,)
            )
            removed = cursor.rowcount
            await conn.execute(
                f"DELETE FROM {SCHEMA}.events e WHERE e.time < %s"
                f" AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.outbox o WHERE o.event_id = e.id)",
                (datetime.fromtimestamp(delivered_before, UTC),),
            )
        return int(removed)

    async def check_writable(self) -> None:
        """Raise StoreError unless a write could be made now (the database answers, and not read-only)."""
        rows = await self._read("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
        in_recovery, read_only = rows[0]
        if in_recovery or read_only == "on":
            raise StoreError(f"{self.path}: the database is read-only (a standby, or default_transaction_read_only)")

    # -- replicas ----------------------------------------------------------------------------------------------

    async def renew(self, ttl: float, want: Mapping[str, Collection[str]]) -> Membership:
        """One round of membership, in one short transaction: say this replica is alive for `ttl` more seconds, give
        up its leases on what it no longer wants, take those it wants that are free or whose owner is no longer
        alive, and return who is alive and what this replica holds. Times are the server's, so the replicas' clocks
        never matter. A lease lasts as long as its owner's replica row: at rest a round writes that one row.

        Rounds are serialised by a transaction lock: they last milliseconds, and two replicas trading leases can then
        never deadlock on each other's rows."""
        keys = [key for _, ks in sorted(want.items()) for key in sorted(ks)]
        kinds = [kind for kind, ks in sorted(want.items()) for _ in sorted(ks)]
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LEASE_LOCK,))
            await conn.execute(
                f"INSERT INTO {SCHEMA}.replicas (id, host, pid, version, started_at, seen_at, expires_at)"
                " VALUES (%s, %s, %s, %s, now(), now(), now() + make_interval(secs => %s))"
                " ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, expires_at = excluded.expires_at",
                (self.replica, socket.gethostname(), os.getpid(), __version__, ttl),
            )
            await conn.execute(
                f"DELETE FROM {SCHEMA}.leases l WHERE l.owner = %s AND NOT EXISTS ("
                " SELECT 1 FROM unnest(%s::text[], %s::text[]) AS w(kind, key) WHERE w.kind = l.kind AND w.key = l.key)",
                (self.replica, kinds, keys),
            )
            await conn.execute(
                f"INSERT INTO {SCHEMA}.leases (kind, key, owner, acquired_at)"
                " SELECT w.kind, w.key, %s, now() FROM unnest(%s::text[], %s::text[]) AS w(kind, key)"
                f" WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.leases l"
                "  WHERE l.kind = w.kind AND l.key = w.key AND l.owner = %s)"
                " ON CONFLICT (kind, key) DO UPDATE SET owner = excluded.owner, acquired_at = excluded.acquired_at"
                f" WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.replicas r"
                f"  WHERE r.id = {SCHEMA}.leases.owner AND r.expires_at > now())",
                (self.replica, kinds, keys, self.replica),
            )
            # Replicas gone for an hour are forgotten, and with them the leases they still named.
            await conn.execute(f"DELETE FROM {SCHEMA}.replicas WHERE expires_at < now() - interval '1 hour'")
            await conn.execute(
                f"DELETE FROM {SCHEMA}.leases l WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.replicas r WHERE r.id = l.owner)"
            )
            return await self._membership(conn, self.replica)

    async def leave(self) -> None:
        """Give up every lease and leave the replicas at once (a clean stop): the others take over on their next
        round, or at once when they listen (`notify`)."""
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LEASE_LOCK,))
            await conn.execute(f"DELETE FROM {SCHEMA}.leases WHERE owner = %s", (self.replica,))
            await conn.execute(f"DELETE FROM {SCHEMA}.replicas WHERE id = %s", (self.replica,))
            await conn.execute("SELECT pg_notify(%s, 'replicas')", (CHANNEL,))

    async def membership(self) -> Membership:
        """Who is alive and who holds what, every lease, as of now (for `watcher status`), without taking part."""
        async with self._transaction() as conn:
            return await self._membership(conn, "")

    @staticmethod
    async def _membership(conn: Any, me: str) -> Membership:
        from .replicas import Lease, Membership, Replica

        cursor = await conn.execute(
            f"SELECT id, host, pid, version, started_at, seen_at, expires_at, expires_at > now() FROM {SCHEMA}.replicas"
            " ORDER BY id"
        )
        replicas = [Replica(*row) for row in await cursor.fetchall()]
        # A round needs only this replica's own leases (10,000 tasks need not cross the wire every round).
        mine = " WHERE l.owner = %s" if me else ""
        cursor = await conn.execute(
            "SELECT l.kind, l.key, l.owner, l.acquired_at, r.expires_at, coalesce(r.expires_at > now(), false)"
            f" FROM {SCHEMA}.leases l LEFT JOIN {SCHEMA}.replicas r ON r.id = l.owner{mine} ORDER BY l.kind, l.key",
            (me,) if me else (),
        )
        leases = [Lease(*row) for row in await cursor.fetchall()]
        cursor = await conn.execute("SELECT now()")
        (now,) = await cursor.fetchone()
        return Membership(me, now, replicas, leases)

    async def notify(self, payload: str) -> None:
        """Tell every listening replica something (`outbox`, `replicas`, `poll:<task id>`)."""
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    async def listen(self, listening: Callable[[], object] | None = None) -> AsyncIterator[str]:
        """What the replicas tell each other, as it comes, on a connection of its own (StoreError when it breaks);
        `listening` is called once nothing said from then on can be missed."""
        import psycopg

        try:
            async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if listening is not None:
                    listening()
                async for notice in conn.notifies():
                    yield notice.payload
        except (psycopg.Error, OSError) as exc:
            raise StoreError(f"{self.path}: listening for the other replicas: {_reason(exc)}") from None

    # -- copying a store (`watcher store copy`) ----------------------------------------------------------------

    @classmethod
    async def open_checked(cls, url: str, *, shown: str, existing: bool = False) -> PostgresStore:
        """`open`, after one plain connection whose failure is reported at once with libpq's reason (the pool would
        try again until its timeout); `existing`: StoreError unless the database holds a watcher's schema already
        (so that nothing is created in a database that was to be only read)."""
        try:
            import psycopg
        except ImportError:
            raise _missing_extra() from None
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10) as conn:
                cursor = await conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",))
                row = await cursor.fetchone()
        except (psycopg.Error, OSError) as exc:
            raise StoreError(f"{shown}: cannot open the PostgreSQL store: {_reason(exc)}") from None
        if existing and (not row or row[0] is None):
            raise StoreError(f"{shown}: holds no voicefox-watcher store (no {SCHEMA} schema in that database)")
        return await cls.open(url, shown=shown)

    async def identity(self) -> tuple[object, ...]:
        """Which database this is, however it was reached (another host name, a pooler): its name, and when its
        server started."""
        rows = await self._read("SELECT current_database(), pg_postmaster_start_time()")
        return ("postgres", *rows[0])

    async def dump(self) -> StoreDump:
        """What a copy carries (see `StoreDump`), read in one transaction: a consistent snapshot."""
        async with self._transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            async def rows(sql: str) -> list[tuple[Any, ...]]:
                return list(await (await conn.execute(sql)).fetchall())

            return StoreDump(
                tasks=tuple(
                    TaskRow(*row)
                    for row in await rows(
                        "SELECT task_id, snapshot, progress_since, stalled, missing, changed_at, windows_doubted_at,"
                        f" updated_while_closed_at, rules, health FROM {SCHEMA}.tasks ORDER BY task_id"
                    )
                ),
                added=tuple(
                    AddedTask(*row)
                    for row in await rows(
                        f"SELECT task_id, labels, added_at FROM {SCHEMA}.added_tasks ORDER BY task_id"
                    )
                ),
                unseen=tuple(await rows(f"SELECT task_id, reason, since FROM {SCHEMA}.unseen ORDER BY task_id")),
                meta=tuple(
                    await rows(f"SELECT key, value FROM {SCHEMA}.meta WHERE key <> 'schema_version' ORDER BY key")
                ),
                events=tuple(
                    EventRow(*row)
                    for row in await rows(
                        f"SELECT id, task_id, type, time, body FROM {SCHEMA}.events WHERE id IN"
                        f" (SELECT event_id FROM {SCHEMA}.outbox WHERE {QUEUED}) ORDER BY time, id"
                    )
                ),
                outbox=tuple(
                    QueuedRow(*row)
                    for row in await rows(
                        f"SELECT {QueuedRow.COLUMNS} FROM {SCHEMA}.outbox WHERE {QUEUED} ORDER BY seq"
                    )
                ),
                delivered=int((await rows(f"SELECT COUNT(*) FROM {SCHEMA}.outbox WHERE state = 'delivered'"))[0][0]),
            )

    async def load(self, dump: StoreDump, *, replace: bool = False) -> int:
        """Write a dump in one transaction, each row as it was (event ids and seqs too); StoreNotEmpty if this store
        already holds a watcher's state, unless `replace`: then that is deleted first, in the same transaction.
        Return how many rows were replaced."""
        from psycopg.types.json import Jsonb

        async with self._transaction() as conn:
            held = await (await conn.execute(held_query(f"{SCHEMA}."))).fetchone()
            if sum(held) and not replace:
                raise not_empty(self.path, *held)
            for table in ("outbox", "events", "unseen", "tasks", "added_tasks", "leases"):
                await conn.execute(f"DELETE FROM {SCHEMA}.{table}")
            await conn.execute(f"DELETE FROM {SCHEMA}.meta WHERE key <> 'schema_version'")
            async with conn.cursor() as cursor:
                await cursor.executemany(f"INSERT INTO {SCHEMA}.meta (key, value) VALUES (%s, %s)", dump.meta)
                await cursor.executemany(
                    f"INSERT INTO {SCHEMA}.tasks (task_id, snapshot, progress_since, stalled, missing, changed_at,"
                    " windows_doubted_at, updated_while_closed_at, rules, health)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            t.task_id,
                            Jsonb(t.snapshot),
                            t.progress_since,
                            t.stalled,
                            t.missing,
                            t.changed_at,
                            t.windows_doubted_at,
                            t.updated_while_closed_at,
                            Jsonb(t.rules) if t.rules else None,
                            Jsonb(t.health) if t.health is not None else None,
                        )
                        for t in dump.tasks
                    ],
                )
                await cursor.executemany(
                    f"INSERT INTO {SCHEMA}.added_tasks (task_id, labels, added_at) VALUES (%s, %s, %s)",
                    [(a.task_id, Jsonb(a.labels), a.added_at) for a in dump.added],
                )
                await cursor.executemany(
                    f"INSERT INTO {SCHEMA}.unseen (task_id, reason, since) VALUES (%s, %s, %s)", dump.unseen
                )
                await cursor.executemany(
                    f"INSERT INTO {SCHEMA}.events (id, task_id, type, time, body) VALUES (%s, %s, %s, %s, %s)",
                    [(e.id, e.task_id, e.type, e.time, Jsonb(e.body)) for e in dump.events],
                )
                await cursor.executemany(
                    f"INSERT INTO {SCHEMA}.outbox ({QueuedRow.COLUMNS})"
                    f" VALUES ({', '.join(['%s'] * len(dataclasses.fields(QueuedRow)))})",
                    [dataclasses.astuple(row) for row in dump.outbox],
                )
            if dump.outbox:
                # Explicit seqs leave the BIGSERIAL's sequence behind: move it past the highest, so that rows the
                # daemon adds later neither collide nor queue ahead of the copied ones.
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{SCHEMA}.outbox', 'seq'), %s)",
                    (max(row.seq for row in dump.outbox),),
                )
        return sum(held)


def _reason(exc: BaseException) -> str:
    """What went wrong, without the connection string (it may carry a password)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:300]


class PostgresAdmin:
    """The operator's queries on the outbox (`watcher outbox`), as `store.OutboxAdmin` has them for SQLite."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def outbox_rows(
        self, *, states: Iterable[str], receiver: str | None = None, limit: int | None = 100
    ) -> list[OutboxRow]:
        """Outbox rows in the given states (oldest first), at most `limit` (None: all)."""
        where, params = _rows_where(states, receiver)
        sql = (
            "SELECT o.seq, o.receiver, o.state, e.type, e.task_id, o.event_id, o.created_at, o.attempts,"
            f" o.last_attempt_at, o.next_attempt_at, o.last_error FROM {SCHEMA}.outbox o"
            f" JOIN {SCHEMA}.events e ON e.id = o.event_id WHERE {where} ORDER BY o.seq"
        )
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        return [OutboxRow(*row) for row in await self._store._read(sql, params)]

    async def outbox_total(self, *, states: Iterable[str], receiver: str | None = None) -> int:
        """How many rows `outbox_rows` would list without a limit."""
        where, params = _rows_where(states, receiver)
        sql = f"SELECT COUNT(*) FROM {SCHEMA}.outbox o JOIN {SCHEMA}.events e ON e.id = o.event_id WHERE {where}"
        return int((await self._store._read(sql, params))[0][0])

    async def outbox_seqs(self, seqs: Iterable[int]) -> dict[int, tuple[str, str]]:
        """(receiver, state) of each of these outbox rows that exists."""
        rows = await self._store._read(
            f"SELECT seq, receiver, state FROM {SCHEMA}.outbox WHERE seq = ANY(%s)", (list(seqs),)
        )
        return {seq: (receiver, state) for seq, receiver, state in rows}

    async def requeue(self, *, seqs: Iterable[int] = (), receiver: str | None = None, now: float) -> int:
        """Put dead letters back in the queue as new (a full new max_age); return how many."""
        where, params = _selection("dead", seqs, receiver)
        async with self._store._transaction() as conn:
            cursor = await conn.execute(
                f"UPDATE {SCHEMA}.outbox SET state = 'pending', attempts = 0, next_attempt_at = %s, created_at = %s,"
                f" done_at = NULL, claimed_by = NULL WHERE {where}",
                [now, now, *params],
            )
            return int(cursor.rowcount)

    async def drop(self, *, state: str, seqs: Iterable[int] = (), receiver: str | None = None) -> int:
        """Delete outbox rows in `state` (chosen by seq, or all of a receiver's, or all); return how many."""
        where, params = _selection(state, seqs, receiver)
        async with self._store._transaction() as conn:
            cursor = await conn.execute(f"DELETE FROM {SCHEMA}.outbox WHERE {where}", params)
            return int(cursor.rowcount)


def _rows_where(states: Iterable[str], receiver: str | None) -> tuple[str, list[Any]]:
    params: list[Any] = [list(states)]
    where = "o.state = ANY(%s)"
    if receiver is not None:
        where += " AND o.receiver = %s"
        params.append(receiver)
    return where, params


def _selection(state: str, seqs: Iterable[int], receiver: str | None) -> tuple[str, list[Any]]:
    params: list[Any] = [state]
    where = "state = %s"
    seqs = list(seqs)
    if seqs:
        where += " AND seq = ANY(%s)"
        params.append(seqs)
    if receiver is not None:
        where += " AND receiver = %s"
        params.append(receiver)
    return where, params
