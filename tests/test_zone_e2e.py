"""End to end through the installed CLI with TZ=UTC and no watch.timezone: campaigns that call in Tokyo hours are heard
at the normal pace while their windows are open, and one whose window is closed is polled slowly and never stalled;
whether the API writes its timestamps with their offset or naive."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from watcher.simulator import Simulator, calling_hours

from .conftest import Receiver
from .test_cli import WATCHER

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CALLING, FAILING, LATER = 1, 2, 3  # calling now in Tokyo; failing now; calling later today in Tokyo


def config(path: Path, api_url: str, hook_url: str) -> Path:
    path.write_text(
        f"""
[api]
base_url = "{api_url}"
token = "${{TEST_VOICEFOX_TOKEN}}"
timeout = "2s"

[watch]
tasks = [{CALLING}, {FAILING}, {LATER}]
interval = "200ms"
slow_interval = "1h"   # a task polled slowly is not polled again during this test
stall_after = "4s"
progress_step = 10

[store]
path = "state.db"

[[notifiers]]
kind = "webhook"
name = "hook"
url = "{hook_url}"
"""
    )
    return path


async def wait_until(receiver: Receiver, done: Any, within: float = 45.0) -> None:
    with anyio.fail_after(within):
        while not done(receiver.bodies()):
            await receiver.wait_for(len(receiver.requests) + 1, within=within)


def of(bodies: list[dict[str, Any]], task: int, type_: str) -> list[dict[str, Any]]:
    return [b for b in bodies if b["subject"] == str(task) and b["type"] == f"voicefox.task.{type_}"]


@pytest.mark.parametrize(("timestamps", "source"), [("offset", "api"), ("naive", "learned")])
async def test_campaigns_in_tokyo_hours_watched_from_a_utc_host(
    receiver: Receiver, tmp_path: Path, timestamps: str, source: str
) -> None:
    sim = Simulator(timestamps=timestamps)  # type: ignore[arg-type]
    open_now = {"startDate": "2026-11-01", "startTime": calling_hours(sim.zone, open_now=True)}
    closed_now = {"startDate": "2026-11-01", "startTime": calling_hours(sim.zone, open_now=False)}
    option = sim.current  # (the option of task_body, numbers and all, with these windows)
    for task, windows in ((CALLING, open_now), (FAILING, open_now), (LATER, closed_now)):
        sim.add_task(task, f"Campaign {task}", status="running", progress=0 if task != LATER else 30)
        sim.set(task, option={**(option(task) or {})["option"], **windows})
    resolved_at: dict[str, int] = {}
    async with anyio.create_task_group() as tg:
        port = await tg.start(sim.serve)
        cfg = config(tmp_path / "w.toml", f"http://127.0.0.1:{port}", receiver.url)
        env = {**os.environ, "TEST_VOICEFOX_TOKEN": sim.token, "TZ": "UTC"}
        env.pop("WATCHER_CONFIG", None)
        async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env) as proc:
            read_all = anyio.Event()

            async def read_logs(stream: anyio.abc.ByteReceiveStream) -> None:
                buffer = b""
                try:
                    await read_lines(stream, buffer)
                finally:
                    read_all.set()

            async def read_lines(stream: anyio.abc.ByteReceiveStream, buffer: bytes) -> None:
                async for chunk in stream:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        entry = json.loads(line)
                        if entry.get("event") == "schedule.zone_resolved" and entry["zone"] == "+09:00":
                            assert entry["source"] == source
                            resolved_at.setdefault("polls of the later task", sim.requests_by_task.get(LATER, 0))

            assert proc.stdout is not None
            tg.start_soon(read_logs, proc.stdout)
            await wait_until(receiver, lambda b: all(of(b, t, "observed") for t in (CALLING, FAILING, LATER)))
            # The watcher is up: now the campaigns move, in their (Tokyo) calling hours.
            t = sim.elapsed()
            sim.timeline(CALLING, [(t + 0.3 * i, {"progress": 10 * i}) for i in range(1, 6)])  # then flat: stalled
            sim.timeline(FAILING, [(t + 0.3, {"progress": 10}), (t + 1.5, {"status": "stop.abnormal"})])
            await wait_until(
                receiver,
                lambda b: (
                    of(b, CALLING, "stalled") and of(b, FAILING, "failed") and len(of(b, CALLING, "progressed")) >= 4
                ),
            )
            bodies = receiver.bodies()
            stalled = of(bodies, CALLING, "stalled")[0]
            assert stalled["data"]["windows"]["placed"] is True
            assert stalled["data"]["windows"]["zone"] == "+09:00"
            assert stalled["data"]["windows"]["zoneSource"] == source
            # The campaign whose window is closed in Tokyo: polled slowly once the zone was known, and never stalled
            # (flat all along, for longer than stall_after).
            assert "polls of the later task" in resolved_at, "the zone was never resolved"
            assert sim.requests_by_task[LATER] - resolved_at["polls of the later task"] <= 1
            assert sim.requests_by_task[CALLING] > 10 * sim.requests_by_task[LATER] or timestamps == "naive"
            assert not of(bodies, LATER, "stalled")
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await proc.wait() == 0
                await read_all.wait()  # to the end of its output: the stream closes when the process block ends
        tg.cancel_scope.cancel()
    status = await anyio.run_process(
        [WATCHER, "status", "-c", str(cfg)], env={**os.environ, "TEST_VOICEFOX_TOKEN": "x", "TZ": "UTC"}, check=False
    )
    assert (
        f"campaigns' time zone: +09:00 ({'the UTC offset' if source == 'api' else 'learned'}" in status.stdout.decode()
    )
