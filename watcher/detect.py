"""Pure detection: (previous state, current snapshot, now) -> (next state, events). No I/O, no clock, no randomness."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, tzinfo
from typing import Any

from .model import Event, EventType, Status, TaskSnapshot, TaskState
from .schedule import window_state

# Event ids are derived from what the event is, so detection stays a pure function; the outbox stores them, so a
# redelivery after a crash carries the same id.
_ID_NAMESPACE = uuid.UUID("5d1c7f0e-8f7b-4c53-9a39-3f0b7b1c2e11")

_STOP_STATUSES = frozenset({Status.STOP_OPERATE, Status.STOP_TIMEOUT, Status.STOP_ABNORMAL})

# A status change *to* one of these is named by the new status alone.
_TERMINAL_EVENTS = {
    Status.DONE: EventType.FINISHED,
    Status.STOP_OPERATE: EventType.STOPPED,
    Status.STOP_TIMEOUT: EventType.TIMED_OUT,
    Status.STOP_ABNORMAL: EventType.FAILED,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """The detection knobs from `[watch]`."""

    progress_step: int = 10  # 0 turns `progressed` off
    stall_after: timedelta = timedelta(minutes=15)
    timezone: tzinfo | None = None  # of the calling windows; None: the host's


def transition_type(previous: str, current: str) -> EventType:
    """Name the change of status `previous` -> `current` (the two differ)."""
    if current in _TERMINAL_EVENTS:
        return _TERMINAL_EVENTS[Status(current)]
    if current == Status.RUNNING and previous == Status.PENDING:
        return EventType.STARTED
    if current == Status.RUNNING and previous in _STOP_STATUSES:
        return EventType.RESUMED
    return EventType.CHANGED


def make_event(
    type_: EventType, now: datetime, snapshot: TaskSnapshot, previous: TaskSnapshot | None, **extra: Any
) -> Event:
    """Build an event whose id is a stable function of its content."""
    key = "|".join(
        [str(snapshot.id), type_.value, now.isoformat(), previous.status if previous else "", snapshot.status]
        + [f"{k}={v}" for k, v in sorted(extra.items())]
    )
    data: dict[str, Any] = {
        "task": snapshot.to_dict(),
        "previous": {"status": previous.status, "progress": previous.progress} if previous else None,
    }
    data.update(extra)
    return Event(
        id=str(uuid.uuid5(_ID_NAMESPACE, key)), type=type_.value, time=now, subject=str(snapshot.id), data=data
    )


def detect(
    previous: TaskState | None, current: TaskSnapshot, now: datetime, rules: Rules
) -> tuple[TaskState, list[Event]]:
    """Compare a fresh snapshot with what was known and return the new state and the events it implies."""
    if previous is None:
        # First sight: we know nothing of its history, so no transition is invented; the stall clock starts now.
        return TaskState(current, progress_since=now), [make_event(EventType.OBSERVED, now, current, None)]

    before = previous.snapshot
    events: list[Event] = []
    status_changed = current.status != before.status
    progress_changed = current.progress != before.progress

    if status_changed:
        events.append(make_event(transition_type(before.status, current.status), now, current, before))

    if (
        rules.progress_step > 0
        and current.status not in _TERMINAL_EVENTS  # `finished` or `failed` already tells the final progress
        and before.progress is not None
        and current.progress is not None
        and current.progress // rules.progress_step > before.progress // rules.progress_step
    ):
        milestone = current.progress // rules.progress_step * rules.progress_step
        events.append(make_event(EventType.PROGRESSED, now, current, before, milestone=milestone))

    if status_changed or progress_changed:
        state = TaskState(current, progress_since=now)
    else:
        state = TaskState(current, progress_since=previous.progress_since, stalled=previous.stalled)

    stalled_since = (
        _stall_clock_start(current, state.progress_since, now, rules)
        if current.status == Status.RUNNING and not state.stalled
        else None
    )
    if stalled_since is not None and now - stalled_since >= rules.stall_after:
        stalled_for = int((now - stalled_since).total_seconds())
        events.append(
            make_event(
                EventType.STALLED,
                now,
                current,
                before,
                stalledSince=stalled_since.isoformat(),
                stalledForSeconds=stalled_for,
            )
        )
        state = dataclasses.replace(state, stalled=True)
    return state, events


def _stall_clock_start(
    snapshot: TaskSnapshot, progress_since: datetime, now: datetime, rules: Rules
) -> datetime | None:
    """Since when a running task has had the chance to progress and did not; None outside its calling windows."""
    if not snapshot.windows and not snapshot.start_date:
        return progress_since
    windows = window_state(snapshot, now, rules.timezone)
    if not windows.open or windows.opened_at is None:
        return None  # it cannot progress outside its windows: never stalled there
    return max(progress_since, windows.opened_at)


def detect_missing(previous: TaskState | None, now: datetime) -> tuple[TaskState | None, list[Event]]:
    """The API answered 404: announce it once for a task it served before; a never-seen task yields nothing."""
    if previous is None or previous.missing:
        return previous, []
    event = make_event(EventType.MISSING, now, previous.snapshot, previous.snapshot)
    return dataclasses.replace(previous, missing=True), [event]
