"""Feishu / Lark: the card as Feishu reads it, the signature as Feishu checks it, and every answer Feishu gives,
against a stand-in bot on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from watcher import config
from watcher.detect import Rules, detect, make_event
from watcher.dispatch import Dispatcher
from watcher.errors import ConfigError, DeliveryError
from watcher.model import Event, EventType, TaskSnapshot
from watcher.notify import DEFAULT_EVENTS
from watcher.notify.feishu import (
    MAX_BODY,
    RATE_LIMIT_PAUSE,
    TEMPLATE,
    FeishuNotifier,
    FeishuNotifierConfig,
    body,
    render,
    sign,
)
from watcher.notify.message import Fact, Severity, build
from watcher.notify.size import fit
from watcher.store import Store
from watcher.stores import ThreadedStore

from .platforms import FEISHU_SECRET, FEISHU_TOKEN, FeishuBot, feishu_sign, feishu_url, serving

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
TASK_URL = "https://console.voicefox.example/tasks/{id}"
# Every control character of Feishu's card markdown, a link, an @all mention and HTML, in what the API sends.
MARKUP_NAME = '**VIP** _renew_ ~~old~~ `x` [click](https://evil.test) <at id=all></at> <font color="red">&amp;</font>'
MARKUP_TEXT = "# Heading\n> quoted\n- item\n1. first\n**bold** <at id=all></at> @all [x](https://evil.test)"


def snapshot(status: str, name: str = "春の更新リマインド", **fields: Any) -> TaskSnapshot:
    values: dict[str, Any] = {
        "progress": 50,
        "total": 1200,
        "collection_rate": 33,
        "summary": MARKUP_TEXT,
        "suggestion": "_" + MARKUP_TEXT + "_",
    } | fields
    return TaskSnapshot(id=1001, status=status, name=name, **values)


def failed(name: str = "春の更新リマインド", **fields: Any) -> Event:
    return make_event(EventType.FAILED, NOW, snapshot("stop.abnormal", name, **fields), snapshot("running", name))


def every_event(name: str) -> list[Event]:
    """One event of each type whose API text (name, status, summary, suggestion) is `name` and MARKUP_TEXT."""
    running = snapshot("running", name)
    cases = [
        make_event(EventType.OBSERVED, NOW, running, None),
        make_event(EventType.STARTED, NOW, running, snapshot("pending", name)),
        make_event(EventType.PROGRESSED, NOW, running, snapshot("running", name, progress=40), milestone=50),
        make_event(EventType.FINISHED, NOW, snapshot("done", name, progress=100), running),
        make_event(EventType.STOPPED, NOW, snapshot("stop.operate", name), running),
        make_event(EventType.TIMED_OUT, NOW, snapshot("stop.timeout", name), running),
        failed(name),
        make_event(EventType.RESUMED, NOW, running, snapshot("stop.operate", name)),
        make_event(EventType.CHANGED, NOW, snapshot("**odd** <at id=all></at>", name), running),
        make_event(EventType.STALLED, NOW, running, running, stalledForSeconds=1500),
        make_event(EventType.MISSING, NOW, running, running),
    ]
    api = {"apiBaseUrl": "https://openapi.voicefox.ai", "unreachableForSeconds": 600, "downForSeconds": 900}
    cases += [
        Event("api-1", EventType.API_UNREACHABLE.value, NOW, "api", api),
        Event("api-2", EventType.API_RECOVERED.value, NOW, "api", api),
        Event("test-1", EventType.TEST.value, NOW, "test", {"message": "hello"}),
    ]
    return cases


def text_objects(node: Any) -> list[dict[str, Any]]:
    """Every text object of a card (header title, fields, div texts, button texts, note elements)."""
    if isinstance(node, list):
        return [t for item in node for t in text_objects(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("tag") in ("plain_text", "lark_md") else []
    return found + [t for value in node.values() for t in text_objects(value)]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        yield client


@pytest.fixture
async def bot() -> AsyncIterator[FeishuBot]:
    """A signing Feishu bot on a free port."""
    stand_in = FeishuBot()
    async with serving(stand_in) as base:
        stand_in.url = feishu_url(base)
        yield stand_in


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the card ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Spring renewal reminders", MARKUP_NAME], ids=["plain", "markup"])
def test_every_event_is_an_interactive_card_whose_api_text_is_only_plain_text(name: str) -> None:
    """Feishu shows plain_text as written: a name or summary cannot become markdown, a link or an @all mention."""
    for event in every_event(name):
        payload = render(build(event, task_url=TASK_URL))
        assert set(payload) == {"msg_type", "card"}
        assert payload["msg_type"] == "interactive"
        for text in text_objects(payload["card"]):
            if text["tag"] == "lark_md":
                # Only our own labels, in bold, and only when they are words and spaces.
                assert text["content"].startswith("**") and text["content"].endswith("**")
                assert all(c.isalnum() or c == " " for c in text["content"][2:-2]), text
        lark_md = " ".join(t["content"] for t in text_objects(payload["card"]) if t["tag"] == "lark_md")
        for api_text in ("VIP", "<at", "evil.test", "Heading", "@all", "odd", "renew"):
            assert api_text not in lark_md


def test_the_header_carries_the_headline_as_plain_text_in_the_severitys_colour() -> None:
    for event in every_event(MARKUP_NAME):
        msg = build(event)
        header = render(msg)["card"]["header"]
        assert header == {"template": TEMPLATE[msg.severity], "title": {"tag": "plain_text", "content": msg.headline}}
    assert {TEMPLATE[s] for s in Severity} == {"red", "orange", "green", "blue"}
    assert render(build(failed()))["card"]["header"]["template"] == "red"
    assert (
        render(build(make_event(EventType.FINISHED, NOW, snapshot("done"), snapshot("running"))))["card"]["header"][
            "template"
        ]
        == "green"
    )


def test_the_facts_are_short_fields_a_label_then_its_value() -> None:
    msg = build(failed(), language="ja")
    (div,) = [e for e in render(msg)["card"]["elements"] if "fields" in e]
    fields = div["fields"]
    assert all(f["is_short"] is True for f in fields)
    assert [f["text"] for f in fields[0::2]] == [{"tag": "lark_md", "content": f"**{f.label}**"} for f in msg.facts]
    assert [f["text"] for f in fields[1::2]] == [{"tag": "plain_text", "content": f.value} for f in msg.facts]
    assert fields[0]["text"]["content"] == "**ステータス**"


def test_the_details_keep_the_api_text_verbatim_and_the_link_is_a_button_and_the_footer_a_note() -> None:
    msg = build(failed(MARKUP_NAME), task_url=TASK_URL)
    elements = render(msg)["card"]["elements"]
    plain = [t["content"] for t in text_objects(elements) if t["tag"] == "plain_text"]
    assert MARKUP_TEXT in plain
    assert "_" + MARKUP_TEXT + "_" in plain
    (action,) = [e for e in elements if e["tag"] == "action"]
    assert action["actions"] == [
        {
            "tag": "button",
            "text": {"tag": "plain_text", "content": "Open the task"},
            "type": "primary",
            "url": "https://console.voicefox.example/tasks/1001",
        }
    ]
    assert elements[-1] == {"tag": "note", "elements": [{"tag": "plain_text", "content": msg.footer}]}
    assert not [e for e in render(build(failed()))["card"]["elements"] if e["tag"] == "action"]  # no task_url


def test_a_label_with_a_markdown_character_is_shown_as_plain_text_not_bold() -> None:
    odd = dataclasses.replace(build(failed()), facts=(Fact("a*b_c", "1"),), details=())
    (div,) = [e for e in render(odd)["card"]["elements"] if "fields" in e]
    assert div["fields"][0]["text"] == {"tag": "plain_text", "content": "a*b_c"}


def test_a_summary_too_long_for_feishu_is_cut_by_bytes_to_fit_20_kb() -> None:
    """Feishu refuses bodies over 20 KB: a huge summary is cut (by UTF-8 bytes, at a character) and marked "…"."""
    summary = "東京の通話結果：" * 4000  # 96 KB of UTF-8
    msg = build(make_event(EventType.FINISHED, NOW, snapshot("done", summary=summary), snapshot("running")))
    assert len(body(msg, secret=FEISHU_SECRET, timestamp=1700000000)) > MAX_BODY
    content = fit(msg, lambda m: body(m, secret=FEISHU_SECRET, timestamp=1700000000), MAX_BODY)
    assert len(content) <= MAX_BODY
    texts = [t["content"] for t in text_objects(json.loads(content)["card"]) if t["tag"] == "plain_text"]
    (cut,) = [t for t in texts if t.startswith("東京の通話結果")]
    assert cut.endswith("…")
    assert summary.startswith(cut[:-1])
    assert any(t == "_" + MARKUP_TEXT + "_" for t in texts)  # the short suggestion is untouched


# -- the signature -----------------------------------------------------------------------------------------------


def test_the_signature_is_the_one_feishus_documentation_computes() -> None:
    assert sign(FEISHU_SECRET, 1599360473) == feishu_sign(FEISHU_SECRET, "1599360473")
    assert sign("demo", 1599360473) != sign("demo", 1599360474)


async def test_a_signed_card_is_accepted_by_the_bot(bot: FeishuBot, http: httpx.AsyncClient) -> None:
    event = failed(MARKUP_NAME)
    await FeishuNotifier("oncall", bot.url, http, secret=FEISHU_SECRET, task_url=TASK_URL).send(event)
    (accepted,) = bot.accepted
    assert set(accepted) == {"timestamp", "sign", "msg_type", "card"}
    assert isinstance(accepted["timestamp"], str)  # seconds, as a string, in the body
    assert accepted["sign"] == feishu_sign(FEISHU_SECRET, accepted["timestamp"])
    assert {k: accepted[k] for k in ("msg_type", "card")} == render(build(event, task_url=TASK_URL))
    (request,) = bot.requests
    assert request.headers["content-type"] == "application/json; charset=utf-8"


async def test_without_a_secret_no_timestamp_or_sign_is_sent(http: httpx.AsyncClient) -> None:
    stand_in = FeishuBot(secret=None)
    async with serving(stand_in) as base:
        await FeishuNotifier("oncall", feishu_url(base), http).send(failed())
    (accepted,) = stand_in.accepted
    assert set(accepted) == {"msg_type", "card"}


async def test_a_timestamp_within_the_hour_is_accepted(bot: FeishuBot, http: httpx.AsyncClient) -> None:
    await FeishuNotifier("oncall", bot.url, http, secret=FEISHU_SECRET, clock=lambda: time.time() - 1800).send(failed())
    assert len(bot.accepted) == 1


# -- Feishu's answers --------------------------------------------------------------------------------------------


async def test_a_wrong_secret_is_refused_with_19021_permanently_naming_the_secret_but_never_showing_it(
    bot: FeishuBot, http: httpx.AsyncClient
) -> None:
    wrong = "not-the-bots-secret-42"
    with pytest.raises(DeliveryError) as caught:
        await FeishuNotifier("oncall", bot.url, http, secret=wrong).send(failed())
    error = str(caught.value)
    assert caught.value.permanent is True
    assert error.startswith("oncall (feishu): Feishu answered code 19021")
    assert "`secret`" in error
    for leak in (wrong, FEISHU_SECRET, FEISHU_TOKEN, bot.url, "127.0.0.1"):
        assert leak not in error
    assert bot.accepted == []


async def test_a_clock_off_by_more_than_an_hour_is_refused_permanently(bot: FeishuBot, http: httpx.AsyncClient) -> None:
    notifier = FeishuNotifier("oncall", bot.url, http, secret=FEISHU_SECRET, clock=lambda: time.time() - 7200)
    with pytest.raises(DeliveryError) as caught:
        await notifier.send(failed())
    assert caught.value.permanent is True
    assert "clock" in str(caught.value)


async def test_frequency_limited_is_temporary_with_a_pause(bot: FeishuBot, http: httpx.AsyncClient) -> None:
    bot.codes.append(11232)
    with pytest.raises(DeliveryError) as caught:
        await FeishuNotifier("oncall", bot.url, http, secret=FEISHU_SECRET).send(failed())
    assert caught.value.permanent is False
    assert caught.value.retry_after == RATE_LIMIT_PAUSE
    assert "11232" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "words"),
    [(9499, "malformed"), (19022, "IP allowlist"), (19024, "keyword"), (19007, "")],
    ids=["bad-request", "ip", "keyword", "other"],
)
async def test_other_refusals_are_permanent_and_say_what_to_fix(
    bot: FeishuBot, http: httpx.AsyncClient, code: int, words: str
) -> None:
    bot.codes.append(code)
    with pytest.raises(DeliveryError) as caught:
        await FeishuNotifier("oncall", bot.url, http, secret=FEISHU_SECRET).send(failed())
    assert caught.value.permanent is True
    assert f"code {code}" in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "permanent", "retry_after"),
    [
        ({"code": 9499, "msg": "too many request", "data": {}}, False, RATE_LIMIT_PAUSE),
        ({"StatusCode": 0, "StatusMessage": "success"}, None, None),  # the older answer still means success
        ({"msg": "what"}, True, None),
    ],
    ids=["9499-too-many", "legacy-success", "no-code"],
)
async def test_answers_seen_in_the_wild_are_read_as_they_mean(
    http: httpx.AsyncClient, answer: dict[str, Any], permanent: bool | None, retry_after: float | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mock:
        notifier = FeishuNotifier("oncall", f"https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_TOKEN}", mock)
        if permanent is None:
            await notifier.send(failed())
            return
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(failed())
    assert caught.value.permanent is permanent
    assert caught.value.retry_after == retry_after


async def test_an_unknown_token_is_a_permanent_404_that_does_not_show_the_token(
    bot: FeishuBot, http: httpx.AsyncClient
) -> None:
    url = bot.url.replace(FEISHU_TOKEN, "revoked-token-123")
    with pytest.raises(DeliveryError) as caught:
        await FeishuNotifier("oncall", url, http, secret=FEISHU_SECRET).send(failed())
    assert caught.value.permanent is True
    assert "404" in str(caught.value)
    assert "revoked-token-123" not in str(caught.value)


async def test_a_200_that_is_not_feishus_json_is_permanent(http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))) as mock:
        with pytest.raises(DeliveryError) as caught:
            await FeishuNotifier("oncall", "https://open.larksuite.com/open-apis/bot/v2/hook/t", mock).send(failed())
    assert caught.value.permanent is True
    assert "bot's webhook" in str(caught.value)


async def test_a_refused_connection_is_temporary_and_names_no_token(http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}/open-apis/bot/v2/hook/{FEISHU_TOKEN}"
    with pytest.raises(DeliveryError) as caught:
        await FeishuNotifier("oncall", url, http, secret=FEISHU_SECRET).send(failed())
    assert caught.value.permanent is False
    assert FEISHU_TOKEN not in str(caught.value)
    assert "oncall (feishu)" in str(caught.value)


async def test_a_huge_summary_reaches_the_bot_cut_to_its_limit(bot: FeishuBot, http: httpx.AsyncClient) -> None:
    event = make_event(EventType.FINISHED, NOW, snapshot("done", summary="集" * 30000), snapshot("running"))
    await FeishuNotifier("oncall", bot.url, http, secret=FEISHU_SECRET).send(event)
    assert len(bot.requests[0].body) <= MAX_BODY
    assert len(bot.accepted) == 1


# -- through the dispatcher --------------------------------------------------------------------------------------


async def _deliver_one_failure(notifier: FeishuNotifier) -> Store:
    store = Store.open(":memory:")
    dispatcher = Dispatcher(ThreadedStore(store), {notifier.name: notifier})
    state, events = detect(None, TaskSnapshot(id=7, status="stop.abnormal", name="x"), NOW, Rules())
    store.record(state, [(e, dispatcher.receivers_for(e.type)) for e in events], time.time())
    await dispatcher.drain()
    return store


async def test_a_wrong_secret_dead_letters_the_alert_at_once(bot: FeishuBot, http: httpx.AsyncClient) -> None:
    store = await _deliver_one_failure(FeishuNotifier("oncall", bot.url, http, secret="wrong-secret"))
    assert [(c.state, c.count) for c in store.outbox_counts()] == [("dead", 1)]
    assert len(bot.requests) == 1  # refused once, not retried


async def test_rate_limiting_keeps_the_alert_pending_for_at_least_the_pause(
    bot: FeishuBot, http: httpx.AsyncClient
) -> None:
    bot.codes.append(11232)
    before = time.time()
    store = await _deliver_one_failure(FeishuNotifier("oncall", bot.url, http, secret=FEISHU_SECRET))
    head = store.head("oncall")
    assert head is not None and head.next_attempt_at >= before + RATE_LIMIT_PAUSE
    assert [(c.state, c.count) for c in store.outbox_counts()] == [("pending", 1)]


# -- the config --------------------------------------------------------------------------------------------------


def test_a_feishu_or_lark_notifier_is_configured_with_its_url_and_secret() -> None:
    raw = {
        "api": {"token": "t"},
        "watch": {"tasks": [1]},
        "notifiers": [
            {"kind": "feishu", "name": "cn", "url": f"https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_TOKEN}"},
            {
                "kind": "feishu",
                "name": "global",
                "url": "https://open.larksuite.com/open-apis/bot/v2/hook/abc",
                "secret": FEISHU_SECRET,
            },
        ],
    }
    cn, global_ = config.validate(raw, source="t", env={}).notifiers
    assert isinstance(cn, FeishuNotifierConfig) and cn.secret is None
    assert isinstance(global_, FeishuNotifierConfig) and global_.secret is not None
    assert FEISHU_SECRET not in repr(global_) and FEISHU_TOKEN not in repr(cn)
    assert DEFAULT_EVENTS["feishu"] == ["*", "!voicefox.task.observed", "!voicefox.task.progressed"]


@pytest.mark.parametrize("secret", ["", "has space", "multi\nline"])
def test_a_secret_that_cannot_be_the_bots_is_a_config_error(secret: str) -> None:
    raw = {
        "api": {"token": "t"},
        "watch": {"tasks": [1]},
        "notifiers": [{"kind": "feishu", "name": "cn", "url": "https://open.feishu.cn/x", "secret": secret}],
    }
    with pytest.raises(ConfigError) as caught:
        config.validate(raw, source="t", env={})
    (problem,) = caught.value.problems
    assert problem.startswith("notifiers[0].secret: must ")
    assert secret.strip() == "" or secret not in problem  # the value is not echoed
