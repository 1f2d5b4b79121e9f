"""Reminders of problems that last: pure, from the outbox and the tasks' states.

A notifier with `repeat_every` hears again of a task that stays failed, timed out, stopped, stalled or missing, or whose
answer rate stays collapsed. The
outbox is the reminders' only memory: the newest row of each (task, problem) for the receiver says when it was last
told and how many reminders it has had, so a restart neither forgets a reminder nor sends one twice; a reminder's id
is a function of the problem's first event, the receiver and its number, so two replicas racing to record one record
it once. A reminder falls due `repeat_every` after the previous notice was settled (delivered, or given up): a notice
held by quiet hours or retried is not reminded of before it went out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .detect import calls_data
from .health import confirmed
from .model import Event, EventType, Status, TaskState
from .store import Sent

# A status problem lasts while the task keeps that status.
_STATUS_OF = {
    EventType.FAILED: Status.STOP_ABNORMAL,
    EventType.TIMED_OUT: Status.STOP_TIMEOUT,
    EventType.STOPPED: Status.STOP_OPERATE,
}
TASK_PROBLEMS: tuple[str, ...] = (
    *(t.value for t in _STATUS_OF),
    EventType.STALLED.value,
    EventType.MISSING.value,
    EventType.ANSWER_RATE_DROPPED.value,
)

_NAMESPACE = uuid.UUID("0b7d6e52-4f0c-4b8e-9f5e-2c1f5d9a7a31")


def still_open(problem: str, state: TaskState | None, now: datetime | None = None) -> bool:
    """Whether a task is still in the problem an event of type `problem` announced (as of `now`, when given: a
    collapse of the answer rate lasts while looks at the call log keep confirming it)."""
    if state is None:
        return False
    if problem == EventType.STALLED:
        return state.stalled and not state.missing
    if problem == EventType.MISSING:
        return state.missing
    if problem == EventType.ANSWER_RATE_DROPPED:
        # The collapse lasts while the call health holds its episode and the task calls (a stopped task is reminded
        # of as stopped, a missing one as missing).
        return (
            state.health is not None
            and state.health.episode is not None
            and state.snapshot.status == Status.RUNNING
            and not state.missing
            and (now is None or confirmed(state.health, now))
        )
    status = _STATUS_OF.get(EventType(problem)) if problem in TASK_PROBLEMS else None
    return status is not None and state.snapshot.status == status and not state.missing


def _reminder_of(event: Event) -> Mapping[str, Any]:
    reminder = event.data.get("reminder")
    return reminder if isinstance(reminder, Mapping) else {}


def _since(event: Event) -> datetime:
    """When the problem began: as a reminder says, as a stall says, as a collapse of the answer rate says, or the
    event's own time."""
    rate = event.data.get("answerRate") if event.type == EventType.ANSWER_RATE_DROPPED else None
    for value in (
        _reminder_of(event).get("since"),
        event.data.get("stalledSince"),
        rate.get("since") if isinstance(rate, Mapping) else None,
    ):
        if isinstance(value, str):
            try:
                since = datetime.fromisoformat(value)
            except ValueError:
                continue
            if since.tzinfo is not None:  # (a time without its zone is no instant: it cannot be subtracted from now)
                return since
    return event.time


def due(
    latest: Sequence[Sent],
    states: Mapping[int, TaskState],
    watched: Collection[int],
    *,
    receiver: str,
    now: float,
    every: float,
    limit: int = 0,
) -> tuple[list[Event], float | None]:
    """The reminders due now for one receiver, and when the next one will fall due (None: none is in sight).

    `latest` is the receiver's newest row per (task, problem type) (`StateStore.latest`); `watched` the tasks still
    watched: a task taken out of the config is reminded of no more."""
    reminders: list[Event] = []
    upcoming: list[float] = []
    for last in latest:
        task_id = int(last.event.subject) if last.event.subject.isdigit() else None
        if (
            task_id is None
            or task_id not in watched
            or not still_open(last.event.type, states.get(task_id), datetime.fromtimestamp(now, UTC))
        ):
            continue
        if last.state == "pending" or last.done_at is None:
            continue  # not out yet (held, retrying): the next reminder counts from when it went out
        count = _reminder_of(last.event).get("count")
        count = count if isinstance(count, int) and not isinstance(count, bool) else 0
        if limit and count >= limit:
            continue
        at = last.done_at + every
        if at > now:
            upcoming.append(at)
            continue
        reminders.append(remind(last.event, states[task_id], receiver=receiver, count=count + 1, now=now))
    return reminders, min(upcoming) if upcoming else None


def remind(last: Event, state: TaskState, *, receiver: str, count: int, now: float) -> Event:
    """Reminder number `count` of the problem `last` announced (or last reminded of), with the task as it is now."""
    origin = _reminder_of(last).get("of")
    origin = origin if isinstance(origin, str) else last.id
    since = _since(last)
    when = datetime.fromtimestamp(now, UTC)
    data = {key: value for key, value in last.data.items() if key != "reminder"}
    data["task"] = state.snapshot.to_dict()
    lasted = max(0, int((when - since).total_seconds()))
    if "stalledForSeconds" in data:
        data["stalledForSeconds"] = lasted  # the headline's "no progress for ..." as of now
    if "silentForSeconds" in data:
        data["silentForSeconds"] = lasted  # (a stall the call log showed: "no call started for ...", equally)
    # A reminder hours later must not repeat the first notice's figures as the last hour's: as the task is now.
    calls = calls_data(state.health, when)
    if calls is not None:
        data["calls"] = calls
    else:
        data.pop("calls", None)
    data["reminder"] = {"count": count, "of": origin, "since": since.isoformat(), "lastedSeconds": lasted}
    return Event(
        id=str(uuid.uuid5(_NAMESPACE, f"{origin}|{receiver}|{count}")),
        type=last.type,
        time=when,
        subject=last.subject,
        data=data,
    )
