"""Quiet hours, pure: weekly wall-clock windows in one named time zone during which notifications wait.

An entry `{days = "mon-fri", from = "20:00", to = "08:00"}` is one window per listed day, starting that day at `from`
and ending at `to`, on the next day when `to` is not after `from` (so Monday 00:00-08:00 above is quiet only if Sunday
is listed too). Windows are wall-clock spans: across a DST change 20:00-08:00 lasts 11 or 13 real hours. A boundary
at a wall time the zone skips (spring forward) falls on the first instant after the gap; one the zone repeats (fall
back) on its first occurrence (fold=0). Windows that touch or overlap merge: quiet lasts until no window holds.

No clock of its own: every question takes an aware datetime, and every answer is an instant in UTC.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import unicodedata
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

__all__ = ["EMPTY", "QuietHours", "Window"]

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS = {name: i for i, name in enumerate(_DAY_NAMES)} | {name[:3]: i for i, name in enumerate(_DAY_NAMES)}
_DAY = 24 * 3600  # seconds
_WEEK = 7 * _DAY
_KEYS = ("days", "from", "to")
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_DAYS_HOW = 'write e.g. "mon-fri", "sat,sun", "fri-mon" or "monday"'
# A config that passes the whole-week check is quiet for at most a week at a stretch; a stretch can only grow beyond
# that where a zone skips the wall times a config leaves open (a DST gap, or Samoa skipping 2011-12-30). Past this
# horizon `ends_after` gives up rather than loop.
_HORIZON = timedelta(weeks=6)


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """One entry of quiet hours: on each of `days` (0 = Monday), from `start` to `end` seconds after that midnight."""

    days: tuple[int, ...]  # sorted, distinct
    start: int  # 0 <= start < 86400
    end: int  # start < end <= start + 86400: past 86400 the window ends on the next day


def _instant(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The instant (UTC) a naive wall-clock time of `zone` names: the first of two repeated ones, or the end of a gap."""
    first = wall.replace(tzinfo=zone)  # fold=0: the earlier of two repeated wall times
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # `wall` is in a gap. Read with the offsets from before and after the jump, it names two instants on either side
    # of it; the jump is the first whole second (tzdata's transitions are whole seconds) whose wall time is past `wall`.
    before = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    after = int(instant.timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) > wall:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


@functools.lru_cache(maxsize=4096)
def _starting_on(
    windows: tuple[Window, ...], zone: zoneinfo.ZoneInfo, day: date
) -> tuple[tuple[datetime, datetime], ...]:
    """The windows that start on the local date `day`, as [start, end) instants in UTC.

    Cached: the dispatcher asks about the same few days over and over, and each answer takes a few zone lookups.
    """
    midnight = datetime.combine(day, time())
    spans = []
    for window in windows:
        if day.weekday() in window.days:
            start = _instant(midnight + timedelta(seconds=window.start), zone)
            end = _instant(midnight + timedelta(seconds=window.end), zone)
            if start < end:  # a window inside a DST gap does not happen that day
                spans.append((start, end))
    return tuple(spans)


def _aware(when: datetime, name: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got the naive {when.isoformat()}")
    return when.astimezone(UTC)


@dataclasses.dataclass(frozen=True)
class QuietHours:
    """Weekly quiet windows read as wall-clock times in `zone`."""

    windows: tuple[Window, ...]
    zone: zoneinfo.ZoneInfo

    @classmethod
    def parse(cls, entries: Sequence[Mapping[str, Any]], zone: str, *, key: str = "quiet") -> QuietHours:
        """Quiet hours from config entries such as `{days = "mon-fri", from = "20:00", to = "08:00"}`; ValueError naming the key."""
        try:
            tz = zoneinfo.ZoneInfo(zone)
        except (KeyError, ValueError, OSError, TypeError):  # OSError: a zone name that is a directory ("America")
            raise ValueError(f'{json.dumps(zone)} is not a time zone (e.g. "Asia/Tokyo", "UTC")') from None
        if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Sequence):
            raise ValueError(
                f'{key}: expected a list of windows such as [{{days = "mon-fri", from = "20:00", to = "08:00"}}]'
            )
        windows = tuple(_window(entry, f"{key}[{i}]") for i, entry in enumerate(entries))
        if windows and _covers_the_week(windows):
            raise ValueError(
                f"{key}: quiet hours cover the whole week: nothing would ever be delivered (use urgent or remove a window)"
            )
        return cls(windows, tz)

    def quiet_at(self, when: datetime) -> bool:
        """Whether `when` (aware, any zone) is inside a window: `from` inclusive, `to` exclusive."""
        instant = _aware(when, "when")
        return any(start <= instant < end for start, end in self._spans_around(instant))

    def ends_after(self, when: datetime) -> datetime | None:
        """The first instant (UTC) after `when` that is not quiet, windows that touch merging; None if `when` is not quiet."""
        instant = _aware(when, "when")
        horizon = instant + _HORIZON
        ends = [end for start, end in self._spans_around(instant) if start <= instant < end]
        if not ends:
            return None
        while ends:
            instant = max(ends)
            if instant > horizon:
                raise RuntimeError(f"quiet hours {self.describe()} do not end within {_HORIZON.days} days")
            ends = [end for start, end in self._spans_around(instant) if start <= instant < end]
        return instant

    def quiet_between(self, start: datetime, end: datetime) -> timedelta:
        """How much of [start, end) is quiet, overlapping windows counted once."""
        low, high = _aware(start, "start"), _aware(end, "end")
        if high <= low:
            return timedelta(0)
        first, last = self._local_date(low), self._local_date(high)
        spans = sorted(
            (max(s, low), min(e, high))
            for offset in range(-2, (last - first).days + 2)
            for s, e in _starting_on(self.windows, self.zone, first + timedelta(days=offset))
            if s < high and e > low
        )
        total = timedelta(0)
        covered_to = low
        for s, e in spans:
            if e > covered_to:
                total += e - max(s, covered_to)
                covered_to = e
        return total

    def describe(self) -> str:
        """A short text for people, e.g. "mon-fri 20:00–08:00, sat-sun all day (Asia/Tokyo)"."""
        if not self.windows:
            return "none"
        parts = (f"{_days_text(w.days)} {_hours_text(w)}" for w in self.windows)
        return f"{', '.join(parts)} ({self.zone.key})"

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def _spans_around(self, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Every window that might hold `instant`: a window lasts at most a day of wall time, and a day more on either
        side covers a zone whose clock jumps across midnight."""
        day = self._local_date(instant)
        for offset in (-2, -1, 0, 1):
            yield from _starting_on(self.windows, self.zone, day + timedelta(days=offset))


EMPTY = QuietHours((), zoneinfo.ZoneInfo("UTC"))


def _window(entry: Any, key: str) -> Window:
    if not isinstance(entry, Mapping):
        raise ValueError(f'{key}: expected a table such as {{days = "mon-fri", from = "20:00", to = "08:00"}}')
    unknown = [k for k in entry if k not in _KEYS]
    if unknown:
        names = ", ".join(json.dumps(str(k)) for k in unknown)
        raise ValueError(f"{key}: unknown key{'s' if len(unknown) > 1 else ''} {names} (known: days, from, to)")
    days = _days(entry["days"], f"{key}.days") if "days" in entry else tuple(range(7))
    start = _clock(entry["from"], f"{key}.from", allow_24=False) if "from" in entry else 0
    end = _clock(entry["to"], f"{key}.to", allow_24=True) if "to" in entry else _DAY
    if start == end:  # both omitted is 00:00 to 24:00
        raise ValueError(
            f'{key}: from and to are both "{_clock_text(start)}", which could mean no time or the whole day '
            '(omit both for the whole day; "00:00" to "24:00" says the same)'
        )
    return Window(days, start, end if end > start else end + _DAY)


def _clock(value: Any, key: str, *, allow_24: bool) -> int:
    """Seconds after midnight from "H:MM", "HH:MM" or "HH:MM:SS" (or a TOML local time in whole seconds)."""
    if isinstance(value, time) and value.tzinfo is None and not value.microsecond:
        return value.hour * 3600 + value.minute * 60 + value.second
    # Full-width digits and colons ("２０：００", as Japanese and Chinese input methods type them) fold to ASCII.
    found = _CLOCK.fullmatch(unicodedata.normalize("NFKC", value).strip()) if isinstance(value, str) else None
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    if found is None:
        raise ValueError(f'{key}: {shown} is not a time of day (write "HH:MM")')
    hours, minutes, seconds = int(found[1]), int(found[2]), int(found[3] or 0)
    if (hours, minutes, seconds) == (24, 0, 0):
        if allow_24:
            return _DAY
        raise ValueError(f'{key}: {shown} is the end of a day; a window starts at "23:59" at the latest')
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f'{key}: {shown} is not a time of day (write "HH:MM")')
    return hours * 3600 + minutes * 60 + seconds


def _days(value: Any, key: str) -> tuple[int, ...]:
    """Weekday numbers (0 = Monday) from "mon-fri", "mon,wed,fri", "fri-mon" (wrapping) or "monday"."""
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: {shown} is not a list of days ({_DAYS_HOW})")
    days: set[int] = set()
    for part in value.split(","):
        ends = [name.strip().lower() for name in part.split("-")]
        for name in ends:
            if name not in _DAYS:
                what = f"{json.dumps(name)} is not a day" if name else "a day is missing"
                raise ValueError(f"{key}: {shown}: {what} ({_DAYS_HOW})")
        if len(ends) > 2:
            raise ValueError(f"{key}: {shown}: {json.dumps(part.strip())} is not a range of days ({_DAYS_HOW})")
        first, last = _DAYS[ends[0]], _DAYS[ends[-1]]
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))  # fri-mon wraps through the weekend
    return tuple(sorted(days))


def _covers_the_week(windows: Sequence[Window]) -> bool:
    covered = bytearray(_WEEK)
    for window in windows:
        for day in window.days:
            start, end = day * _DAY + window.start, day * _DAY + window.end
            covered[start : min(end, _WEEK)] = b"\1" * (min(end, _WEEK) - start)
            covered[: max(end - _WEEK, 0)] = b"\1" * max(end - _WEEK, 0)  # Sunday night runs into Monday
    return all(covered)


def _clock_text(seconds: int) -> str:
    minutes, second = divmod(seconds, 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}" + (f":{second:02d}" if second else "")


def _hours_text(window: Window) -> str:
    if (window.start, window.end) == (0, _DAY):
        return "all day"
    end = window.end - _DAY if window.end > _DAY else window.end
    return f"{_clock_text(window.start)}–{_clock_text(end)}"


def _days_text(days: tuple[int, ...]) -> str:
    """ "mon-fri", "sat-sun", "mon,wed,fri", "fri-mon" or "daily", from weekday numbers."""
    if len(days) == 7:
        return "daily"
    # Runs of consecutive days around the week, each starting where the day before is not listed.
    runs = []
    for first in days:
        if (first - 1) % 7 in days:
            continue
        last = first
        while (last + 1) % 7 in days:
            last = (last + 1) % 7
        runs.append(_DAY_NAMES[first][:3] if first == last else f"{_DAY_NAMES[first][:3]}-{_DAY_NAMES[last][:3]}")
    return ",".join(runs)
