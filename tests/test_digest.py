"""Digests: several events due at once as one message per channel, through the same stand-ins on 127.0.0.1 as single
events; a headline that counts them by kind in each language; a stable id; and every platform's size limit kept, the
events that do not fit said as "… and N more"."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from cloudevents.core.formats.json import JSONFormat
from slack_sdk.models.blocks import Block
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from watcher import config as config_mod
from watcher.detect import make_event
from watcher.errors import DeliveryError
from watcher.httpserver import Response, serve
from watcher.i18n import LANGUAGES
from watcher.model import Event, EventType, TaskSnapshot
from watcher.notify import Context, apprise, dingtalk, feishu, slack, teams, wecom
from watcher.notify import build as build_notifiers
from watcher.notify.apprise import AppriseNotifier
from watcher.notify.dingtalk import DingTalkNotifier
from watcher.notify.email import EmailNotifier, EmailNotifierConfig
from watcher.notify.feishu import FeishuNotifier
from watcher.notify.log import LogNotifier
from watcher.notify.message import Digest, Severity, build, build_digest, digest_id
from watcher.notify.robot import size
from watcher.notify.slack import SlackNotifier
from watcher.notify.teams import TeamsNotifier
from watcher.notify.webhook import BATCH_CONTENT_TYPE, WebhookNotifier
from watcher.notify.wecom import WeComNotifier

from .conftest import Mailbox, Receiver
from .platforms import FEISHU_SECRET, FeishuBot, TeamsWorkflow, feishu_url, serving, teams_url
from .test_notify import SECRET
from .test_robots import DT_SECRET, KEY, MOBILES, TOKEN, DingTalkRobot, WeComRobot, envelope
from .test_teams import VALIDATOR

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TASK_URL = "https://console.voicefox.example/tasks/{id}"
NAMES = ("春の更新リマインド", "双十一会员回访", "Spring renewal")


def campaign(task_id: int, status: str, name: str, **fields: Any) -> TaskSnapshot:
    return TaskSnapshot(id=task_id, status=status, name=name, progress=64, total=1200, collection_rate=41, **fields)


def three() -> list[Event]:
    """A finished, a failed and a stalled campaign, a minute apart, as they would come due together."""
    a, b, c = (campaign(1001 + i, "running", name) for i, name in enumerate(NAMES))
    return [
        make_event(EventType.FINISHED, NOW, campaign(1001, "done", NAMES[0]), a),
        make_event(EventType.FAILED, NOW + timedelta(minutes=1), campaign(1002, "stop.abnormal", NAMES[1]), b),
        make_event(EventType.STALLED, NOW + timedelta(minutes=2), c, c, stalledForSeconds=1800),
    ]


def fifty(name: str = "東京・大阪・名古屋 会員更新リマインド 第三弾 " * 4) -> list[Event]:
    """Fifty events of campaigns with long names: more than a chat message holds."""
    events = []
    for i in range(50):
        running = campaign(2000 + i, "running", f"{name}{i}")
        events.append(make_event(EventType.FINISHED, NOW, campaign(2000 + i, "done", f"{name}{i}"), running))
    return events


def headlines(events: list[Event], language: str = "en") -> list[str]:
    return [build(event, language=language, task_url=TASK_URL).headline for event in events]


def in_order(text: str, parts: list[str]) -> bool:
    """Whether every part is in `text`, each after the one before."""
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        yield client


# -- the digest itself -------------------------------------------------------------------------------------------


def test_a_digest_id_is_the_same_for_the_same_events_in_any_order_and_differs_for_others() -> None:
    events = three()
    assert build_digest(events).id == build_digest(events[::-1]).id == digest_id(e.id for e in events)
    assert build_digest(events).id == build_digest(events, language="ja").id  # a language is no other digest
    assert build_digest(events[:2]).id != build_digest(events).id
    assert len({build_digest(events[i:]).id for i in range(2)}) == 2


@pytest.mark.parametrize(
    ("language", "headline"),
    [
        ("en", "5 alerts from voicefox-watcher: 3 finished, 1 failed, 1 stalled"),
        ("ja", "voicefox-watcher からのアラート 5 件: 完了 3 件、異常停止 1 件、停滞 1 件"),
        ("zh-Hans", "voicefox-watcher 的 5 条告警：完成 3 个、异常停止 1 个、停滞 1 个"),
        ("zh-Hant", "voicefox-watcher 的 5 則告警：完成 3 個、異常停止 1 個、停滯 1 個"),
    ],
)
def test_the_headline_counts_the_events_by_kind_most_first_in_each_language(language: str, headline: str) -> None:
    finished, failed, stalled = three()
    more = [make_event(EventType.FINISHED, NOW, campaign(i, "done", "x"), campaign(i, "running", "x")) for i in (7, 8)]
    digest = build_digest([failed, finished, stalled, *more], language=language)
    assert digest.headline == headline
    assert digest.language == language


def test_a_reminder_is_counted_as_a_reminder_and_plural_forms_are_english_ones() -> None:
    finished, failed, _ = three()
    reminder = {"count": 1, "of": failed.id, "since": "2026-11-23T08:00:00+00:00", "lastedSeconds": 3600}
    again = Event("r1", failed.type, NOW, failed.subject, failed.data | {"reminder": reminder})
    assert build_digest([finished, again]).headline == "2 alerts from voicefox-watcher: 1 finished, 1 reminder"
    outage = Event("o1", EventType.API_UNREACHABLE.value, NOW, "api", {"unreachableForSeconds": 600})
    outage2 = Event("o2", EventType.API_UNREACHABLE.value, NOW, "api", {"unreachableForSeconds": 900})
    assert build_digest([outage, outage2]).headline == "2 alerts from voicefox-watcher: 2 API outages"


def test_the_severity_is_the_highest_of_the_items_and_the_items_are_each_events_message_in_order() -> None:
    events = three()
    digest = build_digest(events, language="ja", task_url=TASK_URL)
    assert digest.severity is Severity.DANGER
    assert [item.headline for item in digest.items] == headlines(events, "ja")
    assert build_digest([events[0], events[0]]).severity is Severity.GOOD
    assert digest.time_text == build(events[2], language="ja").time_text  # the newest


def test_the_items_are_what_the_notifiers_own_message_function_makes_templates_included() -> None:
    cfg = config_mod.validate(
        {
            "api": {"token": "t"},
            "watch": {"tasks": [1]},
            "notifiers": [{"kind": "log", "name": "audit", "title_template": "{{ event.kind | upper }} {{ task.id }}"}],
        },
        source="test",
        env={},
    )
    messages = Context(httpx.AsyncClient()).messages_for(cfg.notifiers[0])
    digest = build_digest(three(), messages=messages)
    assert [item.headline for item in digest.items] == ["FINISHED 1001", "FAILED 1002", "STALLED 1003"]


def test_the_kinds_send_digests_by_default_but_a_webhook_and_each_may_say_otherwise(tmp_path: Any) -> None:
    notifiers = [
        {"kind": "webhook", "name": "hook", "url": "https://hooks.example/x"},
        {"kind": "webhook", "name": "batched", "url": "https://hooks.example/y", "digest": True},
        {"kind": "slack", "name": "team", "url": "https://hooks.slack.example/services/T/B/x"},
        {"kind": "slack", "name": "quiet", "url": "https://hooks.slack.example/services/T/B/y", "digest": False},
        {"kind": "log", "name": "audit"},
        {"kind": "dingtalk", "name": "dt", "url": f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"},
        {"kind": "wecom", "name": "wc", "url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}"},
        {"kind": "feishu", "name": "fs", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/abc"},
        {"kind": "teams", "name": "tm", "url": "https://example.logic.azure.com/workflows/x?sig=abc"},
        {
            "kind": "email",
            "name": "mail",
            "host": "127.0.0.1",
            "tls": "none",
            "from": "w@example.com",
            "to": ["o@x.io"],
        },
        {"kind": "apprise", "name": "pager", "url": "json://127.0.0.1/hook"},
    ]
    raw = {"api": {"token": "t"}, "watch": {"tasks": [1]}, "notifiers": notifiers}
    cfg = config_mod.validate(raw, source="test", env={})
    built = build_notifiers(cfg.notifiers, Context(httpx.AsyncClient()))
    assert {name for name, n in built.items() if not n.digest} == {"hook", "quiet"}


# -- each channel: one request for three events, the events in order ---------------------------------------------


async def test_slack_gets_one_block_kit_message_with_a_section_per_event(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    events = three()
    await SlackNotifier("team", receiver.url, http, language="ja", task_url=TASK_URL).send_digest(events)
    (body,) = receiver.bodies()
    Block.parse_all(body["blocks"])
    assert body["blocks"][0] == {
        "type": "header",
        "text": slack._plain("❌ " + build_digest(events, language="ja").headline),
    }
    sections = [b for b in body["blocks"] if b["type"] == "section"]
    assert [s["text"]["text"].split(" ", 1)[1] for s in sections] == headlines(events, "ja")
    assert [s["accessory"]["url"] for s in sections] == [TASK_URL.replace("{id}", str(i)) for i in (1001, 1002, 1003)]
    assert body["text"].startswith("❌ voicefox-watcher からのアラート 3 件")


async def test_a_webhook_posts_one_cloudevents_batch_signed_as_one_message(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    events = three()
    notifier = WebhookNotifier("hook", receiver.url, http, secret=SECRET, digest=True)
    await notifier.send_digest(events)
    (request,) = receiver.requests
    assert request.headers["content-type"] == BATCH_CONTENT_TYPE == "application/cloudevents-batch+json"
    assert request.headers["webhook-id"] == build_digest(events).id
    Webhook(SECRET).verify(request.body, request.headers)  # raises unless the signature is over this body
    batch = json.loads(request.body)
    assert isinstance(batch, list) and len(batch) == 3
    for document, event in zip(batch, events, strict=True):
        parsed = JSONFormat().read(None, json.dumps(document).encode())  # each a structured CloudEvent the SDK reads
        assert (parsed.get_id(), parsed.get_type(), parsed.get_subject()) == (event.id, event.type, event.subject)
        assert parsed.get_data() == event.data
    # Each is the very CloudEvent a single send posts.
    await WebhookNotifier("hook", receiver.url, http).send(events[1])
    assert json.loads(receiver.requests[-1].body) == batch[1]


async def test_dingtalk_gets_one_signed_markdown_list_mentioning_people_for_a_failure(
    http: httpx.AsyncClient,
) -> None:
    robot = DingTalkRobot()
    robot.keyword = "voicefox"  # the footer carries it
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, robot.handle)
        url = f"http://127.0.0.1:{port}/robot/send?access_token={TOKEN}"
        notifier = DingTalkNotifier("oncall", url, http, secret=DT_SECRET, at_mobiles=MOBILES, language="zh-Hans")
        events = three()
        await notifier.send_digest(events)
        await notifier.send_digest(events[:1] * 2)  # nothing in danger: nobody is mentioned
        tg.cancel_scope.cancel()
    assert [robot.check(r) for r in robot.requests] == [(0, "ok")] * 2
    first, second = (json.loads(r.body) for r in robot.requests)
    text = first["markdown"]["text"]
    assert first["markdown"]["title"] == build_digest(events, language="zh-Hans").headline
    assert [line for line in text.split("\n") if line.startswith("- ")] == [
        f"- {emoji} {headline}" for emoji, headline in zip(("✅", "❌", "⚠️"), headlines(events, "zh-Hans"), strict=True)
    ]
    assert first["at"] == {"atMobiles": list(MOBILES), "isAtAll": False}
    assert f"@{MOBILES[0]}" in text
    assert second["at"] == {"atMobiles": [], "isAtAll": False} and "@" not in second["markdown"]["text"]


async def test_wecom_gets_one_markdown_message_with_a_line_per_event() -> None:
    robot = WeComRobot()
    async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
        port = await tg.start(serve, robot.handle)
        url = f"http://127.0.0.1:{port}/cgi-bin/webhook/send?key={KEY}"
        events = three()
        await WeComNotifier("ops", url, client, mention_userids=["zhangsan"], task_url=TASK_URL).send_digest(events)
        tg.cancel_scope.cancel()
    (content,) = robot.contents()
    assert content.startswith('### <font color="warning">❌ 3 alerts from voicefox-watcher')
    assert "\n\n<@zhangsan>\n\n" in content
    lines = [line for line in content.split("\n") if line.startswith(("✅", "❌", "⚠"))]
    assert [line.split(" [")[0] for line in lines] == [
        f"{emoji} {headline}" for emoji, headline in zip(("✅", "❌", "⚠️"), headlines(events), strict=True)
    ]
    assert all(
        line.endswith(")") and "[Open the task](https://console.voicefox.example/tasks/" in line for line in lines
    )


async def test_feishu_gets_one_signed_card_with_a_line_per_event(http: httpx.AsyncClient) -> None:
    bot = FeishuBot()
    async with serving(bot) as base:
        events = three()
        await FeishuNotifier("oncall", feishu_url(base), http, secret=FEISHU_SECRET, task_url=TASK_URL).send_digest(
            events
        )
    (accepted,) = bot.accepted
    card = accepted["card"]
    assert card["header"] == {
        "template": "red",
        "title": {"tag": "plain_text", "content": build_digest(events).headline},
    }
    lines = [e for e in card["elements"] if e["tag"] == "div"]
    assert [line["text"]["content"] for line in lines] == [
        f"{emoji} {headline}" for emoji, headline in zip(("✅", "❌", "⚠️"), headlines(events), strict=True)
    ]
    assert [line["extra"]["url"] for line in lines] == [TASK_URL.replace("{id}", str(i)) for i in (1001, 1002, 1003)]


async def test_teams_gets_one_valid_adaptive_card_with_a_container_per_event(http: httpx.AsyncClient) -> None:
    workflow = TeamsWorkflow()
    async with serving(workflow) as base:
        events = three()
        await TeamsNotifier("ops", teams_url(base), http, language="ja", task_url=TASK_URL).send_digest(events)
    (accepted,) = workflow.accepted
    card = accepted["attachments"][0]["content"]
    VALIDATOR.validate(card)
    containers = [b for b in card["body"] if b["type"] == "Container"]
    assert [c["items"][0]["inlines"][0]["text"].split(" ", 1)[1] for c in containers] == headlines(events, "ja")
    assert [c["items"][0]["inlines"][0]["color"] for c in containers] == ["Good", "Attention", "Attention"]
    assert containers[0]["items"][0]["inlines"][2]["selectAction"]["url"] == TASK_URL.replace("{id}", "1001")


async def test_email_sends_one_mail_listing_every_event_with_its_facts(mailbox: Mailbox) -> None:
    config = EmailNotifierConfig.model_validate(
        {"kind": "email", "name": "ops-mail", "host": "127.0.0.1", "port": mailbox.port, "tls": "none"}
        | {"from": "watcher@example.com", "to": ["ops@example.com"]}
    )
    events = three()
    notifier = EmailNotifier(config, language="ja", task_url=TASK_URL, clock=lambda: NOW)
    await notifier.send_digest(events)
    (mail,) = mailbox.mails
    digest = build_digest(events, language="ja")
    assert mail["Subject"] == f"【重大】{digest.headline}"
    assert mail["Message-ID"] == f"<{digest.id}@example.com>"
    assert mail["X-VoiceFox-Digest"] == digest.id
    assert "References" not in mail  # three campaigns: no one thread to join
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert in_order(text, [f"{n}. {h}" for n, h in enumerate(headlines(events, "ja"), 1)])
    assert in_order(text, ["ステータス: 実行中 → 完了", "ステータス: 実行中 → 異常停止", "進捗なし: 30 分"])
    assert in_order(html, headlines(events, "ja"))
    assert html.count('<table role="presentation" cellpadding') == 3  # each event's facts


async def test_apprise_sends_one_notification_titled_with_the_headline(receiver: Receiver) -> None:
    host = receiver.url.removeprefix("http://").split("/")[0]
    events = three()
    await AppriseNotifier("pager", f"json://{host}/hook", task_url=TASK_URL).send_digest(events)
    (body,) = receiver.bodies()
    assert body["title"] == build_digest(events).headline
    assert body["type"] == "failure"
    assert in_order(
        body["message"],
        [
            f"- {h}\n  {TASK_URL.replace('{id}', str(i))}"
            for h, i in zip(headlines(events), (1001, 1002, 1003), strict=True)
        ],
    )


async def test_the_log_writes_a_line_per_event_sharing_the_digest_id() -> None:
    events = three()
    with capture_logs() as logs:
        await LogNotifier("audit").send_digest(events)
    assert [line["event_id"] for line in logs] == [event.id for event in events]
    assert {line["digest"] for line in logs} == {build_digest(events).id}
    assert [line["message"] for line in logs] == headlines(events)


# -- fifty events: every platform's limit, and "… and N more" ---------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_fifty_events_keep_every_platforms_limit_and_say_how_many_more(language: str) -> None:
    events = fifty()
    digest = build_digest(events, language=language, task_url=TASK_URL)
    more = digest.more(1).split("1")[0]  # "… and " / "…ほか " / "…另有 "

    payload = slack.render_digest(digest)
    assert len(payload["blocks"]) <= 50
    Block.parse_all(payload["blocks"])
    assert payload["blocks"][-2]["elements"][0]["text"] == digest.more(3)

    text = dingtalk.render_digest(digest, at_mobiles=MOBILES)["markdown"]["text"]
    content = wecom.render_digest(digest)["markdown"]["content"]
    for markdown in (text, content):
        assert size(markdown) <= 4096
        kept = markdown.count("](https://console.voicefox.example/tasks/")  # each item has its link
        assert 0 < kept < 50
        assert f"{more}{50 - kept}" in markdown

    body = teams.digest_body(digest)
    assert len(body) <= teams.MAX_BODY
    VALIDATOR.validate(json.loads(body)["attachments"][0]["content"])

    signed = feishu.digest_body(digest, secret=FEISHU_SECRET, timestamp=1)
    assert len(signed) <= feishu.MAX_BODY

    _, message = apprise.render_digest(digest)
    assert message.count("\n- ") == 49  # Apprise fits a body to each service itself


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_digest_that_fits_lists_every_event_without_a_more_line(language: str) -> None:
    digest = build_digest(fifty(name="x")[:20], language=language)
    more = digest.more(1).split("1")[0]
    for rendered in (
        json.dumps(slack.render_digest(digest), ensure_ascii=False),
        dingtalk.render_digest(digest)["markdown"]["text"],
        wecom.render_digest(digest)["markdown"]["content"],
        teams.digest_body(digest).decode(),
        feishu.digest_body(digest).decode(),
    ):
        assert rendered.count("✅") >= 20
        assert more not in rendered


async def test_fifty_events_reach_the_stand_ins_that_check_sizes(http: httpx.AsyncClient) -> None:
    bot, robot = FeishuBot(), WeComRobot()
    async with serving(bot) as base, anyio.create_task_group() as tg:
        port = await tg.start(serve, robot.handle)
        await FeishuNotifier("oncall", feishu_url(base), http, secret=FEISHU_SECRET).send_digest(fifty())
        await WeComNotifier("ops", f"http://127.0.0.1:{port}/cgi-bin/webhook/send?key={KEY}", http).send_digest(fifty())
        tg.cancel_scope.cancel()
    assert len(bot.accepted) == 1  # (the bot refuses a body over 20 KB)
    (request,) = robot.requests
    assert json.loads(request.body)["msgtype"] == "markdown"
    assert robot.contents()[0].count("✅") < 50


# -- a refusal is a DeliveryError, as for one event ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [(Response(500, b"oops"), False), (Response(400, b"invalid_blocks"), True), (Response(429, b""), False)],
    ids=["500", "400", "429"],
)
async def test_a_refused_digest_raises_delivery_error_as_a_single_send_would(
    receiver: Receiver, http: httpx.AsyncClient, reply: Response, permanent: bool
) -> None:
    for notifier in (
        SlackNotifier("team", receiver.url, http),
        WebhookNotifier("hook", receiver.url, http, digest=True),
    ):
        receiver.replies.append(reply)
        with pytest.raises(DeliveryError) as caught:
            await notifier.send_digest(three())
        assert caught.value.permanent is permanent


async def test_a_robots_error_code_for_a_digest_is_read_as_for_one_event(http: httpx.AsyncClient) -> None:
    robot = WeComRobot()
    robot.replies.append(envelope(45009, "api freq out of limit"))
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, robot.handle)
        with pytest.raises(DeliveryError) as caught:
            await WeComNotifier("ops", f"http://127.0.0.1:{port}/cgi-bin/webhook/send?key={KEY}", http).send_digest(
                three()
            )
        tg.cancel_scope.cancel()
    assert caught.value.permanent is False and caught.value.retry_after == 60.0


async def test_a_refused_mail_raises_delivery_error(mailbox: Mailbox) -> None:
    mailbox.data_reply = "554 5.7.1 rejected"
    config = EmailNotifierConfig.model_validate(
        {"kind": "email", "name": "ops-mail", "host": "127.0.0.1", "port": mailbox.port, "tls": "none"}
        | {"from": "watcher@example.com", "to": ["ops@example.com"]}
    )
    with pytest.raises(DeliveryError) as caught:
        await EmailNotifier(config).send_digest(three())
    assert caught.value.permanent is True


def test_a_digest_renders_from_any_message_a_channel_may_get() -> None:
    """The channels' digests take whatever messages they are given: the plain fallback, a template's."""
    digest = Digest(
        id="d", headline="h", severity=Severity.INFO, items=(), time_text="", language="en", footer="voicefox-watcher"
    )
    for rendered in (slack.render_digest(digest), dingtalk.render_digest(digest), wecom.render_digest(digest)):
        assert rendered
    teams.digest_body(digest)
    feishu.digest_body(digest)
