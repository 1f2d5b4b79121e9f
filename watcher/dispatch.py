"""Outbox -> notifiers: one worker per receiver, in order, with retry, isolation and dead letters."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping

import anyio
import structlog

from .errors import DeliveryError, StoreError
from .metrics import Metrics
from .notify import Notifier
from .retry import IDLE_RECHECK, STORE_RETRY, delivery_delay
from .store import Delivery
from .stores import StateStore

_log = structlog.get_logger("watcher.dispatch")

OUTCOME_GRACE = 10.0  # seconds the store gets to record a delivery's outcome, even while stopping


@dataclasses.dataclass(eq=False)
class _Worker:
    """One receiver's delivery loop: its cancel scope, its wake-up call, and a flag raised when it has exited."""

    scope: anyio.CancelScope = dataclasses.field(default_factory=anyio.CancelScope)
    wakeup: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    retired: bool = False  # its notifier was removed or replaced: finish the attempt in flight, then stop


class Dispatcher:
    """Delivers pending outbox rows; each receiver has its own worker so a slow or dead one delays no other."""

    def __init__(
        self,
        store: StateStore,
        notifiers: Mapping[str, Notifier],
        *,
        timeout: float = 10.0,
        max_age: float = 86400.0,
        backoff_max: float = 300.0,
        shutdown_grace: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        metrics: Metrics | None = None,
        shared: bool = False,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._notifiers = dict(notifiers)
        self._timeout = timeout
        self._max_age = max_age
        self._backoff_max = backoff_max
        self._grace = shutdown_grace
        self._clock = clock
        self._sleep = sleep
        self._in_flight: set[anyio.CancelScope] = set()
        self._workers: dict[str, _Worker] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._stopping = False
        # Replicas: a shared dispatcher delivers only to the receivers its coordinator hands it (`own`).
        self._owned: set[str] | None = set() if shared else None

    def receivers_for(self, event_type: str) -> list[str]:
        """Names of the notifiers that want this event type."""
        return [name for name, n in self._notifiers.items() if n.wants(event_type)]

    def names(self) -> list[str]:
        """The configured notifiers' names."""
        return list(self._notifiers)

    def _owns(self, name: str) -> bool:
        return self._owned is None or name in self._owned

    def own(self, receivers: set[str]) -> None:
        """A shared dispatcher's receivers from now on: a worker starts for each one gained; one lost finishes its
        attempt in flight and stops (the row stays pending for its new owner, who claims it anew)."""
        if self._owned is None:
            return
        gained, lost = receivers - self._owned, self._owned - receivers
        self._owned = set(receivers)
        if gained or lost:
            _log.info("replica.receivers", gained=sorted(gained), lost=sorted(lost))
        for name in lost:
            self._retire(name)
        if self._tg is not None:
            for name in sorted(gained):
                if name in self._notifiers:
                    self._start_worker(name)

    def _retire(self, name: str) -> None:
        # An attempt in flight is shielded and finishes; its row stays pending if it did not. The retired worker stays
        # in the table until a new one for the same name has seen it exit.
        worker = self._workers.get(name)
        if worker is not None and not worker.retired:
            worker.retired = True
            worker.scope.cancel()

    def wake(self) -> None:
        """New rows were committed: let idle workers look again."""
        for worker in self._workers.values():
            worker.wakeup.set()

    def shutdown(self) -> None:
        """Start no new attempt, and give those in flight at most the grace period (call before cancelling `run`)."""
        self._stopping = True
        deadline = anyio.current_time() + self._grace
        for scope in self._in_flight:
            scope.deadline = min(scope.deadline, deadline)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run one worker per notifier until cancelled."""
        await self._warn_orphans()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                for name in self._notifiers:
                    if self._owns(name):
                        self._start_worker(name)
                task_status.started()
                await anyio.sleep_forever()  # workers come and go (reloads, replicas): the group stays open
            finally:
                self._tg = None

    async def _warn_orphans(self) -> None:
        try:
            pending = await self._store.pending_receivers()
        except StoreError as exc:
            _log.error("outbox.read_failed", error=str(exc))
            return
        for name in sorted(set(pending) - set(self._notifiers)):
            _log.warning(
                "outbox.orphaned",
                receiver=name,
                hint="pending deliveries for a notifier no longer configured: `watcher outbox` can drop or keep them",
            )

    def _start_worker(self, name: str) -> None:
        assert self._tg is not None
        previous = self._workers.get(name)  # a retired worker for this name may still be finishing a send
        worker = self._workers[name] = _Worker()
        self._tg.start_soon(self._worker, name, worker, previous)

    def reload(self, notifiers: Mapping[str, Notifier]) -> None:
        """Swap in a new set of notifiers: workers start for new names and stop for removed ones."""
        removed = set(self._notifiers) - set(notifiers)
        added = set(notifiers) - set(self._notifiers)
        self._notifiers = dict(notifiers)
        for name in removed:
            self._retire(name)
        if self._tg is not None:
            for name in sorted(added):
                if self._owns(name):
                    self._start_worker(name)
            self._tg.start_soon(self._warn_orphans)

    async def drain(self) -> None:
        """Try every due pending delivery once per receiver, in order, stopping a receiver at its first failure."""
        async with anyio.create_task_group() as tg:
            for name in self._notifiers:
                tg.start_soon(self._drain_one, name)

    async def _drain_one(self, name: str) -> None:
        try:
            while (row := await self._store.head(name)) is not None and row.next_attempt_at <= self._clock():
                if not await self._attempt(row):
                    return
        except StoreError as exc:
            # `once` reports it and exits non-zero; the rows stay pending for the next run.
            _log.error("outbox.write_failed", receiver=name, error=str(exc))

    async def _worker(self, name: str, worker: _Worker, previous: _Worker | None) -> None:
        try:
            with worker.scope:
                if previous is not None:
                    # A notifier removed and added again by reloads: never two workers on one queue.
                    await previous.done.wait()
                await self._work(name, worker)
        finally:
            worker.done.set()

    async def _work(self, name: str, worker: _Worker) -> None:
        while not (self._stopping or worker.retired):
            try:
                row = await self._store.head(name)
            except StoreError as exc:
                _log.error("outbox.read_failed", receiver=name, error=str(exc))
                await self._sleep(STORE_RETRY)
                continue
            if row is None:
                # Woken by new rows; also look again now and then for rows another process put back
                # (`watcher outbox retry`).
                with anyio.move_on_after(IDLE_RECHECK):
                    await worker.wakeup.wait()
                worker.wakeup = anyio.Event()
                continue
            wait = row.next_attempt_at - self._clock()
            if wait > 0:
                # The head of the queue waits its backoff; rows behind it wait too, so order is kept.
                await self._sleep(wait)
                continue
            try:
                await self._attempt(row)
            except StoreError as exc:
                # The outcome could not be recorded: the row stays pending and is sent again later with the same
                # id (at-least-once), rather than the worker dying.
                _log.error("outbox.write_failed", receiver=name, error=str(exc))
                await self._sleep(STORE_RETRY)
            # A cancellation point between attempts: the attempts themselves are shielded.
            await anyio.lowlevel.checkpoint()

    async def _attempt(self, row: Delivery) -> bool:
        """One delivery attempt; returns whether the row left the pending queue as delivered or dead."""
        notifier = self._notifiers.get(row.receiver)
        if notifier is None or self._stopping:
            return False
        now = self._clock()
        log = _log.bind(receiver=row.receiver, event_id=row.event.id, type=row.event.type, task_id=row.event.subject)
        if now - row.created_at > self._max_age:
            await self._store.mark_dead(row.seq, f"gave up after {row.attempts} attempts in {self._max_age:g}s", now)
            self._metrics.deliveries.labels(row.receiver, "dead").inc()
            log.error("delivery.dead_lettered", attempts=row.attempts, reason="max_age exceeded")
            return True
        # Shielded from cancellation: on shutdown an attempt in flight may finish within the grace period (see
        # `shutdown`) rather than be cut off after the receiver got it but before we recorded that.
        scope = anyio.CancelScope(shield=True, deadline=anyio.current_time() + self._timeout)
        self._in_flight.add(scope)
        try:
            with scope:
                await notifier.send(row.event)
        except DeliveryError as exc:
            return await self._failed(row, exc, log)
        except Exception as exc:  # a notifier bug must cost one retry of one row, not the daemon
            log.exception("delivery.crashed")
            error = DeliveryError(f"{row.receiver}: internal error ({exc.__class__.__name__})")
            return await self._failed(row, error, log)
        finally:
            self._in_flight.discard(scope)
        if scope.cancelled_caught:
            return await self._failed(row, DeliveryError(f"{row.receiver}: no answer in time"), log)
        # Delivered: that must be recorded, even while stopping (bounded: a database that does not answer leaves the
        # row pending, and it is sent again later under the same id).
        with anyio.move_on_after(OUTCOME_GRACE, shield=True):
            await self._store.mark_delivered(row.seq, self._clock())
        self._metrics.deliveries.labels(row.receiver, "sent").inc()
        log.info("delivery.sent", attempts=row.attempts + 1)
        return True

    async def _failed(self, row: Delivery, exc: DeliveryError, log: structlog.stdlib.BoundLogger) -> bool:
        now = self._clock()
        if exc.permanent:
            with anyio.move_on_after(OUTCOME_GRACE, shield=True):  # recorded even while stopping
                await self._store.mark_dead(row.seq, str(exc), now)
            self._metrics.deliveries.labels(row.receiver, "dead").inc()
            log.error("delivery.dead_lettered", attempts=row.attempts + 1, error=str(exc))
            return True
        # Waiting longer than the row may live is pointless: a huge Retry-After ends at max_age.
        remaining = max(0.0, self._max_age - (now - row.created_at))
        delay = min(delivery_delay(row.attempts + 1, self._backoff_max, exc.retry_after), remaining + 1.0)
        with anyio.move_on_after(OUTCOME_GRACE, shield=True):
            await self._store.mark_retry(row.seq, str(exc), now + delay, now)
        self._metrics.deliveries.labels(row.receiver, "failed").inc()
        log.warning("delivery.failed", attempts=row.attempts + 1, error=str(exc), retry_in=round(delay, 1))
        return False
