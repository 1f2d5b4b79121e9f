"""Tasks added at run time: `watcher tasks add|remove|list` through a running watcher's operator endpoint, kept in the
store (a restart keeps them), watched once beside the config's; refused without a token beyond loopback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import run, write_config
from .test_crash import read_store, watcher_run
from .test_ops import listening_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def events_of(receiver: Receiver, task_id: int) -> list[dict[str, object]]:
    return [b for b in receiver.bodies() if b["subject"] == str(task_id)]


async def test_tasks_added_through_the_cli_are_watched_once_and_survive_a_restart(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    for task_id in (1, 2, 3):
        sim.add_task(task_id, status="running", progress=10)
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1], extra='[http]\nlisten = "127.0.0.1:0"\n')
    async with watcher_run(cfg, sim.token) as proc:
        endpoint = f"http://127.0.0.1:{await listening_port(proc)}"
        await receiver.wait_for(1)
        added = await run(["tasks", "add", "2", "--label", "team=sales", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert added.returncode == 0, added.stderr.decode()
        assert added.stdout.decode().strip() == "task 2: added"
        both = await run(["tasks", "add", "1", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert both.stdout.decode().strip() == "task 1: added"  # also in the config: still watched once
        await receiver.wait_for(2)
        observed = events_of(receiver, 2)[0]
        assert observed["type"] == "voicefox.task.observed"
        assert observed["data"]["labels"] == {"team": "sales"}  # type: ignore[index]
        listing = await run(["tasks", "list", "--json", "--url", endpoint, "-c", str(cfg)], sim.token)
        tasks = {t["id"]: t for t in json.loads(listing.stdout)}
        assert sorted(tasks) == [1, 2]
        assert tasks[1]["source"] == "both" and tasks[2]["source"] == "added"
        assert tasks[2]["labels"] == {"team": "sales"}
        refused = await run(["tasks", "remove", "1", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert refused.returncode == 1
        assert "is in the config file" in refused.stdout.decode()
        proc.terminate()
        await proc.wait()

    # A restart keeps task 2 (and task 1 once): a change of each is announced once.
    async with watcher_run(cfg, sim.token) as proc:
        endpoint = f"http://127.0.0.1:{await listening_port(proc)}"
        before = len(receiver.requests)
        sim.set(1, status="done", progress=100)
        sim.set(2, status="done", progress=100)
        await receiver.wait_for(before + 2)
        changes = [(b["subject"], b["type"]) for b in receiver.bodies()[before:]]
        assert sorted(changes) == [("1", "voicefox.task.finished"), ("2", "voicefox.task.finished")]
        removed = await run(["tasks", "remove", "2", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert removed.stdout.decode().strip() == "task 2: removed"
        gone = await run(["tasks", "remove", "2", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert gone.returncode == 1 and "not added at run time" in gone.stdout.decode()
        listing = await run(["tasks", "list", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert [line.split()[0] for line in listing.stdout.decode().splitlines()] == ["1"]
        proc.terminate()
        await proc.wait()
    finished = [(tid, type_) for _, tid, type_, _ in read_store(tmp_path / "state.db").events if "finished" in type_]
    assert sorted(finished) == [(1, "voicefox.task.finished"), (2, "voicefox.task.finished")]
    status = await run(["status", "-c", str(cfg), "--json"], sim.token)
    rows = {t["id"]: t for t in json.loads(status.stdout)["tasks"]}
    # Still watched (the file lists it); the refused `remove` forgot its add, so dropping it from the file ends it.
    assert rows[1]["added"] is False and rows[1]["watched"] is True
    assert rows[2]["added"] is False and rows[2]["watched"] is False  # removed: no longer watched


async def test_changing_tasks_beyond_loopback_needs_the_token(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    http = '[http]\nlisten = "0.0.0.0:0"\n'
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1], extra=http)
    async with watcher_run(cfg, sim.token) as proc:
        endpoint = f"http://127.0.0.1:{await listening_port(proc)}"
        async with httpx.AsyncClient() as client:
            refused = await client.post(f"{endpoint}/tasks", json={"id": 5})
            assert refused.status_code == 403 and "[http] token" in refused.json()["reason"]
        cli = await run(["tasks", "add", "5", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert cli.returncode == 2 and "[http] token" in cli.stderr.decode() and "Traceback" not in cli.stderr.decode()
        proc.terminate()
        await proc.wait()
    token = "t" * 40
    cfg.write_text(cfg.read_text().replace(http, f'{http}token = "{token}"\n'))
    async with watcher_run(cfg, sim.token) as proc:
        endpoint = f"http://127.0.0.1:{await listening_port(proc)}"
        async with httpx.AsyncClient() as client:
            assert (await client.post(f"{endpoint}/tasks", json={"id": 5})).status_code == 401
            wrong = await client.post(f"{endpoint}/tasks", json={"id": 5}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            bad = await client.post(
                f"{endpoint}/tasks", json={"id": "five"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert bad.status_code == 400 and "id must be a positive integer" in bad.json()["reason"]
        cli = await run(["tasks", "add", "5", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert cli.returncode == 0 and cli.stdout.decode().strip() == "task 5: added"
        proc.terminate()
        await proc.wait()


async def test_a_watcher_may_start_with_no_task_in_its_config_and_be_given_them_at_run_time(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(3, status="running", progress=10)
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [], extra='[http]\nlisten = "127.0.0.1:0"\n')
    async with watcher_run(cfg, sim.token) as proc:
        endpoint = f"http://127.0.0.1:{await listening_port(proc)}"
        added = await run(["tasks", "add", "3", "--url", endpoint, "-c", str(cfg)], sim.token)
        assert added.returncode == 0, added.stderr.decode()
        await receiver.wait_for(1)
        assert receiver.bodies()[0]["subject"] == "3"
        proc.terminate()
        assert await proc.wait() == 0
    no_listen = write_config(tmp_path / "x.toml", url, sim.token, receiver.url, [])
    refused = await run(["check", "-c", str(no_listen)], sim.token)
    assert refused.returncode == 2 and "watcher tasks add" in refused.stderr.decode()


async def test_tasks_pointed_at_something_else_says_so_without_a_traceback(receiver: Receiver, tmp_path: Path) -> None:
    """--url of a service that is not a watcher (here a receiver answering 204 with no body): a clear error, exit 1."""
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", receiver.url, [1])
    result = await run(["tasks", "list", "--url", receiver.url.removesuffix("/hook"), "-c", str(cfg)], "t")
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "did not answer as a voicefox-watcher operator endpoint" in err and "Traceback" not in err
