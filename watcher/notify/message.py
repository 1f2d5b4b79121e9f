"""What an event means to a person, decided once: a typed view of an event, and the message every channel renders.

`EventView.of(event)` reads an event's `data` once, tolerantly (an event written by an older version, or odd values,
give empty fields, never an exception). `build(event, ...)` turns it into a `Message`: a severity, a headline, facts,
details and a footer, in one language, all plain text. A channel only renders a `Message` in its own format (Block
Kit, markdown, an Adaptive Card, an email); it never looks into `event.data` itself.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any

from ..health import as_share
from ..i18n import DEFAULT_LANGUAGE, N_, NP_, Translator, translator
from ..model import EventType, Status, clean_text
from ..zone import Zone


class Severity(StrEnum):
    """How much an event asks of a person."""

    INFO = "info"
    GOOD = "good"
    WARNING = "warning"
    DANGER = "danger"


# -- the typed view --------------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str:
    return clean_text(value) if isinstance(value, str) else ""  # (events stored by an older version, too)


def _seconds(value: Any) -> int:
    return max(0, _int(value) or 0)  # a duration: never negative, 0 when absent or odd


def _time(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None  # a time without its zone is no instant


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _count(value: Any) -> int | None:
    count = _int(value)
    return count if count is not None and count >= 0 else None  # a count of calls: never negative


def _ratio(part: int | None, whole: int | None) -> float | None:
    """`part` of `whole` as a share; None when either is unknown, `whole` is 0 or the part is larger."""
    if part is None or whole is None or whole == 0 or part > whole:
        return None
    return part / whole


@dataclasses.dataclass(frozen=True, slots=True)
class TaskView:
    """The task as the event carries it (only what is safe to show)."""

    id: int
    name: str
    status: str
    progress: int | None
    total: int | None
    collection_rate: int | None
    summary: str
    suggestion: str

    @classmethod
    def of(cls, d: Mapping[str, Any], subject: str) -> TaskView:
        """From an event's `data.task`."""
        task_id = _int(d.get("id"))
        return cls(
            id=task_id if task_id is not None else (int(subject) if subject.isascii() and subject.isdecimal() else 0),
            name=_str(d.get("name")),
            status=_str(d.get("status")),
            progress=_int(d.get("progress")),
            total=_int(d.get("total")),
            collection_rate=_int(d.get("collectionRate")),
            summary=_str(d.get("summary")),
            suggestion=_str(d.get("suggestion")),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StallView:
    """How long a task has been stalled, and what the stall clock rested on."""

    seconds: int
    windows_placed: bool = True  # False: the zone was unknown, so its calling windows were not used
    windows_doubted: bool = False  # it was seen calling outside them, so they were not relied on
    fix: str = "watch.timezone"
    # What showed the stall: "calllog" (no call started for `seconds`) or "progress" (progress flat; older events).
    evidence: str = "progress"
    last_call: datetime | None = None  # calllog: when the latest call started (None: none was seen)

    @property
    def by_calls(self) -> bool:
        """Whether the call log showed the stall (no call started), rather than flat progress."""
        return self.evidence == "calllog"


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerRateView:
    """The answered share of a task's calls that collapsed, or recovered (`data.answerRate`); None where unknown."""

    since: datetime | None  # the call at which the collapse was judged
    until: datetime | None  # recovered: the call at which the recovery was judged
    before: float | None  # the task's own earlier share, 0..1
    after: float | None  # the share over the window that collapsed
    now: float | None  # recovered: the share now
    calls: int | None  # calls in the window `after` (or `now`) rests on
    baseline_calls: int | None  # calls `before` rests on
    seconds: int | None  # recovered: how long the share was low

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> AnswerRateView:
        """From an event's `data.answerRate`."""
        lasted = _int(d.get("lastedSeconds"))
        return cls(
            since=_time(d.get("since")),
            until=_time(d.get("until")),
            before=as_share(d.get("before")),
            after=as_share(d.get("after")),
            now=as_share(d.get("now")),
            calls=_count(d.get("calls")),
            baseline_calls=_count(d.get("baselineCalls")),
            seconds=max(0, lasted) if lasted is not None else None,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CallsView:
    """What the call log showed of the task (`data.calls`): counts and times only; None where unknown."""

    since: datetime | None  # from when the watcher counted
    total: int | None
    answered: int | None
    last_hour_calls: int | None
    last_hour_answered: int | None
    rate: float | None  # the answered share over the recent window of calls
    last_call: datetime | None

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> CallsView:
        """From an event's `data.calls`."""
        hour = _mapping(d.get("lastHour")) or {}
        total, answered = _count(d.get("total")), _count(d.get("answered"))
        hour_calls, hour_answered = _count(hour.get("calls")), _count(hour.get("answered"))
        return cls(
            since=_time(d.get("since")),
            total=total,
            answered=answered if total is None or answered is None or answered <= total else None,
            last_hour_calls=hour_calls,
            last_hour_answered=hour_answered
            if hour_calls is None or hour_answered is None or hour_answered <= hour_calls
            else None,
            rate=as_share(d.get("answerRate")),
            last_call=_time(d.get("lastCallAt")),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class OutageView:
    """The API's unreachability (or its end)."""

    seconds: int
    cause: str  # "authentication", "unreachable or failing", or "" (events from older versions)


@dataclasses.dataclass(frozen=True, slots=True)
class ResolvesView:
    """The problem an event ends (`data.resolves`): its type, when it began and how long it lasted."""

    type: str  # "voicefox.task.stalled"...; "" when an older or odd event does not say
    since: datetime | None
    seconds: int

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> ResolvesView:
        """From an event's `data.resolves`."""
        return cls(type=_str(d.get("type")), since=_time(d.get("since")), seconds=_seconds(d.get("lastedSeconds")))


@dataclasses.dataclass(frozen=True, slots=True)
class ReminderView:
    """A problem told again while it lasts (`data.reminder`): which reminder, of which event, since when."""

    count: int  # 1 for the first reminder
    origin: str  # `of`: the id of the event that first told the problem
    since: datetime | None
    seconds: int

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> ReminderView:
        """From an event's `data.reminder`."""
        return cls(
            count=max(1, _int(d.get("count")) or 1),
            origin=_str(d.get("of")),
            since=_time(d.get("since")),
            seconds=_seconds(d.get("lastedSeconds")),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiverView:
    """A notifier whose alerts do not get through (or get through again)."""

    name: str
    kind: str
    since: datetime | None
    seconds: int  # failing for (receiver_failing), or failed for (receiver_recovered)
    dead_letters: int | None
    pending: int | None
    error: str  # the last error, as the dispatcher recorded it (credentials already hidden)

    @classmethod
    def of(cls, d: Mapping[str, Any], subject: str) -> ReceiverView:
        """From the `data` of a receiver event."""
        seconds = d.get("failingForSeconds", d.get("failedForSeconds"))
        return cls(
            name=_str(d.get("receiver")) or subject.removeprefix("notifier:"),
            kind=_str(d.get("kind")),
            since=_time(d.get("since")),
            seconds=_seconds(seconds),
            dead_letters=_int(d.get("deadLetters")),
            pending=_int(d.get("pending")),
            error=_str(d.get("error")),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RuleView:
    """A `[[rules]]` entry that started (or stopped) holding: its name, its condition and the values it read."""

    name: str
    when: str
    description: str
    values: tuple[tuple[str, str], ...]  # (variable, value as CEL writes it: 12, "running")

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> RuleView:
        """From an event's `data.rule`."""
        values = _mapping(d.get("values")) or {}
        return cls(
            name=_str(d.get("name")),
            when=_str(d.get("when")),
            description=_str(d.get("description")),
            values=tuple((_str(k), _cel(v)) for k, v in values.items()),
        )


def _cel(value: Any) -> str:
    """A value as a rule's condition would write it."""
    if isinstance(value, str):
        return json.dumps(clean_text(value), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return "null" if value is None else "?"


_RECEIVER_EVENTS = (EventType.RECEIVER_FAILING, EventType.RECEIVER_RECOVERED)
_RULE_EVENTS = (EventType.RULE_MATCHED, EventType.RULE_RESOLVED)
_ANSWER_RATE_EVENTS = (EventType.ANSWER_RATE_DROPPED, EventType.ANSWER_RATE_RECOVERED)


@dataclasses.dataclass(frozen=True, slots=True)
class EventView:
    """Everything people are told of one event, typed."""

    id: str
    type: str
    time: datetime
    subject: str
    task: TaskView | None
    previous_status: str
    milestone: int | None
    stall: StallView | None
    outage: OutageView | None
    first_sight: bool
    zone: str  # the campaigns' zone the event's task is read in ("+09:00", "Asia/Tokyo"), or ""
    text: str  # the test notification's own text
    resolves: ResolvesView | None = None  # the problem this event ends, if it says
    reminder: ReminderView | None = None  # set when this event tells a lasting problem again
    receiver: ReceiverView | None = None  # for receiver_failing and receiver_recovered
    rule: RuleView | None = None  # for rule_matched and rule_resolved
    answer_rate: AnswerRateView | None = None  # for answer_rate_dropped and answer_rate_recovered
    calls: CallsView | None = None  # when the call log was read for the event's task

    @classmethod
    def of(cls, event: Any) -> EventView:
        """Read an `Event` (its `data` is untyped JSON) once."""
        data: Mapping[str, Any] = event.data if isinstance(event.data, Mapping) else {}
        task = data.get("task")
        previous = data.get("previous")
        windows = data.get("windows")
        stall = None
        if event.type == EventType.STALLED:
            w = windows if isinstance(windows, Mapping) else {}
            by_calls = data.get("evidence") == "calllog"
            seconds = _int(data.get("stalledForSeconds"))
            if seconds is None and by_calls:
                seconds = _int(data.get("silentForSeconds"))
            stall = StallView(
                seconds=seconds or 0,
                windows_placed=w.get("placed") is not False,
                windows_doubted=w.get("doubted") is True,
                fix=_str(w.get("fix")) or "watch.timezone",
                evidence="calllog" if by_calls else "progress",
                last_call=_time(data.get("lastCallAt")) if by_calls else None,
            )
        outage = None
        if event.type in (EventType.API_UNREACHABLE, EventType.API_RECOVERED):
            seconds = data.get("unreachableForSeconds" if event.type == EventType.API_UNREACHABLE else "downForSeconds")
            outage = OutageView(seconds=_int(seconds) or 0, cause=_str(data.get("cause")))
        resolves, reminder = _mapping(data.get("resolves")), _mapping(data.get("reminder"))
        rule = _mapping(data.get("rule")) if event.type in _RULE_EVENTS else None
        answer_rate = _mapping(data.get("answerRate")) or {}
        calls = _mapping(data.get("calls"))
        subject = event.subject if isinstance(event.subject, str) else ""
        return cls(
            id=event.id,
            type=event.type,
            time=event.time,
            subject=event.subject,
            task=TaskView.of(task, event.subject) if isinstance(task, Mapping) else None,
            previous_status=_str(previous.get("status")) if isinstance(previous, Mapping) else "",
            milestone=_int(data.get("milestone")),
            stall=stall,
            outage=outage,
            first_sight=data.get("firstSight") is True,
            zone=_str(data.get("timeZone")),
            text=_str(data.get("message")),
            resolves=ResolvesView.of(resolves) if resolves is not None else None,
            reminder=ReminderView.of(reminder) if reminder is not None else None,
            receiver=ReceiverView.of(data, subject) if event.type in _RECEIVER_EVENTS else None,
            rule=RuleView.of(rule if rule is not None else {}) if event.type in _RULE_EVENTS else None,
            answer_rate=AnswerRateView.of(answer_rate) if event.type in _ANSWER_RATE_EVENTS else None,
            calls=CallsView.of(calls) if calls is not None and isinstance(task, Mapping) else None,
        )


# -- the message -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Fact:
    """One labelled value (a short one in `facts`, a paragraph in `details`)."""

    label: str
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One event for people, in one language; plain text throughout (each channel escapes for its format)."""

    event_id: str
    event_type: str
    severity: Severity
    icon: str  # the event type's short name ("finished", "failed"): each channel picks its own symbol for it
    headline: str
    facts: tuple[Fact, ...]
    details: tuple[Fact, ...]
    time: datetime
    time_text: str  # `time` in the campaigns' zone, as the language writes it, with its UTC offset
    footer: str  # "task 1001 · voicefox.task.finished · 2026/11/23 18:00:00 (UTC+09:00)"
    task_id: int | None
    link: str | None  # `[messages] task_url` for the task, if configured
    link_text: str
    language: str


_SEVERITY = {
    EventType.OBSERVED: Severity.INFO,
    EventType.STARTED: Severity.INFO,
    EventType.PROGRESSED: Severity.INFO,
    EventType.FINISHED: Severity.GOOD,
    EventType.STOPPED: Severity.WARNING,
    EventType.TIMED_OUT: Severity.WARNING,
    EventType.FAILED: Severity.DANGER,
    EventType.RESUMED: Severity.INFO,
    EventType.CHANGED: Severity.WARNING,
    EventType.STALLED: Severity.DANGER,
    EventType.MISSING: Severity.DANGER,
    EventType.UNSTALLED: Severity.GOOD,
    EventType.REAPPEARED: Severity.GOOD,
    EventType.RULE_MATCHED: Severity.WARNING,
    EventType.RULE_RESOLVED: Severity.GOOD,
    EventType.ANSWER_RATE_DROPPED: Severity.DANGER,
    EventType.ANSWER_RATE_RECOVERED: Severity.GOOD,
    EventType.API_UNREACHABLE: Severity.DANGER,
    EventType.API_RECOVERED: Severity.GOOD,
    EventType.RECEIVER_FAILING: Severity.DANGER,
    EventType.RECEIVER_RECOVERED: Severity.GOOD,
    EventType.TEST: Severity.INFO,
}

# Per event type: the headline for a named task, and for a task without a name. Whole sentences, so that each
# language can order its words as it must.
_HEADLINES: dict[str, tuple[str, str]] = {
    EventType.OBSERVED: (N_("Campaign “{name}” (task {id}) is being watched"), N_("Task {id} is being watched")),
    EventType.STARTED: (N_("Campaign “{name}” (task {id}) started calling"), N_("Task {id} started calling")),
    EventType.PROGRESSED: (
        N_("Campaign “{name}” (task {id}) reached {milestone}"),
        N_("Task {id} reached {milestone}"),
    ),
    EventType.FINISHED: (N_("Campaign “{name}” (task {id}) finished"), N_("Task {id} finished")),
    EventType.STOPPED: (
        N_("Campaign “{name}” (task {id}) was stopped by an operator"),
        N_("Task {id} was stopped by an operator"),
    ),
    EventType.TIMED_OUT: (
        N_("Campaign “{name}” (task {id}) stopped: its time ran out"),
        N_("Task {id} stopped: its time ran out"),
    ),
    EventType.FAILED: (N_("Campaign “{name}” (task {id}) stopped abnormally"), N_("Task {id} stopped abnormally")),
    EventType.RESUMED: (N_("Campaign “{name}” (task {id}) resumed calling"), N_("Task {id} resumed calling")),
    EventType.CHANGED: (
        N_("Campaign “{name}” (task {id}) changed status {previous} → {status}"),
        N_("Task {id} changed status {previous} → {status}"),
    ),
    EventType.STALLED: (
        N_("Campaign “{name}” (task {id}) is stalled: no progress for {duration}"),
        N_("Task {id} is stalled: no progress for {duration}"),
    ),
    EventType.MISSING: (
        N_("Campaign “{name}” (task {id}) is missing: the API no longer knows it"),
        N_("Task {id} is missing: the API no longer knows it"),
    ),
    EventType.UNSTALLED: (
        N_("Campaign “{name}” (task {id}) progresses again after {duration} stalled"),
        N_("Task {id} progresses again after {duration} stalled"),
    ),
    EventType.REAPPEARED: (
        N_("Campaign “{name}” (task {id}) is known to the API again"),
        N_("Task {id} is known to the API again"),
    ),
    EventType.RULE_MATCHED: (
        N_("Campaign “{name}” (task {id}): rule “{rule}” holds"),
        N_("Task {id}: rule “{rule}” holds"),
    ),
    EventType.RULE_RESOLVED: (
        N_("Campaign “{name}” (task {id}): rule “{rule}” no longer holds, after {duration}"),
        N_("Task {id}: rule “{rule}” no longer holds, after {duration}"),
    ),
    EventType.ANSWER_RATE_DROPPED: (
        N_("Campaign “{name}” (task {id}): answer rate fell from {before} to {after}"),
        N_("Task {id}: answer rate fell from {before} to {after}"),
    ),
    EventType.ANSWER_RATE_RECOVERED: (
        N_("Campaign “{name}” (task {id}): answer rate is back to {now} after {duration}"),
        N_("Task {id}: answer rate is back to {now} after {duration}"),
    ),
}
# A stall the call log showed (no call started) is told as such: flat progress alone is the weaker sign.
_STALLED_BY_CALLS = (
    N_("Campaign “{name}” (task {id}) is stalled: no call started for {duration}"),
    N_("Task {id} is stalled: no call started for {duration}"),
)
# An end of a problem that does not say how long it lasted (`data.resolves`) is told without a duration.
_UNTIMED = {
    EventType.UNSTALLED: (
        N_("Campaign “{name}” (task {id}) progresses again"),
        N_("Task {id} progresses again"),
    ),
    EventType.RULE_RESOLVED: (
        N_("Campaign “{name}” (task {id}): rule “{rule}” no longer holds"),
        N_("Task {id}: rule “{rule}” no longer holds"),
    ),
    EventType.ANSWER_RATE_RECOVERED: (
        N_("Campaign “{name}” (task {id}): answer rate is back to {now}"),
        N_("Task {id}: answer rate is back to {now}"),
    ),
}

# The fact that says how long the problem an event resolves lasted, by the problem's type.
_LASTED = {
    EventType.STOPPED: N_("Stopped for"),
    EventType.TIMED_OUT: N_("Stopped for"),
    EventType.FAILED: N_("Stopped for"),
    EventType.STALLED: N_("Stalled for"),
    EventType.MISSING: N_("Missing for"),
    EventType.API_UNREACHABLE: N_("Unreachable for"),
    EventType.RECEIVER_FAILING: N_("Failing for"),
    EventType.RULE_MATCHED: N_("Held for"),
    EventType.ANSWER_RATE_DROPPED: N_("Low for"),
}

# VoiceFox's statuses in each language's own words (the raw status is kept beside an unknown one).
_STATUS = {
    Status.PENDING: N_("pending"),
    Status.RUNNING: N_("running"),
    Status.STOP_OPERATE: N_("stopped by an operator"),
    Status.STOP_TIMEOUT: N_("timed out"),
    Status.STOP_ABNORMAL: N_("stopped abnormally"),
    Status.DONE: N_("done"),
}

_TERMINAL = {EventType.FINISHED, EventType.STOPPED, EventType.TIMED_OUT, EventType.FAILED}


def status_text(status: str, t: Translator) -> str:
    """A status in the language's words ("running" -> "実行中"); an unknown one as the API wrote it."""
    known = _STATUS.get(status)  # type: ignore[call-overload]
    return t.gettext(known) if known else status


def build(
    event: Any,
    *,
    language: str = DEFAULT_LANGUAGE,
    zone: tzinfo | None = None,
    task_url: str = "",
) -> Message:
    """The message of an event in `language`; times in `zone` (else the zone the event names, else UTC)."""
    t = translator(language)
    view = EventView.of(event)
    if zone is None and view.zone:
        zone = Zone.from_dict({"name": view.zone, "source": "api"}).tz
    headline = _headline(view, t)
    facts: list[Fact] = []
    details: list[Fact] = []
    task = view.task
    if task is not None:
        status = status_text(task.status, t)
        if view.previous_status and view.previous_status != task.status:
            status = t.say("{before} → {after}", before=status_text(view.previous_status, t), after=status)
        facts += [
            Fact(t.gettext("Status"), status),
            Fact(t.gettext("Progress"), t.percent(task.progress)),
            Fact(t.gettext("Numbers"), t.number(task.total) if task.total is not None else "–"),
            Fact(t.gettext("Collection rate"), t.percent(task.collection_rate)),
        ]
        if view.stall is not None and view.stall.by_calls:
            facts.append(Fact(t.gettext("No call started for"), t.duration(view.stall.seconds)))
            last_call = view.stall.last_call
            facts.append(
                Fact(t.gettext("Last call started"), _at(last_call, t, zone) if last_call else t.gettext("none seen"))
            )
        elif view.stall is not None:
            facts.append(Fact(t.gettext("No progress for"), t.duration(view.stall.seconds)))
        if view.answer_rate is not None:
            answer_facts, answer_details = _answer_rate(view, view.answer_rate, t)
            facts += answer_facts
            details += answer_details
        if view.calls is not None:
            facts += _calls(view.calls, t, zone, totals=view.type == EventType.FINISHED)
        if view.type in _TERMINAL:
            if task.summary:
                details.append(Fact(t.gettext("Summary"), task.summary))
            if task.suggestion:
                details.append(Fact(t.gettext("Suggestion"), task.suggestion))
    if view.stall is not None and not view.stall.windows_placed:
        details.append(
            Fact(
                t.gettext("Calling windows"),
                t.say(
                    "They could not be placed: their time zone is unknown, so this stall counted every hour. "
                    "Set {key} to the zone the campaign calls in.",
                    key=view.stall.fix,
                ),
            )
        )
    elif view.stall is not None and view.stall.windows_doubted:
        details.append(
            Fact(
                t.gettext("Calling windows"),
                t.gettext("The task was seen calling outside them, so they were not relied on."),
            )
        )
    if view.rule is not None:
        facts.append(Fact(t.gettext("Rule"), view.rule.name or "–"))
        if view.rule.description:
            details.append(Fact(t.gettext("Description"), view.rule.description))
        details.append(Fact(t.gettext("Condition"), view.rule.when or "–"))
        if view.rule.values:
            values = t.gettext(", ").join(f"{name} = {value}" for name, value in view.rule.values)
            details.append(Fact(t.gettext("Values"), values))
    if view.resolves is not None:
        label = _LASTED.get(view.resolves.type, N_("Lasted"))  # type: ignore[call-overload]
        facts.append(Fact(t.gettext(label), t.duration(view.resolves.seconds)))
    elif view.type == EventType.ANSWER_RATE_RECOVERED and view.answer_rate and view.answer_rate.seconds is not None:
        facts.append(Fact(t.gettext(_LASTED[EventType.ANSWER_RATE_DROPPED]), t.duration(view.answer_rate.seconds)))
    receiver = view.receiver
    if receiver is not None:
        facts.append(Fact(t.gettext("Notifier kind"), receiver.kind or "–"))
        if view.type == EventType.RECEIVER_FAILING:
            facts += [
                Fact(t.gettext("Pending"), t.number(receiver.pending) if receiver.pending is not None else "–"),
                Fact(
                    t.gettext("Dead letters"),
                    t.number(receiver.dead_letters) if receiver.dead_letters is not None else "–",
                ),
            ]
            if receiver.error:
                details.append(Fact(t.gettext("Last error"), receiver.error))
    if view.reminder is not None:
        facts.append(Fact(t.gettext("Ongoing for"), t.duration(view.reminder.seconds)))
    if view.type == EventType.TEST and view.text:
        details.append(Fact(t.gettext("Message"), t.gettext("If you can read this, voicefox-watcher can reach you.")))
    time_text = t.time(view.time, zone)
    who = t.say("task {id}", id=view.subject) if view.subject.isascii() and view.subject.isdecimal() else view.subject
    link = task_url.replace("{id}", str(task.id)) if task_url and task is not None else None
    return Message(
        event_id=view.id,
        event_type=view.type,
        severity=_SEVERITY.get(view.type, Severity.INFO),  # type: ignore[call-overload]
        icon=view.type.rsplit(".", 1)[-1],
        headline=headline,
        facts=tuple(facts),
        details=tuple(details),
        time=view.time,
        time_text=time_text,
        footer=f"{who} · {view.type} · {time_text}",
        task_id=task.id if task is not None else None,
        link=link,
        link_text=t.gettext("Open the task"),
        language=language,
    )


def _answer_rate(view: EventView, rate: AnswerRateView, t: Translator) -> tuple[list[Fact], list[Fact]]:
    """The facts of an answer-rate event (the shares with the calls behind them), and what to check."""
    facts = [Fact(t.gettext("Usual answer rate"), _share_of(rate.before, rate.baseline_calls, t, latest=False))]
    if view.type == EventType.ANSWER_RATE_DROPPED:
        facts.append(Fact(t.gettext("Answer rate now"), _share_of(rate.after, rate.calls, t, latest=True)))
        hint = t.gettext(
            "The campaign keeps running, so its status shows nothing. A fall this sharp usually means that carriers "
            "are labelling the calling numbers as spam: check the caller IDs and their number reputation (with the "
            "carrier, or with a test call to a phone of your own), and replace or register the numbers that are "
            "flagged."
        )
        return facts, [Fact(t.gettext("What to check"), hint)]
    facts += [
        Fact(t.gettext("Answer rate during the drop"), t.share(rate.after)),
        Fact(t.gettext("Answer rate now"), _share_of(rate.now, rate.calls, t, latest=True)),
    ]
    return facts, []


def _share_of(share: float | None, calls: int | None, t: Translator, *, latest: bool) -> str:
    """ "41% of 1,250 earlier calls", "3% of the latest 100 calls"; the share alone when the count is unknown."""
    if share is None or calls is None:
        return t.share(share)
    if latest:
        return t.say_n(
            "{share} of the latest {count} call", "{share} of the latest {count} calls", calls, share=t.share(share)
        )
    return t.say_n("{share} of {count} earlier call", "{share} of {count} earlier calls", calls, share=t.share(share))


def _calls(calls: CallsView, t: Translator, zone: tzinfo | None, *, totals: bool) -> list[Fact]:
    """What the call log showed: the calls of the last hour, or (`totals`, a finished campaign) every call the
    watcher counted and since when."""
    if totals:
        if calls.total is None:
            return []
        value = t.number(calls.total)
        if calls.answered is not None and calls.total:
            value = t.say(
                "{calls}, {answered} answered ({share})",
                calls=value,
                answered=t.number(calls.answered),
                share=t.share(_ratio(calls.answered, calls.total)),
            )
        facts = [Fact(t.gettext("Calls"), value)]
        if calls.since is not None:
            facts.append(Fact(t.gettext("Counted since"), _at(calls.since, t, zone)))
        return facts
    if calls.last_hour_calls is None:
        return []
    value = t.number(calls.last_hour_calls)
    share = _ratio(calls.last_hour_answered, calls.last_hour_calls)
    if share is not None:
        value = t.say("{calls} ({share} answered)", calls=value, share=t.share(share))
    return [Fact(t.gettext("Calls in the last hour"), value)]


def _at(when: datetime, t: Translator, zone: tzinfo | None) -> str:
    """A time from event data as the language writes it; as ISO 8601 where the zone would carry it past the years a
    datetime holds (a stored "9999-12-31T23:59:59+14:00" read in UTC-12)."""
    try:
        return t.time(when, zone)
    except (OverflowError, ValueError):
        return when.isoformat()


def _headline(view: EventView, t: Translator) -> str:
    headline = _what_happened(view, t)
    if view.reminder is None:
        return headline
    # One sentence per language around the event's own headline: where the count and the duration go is the
    # language's choice.
    return t.say(
        "Reminder {count}: {headline} — ongoing for {duration}",
        count=t.number(view.reminder.count),
        headline=headline,
        duration=t.duration(view.reminder.seconds),
    )


def _what_happened(view: EventView, t: Translator) -> str:
    if view.type == EventType.TEST:
        return t.gettext("Test notification from voicefox-watcher")
    if view.outage is not None:
        duration = t.duration(view.outage.seconds)
        refused = view.outage.cause == "authentication"
        if view.type == EventType.API_UNREACHABLE:
            if refused:
                # The API answers, but 401/403: "unreachable" would send people to the network instead of the token.
                message = N_("VoiceFox API refused the token (check api.token): no task can be watched for {duration}")
            else:
                message = N_("VoiceFox API unreachable for {duration}: no task can be watched")
        else:
            message = (
                N_("VoiceFox API accepts the token again after {duration}")
                if refused
                else N_("VoiceFox API reachable again after {duration}")
            )
        return t.say(message, duration=duration)
    if view.receiver is not None:
        duration = t.duration(view.receiver.seconds)
        if view.type == EventType.RECEIVER_FAILING:
            return t.say(
                "Notifier “{receiver}” is failing: its alerts are not getting through (for {duration})",
                receiver=view.receiver.name,
                duration=duration,
            )
        return t.say(
            "Notifier “{receiver}” delivers again after {duration}", receiver=view.receiver.name, duration=duration
        )
    task = view.task
    named, unnamed = _HEADLINES.get(view.type, ("", ""))
    rate = view.answer_rate
    lasted = view.resolves.seconds if view.resolves else rate.seconds if rate else None
    if view.type in _UNTIMED and lasted is None:
        named, unnamed = _UNTIMED[view.type]  # type: ignore[index]
    if view.stall is not None and view.stall.by_calls:
        named, unnamed = _STALLED_BY_CALLS
    if not named:
        return t.say("{type} for task {id}", type=view.type, id=view.subject)
    milestone = view.milestone if view.milestone is not None else (task.progress if task else None)
    fields = {
        "name": task.name if task else "",
        "id": view.subject,
        "rule": (view.rule.name if view.rule else "") or "–",
        "milestone": t.percent(milestone),
        "previous": status_text(view.previous_status, t) if view.previous_status else "–",
        "status": status_text(task.status, t) if task else "–",
        "duration": t.duration(view.stall.seconds) if view.stall else t.duration(lasted) if lasted is not None else "",
        "before": t.share(rate.before if rate else None),
        "after": t.share(rate.after if rate else None),
        "now": t.share(rate.now if rate else None),
    }
    headline = t.say(named if task and task.name else unnamed, **fields)
    if view.first_sight:
        headline = t.say("{headline} (already so when the watcher first saw it)", headline=headline)
    return headline


def fallback(event: Any) -> Message:
    """The plainest message an event can have, with nothing read from its data but the type, the subject and the time:
    what goes out (in English) if building the real one ever fails, so that no alert is lost to a bug."""
    type_ = str(getattr(event, "type", ""))
    kind = type_.rsplit(".", 1)[-1]
    subject, when = str(getattr(event, "subject", "")), getattr(event, "time", None)
    time_text = when.isoformat() if isinstance(when, datetime) else ""
    return Message(
        event_id=str(getattr(event, "id", "")),
        event_type=type_,
        severity=next((severity for known, severity in _SEVERITY.items() if known == type_), Severity.WARNING),
        icon=kind,
        headline=f"{type_ or 'event'} for {subject}",
        facts=(),
        details=(),
        time=when if isinstance(when, datetime) else datetime.now().astimezone(),
        time_text=time_text,
        footer=f"{subject} · {type_} · {time_text}",
        task_id=int(subject) if subject.isascii() and subject.isdecimal() else None,
        link=None,
        link_text="",
        language=DEFAULT_LANGUAGE,
    )


# -- several events in one message -------------------------------------------------------------------------------

# The namespace of digest ids: a digest of the same events has the same id on every attempt (a receiver's dedup key).
_DIGEST_NAMESPACE = uuid.UUID("6f0d4c1e-2a57-5b8e-9c3d-7e1f0a9b8c42")

# Per event type, how a digest's headline counts its events ("3 finished"), singular and plural.
_COUNTED: dict[str, tuple[str, str]] = {
    EventType.OBSERVED: NP_("{count} watched", "{count} watched"),
    EventType.STARTED: NP_("{count} started", "{count} started"),
    EventType.PROGRESSED: NP_("{count} progressed", "{count} progressed"),
    EventType.FINISHED: NP_("{count} finished", "{count} finished"),
    EventType.STOPPED: NP_("{count} stopped", "{count} stopped"),
    EventType.TIMED_OUT: NP_("{count} timed out", "{count} timed out"),
    EventType.FAILED: NP_("{count} failed", "{count} failed"),
    EventType.RESUMED: NP_("{count} resumed", "{count} resumed"),
    EventType.CHANGED: NP_("{count} changed", "{count} changed"),
    EventType.STALLED: NP_("{count} stalled", "{count} stalled"),
    EventType.MISSING: NP_("{count} missing", "{count} missing"),
    EventType.UNSTALLED: NP_("{count} progressing again", "{count} progressing again"),
    EventType.REAPPEARED: NP_("{count} found again", "{count} found again"),
    EventType.RULE_MATCHED: NP_("{count} rule matched", "{count} rules matched"),
    EventType.RULE_RESOLVED: NP_("{count} rule resolved", "{count} rules resolved"),
    EventType.ANSWER_RATE_DROPPED: NP_("{count} answer rate fell", "{count} answer rates fell"),
    EventType.ANSWER_RATE_RECOVERED: NP_("{count} answer rate recovered", "{count} answer rates recovered"),
    EventType.API_UNREACHABLE: NP_("{count} API outage", "{count} API outages"),
    EventType.API_RECOVERED: NP_("{count} API recovery", "{count} API recoveries"),
    EventType.RECEIVER_FAILING: NP_("{count} notifier failing", "{count} notifiers failing"),
    EventType.RECEIVER_RECOVERED: NP_("{count} notifier recovered", "{count} notifiers recovered"),
    EventType.TEST: NP_("{count} test", "{count} tests"),
}
_REMINDERS = NP_("{count} reminder", "{count} reminders")  # a problem told again is counted apart: it is not news
_OTHERS = NP_("{count} other", "{count} others")  # a type this version does not know
_RANK = {Severity.INFO: 0, Severity.GOOD: 1, Severity.WARNING: 2, Severity.DANGER: 3}


@dataclasses.dataclass(frozen=True, slots=True)
class Digest:
    """Several events for people in one message, in one language: a headline counting them, and each one's message."""

    id: str  # the same for the same events on every attempt: a receiver's idempotency key
    headline: str  # "5 alerts from voicefox-watcher: 3 finished, 1 failed, 1 stalled"
    severity: Severity  # the highest of its items'
    items: tuple[Message, ...]  # in the order the events came
    time_text: str  # the newest item's time, as the language writes it
    language: str
    footer: str  # "voicefox-watcher · <time>": names the product, as DingTalk's keyword check may want

    def more(self, count: int) -> str:
        """The line that stands for `count` items left out to fit a platform's limit."""
        return translator(self.language).say_n("… and {count} more", "… and {count} more", count)


def digest_id(event_ids: Iterable[str]) -> str:
    """The id of a digest of these events, whatever their order: a uuid5 of the sorted ids, one a line."""
    return str(uuid.uuid5(_DIGEST_NAMESPACE, "\n".join(sorted(event_ids))))


def build_digest(
    events: Sequence[Any],
    *,
    language: str = DEFAULT_LANGUAGE,
    task_url: str = "",
    messages: Callable[[Any], Message] | None = None,
) -> Digest:
    """The digest of `events` (in their order); each item is `messages(event)`, the notifier's own message function
    (its templates included), else the built-in message."""
    t = translator(language)
    message = messages or (lambda event: build(event, language=language, task_url=task_url))
    items = tuple(message(event) for event in events)
    kinds: Counter[tuple[str, str]] = Counter()
    for event in events:
        reminder = isinstance(event.data, Mapping) and isinstance(event.data.get("reminder"), Mapping)
        kinds[_REMINDERS if reminder else _COUNTED.get(event.type, _OTHERS)] += 1
    # Most first; a tie in the order the events came (Counter keeps the order of first insertion).
    counted = [t.say_n(singular, plural, n) for (singular, plural), n in sorted(kinds.items(), key=lambda k: -k[1])]
    headline = t.say_n(
        "{count} alert from voicefox-watcher: {kinds}",
        "{count} alerts from voicefox-watcher: {kinds}",
        len(items),
        kinds=t.gettext(", ").join(counted),
    )
    newest = max(items, key=lambda item: item.time, default=None)
    time_text = newest.time_text if newest is not None else ""
    return Digest(
        id=digest_id(str(event.id) for event in events),
        headline=headline,
        severity=max((item.severity for item in items), key=_RANK.__getitem__, default=Severity.INFO),
        items=items,
        time_text=time_text,
        language=language,
        footer=f"voicefox-watcher · {time_text}" if time_text else "voicefox-watcher",
    )
