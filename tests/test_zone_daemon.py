"""The daemon's side of zones, through the real simulator on 127.0.0.1 with a settable wall clock: the zone found from
the API, a wrong configured zone overruled by what the task does, and the warnings that say so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from watcher.cli_run import Components, open_components
from watcher.simulator import Simulator, Timestamps

from .conftest import Receiver
from .test_daemon import FAST_RETRY, make_config

pytestmark = pytest.mark.anyio

# 01:30 UTC: 10:30 in Tokyo, where the campaign calls 09:00-18:00; 20:30 the day before in New York.
START = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
TOKYO_HOURS = {"startDate": "2026-11-01", "startTime": [["09:00", "18:00"]]}


class Wall:
    """A settable wall clock shared by the watcher and the simulator's timestamps."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def watcher(
    sim_url: str, token: str, receiver: Receiver, tmp_path: Path, wall: Wall, **watch: Any
) -> AsyncIterator[Components]:
    config = make_config(
        sim_url, token, receiver.url, tmp_path / "s.db", [1], interval="30s", slow_interval="5m", **watch
    )
    async with open_components(config, api_retry=FAST_RETRY, clock=wall) as parts:
        yield parts


@asynccontextmanager
async def tokyo_campaign(
    timestamps: Timestamps, *, name: str = "Renewals", start: datetime = START, **fields: Any
) -> AsyncIterator[tuple[Wall, Simulator, str]]:
    """Task 1, running and calling 09:00-18:00 in Tokyo, on a simulator whose clock is the test's."""
    wall = Wall()
    wall.now = start
    sim = Simulator(timestamps=timestamps, wall_clock=wall)
    async with anyio_simulator(sim) as url:
        sim.add_task(1, name)
        running(sim, **fields)
        yield wall, sim, url


def running(sim: Simulator, **fields: Any) -> None:
    body = {"status": "running", "progress": 10, "option": {**sim.current(1)["option"], **TOKYO_HOURS}}  # type: ignore[index]
    sim.set(1, **{**body, **fields})


async def test_a_wrong_configured_zone_is_overruled_by_the_first_change_seen_in_a_believed_closed_window(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with (
        tokyo_campaign("naive", name="東京 renewals") as (wall, sim, url),
        watcher(url, sim.token, receiver, tmp_path, wall, timezone="America/New_York", stall_after="15m") as parts,
    ):
        daemon = parts.daemon
        assert await daemon.poll(1)
        assert daemon.next_delay(1) == 300.0  # believed outside its window (New York night): slowly
        wall.now += timedelta(minutes=5)  # one slow_interval later; meanwhile it called in Tokyo hours
        sim.set(1, progress=14)
        with capture_logs() as logs:
            assert await daemon.poll(1)
        (warning,) = [e for e in logs if e["event"] == "schedule.window_mismatch"]
        assert warning["log_level"] == "warning"
        assert warning["task_id"] == 1
        assert warning["zone"] == "America/New_York"
        # Naive timestamps: one fresh change says where the API's clock is (Tokyo), which is what it suggests.
        assert warning["likely_zone"].startswith("+09:00")
        assert daemon.next_delay(1) == 30.0  # the normal pace from now on
        # It stops moving in its real window: a stall is raised, though New York says it is night.
        wall.now += timedelta(minutes=16)
        assert await daemon.poll(1)
        await parts.dispatcher.drain()
        stalled = [b for b in receiver.bodies() if b["type"] == "voicefox.task.stalled"]
        assert len(stalled) == 1
        assert stalled[0]["data"]["windows"]["doubted"] is True
        # One warning per task and day: another contradiction the same day is not logged again.
        wall.now += timedelta(seconds=30)
        sim.set(1, progress=15)
        with capture_logs() as again:
            assert await daemon.poll(1)
        assert not [e for e in again if e["event"] == "schedule.window_mismatch"]


async def test_the_zone_is_found_from_the_api_and_logged_once(receiver: Receiver, tmp_path: Path) -> None:
    async with tokyo_campaign("offset") as (wall, sim, url), watcher(url, sim.token, receiver, tmp_path, wall) as parts:
        daemon = parts.daemon
        with capture_logs() as logs:
            assert await daemon.poll(1)
            wall.now += timedelta(seconds=30)
            sim.set(1, progress=11)
            assert await daemon.poll(1)
        resolved = [e for e in logs if e["event"] == "schedule.zone_resolved"]
        assert [(e["zone"], e["source"]) for e in resolved] == [("+09:00", "api")]
        assert daemon.next_delay(1) == 30.0  # 10:30 in Tokyo: inside its window
        wall.now = START.replace(hour=15)  # midnight in Tokyo
        assert await daemon.poll(1)
        assert daemon.next_delay(1) == 300.0
        assert await parts.store.meta("zone") == '{"name": "+09:00", "source": "api"}'  # for `watcher status`


async def test_naive_timestamps_teach_the_zone_after_three_agreeing_changes_and_a_restart_remembers_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with tokyo_campaign("naive") as (wall, sim, url):
        async with watcher(url, sim.token, receiver, tmp_path, wall) as parts:
            daemon = parts.daemon
            assert await daemon.poll(1)
            assert daemon.zones.zone().name == "unknown"
            night = START.replace(hour=15)  # midnight in Tokyo
            assert daemon.next_delay(1) == 30.0
            with capture_logs() as logs:
                for step in range(3):  # three changes while it calls (10:30 in Tokyo)
                    wall.now += timedelta(seconds=30)
                    sim.set(1, progress=20 + step)
                    assert await daemon.poll(1)
            assert [(e["zone"], e["source"]) for e in logs if e["event"] == "schedule.zone_resolved"] == [
                ("+09:00", "learned")
            ]
        wall.now = night
        async with watcher(url, sim.token, receiver, tmp_path, wall) as parts:
            assert parts.daemon.zones.zone().name == "+09:00"  # remembered
            assert await parts.daemon.poll(1)
            assert parts.daemon.next_delay(1) == 300.0  # night in Tokyo, known as such


async def test_an_unreadable_schedule_is_logged_once_naming_the_task_and_the_value(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with (
        tokyo_campaign("static", option={"startDate": "2026-11-01", "startTime": [["9am", "6pm"]]}) as (
            wall,
            sim,
            url,
        ),
        watcher(url, sim.token, receiver, tmp_path, wall, timezone="Asia/Tokyo") as parts,
    ):
        with capture_logs() as logs:
            assert await parts.daemon.poll(1)
            assert await parts.daemon.poll(1)
        (line,) = [e for e in logs if e["event"] == "schedule.unreadable"]
        assert line["task_id"] == 1
        assert '["9am", "6pm"]' in line["problems"][0]
        wall.now = START.replace(hour=15)  # midnight in Tokyo, but the windows could not be read: any time
        assert await parts.daemon.poll(1)
        assert parts.daemon.next_delay(1) == 30.0


@asynccontextmanager
async def anyio_simulator(sim: Simulator) -> AsyncIterator[str]:
    import anyio

    async with anyio.create_task_group() as tg:
        port = await tg.start(sim.serve)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def test_a_restart_at_night_keeps_the_zone_the_api_states_and_raises_no_stall(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with tokyo_campaign("offset") as (wall, sim, url):
        async with watcher(url, sim.token, receiver, tmp_path, wall, stall_after="15m") as parts:
            assert await parts.daemon.poll(1)  # by day: +09:00 from its timestamps
        wall.now = START.replace(hour=15)  # midnight in Tokyo; nothing has changed since
        async with watcher(url, sim.token, receiver, tmp_path, wall, stall_after="15m") as parts:
            daemon = parts.daemon
            assert daemon.zones.zone().name == "+09:00"  # from the stored answer, before any poll
            for _ in range(3):
                assert await daemon.poll(1)
                wall.now += timedelta(minutes=30)
            assert daemon.zones.for_task(1).name == "+09:00"
            assert daemon.next_delay(1) == 300.0
            await parts.dispatcher.drain()
    assert not [b for b in receiver.bodies() if b["type"] == "voicefox.task.stalled"]


async def test_readiness_expects_the_poll_planned_for_a_window_opening_not_a_shorter_one(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with (
        tokyo_campaign("offset", start=datetime(2026, 11, 22, 23, 56, tzinfo=UTC)) as (wall, sim, url),
        watcher(url, sim.token, receiver, tmp_path, wall) as parts,
    ):
        daemon = parts.daemon
        assert await daemon.poll(1)
        assert daemon.next_delay(1) == 240.0  # asleep until 09:00
        wall.now += timedelta(minutes=3, seconds=20)  # 08:59:20, the 09:00 poll still to come
        assert daemon.answer_expected_within() == 240.0  # not the 40 s a fresh plan would say now
