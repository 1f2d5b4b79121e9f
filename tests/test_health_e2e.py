"""End to end through the installed CLI: `watcher run` reads the simulator's call log on 127.0.0.1, at the pace of a
campaign day played in seconds. A big campaign whose percentage sits still while it calls is never stalled; a dialer
that stops calling is stalled within `stall_after` + `[health] every`; carriers blocking the numbers raise exactly
one answer-rate alert and, once cleared, one recovery; and no phone number is anywhere in the store, the logs or the
deliveries."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import anyio.abc
import pytest

from watcher.simulator import Simulator

from .conftest import Receiver
from .test_calllog_daemon import PHONE, dump
from .test_cli import WATCHER
from .test_zone_e2e import of, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CREEPING, SILENT, BLOCKED = 2001, 2002, 2003
STALL_AFTER, EVERY = 8.0, 1.0
# Calls that ring a second or two and talk a second at most: they are in the log (which lists ended calls) at once.
RING, TALK = (1, 2), (0, 1)


def config(path: Path, api_url: str, hook_url: str, db: Path) -> Path:
    path.write_text(
        f"""
[api]
base_url = "{api_url}"
token = "${{TEST_VOICEFOX_TOKEN}}"
timeout = "2s"

[watch]
tasks = [{CREEPING}, {SILENT}, {BLOCKED}]
interval = "500ms"
stall_after = "{STALL_AFTER}s"
timezone = "Asia/Tokyo"

[health]
every = "{EVERY}s"
window = 40
min_calls = 20

[store]
path = "{db}"

[log]
level = "debug"
format = "json"

[[notifiers]]
kind = "webhook"
name = "hook"
url = "{hook_url}"
"""
    )
    return path


async def test_campaign_health_from_the_call_log_through_the_installed_cli(receiver: Receiver, tmp_path: Path) -> None:
    sim = Simulator(timestamps="offset")
    before = sim.now() - timedelta(minutes=2)  # two minutes of calls already in the log: a baseline to judge from
    # A million-number campaign at 2 calls a second: 1 % is 10,000 calls, so its percentage sits still all along.
    sim.add_task(CREEPING, "Nationwide contract renewals", status="running", total=1_000_000, progress=37)
    sim.dialer(
        CREEPING, calls_per_minute=120, answered=0.4, at=before, advances_progress=True, ring=RING, duration=TALK
    )
    sim.add_task(SILENT, "Clinic reminder calls", status="running", total=5_000, progress=12)
    sim.dialer(SILENT, calls_per_minute=120, answered=0.45, at=before, advances_progress=True, ring=RING, duration=TALK)
    sim.add_task(BLOCKED, "Insurance renewal outreach", status="running", total=1_000_000, progress=20)
    sim.dialer(BLOCKED, calls_per_minute=600, answered=0.4, at=before, advances_progress=True, ring=RING, duration=TALK)
    db = tmp_path / "state.db"
    log = bytearray()
    async with anyio.create_task_group() as tg:
        port = await tg.start(sim.serve)
        cfg = config(tmp_path / "w.toml", f"http://127.0.0.1:{port}", receiver.url, db)
        env = {**os.environ, "TEST_VOICEFOX_TOKEN": sim.token, "TZ": "UTC"}
        env.pop("WATCHER_CONFIG", None)
        async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=env) as proc:

            async def read(stream: anyio.abc.ByteReceiveStream | None) -> None:
                assert stream is not None
                async for chunk in stream:
                    log.extend(chunk)

            tg.start_soon(read, proc.stdout)
            tg.start_soon(read, proc.stderr)
            try:
                await wait_until(
                    receiver, lambda b: all(of(b, t, "observed") for t in (CREEPING, SILENT, BLOCKED)), within=90
                )
                # The watcher is up and has its baselines: now the day turns.
                now = sim.now()
                silent_from = now + timedelta(seconds=3)
                sim.dialer(SILENT, calls_per_minute=0, at=silent_from)
                sim.dialer(BLOCKED, answered=0.03, at=now + timedelta(seconds=3))  # carriers flag the numbers
                sim.dialer(BLOCKED, answered=0.4, at=now + timedelta(seconds=15))  # ...and clear them
                await wait_until(
                    receiver, lambda b: of(b, SILENT, "stalled") and of(b, BLOCKED, "answer_rate_recovered"), within=90
                )
                # The creeping campaign has sat on its percentage for several stall_after by now; one more stall_after
                # of watching for a stall that must not come (the outer deadline is the one that ends the wait).
                with anyio.move_on_after(STALL_AFTER):
                    await wait_until(receiver, lambda b: of(b, CREEPING, "stalled"), within=2 * STALL_AFTER)
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(20):
                    assert await proc.wait() == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
        tg.cancel_scope.cancel()

    bodies = receiver.bodies()
    creeping = [b["data"]["task"]["progress"] for b in bodies if b["subject"] == str(CREEPING)]
    assert not of(bodies, CREEPING, "stalled"), "a campaign that keeps calling is not stalled"
    assert len(set(creeping)) == 1  # its percentage did not move while watched
    (stalled,) = of(bodies, SILENT, "stalled")
    assert stalled["data"]["evidence"] == "calllog"
    late = datetime.fromisoformat(stalled["time"]) - silent_from
    # On the watcher's own clock (the event's time), against when the dialer fell silent: within stall_after and one
    # look, with two seconds' grace for a busy machine stretching a one-second look (the bound is what the design
    # promises, not a speed: tests/test_calllog_daemon.py checks it exactly on a clock of its own).
    assert late <= timedelta(seconds=STALL_AFTER + EVERY + 2.0), late
    assert len(of(bodies, BLOCKED, "answer_rate_dropped")) == 1
    assert len(of(bodies, BLOCKED, "answer_rate_recovered")) == 1
    (dropped,) = of(bodies, BLOCKED, "answer_rate_dropped")
    assert dropped["data"]["answerRate"]["before"] > 0.3 and dropped["data"]["answerRate"]["after"] < 0.1
    assert dropped["data"]["calls"]["total"] > dropped["data"]["calls"]["answered"] > 0  # what it has counted
    assert dropped["data"]["calls"]["lastHour"]["calls"] > 0
    text = log.decode()
    assert '"calllog.forbidden"' not in text and '"calllog.no_zone"' not in text
    assert sim.calllog_requests > 0
    # Counts and times only: no number the simulator wrote reached the deliveries, the logs or the store.
    for where, content in (
        ("deliveries", json.dumps(bodies, ensure_ascii=False)),
        ("logs", text),
        ("store", dump(db)),
    ):
        found = PHONE.search(content)
        assert found is None, f"a phone number in the {where}: {found.group(0) if found else ''}"
