"""Reminders: pure schedules from the outbox's newest rows and the tasks' states, with an injected clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from watcher.health import FIRST_LOOK_BACK, AnswerRateDropped, CallHealth
from watcher.model import Event, EventType, TaskSnapshot, TaskState
from watcher.reminders import TASK_PROBLEMS, due, remind, still_open
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


# -- a collapsed answer rate ---------------------------------------------------------------------------------------

EPISODE = AnswerRateDropped(T0 - timedelta(minutes=30), before=0.41, after=0.03, calls=100, baseline_calls=1250)


def health(*, episode: AnswerRateDropped | None = EPISODE) -> CallHealth:
    """A task's call health as looks left it: 40 calls (2 answered) in the minute before T0."""
    minute = int((T0 - timedelta(minutes=1)).timestamp()) // 60 * 60
    return CallHealth(
        first_look=T0 - timedelta(hours=2),
        last_look=T0,
        last_start=T0 - timedelta(seconds=20),
        window=(True,) * 3 + (False,) * 97,
        episode=episode,
        hourly=((minute, 40, 2),),
        calls=900,
        answered=300,
    )


def running(*, health_: CallHealth | None = None, missing: bool = False) -> TaskState:
    return TaskState(
        TaskSnapshot(id=7, status="running", progress=40), progress_since=T0, missing=missing, health=health_
    )


def dropped(data: dict[str, Any] | None = None) -> Event:
    rate = {"since": EPISODE.since.isoformat(), "before": 0.41, "after": 0.03, "calls": 100, "baselineCalls": 1250}
    default = {"task": {"id": 7, "status": "running"}, "answerRate": rate}
    return Event("drop", EventType.ANSWER_RATE_DROPPED.value, T0, "7", default if data is None else data)


@pytest.mark.parametrize(
    ("task", "open_"),
    [
        (running(health_=health()), True),  # the call health still holds the episode
        (running(health_=health(episode=None)), False),  # recovered
        (running(), False),  # the call log was never read (or no longer is): nothing says it lasts
        (running(health_=health(), missing=True), False),  # missing: that is reminded of instead
        (dataclasses.replace(running(health_=health()), snapshot=TaskSnapshot(7, "stop.operate")), False),  # stopped
        (None, False),  # forgotten
    ],
)
def test_a_collapsed_answer_rate_is_open_while_the_call_health_holds_its_episode(
    task: TaskState | None, open_: bool
) -> None:
    assert still_open(EventType.ANSWER_RATE_DROPPED.value, task) is open_


def test_a_collapse_no_look_has_confirmed_for_half_an_hour_is_not_reminded_of() -> None:
    # The call log refused, switched off or failing: nobody measures the answer rate, so nobody is reminded of it.
    state = running(health_=health())  # last looked at T0
    assert still_open(EventType.ANSWER_RATE_DROPPED.value, state, T0 + timedelta(minutes=30))
    assert not still_open(EventType.ANSWER_RATE_DROPPED.value, state, T0 + timedelta(minutes=31))
    reminders, _ = due([sent(dropped(), T)], {7: state}, {7}, receiver="chat", now=T + HOUR, every=HOUR)
    assert reminders == []


def test_answer_rate_dropped_is_a_task_problem_reminded_of() -> None:
    assert EventType.ANSWER_RATE_DROPPED.value in TASK_PROBLEMS


def test_a_reminder_of_a_collapse_counts_from_its_since_and_shows_the_calls_as_they_are_now() -> None:
    stale = {"since": "2026-11-23T07:00:00+00:00", "total": 5, "answered": 5, "lastHour": {"calls": 5, "answered": 5}}
    event = dropped(dropped().data | {"calls": stale})
    looked = dataclasses.replace(health(), last_look=T0 + timedelta(hours=1))  # a look confirms it lasts
    reminders, _ = due([sent(event, T)], {7: running(health_=looked)}, {7}, receiver="chat", now=T + HOUR, every=HOUR)
    (reminder,) = reminders
    assert reminder.type == EventType.ANSWER_RATE_DROPPED.value
    assert reminder.data["reminder"] == {
        "count": 1,
        "of": "drop",
        "since": EPISODE.since.isoformat(),
        "lastedSeconds": 5400,  # from the call it was judged at (30 min before the event), not the event
    }
    assert reminder.data["answerRate"] == event.data["answerRate"]  # what was judged stays as judged
    assert reminder.data["calls"] == {
        "since": (T0 - timedelta(hours=2) - FIRST_LOOK_BACK).isoformat(),  # the first look read an hour back
        "total": 900,
        "answered": 300,
        "lastHour": {"calls": 0, "answered": 0},  # the calls before T0 are more than an hour old by now
        "answerRate": 0.03,
        "lastCallAt": (T0 - timedelta(seconds=20)).isoformat(),
    }
    at_once = remind(event, running(health_=health()), receiver="chat", count=1, now=T + 30)
    assert at_once.data["calls"]["lastHour"] == {"calls": 40, "answered": 2}


def test_a_reminder_drops_call_figures_it_cannot_bring_up_to_date() -> None:
    event = dropped(dropped().data | {"calls": {"total": 5}})
    assert "calls" not in remind(event, running(), receiver="chat", count=1, now=T + HOUR).data


@pytest.mark.parametrize(
    "rate",
    [None, "2026-11-23", {"since": "yesterday"}, {"since": 12}, {"since": "2026-11-23T08:30:00"}],
    ids=["absent", "not a mapping", "not a time", "not a string", "no zone"],
)
def test_a_collapse_whose_since_is_unreadable_counts_from_the_event(rate: Any) -> None:
    event = dropped({"task": {"id": 7}} | ({} if rate is None else {"answerRate": rate}))
    reminder = remind(event, running(health_=health()), receiver="chat", count=1, now=T + HOUR)
    assert reminder.data["reminder"]["since"] == T0.isoformat()
    assert reminder.data["reminder"]["lastedSeconds"] == 3600


def test_a_reminder_of_a_stall_the_call_log_showed_brings_its_silence_up_to_date() -> None:
    data = {
        "task": {"id": 7, "status": "running"},
        "stalledSince": "2026-11-23T08:40:00+00:00",
        "stalledForSeconds": 1200,
        "evidence": "calllog",
        "silentForSeconds": 1200,
        "lastCallAt": "2026-11-23T08:40:00+00:00",
    }
    event = Event("stall", EventType.STALLED.value, T0, "7", data)
    state_ = dataclasses.replace(running(), stalled=True)
    reminder = remind(event, state_, receiver="chat", count=1, now=T + HOUR)
    assert reminder.data["stalledForSeconds"] == reminder.data["silentForSeconds"] == 4800
    assert reminder.data["evidence"] == "calllog"
