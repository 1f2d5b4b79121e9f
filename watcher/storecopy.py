"""`watcher store copy`: move a watcher's state and its undelivered outbox from one store to another.

SQLite to PostgreSQL, back, or between two of a kind. The source is read in one transaction (a consistent snapshot)
into plain rows (`store.StoreDump`), which are written into the target in one transaction: all or nothing. Both
stores are held under the daemon's own lock meanwhile, so a running watcher on either refuses the copy (and no daemon
starts on them halfway). Event ids and outbox seqs are kept as they were: receivers dedupe on the ids, and each
receiver's deliveries go out in seq order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import anyio.to_thread
import pydantic

from .config import StoreConfig
from .errors import UsageError
from .store import Store, StoreDump, StoreLock

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    """Where a store is: a SQLite file, or a PostgreSQL database; `shown` is what messages may say (no password)."""

    shown: str
    conninfo: str | None = None  # PostgreSQL's connection string (it may hold a password); None: a SQLite file

    @classmethod
    def parse(cls, text: str, *, option: str) -> Location:
        """A postgresql:// (or postgres://) URL is PostgreSQL, any other text a SQLite file's path; UsageError
        (naming `option`, never a password) for another scheme or a PostgreSQL URL that is not one."""
        scheme = urlsplit(text).scheme
        if scheme in ("postgresql", "postgres"):
            try:
                config = StoreConfig.model_validate({"url": text})  # the config's own checks, and its hiding
            except pydantic.ValidationError as exc:
                reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise UsageError(f"{option}: {reason}") from None
            return cls(config.shown(), config.conninfo())
        if "://" in text:
            raise UsageError(
                f"{option}: a {scheme}:// URL is not a store: give a PostgreSQL URL (postgresql://user@host/dbname)"
                " or a SQLite file's path"
            )
        return cls(text)


@dataclasses.dataclass(frozen=True, slots=True)
class Copied:
    """What a copy carried, for the one line (or the JSON) `watcher store copy` prints."""

    source: str
    target: str
    tasks: int
    unseen: int
    events: int
    pending: int
    dead: int
    meta: int
    delivered_left_behind: int  # history: delivered rows are not copied
    replaced: int  # rows the target held before (--force)
    added: int = 0  # tasks added at run time (`watcher tasks add`)

    def summary(self) -> str:
        """One line a person reads."""
        replaced = f"; replaced the {self.replaced} rows it held" if self.replaced else ""
        return (
            f"copied {self.source} to {self.target}: {self.tasks} tasks, {self.added} added at run time,"
            f" {self.unseen} never served by the API, {self.events} events,"
            f" {self.pending} pending and {self.dead} dead deliveries, {self.meta} remembered values{replaced}"
            f" ({self.delivered_left_behind} delivered rows are history and were not copied)"
        )


class _Side(Protocol):
    """One end of a copy, either engine: the calls a copy makes, each awaited."""

    path: str

    async def identity(self) -> tuple[object, ...]: ...
    async def lock_alone(self) -> None: ...
    async def dump(self) -> StoreDump: ...
    async def load(self, dump: StoreDump, *, replace: bool = False) -> int: ...
    async def close(self) -> None: ...


class _Sqlite:
    """A SQLite store as one end of a copy: each call in a worker thread, under the store's file lock."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = StoreLock(store.path)
        self.path = store.path

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args)

    async def identity(self) -> tuple[object, ...]:
        st = os.stat(self.path)  # the same file however it is named (a symlink, a relative path, a hard link)
        return ("sqlite", st.st_dev, st.st_ino)

    async def lock_alone(self) -> None:
        await self._call(self._lock.acquire)

    async def dump(self) -> StoreDump:
        return await self._call(self._store.dump)

    async def load(self, dump: StoreDump, *, replace: bool = False) -> int:
        return await self._call(functools.partial(self._store.load, dump, replace=replace))

    async def close(self) -> None:
        self._store.close()
        self._lock.release()


async def _open(location: Location, *, existing: bool) -> _Side:
    if location.conninfo is None:
        open_ = Store.open_existing if existing else Store.open
        return _Sqlite(await anyio.to_thread.run_sync(open_, location.shown))
    from .postgres import PostgresStore

    return await PostgresStore.open_checked(location.conninfo, shown=location.shown, existing=existing)


async def copy(source: Location, target: Location, *, replace: bool = False) -> Copied:
    """Copy every task state (call health included), the tasks never seen, the remembered values and the pending and dead deliveries (with
    their events) from `source` into `target`, in one transaction on the target. StoreError, and nothing written, if
    the source is not a store, either is held by a running watcher, or the target holds state already (StoreNotEmpty)
    and `replace` is false; UsageError if both are one store. A SQLite target is created if need be."""
    async with contextlib.AsyncExitStack() as stack:
        src = await _open(source, existing=True)
        stack.push_async_callback(src.close)
        await src.lock_alone()  # before the target is opened: a source a daemon holds leaves no new target behind
        dst = await _open(target, existing=False)
        stack.push_async_callback(dst.close)
        # Before the target's lock: on the source itself it would be refused as if a daemon held it.
        if await src.identity() == await dst.identity():
            raise UsageError(f"{source.shown} and {target.shown} are the same store: there is nothing to copy")
        await dst.lock_alone()
        dump = await src.dump()
        replaced = await dst.load(dump, replace=replace)
    return Copied(
        source=source.shown,
        target=target.shown,
        tasks=len(dump.tasks),
        unseen=len(dump.unseen),
        events=len(dump.events),
        pending=sum(row.state == "pending" for row in dump.outbox),
        dead=sum(row.state == "dead" for row in dump.outbox),
        meta=len(dump.meta),
        delivered_left_behind=dump.delivered,
        replaced=replaced,
        added=len(dump.added),
    )
