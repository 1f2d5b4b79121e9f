"""Languages: complete catalogues, and every event type rendered in every language on every channel, as snapshot files
a reviewer can read (tests/snapshots/). `UPDATE_SNAPSHOTS=1 pytest tests/test_i18n.py` rewrites them after a change
meant to alter what people read; review the diff."""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from slack_sdk.models.blocks import Block

from watcher.detect import make_event
from watcher.i18n import KEYWORDS, LANGUAGES, LOCALES, Translator, catalogue_path, translator
from watcher.model import Event, EventType, TaskSnapshot
from watcher.notify import apprise, dingtalk, email, feishu, teams, wecom
from watcher.notify.message import Message, build
from watcher.notify.slack import render
from watcher.notify.webhook import cloudevent

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 18:00 in Tokyo


MessageId = str | tuple[str, str]  # a plural message's id is its singular and its plural


def catalogue(language: str) -> dict[MessageId, Any]:
    with catalogue_path(language).open("rb") as f:
        return {message_id(m.id): m for m in read_po(f) if m.id}


def template_ids() -> set[MessageId]:
    with (LOCALES / "watcher.pot").open("rb") as f:
        return {message_id(m.id) for m in read_po(f) if m.id}


def message_id(raw: object) -> MessageId:
    """A catalogue entry's id as the code marks it: a string, or (singular, plural)."""
    if isinstance(raw, str):
        return raw
    assert isinstance(raw, tuple | list) and len(raw) == 2
    return str(raw[0]), str(raw[1])


def test_the_template_holds_every_message_the_code_marks() -> None:
    """A new message without `python -m watcher.i18n extract` fails here: translators would never see it."""
    package = Path(__file__).parent.parent / "watcher"
    marked = {
        message if isinstance(message, str) else (message[0], message[1])
        for _, _, message, _, _ in extract_from_dir(package, method_map=[("**.py", "python")], keywords=KEYWORDS)
    }
    assert marked == template_ids()


@pytest.mark.parametrize("language", LANGUAGES[1:])
def test_every_message_is_translated_with_the_same_placeholders(language: str) -> None:
    translated = catalogue(language)
    for message_id in sorted(template_ids(), key=str):
        assert message_id in translated, f"{language}: no translation of {message_id!r}"
        entry = translated[message_id]
        # A plural message has one translation per plural form of the language, each with the plural's placeholders.
        source = message_id if isinstance(message_id, str) else message_id[1]
        strings = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        assert strings and all(strings), f"{language}: {message_id!r} is untranslated"
        assert not entry.fuzzy, f"{language}: {message_id!r} is marked fuzzy"
        for translation in strings:
            assert fields(translation) == fields(source), (
                f"{language}: {message_id!r} -> {translation!r} changes the placeholders"
            )
            # And it formats as the code will format it (a stray brace or a positional field would raise there).
            translation.format(**dict.fromkeys(fields(source), "x"))


@pytest.mark.parametrize("language", LANGUAGES[1:])
def test_plural_messages_have_every_plural_form_of_the_language(language: str) -> None:
    with catalogue_path(language).open("rb") as f:
        catalog = read_po(f)
    plurals = [m for m in catalog if m.id and isinstance(m.id, tuple)]
    assert plurals
    for message in plurals:
        assert isinstance(message.string, tuple), f"{language}: {message.id!r}"
        assert len(message.string) == catalog.num_plurals, f"{language}: {message.id!r}"


def test_a_count_chooses_the_english_singular_or_plural_and_is_written_as_the_language_writes_numbers() -> None:
    assert translator("en").say_n("{count} test", "{count} tests", 1) == "1 test"
    assert translator("en").say_n("{count} test", "{count} tests", 12345) == "12,345 tests"
    assert translator("ja").say_n("{count} test", "{count} tests", 2) == "テスト 2 件"


def fields(text: str) -> list[str]:
    """The placeholders of a message as str.format reads them: every field name, positional and odd ones included."""
    return sorted(str(name) for _, name, _, _ in string.Formatter().parse(text) if name is not None)


def test_an_unknown_language_is_refused_with_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="ja, zh-Hans"):
        Translator("fr")


@pytest.mark.parametrize(
    ("language", "duration", "number"),
    [
        ("en", "2 hr, 5 min", "12,345"),
        ("ja", "2 時間 5 分", "12,345"),
        ("zh-Hans", "2小时5分钟", "12,345"),
        ("zh-Hant", "2 小時 5 分鐘", "12,345"),
    ],
)
def test_durations_and_numbers_as_each_language_writes_them(language: str, duration: str, number: str) -> None:
    t = translator(language)
    assert t.duration(2 * 3600 + 5 * 60) == duration
    assert t.number(12345) == number


# -- every event type, every language, every channel ---------------------------------------------------------------


def task(status: str, **fields: Any) -> TaskSnapshot:
    values: dict[str, Any] = {
        "name": "春の更新リマインド",
        "progress": 50,
        "total": 1200,
        "collection_rate": 33,
        "summary": "1,200 numbers dialled; 812 answered.",
        "suggestion": "Call the 388 unanswered numbers again.",
    } | fields
    return TaskSnapshot(id=1001, status=status, **values)


def resolved(kind: str, seconds: int) -> dict[str, Any]:
    """`data.resolves` of an event that ends a `kind` problem which lasted `seconds`."""
    return {"type": f"voicefox.task.{kind}", "since": "2026-11-23T07:00:00+00:00", "lastedSeconds": seconds}


def reminder(count: int, seconds: int) -> dict[str, Any]:
    """`data.reminder` of the `count`th reminder of a problem that began `seconds` ago."""
    return {"count": count, "of": "0b5e-origin", "since": "2026-11-23T07:00:00+00:00", "lastedSeconds": seconds}


def rule(collection_rate: int, name: str = "low collection") -> dict[str, Any]:
    """`data.rule` of a rule event: the rule (its name is user text, markup included) and the values it read."""
    values = {"progress": 50, "collectionRate": collection_rate}
    return {"name": name, "when": "progress >= 30 && collectionRate < 20", "description": "", "values": values}


def calls(last_hour: int = 312, answered: int = 128) -> dict[str, Any]:
    """`data.calls` of a task whose call log was read: 1,200 calls counted since 17:00 in Tokyo."""
    return {
        "since": "2026-11-23T08:00:00+00:00",
        "total": 1200,
        "answered": 812,
        "lastHour": {"calls": last_hour, "answered": answered},
        "answerRate": 0.41,
        "lastCallAt": "2026-11-23T08:59:40+00:00",
    }


def dropped() -> dict[str, Any]:
    """`data.answerRate` of a collapse: 41 % over 1,250 earlier calls, 3 % over the latest 100."""
    return {"since": "2026-11-23T08:45:00+00:00", "before": 0.4128, "after": 0.03, "calls": 100, "baselineCalls": 1250}


def recovered() -> dict[str, Any]:
    """`data.answerRate` of the end of that collapse, 75 minutes later."""
    return {
        "since": "2026-11-23T07:45:00+00:00",
        "until": "2026-11-23T09:00:00+00:00",
        "before": 0.4128,
        "after": 0.03,
        "now": 0.38,
        "calls": 100,
        "lastedSeconds": 4500,
    }


def zoned(event: Event) -> Event:
    return Event(event.id, event.type, event.time, event.subject, {**event.data, "timeZone": "+09:00"})


def events() -> list[tuple[str, Event]]:
    """One of each event type (and the variants people read differently), as the watcher records them."""
    running, stall_windows = task("running"), {"zone": "unknown", "zoneSource": "unknown", "placed": False}
    low = task("running", collection_rate=12)  # as a rule on the collection rate sees it
    cases: list[tuple[str, Event]] = [
        ("observed", make_event(EventType.OBSERVED, NOW, task("pending", progress=0), None)),
        ("started", make_event(EventType.STARTED, NOW, task("running", progress=0), task("pending"))),
        ("progressed", make_event(EventType.PROGRESSED, NOW, running, task("running", progress=40), milestone=50)),
        ("finished", make_event(EventType.FINISHED, NOW, task("done", progress=100), running)),
        ("stopped", make_event(EventType.STOPPED, NOW, task("stop.operate"), running)),
        ("timed_out", make_event(EventType.TIMED_OUT, NOW, task("stop.timeout"), running)),
        ("failed", make_event(EventType.FAILED, NOW, task("stop.abnormal"), running)),
        ("failed, first seen so", make_event(EventType.FAILED, NOW, task("stop.abnormal"), None, firstSight=True)),
        ("resumed", make_event(EventType.RESUMED, NOW, running, task("stop.operate"))),
        ("changed", make_event(EventType.CHANGED, NOW, task("paused.by.vendor"), running)),
        ("stalled", make_event(EventType.STALLED, NOW, running, running, stalledForSeconds=1500)),
        (
            "stalled, windows not placed",
            make_event(EventType.STALLED, NOW, running, running, stalledForSeconds=7500, windows=stall_windows),
        ),
        ("missing", make_event(EventType.MISSING, NOW, running, running)),
        ("unnamed task finished", make_event(EventType.FINISHED, NOW, task("done", name=""), running)),
        (
            "resumed after a failure",
            make_event(EventType.RESUMED, NOW, running, task("stop.abnormal"), resolves=resolved("failed", 5400)),
        ),
        ("unstalled", make_event(EventType.UNSTALLED, NOW, running, running, resolves=resolved("stalled", 2400))),
        ("unstalled, of an older version", make_event(EventType.UNSTALLED, NOW, task("running", name=""), running)),
        ("reappeared", make_event(EventType.REAPPEARED, NOW, running, running, resolves=resolved("missing", 1800))),
        ("rule matched", make_event(EventType.RULE_MATCHED, NOW, low, running, rule=rule(12))),
        (
            "rule matched, first seen so",
            make_event(EventType.RULE_MATCHED, NOW, low, None, rule=rule(12, "回収率 <20% *要確認*"), firstSight=True),
        ),
        (
            "rule resolved",
            make_event(
                EventType.RULE_RESOLVED, NOW, running, low, rule=rule(33), resolves=resolved("rule_matched", 3600)
            ),
        ),
        (
            "stalled, no call started",
            make_event(
                EventType.STALLED,
                NOW,
                running,
                running,
                stalledForSeconds=1500,
                evidence="calllog",
                lastCallAt="2026-11-23T08:35:00+00:00",
                silentForSeconds=1500,
                calls=calls(312, 0),
            ),
        ),
        (
            "stalled, no call seen at all",
            make_event(
                EventType.STALLED,
                NOW,
                task("running", name=""),
                running,
                stalledForSeconds=1200,
                evidence="calllog",
                lastCallAt=None,
                silentForSeconds=1200,
            ),
        ),
        (
            "progressed, calls counted",
            make_event(EventType.PROGRESSED, NOW, running, running, milestone=50, calls=calls()),
        ),
        (
            "finished, calls counted",
            make_event(EventType.FINISHED, NOW, task("done", progress=100), running, calls=calls()),
        ),
        (
            "answer rate dropped",
            make_event(EventType.ANSWER_RATE_DROPPED, NOW, running, running, answerRate=dropped(), calls=calls(300, 9)),
        ),
        (
            "answer rate dropped, unnamed, reminder 1",
            make_event(
                EventType.ANSWER_RATE_DROPPED,
                NOW,
                task("running", name=""),
                running,
                answerRate=dropped(),
                reminder=reminder(1, 3600),
            ),
        ),
        (
            "answer rate recovered",
            make_event(
                EventType.ANSWER_RATE_RECOVERED,
                NOW,
                running,
                running,
                answerRate=recovered(),
                resolves=resolved("answer_rate_dropped", 4500),
            ),
        ),
        (
            "answer rate recovered, not saying for how long",
            make_event(
                EventType.ANSWER_RATE_RECOVERED,
                NOW,
                task("running", name=""),
                running,
                answerRate={k: v for k, v in recovered().items() if k != "lastedSeconds"},
            ),
        ),
        (
            "failed, reminder 2",
            make_event(EventType.FAILED, NOW, task("stop.abnormal"), running, reminder=reminder(2, 7200)),
        ),
        (
            "stalled, reminder 1",
            make_event(EventType.STALLED, NOW, running, running, stalledForSeconds=3600, reminder=reminder(1, 3600)),
        ),
    ]
    api = "https://openapi.voicefox.ai"
    for name, type_, data in [
        (
            "api unreachable",
            EventType.API_UNREACHABLE,
            {"unreachableForSeconds": 600, "cause": "unreachable or failing"},
        ),
        ("token refused", EventType.API_UNREACHABLE, {"unreachableForSeconds": 300, "cause": "authentication"}),
        ("api recovered", EventType.API_RECOVERED, {"downForSeconds": 900, "cause": "unreachable or failing"}),
        ("token accepted again", EventType.API_RECOVERED, {"downForSeconds": 900, "cause": "authentication"}),
    ]:
        cases.append((name, Event(f"api-{name}", type_.value, NOW, "api", {"apiBaseUrl": api, **data})))
    since = "2026-11-23T08:00:00+00:00"
    receiver: dict[str, Any] = {"receiver": "oncall-dingtalk", "kind": "dingtalk", "since": since}
    failing = receiver | {"failingForSeconds": 1800, "deadLetters": 2, "pending": 14}
    failing["error"] = "oncall-dingtalk (dingtalk): DingTalk is busy (-1 '系统繁忙')"
    notifier_cases: list[tuple[str, EventType, dict[str, Any]]] = [
        ("notifier failing", EventType.RECEIVER_FAILING, failing),
        ("notifier failing, reminder 3", EventType.RECEIVER_FAILING, failing | {"reminder": reminder(3, 10800)}),
        ("notifier recovered", EventType.RECEIVER_RECOVERED, receiver | {"failedForSeconds": 2700}),
    ]
    for name, type_, data in notifier_cases:
        cases.append((name, Event(f"notifier-{name}", type_.value, NOW, "notifier:oncall-dingtalk", data)))
    cases.append(("test", Event("test-1", EventType.TEST.value, NOW, "test", {"message": "hello"})))
    return [(name, zoned(event)) for name, event in cases]


def test_the_cases_cover_every_event_type() -> None:
    assert {event.type for _, event in events()} == {t.value for t in EventType}


def as_text(message: Message) -> str:
    lines = [f"[{message.severity}] {message.headline}"]
    lines += [f"  {fact.label}: {fact.value}" for fact in message.facts]
    lines += [f"  {detail.label}:\n    {detail.value}" for detail in message.details]
    if message.link:
        lines.append(f"  {message.link_text}: {message.link}")
    lines.append(f"  — {message.footer}")
    return "\n".join(lines)


def as_email(message: Message) -> str:
    return f"Subject: {email.subject(message)}\n\n{email.text_body(message)}"


def as_apprise(message: Message) -> str:
    title, body = apprise.render(message)
    return f"title: {title}\ntype: {apprise.NOTIFY_TYPES[message.severity]}\n\n{body}"


RENDERINGS: dict[str, Callable[[Event, str], str]] = {
    "message.txt": lambda event, language: as_text(build(event, language=language, task_url=TASK_URL)),
    "slack.json": lambda event, language: json.dumps(
        render(build(event, language=language, task_url=TASK_URL)), ensure_ascii=False, indent=1
    ),
    # DingTalk and WeCom with their mentions configured: the snapshots show where they go (danger only).
    "dingtalk.json": lambda event, language: json.dumps(
        dingtalk.render(build(event, language=language, task_url=TASK_URL), at_mobiles=["13800001111"]),
        ensure_ascii=False,
        indent=1,
    ),
    "wecom.md": lambda event, language: wecom.render(
        build(event, language=language, task_url=TASK_URL), mention_userids=["zhangsan"]
    )["markdown"]["content"],
    "feishu.json": lambda event, language: json.dumps(
        feishu.render(build(event, language=language, task_url=TASK_URL)), ensure_ascii=False, indent=1
    ),
    "teams.json": lambda event, language: json.dumps(
        teams.card(build(event, language=language, task_url=TASK_URL)), ensure_ascii=False, indent=1
    ),
    "email.txt": lambda event, language: as_email(build(event, language=language, task_url=TASK_URL)),
    "email.html": lambda event, language: email.html_body(build(event, language=language, task_url=TASK_URL)),
    "apprise.txt": lambda event, language: as_apprise(build(event, language=language, task_url=TASK_URL)),
    "webhook.json": lambda event, language: json.dumps(
        {k: v for k, v in cloudevent(event, language=language).items() if k in ("type", "headline", "severity")},
        ensure_ascii=False,
    ),
}
TASK_URL = "https://console.voicefox.example/tasks/{id}"


@pytest.mark.parametrize("channel", sorted(RENDERINGS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_event_in_every_language_on_every_channel_matches_its_snapshot(language: str, channel: str) -> None:
    rendered = "\n\n".join(f"## {name}\n{RENDERINGS[channel](event, language)}" for name, event in events()) + "\n"
    path = SNAPSHOTS / language / channel.replace(".json", ".jsonl" if channel == "webhook.json" else ".json")
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == rendered, f"{path} differs: UPDATE_SNAPSHOTS=1 and review the diff"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_slack_message_in_every_language_is_valid_block_kit(language: str) -> None:
    for _, event in events():
        Block.parse_all(render(build(event, language=language, task_url=TASK_URL))["blocks"])


@pytest.mark.parametrize("language", LANGUAGES[1:])
def test_no_english_is_left_in_what_people_read(language: str) -> None:
    """Headlines, labels and the status words are in the language; only names, ids, keys and API text stay."""
    allowed = re.compile(
        r"voicefox-watcher|VoiceFox|API|api\.token|watch\.timezone|UTC|paused\.by\.vendor|ID|numbers|answered"
        r"|oncall-dingtalk|dingtalk"  # a notifier's name and kind are names
        r"|low collection"  # and so is a rule's
    )
    for name, event in events():
        message = build(event, language=language)
        texts = [message.headline] + [f.label for f in message.facts + message.details]
        texts += [f.value for f in message.facts]
        for text in texts:
            words = re.findall(r"[A-Za-z]{3,}", allowed.sub("", text))
            assert not words, f"{language} {name}: English left in {text!r}"
