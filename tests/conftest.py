"""Shared fixtures: the anyio backend, a simulator served on 127.0.0.1, and a recording webhook receiver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from watcher.httpserver import Request, Response, serve
from watcher.simulator import Simulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.replies: list[Response] = []  # consumed first; then `default`
        self.default = Response(204, b"")
        self.url = ""
        self.hold: anyio.Event | None = None  # when set, every request waits for it before it is answered
        self._arrived = anyio.Event()

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        self._arrived.set()
        self._arrived = anyio.Event()
        if self.hold is not None:
            await self.hold.wait()
        return self.replies.pop(0) if self.replies else self.default

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.requests]

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        """Wait until at least `count` requests arrived (fail after `within` seconds)."""
        with anyio.fail_after(within):
            while len(self.requests) < count:
                await self._arrived.wait()


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    """A simulator on a free port; yields it and its base URL."""
    sim = Simulator()
    async with anyio.create_task_group() as tg:
        port = await tg.start(sim.serve)
        yield sim, f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A recording webhook receiver on a free port."""
    rcv = Receiver()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, rcv.handle)
        rcv.url = f"http://127.0.0.1:{port}/hook"
        yield rcv
        tg.cancel_scope.cancel()
