"""Wiring shared by `watcher run`, `watcher once` and `watcher demo`: the store under its lock, the clients, the notifiers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from . import notify
from .client import VoiceFoxClient
from .config import Config
from .daemon import Daemon
from .dispatch import Dispatcher
from .retry import API_RETRY, ApiRetry
from .store import Store, StoreLock


@asynccontextmanager
async def open_components(
    config: Config, *, api_retry: ApiRetry = API_RETRY
) -> AsyncIterator[tuple[Daemon, Dispatcher, Store]]:
    """Open the store (under its lock), the API client and the notifiers; close them all on the way out."""
    lock = StoreLock(config.store.path)
    lock.acquire()
    try:
        store = Store.open(config.store.path)
        try:
            async with (
                httpx.AsyncClient(timeout=config.delivery.timeout, follow_redirects=False) as http,
                VoiceFoxClient(
                    config.api.base_url,
                    config.api.token.get_secret_value(),
                    timeout=config.api.timeout,
                    retry=api_retry,
                ) as client,
            ):
                d = config.delivery
                dispatcher = Dispatcher(
                    store,
                    notify.build(config.notifiers, http),
                    timeout=d.timeout,
                    max_age=d.max_age,
                    backoff_max=d.backoff_max,
                    shutdown_grace=d.shutdown_grace,
                )
                yield Daemon(config, client=client, store=store, dispatcher=dispatcher), dispatcher, store
        finally:
            store.close()
    finally:
        lock.release()
