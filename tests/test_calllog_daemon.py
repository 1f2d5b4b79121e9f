"""The daemon reads the call log: simulator on 127.0.0.1 -> watcher -> store -> webhook receiver, on a clock of the
test's (the daemon's and the simulator's wall clock are one), each look and poll driven by the test."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from watcher import config as config_mod
from watcher.cli_run import open_components
from watcher.config import Config
from watcher.daemon import Daemon
from watcher.dispatch import Dispatcher
from watcher.model import EventType
from watcher.simulator import Simulator, blocked_numbers, calllog_forbidden, creeping_campaign, silent_dialer

from .conftest import Receiver
from .test_daemon import FAST_RETRY, rebuilt

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
STEP = timedelta(minutes=1)  # the test's clock moves a minute at a time: a poll each minute, a look every two

# The simulator's fake numbers as it writes them (simulator._fake_number and its callers): none may leave it.
PHONE = re.compile(r"\+81 ?90-\d{4}-\d{4}|(?<!\d)138\d{8}(?!\d)|\+8180\d{8}|\+81 3-4567-8901|05012345678|\+86 21 6123")


def dump(db: Path) -> str:
    """Every value of every table of a SQLite store, as text."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}"))  # noqa: S608


class Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Run:
    """A daemon on the test's clock, and what it has told."""

    daemon: Daemon
    dispatcher: Dispatcher
    wall: Wall
    receiver: Receiver
    store: Path
    looks: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    async def play(self, minutes: int, tasks: list[int], *, each: Callable[[], None] | None = None) -> None:
        """Move the clock a minute at a time: every task polled each minute, the call log read as `[health] every`
        says (two minutes), what was recorded delivered."""
        every = timedelta(seconds=self.daemon.config.health.every)
        last_look: datetime | None = None
        for _ in range(minutes):
            self.wall.now += STEP
            if each is not None:
                each()
            for task_id in tasks:
                await self.daemon.poll(task_id)
            if last_look is None or self.wall.now - last_look >= every:
                self.looks += await self.daemon.look_at_calls()
                last_look = self.wall.now
        await self.dispatcher.drain()

    def told(self, type_: EventType, task_id: int | None = None) -> list[dict[str, Any]]:
        return [
            b
            for b in self.receiver.bodies()
            if b["type"] == type_.value and (task_id is None or b["subject"] == str(task_id))
        ]


def make_config(
    api_url: str, token: str, hook_url: str, store: Path, tasks: list[int], timezone: str, **health: Any
) -> Config:
    return config_mod.validate(
        {
            "api": {"base_url": api_url, "token": token, "timeout": "2s"},
            "watch": {"tasks": tasks, "interval": "1m", "stall_after": "15m", "timezone": timezone},
            "health": {"every": "2m", **health},
            "store": {"path": str(store)},
            "delivery": {"timeout": "2s"},
            "notifiers": [{"kind": "webhook", "name": "hook", "url": hook_url}],
        },
        source="test",
    )


@asynccontextmanager
async def started(config: Config, receiver: Receiver, wall: Wall, db: Path) -> AsyncIterator[Run]:
    """The daemon's real wiring (API retries that do not wait), on the test's clock."""
    async with open_components(config, api_retry=FAST_RETRY) as parts:
        yield Run(rebuilt(parts.daemon, config, clock=wall), parts.dispatcher, wall, receiver, db)


@asynccontextmanager
async def watching(
    scenario: Callable[[Simulator], list[int]],
    receiver: Receiver,
    tmp_path: Path,
    timezone: str = "Asia/Tokyo",
    **health: Any,
) -> AsyncIterator[tuple[Run, Simulator, list[int]]]:
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    tasks = scenario(sim)
    async with sim.serving() as url:
        config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", tasks, timezone, **health)
        async with started(config, receiver, wall, tmp_path / "s.db") as run:
            yield run, sim, tasks


async def test_a_creeping_campaign_that_keeps_calling_is_not_stalled(receiver: Receiver, tmp_path: Path) -> None:
    async with watching(creeping_campaign, receiver, tmp_path) as (run, sim, tasks):
        await run.play(1, tasks)
        first = run.daemon.states[tasks[0]].snapshot.progress
        await run.play(60, tasks)
        last = run.daemon.states[tasks[0]].snapshot.progress
    assert run.told(EventType.STALLED) == []
    assert first is not None and last is not None and last - first <= 3  # 1 % per 20 minutes: flat past stall_after
    assert sim.calllog_requests >= run.looks >= 30  # a look of 10 tasks may read several pages (the first: an hour)
    ok = run.daemon.metrics.registry.get_sample_value("voicefox_watcher_calllog_looks_total", {"outcome": "ok"})
    assert ok == run.looks


async def test_without_the_call_log_the_same_campaign_is_a_false_stall(receiver: Receiver, tmp_path: Path) -> None:
    # The contrast: what the progress rule alone says of the creeping campaign.
    async with watching(creeping_campaign, receiver, tmp_path, calllog=False) as (run, sim, tasks):
        await run.play(40, tasks)
    stalls = run.told(EventType.STALLED)  # each time its percentage sits for 20 minutes
    assert stalls and all(s["data"]["evidence"] == "progress" for s in stalls)
    assert sim.calllog_requests == 0


async def test_a_silent_dialer_is_stalled_within_stall_after_and_one_look(receiver: Receiver, tmp_path: Path) -> None:
    async with watching(silent_dialer, receiver, tmp_path) as (run, _sim, tasks):
        silent_from = T0 + timedelta(minutes=10)  # the scenario's dialer stops then, its status still `running`
        await run.play(45, tasks)
    stalls = run.told(EventType.STALLED)
    assert len(stalls) == 1
    data = stalls[0]["data"]
    assert data["evidence"] == "calllog"
    told_at = datetime.fromisoformat(stalls[0]["time"])
    assert told_at <= silent_from + timedelta(minutes=15) + timedelta(minutes=2)  # stall_after + every
    assert datetime.fromisoformat(data["lastCallAt"]) <= silent_from
    assert data["silentForSeconds"] >= 15 * 60
    assert data["calls"]["lastHour"]["calls"] > 0  # the calls before it fell silent, still within the hour


async def test_calls_starting_again_end_the_stall(receiver: Receiver, tmp_path: Path) -> None:
    async with watching(silent_dialer, receiver, tmp_path) as (run, sim, tasks):
        await run.play(30, tasks)
        assert len(run.told(EventType.STALLED)) == 1
        sim.dialer(tasks[0], calls_per_minute=12)
        await run.play(6, tasks)
    unstalled = run.told(EventType.UNSTALLED)
    assert len(unstalled) == 1
    assert unstalled[0]["data"]["resolves"]["type"] == EventType.STALLED.value


async def test_blocked_numbers_raise_one_answer_rate_alert_and_one_recovery(receiver: Receiver, tmp_path: Path) -> None:
    async with watching(blocked_numbers, receiver, tmp_path) as (run, sim, tasks):
        await run.play(50, tasks)  # blocked 30 minutes in
        sim.dialer(tasks[0], answered=0.4)  # the numbers are cleared with the carriers
        await run.play(30, tasks)
    drops = run.told(EventType.ANSWER_RATE_DROPPED)
    recoveries = run.told(EventType.ANSWER_RATE_RECOVERED)
    assert len(drops) == 1 and len(recoveries) == 1
    rate = drops[0]["data"]["answerRate"]
    assert rate["before"] > 0.3 and rate["after"] < 0.1 and rate["calls"] == 100
    assert datetime.fromisoformat(rate["since"]) >= T0 + timedelta(minutes=30)
    assert recoveries[0]["data"]["resolves"]["type"] == EventType.ANSWER_RATE_DROPPED.value
    assert recoveries[0]["data"]["answerRate"]["now"] > 0.2
    assert run.told(EventType.STALLED) == []
    # Counts and times only: no number the simulator wrote is in a delivery or in the store.
    delivered = json.dumps(receiver.bodies(), ensure_ascii=False)
    assert not PHONE.search(delivered)
    assert not PHONE.search(dump(run.store))


async def test_a_403_for_the_call_log_turns_it_off_with_one_line_and_no_alert(
    receiver: Receiver, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        async with watching(calllog_forbidden, receiver, tmp_path) as (run, sim, tasks):
            await run.play(20, tasks)
    forbidden = [e for e in logs if e["event"] == "calllog.forbidden"]
    assert len(forbidden) == 1 and "calllog = false" in forbidden[0]["hint"]
    assert sim.calllog_requests == 1  # then off (tried again an hour later)
    registry = run.daemon.metrics.registry
    assert registry.get_sample_value("voicefox_watcher_calllog_looks_total", {"outcome": "forbidden"}) == 1
    assert {b["type"] for b in receiver.bodies()} <= {EventType.OBSERVED.value, EventType.STALLED.value}
    stalls = run.told(EventType.STALLED)  # its progress is flat: the progress rule stands, and says so
    assert len(stalls) == 1 and stalls[0]["data"]["evidence"] == "progress"
    assert "calls" not in stalls[0]["data"]


async def test_the_call_log_off_asks_nothing(receiver: Receiver, tmp_path: Path) -> None:
    async with watching(blocked_numbers, receiver, tmp_path, calllog=False) as (run, sim, tasks):
        await run.play(10, tasks)
    assert sim.calllog_requests == 0 and run.looks == 0


async def test_up_to_ten_tasks_share_a_request(receiver: Receiver, tmp_path: Path) -> None:
    def many(sim: Simulator) -> list[int]:
        ids = list(range(3001, 3026))
        for task_id in ids:
            sim.add_task(task_id, status="running", total=10_000, progress=5)
            sim.dialer(task_id, calls_per_minute=1, at=T0)
        sim.add_task(3100, status="pending")  # not calling: its call log is not read
        return [*ids, 3100]

    async with watching(many, receiver, tmp_path) as (run, sim, tasks):
        await run.play(1, tasks)
        assert sim.calllog_requests == 3  # 25 running tasks: 10 + 10 + 5
        assert all(run.daemon.states[t].health is not None for t in tasks[:-1])
        assert run.daemon.states[3100].health is None


async def test_tasks_outside_their_windows_or_of_an_unknown_zone_are_not_read(
    receiver: Receiver, tmp_path: Path
) -> None:
    def closed(sim: Simulator) -> list[int]:
        sim.add_task(4001, status="running", progress=5, option={"startDate": "", "startTime": [["20:00", "21:00"]]})
        sim.dialer(4001, calls_per_minute=5, at=T0 - timedelta(hours=1))
        return [4001]

    async with watching(closed, receiver, tmp_path) as (run, sim, tasks):
        await run.play(4, tasks)  # 10:00 in Tokyo: its window opens at 20:00
    assert sim.calllog_requests == 0

    with capture_logs() as logs:
        async with watching(blocked_numbers, receiver, tmp_path / "unzoned", timezone="") as (run, sim, tasks):
            await run.play(4, tasks)  # static timestamps, no watch.timezone: the zone is never known
    assert sim.calllog_requests == 0
    assert len([e for e in logs if e["event"] == "calllog.no_zone"]) == 1


async def test_a_restart_keeps_the_call_health_and_tells_a_collapse_once(receiver: Receiver, tmp_path: Path) -> None:
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    tasks = blocked_numbers(sim, blocked_after=timedelta(minutes=10))
    async with sim.serving() as url:
        config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", tasks, "Asia/Tokyo")
        for minutes in (16, 10, 10):  # the collapse is told in the first run; the watcher restarts twice during it
            async with started(config, receiver, wall, tmp_path / "s.db") as run:
                assert minutes == 16 or run.daemon.states[tasks[0]].health is not None  # as the store kept it
                await run.play(minutes, tasks)
    assert len(run.told(EventType.ANSWER_RATE_DROPPED)) == 1
    assert run.told(EventType.ANSWER_RATE_RECOVERED) == []


async def test_a_429_from_the_call_log_pauses_every_request_and_a_5xx_costs_one_look(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with watching(creeping_campaign, receiver, tmp_path) as (run, sim, tasks):
        await run.play(1, tasks)  # first sight and a first look
        daemon, registry = run.daemon, run.daemon.metrics.registry
        sim.inject("429", endpoint="calllog", retry_after="120")
        run.wall.now += STEP
        await daemon.look_at_calls()
        # One budget: the task polls wait for Retry-After too.
        assert daemon.gate.not_before - daemon._monotonic() > 100
        assert registry.get_sample_value("voicefox_watcher_calllog_looks_total", {"outcome": "rate_limited"}) == 1
        daemon.gate.not_before = 0.0  # (the test does not wait two minutes)
        sim.inject("500", times=3, endpoint="calllog")  # every try of one look (FAST_RETRY: 3)
        with capture_logs() as logs:
            await daemon.look_at_calls()
        assert [e["cause"] for e in logs if e["event"] == "poll.failed"] == ["calllog"]
        assert registry.get_sample_value("voicefox_watcher_calllog_looks_total", {"outcome": "failed"}) == 1
        await run.play(4, tasks)  # the faults are spent: looks succeed again
    assert run.told(EventType.STALLED) == []  # a failed look is no evidence of anything


async def test_the_call_log_is_read_in_the_workspaces_zone_not_a_campaigns_own(
    receiver: Receiver, tmp_path: Path
) -> None:
    # A campaign calling in Bangkok hours ([[watch.task]] timezone) of a workspace whose API writes Tokyo time: its
    # windows are read in Bangkok, its call log in Tokyo. Read in Bangkok, calls of two hours ago would pass for
    # calls of now, and the silent dialer would look alive.
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    task = 2002
    sim.add_task(task, "Clinic reminder calls", status="running", total=50_000, progress=12)
    sim.dialer(task, calls_per_minute=12, at=T0 - timedelta(hours=4))  # calling all morning...
    sim.dialer(task, calls_per_minute=0, at=T0 + timedelta(minutes=10))  # ...then silent, still `running`
    async with sim.serving() as url:
        config = config_mod.validate(
            {
                "api": {"base_url": url, "token": sim.token, "timeout": "2s"},
                "watch": {
                    "task": [{"id": task, "timezone": "Asia/Bangkok"}],
                    "interval": "1m",
                    "stall_after": "15m",
                    "timezone": "Asia/Tokyo",
                },
                "store": {"path": str(tmp_path / "s.db")},
                "notifiers": [{"kind": "webhook", "name": "hook", "url": receiver.url}],
            },
            source="test",
        )
        async with started(config, receiver, wall, tmp_path / "s.db") as run:
            await run.play(30, [task])
    (stalled,) = run.told(EventType.STALLED)
    assert stalled["data"]["evidence"] == "calllog"
    assert datetime.fromisoformat(stalled["time"]) <= T0 + timedelta(minutes=10 + 15 + 2)


async def test_a_look_cut_short_by_the_page_limit_tells_only_what_it_read(receiver: Receiver, tmp_path: Path) -> None:
    def busy(sim: Simulator) -> list[int]:
        sim.add_task(5001, status="running", total=1_000_000, progress=40)
        sim.dialer(5001, calls_per_minute=60, at=T0 - timedelta(hours=1))  # an hour back: 36 pages of 100
        return [5001]

    async with watching(busy, receiver, tmp_path) as (run, _sim, tasks):
        run.daemon.calllog_max_pages = 5
        await run.play(1, tasks)
        health = run.daemon.states[tasks[0]].health
        assert health is not None and health.last_look is not None and health.last_start is not None
        # The look read the oldest 500 calls (the simulator's order): it saw no further, and says so.
        assert health.last_look <= health.last_start + timedelta(minutes=1) < T0 - timedelta(minutes=40)
        first = health.last_look
        await run.play(40, tasks)  # each look reads on from there (less its lookback), faster than time passes
        health = run.daemon.states[tasks[0]].health
        assert health is not None and health.last_look is not None
        assert health.last_look - first >= timedelta(minutes=60)
    # A look cut short is no evidence of silence: while the looks lag, the call log tells nothing of liveness, and
    # the progress rule judges this flat percentage as before.
    assert all(s["data"]["evidence"] == "progress" for s in run.told(EventType.STALLED))
