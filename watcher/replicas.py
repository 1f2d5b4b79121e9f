"""Replicas on one PostgreSQL store: who is alive, who polls which task and who delivers to which receiver.

Every replica runs the same loop (`Coordinator`): every third of the lease time it tells the database it is alive and
which tasks and receivers it wants, and the database (one short transaction, `PostgresStore.renew`) answers with the
leases it now holds and who else is alive. What a replica wants is decided by rendezvous hashing over the live
replicas: every replica computes the same owner for every key without talking to the others, a replica that joins
takes about 1/n of the work, and one that dies leaves only its own share to be spread. A lease runs out `ttl` seconds
after its last renewal (the server's clock), so a replica that was killed, cut from the database or frozen loses its
work to the others within ttl plus one round: with the default ttl of one `watch.interval`, in under two intervals.

The leases decide who does the work; they do not decide what is true. A task's new state is written only over the
version its writer read (compare-and-set, `errors.StaleState`), and an outbox row is marked only by the replica that
claimed it last: two replicas that both believe they hold a lease (a paused VM waking up) can at worst send one
event twice under the same id, never announce one transition twice under different ids.

A replica that cannot renew its leases stops polling and delivering shortly before they can run out (it cannot know
whether the others have taken over), and starts again when the database answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import anyio
import structlog

from .errors import StoreError
from .model import TaskState

if TYPE_CHECKING:
    from .daemon import Daemon
    from .dispatch import Dispatcher
    from .metrics import Metrics

_log = structlog.get_logger("watcher.replicas")

TASK, RECEIVER, WATCHER = "task", "receiver", "watcher"  # kinds of lease
API_EVENTS = "api"  # the WATCHER lease whose holder announces the API's outages (once, not once per replica)
ROUND_TIMEOUT_SHARE = 0.9  # a round that takes longer than this share of the period is abandoned
FAILURE_LOG_EVERY = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Replica:
    """A `watcher run` process on the store, as the database last heard of it."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    expires_at: datetime
    alive: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """Who may poll a task, deliver to a receiver, or announce the API's outages: for as long as its owner is alive
    (`expires_at` is the owner's; None when the owner is forgotten)."""

    kind: str
    key: str
    owner: str
    acquired_at: datetime
    expires_at: datetime | None
    valid: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    """One round's answer: the replicas, the leases (a round's: only the asking replica's own), the database's clock;
    `me` is the asking replica ("" for none: then every lease)."""

    me: str
    now: datetime
    replicas: list[Replica]
    leases: list[Lease]

    def alive(self) -> list[str]:
        """The ids of the live replicas."""
        return [r.id for r in self.replicas if r.alive]

    def held(self, kind: str, owner: str | None = None) -> set[str]:
        """The keys of `kind` whose valid lease `owner` (default: me) holds."""
        who = self.me if owner is None else owner
        return {lease.key for lease in self.leases if lease.kind == kind and lease.owner == who and lease.valid}

    def owner_of(self, kind: str, key: str) -> str | None:
        """The replica holding a valid lease on this key, if any."""
        for lease in self.leases:
            if lease.kind == kind and lease.key == key and lease.valid:
                return lease.owner
        return None


def owner(kind: str, key: str, replicas: Iterable[str]) -> str | None:
    """The replica that should hold a key: the highest of hash(replica, key) (rendezvous hashing); None if none."""
    return max(replicas, key=lambda replica: _weight(replica, kind, key), default=None)


def _weight(replica: str, kind: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{replica}\0{kind}\0{key}".encode(), digest_size=8).digest(), "big")


class ReplicaStore(Protocol):
    """What a replica asks of its store beyond `StateStore` (PostgreSQL's)."""

    replica: str

    async def renew(self, ttl: float, want: Mapping[str, Collection[str]]) -> Membership: ...
    async def load_states(
        self, task_ids: Iterable[int] | None = None, *, claim: bool = False
    ) -> dict[int, TaskState]: ...
    async def notify(self, payload: str) -> None: ...
    def listen(self, listening: Callable[[], object] | None = None) -> AsyncIterator[str]: ...


class Coordinator:
    """One replica's share of the work: renews its leases every `ttl / 3` seconds and hands the daemon the tasks and
    the dispatcher the receivers it holds. Seams: `monotonic` and `sleep`."""

    def __init__(
        self,
        store: ReplicaStore,
        daemon: Daemon,
        dispatcher: Dispatcher,
        *,
        ttl: float,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._store = store
        self._daemon = daemon
        self._dispatcher = dispatcher
        self.ttl = ttl
        self.period = ttl / 3
        self._metrics = metrics
        self._monotonic = monotonic
        self._sleep = sleep
        self.me = store.replica
        self.view: Membership | None = None  # the last round's answer
        self.renewed_at: float | None = None  # when the last successful round started (monotonic)
        self._poke = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._last_failure_log = -FAILURE_LOG_EVERY
        self._holding = False

    def holds_leases(self) -> bool:
        """Whether this replica is at work on leases surely still its own (it has not stepped back)."""
        return self._holding and self.renewed_at is not None and self._monotonic() < self._deadline()

    def lease_age(self) -> float | None:
        """Seconds since the last renewal (None before the first)."""
        return None if self.renewed_at is None else self._monotonic() - self.renewed_at

    def poke(self) -> None:
        """Run a round now (someone joined or left, the config changed)."""
        self._poke.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Join, take a share, and keep it until cancelled (the store's `leave` then hands it over at once)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._daemon.forward_hint = self._forward_hint
            tg.start_soon(self._listen)
            tg.start_soon(self._guard)
            await self.round()  # learn who is alive ...
            await self.round()  # ... and take a share of the work
            await self._notify("replicas")  # the others make room for this one at once
            _log.info("replica.joined", replica=self.me, replicas=len(self.view.alive()) if self.view else 0)
            task_status.started()
            while True:
                with anyio.move_on_after(self.period):
                    await self._poke.wait()
                self._poke = anyio.Event()
                await self.round()

    def _deadline(self) -> float:
        """When this replica must have stopped working unless it renews: a little before its leases can run out (the
        database counts them from the start of its transaction, later than `renewed_at`)."""
        assert self.renewed_at is not None
        return self.renewed_at + self.ttl - self.period / 4

    async def _guard(self) -> None:
        """Step back when the leases may run out before they are renewed: whatever the rounds are doing (a round
        that hangs on a cut connection must not keep this replica working past its leases)."""
        while True:
            if self._holding and self._monotonic() >= self._deadline():
                self._step_back()
            wait = self._deadline() - self._monotonic() if self._holding else self.period
            await self._sleep(max(wait, 0.01))

    def _step_back(self) -> None:
        self._holding = False
        _log.warning("replica.stepped_back", replica=self.me, reason="leases could not be renewed in time")
        self._daemon.own(set(), {})
        self._dispatcher.own(set())
        self._daemon.announces_api = False

    def wanted(self, alive: Sequence[str]) -> dict[str, set[str]]:
        """What this replica should hold among `alive` replicas (itself always counted)."""
        replicas = sorted({*alive, self.me})
        tasks = {str(t) for t in self._daemon.config.watch.ids if owner(TASK, str(t), replicas) == self.me}
        receivers = {name for name in self._dispatcher.names() if owner(RECEIVER, name, replicas) == self.me}
        api = {API_EVENTS} if owner(WATCHER, API_EVENTS, replicas) == self.me else set()
        return {TASK: tasks, RECEIVER: receivers, WATCHER: api}

    async def round(self) -> None:
        """Renew: say alive, trade leases, and apply what is held now."""
        want = self.wanted(self.view.alive() if self.view else [])
        released = any(self.view.held(kind) - keys for kind, keys in want.items()) if self.view else False
        started = self._monotonic()
        view: Membership | None = None
        error = "no answer in time"
        with anyio.move_on_after(self.period * ROUND_TIMEOUT_SHARE):
            try:
                view = await self._store.renew(self.ttl, want)
            except StoreError as exc:
                error = str(exc)
        if view is None:
            self._count("failed")
            self._failed(error)
            return
        self._count("ok")
        self.renewed_at = started
        self.view = view
        if not self._holding:
            self._holding = True
            if self._last_failure_log > -FAILURE_LOG_EVERY:
                _log.info("replica.leases_renewed", replica=self.me)  # back at work after failed renewals
        await self._apply(view)
        if released:
            await self._notify("replicas")  # work given up for another replica: it takes it now, not a round later
        if self.wanted(view.alive()) != want:
            self.poke()  # the live replicas changed: trade at once, not a period later

    def _failed(self, error: str) -> None:
        now = self._monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_EVERY:
            self._last_failure_log = now
            _log.error("replica.renew_failed", replica=self.me, error=error, holding=self.holds_leases())

    async def _apply(self, view: Membership) -> None:
        tasks = {int(key) for key in view.held(TASK)}
        gained = tasks - self._daemon.owned()
        fresh: dict[int, TaskState] = {}
        if gained:
            # Another replica may have written these tasks since this one last read them.
            try:
                fresh = await self._store.load_states(gained, claim=True)
            except StoreError as exc:
                _log.error("replica.load_failed", replica=self.me, error=str(exc))
                tasks -= gained
        self._daemon.own(tasks, fresh)
        self._dispatcher.own(view.held(RECEIVER))
        self._daemon.announces_api = API_EVENTS in view.held(WATCHER)

    async def _listen(self) -> None:
        """Act on what the others say at once: new outbox rows, replicas joining or leaving, push hints. Only a
        shortcut: without it, everything still happens within a round or the dispatcher's recheck; and the tasks
        added or removed at run time, told only here, are read again on every (re)connect, for what was said while
        this replica was not listening."""
        while True:
            try:
                async for payload in self._store.listen(self._listening):
                    if payload == "outbox":
                        self._dispatcher.wake()
                    elif payload == "replicas":
                        self.poke()
                    elif payload == "tasks":  # a task added or removed at run time, through another replica
                        await self._tasks_changed()
                    elif payload.startswith("poll:") and payload[5:].isdigit():
                        self._daemon.hint(int(payload[5:]), forward=False)
            except StoreError as exc:
                _log.debug("replica.listen_failed", error=str(exc))
            await self._sleep(self.period)

    def _listening(self) -> None:
        if self._tg is not None:
            self._tg.start_soon(self._tasks_changed)

    async def _tasks_changed(self) -> None:
        await self._daemon.refresh_added()
        self.poke()

    def _forward_hint(self, task_id: int) -> None:
        """A push for a task another replica polls: tell that one."""
        if self._tg is not None:
            self._tg.start_soon(self._notify, f"poll:{task_id}")

    async def _notify(self, payload: str) -> None:
        try:
            await self._store.notify(payload)
        except StoreError as exc:
            _log.warning("replica.notify_failed", error=str(exc))

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.lease_renewals.labels(result).inc()
