"""Reminders: pure schedules from the outbox's newest rows and the tasks' states, with an injected clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from watcher.model import Event, EventType, TaskSnapshot, TaskState
from watcher.reminders import due, remind, still_open
from watcher.store import Sent

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
HOUR = 3600.0


def state(status: str = "stop.abnormal", *, stalled: bool = False, missing: bool = False) -> TaskState:
    return TaskState(
        TaskSnapshot(id=7, status=status, progress=40), progress_since=T0, stalled=stalled, missing=missing
    )


def failed(at: datetime = T0) -> Event:
    return Event("origin", EventType.FAILED.value, at, "7", {"task": {"id": 7, "status": "stop.abnormal"}})


def sent(event: Event, done_at: float | None, state_: str = "delivered", seq: int = 1) -> Sent:
    return Sent(seq, state_, event.time.timestamp(), done_at, event)


@pytest.mark.parametrize(
    ("problem", "task", "open_"),
    [
        (EventType.FAILED, state("stop.abnormal"), True),
        (EventType.FAILED, state("running"), False),  # resumed
        (EventType.FAILED, state("stop.operate"), False),  # another stop: its own problem
        (EventType.TIMED_OUT, state("stop.timeout"), True),
        (EventType.STOPPED, state("stop.operate"), True),
        (EventType.STALLED, state("running", stalled=True), True),
        (EventType.STALLED, state("running"), False),  # progresses again
        (EventType.MISSING, state("running", missing=True), True),
        (EventType.MISSING, state("running"), False),  # reappeared
        (EventType.FAILED, state("stop.abnormal", missing=True), False),  # now missing: that is reminded instead
        (EventType.FINISHED, state("done"), False),  # not a problem
        (EventType.FAILED, None, False),  # forgotten
    ],
)
def test_still_open(problem: EventType, task: TaskState | None, open_: bool) -> None:
    assert still_open(problem.value, task) is open_


T = T0.timestamp()


@pytest.mark.parametrize(
    ("last", "now", "limit", "count", "next_at"),
    [
        (sent(failed(), T), T + HOUR - 1, 0, None, T + HOUR),  # not yet: due an hour after it went out
        (sent(failed(), T), T + HOUR, 0, 1, None),  # the first reminder
        (sent(failed(), None, "pending"), T + 5 * HOUR, 0, None, None),  # not out yet (held, retrying): no reminder
        (sent(failed(), T + 2 * HOUR, "dead"), T + 3 * HOUR, 0, 1, None),  # given up: reminded all the same
    ],
)
def test_due(last: Sent, now: float, limit: int, count: int | None, next_at: float | None) -> None:
    reminders, upcoming = due([last], {7: state()}, {7}, receiver="chat", now=now, every=HOUR, limit=limit)
    assert [r.data["reminder"]["count"] for r in reminders] == ([count] if count else [])
    assert upcoming == next_at


def test_reminders_stop_at_repeat_max_and_when_the_task_is_no_longer_watched() -> None:
    second = remind(failed(), state(), receiver="chat", count=2, now=T + 2 * HOUR)
    last = sent(second, T + 2 * HOUR, seq=3)
    assert due([last], {7: state()}, {7}, receiver="chat", now=T + 9 * HOUR, every=HOUR, limit=2) == ([], None)
    assert due([last], {7: state()}, {7}, receiver="chat", now=T + 9 * HOUR, every=HOUR, limit=3)[0] != []
    assert due([last], {7: state()}, set(), receiver="chat", now=T + 9 * HOUR, every=HOUR) == ([], None)


def test_a_reminder_names_its_origin_and_how_long_the_problem_has_lasted_with_the_task_as_it_is_now() -> None:
    now = T + 2.5 * HOUR
    fresher = dataclasses.replace(state(), snapshot=TaskSnapshot(id=7, status="stop.abnormal", progress=41))
    first = remind(failed(), fresher, receiver="chat", count=1, now=now)
    assert first.type == EventType.FAILED.value and first.subject == "7"
    assert first.data["reminder"] == {"count": 1, "of": "origin", "since": T0.isoformat(), "lastedSeconds": 9000}
    assert first.data["task"]["progress"] == 41
    # The second counts from the problem's start too, and keeps the origin's id.
    second = remind(first, fresher, receiver="chat", count=2, now=now + HOUR)
    assert second.data["reminder"]["of"] == "origin"
    assert second.data["reminder"]["lastedSeconds"] == 9000 + 3600
    assert "reminder" not in failed().data


def test_a_reminder_id_is_a_function_of_origin_receiver_and_number() -> None:
    """Two replicas (or a restart) recording the same reminder record one row: the ids are equal."""
    a = remind(failed(), state(), receiver="chat", count=1, now=T + HOUR)
    b = remind(failed(), state(), receiver="chat", count=1, now=T + HOUR + 7)
    assert a.id == b.id
    assert a.id != remind(failed(), state(), receiver="mail", count=1, now=T + HOUR).id
    assert a.id != remind(failed(), state(), receiver="chat", count=2, now=T + HOUR).id


def test_a_stall_is_reminded_of_from_when_it_began() -> None:
    since = (T0 - timedelta(minutes=15)).isoformat()
    stalled = Event("s", EventType.STALLED.value, T0, "7", {"stalledSince": since, "stalledForSeconds": 900})
    reminder = remind(stalled, state("running", stalled=True), receiver="chat", count=1, now=T + HOUR)
    assert reminder.data["reminder"]["lastedSeconds"] == 3600 + 900
    assert reminder.data["stalledForSeconds"] == 3600 + 900  # the headline says how long, as of now
