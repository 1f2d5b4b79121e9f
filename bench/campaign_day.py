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
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from watcher.detect import Rules, detect
from watcher.model import TaskSnapshot, TaskState
from watcher.schedule import Cadence, PaceMark, Timetable, next_poll, pace
from watcher.zone import ZoneResolver

TZ = ZoneInfo("Asia/Tokyo")
DAY = datetime(2026, 11, 24, 0, 0, tzinfo=TZ)
WINDOWS = (("09:00", "12:00"), ("14:00", "18:00"))
FINAL = {"done", "stop.abnormal"}


@dataclass
class Task:
    """The truth: a task's status changes over the day, and how fast it calls inside its windows."""

    id: int
    start_date: str
    changes: list[tuple[float, str]]  # (seconds since midnight, status), sorted
    pace: float  # percent per calling second
    finals: dict[str, float] = field(default_factory=dict)  # status -> when it happened

    def status_at(self, t: float) -> str:
        status = "pending"
        for when, s in self.changes:
            if when <= t:
                status = s
        return status

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--interval", type=float, default=30.0, help="the fixed poller's interval (s)")
    parser.add_argument(
        "--adaptive-interval", type=float, default=None, help="the adaptive poller's base interval (default: the same)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
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
