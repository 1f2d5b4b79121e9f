"""The store contract the daemon, the dispatcher and the operator endpoint use, and its SQLite engine off the loop.

`StateStore` is what the running watcher asks of its store: task state, events with their outbox rows, the delivery
queue, a little metadata; every call is awaited, so no store call ever blocks the event loop (a store held locked by
another process, a slow disk, a network round trip to a database server: polling and delivery go on meanwhile).
`ThreadedStore` is the embedded engine: the SQLite `Store` of store.py, each call run in a worker thread, one at a
time (SQLite's connection is used by one thread at a time). The command-line tools (`status`, `outbox`) use the
SQLite store directly: they do nothing else meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

import anyio
import anyio.to_thread

from .model import Event, TaskState
from .store import AddedTask, Delivery, DeliveryReport, OutboxCount, Sent, Store

T = TypeVar("T")


class StateStore(Protocol):
    """What the running watcher asks of its store; every engine implements it, and one contract test suite checks."""

    path: str

    async def load_states(self, task_ids: Iterable[int] | None = None, *, claim: bool = False) -> dict[int, TaskState]:
        """Every task's last known state (or these tasks'), its call health too: None if never stored, and a damaged
        stored value read as far as it can be (`CallHealth.from_dict`), never an error. `claim`: the caller will
        record these states (where replicas share the store, a write is made only over the version so read)."""
        ...

    async def record(self, state: TaskState, deliveries: Sequence[tuple[Event, Sequence[str]]], now: float) -> None:
        """In one transaction: a task's new state (its call health included), its events, and one outbox row per
        (event, receiver). Every call writes the task's row: callers record a state only when it changed."""
        ...

    async def record_event(self, event: Event, receivers: Iterable[str], now: float) -> None:
        """An event of no task (the API's, a test) with its outbox rows."""
        ...

    async def note_unseen(self, task_id: int, reason: str, now: float) -> None:
        """A task the API has never served answered with `reason`."""
        ...

    async def meta(self, key: str) -> str | None:
        """A value kept beside the state."""
        ...

    async def set_meta(self, key: str, value: str) -> None:
        """Keep a value beside the state."""
        ...

    async def added_tasks(self) -> dict[int, AddedTask]:
        """The tasks added at run time, by id."""
        ...

    async def add_task(self, task_id: int, labels: Mapping[str, str], now: float) -> bool:
        """Watch a task from now on; return whether it was not added before."""
        ...

    async def remove_task(self, task_id: int) -> bool:
        """Watch an added task no more; return whether it was added."""
        ...

    async def head(self, receiver: str) -> Delivery | None:
        """The oldest pending delivery of a receiver."""
        ...

    async def pending(self, receiver: str, limit: int) -> list[Delivery]:
        """A receiver's oldest pending deliveries, in order (on a shared store: claimed by this replica)."""
        ...

    async def mark_delivered(self, seqs: Sequence[int], now: float) -> None:
        """The receiver accepted them (one message or one digest): all in one transaction."""
        ...

    async def mark_retry(self, seqs: Sequence[int], error: str, next_attempt_at: float, now: float) -> None:
        """The attempt failed; try again later."""
        ...

    async def mark_dead(self, seqs: Sequence[int], error: str, now: float) -> None:
        """Give up on them: dead letters."""
        ...

    async def latest(self, receiver: str, types: Sequence[str]) -> list[Sent]:
        """Per task and event type among `types`, the receiver's newest outbox row."""
        ...

    async def pending_receivers(self) -> list[str]:
        """Receivers with pending deliveries."""
        ...

    async def outbox_counts(self) -> list[OutboxCount]:
        """Rows per receiver and state, with the oldest creation time."""
        ...

    async def delivery_report(self) -> list[DeliveryReport]:
        """Per receiver with outbox rows: its newest error still recorded and its newest delivery."""
        ...

    async def recent_events(self, limit: int) -> list[Event]:
        """The newest events of every task and of the watcher, newest first."""
        ...

    async def prune(self, delivered_before: float) -> int:
        """Forget delivered rows older than a cut-off; return how many."""
        ...

    async def check_writable(self) -> None:
        """Raise StoreError unless a write could be made now."""
        ...


class ThreadedStore:
    """The SQLite store behind the `StateStore` contract: each call in a worker thread, one at a time."""

    def __init__(self, store: Store) -> None:
        self.sync = store  # for the command-line tools and tests that read it directly
        self.path = store.path
        self._one_at_a_time = anyio.CapacityLimiter(1)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        # Cancelling the caller does not interrupt SQLite mid-transaction: the thread finishes its call (the
        # transaction commits or rolls back as a whole), and only the result is abandoned.
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._one_at_a_time)

    async def load_states(self, task_ids: Iterable[int] | None = None, *, claim: bool = False) -> dict[int, TaskState]:
        """Every task's last known state (or these tasks'); one daemon per SQLite file, so `claim` changes nothing."""
        return await self._call(self.sync.load_states, None if task_ids is None else list(task_ids))

    async def record(self, state: TaskState, deliveries: Sequence[tuple[Event, Sequence[str]]], now: float) -> None:
        """In one transaction: a task's new state, its events, and one outbox row per (event, receiver)."""
        await self._call(self.sync.record, state, deliveries, now)

    async def record_event(self, event: Event, receivers: Iterable[str], now: float) -> None:
        """An event of no task (the API's, a test) with its outbox rows."""
        await self._call(self.sync.record_event, event, list(receivers), now)

    async def note_unseen(self, task_id: int, reason: str, now: float) -> None:
        """A task the API has never served answered with `reason`."""
        await self._call(self.sync.note_unseen, task_id, reason, now)

    async def meta(self, key: str) -> str | None:
        """A value kept beside the state."""
        return await self._call(self.sync.meta, key)

    async def set_meta(self, key: str, value: str) -> None:
        """Keep a value beside the state."""
        await self._call(self.sync.set_meta, key, value)

    async def added_tasks(self) -> dict[int, AddedTask]:
        """The tasks added at run time, by id."""
        return await self._call(self.sync.added_tasks)

    async def add_task(self, task_id: int, labels: Mapping[str, str], now: float) -> bool:
        """Watch a task from now on; return whether it was not added before."""
        return await self._call(self.sync.add_task, task_id, dict(labels), now)

    async def remove_task(self, task_id: int) -> bool:
        """Watch an added task no more; return whether it was added."""
        return await self._call(self.sync.remove_task, task_id)

    async def head(self, receiver: str) -> Delivery | None:
        """The oldest pending delivery of a receiver."""
        return await self._call(self.sync.head, receiver)

    async def pending(self, receiver: str, limit: int) -> list[Delivery]:
        """A receiver's oldest pending deliveries, in order."""
        return await self._call(self.sync.pending, receiver, limit)

    async def mark_delivered(self, seqs: Sequence[int], now: float) -> None:
        """The receiver accepted them (one message or one digest): all in one transaction."""
        await self._call(self.sync.mark_delivered, list(seqs), now)

    async def mark_retry(self, seqs: Sequence[int], error: str, next_attempt_at: float, now: float) -> None:
        """The attempt failed; try again later."""
        await self._call(self.sync.mark_retry, list(seqs), error, next_attempt_at, now)

    async def mark_dead(self, seqs: Sequence[int], error: str, now: float) -> None:
        """Give up on them: dead letters."""
        await self._call(self.sync.mark_dead, list(seqs), error, now)

    async def latest(self, receiver: str, types: Sequence[str]) -> list[Sent]:
        """Per task and event type among `types`, the receiver's newest outbox row."""
        return await self._call(self.sync.latest, receiver, list(types))

    async def pending_receivers(self) -> list[str]:
        """Receivers with pending deliveries."""
        return await self._call(self.sync.pending_receivers)

    async def outbox_counts(self) -> list[OutboxCount]:
        """Rows per receiver and state, with the oldest creation time."""
        return await self._call(self.sync.outbox_counts)

    async def delivery_report(self) -> list[DeliveryReport]:
        """Per receiver with outbox rows: its newest error still recorded and its newest delivery."""
        return await self._call(self.sync.delivery_report)

    async def recent_events(self, limit: int) -> list[Event]:
        """The newest events of every task and of the watcher, newest first."""
        return await self._call(self.sync.recent_events, limit)

    async def prune(self, delivered_before: float) -> int:
        """Forget delivered rows older than a cut-off; return how many."""
        return await self._call(self.sync.prune, delivered_before)

    async def check_writable(self) -> None:
        """Raise StoreError unless a write could be made now."""
        await self._call(self.sync.check_writable)


_: type[StateStore] = ThreadedStore  # the engine keeps the contract (checked by mypy)
