"""Templates for those who want their own words: a notifier's `title_template` and `body_template` (Jinja2, sandboxed).

A template replaces the built-in headline (title) or the facts and details (body); every channel still renders the
result in its own format, as plain text. It sees these variables (all plain values, in the notifier's language):

  event      id, type (e.g. "voicefox.task.failed"), kind ("failed"), time (the campaigns' zone, as the language writes
             it), severity ("info", "good", "warning", "danger"), subject (the task id, "api" or "test")
  task       id, name, status, status_text (in the language), progress, total, collection_rate, summary, suggestion;
             None for events about the API and for a test notification
  previous   the previous status in the language's words ("" when none)
  milestone  the progress milestone of a `progressed` event (else None)
  stalled_for / down_for   how long, in the language's words ("15 min", "15 分") (else "")
  stalled_by "calllog" (no call started) or "progress" (progress flat) for a `stalled` event (else "")
  answer_rate  for answer_rate_dropped / answer_rate_recovered: before (the task's usual share), after (the share
             that fell), now (recovered: the share now), as shares from 0 to 1 (None when unknown); calls (in the
             window judged), baseline_calls (behind `before`), since, until, lasted; else None
  calls      when the call log was read for the task: total, answered (counted since `since`), last_hour_calls,
             last_hour_answered, answer_rate (0 to 1, the latest calls), since, last_call; each None or "" when
             unknown; else None
  resolves   for an event that ends a problem (resumed, unstalled, reappeared): type (the problem's event type),
             kind ("stalled"), since (when it began, in the campaigns' zone), lasted ("40 min"); else None
  reminder   for a problem told again while it lasts: count (1 for the first reminder), of (the id of the event
             that first told it), since, lasted (how long it has lasted now); else None
  rule       for rule_matched / rule_resolved: name, when (the condition), description, values (the variables it
             read, as CEL writes them: {"progress": "45"}); else None
  receiver   for receiver_failing / receiver_recovered: name, kind ("slack"), since, lasted (failing for, or failed
             for), pending, dead_letters (None when unknown) and error (the last one; "" when none); else None
  message    the built-in message: headline, facts (list of {label, value}), details, footer, link
  link       the task's link (`[messages] task_url`), or ""
  language   "en", "ja", "zh-Hans" or "zh-Hant"

and the functions `number` (12,345), `percent` (41%, of a whole percentage) and `share` (41%, of a share from 0 to 1:
`{{ share(answer_rate.after) }}`) in the language's style. A template that fails at run time is
never the end of an alert: the built-in message goes out instead, with one `notify.template_failed` error log line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from ..i18n import Translator, translator
from ..model import EventType
from ..zone import Zone
from .message import EventView, Fact, Message, status_text

_log = structlog.get_logger("watcher.notify.templates")

EXTRA_HINT = "templates need the [templates] extra: pip install 'voicefox-watcher[templates]'"


class TemplateError(ValueError):
    """A template does not compile or does not render; the message says which and where."""


def _environment() -> Any:
    try:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise TemplateError(EXTRA_HINT) from None
    # Sandboxed and immutable: a template reads what it is given and can neither call into the process nor change it.
    # StrictUndefined: a misspelt variable is an error (caught by `watcher check`), not an empty string in an alert.
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def _compile(env: Any, source: str) -> Any:
    try:
        return env.from_string(source)
    except Exception as exc:  # noqa: BLE001 - Jinja2's TemplateSyntaxError and kin: reported, never raised on
        line = getattr(exc, "lineno", None)
        raise TemplateError(f"(line {line}) {exc}" if line else str(exc)) from None


def check_syntax(source: str) -> None:
    """Raise TemplateError (with its line) unless `source` compiles; for the config's own check."""
    _compile(_environment(), source)


@dataclasses.dataclass(frozen=True, slots=True)
class Templates:
    """A notifier's compiled templates (either may be None)."""

    notifier: str
    title: Any = None
    body: Any = None

    @classmethod
    def compile(cls, notifier: str, title: str | None, body: str | None) -> Templates | None:
        """Compile a notifier's templates; None when it has none; TemplateError naming the key when one is wrong."""
        if title is None and body is None:
            return None
        env = _environment()
        compiled: dict[str, Any] = {}
        for key, source in (("title_template", title), ("body_template", body)):
            if source is not None:
                try:
                    compiled[key] = _compile(env, source)
                except TemplateError as exc:
                    raise TemplateError(f"{key}: {exc}") from None
        return cls(notifier, compiled.get("title_template"), compiled.get("body_template"))

    def render(self, message: Message, event: Any) -> Message:
        """The message with the templates applied; raises TemplateError (the caller falls back)."""
        t = translator(message.language)
        variables = _variables(message, EventView.of(event), t)
        headline, details, facts = message.headline, message.details, message.facts
        try:
            if self.title is not None:
                headline = " ".join(self.title.render(variables).split())  # one line, as every channel's title is
            if self.body is not None:
                body = self.body.render(variables).strip()
                facts, details = (), ((Fact("", body),) if body else ())
        except Exception as exc:  # noqa: BLE001 - whatever a template does wrong, the alert must still go out
            raise TemplateError(f"{exc.__class__.__name__}: {exc}") from None
        if not headline:
            raise TemplateError("title_template rendered nothing")
        return dataclasses.replace(message, headline=headline, facts=facts, details=details)

    def apply(self, message: Message, event: Any) -> Message:
        """`render`, or the built-in message and one error log line when the template fails."""
        try:
            return self.render(message, event)
        except TemplateError as exc:
            _log.error(
                "notify.template_failed",
                notifier=self.notifier,
                event_type=message.event_type,
                error=str(exc)[:300],
                hint="the built-in message was sent instead; `watcher check` renders every template",
            )
            return message


def _variables(message: Message, view: EventView, t: Translator) -> dict[str, Any]:
    task = view.task
    zone = Zone.from_dict({"name": view.zone, "source": "api"}).tz if view.zone else None

    def when(moment: datetime | None) -> str:
        return t.time(moment, zone) if moment is not None else ""

    resolves, reminder, receiver, rule = view.resolves, view.reminder, view.receiver, view.rule
    rate, calls = view.answer_rate, view.calls
    return {
        "event": {
            "id": view.id,
            "type": view.type,
            "kind": message.icon,
            "time": message.time_text,
            "severity": message.severity.value,
            "subject": view.subject,
        },
        "task": None
        if task is None
        else {
            "id": task.id,
            "name": task.name,
            "status": task.status,
            "status_text": status_text(task.status, t),
            "progress": task.progress,
            "total": task.total,
            "collection_rate": task.collection_rate,
            "summary": task.summary,
            "suggestion": task.suggestion,
        },
        "previous": status_text(view.previous_status, t) if view.previous_status else "",
        "milestone": view.milestone,
        "stalled_for": t.duration(view.stall.seconds) if view.stall else "",
        "down_for": t.duration(view.outage.seconds) if view.outage else "",
        "stalled_by": view.stall.evidence if view.stall else "",
        "answer_rate": None
        if rate is None
        else {
            "before": rate.before,
            "after": rate.after,
            "now": rate.now,
            "calls": rate.calls,
            "baseline_calls": rate.baseline_calls,
            "since": when(rate.since),
            "until": when(rate.until),
            "lasted": t.duration(rate.seconds) if rate.seconds is not None else "",
        },
        "calls": None
        if calls is None
        else {
            "total": calls.total,
            "answered": calls.answered,
            "last_hour_calls": calls.last_hour_calls,
            "last_hour_answered": calls.last_hour_answered,
            "answer_rate": calls.rate,
            "since": when(calls.since),
            "last_call": when(calls.last_call),
        },
        "resolves": None
        if resolves is None
        else {
            "type": resolves.type,
            "kind": resolves.type.rsplit(".", 1)[-1],
            "since": when(resolves.since),
            "lasted": t.duration(resolves.seconds),
        },
        "reminder": None
        if reminder is None
        else {
            "count": reminder.count,
            "of": reminder.origin,
            "since": when(reminder.since),
            "lasted": t.duration(reminder.seconds),
        },
        "rule": None
        if rule is None
        else {"name": rule.name, "when": rule.when, "description": rule.description, "values": dict(rule.values)},
        "receiver": None
        if receiver is None
        else {
            "name": receiver.name,
            "kind": receiver.kind,
            "since": when(receiver.since),
            "lasted": t.duration(receiver.seconds),
            "pending": receiver.pending,
            "dead_letters": receiver.dead_letters,
            "error": receiver.error,
        },
        "message": {
            "headline": message.headline,
            "facts": [{"label": f.label, "value": f.value} for f in message.facts],
            "details": [{"label": f.label, "value": f.value} for f in message.details],
            "footer": message.footer,
            "link": message.link or "",
        },
        "link": message.link or "",
        "language": message.language,
        "number": t.number,
        "percent": t.percent,
        "share": t.share,
    }


def samples() -> list[Any]:
    """A sample event of every type (and a reminder, which carries more), for `watcher check` to render every
    template against."""
    from datetime import UTC

    from ..detect import make_event
    from ..model import Event, TaskSnapshot

    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    task = TaskSnapshot(id=1001, status="running", name="Sample campaign", progress=50, total=1200, collection_rate=33)
    done = dataclasses.replace(task, status="done", progress=100, summary="A summary.", suggestion="A suggestion.")
    since = "2026-11-23T08:00:00+00:00"

    rule = {"name": "low collection", "when": "progress >= 30 && collectionRate < 20", "description": ""}

    def resolves(problem: EventType) -> dict[str, Any]:
        return {"resolves": {"type": problem.value, "since": since, "lastedSeconds": 3600}}

    calls = {
        "calls": {
            "since": since,
            "total": 1200,
            "answered": 410,
            "lastHour": {"calls": 312, "answered": 12},
            "answerRate": 0.03,
            "lastCallAt": "2026-11-23T08:59:30+00:00",
        }
    }
    dropped = {"since": since, "before": 0.41, "after": 0.03, "calls": 100, "baselineCalls": 1100}
    recovered = {"since": since, "until": "2026-11-23T09:00:00+00:00", "before": 0.41, "after": 0.03, "now": 0.38}
    extras: Mapping[EventType, dict[str, Any]] = {
        EventType.PROGRESSED: {"milestone": 50},
        EventType.STALLED: {"stalledForSeconds": 1200},
        EventType.ANSWER_RATE_DROPPED: {"answerRate": dropped} | calls,
        EventType.ANSWER_RATE_RECOVERED: {"answerRate": recovered | {"calls": 100, "lastedSeconds": 3600}}
        | resolves(EventType.ANSWER_RATE_DROPPED)
        | calls,
        EventType.RESUMED: resolves(EventType.FAILED),
        EventType.UNSTALLED: resolves(EventType.STALLED),
        EventType.REAPPEARED: resolves(EventType.MISSING),
        EventType.RULE_MATCHED: {"rule": rule | {"values": {"progress": 50, "collectionRate": 12}}},
        EventType.RULE_RESOLVED: {"rule": rule | {"values": {"progress": 60, "collectionRate": 25}}}
        | resolves(EventType.RULE_MATCHED),
    }
    receiver = {"receiver": "sample-notifier", "kind": "slack", "since": since}
    receivers: Mapping[EventType, dict[str, Any]] = {
        EventType.RECEIVER_FAILING: receiver
        | {"failingForSeconds": 3600, "deadLetters": 1, "pending": 3, "error": "sample-notifier (slack): 500"},
        EventType.RECEIVER_RECOVERED: receiver | {"failedForSeconds": 3600},
    }
    out: list[Any] = []
    for type_ in EventType:
        if type_ in (EventType.API_UNREACHABLE, EventType.API_RECOVERED):
            data = {"unreachableForSeconds": 600, "downForSeconds": 600, "cause": "unreachable or failing"}
            out.append(Event(f"sample-{type_.value}", type_.value, now, "api", data))
        elif type_ in receivers:
            subject = f"notifier:{receiver['receiver']}"
            out.append(Event(f"sample-{type_.value}", type_.value, now, subject, receivers[type_]))
        elif type_ is EventType.TEST:
            out.append(Event("sample-test", type_.value, now, "test", {"message": "test"}))
        else:
            current = done if type_ is EventType.FINISHED else task
            out.append(make_event(type_, now, current, task, **extras.get(type_, {})))
    # A stall the call log showed carries more (what showed it, the latest call), and so does a finished campaign
    # whose calls were counted.
    silent = {"evidence": "calllog", "lastCallAt": "2026-11-23T08:40:00+00:00", "silentForSeconds": 1200}
    out.append(make_event(EventType.STALLED, now, task, task, stalledForSeconds=1200, **silent, **calls))
    out.append(make_event(EventType.FINISHED, now, done, task, **calls))
    origin = next(event.id for event in out if event.type == EventType.FAILED.value)
    reminder = {"count": 2, "of": origin, "since": since, "lastedSeconds": 3600}
    failed = dataclasses.replace(task, status="stop.abnormal")
    out.append(make_event(EventType.FAILED, now, failed, task, reminder=reminder))
    return out
