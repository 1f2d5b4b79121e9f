"""Adaptive polling, pure: how long until a task is worth asking about again. No I/O, no clock of its own.

done      final: polled slowly for `done_linger`, then dropped from the schedule
stop.*    may resume: polled slowly
pending   polled slowly until its start date and first calling window are near
running   every interval inside its calling windows; slowly outside them (it cannot progress there);
          more often when its progress rate says it is about to finish
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time, timedelta, tzinfo

from .model import Status, TaskSnapshot, TaskState

NEAR_END = 10  # a running task less than this many intervals from its estimated end is polled faster:
NEAR_END_SPEEDUP = 3  # this many times per interval
_STOPPED = frozenset({Status.STOP_OPERATE, Status.STOP_TIMEOUT, Status.STOP_ABNORMAL})


@dataclasses.dataclass(frozen=True, slots=True)
class Cadence:
    """The polling knobs from `[watch]`."""

    interval: float = 30.0
    slow_interval: float = 300.0
    done_linger: float = 3600.0
    timezone: tzinfo | None = None  # of the calling windows; None: the host's
    adaptive: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class WindowState:
    """Where `now` stands against a task's calling schedule."""

    open: bool  # calling may happen now (True when the task has no schedule at all)
    opened_at: datetime | None  # start of the window `now` is in
    next_open: datetime | None  # start of the next window, when not in one


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def window_state(snapshot: TaskSnapshot, now: datetime, tz: tzinfo | None = None) -> WindowState:
    """Whether `now` is inside the task's calling windows (from option.startDate and option.startTime)."""
    if not snapshot.windows and not snapshot.start_date:
        return WindowState(True, None, None)  # no schedule: it may call at any time (and this runs every poll)
    local = now.astimezone(tz) if tz is not None else now.astimezone()
    zone = local.tzinfo
    try:
        first_day = date.fromisoformat(snapshot.start_date[:10]) if snapshot.start_date else None
    except ValueError:
        first_day = None
    windows = [(_hhmm(a), _hhmm(b)) for a, b in snapshot.windows]
    if not windows:
        windows = [(time(0, 0), time(0, 0))]  # no windows: the whole day, from the start date on
    candidates: list[tuple[datetime, datetime]] = []
    for offset in (-1, 0, 1, 2):
        day = local.date() + timedelta(days=offset)
        if first_day is not None and day < first_day:
            continue
        for start, end in windows:
            opens = datetime.combine(day, start, tzinfo=zone)
            closes = datetime.combine(day, end, tzinfo=zone)
            if closes <= opens:  # "22:00"-"02:00" crosses midnight; "00:00"-"00:00" is the whole day
                closes += timedelta(days=1)
            candidates.append((opens, closes))
    for opens, closes in sorted(candidates):
        if opens <= local < closes:
            return WindowState(True, opens, None)
    upcoming = [opens for opens, _ in sorted(candidates) if opens > local]
    if not upcoming and first_day is not None and first_day > local.date():
        start, _ = windows[0]
        upcoming = [datetime.combine(first_day, start, tzinfo=zone)]
    return WindowState(False, None, upcoming[0] if upcoming else None)


def next_poll(state: TaskState | None, now: datetime, cadence: Cadence, eta: float | None = None) -> float | None:
    """Seconds until the task should be polled again, or None to drop it from the schedule (done long enough)."""
    interval = cadence.interval
    if state is None or not cadence.adaptive:
        return interval
    slow = max(interval, cadence.slow_interval)
    snapshot = state.snapshot
    status = snapshot.status
    if status == Status.DONE:
        # progress_since is when the status last changed: here, when the task finished.
        done_for = (now - state.progress_since).total_seconds()
        return None if done_for >= cadence.done_linger else min(slow, cadence.done_linger - done_for)
    if status in _STOPPED:
        return slow
    if status in (Status.PENDING, Status.RUNNING):
        windows = window_state(snapshot, now, cadence.timezone)
        if not windows.open:
            if windows.next_open is None:
                return slow
            # Asleep until the window opens; then at the normal pace (it may start or progress any moment).
            return max(interval, min(slow, (windows.next_open - now).total_seconds()))
        if status == Status.RUNNING and eta is not None and eta < NEAR_END * interval:
            # About to finish at its pace: ask more often, so `finished` is heard soon after it happens.
            return max(min(interval, 1.0), interval / NEAR_END_SPEEDUP)
    return interval


def completion_eta(progress_then: int, then: datetime, progress_now: int, now: datetime) -> float | None:
    """Seconds until progress reaches 100 at the rate seen between two observations, or None if it did not move."""
    elapsed = (now - then).total_seconds()
    gained = progress_now - progress_then
    if elapsed <= 0 or gained <= 0:
        return None
    return max(0.0, (100 - progress_now) * elapsed / gained)
