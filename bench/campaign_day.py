"""A simulated campaign day: API requests and detection latency of adaptive polling against a fixed interval.

Pure simulation on a virtual clock (no network, no sleeping, seconds to run): each poll goes through what the daemon
does with an answer — `ZoneResolver.observe` (the campaigns' zone from the API's timestamps), `detect` (which keeps the
evidence against believed-closed windows), the ETA rule (`pace`), `next_poll` and the `Timetable` — while the fixed
poller asks every task every interval all day. Tasks call in Tokyo (windows 09-12 and 14-18 there) and have pending
periods (some start tomorrow), progress only inside their windows, completions, operator stops with resumes, and a few
abnormal stops (5 %, while calling). The adaptive poller is run with the zone configured, with it found from the
API's timestamps (written with their offset, or naive and learned: on the first day, from midnight with nothing
known, and on the days after, when the store remembers it), and with a wrong zone configured, with and without the
evidence rule.

    .venv/bin/python bench/campaign_day.py [--tasks 300] [--interval 30] [--adaptive-interval 45] [--seed 1]

With `--calllog` (issue 14: campaign health from the call log), the same day with a dialer behind each task (150 tasks
by default: the day holds ~0.7 million calls, each read 3-4 times; about 30 s a seed): lines that ring (answered or not), talk (answered: a log-normal of median 50 s, up to 15 min) and
dial again, so that calls per minute vary by task (small campaigns of 1,000-8,000 numbers; big ones of 20,000-60,000,
most of them creeping below 1 % per `stall_after`, i.e. calling with their percentage flat); an answered share of
25-45 %; progress is the share of numbers whose call has ended. Scripted truths: silent dialers (status `running`, no
call started from a given second: true stalls), blocked-number episodes (answered share 3 % for 30-90 min, in the
afternoon). Two watchers on the adaptive poller (zone configured), each through the real `detect` per poll: progress
only (`[health] calllog = false`) and with the call log, which also looks every `[health] every` as the daemon does
(`calllog_tasks`, `look_at_calls`, `_look`): the running tasks inside their windows, sorted by the start of their
range (`look_range`), 10 a request with the first one's range, the calls that started in it and have ENDED (the API
lists ended calls), pages of 100, and `detect_calls` per task. The table: requests (call-log pages added, and as a
share of the task polls), true stalls found and how long after the silence began, false stalls (on dialers that were
calling), collapses found and how long after the block began, recoveries, false drops.

    .venv/bin/python bench/campaign_day.py --calllog [--tasks 150] [--adaptive-interval 45] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from watcher.calllog import MAX_TASKS_PER_REQUEST, CallRecord
from watcher.client import CALLLOG_MAX_PAGES, CALLLOG_PAGE_SIZE
from watcher.detect import Rules, detect, detect_calls
from watcher.health import FIRST_LOOK_BACK, HealthRules, look_range
from watcher.model import Event, EventType, TaskSnapshot, TaskState
from watcher.schedule import Cadence, PaceMark, Timetable, calling_windows, next_poll, pace
from watcher.zone import ZoneResolver

TZ = ZoneInfo("Asia/Tokyo")
DAY = datetime(2026, 11, 24, 0, 0, tzinfo=TZ)
WINDOWS = (("09:00", "12:00"), ("14:00", "18:00"))
FINAL = {"done", "stop.abnormal"}


def status_at(changes: list[tuple[float, str]], t: float) -> str:
    """The status at `t` of a campaign whose status changes are these (sorted): pending before the first."""
    status = "pending"
    for when, s in changes:
        if when <= t:
            status = s
    return status


@dataclass
class Task:
    """The truth: a task's status changes over the day, and how fast it calls inside its windows."""

    id: int
    start_date: str
    changes: list[tuple[float, str]]  # (seconds since midnight, status), sorted
    pace: float  # percent per calling second
    finals: dict[str, float] = field(default_factory=dict)  # status -> when it happened

    def status_at(self, t: float) -> str:
        return status_at(self.changes, t)

    def progress_at(self, t: float) -> int:
        called = 0.0
        running_since = None
        for when, s in self.changes:
            if when > t:
                break
            if running_since is not None:
                called += calling_seconds(running_since, when)
                running_since = None
            if s == "running":
                running_since = when
        if running_since is not None:
            called += calling_seconds(running_since, t)
        return min(100, int(called * self.pace))


def calling_seconds(a: float, b: float) -> float:
    total = 0.0
    for start, end in ((9 * 3600, 12 * 3600), (14 * 3600, 18 * 3600)):
        total += max(0.0, min(b, end) - max(a, start))
    return total


def make_tasks(n: int, rng: random.Random) -> list[Task]:
    tasks = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.15:  # starts tomorrow: pending all day
            tasks.append(Task(i, "2026-11-25", [], 0.0))
            continue
        start = 9 * 3600 + rng.uniform(0, 2 * 3600)
        hours_of_calling = rng.uniform(2.0, 9.0)  # some finish today, some not
        pace = 100 / (hours_of_calling * 3600)
        changes = [(start, "running")]
        if kind < 0.25:  # an operator stops it for a while, then resumes
            stop = start + rng.uniform(600, 3 * 3600)
            changes += [(stop, "stop.operate"), (stop + rng.uniform(900, 3600), "running")]
        task = Task(i, "2026-11-24", changes, pace)
        if kind > 0.95:  # a fault stops it, while it is calling (outside its windows nothing runs that could fail)
            fault = start + rng.uniform(900, 4 * 3600)
            while calling_seconds(fault, fault + 1) == 0:
                fault += 600
            task.changes.append((fault, "stop.abnormal"))
        task.changes.sort()
        # When does it reach 100 % (if it does)? Scan in 10 s steps over the day.
        if "stop.abnormal" not in [s for _, s in task.changes]:
            for t in range(int(start), 86400, 10):
                if task.progress_at(t) >= 100:
                    task.changes.append((float(t), "done"))
                    break
        for when, s in task.changes:
            if s in FINAL:
                task.finals[s] = when
        tasks.append(task)
    return tasks


@dataclass(frozen=True)
class Mode:
    """How the adaptive poller knows the campaigns' zone, as the daemon would."""

    name: str
    configured: tzinfo | None  # watch.timezone (None: found from the API)
    timestamps: str = "offset"  # how the API writes updatedAt: "offset" (+09:00) or "naive"
    evidence: bool = True  # the daemon's rule; off only to show what it bounds
    remembered: int | None = None  # an offset learned on an earlier day (the store keeps it across restarts)


def last_change(task: Task, t: float) -> float:
    """When the task's status or progress last changed, at or before `t` (the API's updatedAt), to the second."""
    status_changed = max((when for when, _ in task.changes if when <= t), default=0.0)
    progress = task.progress_at(t)
    if progress == 0:
        return status_changed
    # Progress only grows between status changes: the first whole second it had this value (found on whole seconds,
    # so that every look at one value gives one answer, as the API would).
    lo, hi = int(status_changed), int(t)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if task.progress_at(mid) == progress else (mid + 1, hi)
    return max(status_changed, float(hi))


def snapshot(task: Task, t: float, timestamps: str = "offset") -> TaskSnapshot:
    updated = DAY + timedelta(seconds=last_change(task, t))
    return TaskSnapshot(
        id=task.id,
        status=task.status_at(t),
        progress=task.progress_at(t),
        start_date=task.start_date,
        windows=WINDOWS,
        updated_at=updated.isoformat(timespec="seconds")
        if timestamps == "offset"
        else updated.strftime("%Y-%m-%d %H:%M:%S"),
    )


RULES = Rules(progress_step=10, stall_after=timedelta(minutes=15))


def simulate(
    tasks: list[Task], cadence: Cadence, rng: random.Random, mode: Mode | None = None
) -> tuple[int, list[float]]:
    """Returns (requests, detection latencies of done/failed in seconds)."""
    order = [task.id for task in tasks]
    rng.shuffle(order)
    timetable = Timetable(cadence.interval)  # the daemon's: first polls spread over an interval, phases kept
    timetable.spread(order, rng.uniform(0, cadence.interval / len(order)))
    zones = ZoneResolver(mode.configured if mode else TZ, learned=mode.remembered if mode else None)
    seen: dict[int, TaskState] = {}
    looked: dict[int, datetime] = {}
    marks: dict[int, PaceMark] = {}
    detected: dict[int, float] = {}
    requests = 0
    by_id = {task.id: task for task in tasks}
    while (item := timetable.pop_due(86400.0)) is not None:
        task_id, t = item
        task = by_id[task_id]
        now = DAY + timedelta(seconds=t)
        requests += 1
        current = snapshot(task, t, mode.timestamps if mode else "offset")
        previous = seen.get(task_id)
        before = looked.get(task_id)
        looked[task_id] = now
        if not cadence.adaptive:
            seen[task_id] = TaskState(current, now)
            if current.status in FINAL and task_id not in detected:
                detected[task_id] = t - task.finals[current.status]
            timetable.plan(task_id, t, cadence.interval, now=t)
            continue
        # What the daemon does with an answer: the zone, detection (and its evidence rule), then the next poll.
        zones.observe(task_id, previous.snapshot if previous else None, current, now, before)
        zone = zones.for_task(task_id)
        state, _ = detect(
            previous, current, now, RULES, zone=zone, previous_look=before if mode is None or mode.evidence else None
        )
        seen[task_id] = state
        if current.status in FINAL and task_id not in detected:
            detected[task_id] = t - task.finals[current.status]
        mark, eta = pace(marks.pop(task_id, None), current, now)  # the daemon's ETA rule
        if mark is not None:
            marks[task_id] = mark
        delay = next_poll(state, now, cadence, eta, zone.tz)
        if delay is None:
            timetable.remove(task_id)  # done long enough: dropped, as the daemon does
        else:
            timetable.plan(task_id, t, delay, now=t)
    return requests, list(detected.values())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


MODES = (
    Mode("zone configured (Asia/Tokyo)", TZ),
    Mode("zone from the API's offsets", None, "offset"),
    Mode("zone learned from naive timestamps, first day", None, "naive"),
    Mode("zone learned from naive timestamps, the days after", None, "naive", remembered=9 * 60),
    Mode("wrong zone configured (UTC)", ZoneInfo("UTC")),
    Mode("wrong zone configured (UTC), without the evidence rule", ZoneInfo("UTC"), evidence=False),
)


# -- Campaign health from the call log (issue 14) ------------------------------------------------------------------

CALL_WINDOWS = ((9 * 3600, 12 * 3600), (14 * 3600, 18 * 3600))  # WINDOWS, in seconds since midnight in Tokyo
MINUTE = 60.0
BLOCKED_SHARE = 0.03  # the answered share while carriers label the numbers as spam


@dataclass
class Dialer:
    """The truth of one campaign with its dialer: status changes, and every call it makes (whole seconds, as the API
    writes them), calling only while running, inside its windows and not silent."""

    id: int
    kind: str  # "pending", "small", "big, creeping" (below 1 % per stall_after) or "big"
    numbers: int
    lines: int  # calls at once: each line rings, talks, hangs up and dials the next number a few seconds later
    share: float  # answered share outside blocked episodes
    start_date: str
    changes: list[tuple[float, str]]
    silences: list[tuple[float, float]] = field(default_factory=list)  # dialer silent, status running (true stalls)
    blocks: list[tuple[float, float]] = field(default_factory=list)  # answered share ~3 %
    starts: list[int] = field(default_factory=list)  # per call, by start
    ends: list[int] = field(default_factory=list)
    answered: list[bool] = field(default_factory=list)
    sorted_ends: list[int] = field(default_factory=list)
    # The true stalls to find: each silence within the stretches where the task is running inside its windows (a
    # silence over the lunch break, or over an operator's stop and resume, is one stall before and one after).
    stalls: list[tuple[float, float]] = field(default_factory=list)

    def status_at(self, t: float) -> str:
        return status_at(self.changes, t)

    def progress_at(self, t: float) -> int:
        return min(100, 100 * bisect.bisect_right(self.sorted_ends, t) // self.numbers) if self.numbers else 0

    def last_change(self, t: float) -> float:
        """The API's updatedAt: when the status or the (whole) percentage last changed."""
        status_changed = max((when for when, _ in self.changes if when <= t), default=0.0)
        progress = self.progress_at(t)
        if progress == 0:
            return status_changed
        first = -(-progress * self.numbers // 100)  # the fewest ended calls that make this percentage
        return max(status_changed, float(self.sorted_ends[first - 1]))

    def snapshot(self, t: float) -> TaskSnapshot:
        return TaskSnapshot(
            id=self.id,
            status=self.status_at(t),
            progress=self.progress_at(t),
            start_date=self.start_date,
            windows=WINDOWS,
            updated_at=(DAY + timedelta(seconds=self.last_change(t))).isoformat(timespec="seconds"),
        )

    def calling(self, t: float) -> bool:
        """Whether the dialer starts calls at `t` (running, inside a window, not silent)."""
        return self.status_at(t) == "running" and calling_seconds(t, t + 1) > 0 and not self.silent(t)

    def silent(self, t: float) -> bool:
        return any(s <= t < e for s, e in self.silences)


def _periods(changes: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """Where a task with these status changes may call: running, inside its windows."""
    running: list[tuple[float, float]] = []
    since = None
    for when, s in [*changes, (86400.0, "end")]:
        if since is not None:
            running.append((since, when))
            since = None
        if s == "running":
            since = when
    return [(max(a, w0), min(b, w1)) for a, b in running for w0, w1 in CALL_WINDOWS if min(b, w1) > max(a, w0)]


def _minus(periods: list[tuple[float, float]], holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = periods
    for h0, h1 in holes:
        out = [piece for a, b in out for piece in ((a, min(b, h0)), (max(a, h1), b)) if piece[1] > piece[0]]
    return out


def _dial(dialer: Dialer, periods: list[tuple[float, float]], rng: random.Random) -> None:
    """Every call of the day: each line dials, rings (answered after 4-25 s, or gives up after 25-45 s, or busy in
    2-8 s), talks (answered: a log-normal of median 50 s, up to 15 min), then dials again 1-6 s after hanging up."""
    lines = [(periods[0][0] + rng.uniform(0, 10), i) for i in range(dialer.lines)] if periods else []
    heapq.heapify(lines)
    calls: list[tuple[int, int, bool]] = []
    while lines and len(calls) < dialer.numbers:
        t, line = heapq.heappop(lines)
        where = next((p for p in periods if p[1] > t), None)
        if where is None:
            continue  # the day's calling is over for this line
        if t < where[0]:
            heapq.heappush(lines, (where[0] + rng.uniform(0, 10), line))  # waits for the window (or the resume)
            continue
        blocked = any(b0 <= t < b1 for b0, b1 in dialer.blocks)
        answered = rng.random() < (BLOCKED_SHARE if blocked else dialer.share)
        if answered:
            length = rng.uniform(4, 25) + min(900.0, rng.lognormvariate(math.log(50), 0.9))
        elif rng.random() < 0.8:
            length = rng.uniform(25, 45)
        else:
            length = rng.uniform(2, 8)
        start = int(t)
        end = start + max(1, round(length))
        calls.append((start, end, answered))
        heapq.heappush(lines, (end + rng.uniform(1, 6), line))
    calls.sort()
    dialer.starts = [c[0] for c in calls]
    dialer.ends = [c[1] for c in calls]
    dialer.answered = [c[2] for c in calls]
    dialer.sorted_ends = sorted(dialer.ends)


def make_dialers(n: int, rng: random.Random) -> list[Dialer]:
    """The campaigns of §2's day, each with a dialer; scripted: silent dialers (status running), creeping big
    campaigns, blocked-number episodes."""
    dialers = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.15:
            dialers.append(Dialer(i, "pending", 1000, 1, 0.35, "2026-11-25", []))
            continue
        start = 9 * 3600 + rng.uniform(0, 2 * 3600)
        changes = [(start, "running")]
        if rng.random() < 0.10:  # an operator stops it for a while, then resumes
            stop = start + rng.uniform(600, 3 * 3600)
            changes += [(stop, "stop.operate"), (stop + rng.uniform(900, 3600), "running")]
        share = rng.uniform(0.25, 0.45)
        if kind < 0.60:
            numbers, lines, label = rng.randint(1000, 8000), rng.randint(2, 12), "small"
        else:
            numbers = rng.randint(20_000, 60_000)
            # A line makes ~1.2 calls a minute: below 1 % per stall_after takes fewer than numbers / 1,800 lines.
            if rng.random() < 0.6:
                lines, label = rng.randint(2, max(2, numbers // 2400)), "big, creeping"
            else:
                lines, label = rng.randint(30, 50), "big"
        dialer = Dialer(i, label, numbers, lines, share, "2026-11-24", sorted(changes))
        periods = _periods(dialer.changes)
        roll = rng.random()
        if roll < 0.15:  # the dialer goes silent, the status stays running
            room = [p for p in periods if p[1] - p[0] >= 45 * MINUTE]
            if room:
                p0, p1 = rng.choice(room)
                s = rng.uniform(p0 + 10 * MINUTE, p1 - 35 * MINUTE)
                e = s + rng.uniform(30, 120) * MINUTE if rng.random() < 0.7 else 86400.0
                dialer.silences.append((s, e))
        elif roll < 0.30:  # carriers label its numbers: a blocked-number episode in the afternoon window
            length = rng.uniform(30, 90) * MINUTE
            b = rng.uniform(14.5 * 3600, 18 * 3600 - length)
            if any(p0 <= b and b + length <= p1 for p0, p1 in periods):
                dialer.blocks.append((b, b + length))
        _dial(dialer, _minus(periods, dialer.silences), rng)
        if len(dialer.starts) >= numbers:  # every number called: done when the last call ends
            done = float(max(dialer.ends))
            dialer.changes = [c for c in dialer.changes if c[0] < done] + [(done, "done")]
        # Campaigns that ended before their scripted silence or block never had one.
        dialer.silences = [(s, e) for s, e in dialer.silences if dialer.status_at(s) == "running"]
        dialer.blocks = [(b0, b1) for b0, b1 in dialer.blocks if dialer.status_at(b0) == "running"]
        # Stretches of 30 min or more are counted (shorter ones, cut by a stop or the end of a window, may go
        # unflagged; a stall flagged in them is still true).
        pieces = _minus(_periods(dialer.changes), _minus([(0.0, 86400.0)], dialer.silences))
        dialer.stalls = [(a, b) for a, b in pieces if b - a >= 30 * MINUTE]
        dialers.append(dialer)
    return dialers


@dataclass
class Watched:
    """What one watcher did over the day."""

    polls: int = 0
    looks: int = 0  # call-log requests for page 1 (one per batch of up to 10 tasks)
    pages: int = 0  # call-log requests, every page counted
    pages_from_last_look: int = 0  # the pages had each range started at the batch's previous look (no lookback)
    truncated: int = 0  # looks that held more than the client's page limit
    records: int = 0  # records read
    closed_looks: int = 0  # tasks looked at while their real windows were closed (windows in doubt)
    events: dict[int, list[tuple[float, str, str]]] = field(default_factory=dict)  # task -> (t, type, evidence)
    stalled_at: dict[int, list[tuple[float, bool]]] = field(default_factory=dict)  # task -> stalled state changes
    counted: int = 0  # ended calls the looks counted (health.calls at the end of the day)
    look_seconds: float = 0.0  # CPU time in detect_calls


def _keep(watched: Watched, task_id: int, t: float, events: list[Event], state: TaskState) -> None:
    for e in events:
        watched.events.setdefault(task_id, []).append((t, e.type, str(e.data.get("evidence", ""))))
    changes = watched.stalled_at.setdefault(task_id, [(0.0, False)])
    if changes[-1][1] != state.stalled:
        changes.append((t, state.stalled))


def simulate_health(dialers: list[Dialer], cadence: Cadence, rules: Rules, rng: random.Random) -> Watched:
    """The adaptive poller of §2 (zone configured) and, if `rules.health.calllog`, a look at the call log every
    `[health] every` as the daemon's `calllog_tasks`/`look_at_calls`/`_look` do it: running tasks inside their windows,
    sorted by the start of their ranges (`look_range`), 10 a request, one range per request (its first task's), pages
    of 100 of the calls that started in it and have ended (the API lists ended calls), `detect_calls` per task."""
    order = [d.id for d in dialers]
    rng.shuffle(order)
    timetable = Timetable(cadence.interval)
    timetable.spread(order, rng.uniform(0, cadence.interval / len(order)))
    zones = ZoneResolver(TZ)
    every = rules.health.every.total_seconds()
    next_look = rng.uniform(0, every) if rules.health.calllog else math.inf
    by_id = {d.id: d for d in dialers}
    states: dict[int, TaskState] = {}
    looked: dict[int, datetime] = {}
    marks: dict[int, PaceMark] = {}
    records: dict[int, dict[int, CallRecord]] = {}  # task -> call index -> its record, for the ranges still read
    watched = Watched()
    while True:
        item = timetable.pop_due(min(next_look, 86400.0))
        if item is not None:
            task_id, t = item
            dialer = by_id[task_id]
            now = DAY + timedelta(seconds=t)
            watched.polls += 1
            current = dialer.snapshot(t)
            previous = states.get(task_id)
            before = looked.get(task_id)
            looked[task_id] = now
            zones.observe(task_id, previous.snapshot if previous else None, current, now, before)
            zone = zones.for_task(task_id)
            state, events = detect(previous, current, now, rules, zone=zone, previous_look=before)
            states[task_id] = state
            _keep(watched, task_id, t, events, state)
            mark, eta = pace(marks.pop(task_id, None), current, now)
            if mark is not None:
                marks[task_id] = mark
            delay = next_poll(state, now, cadence, eta, zone.tz)
            if delay is None:
                timetable.remove(task_id)
            else:
                timetable.plan(task_id, t, delay, now=t)
            continue
        if next_look >= 86400.0:
            break
        t, now = next_look, DAY + timedelta(seconds=next_look)
        next_look += every
        due: list[tuple[datetime, int]] = []
        for task_id in order:
            known = states.get(task_id)
            if known is None or known.missing or known.snapshot.status != "running":
                continue
            zone = zones.for_task(task_id)
            if zone.known and calling_windows(known, now, zone.tz).open:
                due.append((look_range(known.health, now, rules.health)[0], task_id))
        due.sort()
        if calling_seconds(t, t + 1) == 0:
            watched.closed_looks += len(due)
        for i in range(0, len(due), MAX_TASKS_PER_REQUEST):
            batch = due[i : i + MAX_TASKS_PER_REQUEST]
            since = (batch[0][0] - DAY).total_seconds()
            # Had each range started at its previous look instead (what the lookback adds), for comparison.
            last = [states[task_id].health for _, task_id in batch]
            since_last = min(
                (h.last_look - DAY).total_seconds() if h is not None and h.last_look is not None else since
                for h in last
            )
            listed: dict[int, list[CallRecord]] = {}
            n = n_last = 0
            for _, task_id in batch:
                dialer = by_id[task_id]
                lo, hi = bisect.bisect_left(dialer.starts, since), bisect.bisect_right(dialer.starts, t)
                for j in range(lo, hi):
                    if dialer.ends[j] > t:
                        continue  # under way: not listed yet
                    n += 1
                    n_last += dialer.starts[j] >= since_last
                    cache = records.setdefault(task_id, {})
                    record = cache.get(j)
                    if record is None:
                        record = cache[j] = CallRecord(
                            task_id,
                            DAY + timedelta(seconds=dialer.starts[j]),
                            dialer.answered[j],
                            DAY + timedelta(seconds=dialer.ends[j]),
                            dialer.ends[j] - dialer.starts[j],
                        )
                    listed.setdefault(task_id, []).append(record)
            pages = max(1, -(-n // CALLLOG_PAGE_SIZE))
            watched.looks += 1
            watched.pages += min(pages, CALLLOG_MAX_PAGES)
            watched.pages_from_last_look += max(1, -(-n_last // CALLLOG_PAGE_SIZE))
            watched.records += n
            if pages > CALLLOG_MAX_PAGES:
                watched.truncated += 1  # (the records are not cut here: a truncated look is counted, not modelled)
            for _, task_id in batch:
                zone = zones.for_task(task_id)
                started = time.process_time()
                state, events = detect_calls(states[task_id], listed.get(task_id, []), now, rules, zone=zone)
                watched.look_seconds += time.process_time() - started
                states[task_id] = state
                _keep(watched, task_id, t, events, state)
        # Records older than any range a next look can ask for are not needed again.
        oldest = t - FIRST_LOOK_BACK.total_seconds() - every
        for task_id, cache in records.items():
            first = bisect.bisect_left(by_id[task_id].starts, oldest)
            for j in [j for j in cache if j < first]:
                del cache[j]
    watched.counted = sum(s.health.calls for s in states.values() if s.health is not None)
    return watched


@dataclass
class Judged:
    """A watcher's day against the truth."""

    stalls: int = 0  # true stalls (silent dialers)
    stall_latency: list[float] = field(default_factory=list)  # found by a stall event while silent: from its start
    carried: int = 0  # already flagged when the silence began (a false stall still standing), no event needed
    false_stalls: int = 0  # stall events while the dialer was calling
    false_stall_tasks: int = 0
    false_closed: int = 0  # of which while the task's real windows were closed
    missed_stalls: list[str] = field(default_factory=list)
    false_by_kind: dict[str, int] = field(default_factory=dict)
    collapses: int = 0
    collapse_latency: list[float] = field(default_factory=list)  # from the block's start
    recoveries: int = 0
    recovery_latency: list[float] = field(default_factory=list)  # from the block's end
    false_drops: int = 0
    missed_collapses: list[str] = field(default_factory=list)


def judge(dialers: list[Dialer], watched: Watched) -> Judged:
    out = Judged()
    for dialer in dialers:
        events = watched.events.get(dialer.id, [])
        stalls = [(t, ev) for t, kind, ev in events if kind == EventType.STALLED.value]
        # True: flagged while the dialer was silent and the status running (in its windows or not).
        true_at = {t for t, _ in stalls if dialer.silent(t) and dialer.status_at(t) == "running"}
        for s, e in dialer.stalls:
            out.stalls += 1
            inside = [t for t, _ in stalls if s <= t < e]
            if inside:
                out.stall_latency.append(inside[0] - s)
            elif [flag for when, flag in watched.stalled_at.get(dialer.id, [(0.0, False)]) if when <= s][-1]:
                out.carried += 1
            else:
                out.missed_stalls.append(f"task {dialer.id} ({dialer.kind}, silent {s / 3600:.2f}-{e / 3600:.2f} h)")
        false = [t for t, _ in stalls if t not in true_at]
        out.false_stalls += len(false)
        out.false_closed += sum(1 for t in false if calling_seconds(t, t + 1) == 0)
        out.false_stall_tasks += bool(false)
        if false:
            out.false_by_kind[dialer.kind] = out.false_by_kind.get(dialer.kind, 0) + len(false)
        drops = [t for t, kind, _ in events if kind == EventType.ANSWER_RATE_DROPPED.value]
        ups = [t for t, kind, _ in events if kind == EventType.ANSWER_RATE_RECOVERED.value]
        matched: set[float] = set()
        for b0, b1 in dialer.blocks:
            found = [t for t in drops if b0 <= t < b1 + 10 * MINUTE]
            calls = bisect.bisect_left(dialer.starts, b1) - bisect.bisect_left(dialer.starts, b0)
            if found:
                out.collapses += 1
                out.collapse_latency.append(found[0] - b0)
                matched.update(found)
                back = [t for t in ups if t >= found[0]]
                if back:
                    out.recoveries += 1
                    out.recovery_latency.append(back[0] - b1)
            else:
                out.missed_collapses.append(
                    f"task {dialer.id} ({dialer.kind}, {calls} calls in {(b1 - b0) / 60:.0f} min)"
                )
        out.false_drops += sum(1 for t in drops if t not in matched)
    return out


def _minutes(values: list[float]) -> str:
    if not values:
        return "–"
    return " / ".join(f"{v / 60:.1f}" for v in (pct(values, 50), pct(values, 95), max(values)))


def health_main(args: argparse.Namespace) -> None:
    started = time.process_time()
    dialers = make_dialers(args.tasks, random.Random(args.seed))
    made = time.process_time() - started
    cadence = Cadence(interval=args.adaptive_interval or 45.0, slow_interval=300.0, done_linger=3600.0)
    stall_after = timedelta(minutes=15)
    kinds: dict[str, int] = {}
    for d in dialers:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    calls = sum(len(d.starts) for d in dialers)
    creeping = [d for d in dialers if d.kind == "big, creeping"]
    rates = sorted(len(d.starts) / (calling_seconds(0, 86400) / 60) for d in dialers if d.starts)
    print(
        f"{args.tasks} tasks over one day (Asia/Tokyo windows 09-12, 14-18), adaptive polling base "
        f"{cadence.interval:g} s, stall_after 15 min, [health] defaults (every 2 min); seed {args.seed}\n"
        f"tasks: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}; {calls:,} calls "
        f"(per task and calling minute, p50 {pct(rates, 50):.1f}, max {max(rates):.1f}); "
        f"{sum(len(d.silences) for d in dialers)} silent dialers ({sum(len(d.stalls) for d in dialers)} stalls of 30 min or "
        f"more inside the windows), {sum(len(d.blocks) for d in dialers)} "
        f"blocked-number episodes, {sum(d.status_at(86400) == 'done' for d in dialers)} done; "
        f"creeping campaigns call 1 % in {pct([d.numbers / 100 / (len(d.starts) / 420) for d in creeping if d.starts], 50):.0f} min (p50)"
        f" [made in {made:.1f} s]\n"
    )
    rows = []
    for name, calllog in (("progress only (calllog = false)", False), ("with the call log", True)):
        rules = Rules(
            progress_step=10,
            stall_after=stall_after,
            health=HealthRules(calllog=calllog, stall_after=stall_after),
        )
        started = time.process_time()
        watched = simulate_health(dialers, cadence, rules, random.Random(args.seed + 1))
        rows.append((name, watched, judge(dialers, watched), time.process_time() - started))
    polls = rows[0][1].polls
    print(
        "| watcher | task polls | call-log requests (pages; looks) | added | true stalls found | latency p50 / p95 / max"
        " (min) | false stalls (tasks) | collapses found | latency p50 / p95 / max (min) | recovered | false drops |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, w, j, _ in rows:
        found = len(j.stall_latency)
        carried = f" (+{j.carried} already flagged)" if j.carried else ""
        print(
            f"| {name} | {w.polls:,} | {w.pages:,} ({w.looks:,}) | {w.pages / polls:.0%} "
            f"| {found}/{j.stalls}{carried} | {_minutes(j.stall_latency)} | {j.false_stalls} ({j.false_stall_tasks}) "
            f"| {j.collapses}/{sum(len(d.blocks) for d in dialers)} | {_minutes(j.collapse_latency)} "
            f"| {j.recoveries} | {j.false_drops} |"
        )
    print()
    for name, w, j, seconds in rows:
        print(f"{name}: simulated in {seconds:.1f} s CPU", end="")
        if w.looks:
            print(
                f" ({w.look_seconds:.1f} s in detect_calls); {w.records:,} records read for {w.counted:,} calls counted "
                f"of {calls:,} made ({1 - w.counted / calls:.2%} never counted); {w.records / max(1, w.counted):.1f} "
                f"reads per call; pages had each range begun at its previous look: {w.pages_from_last_look:,}; "
                f"looks over {CALLLOG_MAX_PAGES} pages: {w.truncated}; tasks looked at while their windows were closed: "
                f"{w.closed_looks:,}",
                end="",
            )
        if j.false_by_kind:
            print(
                f"; false stalls by kind: {j.false_by_kind}, {j.false_closed} of them while its windows were closed",
                end="",
            )
        if j.missed_stalls:
            print(f"; true stalls not found: {'; '.join(j.missed_stalls)}", end="")
        if j.missed_collapses and w.looks:
            print(f"; collapses missed: {'; '.join(j.missed_collapses)}", end="")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="default 300; 150 with --calllog")
    parser.add_argument("--interval", type=float, default=30.0, help="the fixed poller's interval (s)")
    parser.add_argument(
        "--adaptive-interval", type=float, default=None, help="the adaptive poller's base interval (default: the same)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--calllog", action="store_true", help="campaign health instead: progress only against the call log (issue 14)"
    )
    args = parser.parse_args()
    if args.calllog:
        args.tasks = args.tasks or 150
        health_main(args)
        return
    args.tasks = args.tasks or 300
    tasks = make_tasks(args.tasks, random.Random(args.seed))
    finals = sum(1 for t in tasks if t.finals)
    fixed = Cadence(interval=args.interval, adaptive=False)
    adaptive = Cadence(interval=args.adaptive_interval or args.interval, slow_interval=300.0, done_linger=3600.0)
    rows = []
    fixed_requests, fixed_latencies = simulate(tasks, fixed, random.Random(args.seed + 1))
    rows.append((f"fixed, every {fixed.interval:g} s", fixed_requests, fixed_latencies))
    for mode in MODES:
        requests, latencies = simulate(tasks, adaptive, random.Random(args.seed + 1), mode)
        rows.append((f"adaptive, base {adaptive.interval:g} s, {mode.name}", requests, latencies))
    print(
        f"{args.tasks} tasks, interval {args.interval:g} s, one day (Asia/Tokyo windows 09-12, 14-18); "
        f"{finals} tasks finish or fail that day; seed {args.seed}\n"
    )
    print("| poller | API requests | fewer requests | finished/failed detected p50 | p95 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, requests, latencies in rows:
        fewer = "" if requests == fixed_requests else f"{fixed_requests / requests:.1f}×"
        print(
            f"| {name} | {requests:,} | {fewer} | {pct(latencies, 50):.1f} s | {pct(latencies, 95):.1f} s "
            f"| {max(latencies, default=float('nan')):.1f} s |"
        )


if __name__ == "__main__":
    main()
