"""The daemon: one task group owning a poller per task and the dispatcher."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import structlog

from .client import VoiceFoxClient
from .config import Config
from .detect import Rules, detect, detect_missing
from .dispatch import Dispatcher
from .errors import ApiError, AuthenticationError, RateLimited, StoreError, TaskNotFound
from .model import Event, TaskState
from .retry import AUTH_BACKOFF, RATE_LIMIT_DEFAULT, RATE_LIMIT_MAX, poll_failure_delay
from .store import Store

_log = structlog.get_logger("watcher.daemon")

JITTER = 0.1  # each poll interval is stretched or shrunk by up to 10% so tasks never beat in step
FAILURE_LOG_EVERY = 300.0  # the same failure of one task is logged at most once per this many seconds
DELIVERED_RETENTION = 7 * 86400.0  # delivered outbox rows are kept this long for `watcher status`, then pruned


def utcnow() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


class ApiGate:
    """A pause shared by every poller: after a 429 or an auth failure nobody asks the API until it ends."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]) -> None:
        self._clock = clock
        self._sleep = sleep
        self.not_before = 0.0
        self.rate_limited = 0  # consecutive 429s without Retry-After

    def pause(self, seconds: float) -> None:
        """Ask nothing for at least `seconds` from now."""
        self.not_before = max(self.not_before, self._clock() + seconds)

    async def wait(self) -> None:
        """Return once the pause, if any, is over."""
        while (remaining := self.not_before - self._clock()) > 0:
            await self._sleep(remaining)


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
    ) -> None:
        self.config = config
        self._client = client
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._wall = wall_clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rules = Rules(
            progress_step=config.watch.progress_step, stall_after=timedelta(seconds=config.watch.stall_after)
        )
        self._limiter = anyio.CapacityLimiter(config.watch.concurrency)
        self.gate = ApiGate(monotonic, sleep)
        self.states: dict[int, TaskState] = store.load_states()
        self._failures: dict[int, int] = {}
        self._last_failure_log: dict[tuple[int, str], float] = {}

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver what is pending, then poll every task on its schedule until cancelled."""
        tasks = self.config.watch.tasks
        interval = self.config.watch.interval
        async with anyio.create_task_group() as tg:
            await tg.start(self._dispatcher.run)
            tg.start_soon(self._housekeeping)
            for i, task_id in enumerate(tasks):
                # Spread first polls evenly over one interval: no thundering herd on start.
                tg.start_soon(self._poller, task_id, interval * i / len(tasks))
            _log.info("watcher.started", tasks=len(tasks), interval=interval)
            task_status.started()

    async def _poller(self, task_id: int, offset: float) -> None:
        interval = self.config.watch.interval
        await self._sleep(offset)
        while True:
            await self.gate.wait()
            started = self._monotonic()
            async with self._limiter:
                ok = await self.poll(task_id)
            delay = interval if ok else poll_failure_delay(interval, self._failures.get(task_id, 1))
            delay *= 1 + JITTER * (2 * self._rng.random() - 1)
            await self._sleep(max(0.0, delay - (self._monotonic() - started)))

    async def poll_all(self) -> bool:
        """Poll every task once (for `watcher once`); return whether every poll succeeded."""
        results: dict[int, bool] = {}

        async def one(task_id: int) -> None:
            async with self._limiter:
                results[task_id] = await self.poll(task_id)

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
            now = self._clock()
            state, events = detect_missing(previous, now)
            if previous is None:
                self._log_failure(task_id, "not_found", str(exc), hint="check watch.tasks: VoiceFox has no such task")
            self._failures.pop(task_id, None)
            if state is not None and state != previous:
                self._record(task_id, state, events)
            return True
        except AuthenticationError as exc:
            self.gate.pause(AUTH_BACKOFF)
            self._log_failure(
                0, "auth", str(exc), level="error", hint="check api.token; polling paused", retry_in=AUTH_BACKOFF
            )
            return False
        except RateLimited as exc:
            if exc.retry_after is not None:
                pause = min(exc.retry_after, RATE_LIMIT_MAX * 12)
            else:
                self.gate.rate_limited += 1
                pause = min(RATE_LIMIT_MAX, RATE_LIMIT_DEFAULT * 2 ** (self.gate.rate_limited - 1))
            self.gate.pause(pause)
            self._log_failure(0, "rate_limited", str(exc), retry_in=round(pause, 1))
            return False
        except ApiError as exc:
            failures = self._failures[task_id] = self._failures.get(task_id, 0) + 1
            self._log_failure(task_id, exc.__class__.__name__, str(exc), failures=failures)
            return False
        self.gate.rate_limited = 0
        if self._failures.pop(task_id, None):
            _log.info("poll.recovered", task_id=task_id)
            self._last_failure_log = {k: v for k, v in self._last_failure_log.items() if k[0] != task_id}
        state, events = detect(previous, snapshot, self._clock(), self._rules)
        if state != previous:
            self._record(task_id, state, events)
        return True

    def _record(self, task_id: int, state: TaskState, events: list[Event]) -> None:
        try:
            self._store.record(state, events, lambda e: self._dispatcher.receivers_for(e.type), self._wall())
        except StoreError as exc:
            # Memory keeps the old state, so the next poll detects the same change again: nothing is lost.
            _log.error("store.write_failed", task_id=task_id, error=str(exc))
            return
        self.states[task_id] = state
        for event in events:
            _log.debug("event.detected", type=event.type, task_id=task_id, event_id=event.id)
        if events:
            self._dispatcher.wake()

    def _log_failure(self, task_id: int, cause: str, error: str, level: str = "warning", **kw: object) -> None:
        # An hour-long outage must not write a line per poll: one line per task and cause every few minutes.
        now = self._monotonic()
        key = (task_id, cause)
        last = self._last_failure_log.get(key)
        if last is not None and now - last < FAILURE_LOG_EVERY:
            return
        self._last_failure_log[key] = now
        fields = {"task_id": task_id} if task_id else {}
        getattr(_log, level)("poll.failed", cause=cause, error=error, **fields, **kw)

    async def _housekeeping(self) -> None:
        while True:
            try:
                removed = self._store.prune(self._wall() - DELIVERED_RETENTION)
                if removed:
                    _log.debug("outbox.pruned", rows=removed)
            except StoreError as exc:
                _log.error("store.prune_failed", error=str(exc))
            await self._sleep(3600.0)
