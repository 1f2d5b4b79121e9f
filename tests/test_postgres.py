"""The installed CLI on a real PostgreSQL store (a server on 127.0.0.1 started by the tests): replicas share the work
and take it over from one killed; what works on SQLite works there (`status`, `outbox`; kill -9 is in test_cli, run
on both engines); its errors are clear and hold no password."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import psycopg
import pytest

from watcher.httpserver import Response
from watcher.simulator import Simulator

from .conftest import Receiver, use_postgres
from .test_cli import WATCHER, env, read_all, run, write_config
from .test_crash import watcher_run
from .test_ops import get, listening_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def on_postgres(
    path: Path, api_url: str, token: str, hook_url: str, tasks: list[int], url: str, lease: str = ""
) -> Path:
    cfg = use_postgres(write_config(path, api_url, token, hook_url, tasks), url)
    if lease:
        cfg.write_text(cfg.read_text().replace(f'url = "{url}"', f'url = "{url}"\nlease = "{lease}"'))
    return cfg


async def holders(url: str) -> dict[str, set[str]]:
    """Who holds a valid lease on which task, as the database says."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT to_regclass('voicefox_watcher.leases')")
        if (await cursor.fetchone()) == (None,):
            return {}  # no watcher has created its tables yet
        cursor = await conn.execute(
            "SELECT l.owner, l.key FROM voicefox_watcher.leases l JOIN voicefox_watcher.replicas r ON r.id = l.owner"
            " WHERE l.kind = 'task' AND r.expires_at > now()"
        )
        owners: dict[str, set[str]] = {}
        for owner, key in await cursor.fetchall():
            owners.setdefault(owner, set()).add(key)
        return owners


async def until(condition: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    """Wait until the database shows `condition` (looked at every 50 ms; fail after `within` seconds)."""
    with anyio.fail_after(within):
        while not await condition():  # noqa: ASYNC110 - the state is another process's, in the database
            await anyio.sleep(0.05)


def transitions(receiver: Receiver) -> dict[tuple[str, str], set[str]]:
    """Each (task, event type) the receiver accepted, with the event ids it came under."""
    seen: dict[tuple[str, str], set[str]] = {}
    for request in receiver.requests:
        body = json.loads(request.body)
        seen.setdefault((body["subject"], body["type"]), set()).add(body["id"])
    return seen


async def test_two_replicas_share_the_tasks_and_one_takes_over_from_the_other_killed(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, pg: str
) -> None:
    sim, url = simulator
    tasks = list(range(1, 9))
    for task_id in tasks:
        sim.add_task(task_id, status="running", progress=10)
    cfg = on_postgres(tmp_path / "w.toml", url, sim.token, receiver.url, tasks, pg, lease="2s")
    command = [WATCHER, "run", "-c", str(cfg)]
    async with (
        await anyio.open_process(command, env=env(sim.token)) as first,
        await anyio.open_process(command, env=env(sim.token)) as second,
    ):

        async def shared() -> bool:
            owners = await holders(pg)
            return len(owners) == 2 and set().union(*owners.values()) == {str(t) for t in tasks}

        await until(shared)
        await receiver.wait_for(len(tasks))
        first.kill()  # SIGKILL: its leases run out on their own
        await first.wait()
        for task_id in tasks:
            sim.set(task_id, status="done", progress=100)

        async def taken_over() -> bool:
            owners = await holders(pg)
            return len(owners) == 1 and next(iter(owners.values())) == {str(t) for t in tasks}

        await until(taken_over)
        expected = {(str(t), kind) for t in tasks for kind in ("voicefox.task.observed", "voicefox.task.finished")}

        async def all_delivered() -> bool:  # a delivery cut by the kill is sent again: count transitions, not requests
            return set(transitions(receiver)) == expected

        await until(all_delivered)
        second.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await second.wait() == 0
    seen = transitions(receiver)
    assert all(len(ids) == 1 for ids in seen.values()), seen  # no transition announced twice under different ids
    assert await holders(pg) == {}  # the one stopped cleanly handed its leases back


async def test_dead_letters_are_listed_retried_and_dropped_on_postgres(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, pg: str
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = on_postgres(tmp_path / "w.toml", url, sim.token, receiver.url, [1], pg)
    receiver.default = Response(410, b"gone")  # permanent: a dead letter at once
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as proc:
        await receiver.wait_for(1)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    listed = await run(["outbox", "list", "--json", "-c", str(cfg)], token=sim.token)
    (row,) = json.loads(listed.stdout)
    assert row["state"] == "dead" and row["receiver"] == "hook" and "410" in row["last_error"]
    retried = await run(["outbox", "retry", "--seq", str(row["seq"]), "-c", str(cfg)], token=sim.token)
    assert retried.returncode == 0 and b"1 dead-lettered deliveries queued again" in retried.stdout
    dropped = await run(["outbox", "drop", "--pending", "--all", "-c", str(cfg)], token=sim.token)
    assert dropped.returncode == 0 and b"1 pending deliveries dropped" in dropped.stdout
    unknown = await run(["outbox", "retry", "--seq", "999999", "-c", str(cfg)], token=sim.token)
    assert unknown.returncode == 2 and b"no such row" in unknown.stderr
    status = json.loads((await run(["status", "-c", str(cfg), "--json"], token=sim.token)).stdout)
    assert [(t["id"], t["status"]) for t in status["tasks"]] == [(1, "running")]


async def test_a_database_that_does_not_answer_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://watcher:pg-PASSWORD-secret@127.0.0.1:{port}/watcher?connect_timeout=2"
    cfg = on_postgres(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1], url)
    cfg.chmod(0o600)
    result = await run(["run", "-c", str(cfg)])
    assert result.returncode == 1
    assert b"cannot open the PostgreSQL store" in result.stderr
    assert f"postgresql://watcher@127.0.0.1:{port}/watcher".encode() in result.stderr  # where, without the password
    assert b"pg-PASSWORD-secret" not in result.stderr + result.stdout
    assert b"Traceback" not in result.stderr


async def test_a_replica_shows_its_share_in_readyz_metrics_and_status(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, pg: str
) -> None:
    sim, url = simulator
    for task_id in (1, 2, 3):
        sim.add_task(task_id, status="running")
    cfg = on_postgres(tmp_path / "w.toml", url, sim.token, receiver.url, [1, 2, 3], pg, lease="2s")
    cfg.write_text(cfg.read_text() + '\n[http]\nlisten = "127.0.0.1:0"\n')
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as proc:
        try:
            port = await listening_port(proc)
            await receiver.wait_for(3)
            ready = (await get(f"http://127.0.0.1:{port}/readyz")).json()
            metrics = (await get(f"http://127.0.0.1:{port}/metrics")).text
            status = json.loads((await run(["status", "--json", "-c", str(cfg)], token=sim.token)).stdout)
            text = (await run(["status", "-c", str(cfg)], token=sim.token)).stdout.decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await proc.wait() == 0
    me = ready["replica"]["id"]
    assert ready["status"] == "ok" and ready["replica"]["tasks"] == [1, 2, 3]
    assert ready["replica"]["receivers"] == ["hook", "log"] and ready["replica"]["lease_seconds"] == 2.0
    assert f'voicefox_watcher_replica_info{{replica="{me}"}} 1.0' in metrics
    assert 'voicefox_watcher_leases_held{kind="task"} 3.0' in metrics
    assert "voicefox_watcher_replicas_alive 1.0" in metrics
    assert 'voicefox_watcher_lease_renewals_total{result="ok"}' in metrics
    (replica,) = status["replicas"]
    assert replica["id"] == me and replica["alive"] and replica["tasks"] == [1, 2, 3]
    assert replica["receivers"] == ["hook", "log"] and replica["announcesApiOutages"]
    assert {t["id"]: t["polledBy"] for t in status["tasks"]} == {1: me, 2: me, 3: me}
    assert "REPLICAS" in text and f"[polled by {me}]" in text
    after = json.loads((await run(["status", "--json", "-c", str(cfg)], token=sim.token)).stdout)
    assert after["replicas"] == [] and {t["polledBy"] for t in after["tasks"]} == {None}  # handed back on SIGTERM


async def test_a_task_added_through_one_replica_is_watched_once_by_the_replicas_and_kept_across_restarts(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, pg: str
) -> None:
    """The list of added tasks lives in the database: the other replica learns of an add at once (NOTIFY), one
    replica polls the task, and its events are announced once."""
    sim, url = simulator
    for task_id in (1, 2, 3, 4):
        sim.add_task(task_id, status="running", progress=10)
    cfg = on_postgres(tmp_path / "w.toml", url, sim.token, receiver.url, [1, 2], pg, lease="2s")
    cfg.write_text(cfg.read_text() + '\n[http]\nlisten = "127.0.0.1:0"\n')
    async with (
        watcher_run(cfg, sim.token) as first,
        watcher_run(cfg, sim.token) as second,
        anyio.create_task_group() as tg,
    ):
        endpoint = f"http://127.0.0.1:{await listening_port(first)}"
        await listening_port(second)
        for proc in (first, second):  # their logs are read on: a full pipe would stop a replica mid-write
            tg.start_soon(read_all, proc.stdout)

        async def shared(tasks: set[str]) -> bool:
            # Both replicas alive and every task held by one of them (rendezvous hashing may give both tasks to one).
            owners = await holders(pg)
            async with await psycopg.AsyncConnection.connect(pg) as conn:
                cursor = await conn.execute("SELECT count(*) FROM voicefox_watcher.replicas WHERE expires_at > now()")
                alive = await cursor.fetchone()
            return alive == (2,) and set().union(*owners.values()) == tasks

        await until(lambda: shared({"1", "2"}))
        added = await run(["tasks", "add", "3", "--label", "team=sales", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert added.returncode == 0, added.stderr.decode()
        await until(lambda: shared({"1", "2", "3"}))  # both replicas know of it: the leases cover it
        sim.set(3, status="done", progress=100)

        async def announced() -> bool:
            return ("3", "voicefox.task.finished") in transitions(receiver)

        await until(announced)
        # A task added while no replica was listening (written here without NOTIFY, and their LISTEN connections
        # cut): each replica reads the list again when it listens again, so it is watched all the same.
        async with await psycopg.AsyncConnection.connect(pg, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO voicefox_watcher.added_tasks (task_id, labels, added_at) VALUES (4, '{}', now())"
            )
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
                " AND pid <> pg_backend_pid()"
            )
        await until(lambda: shared({"1", "2", "3", "4"}))
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await proc.wait() == 0
        tg.cancel_scope.cancel()
    seen = transitions(receiver)
    assert seen[("3", "voicefox.task.observed")] and seen[("3", "voicefox.task.finished")]
    assert all(len(ids) == 1 for ids in seen.values()), seen
    async with await psycopg.AsyncConnection.connect(pg) as conn:
        cursor = await conn.execute("SELECT task_id, labels FROM voicefox_watcher.added_tasks ORDER BY task_id")
        assert await cursor.fetchall() == [(3, {"team": "sales"}), (4, {})]


async def test_a_schema_3_database_gains_call_health_and_keeps_its_tasks(pg: str) -> None:
    """A database as schema 3 left it (no call health) is migrated on open; its tasks load with none."""
    from datetime import UTC, datetime

    from watcher.model import TaskSnapshot, TaskState
    from watcher.postgres import SCHEMA_VERSION, PostgresStore

    from .callhealth import collapsed

    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    store = await PostgresStore.open(pg, shown="pg")
    await store.record(TaskState(TaskSnapshot(id=7, status="running", progress=40), t0), [], now=1.0)
    await store.close()
    async with await psycopg.AsyncConnection.connect(pg, autocommit=True) as conn:  # back to schema 3
        await conn.execute("ALTER TABLE voicefox_watcher.tasks DROP COLUMN health")
        await conn.execute("DROP INDEX voicefox_watcher.events_by_time")  # (schema 5's)
        await conn.execute("UPDATE voicefox_watcher.meta SET value = '3' WHERE key = 'schema_version'")
    store = await PostgresStore.open(pg, shown="pg")
    try:
        old = (await store.load_states(claim=True))[7]
        assert old.snapshot.progress == 40 and old.health is None
        await store.record(TaskState(old.snapshot, t0, health=collapsed(t0)), [], now=2.0)
        assert (await store.load_states())[7].health == collapsed(t0)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(pg) as conn:
        cursor = await conn.execute("SELECT value FROM voicefox_watcher.meta WHERE key = 'schema_version'")
        assert await cursor.fetchone() == (str(SCHEMA_VERSION),)
        cursor = await conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'events_by_time'")
        assert await cursor.fetchone() == (1,)  # the page's newest events, off an index
