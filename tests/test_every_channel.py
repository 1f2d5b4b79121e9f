"""Every channel at once: one config with every notifier kind against local stand-ins that answer as each platform
documents. `watcher notify-test` (the installed CLI) reaches each, one line per notifier; and through the real outbox
a wrong signing secret, a platform's error code and a refused connection each end as they must (dead letter or
retry), with a message naming the notifier and the cause."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from watcher import config as config_mod
from watcher.cli_run import delivery_client, notify_context
from watcher.dispatch import Dispatcher
from watcher.httpserver import serve
from watcher.model import EventType
from watcher.notify import build
from watcher.store import Store
from watcher.stores import ThreadedStore

from .conftest import Mailbox, Receiver
from .platforms import FEISHU_SECRET, FeishuBot, TeamsWorkflow, feishu_url, serving, teams_url
from .test_cli import WATCHER, env, write_config
from .test_notify import event_of
from .test_robots import DT_SECRET, KEY, OTHER_SECRET, TOKEN, DingTalkRobot, WeComRobot, envelope

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Platforms:
    """Every stand-in, served on 127.0.0.1."""

    def __init__(self) -> None:
        self.dingtalk, self.wecom = DingTalkRobot(), WeComRobot()
        self.feishu, self.teams = FeishuBot(), TeamsWorkflow()
        self.slack, self.apprise = Receiver(), Receiver()
        self.feishu_url = self.teams_url = ""

    def notifiers(self, receiver: Receiver, mailbox: Mailbox, *, dingtalk_secret: str = DT_SECRET) -> str:
        return f"""
[messages]
language = "zh-Hans"
task_url = "https://console.voicefox.example/tasks/{{id}}"

[[notifiers]]
kind = "slack"
name = "slack-jp"
language = "ja"
url = "{self.slack.url}"

[[notifiers]]
kind = "dingtalk"
name = "dingtalk-cn"
url = "{self.dingtalk.url}"
secret = "{dingtalk_secret}"

[[notifiers]]
kind = "wecom"
name = "wecom-cn"
url = "{self.wecom.url}"

[[notifiers]]
kind = "feishu"
name = "feishu-cn"
url = "{self.feishu_url}"
secret = "{FEISHU_SECRET}"

[[notifiers]]
kind = "teams"
name = "teams-jp"
language = "ja"
url = "{self.teams_url}"

[[notifiers]]
kind = "email"
name = "mail-ops"
host = "127.0.0.1"
port = {mailbox.port}
tls = "none"
from = "watcher@example.com"
to = ["ops@example.com"]

[[notifiers]]
kind = "apprise"
name = "pager"
url = "{self.apprise.url.replace("http://", "json://")}"
"""


@pytest.fixture
async def platforms() -> AsyncIterator[Platforms]:
    p = Platforms()
    async with (
        anyio.create_task_group() as tg,
        serving(p.feishu) as feishu_base,
        serving(p.teams) as teams_base,
    ):
        for robot, path in ((p.dingtalk, "/robot/send?access_token="), (p.wecom, "/cgi-bin/webhook/send?key=")):
            port = await tg.start(serve, robot.handle)
            robot.url = f"http://127.0.0.1:{port}{path}{TOKEN if robot is p.dingtalk else KEY}"
        for rcv in (p.slack, p.apprise):
            port = await tg.start(serve, rcv.handle)
            rcv.url = f"http://127.0.0.1:{port}/hook"
        p.feishu_url, p.teams_url = feishu_url(feishu_base), teams_url(teams_base)
        yield p
        tg.cancel_scope.cancel()


def lines(output: bytes) -> list[str]:
    return [line for line in output.decode().splitlines() if not line.startswith("{")]  # not the JSON log lines


async def test_notify_test_reaches_every_kind_and_prints_one_line_each(
    platforms: Platforms, receiver: Receiver, mailbox: Mailbox, tmp_path: Path
) -> None:
    extra = platforms.notifiers(receiver, mailbox)
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", receiver.url, [1], extra=extra)
    check = await anyio.run_process([WATCHER, "check", "-c", str(cfg)], env=env("t"), check=False)
    assert check.returncode == 0, check.stderr.decode()
    kinds = {line.split(":")[0].strip() for line in check.stdout.decode().splitlines() if "notifier " in line}
    assert len(kinds) == 9
    result = await anyio.run_process([WATCHER, "notify-test", "-c", str(cfg)], env=env("t"), check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert sorted(lines(result.stdout)) == sorted(
        [
            "hook：已发送",
            "log：已发送",
            "slack-jp：已发送",
            "dingtalk-cn：已发送",
            "wecom-cn：已发送",
            "feishu-cn：已发送",
            "teams-jp：已发送",
            "mail-ops：已发送",
            "pager：已发送",
        ]
    )
    assert len(receiver.requests) == 1 and len(platforms.slack.requests) == 1
    assert len(platforms.dingtalk.requests) == len(platforms.wecom.requests) == 1
    assert len(platforms.feishu.accepted) == len(platforms.teams.accepted) == 1
    assert len(mailbox.mails) == 1 and len(platforms.apprise.requests) == 1
    # Each in its reader's language: Japanese for Slack and Teams, Chinese for the rest.
    assert "voicefox-watcher からのテスト通知" in platforms.slack.requests[0].body.decode()
    assert "来自 voicefox-watcher 的测试通知" in platforms.dingtalk.requests[0].body.decode()


async def test_a_wrong_secret_a_platform_error_and_a_refused_connection_end_as_they_must(
    platforms: Platforms, receiver: Receiver, mailbox: Mailbox, tmp_path: Path
) -> None:
    """Through the real outbox: a refused signature is dead-lettered at once; a platform's 'too fast' and a refused
    connection stay pending for a retry; the others are delivered. Every error names the notifier and the cause."""
    extra = platforms.notifiers(receiver, mailbox, dingtalk_secret=OTHER_SECRET)  # not the robot's secret
    extra = extra.replace(platforms.teams_url, f"http://127.0.0.1:{closed_port()}/workflows/x?sig=s")  # nobody there
    platforms.wecom.replies.append(envelope(45009, "api freq out of limit"))  # WeCom: sending too fast
    platforms.feishu.codes.append(19021)  # Feishu: the signature check failed
    path = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", receiver.url, [1], extra=extra)
    cfg = config_mod.load(path, env={"TEST_VOICEFOX_TOKEN": "t"})
    store = Store.open(tmp_path / "s.db")
    try:
        async with delivery_client(cfg) as http:
            dispatcher = Dispatcher(ThreadedStore(store), build(cfg.notifiers, notify_context(cfg, http)))
            event = event_of(EventType.FAILED)
            store.record_event(event, dispatcher.receivers_for(event.type), time.time())
            await dispatcher.drain()
        every = store.admin().outbox_rows(states=["pending", "dead", "delivered"], limit=None)
        rows = {r.receiver: r for r in every if r.event_id == event.id}
        errors = {name: row.last_error or "" for name, row in rows.items()}
        news = {(r.event_type, r.receiver) for r in every if r.event_id != event.id}
        failing = {e.data["receiver"] for e in store.events(0) if e.type == EventType.RECEIVER_FAILING}
    finally:
        store.close()
    assert {name: row.state for name, row in rows.items()} == {
        "hook": "delivered",
        "log": "delivered",
        "slack-jp": "delivered",
        "dingtalk-cn": "dead",  # 310000: the secret is wrong; no retry will fix it
        "wecom-cn": "pending",  # 45009: too fast; later
        "feishu-cn": "dead",  # 19021: the signature check failed
        "teams-jp": "pending",  # nobody listening: later
        "mail-ops": "delivered",
        "pager": "delivered",
    }
    # The two that gave the event up are news for the others (each told of the other's failure too).
    assert failing == {"dingtalk-cn", "feishu-cn"}
    assert (EventType.RECEIVER_FAILING.value, "hook") in news and (EventType.RECEIVER_FAILING.value, "pager") in news
    assert errors["dingtalk-cn"].startswith("dingtalk-cn (dingtalk):")
    assert "310000" in errors["dingtalk-cn"] and "secret" in errors["dingtalk-cn"]
    assert "45009" in errors["wecom-cn"] and errors["wecom-cn"].startswith("wecom-cn (wecom)")
    assert "19021" in errors["feishu-cn"] and errors["feishu-cn"].startswith("feishu-cn (feishu)")
    assert errors["teams-jp"].startswith("teams-jp (teams): cannot connect")
    for error in errors.values():  # no credential in any error
        for secret in (OTHER_SECRET, FEISHU_SECRET, "access_token", "key=", "sig="):
            assert secret not in error
