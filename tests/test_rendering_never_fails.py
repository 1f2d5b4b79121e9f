"""Whatever the API sends, every channel renders it: a rendering that raises would retry an alert until it is
dead-lettered, and lose it. Property tests over odd task data (lone surrogates, huge numbers, control characters,
empty and very long text) through every channel; and the safety nets when something goes wrong all the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from watcher.detect import make_event
from watcher.i18n import LANGUAGES, Translator
from watcher.model import Event, EventType, TaskSnapshot, parse_task_body
from watcher.notify import Context, apprise, dingtalk, email, feishu, slack, teams, wecom
from watcher.notify.message import build, build_digest
from watcher.notify.slack import SlackNotifierConfig
from watcher.notify.webhook import body_of, cloudevent

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
# Any character, lone surrogates included (JSON allows "\ud800"; hypothesis's own text() never makes one).
anything = st.text(alphabet=st.characters() | st.sampled_from(["\ud800", "\udfff", "\x00", "\u202e"]), max_size=300)


def render_everywhere(event: Event, language: str) -> None:
    """Every channel's rendering, down to the bytes each would send."""
    msg = build(event, language=language, task_url="https://console.example/tasks/{id}")
    json.dumps(slack.render(msg), ensure_ascii=False).encode()
    json.dumps(dingtalk.render(msg, at_mobiles=["13800001111"]), ensure_ascii=False).encode()
    json.dumps(wecom.render(msg, mention_userids=["zhangsan"]), ensure_ascii=False).encode()
    feishu.body(msg, secret="s" * 20, timestamp=1)
    teams.body(msg)
    email.compose(
        msg, subject_of=event.subject, sender="w@example.com", to=["o@example.com"], cc=[], now=NOW
    ).as_bytes()
    apprise.render(msg)[1].encode()
    assert (
        json.loads(body_of(cloudevent(event, language=language)))["id"] == event.id
    )  # (valid JSON, whatever it holds)
    # And as an item of a digest, beside an ordinary event.
    other = make_event(EventType.FINISHED, NOW, TaskSnapshot(id=8, status="done"), TaskSnapshot(id=8, status="running"))
    digest = build_digest([event, other], language=language, task_url="https://console.example/tasks/{id}")
    json.dumps(slack.render_digest(digest), ensure_ascii=False).encode()
    json.dumps(dingtalk.render_digest(digest, at_mobiles=["13800001111"]), ensure_ascii=False).encode()
    json.dumps(wecom.render_digest(digest, mention_userids=["zhangsan"]), ensure_ascii=False).encode()
    feishu.digest_body(digest, secret="s" * 20, timestamp=1)
    teams.digest_body(digest)
    email.compose_digest(
        digest, subjects=[event.subject, other.subject], sender="w@example.com", to=["o@example.com"], cc=[], now=NOW
    ).as_bytes()
    apprise.render_digest(digest)[1].encode()


@settings(max_examples=60, deadline=None)
@given(
    name=anything,
    status=anything | st.sampled_from(["running", "done", "stop.abnormal"]),
    summary=anything,
    progress=st.none() | st.integers(),
    total=st.none() | st.integers(),
    type_=st.sampled_from([t for t in EventType if t not in (EventType.API_UNREACHABLE, EventType.TEST)]),
    language=st.sampled_from(LANGUAGES),
)
def test_whatever_the_api_sends_every_channel_renders_it(
    name: str, status: str, summary: str, progress: int | None, total: int | None, type_: EventType, language: str
) -> None:
    body = {
        "id": 7,
        "status": status if status.strip() else "running",
        "name": name,
        "summary": summary,
        "suggestion": summary,
    }
    body |= {"progress": progress, "total": total, "collectionRate": progress}
    snapshot = parse_task_body(json.dumps(body), 7)  # as the watcher reads it
    event = make_event(type_, NOW, snapshot, snapshot, milestone=50, stalledForSeconds=900)
    render_everywhere(event, language)


# Any JSON value where a number, a time or a text is expected: what an older or later version may have stored.
odd = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | anything
    | st.sampled_from(["2026-11-23T08:00:00+00:00", "2026-11-23T08:00:00", "9999-12-31T23:59:59+14:00"])
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
event_types = st.sampled_from([t.value for t in EventType]) | anything


@settings(max_examples=80, deadline=None)
@given(
    type_=st.sampled_from(list(EventType)),
    resolves=odd | st.fixed_dictionaries({"type": event_types, "since": odd, "lastedSeconds": odd}),
    reminder=odd | st.fixed_dictionaries({"count": odd, "of": odd, "since": odd, "lastedSeconds": odd}),
    receiver=st.fixed_dictionaries(
        {},
        optional={
            key: odd
            for key in ("receiver", "kind", "since", "failingForSeconds", "failedForSeconds", "deadLetters", "pending")
        }
        | {"error": anything},
    ),
    subject=st.sampled_from(["1001", "notifier:ops", "notifier:", "api"]) | anything,
    language=st.sampled_from(LANGUAGES),
)
def test_whatever_a_lasting_problem_or_a_receiver_event_carries_every_channel_renders_it(
    type_: EventType, resolves: Any, reminder: Any, receiver: dict[str, Any], subject: str, language: str
) -> None:
    task = {"id": 1001, "status": "running", "name": "x", "progress": 5}
    data = {"task": task, "previous": {"status": "stop.abnormal"}, "resolves": resolves, "reminder": reminder}
    event = Event(id="e1", type=type_.value, time=NOW, subject=subject, data=data | receiver)
    render_everywhere(event, language)


def test_a_lone_surrogate_from_the_api_is_read_as_a_replacement_character() -> None:
    snapshot = parse_task_body('{"id": 7, "status": "running", "name": "A\\ud800B", "summary": "\\udfff"}', 7)
    assert snapshot.name == "A\ufffdB"
    assert snapshot.summary == "\ufffd"
    render_everywhere(make_event(EventType.FINISHED, NOW, snapshot, snapshot), "ja")


def test_a_number_too_large_to_be_true_is_read_as_absent() -> None:
    snapshot = parse_task_body(json.dumps({"id": 7, "status": "running", "total": 10**25, "progress": 10**19}), 7)
    assert (snapshot.total, snapshot.progress) == (None, None)
    assert Translator("ja").number(10**40) == str(10**40)  # and the formatter itself never raises


def test_a_translators_slip_gives_the_english_text_not_an_exception() -> None:
    class Slip(Translator):
        def gettext(self, message: str) -> str:
            return "タスク {ID} が完了 {0} {"  # a wrong placeholder, a positional one, a stray brace

    assert Slip("ja").say("Task {id} finished", id=1001) == "Task 1001 finished"


def event_of_a_stored_future(**data: Any) -> Event:
    """An event some later version stored, read back by this one: fields it does not know, values of other types."""
    return Event(id="e1", type="voicefox.task.unheard_of", time=NOW, subject="1001", data=data)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"task": ["not", "an", "object"]},
        {"task": {"name": 5, "progress": "lots", "total": None}, "previous": "running"},
        {"task": {"name": "x"}, "windows": "unplaced", "timeZone": "X" * 5000},
    ],
)
def test_an_event_of_any_shape_is_rendered(data: dict[str, Any]) -> None:
    for language in LANGUAGES:
        render_everywhere(event_of_a_stored_future(**data), language)


@pytest.mark.anyio
async def test_a_message_that_cannot_be_built_is_sent_plain_rather_than_lost() -> None:
    """The safety net under `build`: whatever goes wrong there, the notifier still gets a message to send."""
    config = SlackNotifierConfig.model_validate(
        {"kind": "slack", "name": "team", "url": "https://hooks.slack.example/services/T/B/x"}
    )
    broken = Event(id="e1", type=EventType.FAILED.value, time=None, subject="1001", data={})  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        messages = Context(http, language="ja").messages_for(config)
        with capture_logs() as logs:
            msg = messages(broken)
    assert msg.headline == "voicefox.task.failed for 1001"
    assert msg.severity.value == "danger"
    assert [e["event"] for e in logs] == ["notify.message_failed"]
    json.dumps(slack.render(msg)).encode()


def test_the_fallback_message_is_built_from_an_ordinary_snapshot_too() -> None:
    snapshot = TaskSnapshot(id=1, status="running")
    event = make_event(EventType.STALLED, NOW, snapshot, snapshot)
    from watcher.notify.message import fallback

    assert fallback(event).footer.startswith("1 · voicefox.task.stalled")


@settings(max_examples=80, deadline=None)
@given(
    type_=st.sampled_from(list(EventType)),
    answer_rate=odd
    | st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("since", "until", "before", "after", "now", "calls", "baselineCalls", "lastedSeconds"),
            odd | st.floats(min_value=0, max_value=1),
        ),
    ),
    calls=odd
    | st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(("since", "total", "answered", "answerRate", "lastCallAt"), odd)
        | {"lastHour": odd | st.fixed_dictionaries({}, optional=dict.fromkeys(("calls", "answered"), odd))},
    ),
    stall=st.fixed_dictionaries(
        {},
        optional={"evidence": odd | st.sampled_from(["calllog", "progress"])}
        | dict.fromkeys(("lastCallAt", "silentForSeconds", "stalledForSeconds"), odd),
    ),
    zone=st.sampled_from(["+14:00", "-12:00", "Asia/Tokyo", ""]),
    language=st.sampled_from(LANGUAGES),
)
def test_whatever_call_health_data_an_event_carries_every_channel_renders_it(
    type_: EventType, answer_rate: Any, calls: Any, stall: dict[str, Any], zone: str, language: str
) -> None:
    task = {"id": 1001, "status": "running", "name": "x", "progress": 5}
    data = {"task": task, "answerRate": answer_rate, "calls": calls, "timeZone": zone} | stall
    render_everywhere(Event(id="e1", type=type_.value, time=NOW, subject="1001", data=data), language)
