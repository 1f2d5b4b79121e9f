"""The operator endpoint through real HTTP: /healthz, /readyz with reasons, and /metrics parsed as Prometheus text."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from watcher.cli_run import Components, open_components
from watcher.httpserver import Response
from watcher.ops import OpsServer
from watcher.simulator import Simulator

from .callhealth import collapsed, steady
from .conftest import Receiver
from .test_cli import WATCHER, env, write_config
from .test_daemon import FAST_RETRY, make_config

pytestmark = pytest.mark.anyio


class Ops:
    def __init__(self, parts: Components, url: str, clock: list[float], sim: Simulator) -> None:
        self.parts, self.url, self.clock, self.sim = parts, url, clock, sim


@pytest.fixture
async def ops(simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path) -> AsyncIterator[Ops]:
    """The real components of a daemon with its operator endpoint on a free port and a settable clock."""
    sim, url = simulator
    sim.add_task(1, "Renewals", status="running", progress=10)
    sim.add_task(2, "Surveys", status="pending")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1, 2], interval="10s")
    clock = [anyio.current_time()]
    async with (
        open_components(config, api_retry=FAST_RETRY, monotonic=lambda: clock[0]) as parts,
        anyio.create_task_group() as tg,
    ):
        server = OpsServer(parts.daemon, parts.store, parts.metrics, clock=lambda: clock[0])
        port = await tg.start(server.serve, "127.0.0.1", 0)
        yield Ops(parts, f"http://127.0.0.1:{port}", clock, sim)
        tg.cancel_scope.cancel()


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


async def test_healthz_is_ok_while_the_loop_ticks_and_says_why_when_not(ops: Ops) -> None:
    assert (await get(ops.url + "/healthz")).status_code == 200
    ops.clock[0] += 60  # no heartbeat for a minute
    stale = await get(ops.url + "/healthz")
    assert stale.status_code == 503
    assert "main loop silent" in stale.json()["reason"]


async def test_readyz_needs_a_recent_answer_from_the_api(ops: Ops) -> None:
    assert (await get(ops.url + "/readyz")).status_code == 200
    ops.clock[0] += 3 * 10 + 2  # three intervals and the API timeout without an answer
    stale = await get(ops.url + "/readyz")
    assert stale.status_code == 503
    assert "no poll got an answer" in stale.json()["reason"]
    assert await ops.parts.daemon.poll(1)
    assert (await get(ops.url + "/readyz")).status_code == 200


async def test_readyz_follows_the_pace_the_watcher_expects_not_a_fixed_three_intervals(ops: Ops) -> None:
    """Every task rightly polled slowly (stopped, or outside its windows): no answer for 3 intervals is no outage."""
    ops.sim.set(1, status="stop.operate")
    ops.sim.set(2, status="stop.timeout")
    daemon = ops.parts.daemon
    for task in (1, 2):
        assert await daemon.poll(task)
        assert daemon.next_delay(task) == 300.0  # what the worker plans after the poll: the slow pace
    assert daemon.answer_expected_within() == 300.0
    ops.clock[0] += 3 * 10 + 2 + 60  # more than three intervals, much less than three slow intervals
    ready = await get(ops.url + "/readyz")
    assert ready.status_code == 200, ready.text
    ops.clock[0] += 3 * 300  # now three slow intervals without an answer: that is an outage
    stale = await get(ops.url + "/readyz")
    assert stale.status_code == 503
    assert f"limit {3 * 300 + daemon.config.api.timeout:.0f}s" in stale.json()["reason"]


async def test_readyz_needs_a_writable_store(ops: Ops) -> None:
    assert ops.parts.sqlite is not None
    ops.parts.sqlite._db.execute("PRAGMA query_only=ON")
    response = await get(ops.url + "/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("store not writable")


async def test_metrics_parse_and_count_polls_events_deliveries_and_state(ops: Ops, receiver: Receiver) -> None:
    simulator = ops.sim
    daemon, dispatcher = ops.parts.daemon, ops.parts.dispatcher
    assert await daemon.poll(1)
    assert await daemon.poll(2)
    await dispatcher.drain()
    response = await get(ops.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    p = "voicefox_watcher_"
    assert samples[(p + "polls_total", (("outcome", "ok"),))] == 2
    assert samples[(p + "api_responses_total", (("code", "200"),))] == 2
    assert samples[(p + "api_request_duration_seconds_count", ())] == 2
    assert samples[(p + "events_total", (("type", "voicefox.task.observed"),))] == 2
    assert samples[(p + "deliveries_total", (("notifier", "hook"), ("outcome", "sent")))] == 2
    assert samples[(p + "tasks", (("status", "running"),))] == 1
    assert samples[(p + "tasks", (("status", "pending"),))] == 1
    assert samples[(p + "last_successful_poll_timestamp_seconds", ())] > 0
    assert any(name == p + "build_info" for name, _ in samples)
    # The simulator writes naive timestamps that have not changed yet: the zone is not known.
    assert samples[(p + "timezone_info", (("source", "unknown"), ("zone", "unknown")))] == 1
    assert samples[(p + "tasks_windows_doubted", ())] == 0
    receiver.default = Response(503, b"")
    simulator.set(1, status="done")
    assert await daemon.poll(1)
    await dispatcher.drain()
    response = await get(ops.url + "/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[(p + "outbox_pending", (("notifier", "hook"),))] == 1
    assert samples[(p + "outbox_oldest_age_seconds", (("notifier", "hook"),))] >= 0
    assert samples[(p + "deliveries_total", (("notifier", "hook"), ("outcome", "failed")))] == 1
    assert samples[(p + "tasks", (("status", "done"),))] == 1
    simulator.set(2, updatedAt="2026-11-23T10:00:00+09:00")  # an API that writes its offset
    assert await daemon.poll(2)
    text = (await get(ops.url + "/metrics")).text
    assert 'voicefox_watcher_timezone_info{source="api",zone="+09:00"} 1.0' in text


def with_health(ops: Ops) -> None:
    """Task 1's call log read (its answered share collapsed), task 2's not yet."""
    daemon = ops.parts.daemon
    daemon.states[1] = dataclasses.replace(daemon.states[1], health=collapsed(datetime.now(UTC)))


async def test_metrics_give_each_tasks_calls_in_the_last_hour_and_answer_rate(ops: Ops) -> None:
    daemon = ops.parts.daemon
    assert await daemon.poll(1)
    assert await daemon.poll(2)
    text = (await get(ops.url + "/metrics")).text
    assert "task_calls_last_hour{" not in text  # no call log read yet: nothing to say
    with_health(ops)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families((await get(ops.url + "/metrics")).text)
        for s in family.samples
    }
    p, one = "voicefox_watcher_task_", (("task_id", "1"),)
    assert samples[(p + "calls_last_hour", one)] == 312
    assert samples[(p + "answered_last_hour", one)] == 41
    assert samples[(p + "answer_rate", one)] == 0.03
    assert samples[(p + "answer_rate_dropped", one)] == 1
    assert not [key for key in samples if key[1] == (("task_id", "2"),)]
    daemon.states[1] = dataclasses.replace(daemon.states[1], health=steady(datetime.now(UTC)))
    text = (await get(ops.url + "/metrics")).text
    assert 'voicefox_watcher_task_answer_rate_dropped{task_id="1"} 0.0' in text
    assert 'voicefox_watcher_task_answer_rate{task_id="1"} 0.4' in text


async def test_unknown_paths_and_methods_are_refused(ops: Ops) -> None:
    assert (await get(ops.url + "/nope")).status_code == 404
    async with httpx.AsyncClient() as http:
        assert (await http.post(ops.url + "/metrics")).status_code == 405


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
async def test_promtool_finds_nothing_to_complain_about(ops: Ops, tmp_path: Path) -> None:
    await ops.parts.daemon.poll(1)
    with_health(ops)
    text = (await get(ops.url + "/metrics")).content
    result = await anyio.run_process(["promtool", "check", "metrics"], input=text, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b""
    assert result.stderr.strip() == b""


async def listening_port(proc: anyio.abc.Process) -> int:
    """The port a `watcher run` with `[http] listen = "127.0.0.1:0"` says it listens on (its JSON log line)."""
    assert proc.stdout is not None
    buffered = b""
    with anyio.fail_after(10):
        while b'"http.listening"' not in buffered:
            buffered += await proc.stdout.receive()
    line = next(raw for raw in buffered.splitlines() if b'"http.listening"' in raw)
    return int(json.loads(line)["port"])


async def test_the_daemon_serves_the_endpoint_on_the_configured_address(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = write_config(
        tmp_path / "w.toml", url, sim.token, receiver.url, [1], extra='\n[http]\nlisten = "127.0.0.1:0"\n'
    )
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env(sim.token)) as proc:
        try:
            port = await listening_port(proc)
            await receiver.wait_for(1)
            assert (await get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            assert (await get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            assert b"voicefox_watcher_polls_total" in (await get(f"http://127.0.0.1:{port}/metrics")).content
            ok = await anyio.run_process([WATCHER, "health", "--url", f"http://127.0.0.1:{port}/healthz"], check=False)
            assert ok.returncode == 0
            assert ok.stdout.startswith(b"healthy")
        finally:
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                await proc.wait()


async def test_health_says_unhealthy_when_nothing_answers(tmp_path: Path) -> None:
    result = await anyio.run_process([WATCHER, "health", "--url", "http://127.0.0.1:9/healthz"], check=False)
    assert result.returncode == 1
    assert result.stdout.startswith(b"unhealthy")


async def test_health_needs_an_http_listen_address_or_a_url(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    result = await anyio.run_process([WATCHER, "health", "-c", str(cfg)], env=env("token-value"), check=False)
    assert result.returncode == 2
    assert b"[http] listen is not set" in result.stderr
