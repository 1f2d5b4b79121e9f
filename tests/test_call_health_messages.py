"""How call health reads to people (issue 14): a collapsed answer rate and its end, a stall the call log showed,
and the call figures any task event may carry, in every language; odd data never costs an alert."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from watcher.detect import make_event
from watcher.i18n import translator
from watcher.model import PROBLEMS, RESOLVES, Event, EventType, TaskSnapshot
from watcher.notify import slack
from watcher.notify.message import AnswerRateView, CallsView, EventView, Fact, Severity, build, build_digest
from watcher.notify.templates import Templates

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 18:00 in Tokyo
RUNNING = TaskSnapshot(id=1001, status="running", name="春の更新", progress=50, total=1200, collection_rate=33)
UNNAMED = TaskSnapshot(id=1001, status="running", progress=50, total=1200, collection_rate=33)
DONE = TaskSnapshot(id=1001, status="done", name="春の更新", progress=100, total=1200, collection_rate=33)

DROPPED = {"since": "2026-11-23T08:45:00+00:00", "before": 0.4128, "after": 0.03, "calls": 100, "baselineCalls": 1250}
RECOVERED = {
    "since": "2026-11-23T07:45:00+00:00",
    "until": "2026-11-23T09:00:00+00:00",
    "before": 0.4128,
    "after": 0.03,
    "now": 0.38,
    "calls": 100,
    "lastedSeconds": 4500,
}
RESOLVED = {"type": EventType.ANSWER_RATE_DROPPED.value, "since": RECOVERED["since"], "lastedSeconds": 4500}
CALLS = {
    "since": "2026-11-23T08:00:00+00:00",
    "total": 1200,
    "answered": 812,
    "lastHour": {"calls": 312, "answered": 128},
    "answerRate": 0.41,
    "lastCallAt": "2026-11-23T08:59:40+00:00",
}
BY_CALLS: dict[str, Any] = {"evidence": "calllog", "lastCallAt": "2026-11-23T08:35:00+00:00", "silentForSeconds": 1500}


def event(type_: EventType, task: TaskSnapshot = RUNNING, **data: Any) -> Event:
    return make_event(type_, NOW, task, RUNNING, **data)


def test_a_collapse_is_a_problem_its_recovery_ends() -> None:
    assert EventType.ANSWER_RATE_DROPPED in PROBLEMS
    assert RESOLVES[EventType.ANSWER_RATE_RECOVERED] == {EventType.ANSWER_RATE_DROPPED}
    assert build(event(EventType.ANSWER_RATE_DROPPED, answerRate=DROPPED)).severity is Severity.DANGER
    assert build(event(EventType.ANSWER_RATE_RECOVERED, answerRate=RECOVERED)).severity is Severity.GOOD


HEADLINES: list[tuple[str, Event, dict[str, str]]] = [
    (
        "dropped",
        event(EventType.ANSWER_RATE_DROPPED, answerRate=DROPPED),
        {
            "en": "Campaign “春の更新” (task 1001): answer rate fell from 41% to 3%",
            "ja": "アウトバウンドタスク「春の更新」（ID 1001） の応答率が低下しました: 41% → 3%",
            "zh-Hans": "外呼任务“春の更新”（ID 1001）接通率骤降：41% → 3%",
            "zh-Hant": "外呼任務「春の更新」（ID 1001）接通率驟降：41% → 3%",
        },
    ),
    (
        "dropped, unnamed, below one percent",
        event(EventType.ANSWER_RATE_DROPPED, UNNAMED, answerRate=DROPPED | {"before": 0.08, "after": 0.004}),
        {
            "en": "Task 1001: answer rate fell from 8% to 0.4%",
            "ja": "タスク 1001 の応答率が低下しました: 8% → 0.4%",
            "zh-Hans": "任务 1001 接通率骤降：8% → 0.4%",
            "zh-Hant": "任務 1001 接通率驟降：8% → 0.4%",
        },
    ),
    (
        "recovered",
        event(EventType.ANSWER_RATE_RECOVERED, answerRate=RECOVERED, resolves=RESOLVED),
        {
            "en": "Campaign “春の更新” (task 1001): answer rate is back to 38% after 75 min",
            "ja": "アウトバウンドタスク「春の更新」（ID 1001） の応答率が 38% に回復しました（低下 75 分）",
            "zh-Hans": "外呼任务“春の更新”（ID 1001）接通率已恢复至 38%（此前偏低 75分钟）",
            "zh-Hant": "外呼任務「春の更新」（ID 1001）接通率已恢復至 38%（此前偏低 75 分鐘）",
        },
    ),
    (
        "recovered, unnamed, its duration only in answerRate",
        event(EventType.ANSWER_RATE_RECOVERED, UNNAMED, answerRate=RECOVERED),
        {
            "en": "Task 1001: answer rate is back to 38% after 75 min",
            "ja": "タスク 1001 の応答率が 38% に回復しました（低下 75 分）",
            "zh-Hans": "任务 1001 接通率已恢复至 38%（此前偏低 75分钟）",
            "zh-Hant": "任務 1001 接通率已恢復至 38%（此前偏低 75 分鐘）",
        },
    ),
    (
        "recovered, not saying for how long",
        event(EventType.ANSWER_RATE_RECOVERED, UNNAMED, answerRate={"now": 0.38}),
        {
            "en": "Task 1001: answer rate is back to 38%",
            "ja": "タスク 1001 の応答率が 38% に回復しました",
            "zh-Hans": "任务 1001 接通率已恢复至 38%",
            "zh-Hant": "任務 1001 接通率已恢復至 38%",
        },
    ),
    (
        "stalled, no call started",
        event(EventType.STALLED, stalledForSeconds=1500, **BY_CALLS),
        {
            "en": "Campaign “春の更新” (task 1001) is stalled: no call started for 25 min",
            "ja": "アウトバウンドタスク「春の更新」（ID 1001） が停滞しています: 25 分間発信がありません",
            "zh-Hans": "外呼任务“春の更新”（ID 1001）停滞：25分钟未发起外呼",
            "zh-Hant": "外呼任務「春の更新」（ID 1001）停滯：25 分鐘未發起外呼",
        },
    ),
    (
        "stalled, no call started, unnamed",
        event(EventType.STALLED, UNNAMED, stalledForSeconds=1500, **BY_CALLS),
        {
            "en": "Task 1001 is stalled: no call started for 25 min",
            "ja": "タスク 1001 が停滞しています: 25 分間発信がありません",
            "zh-Hans": "任务 1001 停滞：25分钟未发起外呼",
            "zh-Hant": "任務 1001 停滯：25 分鐘未發起外呼",
        },
    ),
    (
        "stalled, progress flat",
        event(EventType.STALLED, stalledForSeconds=1500, evidence="progress"),
        {
            "en": "Campaign “春の更新” (task 1001) is stalled: no progress for 25 min",
            "ja": "アウトバウンドタスク「春の更新」（ID 1001） が停滞しています: 25 分間進捗がありません",
            "zh-Hans": "外呼任务“春の更新”（ID 1001）停滞：25分钟无进展",
            "zh-Hant": "外呼任務「春の更新」（ID 1001）停滯：25 分鐘無進展",
        },
    ),
    (
        "stalled, of an older version (no evidence)",
        event(EventType.STALLED, UNNAMED, stalledForSeconds=1500),
        {
            "en": "Task 1001 is stalled: no progress for 25 min",
            "ja": "タスク 1001 が停滞しています: 25 分間進捗がありません",
            "zh-Hans": "任务 1001 停滞：25分钟无进展",
            "zh-Hant": "任務 1001 停滯：25 分鐘無進展",
        },
    ),
]


@pytest.mark.parametrize("language", ["en", "ja", "zh-Hans", "zh-Hant"])
@pytest.mark.parametrize(("case", "event_", "expected"), HEADLINES, ids=[case for case, _, _ in HEADLINES])
def test_headlines_in_every_language(case: str, event_: Event, expected: dict[str, str], language: str) -> None:
    assert build(event_, language=language).headline == expected[language]


def facts(event_: Event, language: str = "en") -> dict[str, str]:
    return {fact.label: fact.value for fact in build(event_, language=language).facts}


def details(event_: Event, language: str = "en") -> dict[str, str]:
    return {fact.label: fact.value for fact in build(event_, language=language).details}


def test_a_collapse_shows_both_shares_with_the_calls_behind_them_and_what_to_check() -> None:
    dropped = event(EventType.ANSWER_RATE_DROPPED, answerRate=DROPPED)
    assert facts(dropped)["Usual answer rate"] == "41% of 1,250 earlier calls"
    assert facts(dropped)["Answer rate now"] == "3% of the latest 100 calls"
    assert "labelling the calling numbers as spam" in details(dropped)["What to check"]
    assert "caller IDs" in details(dropped)["What to check"]
    assert facts(dropped, "ja")["通常の応答率"] == "41%（それまでの 1,250 件の発信）"
    assert "迷惑電話" in details(dropped, "ja")["確認事項"]
    assert "骚扰电话" in details(dropped, "zh-Hans")["排查建议"]
    assert "騷擾電話" in details(dropped, "zh-Hant")["排查建議"]


def test_a_recovery_shows_the_usual_the_fallen_and_the_present_share_and_how_long_it_was_low() -> None:
    shown = facts(event(EventType.ANSWER_RATE_RECOVERED, answerRate=RECOVERED, resolves=RESOLVED))
    assert shown["Usual answer rate"] == "41%"
    assert shown["Answer rate during the drop"] == "3%"
    assert shown["Answer rate now"] == "38% of the latest 100 calls"
    assert shown["Low for"] == "75 min"
    # Without data.resolves, answerRate.lastedSeconds says it all the same.
    assert facts(event(EventType.ANSWER_RATE_RECOVERED, answerRate=RECOVERED))["Low for"] == "75 min"
    assert "What to check" not in details(event(EventType.ANSWER_RATE_RECOVERED, answerRate=RECOVERED))


def test_one_call_is_singular() -> None:
    dropped = event(EventType.ANSWER_RATE_DROPPED, answerRate=DROPPED | {"calls": 1, "baselineCalls": 1})
    assert facts(dropped)["Usual answer rate"] == "41% of 1 earlier call"
    assert facts(dropped)["Answer rate now"] == "3% of the latest 1 call"


def test_a_stall_the_call_log_showed_says_when_the_last_call_started() -> None:
    shown = facts(event(EventType.STALLED, stalledForSeconds=1500, timeZone="+09:00", **BY_CALLS))
    assert shown["No call started for"] == "25 min"
    assert shown["Last call started"] == "Nov 23, 2026, 5:35:00\u202fPM (UTC+09:00)"
    assert "No progress for" not in shown
    never = facts(event(EventType.STALLED, stalledForSeconds=1200, evidence="calllog", lastCallAt=None))
    assert never["Last call started"] == "none seen"
    assert facts(event(EventType.STALLED, stalledForSeconds=1200, evidence="calllog", lastCallAt=None), "ja")[
        "最後の発信"
    ] == ("確認されていません")


def test_a_stall_the_call_log_showed_without_stalled_for_reads_silent_for() -> None:
    silent = event(EventType.STALLED, evidence="calllog", silentForSeconds=900, lastCallAt=None)
    assert build(silent).headline == "Campaign “春の更新” (task 1001) is stalled: no call started for 15 min"


@pytest.mark.parametrize(
    "type_", [t for t in EventType if t.value.startswith("voicefox.task.") and t is not EventType.FINISHED]
)
def test_every_task_event_shows_the_last_hours_calls_when_it_carries_them(type_: EventType) -> None:
    assert facts(event(type_, calls=CALLS))["Calls in the last hour"] == "312 (41% answered)"
    assert "Calls in the last hour" not in facts(event(type_))


@pytest.mark.parametrize(
    "type_", [t for t in EventType if t.value.startswith("voicefox.task.") and t is not EventType.FINISHED]
)
def test_without_call_figures_a_task_event_reads_exactly_as_before(type_: EventType) -> None:
    with_calls, without = build(event(type_, calls=CALLS)), build(event(type_))
    assert [f for f in with_calls.facts if f.label != "Calls in the last hour"] == list(without.facts)
    assert (with_calls.headline, with_calls.details) == (without.headline, without.details)


@pytest.mark.parametrize(
    ("language", "calls", "since"),
    [
        ("en", "1,200, 812 answered (68%)", "Nov 23, 2026, 5:00:00\u202fPM (UTC+09:00)"),
        ("ja", "1,200 件、うち応答 812 件（68%）", "2026/11/23 17:00:00 (UTC+09:00)"),
        ("zh-Hans", "1,200 次，接通 812 次（68%）", "2026年11月23日 17:00:00 (UTC+09:00)"),
        ("zh-Hant", "1,200 次，接通 812 次（68%）", "2026年11月23日 下午5:00:00 (UTC+09:00)"),
    ],
)
def test_a_finished_campaign_says_how_many_calls_the_watcher_counted_and_how_many_were_answered(
    language: str, calls: str, since: str
) -> None:
    finished = event(EventType.FINISHED, DONE, calls=CALLS, timeZone="+09:00")
    shown = list(build(finished, language=language).facts)
    t = translator(language)
    assert Fact(t.gettext("Calls"), calls) in shown
    assert Fact(t.gettext("Counted since"), since) in shown
    assert t.gettext("Calls in the last hour") not in {f.label for f in shown}


@pytest.mark.parametrize(
    ("calls", "shown"),
    [
        ({"total": 1200, "answered": 2000}, "1,200"),  # more answered than made: the answered part is not believed
        ({"total": 1200}, "1,200"),
        ({"total": 0, "answered": 0}, "0"),
        ({"answered": 5}, None),  # no total: nothing to say
        ({"total": -3, "answered": 1}, None),
        ({"total": True, "answered": 1}, None),
    ],
)
def test_odd_totals_are_shown_as_far_as_they_are_believable(calls: dict[str, Any], shown: str | None) -> None:
    assert facts(event(EventType.FINISHED, DONE, calls=calls)).get("Calls") == shown


@pytest.mark.parametrize(
    ("hour", "shown"),
    [
        ({"calls": 0, "answered": 0}, "0"),
        ({"calls": 312}, "312"),
        ({"calls": 312, "answered": 400}, "312"),
        ({"calls": "312", "answered": 1}, None),
        ("312", None),
        (None, None),
    ],
)
def test_odd_last_hour_figures_are_shown_as_far_as_they_are_believable(hour: Any, shown: str | None) -> None:
    assert facts(event(EventType.PROGRESSED, calls={"lastHour": hour})).get("Calls in the last hour") == shown


@pytest.mark.parametrize(
    ("data", "view"),
    [
        (DROPPED, AnswerRateView(datetime(2026, 11, 23, 8, 45, tzinfo=UTC), None, 0.4128, 0.03, None, 100, 1250, None)),
        ({}, AnswerRateView(None, None, None, None, None, None, None, None)),
        (
            {
                "since": "2026-11-23T08:45:00",
                "before": 1.5,
                "after": -0.1,
                "now": True,
                "calls": -1,
                "lastedSeconds": -5,
            },
            AnswerRateView(None, None, None, None, None, None, None, 0),
        ),
        ({"before": 1, "after": 0, "now": float("nan")}, AnswerRateView(None, None, 1.0, 0.0, None, None, None, None)),
    ],
    ids=["as detection writes it", "empty", "odd values", "whole numbers and NaN"],
)
def test_the_answer_rate_view_reads_what_is_readable(data: dict[str, Any], view: AnswerRateView) -> None:
    assert AnswerRateView.of(data) == view


@pytest.mark.parametrize(
    ("data", "view"),
    [
        (
            CALLS,
            CallsView(
                datetime(2026, 11, 23, 8, tzinfo=UTC),
                1200,
                812,
                312,
                128,
                0.41,
                datetime(2026, 11, 23, 8, 59, 40, tzinfo=UTC),
            ),
        ),
        ({}, CallsView(None, None, None, None, None, None, None)),
        (
            {"total": 3, "answered": 4, "lastHour": {"calls": 1, "answered": 2}, "answerRate": 41, "lastCallAt": 5},
            CallsView(None, 3, None, 1, None, None, None),
        ),
    ],
    ids=["as detection writes it", "empty", "odd values"],
)
def test_the_calls_view_reads_what_is_readable(data: dict[str, Any], view: CallsView) -> None:
    assert CallsView.of(data) == view


@pytest.mark.parametrize(
    ("data", "evidence", "seconds"),
    [
        (BY_CALLS | {"stalledForSeconds": 1500}, "calllog", 1500),
        (BY_CALLS, "calllog", 1500),  # silentForSeconds stands in
        ({"evidence": "progress", "stalledForSeconds": 600}, "progress", 600),
        ({"stalledForSeconds": 600}, "progress", 600),  # an older row
        ({"evidence": "CALLLOG", "stalledForSeconds": 600}, "progress", 600),  # unknown evidence: as before
        ({"evidence": ["calllog"], "silentForSeconds": 600}, "progress", 0),
    ],
)
def test_a_stall_says_what_showed_it(data: dict[str, Any], evidence: str, seconds: int) -> None:
    stall = EventView.of(event(EventType.STALLED, **data)).stall
    assert stall is not None
    assert (stall.evidence, stall.seconds) == (evidence, seconds)


@pytest.mark.parametrize(
    "answer_rate", [None, "41%", [], {"before": "0.41", "after": None}, {"before": float("inf"), "since": 7}]
)
@pytest.mark.parametrize("type_", [EventType.ANSWER_RATE_DROPPED, EventType.ANSWER_RATE_RECOVERED])
def test_an_answer_rate_event_with_unreadable_figures_still_reads(type_: EventType, answer_rate: Any) -> None:
    data = {} if answer_rate is None else {"answerRate": answer_rate}
    for language in ("en", "ja", "zh-Hans", "zh-Hant"):
        message = build(event(type_, **data), language=language)
        assert "1001" in message.headline
    assert "–" in build(event(type_, **data)).headline  # unknown shares are a dash, not a made-up 0%


@pytest.mark.parametrize(
    ("language", "headline"),
    [
        ("en", "3 alerts from voicefox-watcher: 2 answer rates fell, 1 answer rate recovered"),
        ("ja", "voicefox-watcher からのアラート 3 件: 応答率低下 2 件、応答率回復 1 件"),
        ("zh-Hans", "voicefox-watcher 的 3 条告警：接通率骤降 2 个、接通率恢复 1 个"),
        ("zh-Hant", "voicefox-watcher 的 3 則告警：接通率驟降 2 個、接通率恢復 1 個"),
    ],
)
def test_a_digest_counts_collapses_and_recoveries(language: str, headline: str) -> None:
    other = TaskSnapshot(id=1002, status="running", name="夏")
    events = [
        event(EventType.ANSWER_RATE_DROPPED, answerRate=DROPPED),
        make_event(EventType.ANSWER_RATE_DROPPED, NOW, other, other, answerRate=DROPPED),
        event(EventType.ANSWER_RATE_RECOVERED, answerRate=RECOVERED, resolves=RESOLVED),
    ]
    digest = build_digest(events, language=language)
    assert digest.headline == headline
    assert digest.severity is Severity.DANGER
    assert [item.event_type for item in digest.items] == [e.type for e in events]


@pytest.mark.parametrize(
    ("share", "en", "ja"),
    [
        (0.4128, "41%", "41%"),
        (0.03, "3%", "3%"),
        (0.004, "0.4%", "0.4%"),
        (0.0, "0%", "0%"),
        (1, "100%", "100%"),
        (0.0996, "10%", "10%"),
        (None, "–", "–"),
        (1.2, "–", "–"),
        (float("nan"), "–", "–"),
        (True, "–", "–"),
    ],
)
def test_a_share_is_a_percentage_with_a_decimal_only_below_ten(share: Any, en: str, ja: str) -> None:
    assert translator("en").share(share) == en
    assert translator("ja").share(share) == ja


def test_slack_shows_every_fact_of_a_message_with_more_than_five() -> None:
    recovered = build(event(EventType.ANSWER_RATE_RECOVERED, answerRate=RECOVERED, resolves=RESOLVED, calls=CALLS))
    assert len(recovered.facts) > 5
    sections = [b for b in slack.render(recovered)["blocks"] if b["type"] == "section" and "fields" in b]
    assert all(len(s["fields"]) <= 10 for s in sections)  # Slack's limit per section
    values = [f["text"] for s in sections for f in s["fields"] if f["type"] == "plain_text"]
    assert values == [fact.value for fact in recovered.facts]


def test_templates_see_the_answer_rate_the_calls_and_what_showed_a_stall() -> None:
    title = (
        "{% if answer_rate %}{{ share(answer_rate.before) }}→{{ share(answer_rate.after) }} "
        "({{ answer_rate.calls }}/{{ answer_rate.baseline_calls }}){% endif %}"
        "{% if calls %} {{ calls.last_hour_calls }}/{{ calls.total }} {{ share(calls.answer_rate) }}{% endif %}"
        " [{{ stalled_by }}]"
    )
    templates = Templates.compile("team", title, None)
    assert templates is not None
    dropped = event(EventType.ANSWER_RATE_DROPPED, answerRate=DROPPED, calls=CALLS)
    assert templates.render(build(dropped), dropped).headline == "41%→3% (100/1250) 312/1200 41% []"
    stalled = event(EventType.STALLED, stalledForSeconds=1500, **BY_CALLS)
    assert templates.render(build(stalled), stalled).headline == "[calllog]"
