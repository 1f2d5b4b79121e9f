"""Apprise for real: Apprise URLs that point at 127.0.0.1 (json://, ntfy://, mmost:// to a recording receiver that
answers as the service would, mailto:// to a real SMTP server), failures, and what `watcher check` says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from watcher import config as config_mod
from watcher.cli import main
from watcher.errors import ConfigError, DeliveryError
from watcher.httpserver import Response
from watcher.model import EventType
from watcher.notify.apprise import AppriseNotifier, AppriseNotifierConfig, _secret_parts, render
from watcher.notify.message import build

from .conftest import Mailbox, Receiver
from .test_notify import closed_port, event_of

pytestmark = pytest.mark.anyio


def host_of(receiver: Receiver) -> str:
    return receiver.url.removeprefix("http://").split("/")[0]


async def test_json_delivers_the_headline_as_title_and_the_message_as_body(receiver: Receiver) -> None:
    url = f"json://{host_of(receiver)}/voicefox/TOKEN-0123456789"
    failed = event_of(EventType.FAILED, name="春の更新リマインド")
    await AppriseNotifier("pager", url, language="ja", task_url="https://console.example/tasks/{id}").send(failed)
    request = receiver.requests[0]
    assert request.target == "/voicefox/TOKEN-0123456789"
    body = json.loads(request.body)
    message = build(failed, language="ja")
    assert body["title"] == message.headline
    assert body["type"] == "failure"
    assert body["message"].startswith("ステータス: 実行中 → 異常停止\n進捗: 50%")
    assert "タスクを開く: https://console.example/tasks/1001" in body["message"]
    assert body["message"].endswith(message.footer)


async def test_ntfy_over_plain_http_gets_title_and_message(receiver: Receiver) -> None:
    receiver.default = Response(200, b'{"id":"a1","event":"message","topic":"voicefox"}')
    notifier = AppriseNotifier("phones", f"ntfy://{host_of(receiver)}/voicefox")
    assert notifier.service == "ntfy"
    await notifier.send(event_of(EventType.STALLED))
    body = json.loads(receiver.requests[0].body)
    assert body["topic"] == "voicefox"
    assert body["title"] == build(event_of(EventType.STALLED)).headline


async def test_a_name_cannot_mention_everyone_on_mattermost(receiver: Receiver) -> None:
    receiver.default = Response(200, b"ok")
    notifier = AppriseNotifier("mm", f"mmost://{host_of(receiver)}/abcdefghijklmnop1234567890")
    await notifier.send(event_of(EventType.FAILED, name="@all @channel *VIP* <b>"))
    text = json.loads(receiver.requests[0].body)["text"]
    assert receiver.requests[0].target == "/hooks/abcdefghijklmnop1234567890"
    assert "@\u200ball @\u200bchannel *VIP* <b>" in text
    assert "@all" not in text and "@channel" not in text


async def test_mailto_to_a_real_smtp_server(mailbox: Mailbox) -> None:
    url = f"mailto://127.0.0.1:{mailbox.port}?mode=insecure&from=watcher@example.com&to=ops@example.com"
    await AppriseNotifier("apprise-mail", url, language="zh-Hans").send(event_of(EventType.FINISHED))
    assert mailbox.envelopes[0][1] == ["ops@example.com"]
    assert mailbox.mails[0]["Subject"] == build(event_of(EventType.FINISHED), language="zh-Hans").headline


async def test_a_receiver_answering_500_is_a_temporary_failure_that_names_the_notifier_not_the_token(
    receiver: Receiver,
) -> None:
    receiver.default = Response(500, b"boom")
    url = f"json://{host_of(receiver)}/voicefox/TOKEN-0123456789"
    with pytest.raises(DeliveryError) as info:
        await AppriseNotifier("pager", url).send(event_of(EventType.FAILED))
    assert not info.value.permanent
    assert str(info.value).startswith("pager (Apprise: JSON): not delivered (")
    assert "500" in str(info.value)
    assert "TOKEN-0123456789" not in str(info.value)


async def test_a_refused_connection_is_temporary_and_blanks_the_url() -> None:
    url = f"json://127.0.0.1:{closed_port()}/voicefox/TOKEN-0123456789"
    with pytest.raises(DeliveryError) as info:
        await AppriseNotifier("pager", url).send(event_of(EventType.FAILED))
    assert not info.value.permanent
    assert "Connection error" in str(info.value)
    assert "127.0.0.1" not in str(info.value) and "TOKEN" not in str(info.value)


async def test_a_receiver_that_never_answers_is_a_temporary_failure_after_the_timeout(receiver: Receiver) -> None:
    receiver.hold = anyio.Event()  # never set: the request waits until the receiver is shut down
    with pytest.raises(DeliveryError) as info:
        await AppriseNotifier("pager", f"json://{host_of(receiver)}/hook", timeout=0.5).send(event_of(EventType.FAILED))
    assert not info.value.permanent
    assert str(info.value) == "pager (Apprise: JSON): no answer in 0.5s"


def test_every_piece_of_the_url_is_blanked_as_written_and_as_apprise_decodes_it() -> None:
    """A LINE channel token holds "/", "+" and "=": the URL carries it encoded, Apprise's log lines decoded."""
    pieces = _secret_parts("line://AbCd%2FeFgH%2BiJ%3D/U0123456789?to=Group%2F42")
    assert {"AbCd%2FeFgH%2BiJ%3D", "AbCd/eFgH+iJ=", "U0123456789", "Group/42"} <= set(pieces)


def test_plain_text_is_what_apprise_gets_and_long_details_are_cut() -> None:
    event = event_of(EventType.FINISHED)
    event.data["task"]["summary"] = "x" * 5_000
    title, body = render(build(event))
    assert title == build(event).headline
    assert "x" * 1_999 + "…" in body and "x" * 2_000 not in body


# -- settings -----------------------------------------------------------------------------------------------------

MINIMAL = {"api": {"token": "t"}, "watch": {"tasks": [1]}, "store": {"path": "/tmp/s.db"}}


def load(url: str) -> config_mod.Config:
    entry = {"kind": "apprise", "name": "pager", "url": url}
    return config_mod.validate({**MINIMAL, "notifiers": [entry]}, source="test", env={})


def test_a_url_apprise_knows_is_a_secret() -> None:
    cfg = load("tgram://123456789:AAH-secret-bot-token/-1001234567")
    entry = cfg.notifiers[0]
    assert isinstance(entry, AppriseNotifierConfig)
    assert "AAH-secret-bot-token" not in repr(cfg)
    assert "tgram://123456789:AAH-secret-bot-token/-1001234567" in config_mod.secret_values(cfg)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nosuchservice://secret-token-value", "Apprise does not know this URL"),
        ("json://a.example/x json://b.example/y", "holds 2 Apprise URLs; give each its own [[notifiers]] entry"),
    ],
)
def test_a_url_apprise_refuses_names_the_notifier_and_never_the_url(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(url)
    (line,) = info.value.problems
    assert line.startswith("notifiers[0]: notifier 'pager'") and problem in line
    assert "secret-token-value" not in line and "a.example" not in line


def test_without_the_extra_the_config_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # what an install without the extra looks like to import
    with pytest.raises(ConfigError) as info:
        load("json://127.0.0.1/hook")
    assert info.value.problems == [
        "notifiers[0]: notifier 'pager' needs Apprise, which is not installed: pip install 'voicefox-watcher[apprise]'"
    ]


def test_check_exits_2_naming_the_notifier_of_an_unknown_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.toml"
    path.write_text(
        '[api]\ntoken = "t"\n[watch]\ntasks = [1]\n[store]\npath = "s.db"\n'
        '[[notifiers]]\nkind = "apprise"\nname = "pager"\nurl = "nosuchservice://very-secret-token"\n'
    )
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "notifiers[0]: notifier 'pager': Apprise does not know this URL" in err
    assert "very-secret-token" not in err and "Traceback" not in err
