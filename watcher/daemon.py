"""The daemon: one task group owning the scheduler, its `[watch] concurrency` poll workers, and the dispatcher."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .calllog import MAX_TASKS_PER_REQUEST
from .client import CALLLOG_MAX_PAGES, VoiceFoxClient
from .config import Config, TaskConfig
from .config import task_id as task_id_checked
from .detect import Rules, detect, detect_calls, detect_missing, make_event
from .dispatch import Dispatcher
from .errors import (
    ApiError,
    AuthenticationError,
    PermissionDenied,
    RateLimited,
    StaleState,
    StoreError,
    TaskNotFound,
    TransientApiError,
)
from .health import HealthRules, look_range
from .metrics import Metrics
from .model import Event, EventType, Status, TaskState
from .pace import AdaptiveRate, ApiGate
from .retry import auth_pause, poll_failure_delay, rate_limit_pause
from .rules import Unknowns, compile_rules
from .schedule import Cadence, PaceMark, Timetable, calling_windows, next_poll, pace
from .stores import StateStore
from .windows import Windows
from .zone import ZoneResolver

_log = structlog.get_logger("watcher.daemon")

HEARTBEAT_EVERY = 1.0  # seconds between ticks of the main loop's heartbeat
SCHEDULER_TICK = 0.002  # the scheduler hands out every poll due within this much of now, rather than sleep for less
IDLE_WAKE = 3600.0  # the scheduler's longest sleep (a hint or a poll planned sooner cuts it short)
FAILURE_LOG_EVERY = 300.0  # the same cause of failure is logged at most once per this many seconds
DELIVERED_RETENTION = 7 * 86400.0
MISSING_AFTER_404S = 2  # consecutive 404s before a task the API served before is announced missing
WATCHER_EVENT_NAMESPACE = uuid.UUID(
    "0b7f3d64-2f0e-4a55-8d2f-6c1f5bb0c9a1"
)  # delivered outbox rows are kept this long for `watcher status`, then pruned


GAINED_SPREAD = 0.5  # seconds over which the first polls of tasks taken over from another replica are spread
PUSH_DATA_MAX_AGE = 3600.0  # a task.end push older than this is not attached to a `finished` event
CALLLOG_FORBIDDEN_RETRY = 3600.0  # a call log refused with 403 is tried again after this long (a permission granted)


def knobs(config: Config) -> tuple[Rules, Cadence]:
    """The detection rules and the polling cadence a config asks for."""
    watch, health = config.watch, config.health
    rules = Rules(
        progress_step=watch.progress_step,
        stall_after=timedelta(seconds=watch.stall_after),
        task_rules=compile_rules((r.name, r.when, r.description) for r in config.rules),
        health=HealthRules(
            # At least twice per stall_after: the call log's evidence is never older than half of it (a stall_after
            # of seconds, as in tests and the demo, is not judged on a look minutes old).
            every=timedelta(seconds=min(health.every, watch.stall_after / 2)),
            stall_after=timedelta(seconds=watch.stall_after),
            calllog=health.calllog,
            window=health.window,
            min_calls=health.min_calls,
            answer_rate_drop=health.answer_rate_drop,
            answer_rate_floor=health.answer_rate_floor,
        ),
    )
    cadence = Cadence(
        interval=watch.interval,
        slow_interval=watch.slow_interval,
        done_linger=watch.done_linger,
        adaptive=watch.adaptive,
    )
    return rules, cadence


def utcnow() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


class Daemon:
    """Polls every configured task, detects transitions, records them durably, and wakes the dispatcher."""

    def __init__(
        self,
        config: Config,
        *,
        client: VoiceFoxClient,
        store: StateStore,
        states: Mapping[int, TaskState],
        dispatcher: Dispatcher,
        clock: Callable[[], datetime] = utcnow,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        metrics: Metrics | None = None,
        remembered_zone: str | None = None,
        shared: bool = False,
        added: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        # The tasks added at run time (`watcher tasks add`, kept in the store) sit beside the config file's: `config`
        # is the file's with them as [[watch.task]] entries, so everything downstream sees one list.
        self.file_config = config
        self._added: dict[int, dict[str, str]] = _usable(added or {})
        config = with_added(config, self._added)
        self.config = config
        self.on_tasks_changed: Callable[[], None] | None = None  # replicas: trade leases at once
        self._adopted: set[int] = set()  # added by a push of their end, not yet polled
        self.metrics = metrics or Metrics()
        self._client = client
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._wall = wall_clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rules, self._cadence = knobs(config)
        self._unknown_rules = Unknowns()  # logs a rule that cannot be evaluated on a task, once
        self._timetable = Timetable(config.watch.interval)
        self._receive_due: MemoryObjectReceiveStream[tuple[int, float]] | None = None  # workers' intake, while running
        self._workers = 0
        self._nap: anyio.CancelScope | None = None  # the scheduler's sleep, cut short when a task becomes due sooner
        self._nap_until = math.inf
        self._lag = self.metrics.schedule_lag.observe
        self.gate = ApiGate(monotonic, sleep)
        self.rate = AdaptiveRate(config.api.max_rps, monotonic, sleep)
        self.states: dict[int, TaskState] = dict(states)  # as the store has them (`await store.load_states()`)
        self._failures: dict[int, int] = {}
        self._not_found: dict[int, int] = {}  # consecutive 404s per task
        self._last_failure_log: dict[tuple[int, str], float] = {}
        self._suppressed: dict[tuple[int, str], int] = {}
        self._hints: dict[int, tuple[float, dict[str, Any]]] = {}  # task -> (when, VoiceFox's task.end data)
        self._marks: dict[int, PaceMark] = {}  # task -> (progress, when) at the start of its run
        self._planned: dict[int, float] = {}  # task -> the delay planned after its last answer (readiness)
        self.dropped: set[int] = set()  # finished tasks no longer polled
        # The campaigns' zone, the look times and the warnings about windows (watcher/windows.py).
        self.windows = Windows(config, store, self.states, clock(), remembered=remembered_zone)
        self._unseen_noted: set[int] = set()  # never-served tasks whose 404 is in the store for `watcher status`
        self._tg: anyio.abc.TaskGroup | None = None
        # API reachability, for voicefox.watcher.api_unreachable / api_recovered.
        self.last_answer = monotonic()  # when a poll last got an answer from the API (readiness)
        self.heartbeat = monotonic()  # ticks while the main loop is alive (health)
        self.heartbeat_hooks: list[Callable[[], None]] = []  # called on every tick: the systemd watchdog ping
        self._unreachable_since: datetime | None = None
        self._unreachable_cause = ""  # what the announced outage was: the recovery says it is over
        # Replicas (watcher/replicas.py): a shared daemon polls only the tasks its coordinator hands it (`own`), and
        # announces the API's outages only while it holds that lease; a push for a task another replica polls is
        # passed on (`forward_hint`). Not shared: every task, and the API's outages, are this daemon's.
        self._owned: set[int] | None = set() if shared else None
        self.announces_api = not shared
        self.forward_hint: Callable[[int], None] | None = None
        # The call log (watcher/health.py): one lock per task, so that a poll and a look at its calls never both
        # start from the same state (the later write would lose the other's news); off until this monotonic time
        # after a 403; tasks whose zone is unknown, each said once.
        self._task_locks: dict[int, anyio.Lock] = {}
        self._calllog_off_until = 0.0
        self._calllog_refused = False
        self._calllog_unzoned: set[int] = set()
        self.calllog_max_pages = CALLLOG_MAX_PAGES  # pages one look reads at most (the rest: at the next look)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver what is pending, then poll every task on its schedule until cancelled."""
        tasks = self.config.watch.ids
        send, receive = anyio.create_memory_object_stream[tuple[int, float]](0)  # no buffer: a hand-off
        self._timetable = Timetable(self.config.watch.interval)
        try:
            with send, receive:
                async with anyio.create_task_group() as tg:
                    self._tg, self._receive_due = tg, receive
                    await tg.start(self._dispatcher.run)
                    tg.start_soon(self._housekeeping)
                    tg.start_soon(self._heartbeat)
                    self._timetable.spread([t for t in tasks if self._owns(t)], self._monotonic())
                    self._start_workers()
                    tg.start_soon(self._scheduler, send)
                    tg.start_soon(self._calllog_loop)
                    _log.info("watcher.started", tasks=len(tasks), interval=self.config.watch.interval)
                    await self.windows.show()
                    task_status.started()
        finally:
            # Stopped: a reload or hint now has nothing to start or wake, and another run() starts afresh.
            self._tg, self._receive_due, self._workers = None, None, 0
            self._nap, self._nap_until = None, math.inf

    def watched_statuses(self) -> Iterator[str]:
        """The last known status of every task this daemon watches (for the tasks-by-status gauge; replicas each
        count their own, so the sum over replicas counts each task once)."""
        for task_id in self.config.watch.ids:
            if self._owns(task_id):
                state = self.states.get(task_id)
                yield state.snapshot.status if state is not None else "unknown"

    def call_health(self) -> Iterator[TaskState]:
        """The state of every task this daemon watches whose call log has been read (for the call gauges; replicas
        each give their own tasks)."""
        for task_id in self.config.watch.ids:
            if self._owns(task_id) and (state := self.states.get(task_id)) is not None and state.health is not None:
                yield state

    def _owns(self, task_id: int) -> bool:
        return self._owned is None or task_id in self._owned

    def owned(self) -> set[int]:
        """The watched tasks this daemon polls (all of them unless shared among replicas)."""
        if self._owned is None:
            return set(self.config.watch.ids)
        return set(self._owned)

    def own(self, tasks: set[int], fresh: Mapping[int, TaskState]) -> None:
        """A shared daemon's tasks from now on; `fresh` holds the stored state of those it gains (another replica
        may have written them since): they are polled at once, those it loses no longer."""
        if self._owned is None:
            return
        watched = set(self.config.watch.ids)
        tasks = tasks & watched
        gained, lost = tasks - self._owned, self._owned - tasks
        self._owned = set(tasks)
        for task_id in lost:
            self._forget(task_id)
        for task_id in gained:
            if task_id in fresh:
                self.states[task_id] = fresh[task_id]
            else:
                self.states.pop(task_id, None)
        if gained or lost:
            _log.info("replica.tasks", gained=sorted(gained), lost=sorted(lost), polled=len(self._owned))
        if gained and self._tg is not None:
            # Soon, not over a whole interval: the replica that polled them before may have done so an interval ago
            # (it died, or handed them over), and a task that changes hands again before its first poll here would
            # go unheard for longer still. The concurrency limit and api.max_rps keep the burst in bounds.
            self._timetable.spread(sorted(gained), self._monotonic(), over=GAINED_SPREAD)
            self._wake_scheduler(self._monotonic())

    def _forget(self, task_id: int) -> None:
        """Take a task off the schedule and out of this daemon's per-task memory."""
        self._timetable.remove(task_id)
        for memory in (self._failures, self._not_found, self._marks, self._hints, self._planned):
            memory.pop(task_id, None)
        lock = self._task_locks.get(task_id)
        if lock is not None and not lock.locked():
            del self._task_locks[task_id]  # (a held one stays: its holder and a next poll must share it)
        self._calllog_unzoned.discard(task_id)
        self.dropped.discard(task_id)

    @property
    def zones(self) -> ZoneResolver:
        """The campaigns' zone as this daemon resolves it."""
        return self.windows.zones

    @property
    def api_outage(self) -> tuple[datetime, str] | None:
        """Since when the API has been unreachable (as announced) and the kind of failure; None while it answers."""
        if self._unreachable_since is None:
            return None
        return self._unreachable_since, self._unreachable_cause

    def zone_summary(self) -> tuple[str, str, int]:
        """The campaigns' zone, how it was found, and how many tasks' windows are in doubt (for /metrics)."""
        return self.windows.summary(self._clock())

    def scheduled(self) -> list[int]:
        """The tasks being polled: the watched ones, less those finished long ago."""
        return sorted(self._timetable.tasks())

    def reload(self, config: Config) -> None:
        """Take a new config file: schedule added tasks, unschedule removed ones, new [watch] knobs (the tasks added
        at run time stay)."""
        self.file_config = config
        self._apply(with_added(config, self._added))

    # -- tasks added at run time -------------------------------------------------------------------------------

    async def add_task(self, task_id: int, labels: Mapping[str, str], *, adopted: bool = False) -> bool:
        """Watch a task from now on, and after a restart (`watcher tasks add`); return whether it is new here. A task
        the config file lists already is watched once (the labels given here apply only if the file gives none).
        `adopted`: added because VoiceFox pushed its end (`[push] adopt`): if the API confirms it is done, that is
        announced, not only observed."""
        task_id = task_id_checked(task_id)  # ValueError before anything is stored: a bad id must not be kept
        new = await self._store.add_task(task_id, labels, self._wall())
        self._added[task_id] = dict(labels)
        if adopted and task_id not in self.states:
            self._adopted.add(task_id)
        self._apply(with_added(self.file_config, self._added))
        _log.info("tasks.added", task_id=task_id, labels=dict(labels), new=new)
        return new

    async def remove_task(self, task_id: int) -> str:
        """Stop watching a task added at run time: "removed", "configured" (the file lists it: edit the file), or
        "unknown"."""
        if task_id in self.file_config.watch.ids:
            # The file's tasks are read-only here; an add of the same task is forgotten (the file still lists it).
            if await self._store.remove_task(task_id):
                self._added.pop(task_id, None)
                self._apply(with_added(self.file_config, self._added))
            return "configured"
        if not await self._store.remove_task(task_id):
            return "unknown"
        self._added.pop(task_id, None)
        self._apply(with_added(self.file_config, self._added))
        _log.info("tasks.removed", task_id=task_id)
        return "removed"

    async def refresh_added(self) -> None:
        """Read the tasks added at run time again (another replica added or removed one)."""
        try:
            added = await self._store.added_tasks()
        except StoreError as exc:
            _log.error("store.read_failed", error=str(exc))
            return
        fresh = _usable({task_id: task.labels for task_id, task in added.items()})
        if fresh != self._added:
            self._added = fresh
            self._apply(with_added(self.file_config, self._added), tell=False)

    def task_list(self) -> list[dict[str, Any]]:
        """Every watched task: where it comes from, its labels and what is known of it (`watcher tasks list`)."""
        configured = set(self.file_config.watch.ids)
        out = []
        for task_id in self.config.watch.ids:
            state = self.states.get(task_id)
            source = "config" if task_id not in self._added else "both" if task_id in configured else "added"
            out.append(
                {
                    "id": task_id,
                    "source": source,
                    "labels": self.config.watch.labels.get(task_id, {}),
                    "name": state.snapshot.name if state else "",
                    "status": state.snapshot.status if state else "",
                    "progress": state.snapshot.progress if state else None,
                }
            )
        return out

    def _apply(self, config: Config, *, tell: bool = True) -> None:
        """Run with a new effective config: schedule added tasks, unschedule removed ones, new [watch] knobs."""
        old_ids, new_ids = set(self.config.watch.ids), set(config.watch.ids)
        added = [t for t in config.watch.ids if t not in old_ids]
        removed = [t for t in self.config.watch.ids if t not in new_ids]
        self.config = config
        self._rules, self._cadence = knobs(config)
        self.windows.reconfigure(config, removed)
        if config.watch.interval != self._timetable.interval:
            self._timetable.retime(config.watch.interval, self._monotonic())  # a shorter pace now, not after a wait
        for task_id in removed:
            self._forget(task_id)
        if self._owned is not None:
            self._owned -= set(removed)
        if self._tg is not None:
            self._tg.start_soon(self.windows.show)
            self._timetable.spread([t for t in added if self._owns(t)], self._monotonic())
            self._start_workers()
            self._wake_scheduler(self._monotonic())
        if tell and (added or removed) and self.on_tasks_changed is not None:
            self.on_tasks_changed()

    def _start_workers(self) -> None:
        assert self._tg is not None
        while self._workers < self.config.watch.concurrency:
            self._workers += 1
            self._tg.start_soon(self._worker)

    async def _scheduler(self, send: MemoryObjectSendStream[tuple[int, float]]) -> None:
        """Hand each task to a free worker when it is due: one timer for all tasks, not a sleeping task per task."""
        timetable = self._timetable
        now = self._monotonic()
        while True:
            item = timetable.pop_due(now + SCHEDULER_TICK)
            if item is not None:
                if self._finished_long_ago(item[0]):
                    timetable.release(item[0])
                else:
                    # Waits for a free worker: `concurrency` polls at most in flight. Not send_nowait: the checkpoint
                    # in send() spreads hand-outs over loop iterations; without it the dispatcher starved under load.
                    await send.send(item)
                continue
            now = self._monotonic()
            due = timetable.next_due()
            wait = IDLE_WAKE if due is None else min(IDLE_WAKE, due - now)
            if wait > SCHEDULER_TICK:
                self._nap_until = now + wait
                with anyio.CancelScope() as self._nap:
                    await self._sleep(wait)
                self._nap = None
                self._nap_until = math.inf
                now = self._monotonic()

    def _wake_scheduler(self, due: float) -> None:
        """A task became due before the scheduler means to wake: wake it now."""
        if due < self._nap_until and self._nap is not None:
            self._nap.cancel()

    async def _worker(self) -> None:
        assert self._receive_due is not None
        timetable = self._timetable
        async for task_id, planned in self._receive_due:
            if task_id not in timetable:
                timetable.release(task_id)  # unscheduled while it waited
            else:
                # Checked with the poll in hand: polls already handed out when a 429 arrived must wait too.
                await self.gate.wait()
                await self.rate.acquire()
                started = self._monotonic()
                self._lag(max(0.0, started - planned))
                ok = await self.poll(task_id)
                delay = self.next_delay(task_id, ok)
                if delay is None:
                    self._drop(task_id)
                    timetable.release(task_id)
                elif (due := timetable.plan(task_id, planned, delay, self._monotonic())) is not None:
                    self._wake_scheduler(due)
            if self._workers > self.config.watch.concurrency:
                self._workers -= 1  # [watch] concurrency was lowered by a reload
                return

    def next_delay(self, task_id: int, ok: bool = True) -> float | None:
        """Seconds from a poll's plan to the next (after a poll that got an answer, or not), or None when the task
        leaves the schedule."""
        if not ok:
            return poll_failure_delay(self.config.watch.interval, self._failures.get(task_id, 1))
        state = self.states.get(task_id)
        now = self._clock()
        delay = next_poll(state, now, self._cadence, self._eta(task_id, state, now), self.windows.zone_for(task_id).tz)
        if delay is not None:
            self._planned[task_id] = delay
        return delay

    def answer_expected_within(self) -> float | None:
        """The longest the API may rightly stay unheard: the shortest delay planned after any polled task's last answer
        (never below the interval; a task not answered yet counts an interval); None when no task is polled at all.
        Readiness follows it, so that a night of slow polling (every task outside its windows, or stopped) is not
        mistaken for an outage. The delays as planned, not as they would be planned now: that one shrinks as a window
        nears, while the poll planned for the opening is still to come."""
        interval = self.config.watch.interval
        planned = self._planned
        shortest = min(
            (
                planned.get(task_id, interval)
                for task_id in self.config.watch.ids
                if task_id not in self.dropped and self._owns(task_id)
            ),
            default=None,
        )
        return None if shortest is None else max(interval, shortest)

    def _eta(self, task_id: int, state: TaskState | None, now: datetime) -> float | None:
        """Seconds until a running task reaches 100 % at the pace it has kept since it (re)started running."""
        mark, eta = pace(self._marks.get(task_id), state.snapshot if state else None, now)
        if mark is None:
            self._marks.pop(task_id, None)
        else:
            self._marks[task_id] = mark
        return eta

    def _finished_long_ago(self, task_id: int) -> bool:
        """True (and the task leaves the schedule, once, with a log line) if it finished over done_linger ago."""
        state = self.states.get(task_id)
        # Only a finished task can leave the schedule: no calendar arithmetic for the others on every poll.
        if state is None or state.snapshot.status != Status.DONE:
            return False
        if next_poll(state, self._clock(), self._cadence) is not None:
            return False
        self._drop(task_id)
        return True

    def _drop(self, task_id: int) -> None:
        """Take a finished task off the schedule, saying so once."""
        if task_id not in self.dropped:
            self.dropped.add(task_id)
            state = self.states.get(task_id)
            since = f" since {state.progress_since.isoformat()}" if state is not None else ""
            _log.info("task.dropped", task_id=task_id, reason=f"done{since}; no longer polled (watch.done_linger)")
        self._timetable.remove(task_id)

    def hint(self, task_id: int, data: dict[str, Any] | None = None, *, forward: bool = True) -> bool:
        """A push says the task changed: poll it now (or have the replica that polls it do so). False if the task is
        on no schedule."""
        now = self._monotonic()
        if not self._timetable.poll_now(task_id, now):
            if (
                forward
                and self.forward_hint is not None
                and task_id in self.config.watch.ids
                and task_id not in self.dropped
                and not self._owns(task_id)
            ):
                self.forward_hint(task_id)
                return True
            return False
        if data is not None:
            self._hints[task_id] = (now, data)
        self._wake_scheduler(now)
        return True

    async def poll_all(self) -> bool:
        """Poll every task once (for `watcher once`); return whether every poll succeeded (skipped ones did not)."""
        results: dict[int, bool] = {}
        limiter = anyio.CapacityLimiter(self.config.watch.concurrency)

        async def one(task_id: int) -> None:
            async with limiter:
                # After a 429 or a refused token, the rest of this round is skipped rather than waited for: a
                # one-shot run must not sleep for an hour's Retry-After.
                results[task_id] = self.gate.not_before <= self._monotonic() and await self.poll(task_id)

        async with anyio.create_task_group() as tg:
            for task_id in self.config.watch.ids:
                tg.start_soon(one, task_id)
        return all(results.values())

    async def poll(self, task_id: int) -> bool:
        """Poll one task and record what changed; return False if the API did not give an answer."""
        previous = self.states.get(task_id)
        try:
            snapshot = await self._client.get_task(task_id)
        except TaskNotFound as exc:
            self.metrics.polls.labels("not_found").inc()
            await self._api_answered()
            if previous is None:
                self._log_failure(task_id, "not_found", str(exc), hint="check watch.tasks: VoiceFox has no such task")
                await self._note_unseen(task_id, "not found: the API answers 404 (check watch.tasks)")
                return False
            # One 404 may be a proxy's or a deploy's hiccup: a task is missing only when the API says so twice in
            # a row, so a single bad answer never announces every task as gone.
            self._not_found[task_id] = self._not_found.get(task_id, 0) + 1
            if self._not_found[task_id] >= MISSING_AFTER_404S:
                async with self._lock(task_id):
                    previous = self.states.get(task_id)  # (a look may have recorded a newer state meanwhile)
                    state, events = detect_missing(previous, self._clock())
                    if state is not None and state != previous:
                        await self._record(task_id, state, events)
            return True
        except AuthenticationError as exc:
            self.metrics.polls.labels("auth_refused").inc()
            self.gate.refused += 1
            pause = auth_pause(self.gate.refused)
            self.gate.pause(pause)
            self._log_failure(
                0, "auth", str(exc), level="error", hint="check api.token; every poll is paused", retry_in=pause
            )
            await self._api_failed(exc)  # a refused token blinds the watcher as surely as an outage
            return False
        except RateLimited as exc:
            self.metrics.polls.labels("rate_limited").inc()
            self._rate_limited(exc)
            return False
        except TransientApiError as exc:
            self.metrics.polls.labels("failed").inc()
            failures = self._failures[task_id] = self._failures.get(task_id, 0) + 1
            # An outage fails every task the same way: one line per cause for all of them, not one per task.
            self._log_failure(0, exc.__class__.__name__, str(exc), task_id=task_id, failures=failures)
            await self._api_failed(exc)
            return False
        except ApiError as exc:
            self.metrics.polls.labels("failed").inc()
            failures = self._failures[task_id] = self._failures.get(task_id, 0) + 1
            self._log_failure(task_id, exc.__class__.__name__, str(exc), failures=failures)
            return False
        self.metrics.polls_ok.inc()
        await self._api_answered()
        self._not_found.pop(task_id, None)
        self.gate.rate_limited = self.gate.refused = 0
        if self._failures.pop(task_id, None):
            _log.debug("poll.recovered", task_id=task_id)
            if not self._failures and self._last_failure_log:
                # Every task answers again: say so once, and let the next failure be logged at once.
                _log.info("poll.recovered", causes=sorted({cause for _, cause in self._last_failure_log}))
                self._last_failure_log.clear()
                self._suppressed.clear()
        async with self._lock(task_id):
            # Read again under the lock: a look at the task's calls may have recorded a newer state meanwhile.
            previous = self.states.get(task_id)
            now = self._clock()
            looked = await self.windows.look(task_id, previous, snapshot, now)
            zone = self.windows.zone_for(task_id)
            state, events = detect(previous, snapshot, now, self._rules, zone=zone, previous_look=looked)
            self._unknown_rules(task_id, snapshot, self._rules.task_rules)
            if task_id in self._adopted:
                self._adopted.discard(task_id)
                if previous is None and snapshot.status == Status.DONE:
                    # First sight invents no transition, but here VoiceFox pushed this end and the API confirms it.
                    events.append(make_event(EventType.FINISHED, now, snapshot, None, firstSight=True, adopted=True))
            if state.windows_doubted_at == now:
                self.windows.contradicted(task_id, snapshot, zone, looked, now)
            if state != previous:
                await self._record(task_id, state, events)
        return True

    def _rate_limited(self, exc: RateLimited) -> None:
        """A 429, to a task poll or a look at the call log: one budget, so every request pauses for Retry-After
        (doubling without one) and the rate in use is halved."""
        self.rate.backoff()
        self.gate.rate_limited = 0 if exc.retry_after is not None else self.gate.rate_limited + 1
        pause = rate_limit_pause(exc.retry_after, self.gate.rate_limited)
        self.gate.pause(pause)
        self._log_failure(0, "rate_limited", str(exc), retry_in=round(pause, 1))

    def _lock(self, task_id: int) -> anyio.Lock:
        lock = self._task_locks.get(task_id)
        if lock is None:
            lock = self._task_locks[task_id] = anyio.Lock()
        return lock

    # -- the call log ------------------------------------------------------------------------------------------

    async def _calllog_loop(self) -> None:
        """Look at the call log of the tasks that can be calling, every `[health] every`."""
        while True:
            started = self._monotonic()
            await self.look_at_calls()
            every = self._rules.health.every.total_seconds()
            if any(
                self._owns(t) and t not in self.states and t not in self._failures and t not in self._unseen_noted
                for t in self.config.watch.ids
            ):
                # Tasks not polled yet (just started, or just added): their first look follows their first poll,
                # not a whole `every` later.
                every = min(every, self.config.watch.interval)
            await self._sleep(max(0.1, every - (self._monotonic() - started)))

    def calllog_tasks(self, now: datetime) -> list[tuple[datetime, int]]:
        """The tasks whose calls the next look reads, each with the start of its range: watched here, running, and
        inside their calling windows (or windows that cannot be placed: unsure, the call log is read)."""
        rules = self._rules.health
        workspace_known = self.zones.zone().known
        out: list[tuple[datetime, int]] = []
        for task_id in self.config.watch.ids:
            state = self.states.get(task_id)
            if (
                state is None
                or state.missing
                or state.snapshot.status != Status.RUNNING
                or not self._owns(task_id)
                or task_id in self.dropped
            ):
                continue
            if not workspace_known:
                # The call log's times are naive local times of the workspace (the zone of watch.timezone or of the
                # API's timestamps; a [[watch.task]] timezone places a campaign's windows, not the API's clock): read
                # in an unknown zone they could be hours off. Progress alone judges this task's stalls meanwhile.
                if task_id not in self._calllog_unzoned:
                    self._calllog_unzoned.add(task_id)
                    _log.info(
                        "calllog.no_zone",
                        task_id=task_id,
                        hint="the campaigns' time zone is not known yet: set watch.timezone to read its call log now",
                    )
                continue
            zone = self.windows.zone_for(task_id)
            if not calling_windows(state, now, zone.tz).open:
                continue
            out.append((look_range(state.health, now, rules)[0], task_id))
        return sorted(out)

    async def look_at_calls(self) -> int:
        """One look at the call log of every task that can be calling, up to 10 tasks per request, within the API's
        shared budget; return how many requests were made (0 when the call log is off)."""
        if not self._rules.health.calllog or self._monotonic() < self._calllog_off_until:
            return 0
        # Sorted by the start of their ranges: tasks read for the first time (an hour back) go together.
        items = self.calllog_tasks(self._clock())
        asked = 0
        for i in range(0, len(items), MAX_TASKS_PER_REQUEST):
            batch = items[i : i + MAX_TASKS_PER_REQUEST]
            asked += 1
            if not await self._look(batch[0][0], [task_id for _, task_id in batch]):
                return asked
        return asked

    async def _pace(self) -> None:
        # The call log shares the task polls' budget: a pause after a 429 or a refused token, and api.max_rps.
        await self.gate.wait()
        await self.rate.acquire()

    async def _look(self, since: datetime, task_ids: list[int]) -> bool:
        """Read the calls of up to 10 tasks since `since` and judge each task's; False if the call log gave no
        answer (the rest of this round is not asked)."""
        workspace = self.zones.zone().tz
        if workspace is None:
            return False  # no longer known since this round began (a learned offset dropped): read nothing
        until = self._clock()
        looks = self.metrics.calllog_looks
        try:
            log = await self._client.call_log(
                task_ids, since, until, tz=workspace, pace=self._pace, max_pages=self.calllog_max_pages
            )
        except PermissionDenied as exc:
            looks.labels("forbidden").inc()
            self._calllog_off_until = self._monotonic() + CALLLOG_FORBIDDEN_RETRY
            if not self._calllog_refused:
                self._calllog_refused = True
                _log.warning(
                    "calllog.forbidden",
                    error=str(exc),
                    hint="the token may not read the call log: stalls rest on progress alone, answer rates are not"
                    " judged; grant it the call log, or set [health] calllog = false",
                    retry_in=CALLLOG_FORBIDDEN_RETRY,
                )
            return False
        except RateLimited as exc:
            looks.labels("rate_limited").inc()
            self._rate_limited(exc)
            return False
        except AuthenticationError:
            looks.labels("failed").inc()
            return False  # the task polls pause on a refused token and say so
        except ApiError as exc:
            looks.labels("failed").inc()
            # Until it answers again the looks grow stale, and stalls rest on progress (health.silent_for).
            self._log_failure(0, "calllog", str(exc), tasks=len(task_ids))
            return False
        looks.labels("ok").inc()
        if self._calllog_refused:
            self._calllog_refused = False
            _log.info("calllog.allowed", hint="the call log answers again: stalls and answer rates use it")
        looked = until
        if not log.complete:
            # Cut short by the page limit: this look saw the calls up to the latest start it read, no further (the
            # order of the pages is the API's): that is as far as it tells, and where the next look goes on from.
            looked = min(until, max((r.started_at for r in log.records), default=since))
            self._log_failure(
                0,
                "calllog_truncated",
                f"the call log of tasks {','.join(map(str, task_ids))} held more than {log.pages} pages since"
                f" {since.isoformat()}: read up to {looked.isoformat()}, the rest at the next look",
                level="info",
            )
        for task_id in task_ids:
            async with self._lock(task_id):
                previous = self.states.get(task_id)
                if (
                    previous is None
                    or previous.snapshot.status != Status.RUNNING
                    or previous.missing
                    or not self._owns(task_id)
                    or task_id in self.dropped
                ):
                    continue  # changed meanwhile: stopped, missing, handed to another replica (read again later)
                zone = self.windows.zone_for(task_id)
                state, events = detect_calls(previous, log.for_task(task_id), looked, self._rules, zone=zone)
                if events or _worth_writing(previous, state):
                    await self._record(task_id, state, events)
                else:
                    # Only the look's time moved: kept in memory, not written (a restart looks again at once).
                    self.states[task_id] = state
        return True

    async def _note_unseen(self, task_id: int, reason: str) -> None:
        if task_id in self._unseen_noted:
            return
        try:
            await self._store.note_unseen(task_id, reason, self._wall())
        except StoreError as exc:
            _log.error("store.write_failed", task_id=task_id, error=str(exc))
            return
        self._unseen_noted.add(task_id)

    async def _api_answered(self) -> None:
        self.last_answer = self._monotonic()
        self.metrics.last_poll.set(self._wall())
        if self._unreachable_since is not None:
            down_for = int((self._clock() - self._unreachable_since).total_seconds())
            self._unreachable_since = None
            _log.info("api.recovered", down_for_seconds=down_for, cause=self._unreachable_cause)
            await self._record_watcher_event(
                EventType.API_RECOVERED, downForSeconds=down_for, cause=self._unreachable_cause
            )

    async def _api_failed(self, exc: ApiError) -> None:
        silent_for = self._monotonic() - self.last_answer
        if self._unreachable_since is None and silent_for >= self.config.api.unreachable_after:
            self._unreachable_since = self._clock() - timedelta(seconds=silent_for)
            _log.error("api.unreachable", for_seconds=int(silent_for), error=str(exc))
            # The event names the kind of failure, not its text: that may quote the API's own words.
            cause = "authentication" if isinstance(exc, AuthenticationError) else "unreachable or failing"
            self._unreachable_cause = cause
            await self._record_watcher_event(
                EventType.API_UNREACHABLE, unreachableForSeconds=int(silent_for), cause=cause
            )

    async def _record_watcher_event(self, type_: EventType, **data: object) -> None:
        if not self.announces_api:
            return  # another replica holds that lease: it announces the outage (logged here all the same)
        now = self._clock()
        event = Event(
            id=str(uuid.uuid5(WATCHER_EVENT_NAMESPACE, f"{type_.value}|{now.isoformat()}")),
            type=type_.value,
            time=now,
            subject="api",
            data={"apiBaseUrl": self.config.api.base_url, **data},
        )
        try:
            await self._store.record_event(event, self._dispatcher.receivers_for(event.type), self._wall())
        except StoreError as exc:
            _log.error("store.write_failed", error=str(exc), event_type=event.type)
            return
        self._dispatcher.wake()

    def _with_push_data(self, task_id: int, events: list[Event]) -> list[Event]:
        """Attach a recent VoiceFox task.end push (call counts, answers overview) to this task's `finished` event."""
        hint = self._hints.get(task_id)
        if hint is None or not any(e.type == EventType.FINISHED for e in events):
            return events
        received, data = self._hints.pop(task_id)
        if self._monotonic() - received > PUSH_DATA_MAX_AGE:
            return events
        return [
            dataclasses.replace(e, data={**e.data, "voicefox": data}) if e.type == EventType.FINISHED else e
            for e in events
        ]

    async def _record(self, task_id: int, state: TaskState, events: list[Event]) -> None:
        events = self._with_push_data(task_id, events)
        labels = self.config.watch.labels.get(task_id, {})
        if labels:
            # The task's labels travel with its events (receivers and templates may use them); not part of the ids.
            events = [dataclasses.replace(e, data={**e.data, "labels": labels}) for e in events]
        try:
            routed = [(event, self._dispatcher.receivers_for(event.type, labels)) for event in events]
            await self._store.record(state, routed, self._wall())
        except StaleState:
            # Another replica polled this task meanwhile and wrote first (a lease that moved mid-poll, a paused
            # process waking up): its write stands, and this one announces nothing. Start again from what it wrote.
            _log.info("task.superseded", task_id=task_id, hint="another replica recorded this task first")
            await self._reread(task_id)
            return
        except StoreError as exc:
            # Memory keeps the old state, so the next poll detects the same change again: nothing is lost.
            _log.error("store.write_failed", task_id=task_id, error=str(exc))
            return
        self.states[task_id] = state
        for event in events:
            self.metrics.events.labels(event.type).inc()
            _log.debug("event.detected", type=event.type, task_id=task_id, event_id=event.id)
        if events:
            self._dispatcher.wake()

    async def _reread(self, task_id: int) -> None:
        try:
            fresh = await self._store.load_states([task_id], claim=True)
        except StoreError as exc:
            _log.error("store.read_failed", task_id=task_id, error=str(exc))
            return
        if task_id in fresh:
            self.states[task_id] = fresh[task_id]
        else:
            self.states.pop(task_id, None)

    def _log_failure(self, scope: int, cause: str, error: str, level: str = "warning", **kw: object) -> None:
        """Log a failed poll at most once per FAILURE_LOG_EVERY for each (task or 0 for all, cause)."""
        # An hour-long outage must not write a line per poll: the first line says what is wrong, later ones (every
        # few minutes) say how many were held back since.
        now = self._monotonic()
        key = (scope, cause)
        last = self._last_failure_log.get(key)
        if last is not None and now - last < FAILURE_LOG_EVERY:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last_failure_log[key] = now
        fields: dict[str, object] = {"task_id": scope} if scope else {}
        if suppressed := self._suppressed.pop(key, 0):
            fields["suppressed"] = suppressed
        getattr(_log, level)("poll.failed", cause=cause, error=error, **fields, **kw)

    async def _heartbeat(self) -> None:
        while True:
            self.heartbeat = self._monotonic()
            for beat in self.heartbeat_hooks:
                beat()
            await self._sleep(HEARTBEAT_EVERY)

    async def _housekeeping(self) -> None:
        while True:
            try:
                removed = await self._store.prune(self._wall() - DELIVERED_RETENTION)
                if removed:
                    _log.debug("outbox.pruned", rows=removed)
            except StoreError as exc:
                _log.error("store.prune_failed", error=str(exc))
            await self._sleep(3600.0)


def _worth_writing(previous: TaskState, state: TaskState) -> bool:
    """Whether a look changed more than its own time: new calls counted, a stall judged... (else not written)."""
    if previous.health is None or state.health is None:
        return state != previous
    return dataclasses.replace(
        state, health=dataclasses.replace(state.health, last_look=previous.health.last_look)
    ) != (previous)


def _usable(added: Mapping[int, Mapping[str, str]]) -> dict[int, dict[str, str]]:
    """The tasks added at run time that can be watched; a stored id that is no task id (written by an older version)
    is left out with an error line, rather than stop every start."""
    usable = {}
    for task_id, labels in added.items():
        try:
            usable[task_id_checked(task_id)] = dict(labels)
        except ValueError as exc:
            _log.error("tasks.unusable", error=str(exc), hint="not watched; the row stays in the store, harmless")
    return usable


def with_added(config: Config, added: Mapping[int, Mapping[str, str]]) -> Config:
    """The config file's with the tasks added at run time as [[watch.task]] entries; a task the file lists already
    is watched once, as the file says (its labels from an add apply only if the file gives none)."""
    if not added:
        return config
    watch = config.watch
    listed = set(watch.ids)
    entries = list(watch.task)
    if any(t in listed for t in added):
        entries = [
            e.model_copy(update={"labels": dict(added[e.id])}) if e.id in added and not e.labels else e for e in entries
        ]
        bare = [t for t in watch.tasks if added.get(t)]  # listed in `tasks` without settings
        entries += [TaskConfig(id=t, labels=dict(added[t])) for t in bare]
        tasks = [t for t in watch.tasks if t not in bare]
    else:
        tasks = list(watch.tasks)
    entries += [TaskConfig(id=t, labels=dict(labels)) for t, labels in sorted(added.items()) if t not in listed]
    return config.model_copy(update={"watch": watch.model_copy(update={"tasks": tasks, "task": entries})})
