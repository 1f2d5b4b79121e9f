"""What an event means to a person, decided once: a typed view of an event, and the message every channel renders.

`EventView.of(event)` reads an event's `data` once, tolerantly (an event written by an older version, or odd values,
give empty fields, never an exception). `build(event, ...)` turns it into a `Message`: a severity, a headline, facts,
details and a footer, in one language, all plain text. A channel only renders a `Message` in its own format (Block
Kit, markdown, an Adaptive Card, an email); it never looks into `event.data` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any

from ..i18n import DEFAULT_LANGUAGE, N_, Translator, translator
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
            id=task_id if task_id is not None else (int(subject) if subject.isdigit() else 0),
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


@dataclasses.dataclass(frozen=True, slots=True)
class OutageView:
    """The API's unreachability (or its end)."""

    seconds: int
    cause: str  # "authentication", "unreachable or failing", or "" (events from older versions)


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
            stall = StallView(
                seconds=_int(data.get("stalledForSeconds")) or 0,
                windows_placed=w.get("placed") is not False,
                windows_doubted=w.get("doubted") is True,
                fix=_str(w.get("fix")) or "watch.timezone",
            )
        outage = None
        if event.type in (EventType.API_UNREACHABLE, EventType.API_RECOVERED):
            seconds = data.get("unreachableForSeconds" if event.type == EventType.API_UNREACHABLE else "downForSeconds")
            outage = OutageView(seconds=_int(seconds) or 0, cause=_str(data.get("cause")))
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
        if view.stall is not None:
            facts.append(Fact(t.gettext("No progress for"), t.duration(view.stall.seconds)))
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
    if view.type == EventType.TEST and view.text:
        details.append(Fact(t.gettext("Message"), t.gettext("If you can read this, voicefox-watcher can reach you.")))
    time_text = t.time(view.time, zone)
    who = t.say("task {id}", id=view.subject) if view.subject.isdigit() else view.subject
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


def _headline(view: EventView, t: Translator) -> str:
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
    task = view.task
    named, unnamed = _HEADLINES.get(view.type, ("", ""))
    if not named:
        return t.say("{type} for task {id}", type=view.type, id=view.subject)
    milestone = view.milestone if view.milestone is not None else (task.progress if task else None)
    fields = {
        "name": task.name if task else "",
        "id": view.subject,
        "milestone": t.percent(milestone),
        "previous": status_text(view.previous_status, t) if view.previous_status else "–",
        "status": status_text(task.status, t) if task else "–",
        "duration": t.duration(view.stall.seconds) if view.stall else "",
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
        task_id=int(subject) if subject.isdigit() else None,
        link=None,
        link_text="",
        language=DEFAULT_LANGUAGE,
    )
