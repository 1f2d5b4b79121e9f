"""The call log as the watcher keeps it: `CallRecord`s of counts and times only, parsed tolerantly from
`GET /openapi/calllog` pages; pure (no I/O), like `model.py` for tasks.

A record of the API also carries `callee`, `caller`, `recordFile`, `sessionId` and the assistant: the first three are
personal data. The page model declares only `taskId`, `startAt`, `answerAt`, `endAt`, `duration` and `billsec`, so
nothing else is ever read into anything the watcher keeps, logs or sends; error messages name the tasks asked for and
what was wrong, never a value from a record.

Times: the API writes and reads naive local times of the workspace (`2006-01-02 15:04:05`, Go's layout); the caller
says which zone that is (`tz`, the campaigns' zone of `zone.py`). A time with its own offset is taken as written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import pydantic

from .errors import TransientApiError
from .model import _ENVELOPE_OK_CODES, _lenient_int
from .zone import read_timestamp

API_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the documented `2006-01-02 15:04:05`
MAX_TASKS_PER_REQUEST = 10  # documented: `taskId` takes up to 10 IDs
# Go's zero time ("0001-01-01 00:00:00") or the epoch ("1970-01-01 08:00:00" in Beijing) is how a Go server writes
# "never" into a time column: an unanswered call's answerAt may well be one. No real call is older than this year.
_EARLIEST_YEAR = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class CallRecord:
    """One call of a task: when it started and ended, whether it was answered, how long it lasted (seconds)."""

    task_id: int
    started_at: datetime  # aware
    answered: bool
    ended_at: datetime | None = None  # None: not ended yet (or the API did not say)
    duration: int | None = None
    # What tells this call from another without personal data: start, end, duration and answer (computed once: a
    # look reads it several times per record).
    key: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        end = "-" if self.ended_at is None else str(int(self.ended_at.timestamp()))
        duration = "-" if self.duration is None else str(self.duration)
        object.__setattr__(self, "key", f"{int(self.started_at.timestamp())}/{end}/{duration}/{int(self.answered)}")


@dataclasses.dataclass(frozen=True, slots=True)
class CallLogPage:
    """One page as read: its usable records, how many items it held and skipped, and the API's paging figures."""

    records: tuple[CallRecord, ...]
    items: int
    skipped: int
    total: int | None
    page_size: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class CallLog:
    """The calls of some tasks in a time range; `complete` is False when the page limit cut the reading short."""

    records: tuple[CallRecord, ...]
    total: int | None = None  # what the API said the range holds
    pages: int = 0
    skipped: int = 0  # items without a usable task id or start time
    complete: bool = True

    def for_task(self, task_id: int) -> tuple[CallRecord, ...]:
        """The records of one task, in the order read."""
        return tuple(r for r in self.records if r.task_id == task_id)


def task_ids_param(task_ids: Sequence[int]) -> str:
    """The `taskId` query value (comma-joined, duplicates dropped); ValueError for none, more than 10 or a non-id."""
    ids = list(dict.fromkeys(task_ids))
    if not ids:
        raise ValueError("the call log is asked for at least one task")
    if len(ids) > MAX_TASKS_PER_REQUEST:
        raise ValueError(f"the call log takes at most {MAX_TASKS_PER_REQUEST} tasks per request, not {len(ids)}")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
        raise ValueError("task ids are non-negative integers")
    return ",".join(str(i) for i in ids)


def api_time(when: datetime, tz: tzinfo) -> str:
    """An aware time as the API's naive local time in `tz` (`2026-11-23 09:00:00`); ValueError for a naive one."""
    if when.tzinfo is None:
        raise ValueError("call log times must be aware (a naive time would be read in an unknown zone)")
    return when.astimezone(tz).strftime(API_TIME_FORMAT)


def read_call_time(value: Any, tz: tzinfo) -> datetime | None:
    """A record's time as an aware datetime: naive text in `tz`, text with an offset as written, epoch seconds or
    milliseconds; None for anything absent, unreadable or a server's way of writing "never"."""
    when: datetime | None
    if isinstance(value, str):
        when = read_timestamp(value)
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=tz)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) / 1000 if value > 1e11 else float(value)  # milliseconds, as JavaScript writes them
        try:
            when = datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):
            return None
    else:
        return None
    return when if when is not None and when.year >= _EARLIEST_YEAR else None


class _CallItem(pydantic.BaseModel):
    # Only these six fields are declared: callee, caller, recordFile, sessionId and the assistant are never parsed,
    # so no phone number can reach anything downstream. Every field is Any: one odd value makes that record
    # unusable (skipped), never the page, and a validation message never quotes a value.
    model_config = pydantic.ConfigDict(extra="ignore")

    taskId: Any = None
    startAt: Any = None
    answerAt: Any = None
    endAt: Any = None
    duration: Any = None
    billsec: Any = None


def _record(item: Any, tz: tzinfo, wanted: frozenset[int]) -> CallRecord | None:
    if not isinstance(item, dict):
        return None
    fields = _CallItem.model_validate(item)
    task_id = _lenient_int(fields.taskId)
    started = read_call_time(fields.startAt, tz)
    if task_id is None or task_id not in wanted or started is None:
        return None
    ended = read_call_time(fields.endAt, tz)
    billsec = _lenient_int(fields.billsec)
    # VoiceFox does not define "answered": a real answer time says so, and so do billed seconds (billing starts at
    # the answer), whichever of the two the server fills in.
    answered = read_call_time(fields.answerAt, tz) is not None or (billsec is not None and billsec > 0)
    if ended is not None and ended < started:
        ended = None  # an end before the start is a broken column, not a call that ended
    duration = _lenient_int(fields.duration)
    if duration is None or duration < 0:
        duration = int((ended - started).total_seconds()) if ended is not None else None
    return CallRecord(task_id, started, answered, ended, duration)


def parse_calllog_page(raw: bytes | str, label: str, tz: tzinfo, task_ids: Sequence[int]) -> CallLogPage:
    """Parse one page (bare `{items, total, pageIndex, pageSize}` or in a `{code, message, data}` envelope); raise
    TransientApiError if the page as a whole is unusable; records of other tasks or without a start are skipped."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TransientApiError(f"{label}: response body is not JSON ({exc.__class__.__name__})") from None
    if isinstance(doc, dict) and "code" in doc and "items" not in doc:
        code = doc.get("code")
        data = doc.get("data")
        # As for a task: only a success code with a data object is a page (False == 0 must not pass for success).
        # The message is not quoted (a task's is): a call log error could echo a number it was asked about.
        if type(code) not in (int, str) or code not in _ENVELOPE_OK_CODES or not isinstance(data, dict):
            shown = code if type(code) in (int, str) and len(str(code)) <= 16 else type(code).__name__
            raise TransientApiError(f"{label}: API answered code {shown!r}")
        doc = data
    if not isinstance(doc, dict):
        raise TransientApiError(f"{label}: response body is a JSON {type(doc).__name__}, not an object")
    items = doc.get("items")
    if items is None:
        items = []  # an empty range is sometimes written as null
    if not isinstance(items, list):
        raise TransientApiError(f"{label}: response body has no list of items")
    wanted = frozenset(task_ids)
    records = [r for item in items if (r := _record(item, tz, wanted)) is not None]
    return CallLogPage(
        records=tuple(records),
        items=len(items),
        skipped=len(items) - len(records),
        total=_lenient_int(doc.get("total")),
        page_size=_lenient_int(doc.get("pageSize")),
    )
