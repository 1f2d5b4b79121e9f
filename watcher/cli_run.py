"""Wiring shared by `watcher run`, `once` and `demo`: the store under its lock, the clients, the notifiers."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
import httpx
import structlog

from . import notify
from .client import VoiceFoxClient, resolve_transport
from .config import MAX_CONCURRENCY, Config
from .daemon import Daemon, utcnow
from .dispatch import Dispatcher
from .errors import StoreError
from .metrics import Metrics
from .notify import EventFilter
from .pipeline import Policy, never_urgent
from .replicas import Coordinator, ReplicaStore
from .retry import API_RETRY, ApiRetry
from .routing import Router
from .store import Store, StoreLock
from .stores import StateStore, ThreadedStore

_log = structlog.get_logger("watcher.cli")

LEAVE_GRACE = 5.0  # seconds a stopping replica gives the database to take its leases back


@dataclasses.dataclass
class Components:
    """The running parts, and what a reload may change among them."""

    daemon: Daemon
    dispatcher: Dispatcher
    store: StateStore  # the daemon's store: SQLite in a worker thread, or PostgreSQL
    http: httpx.AsyncClient
    metrics: Metrics
    sqlite: Store | None = None  # the SQLite store itself, when that is the engine (for tests and tools)
    coordinator: Coordinator | None = None  # replicas on PostgreSQL: this one's share of the work

    def reload(self, new: Config) -> list[str]:
        """Apply a new config: tasks, [watch], [log] and notifiers at once; return the sections that need a restart."""
        old = self.daemon.file_config
        needs_restart = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
        # What is not applied stays as it runs, so the next reload still sees the difference.
        applied = new.model_copy(update={name: getattr(old, name) for name in RESTART_SECTIONS})
        changed = old.notifiers != applied.notifiers or old.messages != applied.messages
        notifiers = notify.build(applied.notifiers, notify_context(applied, self.http)) if changed else None
        self.daemon.reload(applied)
        if notifiers is not None or old.watch.timezone != applied.watch.timezone:
            notifiers = notifiers if notifiers is not None else self.dispatcher.notifiers
            router, policies = delivery_plan(applied, notifiers)
            self.dispatcher.reload(notifiers, router=router, policies=policies)
        if self.coordinator is not None:
            self.coordinator.poke()  # tasks or notifiers added or removed: trade leases now
        return needs_restart


RESTART_SECTIONS = ("api", "store", "delivery", "http", "push")


def delivery_plan(config: Config, notifiers: Mapping[str, notify.Notifier]) -> tuple[Router, dict[str, Policy]]:
    """Who gets which events, and how each receiver is delivered to (quiet hours, grouping, reminders, digests)."""
    policies = {}
    for n in config.notifiers:
        urgent = EventFilter(n.urgent) if n.urgent else None
        policies[n.name] = Policy(
            max_age=config.delivery.max_age,
            group_wait=n.group_wait,
            digest=notifiers[n.name].digest if n.name in notifiers else False,
            quiet=config.quiet_hours(n),
            urgent=urgent if urgent is not None else never_urgent,
            repeat_every=n.repeat_every,
            repeat_max=n.repeat_max,
            kind=n.kind,
        )
    return Router.of(config.notifiers), policies


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
    shared: bool = False,
) -> AsyncIterator[Components]:
    """Open the store (under its lock), the API client and the notifiers; close them all on the way out. `shared`: on
    PostgreSQL, take part as one replica among any number (`watcher run`), rather than do everything (`once`)."""
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
        _opened_store(config) as (store, sqlite, replicas),
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
        notifiers = notify.build(config.notifiers, notify_context(config, http))
        router, policies = delivery_plan(config, notifiers)
        dispatcher = Dispatcher(
            store,
            notifiers,
            router=router,
            policies=policies,
            watched=lambda: daemon.config.watch.ids,
            failing_after=d.failing_after,
            timeout=d.timeout,
            max_age=d.max_age,
            backoff_max=d.backoff_max,
            shutdown_grace=d.shutdown_grace,
            metrics=metrics,
            shared=shared and replicas is not None,
        )
        daemon = Daemon(
            config,
            client=client,
            store=store,
            states=await store.load_states(claim=True),
            remembered_zone=await store.meta("zone.learned"),
            added={task_id: task.labels for task_id, task in (await store.added_tasks()).items()},
            dispatcher=dispatcher,
            metrics=metrics,
            monotonic=monotonic,
            clock=clock,
            shared=shared and replicas is not None,
        )
        coordinator = None
        if shared and replicas is not None:
            ttl = config.store.lease_for(config.watch.interval)
            coordinator = Coordinator(replicas, daemon, dispatcher, ttl=ttl, metrics=metrics, monotonic=monotonic)
            daemon.on_tasks_changed = coordinator.poke  # a task added or removed here: trade leases now
        metrics.watch_state(
            store,
            lambda: daemon.watched_statuses(),
            zone=daemon.zone_summary,
            replicas=coordinator,
            call_health=lambda: daemon.call_health(),
        )
        yield Components(daemon, dispatcher, store, http, metrics, sqlite, coordinator)


@asynccontextmanager
async def _opened_store(config: Config) -> AsyncIterator[tuple[StateStore, Store | None, ReplicaStore | None]]:
    """The configured store: SQLite under its file lock (the one daemon on it, in a worker thread), or PostgreSQL
    (one of any number of replicas, under the daemons' shared lock); closed on the way out, where a replica first
    hands its leases over (after the daemon and the dispatcher have stopped: nothing it polls or sends is cut)."""
    if config.store.postgres:
        from .postgres import PostgresStore

        pg = await PostgresStore.open(config.store.conninfo(), shown=config.store.shown())
        try:
            await pg.lock()
            yield pg, None, pg
        finally:
            with anyio.move_on_after(LEAVE_GRACE, shield=True):
                try:
                    await pg.leave()
                except StoreError as exc:
                    _log.warning("replica.leave_failed", error=str(exc), hint="its leases run out on their own")
            await pg.close()
        return
    lock = StoreLock(config.store.path)
    lock.acquire()
    try:
        sqlite = Store.open(config.store.path)
        try:
            yield ThreadedStore(sqlite), sqlite, None
        finally:
            sqlite.close()
    finally:
        lock.release()
