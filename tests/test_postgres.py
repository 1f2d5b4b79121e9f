"""The installed CLI on a real PostgreSQL store (a server on 127.0.0.1 started by the tests): what works on SQLite
works there — `status` and `outbox` (kill -9 and one daemon per store are in test_cli, run on both engines) — and its errors
are clear and hold no password."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import anyio
import pytest

from watcher.httpserver import Response
from watcher.simulator import Simulator

from .conftest import Receiver, use_postgres
from .test_cli import WATCHER, env, run, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def on_postgres(path: Path, api_url: str, token: str, hook_url: str, tasks: list[int], url: str) -> Path:
    return use_postgres(write_config(path, api_url, token, hook_url, tasks), url)


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
