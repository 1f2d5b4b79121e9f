"""Wiring shared by `watcher run`, `once` and `demo`: the store under its lock, the clients, the notifiers."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
import structlog

from . import notify
from .client import VoiceFoxClient, resolve_transport
from .config import MAX_CONCURRENCY, Config
from .daemon import Daemon, utcnow
from .dispatch import Dispatcher
from .metrics import Metrics
from .retry import API_RETRY, ApiRetry
from .store import Store, StoreLock
from .stores import StateStore, ThreadedStore

_log = structlog.get_logger("watcher.cli")


@dataclasses.dataclass
class Components:
    """The running parts, and what a reload may change among them."""

    daemon: Daemon
    dispatcher: Dispatcher
    store: StateStore  # the daemon's store: SQLite in a worker thread, or PostgreSQL
    http: httpx.AsyncClient
    metrics: Metrics
    sqlite: Store | None = None  # the SQLite store itself, when that is the engine (for tests and tools)

    def reload(self, new: Config) -> list[str]:
        """Apply a new config: tasks, [watch], [log] and notifiers at once; return the sections that need a restart."""
        old = self.daemon.config
        needs_restart = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
        # What is not applied stays as it runs, so the next reload still sees the difference.
        applied = new.model_copy(update={name: getattr(old, name) for name in RESTART_SECTIONS})
        changed = old.notifiers != applied.notifiers or old.messages != applied.messages
        notifiers = notify.build(applied.notifiers, notify_context(applied, self.http)) if changed else None
        self.daemon.reload(applied)
        if notifiers is not None:
            self.dispatcher.reload(notifiers)
        return needs_restart


RESTART_SECTIONS = ("api", "store", "delivery", "http", "push")


def notify_context(config: Config, http: httpx.AsyncClient) -> notify.Context:
    """What every notifier is built with: the delivery client, the `[delivery]` limits and the `[messages]` settings."""
    return notify.Context(
        http,
        language=config.messages.language,
        task_url=config.messages.task_url,
        timeout=config.delivery.timeout,
        verify_tls=config.delivery.verify_tls,
    )


def delivery_client(config: Config) -> httpx.AsyncClient:
    """The HTTP client every notifier shares, as configured in [delivery]."""
    return httpx.AsyncClient(timeout=config.delivery.timeout, follow_redirects=False, verify=config.delivery.verify_tls)


@asynccontextmanager
async def open_components(
    config: Config,
    *,
    api_retry: ApiRetry = API_RETRY,
    monotonic: Callable[[], float] = time.monotonic,
    clock: Callable[[], datetime] = utcnow,
) -> AsyncIterator[Components]:
    """Open the store (under its lock), the API client and the notifiers; close them all on the way out."""
    if not config.api.verify_tls:
        _log.warning(
            "tls.verification_disabled",
            section="api",
            hint="api.verify_tls = false: anyone on the path can read the token",
        )
    if not config.delivery.verify_tls:
        _log.warning("tls.verification_disabled", section="delivery", hint="delivery.verify_tls = false")
    metrics = Metrics()
    async with (
        _opened_store(config) as (store, sqlite),
        delivery_client(config) as http,
        VoiceFoxClient(
            config.api.base_url,
            config.api.token.get_secret_value(),
            timeout=config.api.timeout,
            retry=api_retry,
            verify=config.api.verify_tls,
            # Polls in flight are bounded by the daemon's workers ([watch] concurrency); the pool is sized for
            # the most that setting allows, so a reload that raises it needs no new pool.
            max_connections=MAX_CONCURRENCY,
            observe=metrics.observe_api,
            transport_kind=resolve_transport(config.api.transport),
        ) as client,
    ):
        d = config.delivery
        dispatcher = Dispatcher(
            store,
            notify.build(config.notifiers, notify_context(config, http)),
            timeout=d.timeout,
            max_age=d.max_age,
            backoff_max=d.backoff_max,
            shutdown_grace=d.shutdown_grace,
            metrics=metrics,
        )
        daemon = Daemon(
            config,
            client=client,
            store=store,
            states=await store.load_states(),
            remembered_zone=await store.meta("zone.learned"),
            dispatcher=dispatcher,
            metrics=metrics,
            monotonic=monotonic,
            clock=clock,
        )
        metrics.watch_state(store, lambda: daemon.watched_statuses(), zone=daemon.zone_summary)
        yield Components(daemon, dispatcher, store, http, metrics, sqlite)


@asynccontextmanager
async def _opened_store(config: Config) -> AsyncIterator[tuple[StateStore, Store | None]]:
    """The configured store, as the one daemon on it: SQLite under its file lock (in a worker thread), or PostgreSQL
    under an advisory lock; closed (and the lock given up) on the way out."""
    if config.store.postgres:
        from .postgres import PostgresStore

        pg = await PostgresStore.open(config.store.conninfo(), shown=config.store.shown())
        try:
            await pg.lock()
            yield pg, None
        finally:
            await pg.close()
        return
    lock = StoreLock(config.store.path)
    lock.acquire()
    try:
        sqlite = Store.open(config.store.path)
        try:
            yield ThreadedStore(sqlite), sqlite
        finally:
            sqlite.close()
    finally:
        lock.release()
