"""Value types: task status, task snapshots, events; and the tolerant parser of API bodies."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import pydantic

from .errors import TransientApiError


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
    API_UNREACHABLE = "voicefox.watcher.api_unreachable"
    API_RECOVERED = "voicefox.watcher.api_recovered"
    TEST = "voicefox.watcher.test"


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
    # When calling may happen: option.startDate and option.startTime windows ("HH:MM", in watch.timezone).
    start_date: str = ""
    windows: tuple[tuple[str, str], ...] = ()

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
        return value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and abs(value) < 1e15:
        return round(value)
    return None


def _lenient_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


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
    status = body.status.strip()
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
        **_schedule_of(doc.get("option")),
    )


_HHMM = re.compile(r"^([01]?\d|2[0-3]):[0-5]\d$")


def _schedule_of(option: Any) -> dict[str, Any]:
    # Only the calling schedule is read from `option`; its phone numbers are never touched.
    if not isinstance(option, dict):
        return {}
    start_date = option.get("startDate")
    windows = []
    for window in option.get("startTime") or () if isinstance(option.get("startTime"), list) else ():
        if (
            isinstance(window, list)
            and len(window) == 2
            and all(isinstance(t, str) and _HHMM.match(t.strip()) for t in window)
        ):
            windows.append((window[0].strip(), window[1].strip()))
    return {
        "start_date": start_date[:32] if isinstance(start_date, str) else "",
        "windows": tuple(windows[:24]),
    }
