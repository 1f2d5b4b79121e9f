"""Notifiers: the webhook and Slack channels over real sockets, event filters, the log channel, and no leaks."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog.testing
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from slack_sdk.models.blocks import Block
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from watcher.detect import make_event
from watcher.errors import DeliveryError
from watcher.httpserver import Response
from watcher.model import Event, EventType, TaskSnapshot, parse_task_body
from watcher.notify import DEFAULT_EVENTS, EventFilter
from watcher.notify.log import LogNotifier
from watcher.notify.message import build
from watcher.notify.slack import EMOJI, SlackNotifier, message
from watcher.notify.webhook import CONTENT_TYPE, WebhookNotifier
from watcher.simulator import task_body

from .conftest import Receiver

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
TASK = 1001
# A path and query that look like credentials, as in many webhook URLs: errors must name neither.
SECRET_PATH = "/hooks/ZXhhbXBsZS1zZWNyZXQtcGF0aA"
SECRET_QUERY = "token=q-secret-6f1c2a"
SLACK_PATH = "/services/T0000/B0000/XXXXslacksecretXXXX"

# (previous status, current status) for each event type; None: no previous snapshot.
TRANSITIONS: dict[EventType, tuple[str | None, str]] = {
    EventType.OBSERVED: (None, "pending"),
    EventType.STARTED: ("pending", "running"),
    EventType.PROGRESSED: ("running", "running"),
    EventType.FINISHED: ("running", "done"),
    EventType.STOPPED: ("running", "stop.operate"),
    EventType.TIMED_OUT: ("running", "stop.timeout"),
    EventType.FAILED: ("running", "stop.abnormal"),
    EventType.RESUMED: ("stop.operate", "running"),
    EventType.CHANGED: ("running", "paused.by.vendor"),
    EventType.STALLED: ("running", "running"),
    EventType.MISSING: ("running", "running"),
    EventType.UNSTALLED: ("running", "running"),
    EventType.REAPPEARED: ("running", "running"),
    EventType.RULE_MATCHED: ("running", "running"),
    EventType.RULE_RESOLVED: ("running", "running"),
    EventType.ANSWER_RATE_DROPPED: ("running", "running"),
    EventType.ANSWER_RATE_RECOVERED: ("running", "running"),
}
RULE = {"name": "low collection", "when": "progress >= 30 && collectionRate < 20", "description": ""}
EXTRAS: dict[EventType, dict[str, Any]] = {
    EventType.PROGRESSED: {"milestone": 50},
    EventType.STALLED: {"stalledSince": "2026-11-23T09:10:00+00:00", "stalledForSeconds": 1200},
    EventType.UNSTALLED: {
        "resolves": {"type": "voicefox.task.stalled", "since": "2026-11-23T08:50:00+00:00", "lastedSeconds": 2400}
    },
    EventType.REAPPEARED: {
        "resolves": {"type": "voicefox.task.missing", "since": "2026-11-23T09:00:00+00:00", "lastedSeconds": 1800}
    },
    EventType.RULE_MATCHED: {"rule": RULE | {"values": {"progress": 50, "collectionRate": 12}}},
    EventType.RULE_RESOLVED: {
        "rule": RULE | {"values": {"progress": 60, "collectionRate": 24}},
        "resolves": {"type": "voicefox.task.rule_matched", "since": "2026-11-23T08:30:00+00:00", "lastedSeconds": 3600},
    },
    EventType.ANSWER_RATE_DROPPED: {
        "answerRate": {
            "since": "2026-11-23T08:40:00+00:00",
            "before": 0.41,
            "after": 0.03,
            "calls": 100,
            "baselineCalls": 1250,
        }
    },
    EventType.ANSWER_RATE_RECOVERED: {
        "answerRate": {
            "since": "2026-11-23T08:40:00+00:00",
            "until": "2026-11-23T09:00:00+00:00",
            "before": 0.41,
            "after": 0.03,
            "now": 0.38,
            "calls": 100,
            "lastedSeconds": 1200,
        },
        "resolves": {
            "type": "voicefox.task.answer_rate_dropped",
            "since": "2026-11-23T08:40:00+00:00",
            "lastedSeconds": 1200,
        },
    },
}
# The watcher's own events about a notifier, as the dispatcher records them.
RECEIVER_DATA: dict[EventType, dict[str, Any]] = {
    EventType.RECEIVER_FAILING: {
        "receiver": "ops-slack",
        "kind": "slack",
        "since": "2026-11-23T09:00:00+00:00",
        "failingForSeconds": 1800,
        "deadLetters": 2,
        "pending": 14,
        "error": "ops-slack (slack): receiver answered 500 'internal_error'",
    },
    EventType.RECEIVER_RECOVERED: {
        "receiver": "ops-slack",
        "kind": "slack",
        "since": "2026-11-23T09:00:00+00:00",
        "failedForSeconds": 2700,
    },
}
TERMINAL = {EventType.FINISHED, EventType.STOPPED, EventType.TIMED_OUT, EventType.FAILED}
SUMMARY = "1,200 numbers dialled; 812 answered."
SUGGESTION = "Call the 388 unanswered numbers again."


def snapshot(status: str = "running", *, name: str = "Spring renewal reminders", **fields: Any) -> TaskSnapshot:
    """A snapshot whose summary and suggestion are filled, so tests can see where they are (not) shown."""
    values: dict[str, Any] = {
        "progress": 50,
        "total": 1200,
        "collection_rate": 33,
        "summary": SUMMARY,
        "suggestion": SUGGESTION,
    } | fields
    return TaskSnapshot(id=TASK, status=status, name=name, **values)


def event_of(type_: EventType, *, name: str = "Spring renewal reminders") -> Event:
    """An event of this type, as detection would build it."""
    if type_ is EventType.TEST:
        return Event(id="test-1", type=type_.value, time=NOW, subject="test", data={"message": "Can you read this?"})
    if type_ in (EventType.API_UNREACHABLE, EventType.API_RECOVERED):
        data = {"apiBaseUrl": "https://openapi.voicefox.ai", "unreachableForSeconds": 600, "downForSeconds": 900}
        return Event(id="api-1", type=type_.value, time=NOW, subject="api", data=data)
    if type_ in RECEIVER_DATA:
        return Event(
            id=f"{type_.name}-1", type=type_.value, time=NOW, subject="notifier:ops-slack", data=RECEIVER_DATA[type_]
        )
    before, after = TRANSITIONS[type_]
    previous = snapshot(before, name=name, progress=40) if before is not None else None
    return make_event(type_, NOW, snapshot(after, name=name), previous, **EXTRAS.get(type_, {}))


def describe(event: Event) -> tuple[str, str, str]:
    """(severity, Slack emoji, headline) of an event in English."""
    msg = build(event)
    return msg.severity.value, EMOJI[msg.icon], msg.headline


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP client as the daemon builds it for notifiers."""
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        yield client


def secret_url(receiver: Receiver) -> str:
    return receiver.url.removesuffix("/hook") + SECRET_PATH + "?" + SECRET_QUERY


# -- webhook ---------------------------------------------------------------------------------------------------


async def test_webhook_body_is_a_structured_cloudevent_the_sdk_parses(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    event = event_of(EventType.FINISHED)
    await WebhookNotifier("hook", receiver.url, http).send(event)
    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == CONTENT_TYPE == "application/cloudevents+json"
    parsed = from_http(HTTPMessage(headers=request.headers, body=request.body), JSONFormat())
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == event.id
    assert parsed.get_type() == "voicefox.task.finished"
    assert parsed.get_subject() == str(TASK)
    assert parsed.get_source() == "voicefox-watcher"
    assert parsed.get_time() == NOW
    assert parsed.get_data() == event.data


async def test_webhook_signature_verifies_with_standardwebhooks(receiver: Receiver, http: httpx.AsyncClient) -> None:
    event = event_of(EventType.FAILED)
    await WebhookNotifier("hook", receiver.url, http, secret=SECRET).send(event)
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == event.id
    assert request.headers["webhook-timestamp"].isdigit()
    assert request.headers["webhook-signature"].startswith("v1,")
    verified = Webhook(SECRET).verify(request.body, request.headers)
    assert verified["id"] == event.id


async def test_webhook_signature_does_not_verify_with_another_secret(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    await WebhookNotifier("hook", receiver.url, http, secret=SECRET).send(event_of(EventType.FAILED))
    (request,) = receiver.requests
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(request.body, request.headers)


async def test_webhook_without_secret_sends_no_signature(receiver: Receiver, http: httpx.AsyncClient) -> None:
    event = event_of(EventType.STARTED)
    await WebhookNotifier("hook", receiver.url, http).send(event)
    (request,) = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == event.id
    assert request.headers["webhook-timestamp"].isdigit()


async def test_webhook_timestamp_comes_from_the_injected_clock(receiver: Receiver, http: httpx.AsyncClient) -> None:
    notifier = WebhookNotifier("hook", receiver.url, http, clock=lambda: 1_800_000_000.9)
    await notifier.send(event_of(EventType.STARTED))
    assert receiver.requests[0].headers["webhook-timestamp"] == "1800000000"


async def test_webhook_second_send_carries_the_same_event_id(receiver: Receiver, http: httpx.AsyncClient) -> None:
    """The event id is the receiver's idempotency key on every attempt."""
    event = event_of(EventType.FINISHED)
    notifier = WebhookNotifier("hook", receiver.url, http, secret=SECRET)
    await notifier.send(event)
    await notifier.send(event)
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.id
    assert [b["id"] for b in receiver.bodies()] == [event.id, event.id]


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_webhook_2xx_reply_is_success(receiver: Receiver, http: httpx.AsyncClient, status: int) -> None:
    receiver.replies.append(Response(status, b'{"ok":true}' if status != 204 else b""))
    await WebhookNotifier("hook", receiver.url, http).send(event_of(EventType.STARTED))
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_webhook_retryable_status_is_transient_with_retry_after(
    receiver: Receiver, http: httpx.AsyncClient, status: int
) -> None:
    receiver.replies.append(Response(status, b"busy", (("Retry-After", "30"),)))
    with pytest.raises(DeliveryError) as caught:
        await WebhookNotifier("hook", receiver.url, http).send(event_of(EventType.STARTED))
    assert caught.value.permanent is False
    assert caught.value.retry_after == 30.0
    assert str(status) in str(caught.value)


async def test_webhook_retryable_status_without_retry_after_has_none(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    receiver.replies.append(Response(503, b""))
    with pytest.raises(DeliveryError) as caught:
        await WebhookNotifier("hook", receiver.url, http).send(event_of(EventType.STARTED))
    assert (caught.value.permanent, caught.value.retry_after) == (False, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_webhook_client_error_is_permanent(receiver: Receiver, http: httpx.AsyncClient, status: int) -> None:
    receiver.replies.append(Response(status, b'{"error":"no"}'))
    with pytest.raises(DeliveryError) as caught:
        await WebhookNotifier("hook", receiver.url, http).send(event_of(EventType.STARTED))
    assert caught.value.permanent is True
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_webhook_redirect_is_permanent_and_not_followed(
    receiver: Receiver, http: httpx.AsyncClient, status: int
) -> None:
    receiver.replies.append(Response(status, b"", (("Location", receiver.url + "/moved"),)))
    with pytest.raises(DeliveryError) as caught:
        await WebhookNotifier("hook", receiver.url, http).send(event_of(EventType.STARTED))
    assert caught.value.permanent is True
    assert [r.path for r in receiver.requests] == ["/hook"]


async def test_webhook_connection_refused_is_transient(http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}{SECRET_PATH}?{SECRET_QUERY}"
    with pytest.raises(DeliveryError) as caught:
        await WebhookNotifier("hook", url, http).send(event_of(EventType.STARTED))
    assert caught.value.permanent is False
    assert SECRET_PATH not in str(caught.value)
    assert SECRET_QUERY not in str(caught.value)


@pytest.mark.parametrize(
    "reply",
    [Response(500, b"oops"), Response(404, b"unknown hook"), Response(302, b"", (("Location", "/elsewhere"),))],
    ids=["500", "404", "302"],
)
async def test_webhook_error_never_names_the_url_path_or_query(
    receiver: Receiver, http: httpx.AsyncClient, reply: Response
) -> None:
    receiver.replies.append(reply)
    url = secret_url(receiver)
    with pytest.raises(DeliveryError) as caught:
        await WebhookNotifier("hook", url, http).send(event_of(EventType.STARTED))
    assert receiver.requests[0].target == SECRET_PATH + "?" + SECRET_QUERY  # the secret URL was used...
    for part in (SECRET_PATH, SECRET_QUERY, "ZXhhbXBsZS1zZWNyZXQtcGF0aA", "q-secret-6f1c2a"):
        assert part not in str(caught.value)  # ...but is never shown
    assert "hook (http://127.0.0.1:" in str(caught.value)


# -- slack -----------------------------------------------------------------------------------------------------


# Slack mrkdwn in every form a campaign name, status or summary could carry it, a mention included.
MARKUP_NAME = "*VIP* _renewal_ ~old~ `x` <!channel>"
MARKUP_TEXT = "> quoted\n*bold* _it_ ~gone~ `code` ```block``` <https://evil.test|click> <!here> & <@U123>"
LONG_NAME = "東京キャンペーン " * 30  # 270 characters: too long for a header block


def markup_event(type_: EventType, name: str = MARKUP_NAME) -> Event:
    """An event whose name, status, summary and suggestion (everything that comes from the API) carry mrkdwn."""
    if type_ not in TRANSITIONS:
        return event_of(type_)
    before, after = TRANSITIONS[type_]
    if type_ is EventType.CHANGED:
        after = "`odd`*status*"
    current = snapshot(after, name=name, summary=MARKUP_TEXT, suggestion="_" + MARKUP_TEXT + "_")
    previous = snapshot(before, name=name, progress=40) if before is not None else None
    return make_event(type_, NOW, current, previous, **EXTRAS.get(type_, {}))


@pytest.mark.parametrize("name", ["Spring renewal reminders", MARKUP_NAME, LONG_NAME], ids=["plain", "markup", "long"])
@pytest.mark.parametrize("type_", list(EventType), ids=[t.name for t in EventType])
def test_slack_payload_has_text_and_blocks_that_slack_sdk_validates(type_: EventType, name: str) -> None:
    payload = message(markup_event(type_, name))
    assert set(payload) == {"text", "mrkdwn", "blocks"}
    assert isinstance(payload["text"], str)
    assert payload["text"]
    assert payload["blocks"]
    for raw in payload["blocks"]:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()
        assert block.to_dict() == raw  # slack_sdk kept every field: nothing unknown to Slack was sent


def _block_texts(payload: dict[str, Any]) -> str:
    return json.dumps(payload["blocks"], ensure_ascii=False)


def test_slack_finished_includes_summary_and_suggestion() -> None:
    texts = _block_texts(message(event_of(EventType.FINISHED)))
    assert SUMMARY in texts
    assert SUGGESTION in texts


@pytest.mark.parametrize(
    "type_", [t for t in EventType if t not in TERMINAL and t is not EventType.TEST], ids=lambda t: t.name
)
def test_slack_non_final_event_omits_summary_and_suggestion(type_: EventType) -> None:
    texts = _block_texts(message(event_of(type_)))
    assert SUMMARY not in texts
    assert SUGGESTION not in texts


def test_slack_finished_and_failed_have_different_emoji() -> None:
    finished = message(event_of(EventType.FINISHED))
    failed = message(event_of(EventType.FAILED))
    finished_emoji = describe(event_of(EventType.FINISHED))[1]
    failed_emoji = describe(event_of(EventType.FAILED))[1]
    assert finished_emoji != failed_emoji
    assert finished["text"].startswith(finished_emoji)
    assert failed["text"].startswith(failed_emoji)
    assert failed_emoji not in json.dumps(finished)


def text_objects(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every text object in the blocks: header and section texts, section fields, context elements."""
    found = []
    for block in payload["blocks"]:
        found += [block["text"]] if "text" in block else []
        found += block.get("fields", []) + block.get("elements", [])
    return found


@pytest.mark.parametrize("type_", list(TRANSITIONS), ids=lambda t: t.name)
def test_slack_puts_text_from_the_api_only_in_plain_text_objects(type_: EventType) -> None:
    """Slack shows plain_text as it is: a name, status or summary can never become formatting, a quote or a mention."""
    payload = message(markup_event(type_))
    mrkdwn = " ".join(t["text"] for t in text_objects(payload) if t["type"] == "mrkdwn")
    plain = " ".join(t["text"] for t in text_objects(payload) if t["type"] == "plain_text")
    for api_text in (
        MARKUP_NAME,
        MARKUP_TEXT,
        "`odd`*status*",
        "*VIP*",
        "<!channel>",
        "<!here>",
        "<@U123>",
        "> quoted",
    ):
        assert api_text not in mrkdwn
    assert MARKUP_NAME in plain
    assert all(t.get("emoji") is False for t in text_objects(payload)[1:] if t["type"] == "plain_text")


def test_slack_headline_is_a_header_block_showing_the_name_verbatim() -> None:
    payload = message(markup_event(EventType.FINISHED))
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": f"✅ Campaign “{MARKUP_NAME}” (task {TASK}) finished",
            "emoji": False,
        },
    }


def test_slack_shows_an_emoji_shortcode_in_a_name_as_written() -> None:
    """Our symbols are Unicode, so no block turns shortcodes on: a campaign named ":rotating_light:" stays text."""
    payload = message(event_of(EventType.FAILED, name=":rotating_light: VIP"))
    plain = [b["text"] for b in payload["blocks"] if b.get("text", {}).get("type") == "plain_text"]
    assert plain[0]["text"].startswith("❌ Campaign “:rotating_light: VIP”")
    assert not any(text.get("emoji") for text in plain)


def test_slack_headline_too_long_for_a_header_is_a_plain_text_section() -> None:
    first = message(markup_event(EventType.FAILED, LONG_NAME))["blocks"][0]
    assert first["type"] == "section"
    assert first["text"]["type"] == "plain_text"
    assert LONG_NAME in first["text"]["text"]


def test_slack_summary_and_suggestion_keep_their_text_verbatim() -> None:
    plain = [t["text"] for t in text_objects(message(markup_event(EventType.FINISHED))) if t["type"] == "plain_text"]
    assert MARKUP_TEXT in plain
    assert "_" + MARKUP_TEXT + "_" in plain


def test_slack_fallback_text_turns_no_name_into_formatting_or_a_mention() -> None:
    """The top-level `text` (push notifications, screen readers) is sent with mrkdwn off and <, >, & escaped."""
    payload = message(markup_event(EventType.FINISHED))
    assert payload["mrkdwn"] is False
    assert "<!channel>" not in payload["text"]
    assert "*VIP* _renewal_ ~old~ `x` &lt;!channel&gt;" in payload["text"]


async def test_slack_posts_the_message_as_json(receiver: Receiver, http: httpx.AsyncClient) -> None:
    event = event_of(EventType.FAILED)
    await SlackNotifier("team", receiver.url.removesuffix("/hook") + SLACK_PATH, http).send(event)
    (request,) = receiver.requests
    assert request.path == SLACK_PATH
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == message(event)


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [
        (Response(404, b"no_service", (("Content-Type", "text/plain"),)), True),
        (Response(400, b"invalid_payload", (("Content-Type", "text/plain"),)), True),
        (Response(500, b"rollup_error", (("Content-Type", "text/plain"),)), False),
    ],
    ids=["404", "400", "500"],
)
async def test_slack_error_never_names_the_url(
    receiver: Receiver, http: httpx.AsyncClient, reply: Response, permanent: bool
) -> None:
    receiver.replies.append(reply)
    url = receiver.url.removesuffix("/hook") + SLACK_PATH
    with pytest.raises(DeliveryError) as caught:
        await SlackNotifier("team", url, http).send(event_of(EventType.FAILED))
    assert caught.value.permanent is permanent
    for part in (url, SLACK_PATH, "XXXXslacksecretXXXX", "/services/"):
        assert part not in str(caught.value)
    assert "team (slack)" in str(caught.value)


async def test_slack_connection_refused_is_transient_and_names_no_url(http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}{SLACK_PATH}"
    with pytest.raises(DeliveryError) as caught:
        await SlackNotifier("team", url, http).send(event_of(EventType.FAILED))
    assert caught.value.permanent is False
    assert "XXXXslacksecretXXXX" not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


# -- the API's own failures ------------------------------------------------------------------------------------


def api_unreachable(cause: str) -> Event:
    """A `voicefox.watcher.api_unreachable` event as the daemon records it."""
    data = {"apiBaseUrl": "https://openapi.voicefox.ai", "unreachableForSeconds": 300, "cause": cause}
    return Event(id="api-1", type=EventType.API_UNREACHABLE.value, time=NOW, subject="api", data=data)


async def test_a_refused_token_is_announced_as_refused_with_the_key_to_check() -> None:
    event = api_unreachable("authentication")
    expected = "VoiceFox API refused the token (check api.token): no task can be watched for 5 min"
    with structlog.testing.capture_logs() as logs:
        await LogNotifier("audit").send(event)
    assert describe(event)[2] == expected
    assert logs[0]["message"] == expected
    assert expected in message(event)["text"]
    assert "unreachable" not in _block_texts(message(event)).replace(event.type, "")


def test_an_outage_is_still_announced_as_unreachable() -> None:
    headline = describe(api_unreachable("unreachable or failing"))[2]
    assert headline == "VoiceFox API unreachable for 5 min: no task can be watched"


# -- event filters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "event_type", "wanted"),
    [
        (["*"], "voicefox.task.finished", True),
        (["*"], "voicefox.watcher.test", True),
        (["voicefox.task.*"], "voicefox.task.stalled", True),
        (["voicefox.task.*"], "voicefox.watcher.test", False),
        (["voicefox.task.f*"], "voicefox.task.finished", True),
        (["voicefox.task.f*"], "voicefox.task.failed", True),
        (["voicefox.task.f*"], "voicefox.task.stopped", False),
        (["voicefox.task.finished"], "voicefox.task.finished", True),
        (["voicefox.task.finished"], "voicefox.task.finished.extra", False),
        (["*", "!voicefox.task.progressed"], "voicefox.task.progressed", False),
        (["*", "!voicefox.task.progressed"], "voicefox.task.started", True),
        (["*", "!*.stalled", "!*.missing"], "voicefox.task.missing", False),
        (["!voicefox.task.progressed", "*"], "voicefox.task.progressed", False),  # order does not matter
        (["!voicefox.task.progressed"], "voicefox.task.started", True),  # exclusions alone: everything but them
        (["!voicefox.task.progressed"], "voicefox.task.progressed", False),
        ([], "voicefox.task.finished", False),
        (["VOICEFOX.TASK.*"], "voicefox.task.finished", False),  # case-sensitive
    ],
)
def test_event_filter_globs_and_exclusions(patterns: list[str], event_type: str, wanted: bool) -> None:
    assert EventFilter(patterns)(event_type) is wanted


@pytest.mark.parametrize(
    ("kind", "unwanted"),
    [("slack", {EventType.OBSERVED, EventType.PROGRESSED}), ("webhook", set()), ("log", set())],
)
def test_default_filter_per_kind(kind: str, unwanted: set[EventType]) -> None:
    """Chat skips first sightings and progress milestones; webhook and log get everything."""
    wants = EventFilter(DEFAULT_EVENTS[kind])
    assert {t for t in EventType if not wants(t.value)} == unwanted


async def test_notifiers_use_their_kind_default_unless_events_are_configured(http: httpx.AsyncClient) -> None:
    slack = SlackNotifier("s", "http://127.0.0.1:9/x", http)
    webhook = WebhookNotifier("w", "http://127.0.0.1:9/x", http)
    log = LogNotifier("l")
    only_finished = WebhookNotifier("f", "http://127.0.0.1:9/x", http, events=["voicefox.task.finished"])
    assert not slack.wants(EventType.OBSERVED.value)
    assert not slack.wants(EventType.PROGRESSED.value)
    assert slack.wants(EventType.FINISHED.value)
    assert webhook.wants(EventType.OBSERVED.value)
    assert log.wants(EventType.PROGRESSED.value)
    assert only_finished.wants(EventType.FINISHED.value)
    assert not only_finished.wants(EventType.FAILED.value)


# -- log -------------------------------------------------------------------------------------------------------


async def test_log_notifier_emits_one_task_notified_line_per_event() -> None:
    events = [event_of(EventType.STARTED), event_of(EventType.FINISHED), event_of(EventType.FAILED)]
    notifier = LogNotifier("audit")
    with structlog.testing.capture_logs() as logs:
        for event in events:
            await notifier.send(event)
    assert [line["event"] for line in logs] == ["task.notified"] * 3
    assert [line["event_id"] for line in logs] == [e.id for e in events]
    assert [line["type"] for line in logs] == [e.type for e in events]
    assert [line["log_level"] for line in logs] == ["info", "info", "warning"]
    assert all(line["notifier"] == "audit" and line["task_id"] == str(TASK) for line in logs)


# -- secrets from a real-looking API body reach no channel ------------------------------------------------------


async def test_secrets_of_a_full_api_body_reach_no_notification(receiver: Receiver, http: httpx.AsyncClient) -> None:
    """websocketToken, websocketUrl, phone numbers and the creator's email never leave the parser."""
    body = task_body(TASK, "Spring renewal reminders", status="done", progress=100, summary=SUMMARY)
    secrets = [
        body["assistant"]["websocketToken"],
        body["assistant"]["websocketUrl"],
        "wsurl-secret",
        body["assistant"]["creator"]["email"],
        *(str(n) for n in body["option"]["numbers"]),
    ]
    current = parse_task_body(json.dumps(body, ensure_ascii=False), TASK)
    previous = parse_task_body(json.dumps(body | {"status": "running", "progress": 90}), TASK)
    event = make_event(EventType.FINISHED, NOW, current, previous)

    await WebhookNotifier("hook", receiver.url, http, secret=SECRET).send(event)
    await SlackNotifier("team", receiver.url, http).send(event)
    with structlog.testing.capture_logs() as logs:
        await LogNotifier("audit").send(event)

    sent = [r.body.decode() + json.dumps(r.headers) for r in receiver.requests]
    assert len(sent) == 2
    assert SUMMARY in sent[0]  # the payloads did carry the task
    everything = "\n".join([*sent, repr(logs), json.dumps(event.to_dict())])
    for secret in secrets:
        assert secret not in everything


async def test_webhook_errors_never_show_user_and_password_of_the_url(http: httpx.AsyncClient) -> None:
    url = f"http://alice:hunter2pass@127.0.0.1:{closed_port()}/hook"
    with pytest.raises(DeliveryError) as info:
        await WebhookNotifier("hook", url, http).send(event_of(EventType.FINISHED))
    assert "hunter2pass" not in str(info.value)
    assert "alice" not in str(info.value)


# -- what a stall rested on, and first sight ---------------------------------------------------------------------


def test_a_stall_with_windows_not_placed_says_so_and_names_the_key_that_fixes_it() -> None:
    windows = {"zone": "unknown", "zoneSource": "unknown", "placed": False, "doubted": False, "fix": "watch.timezone"}
    stalled = make_event(
        EventType.STALLED, NOW, snapshot("running"), snapshot("running"), stalledForSeconds=900, windows=windows
    )
    msg = build(stalled)
    assert msg.headline.endswith("is stalled: no progress for 15 min")  # the headline stays short; the reason is told:
    (note,) = [d for d in msg.details if d.label == "Calling windows"]
    assert "time zone is unknown" in note.value
    assert "Set watch.timezone" in note.value
    assert "watch.timezone" in _block_texts(message(stalled))
    doubted = make_event(
        EventType.STALLED,
        NOW,
        snapshot("running"),
        snapshot("running"),
        stalledForSeconds=900,
        windows={**windows, "placed": True, "doubted": True, "zone": "Asia/Tokyo"},
    )
    assert "seen calling outside them" in build(doubted).details[-1].value


def test_a_task_first_seen_failed_is_announced_as_failed_already_so() -> None:
    event = make_event(EventType.FAILED, NOW, snapshot("stop.abnormal"), None, firstSight=True)
    assert describe(event)[2] == (
        "Campaign “Spring renewal reminders” (task 1001) stopped abnormally (already so when the watcher first saw it)"
    )
    assert EventFilter(DEFAULT_EVENTS["slack"])(event.type)  # chat hears of it, unlike `observed`


def test_slack_cuts_long_text_by_what_slack_counts_so_emoji_cannot_overflow_a_block() -> None:
    """Slack counts UTF-16 units: a summary of emoji (two units each) is cut to fit, not sent too long."""
    event = make_event(EventType.FINISHED, NOW, snapshot("done", summary="🎉" * 3000), snapshot("running"))
    payload = message(event)
    texts = [b["text"]["text"] for b in payload["blocks"] if b.get("text", {}).get("type") == "plain_text"]
    assert any(t.startswith("🎉") for t in texts)
    assert all(len(t.encode("utf-16-le")) // 2 <= 3000 for t in texts)
    Block.parse_all(payload["blocks"])


async def test_a_receiver_echoing_the_url_credential_in_its_error_has_it_hidden(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    """A proxy or a platform that quotes the request's URL back must not carry its token into logs and the outbox."""
    token = "tok-3f9c2e71a8b4d605"
    url = f"{receiver.url.removesuffix('/hook')}/hooks/{token}-{token}?access_token={token}&sig=SIGVALUE123"
    receiver.replies.append(Response(400, f"no such hook: {url} (sig=SIGVALUE123, access_token={token})".encode()))
    with pytest.raises(DeliveryError) as caught:
        await WebhookNotifier("hook", url, http).send(event_of(EventType.FAILED))
    assert token not in str(caught.value)
    assert "SIGVALUE123" not in str(caught.value)
    assert "no such hook" in str(caught.value)  # the rest of what it said stays
