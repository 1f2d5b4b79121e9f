"""Value types: task status, task snapshots, events; and the tolerant parser of API bodies."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import pydantic

from .errors import TransientApiError

if TYPE_CHECKING:
    from .health import CallHealth


class Status(StrEnum):
    """The task statuses VoiceFox documents; an undocumented status is kept as its raw string."""

    PENDING = "pending"
    RUNNING = "running"
    STOP_OPERATE = "stop.operate"
    STOP_TIMEOUT = "stop.timeout"
    STOP_ABNORMAL = "stop.abnormal"
    DONE = "done"


class EventType(StrEnum):
    """Every event type the watcher emits; the names are a public interface."""

    OBSERVED = "voicefox.task.observed"
    STARTED = "voicefox.task.started"
    PROGRESSED = "voicefox.task.progressed"
    FINISHED = "voicefox.task.finished"
    STOPPED = "voicefox.task.stopped"
    TIMED_OUT = "voicefox.task.timed_out"
    FAILED = "voicefox.task.failed"
    RESUMED = "voicefox.task.resumed"
    CHANGED = "voicefox.task.changed"
    STALLED = "voicefox.task.stalled"
    MISSING = "voicefox.task.missing"
    UNSTALLED = "voicefox.task.unstalled"
    REAPPEARED = "voicefox.task.reappeared"
    RULE_MATCHED = "voicefox.task.rule_matched"
    RULE_RESOLVED = "voicefox.task.rule_resolved"
    ANSWER_RATE_DROPPED = "voicefox.task.answer_rate_dropped"
    ANSWER_RATE_RECOVERED = "voicefox.task.answer_rate_recovered"
    API_UNREACHABLE = "voicefox.watcher.api_unreachable"
    API_RECOVERED = "voicefox.watcher.api_recovered"
    RECEIVER_FAILING = "voicefox.watcher.receiver_failing"
    RECEIVER_RECOVERED = "voicefox.watcher.receiver_recovered"
    TEST = "voicefox.watcher.test"


# A problem is a state that lasts and that someone should act on: it may be reminded of while it lasts, and its end is
# announced by one of the events that resolve it (`RESOLVES`), to the notifiers that want the problem and
# `send_resolved`.
PROBLEMS = frozenset(
    {
        EventType.STOPPED,
        EventType.TIMED_OUT,
        EventType.FAILED,
        EventType.STALLED,
        EventType.MISSING,
        EventType.API_UNREACHABLE,
        EventType.RECEIVER_FAILING,
        EventType.RULE_MATCHED,
        EventType.ANSWER_RATE_DROPPED,
    }
)
RESOLVES: dict[str, frozenset[EventType]] = {
    EventType.RESUMED: frozenset({EventType.STOPPED, EventType.TIMED_OUT, EventType.FAILED}),
    EventType.UNSTALLED: frozenset({EventType.STALLED}),
    EventType.REAPPEARED: frozenset({EventType.MISSING}),
    EventType.API_RECOVERED: frozenset({EventType.API_UNREACHABLE}),
    EventType.RECEIVER_RECOVERED: frozenset({EventType.RECEIVER_FAILING}),
    EventType.RULE_RESOLVED: frozenset({EventType.RULE_MATCHED}),
    EventType.ANSWER_RATE_RECOVERED: frozenset({EventType.ANSWER_RATE_DROPPED}),
}


@dataclasses.dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """What the watcher keeps of one API answer: only fields safe to log and send (no numbers, tokens or emails)."""

    id: int
    status: str
    name: str = ""
    progress: int | None = None
    total: int | None = None
    collection_rate: int | None = None
    summary: str = ""
    suggestion: str = ""
    updated_at: str = ""
    created_at: str = ""
    # When calling may happen: option.startDate ("YYYY-MM-DD") and option.startTime windows ("HH:MM[:SS]", the end
    # may be "24:00"), in the campaigns' time zone (watcher/zone.py); both empty: at any time.
    start_date: str = ""
    windows: tuple[tuple[str, str], ...] = ()
    # What of option could not be read (and was dropped, so that calls count as possible): for a log line only.
    schedule_problems: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @property
    def has_schedule(self) -> bool:
        """Whether calling is limited to a start date or to windows of the day."""
        return bool(self.windows or self.start_date)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot in the API's own field names, as events carry it."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "progress": self.progress,
            "total": self.total,
            "collectionRate": self.collection_rate,
            "summary": self.summary,
            "suggestion": self.suggestion,
            "updatedAt": self.updated_at,
            "createdAt": self.created_at,
            "startDate": self.start_date,
            "startTime": [list(w) for w in self.windows],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSnapshot:
        """Inverse of `to_dict`, for the store."""
        return cls(
            id=int(d["id"]),
            status=str(d["status"]),
            name=d.get("name") or "",
            progress=d.get("progress"),
            total=d.get("total"),
            collection_rate=d.get("collectionRate"),
            summary=d.get("summary") or "",
            suggestion=d.get("suggestion") or "",
            updated_at=d.get("updatedAt") or "",
            created_at=d.get("createdAt") or "",
            start_date=d.get("startDate") or "",
            windows=tuple((str(a), str(b)) for a, b in d.get("startTime") or ()),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class TaskState:
    """The watcher's memory of a task between polls: the last snapshot plus what detection needs."""

    snapshot: TaskSnapshot
    progress_since: datetime  # when progress (or status) last changed: the start of a possible stall
    stalled: bool = False  # a `stalled` event was already emitted for the current episode
    missing: bool = False  # a `missing` event was already emitted; cleared when the task reappears
    # When the task was last seen at work inside a window the model believed closed (schedule.contradicts): for a
    # day after that its windows slow nothing and silence no stall.
    windows_doubted_at: datetime | None = None
    # When it was last seen only updated (not progressing) in a window believed closed: weak evidence, which counts
    # once it repeats in the same closed stretch (an operator's edit at night happens once).
    updated_while_closed_at: datetime | None = None
    # The `[[rules]]` holding now, by name, each with since when (one `rule_matched` per episode), sorted by name.
    rules: tuple[tuple[str, datetime], ...] = ()
    # What the call log has shown of the task (watcher/health.py): None while it has not been read.
    health: CallHealth | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One notification-worthy fact; `id` is its idempotency key on every delivery attempt."""

    id: str
    type: str
    time: datetime
    subject: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored and as the log notifier prints it."""
        return {
            "id": self.id,
            "type": self.type,
            "time": self.time.isoformat(),
            "subject": self.subject,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        """Inverse of `to_dict`."""
        return cls(
            id=d["id"], type=d["type"], time=datetime.fromisoformat(d["time"]), subject=d["subject"], data=d["data"]
        )


def _lenient_int(value: Any) -> int | None:
    # VoiceFox documents integers; accept "42", 42.0 and 41.6 too, and treat anything else as absent rather than
    # failing the whole body for one odd optional field.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**15 else None  # no count or percentage is that large: a broken answer
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and abs(value) < 1e15:
        return round(value)
    return None


def _lenient_str(value: Any) -> str:
    return clean_text(value) if isinstance(value, str) else ""


def clean_text(text: str) -> str:
    """`text` as valid Unicode: a lone surrogate (JSON allows "\\ud800") becomes U+FFFD, for it could be encoded by no
    channel and would make every alert about its task undeliverable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax int takes true as 1: an id of `true` is no task id
        raise ValueError("a boolean is not a task id")
    return value


class _TaskBody(pydantic.BaseModel):
    # Only the fields we keep are declared: `assistant` (with websocketToken), `option` (with the phone numbers)
    # and `creator` are never parsed, so they cannot leak into anything downstream.
    model_config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)

    id: Annotated[int | None, pydantic.BeforeValidator(_no_bool)] = None
    status: str
    name: Any = ""
    progress: Any = None
    total: Any = None
    collectionRate: Any = None
    summary: Any = ""
    suggestion: Any = ""
    updatedAt: Any = ""
    createdAt: Any = ""


_ENVELOPE_OK_CODES = (0, 200, "0", "200", "OK", "ok", "success")


def parse_task_body(raw: bytes | str, task_id: int) -> TaskSnapshot:
    """Parse a task-details body (bare or wrapped in `{code, message, data}`); raise TransientApiError if unusable."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TransientApiError(f"task {task_id}: response body is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise TransientApiError(f"task {task_id}: response body is a JSON {type(doc).__name__}, not an object")
    if "code" in doc:
        # An envelope {code, message, data}, or an error in that shape: only a success code with a data object is a
        # task. `type(...) in` and not isinstance: False == 0 and 0.0 == 0 must not pass for success.
        code = doc.get("code")
        data = doc.get("data")
        if type(code) not in (int, str) or code not in _ENVELOPE_OK_CODES or not isinstance(data, dict):
            message = doc.get("message")
            said = f": {message[:200]!r}" if isinstance(message, str) and message else ""
            raise TransientApiError(f"task {task_id}: API answered code {code!r}{said}")
        doc = data
    try:
        body = _TaskBody.model_validate(doc)
    except pydantic.ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
        raise TransientApiError(f"task {task_id}: response body lacks a usable {fields}") from None
    # The id is what tells a task from an error body that happens to have a "status" ({"status": "error", ...}):
    # without it, an outage could be read as a status change.
    if body.id != task_id:
        got = "no id" if body.id is None else f"task {body.id}"
        raise TransientApiError(f"task {task_id}: response has {got}, not the task asked for")
    status = clean_text(body.status.strip())  # (it goes into event ids and every alert: it must encode)
    schedule = parse_schedule(doc.get("option"))
    if not status:
        raise TransientApiError(f"task {task_id}: response body has an empty status")
    return TaskSnapshot(
        id=task_id,
        status=status[:64],
        name=_lenient_str(body.name)[:500],
        progress=_lenient_int(body.progress),
        total=_lenient_int(body.total),
        collection_rate=_lenient_int(body.collectionRate),
        summary=_lenient_str(body.summary)[:4000],
        suggestion=_lenient_str(body.suggestion)[:4000],
        updated_at=_lenient_str(body.updatedAt)[:64],
        created_at=_lenient_str(body.createdAt)[:64],
        start_date=schedule.start_date,
        windows=schedule.windows,
        schedule_problems=schedule.problems,
    )


# Clock times as people write them: "9:00", "09:00", "09:00:00", "24:00" (the end of the day); full-width digits
# and colons ("０９：００") are folded by NFKC first.
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_RANGE = re.compile(r"^\s*(\S+?)\s*(?:-|~|–|—|〜|to)\s*(\S+)\s*$")
_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:$|[ T])")
MAX_WINDOWS = 96  # more than this is not a calling schedule anyone wrote


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """A task's calling schedule as read from `option`; `problems` names what could not be read (and was dropped)."""

    start_date: str = ""  # "YYYY-MM-DD", or "" for no first day
    windows: tuple[tuple[str, str], ...] = ()  # ("HH:MM[:SS]", "HH:MM[:SS]"), end may be "24:00"; () = any time
    problems: tuple[str, ...] = ()


def _clock(value: Any) -> str | None:
    """A clock time normalised to "HH:MM" or "HH:MM:SS", or None if it is not one."""
    if not isinstance(value, str):
        return None
    m = _CLOCK.match(unicodedata.normalize("NFKC", value).strip())
    if m is None:
        return None
    hours, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if minutes > 59 or seconds > 59 or hours > 24 or (hours == 24 and (minutes or seconds)):
        return None
    return f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")


def _window(entry: Any) -> tuple[str, str] | None:
    """One window: a pair ["09:00", "12:00"] or a range written as one string ("09:00-12:00", "9:00~12:00")."""
    if isinstance(entry, list | tuple) and len(entry) == 2:
        start, end = _clock(entry[0]), _clock(entry[1])
    elif isinstance(entry, list | tuple) and len(entry) == 1 and isinstance(entry[0], str):
        return _window(entry[0])  # [["09:00-12:00"]]
    elif isinstance(entry, str) and (m := _RANGE.match(unicodedata.normalize("NFKC", entry))):
        start, end = _clock(m.group(1)), _clock(m.group(2))
    else:
        return None
    if start is None or end is None or start == "24:00":
        return None
    return start, end


def _windows(value: Any) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """option.startTime -> (windows, problem). Nothing silently closes a window: one unreadable entry and the whole
    value is dropped (calls may then happen at any time), with the problem named."""
    if value is None or value == [] or value == "":
        return (), None
    if isinstance(value, str):
        entries: list[Any] = [part for part in re.split(r"[,;、，]", value) if part.strip()]
    elif isinstance(value, list):
        entries = value
        if len(value) == 2 and all(isinstance(v, str) and _clock(v) for v in value):
            entries = [value]  # a single pair, not nested: ["09:00", "18:00"]
    else:
        return (), "option.startTime is not a list of [start, end] pairs"
    if len(entries) > MAX_WINDOWS:
        return (), f"option.startTime has {len(entries)} windows (more than {MAX_WINDOWS})"
    windows = []
    for entry in entries:
        window = _window(entry)
        if window is None:
            return (), f"option.startTime has an unreadable window {_shown(entry)}"
        windows.append(window)
    return tuple(windows), None


def _shown(value: Any) -> str:
    # Shown in a log line: only the shape of a calling schedule, never more than a few dozen characters of it.
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_schedule(option: Any) -> Schedule:
    """The calling schedule in `option` (startDate, startTime), read as people write it; never raises."""
    # Only the calling schedule is read from `option`; its phone numbers are never touched.
    if option is None:
        return Schedule()
    if not isinstance(option, dict):
        return Schedule(problems=("option is not an object",))
    problems = []
    windows, problem = _windows(option.get("startTime"))
    if problem:
        problems.append(f"{problem}: calls are taken as possible at any time of day")
    raw_date = option.get("startDate")
    start_date = ""
    if isinstance(raw_date, str) and raw_date.strip():
        m = _DATE.match(unicodedata.normalize("NFKC", raw_date).strip())
        try:
            start_date = date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat() if m else ""
        except ValueError:
            start_date = ""
        if not start_date:
            problems.append(f"option.startDate {_shown(raw_date)} is not a date: calls are taken as possible already")
    elif raw_date not in (None, ""):
        problems.append(f"option.startDate {_shown(raw_date)} is not a date: calls are taken as possible already")
    return Schedule(start_date, windows, tuple(problems))
