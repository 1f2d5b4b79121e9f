"""Outbox -> notifiers: one worker per receiver, running the pipeline's stages over its queue.

Each worker plans its receiver's pending rows (watcher/pipeline.py: hold for quiet hours, expire, group), sends what
is due as one message, and records the outcome on the rows (delivered, retry with backoff, dead letter). Beside
that it records the receiver's reminders (watcher/reminders.py) and, when the receiver keeps failing, tells the
others (`receiver_failing`, then `receiver_recovered`). The outbox is the only state: a restart plans the same.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime

import anyio
import structlog

from .errors import DeliveryError, StoreError
from .metrics import Metrics
from .model import Event, EventType
from .notify import Notifier
from .pipeline import Policy, lookahead, plan
from .reminders import TASK_PROBLEMS, due
from .retry import IDLE_RECHECK, STORE_RETRY, delivery_delay
from .routing import Route, Router
from .store import Delivery
from .stores import StateStore

_log = structlog.get_logger("watcher.dispatch")

OUTCOME_GRACE = 10.0  # seconds the store gets to record a delivery's outcome, even while stopping
REMIND_RECHECK = 30.0  # seconds between looks for problems to remind of (new ones, ones that ended)
FAILING_AFTER = 900.0  # a receiver failing this long (or dead-lettering) is announced to the others
_HEALTH_NAMESPACE = uuid.UUID("a1f0c3d2-6b7e-4c19-8d25-7e3b9f6c1a40")


@dataclasses.dataclass
class _Health:
    """A receiver's current failure streak, kept in the store's meta so that a restart announces it once."""

    since: float | None = None  # the first failed attempt of the streak
    announced: bool = False  # `receiver_failing` was recorded for it

    def dumps(self) -> str:
        return json.dumps({"since": self.since, "announced": self.announced})

    @classmethod
    def loads(cls, text: str | None) -> _Health:
        try:
            d = json.loads(text or "{}")
            since = d.get("since")
            return cls(float(since) if isinstance(since, int | float) else None, d.get("announced") is True)
        except (ValueError, AttributeError):
            return cls()


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
        router: Router | None = None,
        policies: Mapping[str, Policy] | None = None,
        watched: Callable[[], Collection[int]] | None = None,
        failing_after: float = FAILING_AFTER,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._notifiers = dict(notifiers)
        self._router = router or self._route_by_notifiers(self._notifiers)
        self._policies = dict(policies or {})
        self._watched = watched
        self._failing_after = failing_after
        self._remind_at: dict[str, float] = {}
        self._health: dict[str, _Health] = {}
        self._news = False  # a receiver's failure or recovery was recorded for the others (drain: another pass)
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

    @staticmethod
    def _route_by_notifiers(notifiers: Mapping[str, Notifier]) -> Router:
        # Without a configured router (tests, tools): each notifier's own choice of event types.
        return Router([Route(name, n.wants) for name, n in notifiers.items()])

    def receivers_for(self, event_type: str, labels: Mapping[str, str] | None = None) -> list[str]:
        """Names of the notifiers an event of this type (about a task with these labels) goes to."""
        return self._router.receivers(event_type, labels)

    def _policy(self, name: str) -> Policy:
        policy = self._policies.get(name)
        if policy is None:
            notifier = self._notifiers.get(name)
            policy = Policy(max_age=self._max_age, digest=getattr(notifier, "digest", False) is True)
        return policy

    @property
    def notifiers(self) -> dict[str, Notifier]:
        """The notifiers it delivers to, by name."""
        return dict(self._notifiers)

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
        for name in gained:
            # Another replica may have worked it meanwhile: its failure streak and reminders are read afresh.
            self._health.pop(name, None)
            self._remind_at.pop(name, None)
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

    def reload(
        self,
        notifiers: Mapping[str, Notifier],
        *,
        router: Router | None = None,
        policies: Mapping[str, Policy] | None = None,
    ) -> None:
        """Swap in a new set of notifiers: workers start for new names and stop for removed ones."""
        removed = set(self._notifiers) - set(notifiers)
        added = set(notifiers) - set(self._notifiers)
        self._notifiers = dict(notifiers)
        self._router = router or self._route_by_notifiers(self._notifiers)
        self._policies = dict(policies or {})
        self._remind_at.clear()
        for worker in self._workers.values():
            worker.wakeup.set()  # quiet hours or a group_wait may have changed: plan again
        for name in removed:
            self._retire(name)
        if self._tg is not None:
            for name in sorted(added):
                if self._owns(name):
                    self._start_worker(name)
            self._tg.start_soon(self._warn_orphans)

    async def drain(self) -> int:
        """Send every receiver's due rows once, in order, stopping a receiver at its first failure (`watcher once`);
        return how many rows quiet hours hold back (pending by design, not by failure)."""
        held: dict[str, int] = {}
        for _ in range(3):
            # The news of a receiver failing (or recovering) may be recorded for the others while they are drained:
            # they get another pass (bounded: each such news is recorded once per episode).
            self._news = False
            async with anyio.create_task_group() as tg:
                for name in self._notifiers:
                    tg.start_soon(self._drain_one, name, held)
            if not self._news:
                break
        return sum(held.values())

    async def _drain_one(self, name: str, held: dict[str, int]) -> None:
        try:
            await self._remind(name)
            while True:
                # A one-shot run has no later to wait for: what group_wait would gather goes out now, together.
                policy = dataclasses.replace(self._policy(name), group_wait=0.0)
                step = plan(await self._store.pending(name, lookahead(policy)), self._clock(), policy)
                held[name] = step.held
                if step.expired:
                    await self._expire(name, step.expired)
                elif not step.send or not await self._attempt(name, step.send):
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
                await self._remind(name)
                policy = self._policy(name)
                rows = await self._store.pending(name, lookahead(policy))
            except StoreError as exc:
                _log.error("outbox.read_failed", receiver=name, error=str(exc))
                await self._sleep(STORE_RETRY)
                continue
            now = self._clock()
            step = plan(rows, now, policy)
            self._metrics.held.labels(name).set(step.held)
            try:
                if step.expired:
                    await self._expire(name, step.expired)
                elif step.send:
                    await self._attempt(name, step.send)
                else:
                    await self._idle(name, worker, step.wake_at, now)
            except StoreError as exc:
                # The outcome could not be recorded: the rows stay pending and are sent again later with the same
                # ids (at-least-once), rather than the worker dying.
                _log.error("outbox.write_failed", receiver=name, error=str(exc))
                await self._sleep(STORE_RETRY)
            # A cancellation point between attempts: the attempts themselves are shielded.
            await anyio.lowlevel.checkpoint()

    async def _idle(self, name: str, worker: _Worker, wake_at: float | None, now: float) -> None:
        """Wait for new rows (a wake-up), or until the plan said to look again, or a reminder may fall due."""
        remind_at = self._remind_at.get(name)
        if wake_at is not None:
            # The head waits out its backoff, group_wait or quiet hours (on the injected clock); new rows (an urgent
            # one in quiet hours) cut the wait short.
            if remind_at is not None:
                wake_at = min(wake_at, remind_at)
            async with anyio.create_task_group() as tg:

                async def nap() -> None:
                    await self._sleep(max(0.0, wake_at - now))
                    tg.cancel_scope.cancel()

                async def woken() -> None:
                    await worker.wakeup.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(nap)
                tg.start_soon(woken)
        else:
            # Woken by new rows; also look again now and then for rows another process put back (`watcher outbox
            # retry`) and for reminders.
            wait = IDLE_RECHECK if remind_at is None else min(IDLE_RECHECK, max(0.0, remind_at - now))
            with anyio.move_on_after(wait):
                await worker.wakeup.wait()
        worker.wakeup = anyio.Event()

    # -- reminders ---------------------------------------------------------------------------------------------------

    async def _remind(self, name: str) -> None:
        """Record the reminders due for this receiver (each at most once: its id is a function of what it reminds)."""
        policy = self._policy(name)
        now = self._clock()
        if policy.repeat_every <= 0 or now < self._remind_at.get(name, -math.inf):
            return
        latest = await self._store.latest(name, TASK_PROBLEMS)
        task_ids = {int(sent.event.subject) for sent in latest if sent.event.subject.isdigit()}
        states = await self._store.load_states(task_ids) if task_ids else {}
        watched = self._watched() if self._watched is not None else states.keys()
        reminders, next_at = due(
            latest, states, watched, receiver=name, now=now, every=policy.repeat_every, limit=policy.repeat_max
        )
        for reminder in reminders:
            await self._store.record_event(reminder, [name], now)
            count = reminder.data["reminder"]["count"]
            _log.info("reminder.recorded", receiver=name, type=reminder.type, task_id=reminder.subject, count=count)
        self._remind_at[name] = min(next_at if next_at is not None else math.inf, now + REMIND_RECHECK)

    # -- sending -----------------------------------------------------------------------------------------------------

    async def _expire(self, name: str, rows: Sequence[Delivery]) -> None:
        now, policy = self._clock(), self._policy(name)
        reason = f"gave up after {max(r.attempts for r in rows)} attempts in {policy.max_age:g}s"
        await self._store.mark_dead([r.seq for r in rows], reason, now)
        for row in rows:
            self._metrics.deliveries.labels(name, "dead").inc()
            _log.error(
                "delivery.dead_lettered",
                receiver=name,
                event_id=row.event.id,
                type=row.event.type,
                task_id=row.event.subject,
                attempts=row.attempts,
                reason="max_age exceeded",
            )
        await self._failed_streak(name, now, reason, dead=True)

    async def _attempt(self, name: str, rows: Sequence[Delivery]) -> bool:
        """One delivery attempt of one message (a digest if several rows); returns whether the rows left the queue."""
        notifier = self._notifiers.get(name)
        if notifier is None or self._stopping or not rows:
            return False
        seqs = [row.seq for row in rows]
        head = rows[0]
        log = _log.bind(receiver=name, event_id=head.event.id, type=head.event.type, task_id=head.event.subject)
        if len(rows) > 1:
            log = log.bind(digest=len(rows))
        # Shielded from cancellation: on shutdown an attempt in flight may finish within the grace period (see
        # `shutdown`) rather than be cut off after the receiver got it but before we recorded that.
        scope = anyio.CancelScope(shield=True, deadline=anyio.current_time() + self._timeout)
        self._in_flight.add(scope)
        try:
            with scope:
                if len(rows) == 1:
                    await notifier.send(head.event)
                else:
                    await notifier.send_digest([row.event for row in rows])
        except DeliveryError as exc:
            return await self._failed(name, rows, exc, log)
        except Exception as exc:  # a notifier bug must cost one retry, not the daemon
            log.exception("delivery.crashed")
            return await self._failed(
                name, rows, DeliveryError(f"{name}: internal error ({exc.__class__.__name__})"), log
            )
        finally:
            self._in_flight.discard(scope)
        if scope.cancelled_caught:
            return await self._failed(name, rows, DeliveryError(f"{name}: no answer in time"), log)
        # Delivered: that must be recorded, even while stopping (bounded: a database that does not answer leaves the
        # rows pending, and they are sent again later under the same ids).
        now = self._clock()
        with anyio.move_on_after(OUTCOME_GRACE, shield=True):
            await self._store.mark_delivered(seqs, now)
        self._metrics.deliveries.labels(name, "sent").inc(len(rows))
        log.info("delivery.sent", attempts=head.attempts + 1)
        self._remind_at.pop(name, None)  # a problem just told: its first reminder counts from now
        await self._recovered(name, now)
        return True

    async def _failed(
        self, name: str, rows: Sequence[Delivery], exc: DeliveryError, log: structlog.stdlib.BoundLogger
    ) -> bool:
        now, policy = self._clock(), self._policy(name)
        seqs = [row.seq for row in rows]
        head = rows[0]
        if exc.permanent:
            with anyio.move_on_after(OUTCOME_GRACE, shield=True):  # recorded even while stopping
                await self._store.mark_dead(seqs, str(exc), now)
            self._metrics.deliveries.labels(name, "dead").inc(len(rows))
            log.error("delivery.dead_lettered", attempts=head.attempts + 1, error=str(exc))
            await self._failed_streak(name, now, str(exc), dead=True)
            return True
        # Waiting longer than the rows may live is pointless: a huge Retry-After ends at max_age.
        remaining = max(0.0, policy.max_age - max(now - row.created_at for row in rows))
        delay = min(delivery_delay(head.attempts + 1, self._backoff_max, exc.retry_after), remaining + 1.0)
        with anyio.move_on_after(OUTCOME_GRACE, shield=True):
            await self._store.mark_retry(seqs, str(exc), now + delay, now)
        self._metrics.deliveries.labels(name, "failed").inc(len(rows))
        log.warning("delivery.failed", attempts=head.attempts + 1, error=str(exc), retry_in=round(delay, 1))
        await self._failed_streak(name, now, str(exc), dead=False)
        return False

    # -- a failing receiver is news ----------------------------------------------------------------------------------

    async def _health_of(self, name: str) -> _Health:
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = _Health.loads(await self._store.meta(f"receiver_health.{name}"))
        return health

    async def _failed_streak(self, name: str, now: float, error: str, *, dead: bool) -> None:
        """Count a failure; once the streak is long enough (or a row is dead), tell the other receivers, once."""
        try:
            health = await self._health_of(name)
            if health.since is None:
                health.since = now
                await self._store.set_meta(f"receiver_health.{name}", health.dumps())
            if health.announced or not (dead or now - health.since >= self._failing_after):
                return
            counts = {c.state: c.count for c in await self._store.outbox_counts() if c.receiver == name}
            event = self._health_event(
                EventType.RECEIVER_FAILING,
                name,
                health.since,
                now,
                failingForSeconds=int(now - health.since),
                deadLetters=counts.get("dead", 0),
                pending=counts.get("pending", 0),
                error=error[:300],
            )
            # Recorded before it is marked announced: a crash between records it again under the same id, once.
            await self._record_health_event(event, name, now)
            health.announced = True
            await self._store.set_meta(f"receiver_health.{name}", health.dumps())
            _log.error("receiver.failing", receiver=name, since=health.since, dead=dead)
        except StoreError as exc:
            _log.error("store.write_failed", receiver=name, error=str(exc))

    async def _recovered(self, name: str, now: float) -> None:
        try:
            health = await self._health_of(name)
            if health.since is None:
                return
            if health.announced:
                event = self._health_event(
                    EventType.RECEIVER_RECOVERED, name, health.since, now, failedForSeconds=int(now - health.since)
                )
                await self._record_health_event(event, name, now)
                _log.info("receiver.recovered", receiver=name, failed_for_seconds=int(now - health.since))
            self._health[name] = _Health()
            await self._store.set_meta(f"receiver_health.{name}", _Health().dumps())
        except StoreError as exc:
            _log.error("store.write_failed", receiver=name, error=str(exc))

    def _health_event(self, type_: EventType, name: str, since: float, now: float, **data: object) -> Event:
        # One id per streak and type: the streak's start names it, so a restart or a race records it once.
        return Event(
            id=str(uuid.uuid5(_HEALTH_NAMESPACE, f"{type_.value}|{name}|{since!r}")),
            type=type_.value,
            time=datetime.fromtimestamp(now, UTC),
            subject=f"notifier:{name}",
            data={
                "receiver": name,
                "kind": self._policy(name).kind,
                "since": datetime.fromtimestamp(since, UTC).isoformat(),
                **data,
            },
        )

    async def _record_health_event(self, event: Event, name: str, now: float) -> None:
        others = [r for r in self._router.receivers(event.type) if r != name]
        await self._store.record_event(event, others, now)
        self._news = self._news or bool(others)
        self.wake()
