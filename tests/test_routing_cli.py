"""`watcher check` shows what reaches each notifier; `watcher route` says who would be told of an event, and why not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import run, write_config

pytestmark = pytest.mark.anyio

CONFIG = """
[api]
token = "${TEST_VOICEFOX_TOKEN}"

[watch]
tasks = [1]
timezone = "Asia/Tokyo"

[[watch.task]]
id = 1001
labels = { team = "sales", customer = "acme" }

[[watch.task]]
id = 1002
labels = { team = "support" }

[[notifiers]]
kind = "log"
name = "sales"
events = ["voicefox.task.failed", "voicefox.task.finished"]
matchers = ['team="sales"']
repeat_every = "1h"
repeat_max = 3
group_wait = "30s"

[[notifiers]]
kind = "log"
name = "support-night"
matchers = ['team=~"support|care"']
quiet = [{ days = "mon-fri", from = "20:00", to = "08:00" }, { days = "sat-sun" }]
urgent = ["voicefox.task.failed"]

[[notifiers]]
kind = "log"
name = "everyone"
events = ["voicefox.task.failed"]
send_resolved = false
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "w.toml"
    path.write_text(CONFIG)
    path.chmod(0o600)
    return path


async def test_check_lists_for_each_notifier_the_tasks_and_events_that_reach_it(config: Path) -> None:
    result = await run(["check", "-c", str(config)], token="token-value")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert 'matchers team="sales"' in out
    assert "gets finished, failed, resumed of task(s) 1001" in out  # resumed: it ends a failure
    assert "reminds every 3600s while a problem lasts, at most 3 time(s)" in out
    assert "group_wait 30s" in out
    assert "of task(s) 1002" in out
    assert "quiet hours mon-fri 20:00–08:00, sat-sun all day (Asia/Tokyo): events held until they end" in out
    assert "urgent: voicefox.task.failed" in out
    assert "gets failed of every task" in out
    assert "send_resolved = false" in out


@pytest.mark.parametrize(
    ("args", "told", "not_told"),
    [
        (["--task", "1001", "--event", "failed"], ["sales: told", "everyone: told"], ["support-night: not told"]),
        (["--task", "1002", "--event", "voicefox.task.failed"], ["support-night: told", "everyone: told"], []),
        (["--task", "1001", "--event", "resumed"], ["sales: told"], ["everyone: not told (send_resolved = false)"]),
        (["--task", "1", "--event", "stalled"], [], ["sales: not told (its events do not include this type)"]),
        (
            ["--task", "1", "--event", "finished", "--label", "team=sales"],
            ["sales: told"],
            ['support-night: not told (labels do not match team=~"support|care")'],
        ),
    ],
)
async def test_route_says_who_would_be_told_and_why_not(
    config: Path, args: list[str], told: list[str], not_told: list[str]
) -> None:
    result = await run(["route", "-c", str(config), *args], token="token-value")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    for line in told + not_told:
        assert f"  {line}" in out, out


async def test_route_refuses_an_unknown_event_type_with_the_list_of_known_ones(config: Path) -> None:
    result = await run(["route", "-c", str(config), "--task", "1", "--event", "exploded"], token="token-value")
    err = result.stderr.decode()
    assert result.returncode == 2
    assert "'exploded' is not an event type" in err and "finished" in err and "Traceback" not in err


async def test_once_sends_a_burst_at_once_and_leaves_rows_quiet_hours_hold_without_failing(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    """A one-shot run cannot wait out group_wait (what it would gather goes out now, together), and rows held by
    quiet hours are pending by design: exit 0; the next run after the quiet hours delivers them."""
    sim, url = simulator
    for task_id in (1, 2, 3):
        sim.add_task(task_id, status="done")
    now = datetime.now(UTC)
    quiet = f'{{ from = "{(now - timedelta(minutes=1)):%H:%M:%S}", to = "{(now + timedelta(minutes=10)):%H:%M:%S}" }}'
    extra = f"""
[[notifiers]]
kind = "webhook"
name = "grouped"
url = "{receiver.url}"
digest = true
group_wait = "1h"

[[notifiers]]
kind = "webhook"
name = "asleep"
url = "{receiver.url}"
quiet = [{quiet}]
quiet_timezone = "UTC"
"""
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1, 2, 3], extra=extra)
    result = await run(["once", "-c", str(cfg)], token=sim.token)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    batches = [json.loads(r.body) for r in receiver.requests if r.body.startswith(b"[")]
    assert len(batches) == 1 and [e["subject"] for e in batches[0]] == ["1", "2", "3"]
    finished = [line for line in result.stdout.decode().splitlines() if '"once.finished"' in line]
    assert '"held_by_quiet_hours": 3' in finished[0] and '"pending_deliveries": 3' in finished[0]
