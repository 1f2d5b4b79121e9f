"""A full run with every channel, faults and debug logs: no secret or phone number appears anywhere it writes."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from watcher.httpserver import Response, serve
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import SECRET, WATCHER, read_all

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SLACK_PATH = "/services/T0SECRET1/B0SECRET2/xoxSLACKSECRETPATH3"


@pytest.fixture
async def slack() -> AsyncIterator[Receiver]:
    """A second receiver standing in for Slack's incoming-webhook endpoint."""
    rcv = Receiver()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, rcv.handle)
        rcv.url = f"http://127.0.0.1:{port}{SLACK_PATH}"
        yield rcv
        tg.cancel_scope.cancel()


async def test_no_secret_or_personal_data_reaches_any_output(
    simulator: tuple[Simulator, str], receiver: Receiver, slack: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, "Renewals", status="pending")
    sim.add_task(2, "Surveys", status="running", progress=5)
    token_file = tmp_path / "token"
    token_file.write_text(sim.token)
    cfg = tmp_path / "w.toml"
    cfg.write_text(
        f"""
[api]
base_url = "{url}"
token_file = "{token_file}"
timeout = "1s"
[watch]
tasks = [1, 2]
interval = "100ms"
stall_after = "300ms"
[log]
level = "debug"
[[notifiers]]
kind = "webhook"
name = "hook"
url = "{receiver.url}?key=querysecret"
secret = "{SECRET}"
[[notifiers]]
kind = "slack"
name = "slack"
url = "{slack.url}"
events = ["*"]
[[notifiers]]
kind = "log"
name = "log"
"""
    )
    cfg.chmod(0o600)
    receiver.replies = [Response(503, b"busy"), Response(400, b"bad")]
    slack.replies = [Response(500, b"oops"), Response(404, b"no_service")]
    sim.inject("500", times=2)
    sim.inject("malformed", times=1)
    outputs: list[bytes] = []
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=dict(os.environ)) as proc:
        try:
            await receiver.wait_for(2)
            for changes in (
                {"status": "running"},
                {"progress": 50},
                {"status": "done", "progress": 100, "summary": "ok"},
            ):
                sim.set(1, **changes)
                before = len(receiver.requests)
                await receiver.wait_for(before + 1)
            sim.set(2, status="stop.abnormal")
            sim.remove(1)
            await slack.wait_for(6)
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await proc.wait() == 0
            outputs += [await read_all(proc.stdout), await read_all(proc.stderr)]
        finally:
            if proc.returncode is None:
                proc.kill()
    for args in (["status"], ["status", "--json"], ["outbox"], ["outbox", "--json"], ["notify-test"], ["check"]):
        result = await anyio.run_process([WATCHER, *args, "-c", str(cfg)], check=False)
        outputs += [result.stdout, result.stderr]
    outputs += [r.body for r in receiver.requests] + [r.body for r in slack.requests]
    outputs += [str(r.headers).encode() for r in receiver.requests + slack.requests if "authorization" not in r.headers]
    outputs += [p.read_bytes() for p in tmp_path.glob("*.db*")]
    everything = b"\n".join(outputs)
    assert b"task.notified" in everything  # the run really logged events
    secrets = [
        sim.token,
        SECRET,
        SECRET.removeprefix("whsec_"),
        SLACK_PATH,
        "B0SECRET2",
        "querysecret",
        "ws-token-secret",
        "wsurl-secret",
        "819012345678",
        "819087654321",
        "818011112222",
        "campaign.owner@example.com",
    ]
    leaks = [s for s in secrets if s.encode() in everything]
    assert leaks == []
