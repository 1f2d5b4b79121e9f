"""Adaptive polling (pure, injected clock), the shared AIMD rate limit, dropping finished tasks, and push hints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from watcher import schedule
from watcher.cli_run import Components, open_components
from watcher.detect import Rules, detect
from watcher.model import TaskSnapshot, TaskState
from watcher.ops import OpsServer
from watcher.pace import AdaptiveRate
from watcher.schedule import Cadence, Timetable, completion_eta, next_poll, window_state
from watcher.simulator import Simulator
from watcher.zone import Source, Zone

from .conftest import Receiver
from .test_daemon import FAST_RETRY, make_config

TOKYO = ZoneInfo("Asia/Tokyo")
# 2026-11-23 10:30 in Tokyo (01:30 UTC): inside the 09:00-12:00 window.
NOW = datetime(2026, 11, 23, 10, 30, tzinfo=TOKYO)
CADENCE = Cadence(interval=30.0, slow_interval=300.0, done_linger=3600.0)
WINDOWS = (("09:00", "12:00"), ("14:00", "18:00"))


def state(
    status: str,
    *,
    since: timedelta = timedelta(0),
    start_date: str = "2026-11-01",
    progress: int = 50,
    windows: tuple[tuple[str, str], ...] = WINDOWS,
) -> TaskState:
    snapshot = TaskSnapshot(id=1, status=status, progress=progress, start_date=start_date, windows=windows)
    return TaskState(snapshot, progress_since=NOW - since)


@pytest.mark.parametrize(
    ("case", "task", "now", "eta", "expected"),
    [
        ("never seen", None, NOW, None, 30.0),
        ("running in its window", state("running"), NOW, None, 30.0),
        ("running, 4 min from its estimated end: 3 polls an interval", state("running", progress=95), NOW, 240.0, 10.0),
        ("running, finish imminent", state("running"), NOW, 1.0, 10.0),
        ("running, hours from its end", state("running", progress=5), NOW, 4 * 3600.0, 30.0),
        (
            "running after its window: asleep until 14:00",
            state("running"),
            NOW.replace(hour=12, minute=10),
            None,
            300.0,
        ),
        ("running, window opens in 2 min", state("running"), NOW.replace(hour=13, minute=58), None, 120.0),
        ("running at night", state("running"), NOW.replace(hour=23), None, 300.0),
        ("pending before its start date", state("pending", start_date="2026-12-01"), NOW, None, 300.0),
        ("pending in its window", state("pending"), NOW, None, 30.0),
        ("stopped by an operator", state("stop.operate"), NOW, None, 300.0),
        ("timed out", state("stop.timeout"), NOW, None, 300.0),
        ("failed", state("stop.abnormal"), NOW, None, 300.0),
        ("done 10 min ago", state("done", since=timedelta(minutes=10)), NOW, None, 300.0),
        ("done 58 min ago: the linger's remainder", state("done", since=timedelta(minutes=58)), NOW, None, 120.0),
        ("done over the linger ago: dropped", state("done", since=timedelta(hours=2)), NOW, None, None),
        ("an unknown status", state("paused"), NOW, None, 30.0),
        (
            "no schedule at all: always open",
            state("running", start_date="", windows=()),
            NOW.replace(hour=3),
            None,
            30.0,
        ),
    ],
)
def test_next_poll(case: str, task: TaskState | None, now: datetime, eta: float | None, expected: float | None) -> None:
    assert next_poll(task, now, CADENCE, eta, TOKYO) == expected, case


def test_adaptive_off_polls_everything_every_interval() -> None:
    fixed = Cadence(interval=30.0, adaptive=False)
    for status in ("done", "stop.operate", "pending", "running"):
        assert next_poll(state(status, since=timedelta(days=2)), NOW, fixed) == 30.0


@pytest.mark.parametrize(
    ("when", "is_open", "opened", "next_open"),
    [
        (NOW, True, "09:00", None),
        (NOW.replace(hour=12, minute=0), False, None, "2026-11-23 14:00"),
        (NOW.replace(hour=8, minute=59), False, None, "2026-11-23 09:00"),
        (NOW.replace(hour=19), False, None, "2026-11-24 09:00"),
    ],
)
def test_window_state_in_the_configured_time_zone(
    when: datetime, is_open: bool, opened: str | None, next_open: str | None
) -> None:
    ws = window_state(state("running").snapshot, when, TOKYO)
    assert ws.open is is_open
    assert (ws.opened_at.strftime("%H:%M") if ws.opened_at else None) == opened
    assert (ws.next_open.strftime("%Y-%m-%d %H:%M") if ws.next_open else None) == next_open


def test_a_window_across_midnight_and_a_future_start_date() -> None:
    night = state("running", windows=(("22:00", "02:00"),)).snapshot
    assert window_state(night, NOW.replace(hour=1), TOKYO).open
    assert not window_state(night, NOW.replace(hour=3), TOKYO).open
    later = state("pending", start_date="2026-12-01").snapshot
    ws = window_state(later, NOW, TOKYO)
    assert not ws.open
    assert ws.next_open == datetime(2026, 12, 1, 9, 0, tzinfo=TOKYO)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=-7200, max_value=4 * 3600), min_size=1, max_size=80),
    windows=st.sampled_from([WINDOWS, (("22:00", "02:00"),), (("00:00", "00:00"),), ()]),
    start_date=st.sampled_from(["", "2026-11-23", "2026-11-25", "not a date"]),
    tz=st.sampled_from([TOKYO, ZoneInfo("America/New_York"), None]),
    start=st.sampled_from([NOW - timedelta(days=1), datetime(2026, 10, 31, 12, tzinfo=UTC)]),  # or across a DST end
)
def test_window_state_remembered_per_schedule_answers_as_if_computed_afresh(
    steps: list[int], windows: tuple[tuple[str, str], ...], start_date: str, tz: ZoneInfo | None, start: datetime
) -> None:
    """Walking the clock forwards and back across openings, closings and days, the memo never changes an answer."""
    snapshot = TaskSnapshot(id=1, status="running", start_date=start_date, windows=windows)
    schedule._memo.clear()
    when = start
    for step in steps:
        when += timedelta(seconds=step)
        remembered = window_state(snapshot, when, tz)  # often from the memo of an earlier step
        kept = dict(schedule._memo)
        schedule._memo.clear()
        assert window_state(snapshot, when, tz) == remembered, when
        schedule._memo.clear()
        schedule._memo.update(kept)


def test_a_running_task_is_never_stalled_outside_its_windows_and_its_stall_clock_starts_at_opening() -> None:
    rules = Rules(stall_after=timedelta(minutes=30))
    zone = Zone(TOKYO, Source.CONFIG)
    snapshot = state("running").snapshot
    # Progress last moved yesterday afternoon; all night it could not call.
    previous = TaskState(snapshot, progress_since=datetime(2026, 11, 22, 17, 0, tzinfo=TOKYO))
    _, at_night = detect(previous, snapshot, NOW.replace(hour=7), rules, zone=zone)
    assert at_night == []
    _, early = detect(previous, snapshot, NOW.replace(hour=9, minute=20), rules, zone=zone)  # 20 min into the window
    assert early == []
    _, late = detect(previous, snapshot, NOW.replace(hour=9, minute=40), rules, zone=zone)
    assert [e.type for e in late] == ["voicefox.task.stalled"]
    assert late[0].data["stalledForSeconds"] == 40 * 60


def test_completion_eta_from_the_pace_so_far() -> None:
    assert completion_eta(20, NOW, 60, NOW + timedelta(minutes=40)) == 40 * 60
    assert completion_eta(60, NOW, 60, NOW + timedelta(minutes=5)) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def acquire_for(rate: AdaptiveRate, clock: FakeClock, seconds: float) -> int:
    granted, end = 0, clock.now + seconds
    while clock.now < end:
        await rate.acquire()
        granted += 1
    return granted


@pytest.mark.anyio
async def test_the_rate_limit_is_shared_and_held() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(20.0, clock, clock.sleep)
    assert 195 <= await acquire_for(rate, clock, 10.0) <= 205


@pytest.mark.anyio
async def test_a_429_halves_the_rate_in_use_and_it_recovers_additively() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(0.0, clock, clock.sleep)  # no ceiling
    for _ in range(40):  # 40 requests in the last second
        await rate.acquire()
        clock.now += 0.02
    rate.backoff()
    assert rate.rate == pytest.approx(20.0)
    rate.backoff()
    assert rate.rate == pytest.approx(10.0)
    clock.now += 5.0
    await rate.acquire()
    assert rate.rate == pytest.approx(15.0)  # +1 request/s each second
    clock.now += 60.0
    await rate.acquire()
    assert rate.rate == pytest.approx(75.0)
    clock.now += 10.0
    await rate.acquire()
    assert rate.rate == float("inf")  # twice the pace that drew the 429: the limit lifts


# -- the timetable: one heap for every task, each on its own phase --------------------------------------------------


def drain(timetable: Timetable, now: float) -> list[tuple[int, float]]:
    """Every (task, planned) due by `now`, in order."""
    out = []
    while (item := timetable.pop_due(now)) is not None:
        out.append(item)
    return out


def test_first_polls_are_spread_evenly_over_one_interval() -> None:
    timetable = Timetable(10.0)
    timetable.spread([7, 8, 9, 10], now=100.0)
    assert timetable.next_due() == 100.0
    assert drain(timetable, 109.0) == [(7, 100.0), (8, 102.5), (9, 105.0), (10, 107.5)]
    assert timetable.next_due() is None  # all four are in flight until planned again


def test_the_next_poll_is_planned_from_the_plan_so_lag_does_not_accumulate() -> None:
    timetable = Timetable(10.0)
    timetable.spread([1], now=100.0)
    drain(timetable, 100.0)
    assert timetable.plan(1, planned=100.0, delay=10.0, now=100.4) == 110.0  # polled 0.4 s late


@pytest.mark.parametrize(
    ("case", "planned", "delay", "now", "expected"),
    [
        ("a long delay lands on the task's own grid, at most an interval late", 102.5, 95.0, 103.0, 202.5),
        ("a failed poll's backoff too", 102.5, 80.0, 103.0, 182.5),
        ("a delay of whole intervals is kept", 102.5, 300.0, 103.0, 402.5),
        ("a short delay (near its end) is kept as it is", 102.5, 10.0 / 3, 103.0, 102.5 + 10.0 / 3),
        ("fell behind: its next own slot, no catch-up burst", 102.5, 10.0, 125.0, 132.5),
        ("fell behind onto its slot exactly: now", 102.5, 10.0, 122.5, 122.5),
    ],
)
def test_plan(case: str, planned: float, delay: float, now: float, expected: float) -> None:
    timetable = Timetable(10.0)
    timetable.spread([1, 2, 3, 4], now=95.0)  # task 3's grid: 100 + k * 2.5 ... its anchor is 100.0
    drain(timetable, 100.0)
    timetable.remove(1)
    timetable.spread([1], now=102.5)  # task 1 anchored at 102.5
    drain(timetable, 102.5)
    assert timetable.plan(1, planned, delay, now) == pytest.approx(expected), case


def test_tasks_woken_by_the_same_calendar_time_keep_their_spread() -> None:
    """A window opening at the same minute for every task, or the end of a 429 pause, brings no thundering herd."""
    timetable = Timetable(10.0)
    tasks = list(range(100))
    timetable.spread(tasks, now=0.0)
    polled = drain(timetable, 10.0)
    # Every task is told the same thing: "nothing to do until t = 1000" (the calling window opens then).
    dues = sorted(timetable.plan(task, planned, 1000.0 - planned, now=10.0) or 0 for task, planned in polled)
    assert dues[0] >= 1000.0 and dues[-1] < 1010.0  # each in its own slot of the interval after
    assert len({round(d, 6) for d in dues}) == 100  # 100 distinct slots, 0.1 s apart
    # And after a pause: all 100 polled late at the same moment, planned again from then.
    late = drain(timetable, 2000.0)
    dues = sorted(timetable.plan(task, planned, 10.0, now=2000.0) or 0 for task, planned in late)
    assert len({round(d, 6) for d in dues}) == 100 and dues[-1] - dues[0] < 10.0


def test_a_task_stays_on_its_grid_through_float_noise() -> None:
    timetable = Timetable(0.1)
    timetable.spread([1, 2, 3], now=0.1)
    planned = {}
    for _ in range(3000):  # 1,000 polls of each
        for task, at in drain(timetable, timetable.next_due() or 0.0):
            due = timetable.plan(task, at, 0.1, now=at)
            assert due is not None and due - at == pytest.approx(0.1)
            planned[task] = due
    assert planned[1] == pytest.approx(0.1 + 1000 * 0.1)


def test_a_hint_moves_a_waiting_task_to_the_front() -> None:
    timetable = Timetable(60.0)
    timetable.spread([1, 2], now=0.0)
    drain(timetable, 0.0)
    timetable.plan(1, 0.0, 60.0, now=0.0)
    assert timetable.poll_now(1, now=5.0)
    assert drain(timetable, 5.0) == [(1, 5.0)]
    assert drain(timetable, 100.0) == [(2, 30.0)]  # task 1's old entry at 60 s is stale: no second poll


def test_a_hint_during_a_poll_makes_the_next_poll_immediate() -> None:
    timetable = Timetable(60.0)
    timetable.spread([1], now=0.0)
    drain(timetable, 0.0)  # being polled
    assert timetable.poll_now(1, now=0.5)
    assert timetable.plan(1, planned=0.0, delay=60.0, now=0.7) == 0.7  # the hint is not lost
    assert drain(timetable, 0.7) == [(1, 0.7)]
    assert timetable.plan(1, planned=0.7, delay=60.0, now=0.8) == 60.0  # and back on its own grid


def test_a_hint_just_before_a_tasks_slot_does_not_make_it_poll_twice_in_a_row() -> None:
    timetable = Timetable(30.0)
    timetable.spread([1], now=0.0)
    drain(timetable, 0.0)
    timetable.plan(1, 0.0, 30.0, now=0.1)
    assert timetable.poll_now(1, now=29.9)  # pushed 0.1 s before its own slot at 30
    assert drain(timetable, 29.9) == [(1, 29.9)]
    assert timetable.plan(1, 29.9, 30.0, now=30.0) == 60.0  # not 30.0: its slot after next


def test_a_hint_never_moves_an_overdue_task_back() -> None:
    timetable = Timetable(30.0)
    timetable.spread([1, 2], now=15.0)  # task 1 due at 15, task 2 at 30
    assert timetable.poll_now(1, now=20.0)  # the scheduler is behind: task 1 is overdue already
    assert drain(timetable, 40.0) == [(1, 15.0), (2, 30.0)]


def test_a_task_removed_and_added_back_during_its_poll_is_not_polled_twice_at_once() -> None:
    timetable = Timetable(10.0)
    timetable.spread([1], now=0.0)
    assert drain(timetable, 0.0) == [(1, 0.0)]  # being polled
    timetable.remove(1)  # SIGHUP: gone
    timetable.spread([1], now=1.0)  # SIGHUP: back, while the first poll is still out
    assert drain(timetable, 100.0) == []  # no second poll alongside the first
    assert timetable.plan(1, 0.0, 10.0, now=2.0) is not None  # the poll ends: planned as usual
    assert len(drain(timetable, 100.0)) == 1


def test_a_handed_out_task_that_is_not_polled_is_released() -> None:
    timetable = Timetable(10.0)
    timetable.spread([1], now=0.0)
    drain(timetable, 0.0)
    timetable.remove(1)
    timetable.release(1)  # the worker found it unscheduled and skipped it
    timetable.spread([1], now=5.0)
    assert drain(timetable, 5.0) == [(1, 5.0)]


def test_a_shorter_interval_brings_waiting_tasks_forward_spread_over_it() -> None:
    timetable = Timetable(300.0)
    tasks = list(range(10))
    timetable.spread(tasks, now=0.0)  # phases 30 s apart: all the same phase modulo a 30 s interval
    for task, planned in drain(timetable, 290.0):
        timetable.plan(task, planned, 300.0, now=planned)  # all waiting until 300 s and later
    timetable.retime(30.0, now=295.0)  # SIGHUP: interval 300 s -> 30 s
    dues = sorted(planned for _, planned in drain(timetable, 325.0))
    assert len(dues) == 10 and all(295.0 <= d < 325.0 for d in dues)
    assert dues == pytest.approx([295.0 + 3.0 * i for i in range(10)])  # spread evenly again, no herd
    assert drain(timetable, 10_000.0) == []  # the old entries are stale: no second poll


def test_a_longer_interval_leaves_waiting_tasks_where_they_are() -> None:
    timetable = Timetable(10.0)
    timetable.spread([1, 2], now=0.0)
    timetable.retime(60.0, now=1.0)
    assert drain(timetable, 100.0) == [(1, 0.0), (2, 5.0)]


def test_an_unscheduled_task_is_neither_polled_nor_hinted() -> None:
    timetable = Timetable(10.0)
    timetable.spread([1, 2], now=0.0)
    timetable.remove(2)
    assert drain(timetable, 100.0) == [(1, 0.0)]
    assert not timetable.poll_now(2, now=1.0)
    assert 2 not in timetable and 1 in timetable
    timetable.remove(1)  # removed while in flight
    assert timetable.plan(1, 0.0, 10.0, now=1.0) is None
    assert timetable.tasks() == [] and timetable.next_due() is None


# -- the daemon: dropping finished tasks, push hints --------------------------------------------------------------


PUSH_SECRET = "push-secret-0123456789"


@pytest.fixture
async def pushed(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> AsyncIterator[tuple[Components, str, Simulator]]:
    """A running daemon polling every 60 s (so only a push makes it poll soon), with its push endpoint."""
    sim, url = simulator
    sim.add_task(1, "Renewals", status="running", progress=90)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1], interval="60s")
    config = config.model_copy(
        update={
            "push": config.push.model_validate({"path": "/voicefox/push", "secret": PUSH_SECRET}),
            "http": config.http.model_validate({"listen": "127.0.0.1:0"}),
        }
    )
    async with open_components(config, api_retry=FAST_RETRY) as parts, anyio.create_task_group() as tg:
        port = await tg.start(OpsServer(parts.daemon, parts.store, parts.metrics).serve, "127.0.0.1", 0)
        await tg.start(parts.daemon.run)
        await receiver.wait_for(1)  # observed
        yield parts, f"http://127.0.0.1:{port}/voicefox/push", sim
        tg.cancel_scope.cancel()


TASK_END = {
    "event_name": "task.end",
    "event_data": {
        "task_id": 1,
        "task_start_at": "2026-11-23 09:00:00",
        "task_progress": {
            "total_num": 300,
            "called_num": 320,
            "called_answered_num": 210,
            "called_un_answered_num": 90,
            "pending_num": 0,
        },
        "task_overview": [
            {
                "question": "Will you attend?",
                "total": 210,
                "option": True,
                "results": [{"result": "yes", "total": 150, "percent": "71.4"}],
            }
        ],
    },
}


@pytest.mark.anyio
async def test_a_push_makes_the_daemon_poll_now_and_enriches_the_finished_event(
    pushed: tuple[Components, str, Simulator], receiver: Receiver
) -> None:
    _parts, url, sim = pushed
    sim.set(1, status="done", progress=100)
    async with httpx.AsyncClient() as http:
        response = await http.post(url, json=TASK_END, headers={"X-Webhook-Secret": PUSH_SECRET})
    assert response.status_code == 202
    await receiver.wait_for(2)  # long before the 60 s interval
    finished = receiver.bodies()[1]
    assert finished["type"] == "voicefox.task.finished"
    assert finished["data"]["voicefox"]["taskProgress"]["called_answered_num"] == 210
    assert finished["data"]["voicefox"]["taskOverview"][0]["results"][0]["result"] == "yes"


@pytest.mark.anyio
async def test_a_push_without_the_secret_is_refused_and_costs_no_poll(
    pushed: tuple[Components, str, Simulator],
) -> None:
    _parts, url, sim = pushed
    before = sim.requests
    async with httpx.AsyncClient() as http:
        with capture_logs() as logs:
            wrong = await http.post(url, json=TASK_END, headers={"X-Webhook-Secret": "guess"})
        missing = await http.post(url, json=TASK_END)
        bearer = await http.post(url, content=b"{not json", headers={"Authorization": f"Bearer {PUSH_SECRET}"})
        other = await http.post(
            url, json={**TASK_END, "event_name": "callin.hangup"}, headers={"X-Webhook-Secret": PUSH_SECRET}
        )
        get = await http.get(url)
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert bearer.status_code == 400  # authenticated by bearer, but not a task.end body
    assert other.json()["status"] == "ignored"
    assert get.status_code == 405
    assert sim.requests == before
    assert any(log["event"] == "push.refused" for log in logs)
    assert PUSH_SECRET not in str(logs)


@pytest.mark.anyio
async def test_a_finished_task_is_dropped_after_its_linger_without_another_poll(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="done", progress=100)
    sim.add_task(2, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1, 2], done_linger="1h")
    long_ago = datetime.now(UTC) - timedelta(hours=3)
    async with open_components(config, api_retry=FAST_RETRY) as parts:
        finished = TaskState(TaskSnapshot(id=1, status="done", progress=100), progress_since=long_ago)
        await parts.store.record(finished, [], now=0.0)
    with capture_logs() as logs:
        async with open_components(config, api_retry=FAST_RETRY) as parts, anyio.create_task_group() as tg:
            await tg.start(parts.daemon.run)
            await receiver.wait_for(1)  # task 2 observed
            tg.cancel_scope.cancel()
    assert 1 not in sim.requests_by_task
    assert parts.daemon.dropped == {1}
    assert any(log["event"] == "task.dropped" and log["task_id"] == 1 for log in logs)
    assert json.loads(receiver.requests[0].body)["subject"] == "2"


@pytest.mark.anyio
async def test_with_push_adopt_a_push_for_an_unknown_task_adds_it_and_announces_its_end(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    """`[push] adopt`: the campaign is watched from now on (kept in the store); the API confirms it is done, so its
    end is announced with the push's figures, not only observed. Without adopt, such a push is ignored."""
    sim, url = simulator
    sim.add_task(1, "Renewals", status="running", progress=90)
    sim.add_task(7, "Surveys", status="done", progress=100)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1], interval="60s")
    for adopt in (False, True):
        config = config.model_copy(
            update={
                "push": config.push.model_validate({"path": "/voicefox/push", "secret": PUSH_SECRET, "adopt": adopt}),
            }
        )
        async with open_components(config, api_retry=FAST_RETRY) as parts, anyio.create_task_group() as tg:
            port = await tg.start(OpsServer(parts.daemon, parts.store, parts.metrics).serve, "127.0.0.1", 0)
            await tg.start(parts.daemon.run)
            before = len(receiver.requests)
            push = {**TASK_END, "event_data": {**TASK_END["event_data"], "task_id": 7}}  # type: ignore[dict-item]
            async with httpx.AsyncClient() as http:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/voicefox/push", json=push, headers={"X-Webhook-Secret": PUSH_SECRET}
                )
            assert answer.status_code == 202
            if adopt:
                await receiver.wait_for(before + 2)
                added = await parts.store.added_tasks()
                assert list(added) == [7]
            else:
                assert await parts.store.added_tasks() == {}
                assert 7 not in parts.daemon.config.watch.ids
            tg.cancel_scope.cancel()
    seven = [b for b in receiver.bodies() if b["subject"] == "7"]
    assert [b["type"] for b in seven] == ["voicefox.task.observed", "voicefox.task.finished"]
    assert seven[1]["data"]["firstSight"] is True and seven[1]["data"]["adopted"] is True
    assert seven[1]["data"]["voicefox"]["taskProgress"]["called_answered_num"] == 210


@pytest.mark.anyio
async def test_no_id_that_is_not_a_task_id_is_adopted_stored_or_removed(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    """A push (adopt on) or a DELETE with an id that no task can have is refused with 400, nothing is stored, and a
    row an older version stored so is left out at the next start with an error line, not a traceback."""
    sim, url = simulator
    sim.add_task(1, "Renewals", status="running", progress=90)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1], interval="60s")
    config = config.model_copy(
        update={
            "push": config.push.model_validate({"path": "/voicefox/push", "secret": PUSH_SECRET, "adopt": True}),
            "http": config.http.model_validate({"listen": "127.0.0.1:0"}),  # (loopback: /tasks needs no token)
        }
    )
    async with open_components(config, api_retry=FAST_RETRY) as parts, anyio.create_task_group() as tg:
        port = await tg.start(OpsServer(parts.daemon, parts.store, parts.metrics).serve, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for bad in (0, -5, 1.9, 10**30, "x"):
                push = {**TASK_END, "event_data": {**TASK_END["event_data"], "task_id": bad}}  # type: ignore[dict-item]
                answer = await http.post("/voicefox/push", json=push, headers={"X-Webhook-Secret": PUSH_SECRET})
                assert answer.status_code == 400, bad
            for tail in ("100000000000000000000", "0", "abc", "１２"):
                assert (await http.delete(f"/tasks/{tail}")).status_code == 400, tail
        assert await parts.store.added_tasks() == {}
        with pytest.raises(ValueError, match="not a task id"):
            await parts.daemon.add_task(0, {})
        await parts.store.add_task(0, {}, 1.0)  # as a version without the check could have stored it
        tg.cancel_scope.cancel()
    with capture_logs() as logs:
        async with open_components(config, api_retry=FAST_RETRY) as parts:
            assert parts.daemon.config.watch.ids == [1]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["tasks.unusable"]
