"""A full run with every channel, faults and debug logs: no secret or phone number appears anywhere it writes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from watcher.httpserver import Response, serve
from watcher.simulator import Simulator

from .conftest import Mailbox, Receiver
from .platforms import FEISHU_SECRET, FEISHU_TOKEN, TEAMS_SIG, FeishuBot, TeamsWorkflow, feishu_url, serving, teams_url
from .test_cli import SECRET, WATCHER, read_all
from .test_robots import DT_SECRET, KEY, TOKEN, DingTalkRobot, WeComRobot, envelope

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
# One request per event, so that the requests can be counted (digests carry the same messages, so no more data).
digest = false
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


async def test_no_secret_of_any_channel_reaches_logs_cli_output_or_the_store(
    simulator: tuple[Simulator, str], receiver: Receiver, mailbox: Mailbox, tmp_path: Path
) -> None:
    """Every channel's credentials (tokens and keys in webhook URLs, signing secrets, the SMTP password, the people's
    numbers DingTalk mentions), with each platform first refusing (some quoting the credential back): none of them is
    in the daemon's logs, the CLI's output or the store."""
    sim, url = simulator
    sim.add_task(1, "Renewals", status="running", progress=5)
    dingtalk, wecom, feishu, teams = DingTalkRobot(), WeComRobot(), FeishuBot(), TeamsWorkflow()
    dingtalk.replies.append(envelope(310000, f"sign not match: access_token={TOKEN} for 13800001111"))
    wecom.replies.append(Response(502, f"bad gateway for key={KEY}".encode()))  # (45009 would pause a minute)
    feishu.codes.append(11232)
    teams.replies.append(Response(429, b"", (("Retry-After", "1"),)))
    mailbox.logins = {"watcher": "smtp-PASSWORD-secret"}
    mailbox.data_replies.append("451 4.3.0 try again later")
    apprise_path = "/apprise/APPRISE-PATH-SECRET"
    async with anyio.create_task_group() as tg, serving(feishu) as feishu_base, serving(teams) as teams_base:
        ports = [await tg.start(serve, robot.handle) for robot in (dingtalk, wecom)]
        apprise = Receiver()
        apprise_port = await tg.start(serve, apprise.handle)
        apprise.replies.append(Response(500, b"down"))
        cfg = tmp_path / "w.toml"
        cfg.write_text(
            f"""
[api]
base_url = "{url}"
token = "{sim.token}"
timeout = "1s"
[watch]
tasks = [1]
interval = "100ms"
[log]
level = "debug"
[delivery]
backoff_max = "200ms"
[[notifiers]]
kind = "dingtalk"
name = "dingtalk"
url = "http://127.0.0.1:{ports[0]}/robot/send?access_token={TOKEN}"
secret = "{DT_SECRET}"
at_mobiles = ["13800001111"]
events = ["*"]
[[notifiers]]
kind = "wecom"
name = "wecom"
url = "http://127.0.0.1:{ports[1]}/cgi-bin/webhook/send?key={KEY}"
events = ["*"]
[[notifiers]]
kind = "feishu"
name = "feishu"
url = "{feishu_url(feishu_base)}"
secret = "{FEISHU_SECRET}"
events = ["*"]
[[notifiers]]
kind = "teams"
name = "teams"
url = "{teams_url(teams_base)}"
events = ["*"]
[[notifiers]]
kind = "email"
name = "mail"
host = "127.0.0.1"
port = {mailbox.port}
tls = "none"
username = "watcher"
password = "smtp-PASSWORD-secret"
from = "watcher@example.com"
to = ["ops@example.com"]
events = ["*"]
[[notifiers]]
kind = "apprise"
name = "pager"
url = "json://127.0.0.1:{apprise_port}{apprise_path}"
events = ["*"]
"""
        )
        cfg.chmod(0o600)
        outputs: list[bytes] = []
        sent: set[tuple[str, str]] = set()  # (receiver, event type) of each `delivery.sent` line
        progress = anyio.Event()

        async def read_logs(stream: anyio.abc.ByteReceiveStream) -> None:
            nonlocal progress
            buffer = b""
            async for chunk in stream:
                outputs.append(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    entry = json.loads(line)
                    if entry.get("event") == "delivery.sent":
                        sent.add((entry["receiver"], entry["type"]))
                        progress.set()
                        progress = anyio.Event()

        async def until(receivers: set[str], type_: str) -> None:
            with anyio.fail_after(30):
                while not all((name, type_) in sent for name in receivers):
                    await progress.wait()

        retried = {"wecom", "feishu", "teams", "mail", "pager"}  # DingTalk's refusal is permanent: a dead letter
        async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=dict(os.environ)) as proc:
            try:
                assert proc.stdout is not None
                async with anyio.create_task_group() as readers:  # reads until the daemon's stdout ends
                    readers.start_soon(read_logs, proc.stdout)
                    await until(retried, "voicefox.task.observed")  # each refused once, then took it on a retry
                    sim.set(1, status="stop.abnormal")
                    await until(retried | {"dingtalk"}, "voicefox.task.failed")
                    proc.send_signal(signal.SIGTERM)
                    with anyio.fail_after(15):
                        assert await proc.wait() == 0
                outputs.append(await read_all(proc.stderr))
            finally:
                if proc.returncode is None:
                    proc.kill()
        for args in (["status"], ["outbox"], ["outbox", "--json"], ["check"]):
            result = await anyio.run_process([WATCHER, *args, "-c", str(cfg)], check=False)
            outputs += [result.stdout, result.stderr]
        tg.cancel_scope.cancel()
    outputs += [p.read_bytes() for p in tmp_path.glob("*.db*")]
    everything = b"\n".join(outputs)
    assert b"delivery.failed" in everything and b"delivery.sent" in everything  # refusals and retries happened
    secrets = [sim.token, TOKEN, DT_SECRET, KEY, FEISHU_SECRET, FEISHU_TOKEN, TEAMS_SIG, "smtp-PASSWORD-secret"]
    secrets += ["APPRISE-PATH-SECRET", "13800001111"]
    leaks = [s for s in secrets if s.encode() in everything]
    assert leaks == []
