"""Adaptive polling, pure: how long until a task is worth asking about again. No I/O, no clock of its own.

done      final: polled slowly for `done_linger`, then dropped from the schedule
stop.*    may resume: polled slowly
pending   polled slowly until its start date and first calling window are near
running   every interval inside its calling windows; slowly outside them (it cannot progress there);
          more often when its progress rate says it is about to finish
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
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


@functools.lru_cache(maxsize=1024)
def _calendar(
    start_date: str, windows: tuple[tuple[str, str], ...], zone: tzinfo | None, today: date
) -> tuple[tuple[tuple[datetime, datetime], ...], datetime | None]:
    """The calling windows from yesterday to the day after tomorrow, sorted, and the first one if all are later.

    Cached: tasks share a handful of schedules and the answer changes once a day, while `window_state` runs on
    every poll of every task.
    """
    try:
        first_day = date.fromisoformat(start_date[:10]) if start_date else None
    except ValueError:
        first_day = None
    spans = [(_hhmm(a), _hhmm(b)) for a, b in windows] or [(time(0, 0), time(0, 0))]  # none: the whole day
    candidates: list[tuple[datetime, datetime]] = []
    for offset in (-1, 0, 1, 2):
        day = today + timedelta(days=offset)
        if first_day is not None and day < first_day:
            continue
        for start, end in spans:
            opens = datetime.combine(day, start, tzinfo=zone)
            closes = datetime.combine(day, end, tzinfo=zone)
            if closes <= opens:  # "22:00"-"02:00" crosses midnight; "00:00"-"00:00" is the whole day
                closes += timedelta(days=1)
            candidates.append((opens, closes))
    later_start = None
    if not candidates and first_day is not None and first_day > today:
        later_start = datetime.combine(first_day, spans[0][0], tzinfo=zone)
    return tuple(sorted(candidates)), later_start


_ALWAYS_OPEN = WindowState(True, None, None)
_RECHECK = timedelta(hours=1)  # a remembered answer is trusted this long at most (the host's UTC offset may change)
_MEMO_SIZE = 4096
_memo: dict[tuple[str, tuple[tuple[str, str], ...], tzinfo | None], tuple[datetime, datetime, WindowState]] = {}


def window_state(snapshot: TaskSnapshot, now: datetime, tz: tzinfo | None = None) -> WindowState:
    """Whether `now` (aware) is inside the task's calling windows (from option.startDate and option.startTime)."""
    if not snapshot.windows and not snapshot.start_date:
        return _ALWAYS_OPEN  # no schedule: it may call at any time (and this runs every poll)
    # The answer holds until the next window opens or closes: remembered per schedule, since it is asked on every
    # poll of every task and tasks share a handful of schedules.
    key = (snapshot.start_date, snapshot.windows, tz)
    memo = _memo.get(key)
    if memo is not None and memo[0] <= now < memo[1]:
        return memo[2]
    local = now.astimezone(tz) if tz is not None else now.astimezone()
    candidates, later_start = _calendar(snapshot.start_date, snapshot.windows, local.tzinfo, local.date())
    state, until = WindowState(False, None, later_start), later_start
    for opens, closes in candidates:
        if opens <= local < closes:
            state, until = WindowState(True, opens, None), closes
            break
        if opens > local:
            state, until = WindowState(False, None, opens), opens
            break
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[key] = (now, min(until, now + _RECHECK) if until is not None else now + _RECHECK, state)
    return state


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


PaceMark = tuple[int, datetime]  # (progress, when) at the start of a running stretch


def pace(mark: PaceMark | None, snapshot: TaskSnapshot | None, now: datetime) -> tuple[PaceMark | None, float | None]:
    """The mark to keep for a task and its ETA: seconds to 100 % at the pace kept since it (re)started running."""
    if snapshot is None or snapshot.status != Status.RUNNING or snapshot.progress is None:
        return None, None
    progress = snapshot.progress
    if mark is None or progress < mark[0]:
        return (progress, now), None  # a fresh start (or a reset): the pace is measured from here
    return mark, completion_eta(mark[0], mark[1], progress, now)


def completion_eta(progress_then: int, then: datetime, progress_now: int, now: datetime) -> float | None:
    """Seconds until progress reaches 100 at the rate seen between two observations, or None if it did not move."""
    elapsed = (now - then).total_seconds()
    gained = progress_now - progress_then
    if elapsed <= 0 or gained <= 0:
        return None
    return max(0.0, (100 - progress_now) * elapsed / gained)


class Timetable:
    """Which task is due when, for one scheduler: a heap of (due, task) with lazy deletion. Pure; times are floats.

    Each task keeps the phase of its first poll (its *anchor*): a task's polls stay on its own grid of
    `anchor + k * interval`, so tasks spread over an interval on start stay spread however their delays change (a
    calling window opening for every task at 09:00, a 429 pause, an outage that failed every poll the same way), with
    no random jitter to widen the gap between two polls beyond the interval.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._heap: list[tuple[float, int]] = []
        self._due: dict[int, float] = {}  # task -> its live heap entry
        self._anchor: dict[int, float] = {}  # every task on the timetable, polled or not
        self._in_flight: set[int] = set()  # handed out by pop_due, not yet planned again (even if removed since)
        self._hinted: set[int] = set()  # asked to poll now while a poll was in flight

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._anchor

    def tasks(self) -> list[int]:
        """Every task on the timetable."""
        return list(self._anchor)

    def spread(self, task_ids: list[int], now: float) -> None:
        """Add tasks with their first polls spread evenly over one interval from `now`: no thundering herd."""
        for i, task_id in enumerate(task_ids):
            at = now + self.interval * i / len(task_ids)
            self._anchor[task_id] = at
            if task_id in self._in_flight:
                # Removed and added back while its poll was out: `plan` puts it back; a second entry now would
                # have two workers poll it at once.
                continue
            self._push(task_id, at)

    def retime(self, interval: float, now: float) -> None:
        """A new interval (a reload): phases spread evenly over it again; if shorter, every waiting task moves to its
        new slot (nobody waits longer than the new interval, and the spread holds at once)."""
        shorter = interval < self.interval
        self.interval = interval
        order = sorted(self._anchor, key=lambda t: (self._anchor[t] - now) % interval)
        for i, task_id in enumerate(order):
            self._anchor[task_id] = now + interval * i / len(order)
        if not shorter:
            return
        for task_id in list(self._due):
            # For a task that was to wait longer (slow, or backing off) this is one extra poll; the next plans again.
            self._push(task_id, now + (interval - _offgrid(now, self._anchor[task_id], interval)) % interval)

    def remove(self, task_id: int) -> None:
        """Take a task off the timetable (its heap entry goes stale and is skipped)."""
        self._anchor.pop(task_id, None)
        self._due.pop(task_id, None)
        self._hinted.discard(task_id)

    def release(self, task_id: int) -> None:
        """A task handed out by pop_due was not polled after all (unscheduled meanwhile): it is no longer in flight."""
        self._in_flight.discard(task_id)

    def next_due(self) -> float | None:
        """When the earliest task is due, or None if nothing is waiting."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: removed, or moved by a hint
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> tuple[int, float] | None:
        """The next (task, planned time) due at or before `now`; the task is in flight until `plan` is called."""
        due = self.next_due()
        if due is None or due > now:
            return None
        _, task_id = heapq.heappop(self._heap)
        del self._due[task_id]
        self._in_flight.add(task_id)
        return task_id, due

    def poll_now(self, task_id: int, now: float) -> bool:
        """Move a task to the front (a push hint); one in flight is polled again as soon as it is back."""
        if task_id not in self._anchor:
            return False
        if task_id in self._in_flight:
            self._hinted.add(task_id)
        elif self._due[task_id] > now:  # (an overdue entry stays: moved to `now`, it would queue behind others)
            self._push(task_id, now)
        return True

    def plan(self, task_id: int, planned: float, delay: float, now: float) -> float | None:
        """Put a polled task back, `delay` after its last plan and on its own grid; return when it is due."""
        self._in_flight.discard(task_id)
        anchor = self._anchor.get(task_id)
        if anchor is None:
            return None  # removed while its poll was in flight
        if task_id in self._hinted:
            self._hinted.discard(task_id)
            due = now
        else:
            due = planned + delay  # from the plan, not from when it ran: lag does not accumulate
            interval = self.interval
            off = _offgrid(due, anchor, interval) if delay >= interval else 0.0
            if off and delay > interval:
                # Onto its own grid, at most an interval later: a long wait (for a window to open, a slow pace, a
                # backoff) ends in this task's slot, not in the same instant as every other task's.
                due += interval - off
            elif off:
                # The usual interval after an off-grid poll (a hint): back to its own slot, no later; but not
                # within half an interval of the hinted poll (its own slot came right after the hint).
                due -= off if off <= interval / 2 else off - interval
            if due < now:
                # Fell behind (overload, a long pause): its next own slot, not a burst of catch-up polls.
                due = now + (interval - _offgrid(now, anchor, interval)) % interval
        self._push(task_id, due)
        return due

    def _push(self, task_id: int, due: float) -> None:
        self._due[task_id] = due
        heapq.heappush(self._heap, (due, task_id))


def _offgrid(t: float, anchor: float, interval: float) -> float:
    """How far `t` is past the last point of the grid `anchor + k * interval` (0 when on it, float noise aside)."""
    off = (t - anchor) % interval
    return 0.0 if off < 1e-6 or interval - off < 1e-6 else off
