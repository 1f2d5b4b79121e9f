"""A simulated campaign day: API requests and detection latency of adaptive polling against a fixed interval.

Pure simulation on a virtual clock (no network, no sleeping, seconds to run): the same `watcher.schedule.next_poll`,
ETA rule (`pace`) and `Timetable` the daemon uses decide each task's next poll from what the watcher has seen; the fixed poller asks every task
every interval all day. Tasks have pending periods (some start tomorrow), two calling windows a day, progress only
inside them, completions, operator stops with resumes, and a few abnormal stops (5 %, while calling).

    .venv/bin/python bench/campaign_day.py [--tasks 300] [--interval 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from watcher.model import TaskSnapshot, TaskState
from watcher.schedule import Cadence, PaceMark, Timetable, next_poll, pace

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


def snapshot(task: Task, t: float) -> TaskSnapshot:
    return TaskSnapshot(
        id=task.id,
        status=task.status_at(t),
        progress=task.progress_at(t),
        start_date=task.start_date,
        windows=WINDOWS,
    )


def simulate(tasks: list[Task], cadence: Cadence, rng: random.Random) -> tuple[int, list[float]]:
    """Returns (requests, detection latencies of done/failed in seconds)."""
    order = [task.id for task in tasks]
    rng.shuffle(order)
    timetable = Timetable(cadence.interval)  # the daemon's: first polls spread over an interval, phases kept
    timetable.spread(order, rng.uniform(0, cadence.interval / len(order)))
    seen: dict[int, TaskState] = {}
    marks: dict[int, PaceMark] = {}
    detected: dict[int, float] = {}
    requests = 0
    by_id = {task.id: task for task in tasks}
    while (item := timetable.pop_due(86400.0)) is not None:
        task_id, t = item
        task = by_id[task_id]
        now = DAY + timedelta(seconds=t)
        requests += 1
        current = snapshot(task, t)
        previous = seen.get(task_id)
        changed = previous is None or (previous.snapshot.status, previous.snapshot.progress) != (
            current.status,
            current.progress,
        )
        state = TaskState(current, now if changed or previous is None else previous.progress_since)
        seen[task_id] = state
        if current.status in FINAL and task_id not in detected:
            detected[task_id] = t - task.finals[current.status]
        mark, eta = pace(marks.pop(task_id, None), current, now)  # the daemon's ETA rule
        if mark is not None:
            marks[task_id] = mark
        delay = next_poll(state, now, cadence, eta)
        if delay is None:
            timetable.remove(task_id)  # done long enough: dropped, as the daemon does
        else:
            timetable.plan(task_id, t, delay, now=t)
    return requests, list(detected.values())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


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
    adaptive = Cadence(
        interval=args.adaptive_interval or args.interval, slow_interval=300.0, done_linger=3600.0, timezone=TZ
    )
    rows = []
    for name, cadence in (
        (f"fixed, every {fixed.interval:g} s", fixed),
        (f"adaptive, base {adaptive.interval:g} s", adaptive),
    ):
        requests, latencies = simulate(tasks, cadence, random.Random(args.seed + 1))
        rows.append((name, requests, pct(latencies, 50), pct(latencies, 95), max(latencies, default=float("nan"))))
    print(
        f"{args.tasks} tasks, interval {args.interval:g} s, one day (Asia/Tokyo windows 09-12, 14-18); "
        f"{finals} tasks finish or fail that day; seed {args.seed}\n"
    )
    print("| poller | API requests | finished/failed detected p50 | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    for name, requests, p50, p95, worst in rows:
        print(f"| {name} | {requests:,} | {p50:.1f} s | {p95:.1f} s | {worst:.1f} s |")
    print(f"\nadaptive uses {rows[0][1] / rows[1][1]:.1f}x fewer requests")


if __name__ == "__main__":
    main()
