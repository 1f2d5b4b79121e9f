"""The daemon: one task group owning a poller per task and the dispatcher."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import structlog

from .client import VoiceFoxClient
from .config import Config
from .detect import Rules, detect, detect_missing
from .dispatch import Dispatcher
from .errors import ApiError, AuthenticationError, RateLimited, StoreError, TaskNotFound, TransientApiError
from .metrics import Metrics
from .model import Event, EventType, Status, TaskState
from .pace import AdaptiveRate, ApiGate
from .retry import auth_pause, poll_failure_delay, rate_limit_pause
from .schedule import Cadence, completion_eta, next_poll
from .store import Store

_log = structlog.get_logger("watcher.daemon")

HEARTBEAT_EVERY = 1.0  # seconds between ticks of the main loop's heartbeat
JITTER = 0.1  # each poll interval is stretched or shrunk by up to 10% so tasks never beat in step
FAILURE_LOG_EVERY = 300.0  # the same cause of failure is logged at most once per this many seconds
DELIVERED_RETENTION = 7 * 86400.0
MISSING_AFTER_404S = 2  # consecutive 404s before a task the API served before is announced missing
WATCHER_EVENT_NAMESPACE = uuid.UUID(
    "0b7f3d64-2f0e-4a55-8d2f-6c1f5bb0c9a1"
)  # delivered outbox rows are kept this long for `watcher status`, then pruned


PUSH_DATA_MAX_AGE = 3600.0  # a task.end push older than this is not attached to a `finished` event


def knobs(config: Config) -> tuple[Rules, Cadence]:
    """The detection rules and the polling cadence a config asks for."""
    watch = config.watch
    rules = Rules(
        progress_step=watch.progress_step, stall_after=timedelta(seconds=watch.stall_after), timezone=watch.tz
    )
    cadence = Cadence(
        interval=watch.interval,
        slow_interval=watch.slow_interval,
        done_linger=watch.done_linger,
        timezone=watch.tz,
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
        store: Store,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime] = utcnow,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._client = client
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._wall = wall_clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rules, self._cadence = knobs(config)
        self._limiter = anyio.CapacityLimiter(config.watch.concurrency)
        self.gate = ApiGate(monotonic, sleep)
        self.rate = AdaptiveRate(config.api.max_rps, monotonic, sleep)
        self.states: dict[int, TaskState] = store.load_states()
        self._failures: dict[int, int] = {}
        self._not_found: dict[int, int] = {}  # consecutive 404s per task
        self._last_failure_log: dict[tuple[int, str], float] = {}
        self._suppressed: dict[tuple[int, str], int] = {}
        self._pollers: dict[int, anyio.CancelScope] = {}
        self._wakeups: dict[int, anyio.Event] = {}  # set by a push hint: poll this task now
        self._hints: dict[int, tuple[float, dict[str, Any]]] = {}  # task -> (when, VoiceFox's task.end data)
        self._marks: dict[int, tuple[int, datetime]] = {}  # task -> (progress, when) at the start of its run
        self.dropped: set[int] = set()  # finished tasks no longer polled
        self._tg: anyio.abc.TaskGroup | None = None
        # API reachability, for voicefox.watcher.api_unreachable / api_recovered.
        self.last_answer = monotonic()  # when a poll last got an answer from the API (readiness)
        self.heartbeat = monotonic()  # ticks while the main loop is alive (health)
        self.heartbeat_hooks: list[Callable[[], None]] = []  # called on every tick: the systemd watchdog ping
        self._unreachable_since: datetime | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver what is pending, then poll every task on its schedule until cancelled."""
        tasks = self.config.watch.tasks
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self._dispatcher.run)
            tg.start_soon(self._housekeeping)
            tg.start_soon(self._heartbeat)
            self._start_pollers(tasks)
            _log.info("watcher.started", tasks=len(tasks), interval=self.config.watch.interval)
            task_status.started()

    def watched_statuses(self) -> Iterator[str]:
        """The last known status of every watched task (for the tasks-by-status gauge)."""
        for task_id in self.config.watch.tasks:
            state = self.states.get(task_id)
            yield state.snapshot.status if state is not None else "unknown"

    def _start_pollers(self, task_ids: list[int]) -> None:
        assert self._tg is not None
        interval = self.config.watch.interval
        for i, task_id in enumerate(task_ids):
            scope = self._pollers[task_id] = anyio.CancelScope()
            # Spread first polls evenly over one interval: no thundering herd on start.
            self._tg.start_soon(self._poller, task_id, interval * i / len(task_ids), scope)

    def reload(self, config: Config) -> None:
        """Take a new config: start pollers for added tasks, stop those of removed ones, new [watch] knobs."""
        added = [t for t in config.watch.tasks if t not in self._pollers]
        removed = [t for t in self._pollers if t not in config.watch.tasks]
        self.config = config
        self._rules, self._cadence = knobs(config)
        self._limiter.total_tokens = config.watch.concurrency
        for task_id in removed:
            self._pollers.pop(task_id).cancel()
        if self._tg is not None and added:
            self._start_pollers(added)

    async def _poller(self, task_id: int, offset: float, scope: anyio.CancelScope) -> None:
        with scope:
            planned = self._monotonic() + offset
            await self._wait(task_id, offset)
            while True:
                if self._finished_long_ago(task_id):
                    return
                async with self._limiter:
                    # Checked with a slot in hand: pollers queued on the limiter when a 429 arrived must wait too.
                    await self.gate.wait()
                    await self.rate.acquire()
                    started = self._monotonic()
                    self.metrics.schedule_lag.observe(max(0.0, started - planned))
                    ok = await self.poll(task_id)
                delay = self._next_delay(task_id, ok)
                if delay is None:
                    self._finished_long_ago(task_id)
                    return
                now = self._monotonic()
                # The next poll is planned from this one's plan, so lag does not accumulate; a poller that fell a
                # whole interval behind starts afresh rather than firing a burst to catch up.
                planned = planned + delay if planned + delay > now else now
                if await self._wait(task_id, planned - now):
                    planned = self._monotonic()  # a push hint: poll now

    async def _wait(self, task_id: int, seconds: float) -> bool:
        """Sleep up to `seconds`; return True if a push hint cut it short."""
        if not self.config.push.path:
            # No push endpoint, no hints: a plain sleep is cheaper than a cancel scope and an event per poll.
            await self._sleep(max(0.0, seconds))
            return False
        wakeup = self._wakeups.setdefault(task_id, anyio.Event())
        with anyio.move_on_after(max(0.0, seconds)):
            await wakeup.wait()
        self._wakeups[task_id] = anyio.Event()
        return wakeup.is_set()

    def _next_delay(self, task_id: int, ok: bool) -> float | None:
        interval = self.config.watch.interval
        if not ok:
            delay: float | None = poll_failure_delay(interval, self._failures.get(task_id, 1))
        else:
            state = self.states.get(task_id)
            delay = next_poll(state, self._clock(), self._cadence, self._eta(task_id, state))
        if delay is None:
            return None
        return delay * (1 + JITTER * (2 * self._rng.random() - 1))

    def _eta(self, task_id: int, state: TaskState | None) -> float | None:
        """Seconds until a running task reaches 100 % at the pace it has kept since it (re)started running."""
        if state is None or state.snapshot.status != Status.RUNNING or state.snapshot.progress is None:
            self._marks.pop(task_id, None)
            return None
        progress, now = state.snapshot.progress, self._clock()
        mark = self._marks.get(task_id)
        if mark is None or progress < mark[0]:
            self._marks[task_id] = (progress, now)
            return None
        return completion_eta(mark[0], mark[1], progress, now)

    def _finished_long_ago(self, task_id: int) -> bool:
        """True (and the task leaves the schedule, once, with a log line) if it finished over done_linger ago."""
        state = self.states.get(task_id)
        # Only a finished task can leave the schedule: no calendar arithmetic for the others on every poll.
        if state is None or state.snapshot.status != Status.DONE:
            return False
        if next_poll(state, self._clock(), self._cadence) is not None:
            return False
        if task_id not in self.dropped:
            self.dropped.add(task_id)
            _log.info(
                "task.dropped",
                task_id=task_id,
                reason=f"done since {state.progress_since.isoformat()}; no longer polled (watch.done_linger)",
            )
        self._pollers.pop(task_id, None)
        return True

    def hint(self, task_id: int, data: dict[str, Any] | None = None) -> bool:
        """A push says the task changed: poll it now. False if the task is not on the schedule."""
        if task_id not in self._pollers:
            return False
        if data is not None:
            self._hints[task_id] = (self._monotonic(), data)
        self._wakeups.setdefault(task_id, anyio.Event()).set()
        return True

    async def poll_all(self) -> bool:
        """Poll every task once (for `watcher once`); return whether every poll succeeded (skipped ones did not)."""
        results: dict[int, bool] = {}

        async def one(task_id: int) -> None:
            async with self._limiter:
                # After a 429 or a refused token, the rest of this round is skipped rather than waited for: a
                # one-shot run must not sleep for an hour's Retry-After.
                results[task_id] = self.gate.not_before <= self._monotonic() and await self.poll(task_id)

        async with anyio.create_task_group() as tg:
            for task_id in self.config.watch.tasks:
                tg.start_soon(one, task_id)
        return all(results.values())

    async def poll(self, task_id: int) -> bool:
        """Poll one task and record what changed; return False if the API did not give an answer."""
        previous = self.states.get(task_id)
        try:
            snapshot = await self._client.get_task(task_id)
        except TaskNotFound as exc:
            self.metrics.polls.labels("not_found").inc()
            self._api_answered()
            if previous is None:
                self._log_failure(task_id, "not_found", str(exc), hint="check watch.tasks: VoiceFox has no such task")
                return False
            # One 404 may be a proxy's or a deploy's hiccup: a task is missing only when the API says so twice in
            # a row, so a single bad answer never announces every task as gone.
            self._not_found[task_id] = self._not_found.get(task_id, 0) + 1
            if self._not_found[task_id] >= MISSING_AFTER_404S:
                state, events = detect_missing(previous, self._clock())
                if state is not None and state != previous:
                    self._record(task_id, state, events)
            return True
        except AuthenticationError as exc:
            self.metrics.polls.labels("auth_refused").inc()
            self.gate.refused += 1
            pause = auth_pause(self.gate.refused)
            self.gate.pause(pause)
            self._log_failure(
                0, "auth", str(exc), level="error", hint="check api.token; every poll is paused", retry_in=pause
            )
            self._api_failed(exc)  # a refused token blinds the watcher as surely as an outage
            return False
        except RateLimited as exc:
            self.metrics.polls.labels("rate_limited").inc()
            self.rate.backoff()
            self.gate.rate_limited = 0 if exc.retry_after is not None else self.gate.rate_limited + 1
            pause = rate_limit_pause(exc.retry_after, self.gate.rate_limited)
            self.gate.pause(pause)
            self._log_failure(0, "rate_limited", str(exc), retry_in=round(pause, 1))
            return False
        except TransientApiError as exc:
            self.metrics.polls.labels("failed").inc()
            failures = self._failures[task_id] = self._failures.get(task_id, 0) + 1
            # An outage fails every task the same way: one line per cause for all of them, not one per task.
            self._log_failure(0, exc.__class__.__name__, str(exc), task_id=task_id, failures=failures)
            self._api_failed(exc)
            return False
        except ApiError as exc:
            self.metrics.polls.labels("failed").inc()
            failures = self._failures[task_id] = self._failures.get(task_id, 0) + 1
            self._log_failure(task_id, exc.__class__.__name__, str(exc), failures=failures)
            return False
        self.metrics.polls.labels("ok").inc()
        self._api_answered()
        self._not_found.pop(task_id, None)
        self.gate.rate_limited = self.gate.refused = 0
        if self._failures.pop(task_id, None):
            _log.debug("poll.recovered", task_id=task_id)
            if not self._failures and self._last_failure_log:
                # Every task answers again: say so once, and let the next failure be logged at once.
                _log.info("poll.recovered", causes=sorted({cause for _, cause in self._last_failure_log}))
                self._last_failure_log.clear()
                self._suppressed.clear()
        state, events = detect(previous, snapshot, self._clock(), self._rules)
        if state != previous:
            self._record(task_id, state, events)
        return True

    def _api_answered(self) -> None:
        self.last_answer = self._monotonic()
        self.metrics.last_poll.set(self._wall())
        if self._unreachable_since is not None:
            down_for = int((self._clock() - self._unreachable_since).total_seconds())
            self._unreachable_since = None
            _log.info("api.recovered", down_for_seconds=down_for)
            self._record_watcher_event(EventType.API_RECOVERED, downForSeconds=down_for)

    def _api_failed(self, exc: ApiError) -> None:
        silent_for = self._monotonic() - self.last_answer
        if self._unreachable_since is None and silent_for >= self.config.api.unreachable_after:
            self._unreachable_since = self._clock() - timedelta(seconds=silent_for)
            _log.error("api.unreachable", for_seconds=int(silent_for), error=str(exc))
            # The event names the kind of failure, not its text: that may quote the API's own words.
            cause = "authentication" if isinstance(exc, AuthenticationError) else "unreachable or failing"
            self._record_watcher_event(EventType.API_UNREACHABLE, unreachableForSeconds=int(silent_for), cause=cause)

    def _record_watcher_event(self, type_: EventType, **data: object) -> None:
        now = self._clock()
        event = Event(
            id=str(uuid.uuid5(WATCHER_EVENT_NAMESPACE, f"{type_.value}|{now.isoformat()}")),
            type=type_.value,
            time=now,
            subject="api",
            data={"apiBaseUrl": self.config.api.base_url, **data},
        )
        try:
            self._store.record_event(event, self._dispatcher.receivers_for(event.type), self._wall())
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

    def _record(self, task_id: int, state: TaskState, events: list[Event]) -> None:
        events = self._with_push_data(task_id, events)
        try:
            self._store.record(state, events, lambda e: self._dispatcher.receivers_for(e.type), self._wall())
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
                removed = self._store.prune(self._wall() - DELIVERED_RETENTION)
                if removed:
                    _log.debug("outbox.pruned", rows=removed)
            except StoreError as exc:
                _log.error("store.prune_failed", error=str(exc))
            await self._sleep(3600.0)
