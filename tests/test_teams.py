"""Microsoft Teams: every card valid against the official Adaptive Card 1.4 schema (vendored: tests/schemas/), API text
never read as markdown, and the Workflows webhook's answers, against a stand-in on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from watcher import config
from watcher.detect import make_event
from watcher.errors import DeliveryError
from watcher.httpserver import Response
from watcher.i18n import LANGUAGES
from watcher.model import Event, EventType, TaskSnapshot
from watcher.notify import DEFAULT_EVENTS
from watcher.notify.message import Severity, build
from watcher.notify.size import fit
from watcher.notify.teams import (
    COLOR,
    CONTENT_TYPE,
    MAX_BODY,
    TeamsNotifier,
    TeamsNotifierConfig,
    body,
    card,
    escape,
    render,
)

from .platforms import TEAMS_SIG, TeamsWorkflow, serving, teams_url

pytestmark = pytest.mark.anyio

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "adaptive-card-1.4.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft6Validator(SCHEMA)
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
TASK_URL = "https://console.voicefox.example/tasks/{id}"
# Everything Teams' markdown subset (and CommonMark around it) reads, in what the API sends.
MARKUP_NAME = "**VIP** _renew_ ~~old~~ `x` [click](https://evil.test) <at>all</at>"
MARKUP_TEXT = "# Heading\n> quoted\n- item\n+ item\n* item\n1. first\n**bold** _it_ [x](https://evil.test) \\*"
LONG_NAME = "東京キャンペーン " * 30


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
    """One event of each type (and a stall whose windows could not be placed), the API's text in every field."""
    running = snapshot("running", name)
    windows = {"zone": "unknown", "zoneSource": "unknown", "placed": False}
    cases = [
        make_event(EventType.OBSERVED, NOW, running, None),
        make_event(EventType.STARTED, NOW, running, snapshot("pending", name)),
        make_event(EventType.PROGRESSED, NOW, running, snapshot("running", name, progress=40), milestone=50),
        make_event(EventType.FINISHED, NOW, snapshot("done", name, progress=100), running),
        make_event(EventType.STOPPED, NOW, snapshot("stop.operate", name), running),
        make_event(EventType.TIMED_OUT, NOW, snapshot("stop.timeout", name), running),
        failed(name),
        make_event(EventType.FAILED, NOW, snapshot("stop.abnormal", name), None, firstSight=True),
        make_event(EventType.RESUMED, NOW, running, snapshot("stop.operate", name)),
        make_event(EventType.CHANGED, NOW, snapshot("**odd** [x](y)", name), running),
        make_event(EventType.STALLED, NOW, running, running, stalledForSeconds=1500),
        make_event(EventType.STALLED, NOW, running, running, stalledForSeconds=7500, windows=windows),
        make_event(EventType.MISSING, NOW, running, running),
        make_event(EventType.FINISHED, NOW, snapshot("done", ""), running),
    ]
    api = {"apiBaseUrl": "https://openapi.voicefox.ai", "unreachableForSeconds": 600, "downForSeconds": 900}
    cases += [
        Event("api-1", EventType.API_UNREACHABLE.value, NOW, "api", api),
        Event("api-2", EventType.API_RECOVERED.value, NOW, "api", {**api, "cause": "authentication"}),
        Event("test-1", EventType.TEST.value, NOW, "test", {"message": "hello"}),
    ]
    return cases


def assert_valid(adaptive_card: dict[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(VALIDATOR.iter_errors(adaptive_card))
    assert error is None, f"{error.message} at {list(error.absolute_path)}" if error else ""


def markdown_texts(adaptive_card: dict[str, Any]) -> list[str]:
    """Every text Teams reads as markdown: TextBlocks and Facts."""
    found = [b["text"] for b in adaptive_card["body"] if b["type"] == "TextBlock"]
    for block in adaptive_card["body"]:
        if block["type"] == "FactSet":
            found += [text for fact in block["facts"] for text in (fact["title"], fact["value"])]
    return found


def text_runs(adaptive_card: dict[str, Any]) -> list[str]:
    return [i["text"] for b in adaptive_card["body"] if b["type"] == "RichTextBlock" for i in b["inlines"]]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        yield client


@pytest.fixture
async def workflow() -> AsyncIterator[TeamsWorkflow]:
    stand_in = TeamsWorkflow()
    async with serving(stand_in) as base:
        stand_in.url = teams_url(base)
        yield stand_in


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the card ----------------------------------------------------------------------------------------------------


def test_the_vendored_schema_is_a_valid_draft_6_schema_that_refuses_a_broken_card() -> None:
    jsonschema.Draft6Validator.check_schema(SCHEMA)
    broken = card(build(failed()))
    broken["body"].append({"type": "TextBlock", "txt": "no text"})
    assert not VALIDATOR.is_valid(broken)
    assert not VALIDATOR.is_valid(card(build(failed())) | {"msteams": {"width": "Full"}})  # no unknown keys


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", ["Spring renewal reminders", MARKUP_NAME, LONG_NAME], ids=["plain", "markup", "long"])
def test_every_card_in_every_language_is_valid_adaptive_card_1_4(language: str, name: str) -> None:
    for event in every_event(name):
        for task_url in ("", TASK_URL):
            payload = render(build(event, language=language, task_url=task_url))
            assert payload["type"] == "message"
            (attachment,) = payload["attachments"]
            assert attachment["contentType"] == CONTENT_TYPE == "application/vnd.microsoft.card.adaptive"
            assert attachment["content"]["version"] == "1.4"
            assert_valid(attachment["content"])


def test_the_headline_is_a_text_run_in_the_severitys_colour() -> None:
    for event in every_event(MARKUP_NAME):
        msg = build(event)
        first = card(msg)["body"][0]
        assert first == {
            "type": "RichTextBlock",
            "inlines": [
                {
                    "type": "TextRun",
                    "text": msg.headline,
                    "weight": "Bolder",
                    "size": "Medium",
                    "color": COLOR[msg.severity],
                }
            ],
        }
    assert [COLOR[s] for s in (Severity.DANGER, Severity.WARNING, Severity.GOOD, Severity.INFO)] == [
        "Attention",
        "Warning",
        "Good",
        "Accent",
    ]


def test_the_facts_are_a_factset_and_the_details_a_bold_label_over_their_text() -> None:
    msg = build(failed(MARKUP_NAME), language="zh-Hans", task_url=TASK_URL)
    blocks = card(msg)["body"]
    (facts,) = [b for b in blocks if b["type"] == "FactSet"]
    assert [f["title"] for f in facts["facts"]] == [f.label for f in msg.facts]  # nothing to escape in them
    labels = [b for b in blocks if b["type"] == "TextBlock"]
    assert [b["text"] for b in labels] == [d.label for d in msg.details]
    assert all(b["wrap"] is True and b["weight"] == "Bolder" for b in labels)
    assert card(msg)["actions"] == [
        {"type": "Action.OpenUrl", "title": msg.link_text, "url": "https://console.voicefox.example/tasks/1001"}
    ]
    assert text_runs(card(msg))[-1] == msg.footer
    assert "actions" not in card(build(failed()))


@pytest.mark.parametrize("name", [MARKUP_NAME, LONG_NAME], ids=["markup", "long"])
def test_text_from_the_api_goes_only_into_text_runs_which_are_never_markdown(name: str) -> None:
    for event in every_event(name):
        adaptive_card = card(build(event))
        markdown = " ".join(markdown_texts(adaptive_card))
        for api_text in ("VIP", "evil.test", "Heading", "quoted", "renew"):
            assert api_text not in markdown
    runs = text_runs(card(build(failed(name))))
    assert any(name in run for run in runs)
    assert MARKUP_TEXT in runs
    assert "_" + MARKUP_TEXT + "_" in runs


def test_a_status_the_api_spells_with_markdown_is_escaped_in_the_factset() -> None:
    event = make_event(EventType.CHANGED, NOW, snapshot("**odd** [x](y)"), snapshot("running"))
    (facts,) = [b for b in card(build(event))["body"] if b["type"] == "FactSet"]
    assert facts["facts"][0]["value"] == "running → \\*\\*odd\\*\\* \\[x\\](y)"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("50%", "50%"),
        ("1,200", "1,200"),
        ("paused.by.vendor", "paused.by.vendor"),
        ("実行中 → 異常停止", "実行中 → 異常停止"),
        ("**bold** _it_ ~~s~~ `c`", "\\*\\*bold\\*\\* \\_it\\_ \\~\\~s\\~\\~ \\`c\\`"),
        ("[x](https://evil.test)", "\\[x\\](https://evil.test)"),
        ("a\\*b", "a\\\\\\*b"),
        ("- item\n+ item\n> quote\n# title\n12. twelfth", "\\- item\n\\+ item\n\\> quote\n\\# title\n12\\. twelfth"),
        ("a - b + c > d # e 1. f", "a - b + c > d # e 1. f"),  # only at the start of a line do they mean anything
        ("#hashtag", "#hashtag"),
    ],
)
def test_escape_leaves_plain_text_alone_and_disarms_every_markdown_construct(text: str, escaped: str) -> None:
    assert escape(text) == escaped


def test_a_summary_too_long_for_a_teams_message_is_cut_by_bytes() -> None:
    msg = build(make_event(EventType.FINISHED, NOW, snapshot("done", summary="通話" * 20000), snapshot("running")))
    content = fit(msg, body, MAX_BODY)
    assert len(content) <= MAX_BODY
    adaptive_card = json.loads(content)["attachments"][0]["content"]
    assert_valid(adaptive_card)
    assert any(run.startswith("通話") and run.endswith("…") for run in text_runs(adaptive_card))


# -- the webhook's answers ---------------------------------------------------------------------------------------


async def test_the_card_is_posted_as_a_message_the_workflow_accepts(
    workflow: TeamsWorkflow, http: httpx.AsyncClient
) -> None:
    event = failed(MARKUP_NAME)
    await TeamsNotifier("ops", workflow.url, http, language="ja", task_url=TASK_URL).send(event)
    (accepted,) = workflow.accepted
    assert accepted == render(build(event, language="ja", task_url=TASK_URL))
    (request,) = workflow.requests
    assert request.headers["content-type"] == "application/json"
    assert_valid(accepted["attachments"][0]["content"])


@pytest.mark.parametrize("status", [200, 202])
async def test_200_and_202_are_success(workflow: TeamsWorkflow, http: httpx.AsyncClient, status: int) -> None:
    workflow.replies.append(Response(status, b"", ()))
    await TeamsNotifier("ops", workflow.url, http).send(failed())


async def test_throttled_is_temporary_with_the_retry_after(workflow: TeamsWorkflow, http: httpx.AsyncClient) -> None:
    workflow.replies.append(Response(429, b'{"error":{"code":"WorkflowTriggerIsThrottled"}}', (("Retry-After", "37"),)))
    with pytest.raises(DeliveryError) as caught:
        await TeamsNotifier("ops", workflow.url, http).send(failed())
    assert caught.value.permanent is False
    assert caught.value.retry_after == 37.0


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [
        (Response(400, b'{"error":{"code":"InvalidRequestContent"}}'), True),
        (Response(403, b'{"error":{"code":"WorkflowDisabled"}}'), True),
        (Response(404, b'{"error":{"code":"WorkflowNotFound"}}'), True),
        (Response(500, b""), False),
        (Response(502, b"bad gateway", (("Content-Type", "text/plain"),)), False),
    ],
    ids=["400", "403", "404", "500", "502"],
)
async def test_client_errors_are_permanent_and_server_errors_temporary(
    workflow: TeamsWorkflow, http: httpx.AsyncClient, reply: Response, permanent: bool
) -> None:
    workflow.replies.append(reply)
    with pytest.raises(DeliveryError) as caught:
        await TeamsNotifier("ops", workflow.url, http).send(failed())
    assert caught.value.permanent is permanent
    assert str(caught.value).startswith("ops (teams): receiver answered")


async def test_a_wrong_signature_is_a_permanent_401_that_never_shows_the_url(
    workflow: TeamsWorkflow, http: httpx.AsyncClient
) -> None:
    url = workflow.url.replace(TEAMS_SIG, "c2lnLXRoYXQtd2FzLXJldm9rZWQ")
    with pytest.raises(DeliveryError) as caught:
        await TeamsNotifier("ops", url, http).send(failed())
    assert caught.value.permanent is True
    assert "401" in str(caught.value)
    for leak in ("c2lnLXRoYXQtd2FzLXJldm9rZWQ", TEAMS_SIG, "sig=", "workflows", "127.0.0.1"):
        assert leak not in str(caught.value)


async def test_a_refused_connection_is_temporary_and_names_no_url(http: httpx.AsyncClient) -> None:
    url = teams_url(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(DeliveryError) as caught:
        await TeamsNotifier("ops", url, http).send(failed())
    assert caught.value.permanent is False
    assert TEAMS_SIG not in str(caught.value)
    assert "ops (teams)" in str(caught.value)


async def test_a_huge_summary_reaches_the_workflow_within_the_limit(
    workflow: TeamsWorkflow, http: httpx.AsyncClient
) -> None:
    event = make_event(EventType.FINISHED, NOW, snapshot("done", summary="結果" * 30000), snapshot("running"))
    await TeamsNotifier("ops", workflow.url, http).send(event)
    assert len(workflow.requests[0].body) <= MAX_BODY
    assert_valid(workflow.accepted[0]["attachments"][0]["content"])


# -- the config --------------------------------------------------------------------------------------------------


def test_a_teams_notifier_is_configured_with_its_workflow_url_which_is_a_secret() -> None:
    url = teams_url("https://prod-07.japaneast.logic.azure.com:443")
    raw = {"api": {"token": "t"}, "watch": {"tasks": [1]}, "notifiers": [{"kind": "teams", "name": "ops", "url": url}]}
    (teams,) = config.validate(raw, source="t", env={}).notifiers
    assert isinstance(teams, TeamsNotifierConfig)
    assert TEAMS_SIG not in repr(teams)
    assert ("notifiers", "url", "teams") in config.SECRETS
    assert DEFAULT_EVENTS["teams"] == ["*", "!voicefox.task.observed", "!voicefox.task.progressed"]
