"""What the status page shows, as data in the reader's language: every task, the recent events, the outbox per
receiver and the API's health. No template and no HTTP here (`page.py` renders it), so it is tested as data.

Nothing secret or personal reaches it: tasks come as the store keeps them (`TaskSnapshot` never holds the numbers,
the assistant's credentials or the creator's e-mail), events as their built headlines, and delivery errors scrubbed
of every configured secret and of anything shaped like a phone number.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo

from ..config import Config
from ..health import CallHealth, calls_last_hour
from ..i18n import N_, Translator, translator
from ..logs import Redact
from ..model import Event, Status, TaskState
from ..notify.message import Severity, build, status_text
from ..schedule import PaceMark, pace
from ..store import DeliveryReport, OutboxCount
from ..zone import HOW, Zone

RECENT_EVENTS = 20  # how many of the newest events the page lists

# The page's own words; each template reads them by key. Words the notifications use already come from there.
WORDS = {
    "title": N_("voicefox-watcher status"),
    "tasks": N_("Campaigns"),
    "events": N_("Recent events"),
    "deliveries": N_("Deliveries"),
    "api": N_("VoiceFox API"),
    "status": N_("Status"),
    "progress": N_("Progress"),
    "collection_rate": N_("Collection rate"),
    "eta": N_("Time left at this pace"),
    "last_change": N_("Last change"),
    "calls_hour": N_("Calls in the last hour"),
    "answer_rate": N_("Answer rate"),
    "answer_drop": N_("Answer rate dropped"),
    "notifier": N_("Notifier"),
    "kind": N_("Notifier kind"),
    "pending": N_("Pending"),
    "oldest": N_("Waiting longest"),
    "dead": N_("Dead letters"),
    "last_error": N_("Last error"),
    "last_delivered": N_("Last delivered"),
    "no_tasks": N_("No campaign is watched."),
    "no_events": N_("No events yet."),
    "no_notifiers": N_("No notifier is configured: events are stored but sent nowhere."),
    "offline": N_("The watcher does not answer; this page updates again when it does."),
}

# A phone number in any usual spelling: nine or more digits, maybe with a leading + and hyphens, spaces or an area
# code in parentheses between. Nothing a delivery error needs to say is that long (status and error codes, seconds,
# byte counts are shorter); a run that goes on as a time or a decimal ("2026-11-23 18:00") is not a number to hide.
_PHONE = re.compile(r"(?<!\w)(?<!\d[.:])\+?\(?\d(?:[ ()-]{0,2}\d){8,}(?!\w|[.:]\d)")
HIDDEN = "[…]"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskCard:
    """One task as the page shows it."""

    id: int
    name: str
    status: str  # in the reader's words
    flag: str  # "stalled" or "missing" in the reader's words, or ""
    tone: str  # good | info | warning | danger | muted: the card's colour
    progress: int | None  # 0-100, for the progress bar (None: not known)
    progress_text: str
    collection_rate: str
    eta: str  # the time left at the pace kept since it started running, or a dash
    changed: str  # when progress or status last changed, in the campaigns' zone
    # From the call log, "" until it was read: calls in the last hour (and answered), the answered share of the
    # latest calls (a dash while none ended), and an ongoing collapse of that share (before → after, since when).
    calls: str = ""
    answer_rate: str = ""
    answer_drop: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class EventLine:
    """One recent event: when, what, and how much it asks of a person."""

    id: str
    type: str
    time: str
    headline: str
    tone: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiverLine:
    """One notifier's outbox: what waits, what was given up, how its deliveries last went."""

    name: str
    kind: str
    state: str  # delivering | failing | idle, in the reader's words
    tone: str
    pending: int
    oldest: str  # how long the oldest pending delivery has waited, or a dash
    dead: int
    last_error: str  # scrubbed; "" when none is recorded
    last_error_at: str
    last_delivered: str


@dataclasses.dataclass(frozen=True, slots=True)
class ApiLine:
    """Whether the API answers, in a sentence."""

    tone: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Board:
    """Everything the page shows at one moment."""

    language: str
    words: dict[str, str]
    zone: str  # the campaigns' zone and how it was found, in a sentence
    updated: str
    api: ApiLine
    counts: tuple[tuple[str, int], ...]  # (status in words, how many tasks), in the order tasks first show them
    tasks: tuple[TaskCard, ...]
    events: tuple[EventLine, ...]
    receivers: tuple[ReceiverLine, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Facts:
    """What the board is made from, read from the daemon and the store at one moment."""

    config: Config
    now: datetime
    states: Mapping[int, TaskState]
    zones: Mapping[int, Zone]  # the zone each task's times are shown in
    zone: Zone  # the campaigns' zone
    events: Sequence[Event]
    counts: Sequence[OutboxCount]
    report: Sequence[DeliveryReport]
    api: ApiHealth


@dataclasses.dataclass(frozen=True, slots=True)
class ApiHealth:
    """The API as the daemon last heard it."""

    outage: tuple[datetime, str] | None  # since when it is announced unreachable, and the kind of failure
    silent_for: float  # seconds since a poll last got an answer
    silent_limit: float | None  # beyond this the silence is worrying (None: no task is polled)


class Paces:
    """Each running task's pace since the page first saw it at its current progress, for the ETA at that pace."""

    def __init__(self) -> None:
        self._marks: dict[int, PaceMark] = {}

    def eta(self, state: TaskState) -> float | None:
        """Seconds to 100 % at the pace kept since the mark, or None while that is unknown (or the task not running)."""
        # Marked when the task reached its present progress (not when the page first looked), so the first step seen
        # after it already gives a pace; at the pace up to the latest step, not up to now (a task between two steps
        # is not slowing down).
        mark, eta = pace(self._marks.get(state.snapshot.id), state.snapshot, state.progress_since)
        if mark is None:
            self._marks.pop(state.snapshot.id, None)
        else:
            self._marks[state.snapshot.id] = mark
        return eta

    def forget(self, keep: Iterable[int]) -> None:
        """Drop the marks of tasks no longer watched."""
        kept = set(keep)
        for task_id in [t for t in self._marks if t not in kept]:
            del self._marks[task_id]


def _hidden(config: Config) -> list[str]:
    from ..config import secret_values

    # The numbers DingTalk mentions are phone numbers too, though not secrets.
    mobiles = [str(m) for n in config.notifiers for m in getattr(n, "at_mobiles", None) or ()]
    return [*secret_values(config), *mobiles]


class Scrubber:
    """Hides every configured secret, and anything shaped like a phone number, in text bound for the page."""

    def __init__(self, config: Config, *, also: Iterable[str] = ()) -> None:
        # `also`: secrets of configs replaced since (a stored error may quote one from before a reload).
        self.hidden = frozenset([*_hidden(config), *also])
        self._redact = Redact(sorted(self.hidden))

    def __call__(self, text: str) -> str:
        """The text, with what must not be shown replaced."""
        cleaned = self._redact(None, "", {"text": text})["text"]
        return _PHONE.sub(HIDDEN, str(cleaned))


_TONE = {Severity.INFO: "info", Severity.GOOD: "good", Severity.WARNING: "warning", Severity.DANGER: "danger"}
_STATUS_TONE = {
    Status.PENDING: "muted",
    Status.RUNNING: "info",
    Status.DONE: "good",
    Status.STOP_OPERATE: "warning",
    Status.STOP_TIMEOUT: "warning",
    Status.STOP_ABNORMAL: "danger",
}
_DASH = "–"


def board(facts: Facts, paces: Paces, scrub: Scrubber, language: str) -> Board:
    """The page's content for these facts, in `language`."""
    t = translator(language)
    ids = facts.config.watch.ids
    paces.forget(ids)
    tasks = tuple(_task(task_id, facts, paces, t) for task_id in ids)
    counts: dict[str, int] = {}
    for card in tasks:
        counts[card.status] = counts.get(card.status, 0) + 1
    return Board(
        language=language,
        words={key: t.gettext(message) for key, message in WORDS.items()},
        zone=t.say(
            "The campaigns' time zone: {zone} ({how})", zone=facts.zone.name, how=t.gettext(HOW[facts.zone.source])
        ),
        updated=t.say("Updated {time}", time=t.time(facts.now, facts.zone.tz)),
        api=_api(facts, t),
        counts=tuple(counts.items()),
        tasks=tasks,
        events=tuple(_event(event, facts, language) for event in facts.events),
        receivers=tuple(_receivers(facts, scrub, t)),
    )


def _task(task_id: int, facts: Facts, paces: Paces, t: Translator) -> TaskCard:
    state = facts.states.get(task_id)
    if state is None:
        return TaskCard(
            id=task_id,
            name=t.say("task {id}", id=task_id),
            status=t.gettext("waiting for its first answer"),
            flag="",
            tone="muted",
            progress=None,
            progress_text=_DASH,
            collection_rate=_DASH,
            eta=_DASH,
            changed=_DASH,
        )
    snapshot = state.snapshot
    zone = facts.zones[task_id].tz if task_id in facts.zones else facts.zone.tz
    flag, tone = "", _STATUS_TONE.get(snapshot.status, "muted")  # type: ignore[call-overload]
    if state.missing:
        flag, tone = t.gettext("missing"), "danger"
    elif state.stalled:
        flag, tone = t.gettext("stalled"), "warning"
    elif state.health is not None and state.health.episode is not None:
        # Kept after the task stopped (the last the call log showed); a stop that reads as danger stays so.
        flag, tone = t.gettext("answer rate dropped"), "danger" if tone == "danger" else "warning"
    eta = paces.eta(state)
    return TaskCard(
        id=task_id,
        name=snapshot.name or t.say("task {id}", id=task_id),
        status=status_text(snapshot.status, t),
        flag=flag,
        tone=tone,
        progress=None if snapshot.progress is None else max(0, min(100, snapshot.progress)),
        progress_text=t.percent(snapshot.progress),
        collection_rate=t.percent(snapshot.collection_rate),
        eta=t.duration(eta) if eta is not None else _DASH,
        changed=t.time(state.progress_since, zone),
        **(_calls(state.health, facts.now, zone, t) if state.health is not None else {}),
    )


def _calls(health: CallHealth, now: datetime, zone: tzinfo | None, t: Translator) -> dict[str, str]:
    """A task's calls as its card shows them (counts and shares only)."""
    calls, answered = calls_last_hour(health, now)
    episode = health.episode
    return {
        "calls": t.say("{calls} ({answered} answered)", calls=t.number(calls), answered=t.number(answered)),
        "answer_rate": t.share(health.rate),
        "answer_drop": (
            t.say(
                "{before} → {after} since {time}",
                before=t.share(episode.before),
                after=t.share(episode.after),
                time=t.time(episode.since, zone),
            )
            if episode is not None
            else ""
        ),
    }


def _event(event: Event, facts: Facts, language: str) -> EventLine:
    task_zone = facts.zones.get(int(event.subject)) if event.subject.isascii() and event.subject.isdecimal() else None
    message = build(event, language=language, zone=(task_zone or facts.zone).tz or UTC)
    return EventLine(event.id, event.type, message.time_text, message.headline, _TONE[message.severity])


def _api(facts: Facts, t: Translator) -> ApiLine:
    health = facts.api
    if health.outage is not None:
        since, cause = health.outage
        when = t.time(since, facts.zone.tz)
        if cause == "authentication":
            return ApiLine("danger", t.say("The API has refused the token since {time} (check api.token)", time=when))
        return ApiLine("danger", t.say("Unreachable since {time}", time=when))
    if health.silent_limit is None:
        return ApiLine("muted", t.gettext("No task is being polled now."))
    if health.silent_for > health.silent_limit:
        return ApiLine("warning", t.say("No answer for {duration}", duration=t.duration(health.silent_for)))
    return ApiLine("good", t.say("Answering: last answer {duration} ago", duration=t.duration(health.silent_for)))


def _receivers(facts: Facts, scrub: Scrubber, t: Translator) -> Iterable[ReceiverLine]:
    kinds = {n.name: n.kind for n in facts.config.notifiers}
    report = {r.receiver: r for r in facts.report}
    # Receivers no longer configured still show while their rows wait or were given up: they are someone's alerts.
    names = list(kinds) + sorted({c.receiver for c in facts.counts if c.state != "delivered"} - set(kinds))
    now = facts.now.timestamp()
    zone = facts.zone.tz
    for name in names:
        pending = [c for c in facts.counts if c.receiver == name and c.state == "pending"]
        dead = sum(c.count for c in facts.counts if c.receiver == name and c.state == "dead")
        waiting = sum(c.count for c in pending)
        oldest = min((c.oldest for c in pending if c.oldest is not None), default=None)
        r = report.get(name)
        error_at = r.last_error_at if r is not None else None
        delivered_at = r.last_delivered_at if r is not None else None
        if error_at is not None and (delivered_at is None or error_at > delivered_at):
            state, tone = t.gettext("failing"), "danger"
        elif delivered_at is not None:
            state, tone = t.gettext("delivering"), "warning" if dead else "good"
        else:
            state, tone = t.gettext("nothing sent yet"), "warning" if dead else "muted"
        yield ReceiverLine(
            name=name,
            kind=kinds.get(name, _DASH),
            state=state,
            tone=tone,
            pending=waiting,
            oldest=t.duration(now - oldest) if oldest is not None else _DASH,
            dead=dead,
            last_error=scrub(r.last_error) if r is not None and r.last_error else "",
            last_error_at=_at(error_at, zone, t),
            last_delivered=_at(delivered_at, zone, t),
        )


def _at(when: float | None, zone: tzinfo | None, t: Translator) -> str:
    return t.time(datetime.fromtimestamp(when, UTC), zone) if when is not None else _DASH
