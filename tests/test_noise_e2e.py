"""Routing and noise end to end: the installed `watcher run`, a day compressed into seconds, kill -9 twice.

Two teams' webhooks (CloudEvents batches, so that every event id can be counted), one with quiet hours that last
twenty seconds. 30 campaigns finish at once: the sales team gets its 15 in one message after group_wait; the
support team's 15 are held, the watcher is killed with kill -9 while they are, and they arrive in one message when
the quiet hours end. A sales campaign fails: it is reminded twice, the watcher is killed with kill -9 while the
first reminder is being sent, and it is resolved. Nothing is lost; nothing is announced twice under different ids.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from watcher.httpserver import Request, Response, serve
from watcher.model import EventType
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_crash import read_store, watcher_run

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SALES = list(range(1, 16))
SUPPORT = list(range(16, 31))
FAILING = 31
QUIET_FOR = 20.0  # seconds of quiet hours for the support team, from the test's start
FINISHED, FAILED, RESUMED = EventType.FINISHED.value, EventType.FAILED.value, EventType.RESUMED.value


class Team(Receiver):
    """A team's webhook: records each request with the time it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    async def handle(self, request: Request) -> Response:
        self.arrived.append(time.time())
        return await super().handle(request)

    def events(self) -> list[dict[str, Any]]:
        """Every CloudEvent received, in order (a batch is a list of them)."""
        out: list[dict[str, Any]] = []
        for body in self.bodies():
            out += body if isinstance(body, list) else [body]
        return out

    async def until(self, check: Callable[[], bool], within: float = 30.0) -> None:
        with anyio.fail_after(within):
            while not check():
                await self._arrived.wait()


@asynccontextmanager
async def teams() -> AsyncIterator[tuple[Team, Team]]:
    sales, support = Team(), Team()
    async with anyio.create_task_group() as tg:
        for team, name in ((sales, "sales"), (support, "support")):
            port = await tg.start(serve, team.handle)
            team.url = f"http://127.0.0.1:{port}/{name}"
        yield sales, support
        tg.cancel_scope.cancel()


def clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def write_config(path: Path, api: str, sales: str, support: str, quiet_from: datetime, quiet_to: datetime) -> Path:
    tasks = "\n".join(
        f'[[watch.task]]\nid = {t}\nlabels = {{ team = "{"sales" if t in (*SALES, FAILING) else "support"}" }}\n'
        for t in (*SALES, *SUPPORT, FAILING)
    )
    path.write_text(
        f"""
[api]
base_url = "{api}"
token = "${{TEST_VOICEFOX_TOKEN}}"
timeout = "1s"

[watch]
interval = "200ms"
slow_interval = "200ms"
stall_after = "1h"

{tasks}
[store]
path = "state.db"

[[notifiers]]
kind = "webhook"
name = "sales"
url = "{sales}"
digest = true
matchers = ['team="sales"']
events = ["{FINISHED}", "{FAILED}"]
group_wait = "2s"
repeat_every = "3s"
repeat_max = 2

[[notifiers]]
kind = "webhook"
name = "support"
url = "{support}"
digest = true
matchers = ['team=~"support|care"']
events = ["{FINISHED}"]
group_wait = "2s"
quiet = [{{ from = "{clock(quiet_from)}", to = "{clock(quiet_to)}" }}]
quiet_timezone = "UTC"
"""
    )
    return path


def pending(db: Path, receiver: str) -> int:
    if not db.exists():
        return 0
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE receiver = ? AND state = 'pending'", (receiver,)
        ).fetchone()
    return int(n)


async def until_store(check: Callable[[], bool], within: float = 30.0) -> None:
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - the state is another process's, in its store: no event to await
            await anyio.sleep(0.05)


async def test_a_compressed_day_of_routing_quiet_hours_digests_and_reminders_survives_kill_9(
    simulator: tuple[Simulator, str], tmp_path: Path
) -> None:
    sim, api = simulator
    for task_id in (*SALES, *SUPPORT, FAILING):
        sim.add_task(task_id, f"Campaign {task_id}", status="running", progress=50)
    start = datetime.now(UTC).replace(microsecond=0)
    quiet_from, quiet_to = start - timedelta(seconds=5), start + timedelta(seconds=QUIET_FOR)
    db = tmp_path / "state.db"
    async with teams() as (sales, support):
        cfg = write_config(tmp_path / "watcher.toml", api, sales.url, support.url, quiet_from, quiet_to)

        # 30 campaigns finish at once: one message for sales after group_wait; support's are held.
        async with watcher_run(cfg, sim.token) as first:
            await until_store(lambda: len(read_store(db).snapshots) == 31)
            for task_id in (*SALES, *SUPPORT):
                sim.set(task_id, status="done", progress=100)
            await sales.until(lambda: len(sales.events()) >= 15)
            await until_store(lambda: pending(db, "sales") == 0 and pending(db, "support") == 15)
            assert datetime.now(UTC) < quiet_to, "the quiet hours ended before the test could kill during them"
            first.send_signal(signal.SIGKILL)  # kill -9 while support's digest is held
            await first.wait()
        assert support.requests == []

        # A sales campaign fails, is reminded; kill -9 while the first reminder is being sent.
        async with watcher_run(cfg, sim.token) as second:
            sim.set(FAILING, status="stop.abnormal")
            await sales.until(lambda: any(e["type"] == FAILED for e in sales.events()))
            sales.hold = anyio.Event()  # the next request (the first reminder) gets no answer
            await sales.until(lambda: any("reminder" in e["data"] for e in sales.events()))
            second.send_signal(signal.SIGKILL)
            await second.wait()
            sales.hold.set()
            sales.hold = None

        async with watcher_run(cfg, sim.token) as third:
            await sales.until(lambda: any(e["data"].get("reminder", {}).get("count") == 2 for e in sales.events()))
            sim.set(FAILING, status="running")
            await sales.until(lambda: any(e["type"] == RESUMED for e in sales.events()))
            await support.until(lambda: len(support.events()) >= 15, within=QUIET_FOR + 30)
            await until_store(lambda: read_store(db).outbox.keys() == {"delivered"})
            third.send_signal(signal.SIGTERM)
            await third.wait()

    stored = read_store(db)
    assert stored.outbox.get("pending", 0) == 0 and stored.outbox.get("dead", 0) == 0

    # Sales: its 15 in one message, the failure, two reminders (the first sent again under its own id after the
    # kill), the resolution; never a support task.
    got = sales.events()
    finished = [e for e in got if e["type"] == FINISHED]
    assert sorted(int(e["subject"]) for e in finished) == SALES
    first_batch = json.loads(sales.requests[0].body)
    assert isinstance(first_batch, list) and len(first_batch) == 15
    # A request sent again (a kill between the receiver's answer and its record) carries the same webhook-id.
    sent_as = [(r.headers["webhook-id"], r.body) for r in sales.requests]
    assert len(set(sent_as)) == len({webhook_id for webhook_id, _ in sent_as})
    failures = [e for e in got if e["type"] == FAILED and "reminder" not in e["data"]]
    reminders = [e for e in got if "reminder" in e["data"]]
    assert len({e["id"] for e in failures}) == 1
    numbered = {e["id"]: e["data"]["reminder"]["count"] for e in reminders}
    assert sorted(numbered.values()) == [1, 2], f"reminders announced under other ids: {numbered}"
    assert all(e["data"]["reminder"]["of"] == failures[0]["id"] for e in reminders)
    assert [e["type"] for e in got if e["type"] == RESUMED] == [RESUMED]
    resumed = next(e for e in got if e["type"] == RESUMED)
    assert resumed["data"]["resolves"]["type"] == FAILED

    # Support: its 15, held through the kill, in one message after the quiet hours (sent again only under the
    # same digest id if a kill cut one attempt short).
    assert sorted(int(e["subject"]) for e in {e["id"]: e for e in support.events()}.values()) == SUPPORT
    assert len({r.headers["webhook-id"] for r in support.requests}) == 1
    assert min(support.arrived) >= quiet_to.timestamp()

    # Nothing lost, nothing doubled: every finished event stored was delivered, once per id, to its team.
    stored_finished = {eid for eid, _, type_, _ in stored.events if type_ == FINISHED}
    assert stored_finished == {e["id"] for e in finished} | {e["id"] for e in support.events()}
