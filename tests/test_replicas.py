"""Replicas on one PostgreSQL (a real server on 127.0.0.1): the leases that share the work, and what keeps it right
when they are wrong: a task written only over the version read, a delivery marked only by its claimant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import psycopg
import pytest

from watcher.detect import Rules, detect
from watcher.errors import StaleState
from watcher.model import TaskSnapshot
from watcher.postgres import SCHEMA, PostgresStore
from watcher.replicas import RECEIVER, TASK, owner

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SHOWN = "postgresql://watcher@127.0.0.1/watcher"


@pytest.fixture
async def two(pg: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two replicas' stores on one fresh database."""
    a = await PostgresStore.open(pg, shown=SHOWN)
    b = await PostgresStore.open(pg, shown=SHOWN)
    yield a, b
    await a.close()
    await b.close()


async def outbox_ids(url: str) -> list[tuple[str, str]]:
    async with await psycopg.AsyncConnection.connect(url.replace(":pg-PASSWORD-secret", "")) as conn:
        cursor = await conn.execute(
            f"SELECT o.receiver, o.event_id FROM {SCHEMA}.outbox o ORDER BY o.seq"  # noqa: S608 - a constant
        )
        return [(r, e) for r, e in await cursor.fetchall()]


async def test_a_task_is_written_only_over_the_version_its_writer_read(
    two: tuple[PostgresStore, PostgresStore], pg: str
) -> None:
    a, b = two
    await a.load_states()
    await b.load_states()
    rules = Rules()
    first, first_events = detect(None, TaskSnapshot(id=1, status="running", progress=0), T0, rules)
    await a.record(first, [(e, ["hook"]) for e in first_events], now=1.0)
    # B polled the same task at another moment: the same first sight, another id. It must not be announced.
    late, late_events = detect(None, TaskSnapshot(id=1, status="running", progress=0), T0.replace(minute=1), rules)
    assert late_events[0].id != first_events[0].id
    with pytest.raises(StaleState):
        await b.record(late, [(e, ["hook"]) for e in late_events], now=2.0)
    # Having read what A wrote, B writes the next change; then A, behind, is refused in turn.
    fresh = await b.load_states([1], claim=True)
    done, done_events = detect(fresh[1], TaskSnapshot(id=1, status="done", progress=100), T0.replace(minute=2), rules)
    await b.record(done, [(e, ["hook"]) for e in done_events], now=3.0)
    again, again_events = detect(first, TaskSnapshot(id=1, status="done", progress=100), T0.replace(minute=3), rules)
    with pytest.raises(StaleState):
        await a.record(again, [(e, ["hook"]) for e in again_events], now=4.0)
    assert await outbox_ids(pg) == [("hook", first_events[0].id), ("hook", done_events[0].id)]
    assert (await a.load_states())[1].snapshot.status == "done"
    # A mere read (the status page, reminders) claims nothing: A, still behind, is refused after it too.
    with pytest.raises(StaleState):
        await a.record(again, [(e, ["hook"]) for e in again_events], now=5.0)


async def test_a_delivery_is_marked_only_by_the_replica_that_claimed_it_last(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    await a.load_states()
    state, events = detect(None, TaskSnapshot(id=1, status="running", progress=0), T0, Rules())
    await a.record(state, [(e, ["hook"]) for e in events], now=1.0)
    claimed_by_a = await a.head("hook")
    claimed_by_b = await b.head("hook")  # A's lease ran out mid-send: B claims the row again, same event id
    assert claimed_by_a is not None and claimed_by_b is not None
    assert claimed_by_a.seq == claimed_by_b.seq and claimed_by_a.event.id == claimed_by_b.event.id
    await a.mark_dead([claimed_by_a.seq], "A woke up late", now=2.0)  # not A's to mark any more
    assert await b.head("hook") is not None
    await b.mark_delivered([claimed_by_b.seq], now=3.0)
    assert await a.head("hook") is None and await b.head("hook") is None
    counts = {(c.receiver, c.state): c.count for c in await a.outbox_counts()}
    assert counts == {("hook", "delivered"): 1}


async def test_a_digest_claimed_by_one_replica_is_settled_only_by_the_one_that_claimed_it_last(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    await a.load_states()
    for task_id in (1, 2, 3):
        state, events = detect(None, TaskSnapshot(id=task_id, status="running", progress=0), T0, Rules())
        await a.record(state, [(e, ["hook"]) for e in events], now=1.0)
    by_a = await a.pending("hook", 50)
    by_b = await b.pending("hook", 50)  # A's lease ran out mid-digest: B claims the same rows
    assert [r.seq for r in by_a] == [r.seq for r in by_b] and len(by_a) == 3
    await a.mark_delivered([r.seq for r in by_a], now=2.0)  # not A's to settle any more: nothing changes
    assert len(await b.pending("hook", 50)) == 3
    await b.mark_delivered([r.seq for r in by_b], now=3.0)
    assert await a.pending("hook", 50) == []
    counts = {(c.receiver, c.state): c.count for c in await a.outbox_counts()}
    assert counts == {("hook", "delivered"): 3}


async def test_leases_are_held_by_one_replica_until_released_or_expired(
    two: tuple[PostgresStore, PostgresStore], pg: str
) -> None:
    a, b = two
    view = await a.renew(10.0, {TASK: {"1", "2"}, RECEIVER: {"hook"}})
    assert view.held(TASK) == {"1", "2"} and view.held(RECEIVER) == {"hook"}
    view = await b.renew(10.0, {TASK: {"2", "3"}, RECEIVER: {"hook"}})
    assert view.held(TASK) == {"3"} and view.held(RECEIVER) == set()  # A holds 2 and hook
    assert sorted(view.alive()) == sorted([a.replica, b.replica])
    assert (await b.membership()).owner_of(TASK, "2") == a.replica
    view = await a.renew(10.0, {TASK: {"1"}, RECEIVER: {"hook"}})  # A gives task 2 up
    assert view.held(TASK) == {"1"}
    view = await b.renew(10.0, {TASK: {"2", "3"}, RECEIVER: {"hook"}})
    assert view.held(TASK) == {"2", "3"} and view.held(RECEIVER) == set()
    # A falls silent: once its time has run out (the server's clock), its leases with it, B takes its work.
    async with await psycopg.AsyncConnection.connect(pg.replace(":pg-PASSWORD-secret", ""), autocommit=True) as conn:
        await conn.execute(
            f"UPDATE {SCHEMA}.replicas SET expires_at = now() - interval '1 second' WHERE id = %s",  # noqa: S608
            (a.replica,),
        )
    view = await b.renew(10.0, {TASK: {"1", "2", "3"}, RECEIVER: {"hook"}})
    assert view.held(TASK) == {"1", "2", "3"} and view.held(RECEIVER) == {"hook"}
    assert view.alive() == [b.replica]
    assert (await b.membership()).held(TASK, owner=a.replica) == set()
    # A lease is only as good as its owner's row: renewing that one row is all a round writes at rest.
    assert (await a.renew(10.0, {TASK: {"1"}})).held(TASK) == set()  # A is back, but B holds task 1 now


async def test_a_replica_that_leaves_hands_its_work_over_at_once(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = two
    await a.renew(60.0, {TASK: {"1"}, RECEIVER: {"hook"}})
    assert (await b.renew(60.0, {TASK: {"1"}, RECEIVER: {"hook"}})).held(TASK) == set()
    heard: list[str] = []
    listening = anyio.Event()

    async def listen() -> None:
        async for payload in b.listen(listening.set):
            heard.append(payload)
            if payload == "replicas":
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        await listening.wait()
        await a.leave()
    assert heard[-1] == "replicas"  # B is told at once ...
    view = await b.renew(60.0, {TASK: {"1"}, RECEIVER: {"hook"}})  # ... and takes over without waiting for expiry
    assert view.held(TASK) == {"1"} and view.held(RECEIVER) == {"hook"} and view.alive() == [b.replica]


async def test_new_outbox_rows_are_announced_to_listening_replicas(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = two
    await a.load_states()
    got, listening = anyio.Event(), anyio.Event()

    async def listen() -> None:
        async for payload in b.listen(listening.set):
            if payload == "outbox":
                got.set()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        await listening.wait()
        state, events = detect(None, TaskSnapshot(id=1, status="running", progress=0), T0, Rules())
        await a.record(state, [(e, ["hook"]) for e in events], now=1.0)
        with anyio.fail_after(10):
            await got.wait()


def test_rendezvous_hashing_is_stable_spreads_work_and_moves_little_when_one_joins() -> None:
    keys = [str(k) for k in range(600)]
    three = ["r1", "r2", "r3"]
    owners = {k: owner(TASK, k, three) for k in keys}
    assert owners == {k: owner(TASK, k, list(reversed(three))) for k in keys}  # order of the list does not matter
    shares = [sum(1 for o in owners.values() if o == r) for r in three]
    assert min(shares) > 150  # about a third each
    four = [*three, "r4"]
    moved = [k for k in keys if owner(TASK, k, four) != owners[k]]
    assert all(owner(TASK, k, four) == "r4" for k in moved)  # only to the newcomer
    gone = ["r1", "r3"]
    assert all(owner(TASK, k, gone) == owners[k] for k in keys if owners[k] != "r2")  # only r2's work moves
    assert owner(TASK, "1", []) is None
