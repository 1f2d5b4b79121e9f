"""Pure detection: (previous state, current snapshot, now) -> (next state, events). No I/O, no clock, no randomness."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta
from typing import Any

from .model import Event, EventType, Status, TaskSnapshot, TaskState
from .rules import Rule, evaluated
from .schedule import DOUBT_FOR, Evidence, calling_windows, closed_between, contradicts
from .zone import UNKNOWN, Zone

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
    """The detection knobs from `[watch]`, and the compiled `[[rules]]` on task values."""

    progress_step: int = 10  # 0 turns `progressed` off
    stall_after: timedelta = timedelta(minutes=15)
    task_rules: tuple[Rule, ...] = ()


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
    previous: TaskState | None,
    current: TaskSnapshot,
    now: datetime,
    rules: Rules,
    *,
    zone: Zone = UNKNOWN,
    previous_look: datetime | None = None,
) -> tuple[TaskState, list[Event]]:
    """Compare a fresh snapshot with what was known and return the new state and the events it implies.

    `zone` is where the task's calling windows are read (unknown: they silence no stall); `previous_look` is when the
    task was last polled, if known, to tell a change inside a window believed closed (evidence against the model).
    """
    if previous is None:
        # First sight: we know nothing of its history, so no transition is invented; the stall clock starts now. But a
        # campaign already stopped or failed is news to whoever would have heard of the stop: say so to them too.
        first = [make_event(EventType.OBSERVED, now, current, None)]
        if current.status in _STOP_STATUSES:
            first.append(make_event(_TERMINAL_EVENTS[Status(current.status)], now, current, None, firstSight=True))
        holding, matched = _rules(rules.task_rules, (), current, None, now)
        return TaskState(current, progress_since=now, rules=holding), _zoned(first + matched, zone)

    before = previous.snapshot
    events: list[Event] = []
    status_changed = current.status != before.status
    progress_changed = current.progress != before.progress

    if previous.missing:
        # The API serves it again after saying twice that it does not know it: that problem is over.
        events.append(
            make_event(EventType.REAPPEARED, now, current, before, resolves={"type": EventType.MISSING.value})
        )

    if status_changed:
        change = transition_type(before.status, current.status)
        if change is EventType.RESUMED:
            # The stop is over; how long it lasted is counted from when the status (or progress) last moved.
            events.append(make_event(change, now, current, before, resolves=_resolved(before.status, previous, now)))
        else:
            events.append(make_event(change, now, current, before))

    if (
        rules.progress_step > 0
        and current.status not in _TERMINAL_EVENTS  # `finished` or `failed` already tells the final progress
        and before.progress is not None
        and current.progress is not None
        and current.progress // rules.progress_step > before.progress // rules.progress_step
    ):
        milestone = current.progress // rules.progress_step * rules.progress_step
        events.append(make_event(EventType.PROGRESSED, now, current, before, milestone=milestone))

    doubted_at, updated_at = previous.windows_doubted_at, previous.updated_while_closed_at
    evidence = contradicts(before, current, previous_look, now, zone.tz)
    if evidence is Evidence.UPDATED and not (
        updated_at is not None and closed_between(current, updated_at, now, zone.tz)
    ):
        updated_at, evidence = now, Evidence.NONE  # once may be an operator's edit: it counts when it repeats
    if evidence is not Evidence.NONE:
        doubted_at, updated_at = now, None  # evidence beats the model: seen at work where its windows said it can't
    elif doubted_at is not None and now - doubted_at >= DOUBT_FOR:
        doubted_at = None  # the model has been right for a full cycle: its windows count again
    moved = status_changed or progress_changed
    if previous.stalled and moved and current.status not in _TERMINAL_EVENTS:
        # The stall is over (a status that ends the campaign says so itself: `finished`, `failed`...).
        events.append(
            make_event(
                EventType.UNSTALLED,
                now,
                current,
                before,
                resolves=_lasted(EventType.STALLED, previous.progress_since, now),
            )
        )
    state = TaskState(
        current,
        progress_since=now if moved else previous.progress_since,
        stalled=False if moved else previous.stalled,
        windows_doubted_at=doubted_at,
        updated_while_closed_at=updated_at,
    )

    if current.status == Status.RUNNING and not state.stalled:
        windows = calling_windows(state, now, zone.tz)
        # Since when the task has had the chance to progress and did not: never outside a window it cannot call in.
        since = None if not windows.open else max(state.progress_since, windows.opened_at or state.progress_since)
        if since is not None and now - since >= rules.stall_after:
            extra: dict[str, Any] = {
                "stalledSince": since.isoformat(),
                "stalledForSeconds": int((now - since).total_seconds()),
            }
            if current.has_schedule:
                # On what the stall clock rested: windows placed in a zone, or not placed (unknown zone: the key that
                # fixes it), or ignored because the task was seen calling outside them.
                extra["windows"] = {
                    "zone": zone.name,
                    "zoneSource": zone.source.value,
                    "placed": windows.placed,
                    "doubted": windows.doubted,
                    **({} if windows.placed else {"fix": "watch.timezone"}),
                }
            events.append(make_event(EventType.STALLED, now, current, before, **extra))
            state = dataclasses.replace(state, stalled=True)
    holding, changed = _rules(rules.task_rules, previous.rules, current, before, now)
    return dataclasses.replace(state, rules=holding), _zoned(events + changed, zone)


def _rules(
    rules: tuple[Rule, ...],
    holding: tuple[tuple[str, datetime], ...],
    current: TaskSnapshot,
    before: TaskSnapshot | None,
    now: datetime,
) -> tuple[tuple[tuple[str, datetime], ...], list[Event]]:
    """The rules holding after this answer, and their events: `rule_matched` when one starts to hold (once per
    episode: `holding` remembers it), `rule_resolved` when it stops."""
    if not evaluated(current):
        # A done task is final: its episodes end without a notice (nothing got better; `finished` is the news).
        return (), []
    since_of = dict(holding)  # (a rule no longer configured is dropped: it neither holds nor resolves)
    now_holding: dict[str, datetime] = {}
    events: list[Event] = []
    for rule in rules:
        verdict = rule.evaluate(current)
        since = since_of.get(rule.name)
        if verdict.holds is None:
            # Unknown (a value absent from this answer, an evaluation error): what was known stands, so one odd
            # answer neither fires a rule nor resolves it.
            if since is not None:
                now_holding[rule.name] = since
        elif verdict.holds:
            if since is None:
                first = {"firstSight": True} if before is None else {}
                events.append(
                    make_event(EventType.RULE_MATCHED, now, current, before, rule=rule.data(verdict), **first)
                )
            now_holding[rule.name] = since or now
        elif since is not None:
            resolves = _lasted(EventType.RULE_MATCHED, since, now)
            events.append(
                make_event(EventType.RULE_RESOLVED, now, current, before, rule=rule.data(verdict), resolves=resolves)
            )
    return tuple(sorted(now_holding.items())), events


def _lasted(problem: EventType, since: datetime, now: datetime) -> dict[str, Any]:
    return {"type": problem.value, "since": since.isoformat(), "lastedSeconds": int((now - since).total_seconds())}


def _resolved(stopped: str, previous: TaskState, now: datetime) -> dict[str, Any]:
    # `resumed` follows only a stop status (transition_type), each of which names its problem.
    return _lasted(_TERMINAL_EVENTS[Status(stopped)], previous.progress_since, now)


def _zoned(events: list[Event], zone: Zone) -> list[Event]:
    """The events with the campaigns' zone they were seen in (`data.timeZone`), so that people read their times
    there; not part of an event's id, which stays a function of what happened."""
    if not zone.known or not events:
        return events
    return [dataclasses.replace(e, data={**e.data, "timeZone": zone.name}) for e in events]


def detect_missing(previous: TaskState | None, now: datetime) -> tuple[TaskState | None, list[Event]]:
    """The API answered 404: announce it once for a task it served before; a never-seen task yields nothing."""
    if previous is None or previous.missing:
        return previous, []
    event = make_event(EventType.MISSING, now, previous.snapshot, previous.snapshot)
    return dataclasses.replace(previous, missing=True), [event]
