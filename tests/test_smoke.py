"""The simulator fixture and receiver fixture work over real sockets."""

from __future__ import annotations

import httpx
import pytest

from watcher.simulator import Simulator

from .conftest import Receiver

pytestmark = pytest.mark.anyio


async def test_simulator_serves_a_task_with_the_token(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.add_task(7, "x", status="running", progress=3)
    async with httpx.AsyncClient(base_url=url) as http:
        ok = await http.get("/openapi/tasks/7", headers={"Authorization": f"Bearer {sim.token}"})
        denied = await http.get("/openapi/tasks/7")
    assert ok.status_code == 200
    assert ok.json()["status"] == "running"
    assert denied.status_code == 401


async def test_receiver_records_posts(receiver: Receiver) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(receiver.url, content=b'{"a":1}')
    assert r.status_code == 204
    assert receiver.bodies() == [{"a": 1}]
