"""Detection with the call log, pure: liveness from the calls (a flat percentage that keeps calling is no stall, a
dialer that starts no call is one), the stall's evidence, the answer rate's events, and `data.calls`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from watcher.calllog import CallRecord
from watcher.detect import Rules, detect, detect_calls
from watcher.health import CallHealth, observe
from watcher.model import Event, EventType, Status, TaskSnapshot, TaskState
from watcher.zone import UNKNOWN

from .test_health import RULES as HEALTH
from .test_health import T0, even, records

RULES = Rules(progress_step=10, stall_after=timedelta(minutes=15), health=HEALTH)
TASK = TaskSnapshot(1, Status.RUNNING, "Renewals", progress=37, total=20_000)


def looked(calls: Sequence[CallRecord], now: datetime, health: CallHealth | None = None) -> CallHealth:
    state, _ = observe(health, [c for c in calls if c.ended_at is not None and c.ended_at <= now], now, HEALTH)
    return state


def running(since: datetime, health: CallHealth | None = None, **kw: object) -> TaskState:
    return TaskState(TASK, progress_since=since, health=health, **kw)  # type: ignore[arg-type]


def types(events: Sequence[Event]) -> list[str]:
    return [e.type for e in events]


def test_a_flat_percentage_that_keeps_calling_is_no_stall() -> None:
    now = T0 + timedelta(minutes=40)
    health = looked(records(even(700, 0.4)), now)  # a call every 3 s up to 35 minutes in
    state, events = detect(running(T0, health), TASK, now, RULES)
    assert not state.stalled and types(events) == []


def test_the_same_flat_task_without_the_call_log_is_stalled_on_its_progress() -> None:
    now = T0 + timedelta(minutes=40)
    state, events = detect(running(T0), TASK, now, RULES)
    assert state.stalled and types(events) == [EventType.STALLED]
    assert events[0].data["evidence"] == "progress" and "calls" not in events[0].data


def test_a_stale_call_log_tells_nothing_and_progress_judges() -> None:
    health = looked(records(even(100, 0.4)), T0 + timedelta(minutes=6))
    now = T0 + timedelta(minutes=40)  # the last look was 34 minutes ago: the call log is failing
    state, events = detect(running(T0, health), TASK, now, RULES)
    assert state.stalled and events[0].data["evidence"] == "progress"


def test_no_call_started_for_stall_after_is_a_stall_on_the_call_logs_evidence() -> None:
    calls = records(even(100, 0.4))  # 5 minutes of calls, then none
    health = looked(calls, T0 + timedelta(minutes=10))
    now = T0 + timedelta(minutes=22)
    health = looked([], now, health)
    previous = running(T0 + timedelta(minutes=20), health)  # progress even moved two minutes ago
    state, events = detect_calls(previous, [], now, RULES)
    assert types(events) == [], "the stall clock starts no earlier than the progress's last move"
    previous = running(T0, health)
    state, events = detect_calls(previous, [], now, RULES)
    assert state.stalled and types(events) == [EventType.STALLED]
    data = events[0].data
    assert data["evidence"] == "calllog"
    assert data["lastCallAt"] == calls[-1].started_at.isoformat()
    assert data["silentForSeconds"] == int((now - calls[-1].started_at).total_seconds())
    assert data["calls"]["total"] == 100 and data["calls"]["answered"] == 40


def test_silence_outside_the_calling_window_is_no_stall() -> None:
    from zoneinfo import ZoneInfo

    from watcher.zone import Source, Zone

    closed = dataclasses.replace(TASK, windows=(("20:00", "21:00"),))  # 10:00 in Tokyo
    health = looked([], T0 + timedelta(minutes=40), looked(records(even(10, 0.4)), T0 + timedelta(minutes=2)))
    state, events = detect_calls(
        TaskState(closed, progress_since=T0, health=health),
        [],
        T0 + timedelta(minutes=40),
        RULES,
        zone=Zone(ZoneInfo("Asia/Tokyo"), Source.CONFIG),
    )
    assert not state.stalled and events == []


def test_calls_starting_again_end_the_stall_and_restart_its_clock() -> None:
    calls = records(even(100, 0.4))
    health = looked([], T0 + timedelta(minutes=25), looked(calls, T0 + timedelta(minutes=6)))
    stalled = running(T0, health, stalled=True)
    later = records(even(20, 0.4), start=T0 + timedelta(minutes=26))
    now = T0 + timedelta(minutes=28)
    state, events = detect_calls(stalled, later, now, RULES)
    assert types(events) == [EventType.UNSTALLED]
    assert events[0].data["resolves"]["type"] == EventType.STALLED.value
    assert not state.stalled and state.progress_since == later[-1].started_at
    # ...and a look that shows no newer call leaves a stall as it is.
    again, events = detect_calls(stalled, [], now, RULES)
    assert again.stalled and events == []


@pytest.mark.parametrize("status", [Status.RUNNING, Status.STOP_OPERATE])
def test_a_collapse_is_one_event_with_its_figures_and_its_end_one_resolved_notice(status: str) -> None:
    calls = records(even(600, 0.4) + even(200, 0.03) + even(300, 0.4))
    task = dataclasses.replace(TASK, status=status)
    state = TaskState(task, progress_since=T0)
    told: list[Event] = []
    now = T0 + timedelta(minutes=2)
    while now < T0 + timedelta(minutes=60):
        state, events = detect_calls(state, [c for c in calls if c.ended_at and c.ended_at <= now], now, RULES)
        told += events
        now += timedelta(minutes=2)
    assert types(told) == [EventType.ANSWER_RATE_DROPPED, EventType.ANSWER_RATE_RECOVERED]
    dropped, recovered = told
    assert dropped.data["answerRate"]["before"] == pytest.approx(0.4, abs=0.01)
    assert dropped.data["answerRate"]["after"] < 0.1
    assert recovered.data["resolves"]["type"] == EventType.ANSWER_RATE_DROPPED.value
    assert recovered.data["resolves"]["lastedSeconds"] > 0
    assert dropped.id != recovered.id


def test_a_done_task_ends_its_collapse_without_a_notice() -> None:
    calls = records(even(600, 0.4) + even(200, 0.03))
    health = looked(calls, T0 + timedelta(hours=1))
    assert health.episode is not None
    done = dataclasses.replace(TASK, status=Status.DONE, progress=100)
    state, events = detect(running(T0, health), done, T0 + timedelta(hours=1), RULES)
    assert state.health is not None and state.health.episode is None
    assert types(events) == [EventType.FINISHED]
    assert events[0].data["calls"]["total"] == 800  # a finished campaign's message tells its calls


def test_calls_data_is_not_part_of_the_events_id() -> None:
    now = T0 + timedelta(minutes=30)
    with_calls, _ = detect(running(T0, looked(records(even(50, 0.4)), now)), TASK, now, RULES, zone=UNKNOWN)
    _, a = detect(running(T0), dataclasses.replace(TASK, status=Status.DONE), now, RULES)
    _, b = detect(
        running(T0, looked(records(even(50, 0.4)), now)), dataclasses.replace(TASK, status=Status.DONE), now, RULES
    )
    assert a[0].id == b[0].id and "calls" in b[0].data and "calls" not in a[0].data
    assert with_calls.health is not None
