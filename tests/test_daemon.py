"""The daemon through real sockets: simulator on 127.0.0.1 -> watcher -> store -> webhook receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from watcher import config as config_mod
from watcher.cli_run import open_components
from watcher.config import Config
from watcher.daemon import Daemon
from watcher.dispatch import Dispatcher
from watcher.retry import ApiRetry
from watcher.simulator import Simulator
from watcher.store import Store

from .conftest import Receiver

pytestmark = pytest.mark.anyio


def make_config(api_url: str, token: str, hook_url: str, store: Path, tasks: list[int], **watch: Any) -> Config:
    return config_mod.validate(
        {
            "api": {"base_url": api_url, "token": token, "timeout": "1s"},
            "watch": {"tasks": tasks, "interval": "100ms", "stall_after": "1h", **watch},
            "store": {"path": str(store)},
            "delivery": {"timeout": "2s"},
            "notifiers": [{"kind": "webhook", "name": "hook", "url": hook_url}],
        },
        source="test",
    )


FAST_RETRY = ApiRetry(attempts=3, initial=0.001, maximum=0.001, jitter=0.0)


@asynccontextmanager
async def components(config: Config) -> AsyncIterator[tuple[Daemon, Dispatcher, Store]]:
    """The daemon's real wiring, with API retries that do not wait."""
    async with open_components(config, api_retry=FAST_RETRY) as c:
        assert c.sqlite is not None
        yield c.daemon, c.dispatcher, c.sqlite


def rebuilt(real: Daemon, config: Config, **seams: Any) -> Daemon:
    """A second daemon on a running one's client, store and dispatcher, with other seams (a clock of the test's)."""
    states = real.states
    return Daemon(config, client=real._client, store=real._store, states=states, dispatcher=real._dispatcher, **seams)


def types(receiver: Receiver) -> list[tuple[str, str]]:
    return [(b["subject"], b["type"]) for b in receiver.bodies()]


async def test_transitions_reach_the_webhook_in_order(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, "Renewals", status="pending", progress=0)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1], progress_step=50)
    async with components(config) as (daemon, dispatcher, _store):
        for changes in ({}, {"status": "running"}, {"progress": 55}, {"status": "done", "progress": 100}):
            sim.set(1, **changes)
            assert await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver) == [
        ("1", "voicefox.task.observed"),
        ("1", "voicefox.task.started"),
        ("1", "voicefox.task.progressed"),
        ("1", "voicefox.task.finished"),
    ]
    assert receiver.bodies()[2]["data"]["milestone"] == 50


async def test_an_api_outage_produces_no_task_event(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running", progress=10)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    async with components(config) as (daemon, dispatcher, store):
        assert await daemon.poll(1)
        for kind in ("500", "503", "malformed", "empty", "wrong_type", "huge", "timeout"):
            sim.timeout_seconds = 1.5
            sim.inject(kind, times=3)
            assert not await daemon.poll(1), kind
        await dispatcher.drain()
        assert types(receiver) == [("1", "voicefox.task.observed")]
        assert store.load_states()[1].snapshot.status == "running"
        sim.set(1, status="stop.abnormal")
        assert await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver)[-1] == ("1", "voicefox.task.failed")
    assert len(receiver.requests) == 2


async def test_a_restart_neither_repeats_nor_misses_a_transition(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running", progress=10)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    async with components(config) as (daemon, dispatcher, _store):
        assert await daemon.poll(1)
        await dispatcher.drain()
    sim.set(1, status="done", progress=100)  # happens while the watcher is down
    async with components(config) as (daemon, dispatcher, _store):
        assert await daemon.poll(1)
        assert await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver) == [("1", "voicefox.task.observed"), ("1", "voicefox.task.finished")]


async def test_undelivered_events_are_sent_after_a_restart_with_the_same_id(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    receiver.default = receiver.default.__class__(503, b"")
    async with components(config) as (daemon, dispatcher, _store):
        assert await daemon.poll(1)
        await dispatcher.drain()
    first_id = receiver.requests[0].headers["webhook-id"]
    receiver.default = receiver.default.__class__(204, b"")
    async with components(config) as (daemon, dispatcher, store):
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)  # pending rows go out before any new poll
            await receiver.wait_for(2)
            tg.cancel_scope.cancel()
        assert [c.state for c in store.outbox_counts()] == ["delivered"]
    assert [r.headers["webhook-id"] for r in receiver.requests] == [first_id, first_id]


async def test_a_404_for_a_known_task_is_announced_once(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    async with components(config) as (daemon, dispatcher, _store):
        await daemon.poll(1)
        sim.remove(1)
        await daemon.poll(1)
        await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver) == [("1", "voicefox.task.observed"), ("1", "voicefox.task.missing")]


async def test_a_404_for_a_never_seen_task_is_logged_not_announced(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    _sim, url = simulator
    config = make_config(url, _sim.token, receiver.url, tmp_path / "s.db", [404404])
    async with components(config) as (daemon, dispatcher, _store):
        with capture_logs() as logs:
            await daemon.poll(404404)
        await dispatcher.drain()
    assert receiver.requests == []
    assert any(log["event"] == "poll.failed" and "watch.tasks" in log["hint"] for log in logs)


async def test_a_rejected_token_pauses_every_poll_and_says_why(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, "wrong-token", receiver.url, tmp_path / "s.db", [1])
    async with components(config) as (daemon, _dispatcher, _store):
        with capture_logs() as logs:
            assert not await daemon.poll(1)
            assert daemon.gate.not_before >= anyio.current_time() + 29
            assert not await daemon.poll(1)  # refused again: the pause doubles
            assert daemon.gate.not_before >= anyio.current_time() + 59
    [line] = [log for log in logs if log["event"] == "poll.failed"]  # and it is said once
    assert line["log_level"] == "error"
    assert "token" in line["error"]
    assert "wrong-token" not in str(logs)


async def test_429_pauses_every_poll_for_retry_after(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    sim.inject("429", retry_after="30")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    async with components(config) as (daemon, _dispatcher, _store):
        assert not await daemon.poll(1)
        assert daemon.gate.not_before >= anyio.current_time() + 29
        assert sim.requests == 1  # the client did not retry a 429 on its own


async def test_stalled_is_emitted_once_per_episode_with_an_injected_clock(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running", progress=30)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1], stall_after="10m")
    now = [datetime(2026, 11, 23, 9, 0, tzinfo=UTC)]
    async with components(config) as (real, dispatcher, _store):
        daemon = rebuilt(real, config, clock=lambda: now[0])
        for minutes in (0, 5, 11, 20, 30):
            now[0] = datetime(2026, 11, 23, 9, 0, tzinfo=UTC) + timedelta(minutes=minutes)
            await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver) == [("1", "voicefox.task.observed"), ("1", "voicefox.task.stalled")]


async def test_the_running_daemon_polls_on_schedule_and_delivers(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="pending")
    sim.add_task(2, status="running", progress=0)
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1, 2])
    async with components(config) as (daemon, _dispatcher, _store), anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await receiver.wait_for(2)
        sim.set(1, status="running")
        sim.set(2, status="stop.timeout")
        await receiver.wait_for(4)
        tg.cancel_scope.cancel()
    assert sorted(types(receiver)) == [
        ("1", "voicefox.task.observed"),
        ("1", "voicefox.task.started"),
        ("2", "voicefox.task.observed"),
        ("2", "voicefox.task.timed_out"),
    ]


async def test_a_store_write_failure_loses_nothing(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    async with components(config) as (daemon, dispatcher, store):
        await daemon.poll(1)
        sim.set(1, status="done")
        store._db.execute("PRAGMA query_only=ON")  # every write now fails
        with capture_logs() as logs:
            await daemon.poll(1)
        assert any(log["event"] == "store.write_failed" for log in logs)
        store._db.execute("PRAGMA query_only=OFF")
        await daemon.poll(1)  # the same transition is detected again
        await dispatcher.drain()
    assert types(receiver) == [("1", "voicefox.task.observed"), ("1", "voicefox.task.finished")]


async def test_an_unreachable_api_is_announced_once_and_its_recovery_too(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    config = config.model_copy(update={"api": config.api.model_copy(update={"unreachable_after": 600.0})})
    mono = [0.0]
    async with components(config) as (real, dispatcher, _store):
        daemon = rebuilt(real, config, monotonic=lambda: mono[0])
        assert await daemon.poll(1)
        sim.inject("503", times=1000)
        for minute in (1, 5, 11, 12, 30):  # unreachable from minute 0; announced once past 10 minutes
            mono[0] = minute * 60.0
            assert not await daemon.poll(1)
        sim.clear_faults()
        mono[0] = 31 * 60.0
        assert await daemon.poll(1)
        assert await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver) == [
        ("1", "voicefox.task.observed"),
        ("api", "voicefox.watcher.api_unreachable"),
        ("api", "voicefox.watcher.api_recovered"),
    ]
    assert receiver.bodies()[1]["data"]["unreachableForSeconds"] == 660


async def test_a_refused_token_reaches_slack_as_a_refused_token_not_an_outage(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = config_mod.validate(
        {
            "api": {"base_url": url, "token": sim.token, "timeout": "1s"},
            "watch": {"tasks": [1], "interval": "100ms"},
            "store": {"path": str(tmp_path / "s.db")},
            "notifiers": [{"kind": "slack", "name": "team", "url": receiver.url}],
        },
        source="test",
    )
    mono = [0.0]
    async with components(config) as (real, dispatcher, _store):
        daemon = rebuilt(real, config, monotonic=lambda: mono[0])
        assert await daemon.poll(1)
        sim.inject("401", times=1000)
        mono[0] = 600.0  # past api.unreachable_after (5 min)
        assert not await daemon.poll(1)
        await dispatcher.drain()
        sim.clear_faults()  # the token is put right
        mono[0] = 660.0
        assert await daemon.poll(1)
        await dispatcher.drain()
    slack, recovered = receiver.bodies()  # Slack skips `observed` by default: only the API's failure is announced
    assert slack["text"].endswith("VoiceFox API refused the token (check api.token): no task can be watched for 10 min")
    assert "voicefox.watcher.api_unreachable" in str(slack["blocks"])  # the event type itself is unchanged
    assert recovered["text"].endswith("VoiceFox API accepts the token again after 10 min")  # not "reachable again"


async def test_a_reload_starts_and_stops_pollers_and_swaps_notifiers(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    sim.add_task(2, status="pending")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    async with open_components(config, api_retry=FAST_RETRY) as parts, anyio.create_task_group() as tg:
        await tg.start(parts.daemon.run)
        await receiver.wait_for(1)
        new = make_config(
            url, sim.token, receiver.url + "?v=2", tmp_path / "s.db", [2], concurrency=12, interval="200ms"
        )
        needs_restart = parts.reload(new)
        await receiver.wait_for(2)
        assert parts.daemon.scheduled() == [2]
        assert parts.daemon._workers == 12  # [watch] concurrency raised: more workers at once
        assert parts.daemon._timetable.interval == 0.2  # and the new interval is the timetable's at once
        tg.cancel_scope.cancel()
    assert needs_restart == []
    assert types(receiver) == [("1", "voicefox.task.observed"), ("2", "voicefox.task.observed")]
    assert receiver.requests[1].target == "/hook?v=2"  # the new notifier config delivered it


async def test_an_outage_of_many_tasks_logs_one_line_per_cause_not_per_poll(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    tasks = list(range(1, 21))
    for task_id in tasks:
        sim.add_task(task_id, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", tasks)
    async with components(config) as (daemon, _dispatcher, _store):
        sim.inject("503", times=10_000)
        with capture_logs() as logs:
            for _round in range(5):
                for task_id in tasks:
                    assert not await daemon.poll(task_id)
            sim.clear_faults()
            for task_id in tasks:
                assert await daemon.poll(task_id)
    failed = [log for log in logs if log["event"] == "poll.failed"]
    recovered = [log for log in logs if log["event"] == "poll.recovered" and log["log_level"] == "info"]
    assert len(failed) == 1  # 100 failed polls, one line
    assert failed[0]["cause"] == "TransientApiError"
    assert len(recovered) == 1


async def test_a_429_stops_the_rest_of_a_round_even_for_polls_already_queued(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    tasks = list(range(1, 11))
    for task_id in tasks:
        sim.add_task(task_id, status="running")
    sim.inject("429", retry_after="60")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", tasks, concurrency=1)
    async with components(config) as (daemon, _dispatcher, _store):
        assert not await daemon.poll_all()
    assert sim.requests == 1


async def test_a_task_the_api_never_served_fails_the_round(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1, 999])
    async with components(config) as (daemon, _dispatcher, _store):
        assert not await daemon.poll_all()  # a typo in watch.tasks makes `watcher once` exit 1


async def test_one_404_is_not_enough_to_call_a_task_missing(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    config = make_config(url, sim.token, receiver.url, tmp_path / "s.db", [1])
    async with components(config) as (daemon, dispatcher, _store):
        await daemon.poll(1)
        sim.inject("404")
        await daemon.poll(1)
        await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver) == [("1", "voicefox.task.observed")]
