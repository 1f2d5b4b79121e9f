"""Adaptive polling, pure: how long until a task is worth asking about again. No I/O, no clock of its own.

done      final: polled slowly for `done_linger`, then dropped from the schedule
stop.*    may resume: polled slowly
pending   polled slowly until its start date and first calling window are near
running   every interval inside its calling windows; slowly outside them (it cannot progress there);
          more often when its progress rate says it is about to finish

The windows are an optimisation, and a guess never silences an alert: they are read in the campaigns' zone
(watcher/zone.py) and, while that is unknown, slow nothing that might call; and evidence beats the model: a task seen
at work inside a window believed closed is polled as if its windows were open for a day after (`contradicts`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import heapq
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo

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
    adaptive: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class WindowState:
    """Where `now` stands against a task's calling schedule."""

    open: bool  # calling may happen now (True when the task has no schedule, or it cannot be placed)
    opened_at: datetime | None  # start of the window `now` is in, when known
    next_open: datetime | None  # start of the next window, when not in one
    placed: bool = True  # False: the campaigns' zone is unknown, so only what is closed in every zone is closed
    doubted: bool = False  # the task was seen calling where the model said it could not: windows are ignored


# After a task was seen to change inside a window believed closed, its windows are ignored this long after the last
# such change: a full cycle of daily windows in which the model must be right again before it may slow anything.
DOUBT_FOR = timedelta(days=1)
# Calls under way when a window closes go on after it, and their ends move progress: a change this soon after the
# close is no evidence of calling outside the window (bench/campaign_day.py --calllog: without it, 9 of 131 campaigns
# a day had their windows doubted at 12:05 or 18:05, and were called stalled over lunch and in the evening).
CLOSE_GRACE = timedelta(minutes=10)
EARLIEST = timezone(timedelta(hours=14))  # the first zone to reach any date (Kiribati): no campaign calls sooner


def clock_seconds(text: str) -> int:
    """ "09:00" / "09:00:30" / "24:00" (as stored by `model.parse_schedule`) -> seconds after midnight."""
    parts = [int(p) for p in text.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


def _first_day(start_date: str) -> date | None:
    try:
        return date.fromisoformat(start_date[:10]) if start_date else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def _calendar(
    start_date: str, windows: tuple[tuple[str, str], ...], zone: tzinfo | None, today: date
) -> tuple[tuple[tuple[datetime, datetime], ...], datetime | None]:
    """The calling windows from yesterday to the day after tomorrow, sorted, and the first one if all are later.

    Cached: tasks share a handful of schedules and the answer changes once a day, while `window_state` runs on
    every poll of every task.
    """
    first_day = _first_day(start_date)
    spans = [(clock_seconds(a), clock_seconds(b)) for a, b in windows] or [(0, 0)]  # none: the whole day
    candidates: list[tuple[datetime, datetime]] = []
    for offset in (-1, 0, 1, 2):
        day = today + timedelta(days=offset)
        if first_day is not None and day < first_day:
            continue
        midnight = datetime.combine(day, time(0), tzinfo=zone)
        for start, end in spans:
            # Wall-clock arithmetic (aware datetimes of one zone add as naive ones): 09:00 is 09:00 on a DST day too.
            opens = midnight + timedelta(seconds=start)
            closes = midnight + timedelta(seconds=end)
            if closes <= opens:  # "22:00"-"02:00" crosses midnight; "00:00"-"00:00" is the whole day
                closes += timedelta(days=1)
            candidates.append((_instant(opens, zone), _instant(closes, zone)))
    later_start = None
    if not candidates and first_day is not None and first_day > today:
        first = datetime.combine(first_day, time(0), tzinfo=zone) + timedelta(seconds=min(s for s, _ in spans))
        later_start = _instant(first, zone)
    return tuple(sorted(candidates)), later_start


def _instant(wall: datetime, zone: tzinfo | None) -> datetime:
    """A wall-clock time of `zone` as the instant it names, still shown in `zone` but compared as an instant (through
    UTC, so that a time in a skipped or repeated hour is one instant, whichever side of the jump it is looked at)."""
    return wall.astimezone(UTC).astimezone(zone) if zone is not None else wall


_ALWAYS_OPEN = WindowState(True, None, None)
_UNPLACED = WindowState(True, None, None, placed=False)
_DOUBTED = WindowState(True, None, None, doubted=True)
_RECHECK = timedelta(hours=1)  # a remembered answer is trusted this long at most (a zone's UTC offset may change)
_MEMO_SIZE = 4096
_memo: dict[tuple[str, tuple[tuple[str, str], ...], tzinfo | None], tuple[datetime, datetime, WindowState]] = {}


def window_state(snapshot: TaskSnapshot, now: datetime, zone: tzinfo | None) -> WindowState:
    """Whether `now` (aware) is inside the task's calling windows, read in `zone` (None: the zone is unknown).

    A guess never silences an alert: with the zone unknown a window is closed only if it is closed in every zone (a
    start date not yet reached anywhere on Earth). And the status the API reports wins over the schedule: a running
    task has started, whatever its start date says.
    """
    start_date = "" if snapshot.status == Status.RUNNING else snapshot.start_date
    if not snapshot.windows and not start_date:
        return _ALWAYS_OPEN  # no schedule: it may call at any time (and this runs every poll)
    if zone is None:
        first_day = _first_day(start_date)
        if first_day is not None:
            starts = [clock_seconds(a) for a, _ in snapshot.windows] or [0]
            earliest = datetime.combine(first_day, time(0), tzinfo=EARLIEST) + timedelta(seconds=min(starts))
            if now < earliest:
                return WindowState(False, None, earliest, placed=False)
        return _UNPLACED
    # The answer holds until the next window opens or closes: remembered per schedule, since it is asked on every
    # poll of every task and tasks share a handful of schedules.
    key = (start_date, snapshot.windows, zone)
    memo = _memo.get(key)
    instant = now.astimezone(UTC)  # compared with the calendar's times (in `zone`) as instants, as the memo is
    if memo is not None and memo[0] <= instant < memo[1]:
        return memo[2]
    candidates, later_start = _calendar(start_date, snapshot.windows, zone, now.astimezone(zone).date())
    state, until = WindowState(False, None, later_start), later_start
    for opens, closes in candidates:
        if opens <= instant < closes:
            state, until = WindowState(True, opens, None), closes
            break
        if opens > instant:
            state, until = WindowState(False, None, opens), opens
            break
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[key] = (instant, min(until, instant + _RECHECK) if until is not None else instant + _RECHECK, state)
    return state


def offsets_open(snapshot: TaskSnapshot, when: datetime) -> frozenset[int]:
    """The whole-hour UTC offsets in which the task's windows are open at `when`: where it could be calling."""
    return frozenset(h for h in range(-12, 15) if window_state(snapshot, when, _HOURS[h]).open)


_HOURS = {h: timezone(timedelta(hours=h)) for h in range(-12, 15)}


def calling_windows(state: TaskState, now: datetime, zone: tzinfo | None) -> WindowState:
    """`window_state` of the task's last snapshot, unless evidence has put its windows in doubt (see DOUBT_FOR)."""
    doubted_at = state.windows_doubted_at
    if doubted_at is not None and now - doubted_at < DOUBT_FOR and state.snapshot.has_schedule:
        return _DOUBTED
    return window_state(state.snapshot, now, zone)


class Evidence(enum.Enum):
    """What two answers show of a task at work."""

    NONE = 0
    UPDATED = 1  # only updated while running: an operator's edit looks the same, so it counts when it repeats
    CALLING = 2  # its progress (or collection rate) moved: only calling moves them


def seen_at_work(before: TaskSnapshot, after: TaskSnapshot) -> Evidence:
    """Whether two answers show the task at work. A change of status alone is no sign of calling: operators stop and
    resume campaigns at any hour, and a task resumed at night calls only when its window opens."""
    for old, new in ((before.progress, after.progress), (before.collection_rate, after.collection_rate)):
        if old is not None and new is not None and old != new:
            return Evidence.CALLING
    if after.status == before.status == Status.RUNNING and after.updated_at != before.updated_at and before.updated_at:
        return Evidence.UPDATED  # a big campaign calls a long time between two whole percent, updating as it goes
    return Evidence.NONE


def closed_between(snapshot: TaskSnapshot, then: datetime, now: datetime, zone: tzinfo | None) -> bool:
    """Whether the task's window was closed at both times and did not open in between, and had closed `CLOSE_GRACE`
    before `then` already (the calls under way at the close end after it, and complete progress then)."""
    if zone is None or not snapshot.has_schedule:
        return False
    earlier = window_state(snapshot, then, zone)
    if earlier.open or window_state(snapshot, then - CLOSE_GRACE, zone).open:
        return False
    later = window_state(snapshot, now, zone)
    return not later.open and later.next_open == earlier.next_open


def contradicts(
    before: TaskSnapshot, after: TaskSnapshot, previous_look: datetime | None, now: datetime, zone: tzinfo | None
) -> Evidence:
    """Evidence against the model: what the task was seen doing between two looks that both found its window closed
    (the same closed stretch, so no window opened in between); Evidence.NONE when the model stands."""
    if previous_look is None:
        return Evidence.NONE
    seen = seen_at_work(before, after)
    if seen is Evidence.NONE or not closed_between(after, previous_look, now, zone):
        return Evidence.NONE
    return seen


def next_poll(
    state: TaskState | None, now: datetime, cadence: Cadence, eta: float | None = None, zone: tzinfo | None = None
) -> float | None:
    """Seconds until the task should be polled again, or None to drop it from the schedule (done long enough).

    `zone` is the one the task's windows are read in (None: unknown, and then they slow nothing that might call).
    """
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
        windows = calling_windows(state, now, zone)
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

    def spread(self, task_ids: list[int], now: float, over: float | None = None) -> None:
        """Add tasks with their first polls spread evenly over one interval from `now` (or `over` seconds, if
        shorter): no thundering herd."""
        span = self.interval if over is None else min(over, self.interval)
        for i, task_id in enumerate(task_ids):
            at = now + span * i / len(task_ids)
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
