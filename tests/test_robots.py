"""DingTalk and WeCom group robots: stand-ins on 127.0.0.1 that answer (and check signatures) as the platforms
document, what the markdown shows, what it never does (format, link or mention from API text), and its size."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx
import pytest

from watcher import config
from watcher.detect import make_event
from watcher.errors import ConfigError, DeliveryError
from watcher.httpserver import Request, Response, serve
from watcher.i18n import LANGUAGES
from watcher.model import Event, EventType
from watcher.notify import DEFAULT_EVENTS, EventFilter
from watcher.notify.dingtalk import DingTalkNotifier
from watcher.notify.dingtalk import message as dingtalk_message
from watcher.notify.message import build
from watcher.notify.robot import escape, fit, size
from watcher.notify.wecom import WeComNotifier
from watcher.notify.wecom import message as wecom_message

from .test_cli import run
from .test_i18n import events
from .test_notify import NOW, closed_port, event_of, snapshot

pytestmark = pytest.mark.anyio

TOKEN = "dt0ken7c1e5a9b3d8f2e6a4c"  # the robot's access_token: a credential
DT_SECRET = "SEC5a3ecf88f2b3eb50db30ecfc00f53033ac909c99bf7f88fd612bda89d7f3a9dc"
OTHER_SECRET = "SECffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"  # WeCom's key: a credential
MOBILES = ("13800001111", "+81-90-1234-5678")
# A campaign name with everything markdown, HTML, DingTalk or WeCom could read as structure or a mention.
MARKUP_NAME = '*VIP* _x_ ~y~ `z` [click](https://evil.test) <@all> <font color="info">x</font> # ## & &amp; @all \\*'
MARKUP_SUMMARY = (
    "# heading\n> quote\n- item\n+ item\n1. first\n2) second\n===\n    code\n![img](https://evil.test/x.png)"
)


def envelope(code: int, message: str) -> Response:
    """The answer both platforms give, success or not: HTTP 200 with errcode and errmsg."""
    return Response(200, json.dumps({"errcode": code, "errmsg": message}).encode())


class DingTalkRobot:
    """A DingTalk custom robot as its docs describe it: it checks the access_token, the signature of a robot with a
    secret (recomputed from the secret, the timestamp an hour either way at most) and the custom keyword, and
    answers HTTP 200 with errcode 0, or 300001 / 310000 as DingTalk does."""

    def __init__(self) -> None:
        self.secret: str | None = DT_SECRET
        self.keyword = ""
        self.clock: Callable[[], float] = time.time
        self.requests: list[Request] = []
        self.replies: list[Response] = []  # scripted answers, consumed before any check
        self.url = ""

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        return self.replies.pop(0) if self.replies else envelope(*self.check(request))

    def check(self, request: Request) -> tuple[int, str]:
        query = request.query
        if request.path != "/robot/send" or query.get("access_token") != [TOKEN]:
            return 300001, "token is not exist"
        if self.secret is not None:
            timestamp, signature = query.get("timestamp", [""])[0], query.get("sign", [""])[0]
            if not timestamp.isdigit() or abs(self.clock() * 1000 - int(timestamp)) > 3600 * 1000:
                return 310000, "invalid timestamp"
            mac = hmac.new(self.secret.encode(), f"{timestamp}\n{self.secret}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(signature, base64.b64encode(mac).decode()):
                return 310000, "sign not match"
        body = json.loads(request.body)
        if body.get("msgtype") != "markdown" or not body["markdown"].get("title") or not body["markdown"].get("text"):
            return 40035, "缺少参数 json"
        if self.keyword and self.keyword not in body["markdown"]["title"] + body["markdown"]["text"]:
            return 310000, "keywords not in content"
        return 0, "ok"


class WeComRobot:
    """A WeCom group robot as its docs describe it: it checks the key and the markdown content's 4,096 bytes, and
    answers HTTP 200 with errcode 0, or 93000 / 40058 as WeCom does."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.replies: list[Response] = []
        self.url = ""

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if self.replies:
            return self.replies.pop(0)
        if request.path != "/cgi-bin/webhook/send" or request.query.get("key") != [KEY]:
            return envelope(93000, "invalid webhook url, hint: [1714538355214402498975046]")
        content = json.loads(request.body)["markdown"]["content"]
        if len(content.encode()) > 4096:
            return envelope(40058, "markdown.content exceed max length 4096. invalid Request Parameter")
        return envelope(0, "ok")

    def contents(self) -> list[str]:
        return [json.loads(r.body)["markdown"]["content"] for r in self.requests]


@pytest.fixture
async def dingtalk() -> AsyncIterator[DingTalkRobot]:
    robot = DingTalkRobot()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, robot.handle)
        robot.url = f"http://127.0.0.1:{port}/robot/send?access_token={TOKEN}"
        yield robot
        tg.cancel_scope.cancel()


@pytest.fixture
async def wecom() -> AsyncIterator[WeComRobot]:
    robot = WeComRobot()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, robot.handle)
        robot.url = f"http://127.0.0.1:{port}/cgi-bin/webhook/send?key={KEY}"
        yield robot
        tg.cancel_scope.cancel()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        yield client


def assert_hides_credentials(error: DeliveryError) -> None:
    for secret in (TOKEN, DT_SECRET, OTHER_SECRET, KEY, "access_token", "sign=", "127.0.0.1", *MOBILES):
        assert secret not in str(error)


def markup_event(type_: EventType = EventType.FAILED, *, summary: str = MARKUP_SUMMARY) -> Event:
    before = snapshot("running", name=MARKUP_NAME)
    return make_event(type_, NOW, snapshot("stop.abnormal", name=MARKUP_NAME, summary=summary), before)


# -- DingTalk: signing and the errcode envelope ------------------------------------------------------------------


async def test_dingtalk_signs_every_request_so_the_robot_accepts_it(
    dingtalk: DingTalkRobot, http: httpx.AsyncClient
) -> None:
    event = event_of(EventType.FAILED)
    await DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET).send(event)
    (request,) = dingtalk.requests
    assert set(request.query) == {"access_token", "timestamp", "sign"}
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(request.body) == dingtalk_message(event)


async def test_dingtalk_accepts_a_clock_within_the_hour_and_refuses_one_beyond_for_good(
    dingtalk: DingTalkRobot, http: httpx.AsyncClient
) -> None:
    """DingTalk checks the signed timestamp against its own clock, an hour either way."""
    dingtalk.clock = lambda: 1_800_000_000.0
    close = DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET, clock=lambda: 1_800_000_000.0 - 3500)
    await close.send(event_of(EventType.FAILED))
    late = DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET, clock=lambda: 1_800_000_000.0 - 3700)
    with pytest.raises(DeliveryError) as caught:
        await late.send(event_of(EventType.FAILED))
    assert caught.value.permanent is True
    assert "310000 'invalid timestamp'" in str(caught.value)
    assert "clock" in str(caught.value)


async def test_dingtalk_a_wrong_secret_is_refused_for_good_saying_what_to_check(
    dingtalk: DingTalkRobot, http: httpx.AsyncClient
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await DingTalkNotifier("oncall", dingtalk.url, http, secret=OTHER_SECRET).send(event_of(EventType.FAILED))
    error = str(caught.value)
    assert caught.value.permanent is True
    assert error.startswith("oncall (dingtalk): DingTalk refused the message (310000 'sign not match')")
    for cause in ("secret", "keyword", "IP allow-list"):
        assert cause in error
    assert_hides_credentials(caught.value)
    signature = dingtalk.requests[0].query["sign"][0]
    assert signature not in error


async def test_dingtalk_without_a_secret_the_url_is_sent_as_configured(
    dingtalk: DingTalkRobot, http: httpx.AsyncClient
) -> None:
    dingtalk.secret = None
    await DingTalkNotifier("oncall", dingtalk.url, http).send(event_of(EventType.FINISHED))
    assert dingtalk.requests[0].target == f"/robot/send?access_token={TOKEN}"


async def test_dingtalk_a_robot_with_a_keyword_accepts_only_messages_that_carry_it(
    dingtalk: DingTalkRobot, http: httpx.AsyncClient
) -> None:
    dingtalk.keyword = "外呼告警"
    with pytest.raises(DeliveryError) as caught:
        await DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET).send(event_of(EventType.FAILED))
    assert caught.value.permanent is True
    assert "keywords not in content" in str(caught.value)
    notifier = DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET, keyword="外呼告警")
    await notifier.send(event_of(EventType.FAILED))
    sent = json.loads(dingtalk.requests[-1].body)["markdown"]
    assert sent["title"].startswith("【外呼告警】")
    assert sent["text"].startswith("### ❌ 【外呼告警】")
    dingtalk.keyword = "voicefox"  # every footer names the event type, voicefox.task.… or voicefox.watcher.…
    for type_ in EventType:
        await DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET).send(event_of(type_))


@pytest.mark.parametrize(
    ("reply", "permanent", "retry_after", "said"),
    [
        (envelope(130101, "send too fast, exceed 20 times per minute"), False, 600.0, "sends too fast"),
        (envelope(410100, "发送速度太快而限流"), False, 600.0, "sends too fast"),
        (envelope(90030, "webhook over limit"), False, 3600.0, "over its limit"),
        (envelope(-1, "系统繁忙"), False, None, "busy"),
        (envelope(400102, "机器人已停用"), True, None, "400102"),
        (Response(200, b"<html>gateway</html>", (("Content-Type", "text/html"),)), True, None, "errcode"),
        (Response(502, b"bad gateway", (("Content-Type", "text/plain"),)), False, None, "502"),
    ],
    ids=["too-fast", "too-fast-410100", "over-quota", "busy", "robot-stopped", "not-json", "502"],
)
async def test_dingtalk_answers_map_to_temporary_or_permanent_failures(
    dingtalk: DingTalkRobot,
    http: httpx.AsyncClient,
    reply: Response,
    permanent: bool,
    retry_after: float | None,
    said: str,
) -> None:
    dingtalk.replies.append(reply)
    with pytest.raises(DeliveryError) as caught:
        await DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET).send(event_of(EventType.FAILED))
    assert (caught.value.permanent, caught.value.retry_after) == (permanent, retry_after)
    assert said in str(caught.value)
    assert "oncall (dingtalk)" in str(caught.value)
    assert_hides_credentials(caught.value)


async def test_dingtalk_an_unknown_token_is_permanent_and_never_shown(
    dingtalk: DingTalkRobot, http: httpx.AsyncClient
) -> None:
    url = dingtalk.url.replace(TOKEN, "revoked0token0abcdef")
    with pytest.raises(DeliveryError) as caught:
        await DingTalkNotifier("oncall", url, http, secret=DT_SECRET).send(event_of(EventType.FAILED))
    assert caught.value.permanent is True
    assert "300001" in str(caught.value)
    assert "revoked0token0abcdef" not in str(caught.value)


async def test_dingtalk_an_error_that_quotes_a_credential_or_a_number_is_shown_without_it(
    dingtalk: DingTalkRobot, http: httpx.AsyncClient
) -> None:
    dingtalk.replies.append(envelope(400001, f"bad at: {MOBILES[0]} token {TOKEN}"))
    notifier = DingTalkNotifier("oncall", dingtalk.url, http, secret=DT_SECRET, at_mobiles=MOBILES)
    with pytest.raises(DeliveryError) as caught:
        await notifier.send(event_of(EventType.FAILED))
    assert_hides_credentials(caught.value)
    assert "bad at: *** token ***" in str(caught.value)


async def test_dingtalk_a_refused_connection_is_temporary_and_names_no_url(http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}/robot/send?access_token={TOKEN}"
    with pytest.raises(DeliveryError) as caught:
        await DingTalkNotifier("oncall", url, http, secret=DT_SECRET).send(event_of(EventType.FAILED))
    assert caught.value.permanent is False
    assert "oncall (dingtalk): cannot connect" in str(caught.value)
    assert_hides_credentials(caught.value)


# -- DingTalk: what the message shows ------------------------------------------------------------------------------


def test_dingtalk_renders_markdown_with_a_heading_the_facts_as_a_list_details_link_and_footer() -> None:
    payload = dingtalk_message(event_of(EventType.FINISHED), task_url="https://console.example/tasks/{id}")
    assert payload["msgtype"] == "markdown"
    title, text = payload["markdown"]["title"], payload["markdown"]["text"]
    assert title == "Campaign “Spring renewal reminders” (task 1001) finished"
    assert text.startswith(f"### ✅ {title}\n\n- **Status**: running → done\n- **Progress**: 50%\n")
    assert "**Summary**\n\n1,200 numbers dialled; 812 answered.\n\n**Suggestion**\n\nCall the 388" in text
    assert "[Open the task](https://console.example/tasks/1001)" in text
    assert text.endswith(f"\n\n###### {build(event_of(EventType.FINISHED)).footer}")
    assert payload["at"] == {"atMobiles": [], "isAtAll": False}


@pytest.mark.parametrize("type_", list(EventType), ids=[t.name for t in EventType])
def test_dingtalk_mentions_people_for_danger_only_with_their_numbers_in_the_text(type_: EventType) -> None:
    """DingTalk @mentions a number of `atMobiles` only where the text has @number too."""
    payload = dingtalk_message(event_of(type_), at_mobiles=MOBILES, at_all=True)
    text = payload["markdown"]["text"]
    if build(event_of(type_)).severity == "danger":
        assert payload["at"] == {"atMobiles": list(MOBILES), "isAtAll": True}
        assert f"\n\n@{MOBILES[0]} @{MOBILES[1]}\n\n" in text
    else:
        assert payload["at"] == {"atMobiles": [], "isAtAll": False}
        assert "@" not in text


def test_dingtalk_shows_text_from_the_api_as_written_never_as_markdown_html_or_a_mention() -> None:
    payload = dingtalk_message(markup_event())
    text = payload["markdown"]["text"]
    lines = text.split("\n")
    assert [line for line in lines if line.startswith("#")] == [lines[0], lines[-1]]  # our heading and footer only
    for structure in ("<@", "<font", "[click]", "](https://evil", "*VIP*", "_x_", "~y~", "`z`", "![img"):
        assert structure not in text
    assert not [line for line in lines if line.startswith((">", "- item", "+", "1.", "2)", "===", " "))]
    assert payload["at"] == {"atMobiles": [], "isAtAll": False}  # "@all" in a name is just text
    shown = html.unescape(text)
    assert MARKUP_NAME in shown
    assert "1. first" in shown
    assert "    code" not in shown  # leading spaces would make a code block
    assert payload["markdown"]["title"].startswith(f"Campaign “{MARKUP_NAME}")  # plain text: not markdown


def test_dingtalk_cuts_a_long_summary_so_the_text_stays_within_4096_bytes() -> None:
    event = make_event(
        EventType.FINISHED,
        NOW,
        snapshot("done", name="東" * 3000, summary="日本語の要約。" * 1000, suggestion="🎉" * 2000),
        snapshot("running"),
    )
    payload = dingtalk_message(event)
    text = payload["markdown"]["text"]
    assert size(text) <= 4096
    assert "**Summary**\n\n日本語の要約。" in text
    assert "**Suggestion**\n\n🎉" in text
    assert "…" in text
    assert len(payload["markdown"]["title"]) == 128


# -- WeCom ---------------------------------------------------------------------------------------------------------


async def test_wecom_posts_markdown_the_robot_accepts(wecom: WeComRobot, http: httpx.AsyncClient) -> None:
    event = event_of(EventType.FAILED)
    await WeComNotifier("ops", wecom.url, http).send(event)
    (request,) = wecom.requests
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(request.body) == wecom_message(event)


@pytest.mark.parametrize(
    ("reply", "permanent", "retry_after", "said"),
    [
        (envelope(45009, "api freq out of limit"), False, 60.0, "sends too fast"),
        (envelope(-1, "system busy"), False, None, "busy"),
        (envelope(93000, "invalid webhook url"), True, None, "check the key"),
        (envelope(40058, "markdown.content exceed max length 4096"), True, None, "40058"),
        (Response(200, b"", (("Content-Type", "text/plain"),)), True, None, "errcode"),
        (Response(503, b"", (("Content-Type", "text/plain"),)), False, None, "503"),
    ],
    ids=["too-fast", "busy", "invalid-key", "too-long", "empty-200", "503"],
)
async def test_wecom_answers_map_to_temporary_or_permanent_failures(
    wecom: WeComRobot,
    http: httpx.AsyncClient,
    reply: Response,
    permanent: bool,
    retry_after: float | None,
    said: str,
) -> None:
    wecom.replies.append(reply)
    with pytest.raises(DeliveryError) as caught:
        await WeComNotifier("ops", wecom.url, http).send(event_of(EventType.FAILED))
    assert (caught.value.permanent, caught.value.retry_after) == (permanent, retry_after)
    assert said in str(caught.value)
    assert "ops (wecom)" in str(caught.value)
    assert_hides_credentials(caught.value)


async def test_wecom_an_unknown_key_is_permanent_and_never_shown(wecom: WeComRobot, http: httpx.AsyncClient) -> None:
    url = wecom.url.replace(KEY, "removed-robot-key-0000")
    with pytest.raises(DeliveryError) as caught:
        await WeComNotifier("ops", url, http).send(event_of(EventType.FAILED))
    assert caught.value.permanent is True
    assert str(caught.value).startswith("ops (wecom): WeCom does not know the robot (93000 'invalid webhook url")
    assert "removed-robot-key-0000" not in str(caught.value)


async def test_wecom_a_refused_connection_is_temporary_and_names_no_url(http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}/cgi-bin/webhook/send?key={KEY}"
    with pytest.raises(DeliveryError) as caught:
        await WeComNotifier("ops", url, http).send(event_of(EventType.FAILED))
    assert caught.value.permanent is False
    assert_hides_credentials(caught.value)


async def test_wecom_a_long_summary_is_cut_by_bytes_and_accepted(wecom: WeComRobot, http: httpx.AsyncClient) -> None:
    """WeCom counts UTF-8 bytes: 3 for a kanji, 4 for an emoji; the stand-in refuses content over 4,096 (40058)."""
    event = make_event(
        EventType.FINISHED,
        NOW,
        snapshot("done", summary="東京の架電結果。" * 600, suggestion="📞" * 2000),
        snapshot("running"),
    )
    await WeComNotifier("ops", wecom.url, http).send(event)
    (content,) = wecom.contents()
    assert 4000 < size(content) <= 4096
    assert "**Summary**\n東京の架電結果。" in content
    assert "**Suggestion**\n📞" in content


def test_wecom_renders_the_severity_as_the_heading_colour() -> None:
    colours = {
        EventType.FAILED: "warning",
        EventType.TIMED_OUT: "warning",
        EventType.FINISHED: "info",
        EventType.STARTED: "comment",
    }
    for type_, colour in colours.items():
        content = wecom_message(event_of(type_))["markdown"]["content"]
        assert content.startswith(f'### <font color="{colour}">')
        assert content.split("\n")[0].endswith("</font>")


def test_wecom_renders_facts_details_link_and_footer() -> None:
    content = wecom_message(event_of(EventType.FINISHED), task_url="https://console.example/tasks/{id}")["markdown"][
        "content"
    ]
    assert "\n\n> **Status**: running → done\n> **Progress**: 50%\n" in content
    assert "\n\n**Summary**\n1,200 numbers dialled; 812 answered.\n\n" in content
    assert "\n\n[Open the task](https://console.example/tasks/1001)\n\n" in content
    assert content.endswith(f'<font color="comment">{build(event_of(EventType.FINISHED)).footer}</font>')


@pytest.mark.parametrize("type_", list(EventType), ids=[t.name for t in EventType])
def test_wecom_mentions_userids_for_danger_only(type_: EventType) -> None:
    content = wecom_message(event_of(type_), mention_userids=("zhangsan", "li.si"))["markdown"]["content"]
    if build(event_of(type_)).severity == "danger":
        assert "\n\n<@zhangsan> <@li.si>\n\n" in content
    else:
        assert "<@" not in content


def test_wecom_shows_text_from_the_api_as_written_never_as_markdown_html_or_a_mention() -> None:
    content = wecom_message(markup_event())["markdown"]["content"]
    lines = content.split("\n")
    assert [line for line in lines if line.startswith("#")] == [lines[0]]
    assert content.count("<font") == 2  # the heading's colour and the footer's: none from the name
    for structure in ("<@", "[click]", "](https://evil", "*VIP*", "`z`", "![img"):
        assert structure not in content
    assert [line for line in lines if line.startswith(">")] == [line for line in lines if line.startswith("> **")]
    assert MARKUP_NAME in html.unescape(content)


# -- both: every event in every language fits, and the configuration -----------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_event_in_every_language_fits_both_platforms(language: str) -> None:
    for _, event in events():
        assert size(dingtalk_message(event, language=language)["markdown"]["text"]) <= 4096
        assert size(wecom_message(event, language=language)["markdown"]["content"]) <= 4096


def test_even_a_huge_name_and_status_leave_a_message_within_the_limit() -> None:
    huge = snapshot("状" * 5000, name="名" * 5000, summary="要" * 5000)
    event = make_event(EventType.CHANGED, NOW, huge, snapshot("running", name="名" * 5000))
    assert size(dingtalk_message(event)["markdown"]["text"]) <= 4096
    assert size(wecom_message(event)["markdown"]["content"]) <= 4096


@pytest.mark.parametrize("limit", [0, 1, 3, 4, 10, 11, 12, 50])
def test_a_cut_never_splits_a_character_or_a_reference(limit: int) -> None:
    text = "ab*c東🎉" * 5
    cut = fit(text, limit)
    assert size(cut) <= limit
    assert html.unescape(cut).removesuffix("…") in text
    assert "&#" not in cut.replace("&#42;", "")


def test_escaping_keeps_plain_text_as_it_is() -> None:
    assert escape("春の更新リマインド (task 1001) 1,200 numbers; 33% → done") == (
        "春の更新リマインド (task 1001) 1,200 numbers; 33% → done"
    )


def test_both_kinds_send_chat_events_by_default() -> None:
    for kind in ("dingtalk", "wecom"):
        wants = EventFilter(DEFAULT_EVENTS[kind])
        assert {t for t in EventType if not wants(t.value)} == {EventType.OBSERVED, EventType.PROGRESSED}


def robot_config(text: str) -> config.Config:
    base = '[api]\ntoken = "t"\n[watch]\ntasks = [1]\n'
    return config.validate(tomllib.loads(base + text), source="t.toml", env={})


def test_the_configuration_of_both_robots_loads() -> None:
    cfg = robot_config(
        f"""
[[notifiers]]
kind = "dingtalk"
name = "ding"
url = "https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
secret = "{DT_SECRET}"
keyword = "外呼告警"
at_mobiles = {json.dumps(MOBILES)}
at_all = true

[[notifiers]]
kind = "wecom"
name = "wecom"
url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}"
mention_userids = ["zhangsan"]
"""
    )
    ding, wecom = cfg.notifiers
    assert ding.at_mobiles == MOBILES  # type: ignore[attr-defined]
    assert wecom.mention_userids == ("zhangsan",)  # type: ignore[attr-defined]
    for secret in (TOKEN, DT_SECRET, KEY, *MOBILES):
        assert secret not in repr(cfg)  # the URLs and the secret are SecretStr, the numbers kept out of repr
    values = config.secret_values(cfg)  # what the log redaction hides
    assert DT_SECRET in values
    assert any(TOKEN in v for v in values)
    assert any(KEY in v for v in values)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('kind = "dingtalk"\nurl = "https://oapi.dingtalk.com/robot/send"', "with its access_token"),
        (
            f'kind = "dingtalk"\nurl = "https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"\nsecret = "abc"',
            "SEC",
        ),
        (
            f'kind = "dingtalk"\nurl = "https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"\nkeyword = "*hot*"',
            "must not contain *",
        ),
        (
            f'kind = "dingtalk"\nurl = "https://x.example/robot/send?access_token={TOKEN}"\n'
            'at_mobiles = ["13800001111", "call 13900002222"]',
            "item 2 is not a phone number",
        ),
        ('kind = "wecom"\nurl = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"', "with its key"),
        (
            f'kind = "wecom"\nurl = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}"\n'
            'mention_userids = ["@all"]',
            "not a WeCom UserID",
        ),
    ],
    ids=["no-token", "secret", "keyword", "mobile", "no-key", "userid"],
)
def test_a_wrong_robot_setting_is_a_config_error_naming_the_key(entry: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        robot_config(f'[[notifiers]]\nname = "n"\n{entry}\n')
    (found,) = caught.value.problems
    assert problem in found
    assert "13900002222" not in found  # a person's number is never repeated
    assert TOKEN not in found


# -- the installed CLI -------------------------------------------------------------------------------------------


async def test_notify_test_reaches_both_robots_and_reports_a_refused_signature(
    dingtalk: DingTalkRobot, wecom: WeComRobot, tmp_path: Path
) -> None:
    def write(secret: str) -> Path:
        cfg = tmp_path / "w.toml"
        cfg.write_text(
            f"""
[api]
base_url = "http://127.0.0.1:9"
token = "t"
[watch]
tasks = [1]
[store]
path = "state.db"
[messages]
language = "zh-Hans"

[[notifiers]]
kind = "dingtalk"
name = "ding"
url = "{dingtalk.url}"
secret = "{secret}"
at_mobiles = ["{MOBILES[0]}"]

[[notifiers]]
kind = "wecom"
name = "wecom"
url = "{wecom.url}"
""",
            encoding="utf-8",
        )
        cfg.chmod(0o600)
        return cfg

    ok = await run(["notify-test", "-c", str(write(DT_SECRET))])
    assert ok.returncode == 0, ok.stderr.decode()
    assert ok.stdout.decode().splitlines() == ["ding：已发送", "wecom：已发送"]
    assert json.loads(dingtalk.requests[0].body)["markdown"]["title"] == "来自 voicefox-watcher 的测试通知"
    assert "voicefox.watcher.test" in wecom.contents()[0]

    refused = await run(["notify-test", "-c", str(write(OTHER_SECRET)), "--notifier", "ding"])
    assert refused.returncode == 1
    (line,) = refused.stdout.decode().splitlines()
    assert line.startswith("ding：失败（不再重试）：")
    assert "ding (dingtalk): DingTalk refused the message (310000 'sign not match')" in line
    output = refused.stdout.decode() + refused.stderr.decode()
    for secret in (TOKEN, OTHER_SECRET, MOBILES[0]):
        assert secret not in output


def test_a_readable_config_warns_once_about_each_literal_robot_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text(
        f"""
[[notifiers]]
kind = "dingtalk"
name = "ding"
url = "https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
secret = "{DT_SECRET}"

[[notifiers]]
kind = "wecom"
name = "wecom"
url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}"
""",
        encoding="utf-8",
    )
    cfg.chmod(0o644)
    assert config.literal_secrets_exposed(cfg) == ["notifiers[0].secret", "notifiers[0].url", "notifiers[1].url"]
