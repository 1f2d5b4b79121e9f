"""`watcher store copy`: task states, tasks never seen, remembered values and the pending and dead deliveries move
between SQLite files and a real PostgreSQL server (started by the tests) as they were, in one transaction; a target
that holds state, one store given twice, a store a running watcher holds, a missing source and an unreachable database
are refused with a clear message that never shows a password."""

from __future__ import annotations

import dataclasses
import io
import json
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import psycopg
import pytest

from watcher.cli import main
from watcher.errors import StoreError
from watcher.httpserver import Response
from watcher.model import Event, TaskSnapshot, TaskState
from watcher.postgres import SCHEMA, PostgresStore
from watcher.simulator import Simulator
from watcher.store import Store, StoreDump
from watcher.stores import StateStore, ThreadedStore

from .callhealth import collapsed
from .conftest import Receiver, use_postgres
from .test_cli import WATCHER, env, run, write_config

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PASSWORD = "pg-PASSWORD-secret"  # in the `pg` fixture's URL; the server does not ask for it


def event(n: int, subject: str = "1") -> Event:
    return Event(
        id=f"event-{n}",
        type="voicefox.task.changed",
        time=T0 + timedelta(minutes=n),
        subject=subject,
        data={"task": {"id": subject}, "n": n},
    )


def fill(path: Path) -> Store:
    """A SQLite store with something of everything: states, a task never seen, remembered values, and deliveries
    that were delivered (history), retried (pending, with attempts) and given up on (dead)."""
    store = Store.open(path)
    running = TaskSnapshot(id=1, status="running", name="東京キャンペーン", progress=40, windows=(("09:00", "18:00"),))
    store.record(
        TaskState(
            running,
            progress_since=T0,
            stalled=True,
            missing=False,
            windows_doubted_at=T0 + timedelta(minutes=5),
            updated_while_closed_at=T0 + timedelta(minutes=6),
            rules=(("low collection", T0 + timedelta(minutes=7)),),
            health=collapsed(T0),
        ),
        [(event(1), ["a", "b"]), (event(2), ["a", "b"])],
        now=1000.0,
    )
    store.record(TaskState(TaskSnapshot(id=2, status="done", progress=100), T0), [(event(3, "2"), ["a"])], now=1001.0)
    store.record_event(event(4, "api"), ["b"], now=1002.0)
    store.record_event(event(5), ["a"], now=1003.0)  # delivered below: history only, its event stays behind
    store.note_unseen(9, "404", now=1004.0)
    store.add_task(11, {"team": "sales"}, now=1005.0)  # added at run time
    store.set_meta("zone.learned", json.dumps({"offset": 540, "api": "http://api"}))
    store.set_meta("zone", json.dumps({"name": "+09:00"}))
    # seqs: 1 a/e1, 2 b/e1, 3 a/e2, 4 b/e2, 5 a/e3, 6 b/e4, 7 a/e5
    store.mark_delivered([1], now=1100.0)
    store.mark_retry([2], "503 unavailable", next_attempt_at=2000.0, now=1200.0)
    store.mark_retry([2], "503 unavailable", next_attempt_at=2100.0, now=1300.0)
    store.mark_dead([4], "410 gone", now=1400.0)
    store.mark_delivered([7], now=1500.0)
    return store


def call(where: str | Path, method: str, *args: Any, **kwargs: Any) -> Any:
    """A store's own `method` (dump, load) on either engine, as a copy calls it."""
    if str(where).startswith("postgresql://"):

        async def on_postgres() -> Any:
            pg = await PostgresStore.open(str(where), shown="pg")
            try:
                return await getattr(pg, method)(*args, **kwargs)
            finally:
                await pg.close()

        return anyio.run(on_postgres)
    store = Store.open(where)
    try:
        return getattr(store, method)(*args, **kwargs)
    finally:
        store.close()


def dump(where: str | Path) -> StoreDump:
    """What a store holds, as a copy reads it."""
    return cast(StoreDump, call(where, "dump"))


@asynccontextmanager
async def opened(where: str) -> AsyncIterator[StateStore]:
    """The store at `where` as the daemon uses it."""
    if where.startswith("postgresql://"):
        pg = await PostgresStore.open(where, shown="pg")
        try:
            yield pg
        finally:
            await pg.close()
        return
    sqlite = Store.open(where)
    try:
        yield ThreadedStore(sqlite)
    finally:
        sqlite.close()


def copy(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`watcher store copy ARGS` in this process: (exit code, stdout, stderr)."""
    out = io.StringIO()
    code = main(["store", "copy", *args], stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty target of each engine."""
    return str(tmp_path / "target.db") if request.param == "sqlite" else str(request.getfixturevalue("pg"))


def test_a_copy_to_postgresql_and_back_keeps_everything_but_delivered_history(
    tmp_path: Path, pg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path / "a.db").close()
    original = dump(tmp_path / "a.db")
    code, out, err = copy("--from", str(tmp_path / "a.db"), "--to", pg, capsys=capsys)
    assert (code, err) == (0, "")
    assert pg.replace(f":{PASSWORD}", "") in out and PASSWORD not in out  # where, without the password
    assert "4 events, 4 pending and 1 dead deliveries" in out and "2 delivered rows are history" in out
    code, _, err = copy("--from", pg, "--to", str(tmp_path / "b.db"), capsys=capsys)
    assert (code, err) == (0, "")
    kept = dataclasses.replace(original, delivered=0)
    assert dataclasses.replace(dump(pg), delivered=0) == kept
    assert dump(tmp_path / "b.db") == kept
    assert [e.id for e in kept.events] == ["event-1", "event-2", "event-3", "event-4"]  # not event-5 (delivered)
    assert [(r.seq, r.receiver, r.state, r.attempts) for r in kept.outbox] == [
        (2, "b", "pending", 2),
        (3, "a", "pending", 0),
        (4, "b", "dead", 1),
        (5, "a", "pending", 0),
        (6, "b", "pending", 0),
    ]
    assert kept.tasks[0].stalled and kept.tasks[0].snapshot["name"] == "東京キャンペーン"
    assert kept.tasks[0].health == collapsed(T0).to_dict() and kept.tasks[1].health is None
    assert call(pg, "load_states")[1].health == call(tmp_path / "b.db", "load_states")[1].health == collapsed(T0)
    assert kept.unseen == ((9, "404", datetime.fromtimestamp(1004.0, UTC)),)
    assert dict(kept.meta).keys() == {"zone", "zone.learned"}


def test_the_copied_queue_goes_out_in_order_with_the_same_ids_and_new_rows_queue_behind(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path / "a.db").close()
    assert copy("--from", str(tmp_path / "a.db"), "--to", target, capsys=capsys)[0] == 0

    async def drain(receiver: str) -> list[tuple[str, int]]:
        """Record one more event for `receiver`, then deliver its queue: (event id, attempts before) in order."""
        sent = []
        async with opened(target) as store:
            await store.record_event(event(6), [receiver], now=3000.0)
            while (head := await store.head(receiver)) is not None:
                sent.append((head.event.id, head.attempts))
                await store.mark_delivered([head.seq], now=3001.0)
        return sent

    assert anyio.run(drain, "b") == [("event-1", 2), ("event-4", 0), ("event-6", 0)]  # event-2 to b is dead
    assert anyio.run(drain, "a") == [("event-2", 0), ("event-3", 0), ("event-6", 0)]


def test_a_store_with_nothing_in_it_yet_copies_as_nothing(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Store.open(tmp_path / "a.db").close()
    code, out, err = copy("--from", str(tmp_path / "a.db"), "--to", target, capsys=capsys)
    assert (code, err) == (0, "")
    assert "0 tasks" in out
    assert dump(target) == dump(tmp_path / "a.db")


def test_a_target_that_holds_state_is_refused_unless_forced_and_then_replaced_whole(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fill(tmp_path / "a.db")
    assert copy("--from", str(tmp_path / "a.db"), "--to", target, capsys=capsys)[0] == 0
    source.record(TaskState(TaskSnapshot(id=3, status="running"), T0), [(event(7, "3"), ["a"])], now=5000.0)
    source.close()
    before = dump(target)
    code, out, err = copy("--from", str(tmp_path / "a.db"), "--to", target, capsys=capsys)
    assert (code, out) == (1, "")
    assert (
        "already holds a watcher's state (3 tasks, 1 never served by the API, 4 events, 5 deliveries, 2 remembered values)"
        in err
    )
    assert "add --force" in err and PASSWORD not in err
    assert dump(target) == before
    code, out, err = copy("--from", str(tmp_path / "a.db"), "--to", target, "--force", capsys=capsys)
    assert (code, err) == (0, "")
    assert "replaced the 15 rows it held" in out
    assert dump(target) == dataclasses.replace(dump(tmp_path / "a.db"), delivered=0)


def test_a_load_that_fails_halfway_leaves_the_target_as_it_was(tmp_path: Path, target: str) -> None:
    fill(tmp_path / "a.db").close()
    call(target, "load", dump(tmp_path / "a.db"))
    before = dump(target)
    good = dump(tmp_path / "a.db")
    broken = dataclasses.replace(good, outbox=(*good.outbox, good.outbox[-1]))  # the last insert fails
    with pytest.raises(StoreError):
        call(target, "load", broken, replace=True)
    assert dump(target) == before


@pytest.mark.parametrize("alias", ["the same text", "another name"])
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_one_store_given_as_both_source_and_target_is_refused(
    tmp_path: Path, engine: str, alias: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path / "a.db").close()
    if engine == "sqlite":
        source = str(tmp_path / "a.db")
        (tmp_path / "link.db").symlink_to(tmp_path / "a.db")
        target = source if alias == "the same text" else str(tmp_path / "link.db")
    else:
        source = request.getfixturevalue("pg")
        assert copy("--from", str(tmp_path / "a.db"), "--to", source, capsys=capsys)[0] == 0
        # Another spelling of the same database: told apart by the server's answer, not by the text.
        target = source if alias == "the same text" else source.replace("postgresql:", "postgres:") + "?sslmode=prefer"
    before = dump(source)
    code, out, err = copy("--from", source, "--to", target, "--force", capsys=capsys)
    assert (code, out) == (2, "")
    assert "are the same store" in err and PASSWORD not in err
    assert dump(source) == before


def test_a_source_that_is_not_a_store_is_refused_and_left_as_it_was(
    tmp_path: Path, pg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not a database")
    target = str(tmp_path / "t.db")
    for source, reason in [
        (str(tmp_path / "missing.db"), "no such store"),
        (str(tmp_path / "notes.txt"), "not a voicefox-watcher store"),
        (pg, "holds no voicefox-watcher store"),
    ]:
        code, out, err = copy("--from", source, "--to", target, capsys=capsys)
        assert (code, out) == (1, ""), source
        assert reason in err and PASSWORD not in err and "Traceback" not in err
    assert not (tmp_path / "missing.db").exists() and not Path(target).exists()
    assert (tmp_path / "notes.txt").read_text() == "not a database"
    with psycopg.connect(pg) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (SCHEMA,)).fetchone() == (None,)  # nothing created


def test_a_url_of_another_scheme_is_a_usage_error_that_does_not_show_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = copy("--from", str(tmp_path / "a.db"), "--to", f"mysql://watcher:{PASSWORD}@db/w", capsys=capsys)
    assert (code, out) == (2, "")
    assert "--to: a mysql:// URL is not a store" in err and PASSWORD not in err
    assert not (tmp_path / "mysql:").exists()


@pytest.mark.parametrize("side", ["--from", "--to"])
def test_a_database_that_does_not_answer_is_a_clear_error_without_the_password(
    tmp_path: Path, side: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    fill(tmp_path / "a.db").close()
    url = f"postgresql://watcher:{PASSWORD}@127.0.0.1:{port}/watcher"
    sqlite = str(tmp_path / "a.db") if side == "--to" else str(tmp_path / "b.db")
    args = ["--from", url, "--to", sqlite] if side == "--from" else ["--from", sqlite, "--to", url]
    code, out, err = copy(*args, capsys=capsys)
    assert (code, out) == (1, "")
    assert f"postgresql://watcher@127.0.0.1:{port}/watcher: cannot open the PostgreSQL store" in err
    assert "Connection refused" in err and PASSWORD not in err and "Traceback" not in err


def test_json_output_counts_what_was_copied(tmp_path: Path, pg: str, capsys: pytest.CaptureFixture[str]) -> None:
    fill(tmp_path / "a.db").close()
    code, out, _ = copy("--from", str(tmp_path / "a.db"), "--to", pg, "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out) == {
        "source": str(tmp_path / "a.db"),
        "target": pg.replace(f":{PASSWORD}", ""),
        "tasks": 2,
        "unseen": 1,
        "events": 4,
        "pending": 4,
        "dead": 1,
        "meta": 2,
        "delivered_left_behind": 2,
        "replaced": 0,
        "added": 1,
    }


# -- the installed CLI beside running daemons --------------------------------------------------------------------------


@asynccontextmanager
async def running(cfg: Path, token: str) -> AsyncIterator[None]:
    """`watcher run -c cfg` for the length of the block; stopped with SIGTERM, and it must exit 0."""
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(token)) as daemon:
        yield
        daemon.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await daemon.wait() == 0


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_store_a_running_watcher_holds_is_refused_as_source_and_as_target(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    held = str(tmp_path / "state.db")
    if engine == "postgres":
        held = request.getfixturevalue("pg")
        use_postgres(cfg, held)
    fill(tmp_path / "other.db").close()
    async with running(cfg, sim.token):
        await receiver.wait_for(1)
        into = await run(["store", "copy", "--from", str(tmp_path / "other.db"), "--to", held, "--force"])
        out_of = await run(["store", "copy", "--from", held, "--to", str(tmp_path / "new.db")])
    for result in (into, out_of):
        assert result.returncode == 1
        assert b"already in use by" in result.stderr
        assert PASSWORD.encode() not in result.stderr and b"Traceback" not in result.stderr
    after = await anyio.to_thread.run_sync(dump, held)  # (dump runs its own event loop)
    assert [t.task_id for t in after.tasks] == [1]  # the daemon's own state, nothing copied in
    assert not (tmp_path / "new.db").exists()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_delivery_left_pending_on_sqlite_goes_out_from_postgresql_with_the_same_id(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, pg: str
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running", progress=0)
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    receiver.default = Response(503, b"")  # the receiver is down: the delivery stays pending
    async with running(cfg, sim.token):
        await receiver.wait_for(1)
    failed = receiver.requests[0]
    copied = await run(["store", "copy", "--from", str(tmp_path / "state.db"), "--to", pg, "--json"])
    assert copied.returncode == 0, copied.stderr.decode()
    assert json.loads(copied.stdout)["pending"] >= 1 and PASSWORD.encode() not in copied.stdout
    use_postgres(cfg, pg)
    sim.set(1, status="done", progress=100)  # changes while no watcher runs
    receiver.default = Response(204, b"")
    seen = len(receiver.requests)
    async with running(cfg, sim.token):
        await receiver.wait_for(seen + 2)
    resent, finished = receiver.requests[seen : seen + 2]
    assert resent.headers["webhook-id"] == failed.headers["webhook-id"]
    assert json.loads(resent.body)["id"] == json.loads(failed.body)["id"]  # the CloudEvent receivers dedupe on
    # The task's state came over too: its change is announced as finishing, not observed afresh.
    assert json.loads(finished.body)["type"] == "voicefox.task.finished"
