"""Pure detection: (previous state, current snapshot, now) -> (next state, events). No I/O, no clock, no randomness."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from .calllog import CallRecord
from .health import FIRST_LOOK_BACK, AnswerRateDropped, CallHealth, HealthRules, calls_last_hour, observe, silent_for
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
    health: HealthRules = dataclasses.field(default_factory=HealthRules)  # `[health]`: how the call log is judged


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
    health = previous.health
    if health is not None and health.episode is not None and current.status == Status.DONE:
        # A done task is final: a collapse of its answer rate ends without a notice (`finished` is the news).
        health = dataclasses.replace(health, episode=None, streak=0)
    state = TaskState(
        current,
        progress_since=now if moved else previous.progress_since,
        stalled=False if moved else previous.stalled,
        windows_doubted_at=doubted_at,
        updated_while_closed_at=updated_at,
        health=health,
    )
    state, stalled = _stall(state, before, now, rules, zone)
    holding, changed = _rules(rules.task_rules, previous.rules, current, before, now)
    events = _with_calls(events + stalled + changed, state.health, now)
    return dataclasses.replace(state, rules=holding), _zoned(events, zone)


def detect_calls(
    previous: TaskState, calls: Sequence[CallRecord], now: datetime, rules: Rules, *, zone: Zone = UNKNOWN
) -> tuple[TaskState, list[Event]]:
    """Take one look at a task's call log (its records between the look's range, see `health.look_range`): the new
    state and the events it implies: the answered share collapsing or back (`answer_rate_dropped`, `_recovered`),
    a stall seen as no call started for `stall_after`, or its end when calls start again.

    The task's snapshot is the latest poll's: the call log changes no status.
    """
    current = previous.snapshot
    health, findings = observe(previous.health, calls, now, rules.health)
    events: list[Event] = []
    for finding in findings:
        if isinstance(finding, AnswerRateDropped):
            events.append(
                make_event(EventType.ANSWER_RATE_DROPPED, now, current, current, answerRate=finding.to_dict())
            )
        else:
            resolves = {
                "type": EventType.ANSWER_RATE_DROPPED.value,
                "since": finding.since.isoformat(),
                "lastedSeconds": int((finding.until - finding.since).total_seconds()),
            }
            events.append(
                make_event(
                    EventType.ANSWER_RATE_RECOVERED,
                    now,
                    current,
                    current,
                    answerRate=finding.to_dict(),
                    resolves=resolves,
                )
            )
    state = dataclasses.replace(previous, health=health)
    known_start = previous.health.last_start if previous.health is not None else None
    latest = health.last_start
    if (
        previous.stalled
        and latest is not None
        and (known_start is None or latest > known_start)
        and latest > previous.progress_since
    ):
        # Calls start again: the stall is over, whatever it rested on; its clock restarts at the latest call.
        events.append(
            make_event(
                EventType.UNSTALLED,
                now,
                current,
                current,
                evidence="calllog",
                resolves=_lasted(EventType.STALLED, previous.progress_since, now),
            )
        )
        state = dataclasses.replace(state, stalled=False, progress_since=latest)
    state, stalled = _stall(state, current, now, rules, zone)
    return state, _zoned(_with_calls(events + stalled, health, now), zone)


def _stall(
    state: TaskState, before: TaskSnapshot, now: datetime, rules: Rules, zone: Zone
) -> tuple[TaskState, list[Event]]:
    """A running task inside its window, not stalled yet: is it now? On the call log's evidence where the call log
    tells (no call started for `stall_after`, however its progress moves), else on its progress (flat that long)."""
    current = state.snapshot
    if current.status != Status.RUNNING or state.stalled:
        return state, []
    windows = calling_windows(state, now, zone.tz)
    if not windows.open:
        return state, []  # never outside a window it cannot call in
    # Since when the task has had the chance to progress (and to call) and did not.
    since = max(state.progress_since, windows.opened_at or state.progress_since)
    silent = silent_for(state.health, now, rules.health, since=since)
    extra: dict[str, Any]
    if silent is not None and state.health is not None and state.health.last_look is not None:
        if silent < rules.stall_after:
            return state, []  # calling: a flat percentage of a big campaign is no stall
        quiet_since = state.health.last_look - silent
        last_call = state.health.last_start
        extra = {
            "evidence": "calllog",
            "stalledSince": quiet_since.isoformat(),
            "stalledForSeconds": int(silent.total_seconds()),
            "silentForSeconds": int(silent.total_seconds()),
            "lastCallAt": last_call.isoformat() if last_call is not None else None,
        }
    else:
        if now - since < rules.stall_after:
            return state, []
        extra = {
            "evidence": "progress",
            "stalledSince": since.isoformat(),
            "stalledForSeconds": int((now - since).total_seconds()),
        }
    if current.has_schedule:
        # On what the stall clock rested: windows placed in a zone, or not placed (unknown zone: the key that fixes
        # it), or ignored because the task was seen calling outside them.
        extra["windows"] = {
            "zone": zone.name,
            "zoneSource": zone.source.value,
            "placed": windows.placed,
            "doubted": windows.doubted,
            **({} if windows.placed else {"fix": "watch.timezone"}),
        }
    event = make_event(EventType.STALLED, now, current, before, **extra)
    return dataclasses.replace(state, stalled=True), [event]


def calls_data(health: CallHealth | None, now: datetime) -> dict[str, Any] | None:
    """What a task event tells of its calls (`data.calls`): counts and times, None while the call log is unread."""
    if health is None or health.first_look is None:
        return None
    hour_calls, hour_answered = calls_last_hour(health, now)
    return {
        "since": (health.first_look - FIRST_LOOK_BACK).isoformat(),
        "total": health.calls,
        "answered": health.answered,
        "lastHour": {"calls": hour_calls, "answered": hour_answered},
        "answerRate": health.rate,
        "lastCallAt": health.last_start.isoformat() if health.last_start is not None else None,
    }


def _with_calls(events: list[Event], health: CallHealth | None, now: datetime) -> list[Event]:
    """The events with what is known of the task's calls (`data.calls`); not part of an event's id."""
    if not events:
        return events  # (most polls: nothing to tell, nothing to count)
    calls = calls_data(health, now)
    if calls is None:
        return events
    return [dataclasses.replace(e, data={**e.data, "calls": calls}) for e in events]


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
