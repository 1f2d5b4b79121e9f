"""Tolerant parsing of task-details bodies: what is accepted, what becomes absent, what is an API error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from watcher.detect import Rules, detect, detect_missing
from watcher.errors import TransientApiError, WatcherError
from watcher.model import TaskSnapshot, parse_task_body
from watcher.simulator import task_body

TASK = 1001


def body(**fields: Any) -> dict[str, Any]:
    """A realistic body (secrets included) for TASK, running at 42%."""
    doc = task_body(TASK, "November reminders", status="running", progress=42)
    doc.update(fields)
    return doc


def parse(doc: Any) -> TaskSnapshot:
    return parse_task_body(json.dumps(doc), TASK)


EXPECTED = TaskSnapshot(
    id=TASK,
    status="running",
    name="November reminders",
    progress=42,
    total=1200,
    collection_rate=0,
    summary="",
    suggestion="",
    updated_at="2026-11-23 09:00:00",
    created_at="2026-11-23 09:00:00",
    start_date="2026-11-01",
    windows=(("00:00", "00:00"),),
)


def test_bare_object_is_parsed_into_the_safe_fields() -> None:
    assert parse(body()) == EXPECTED


def test_bytes_and_str_bodies_parse_alike() -> None:
    text = json.dumps(body(), ensure_ascii=False)
    assert parse_task_body(text.encode(), TASK) == parse_task_body(text, TASK) == EXPECTED


@pytest.mark.parametrize("code", [0, 200, "0", "200", "OK", "ok", "success"])
def test_envelope_with_a_success_code_is_unwrapped(code: object) -> None:
    assert parse({"code": code, "message": "success", "data": body()}) == EXPECTED


def test_envelope_without_a_message_is_unwrapped() -> None:
    assert parse({"code": 0, "data": body()}) == EXPECTED


@pytest.mark.parametrize("code", [1, 401, 404, 500, -1, "ERR_TASK", "error", None, [], {}])
def test_envelope_with_a_failure_code_is_a_transient_api_error(code: object) -> None:
    with pytest.raises(TransientApiError, match="code"):
        parse({"code": code, "message": "task not found", "data": body()})


@pytest.mark.parametrize("data", [None, [], "x", 7, [body()]])
def test_envelope_whose_data_is_not_an_object_is_a_transient_api_error(data: object) -> None:
    with pytest.raises(TransientApiError):
        parse({"code": 0, "message": "ok", "data": data})


def test_envelope_whose_data_lacks_a_status_is_a_transient_api_error() -> None:
    inner = body()
    del inner["status"]
    with pytest.raises(TransientApiError, match="status"):
        parse({"code": 0, "data": inner})


def test_unknown_fields_are_ignored() -> None:
    doc = body(
        brandNewField={"nested": [1, 2, {"x": None}]},
        priority=3,
        tags=["a", "b"],
        status_v2="running",
        callStats={"answered": 12},
    )
    assert parse(doc) == EXPECTED


@pytest.mark.parametrize(
    ("field", "attribute", "absent"),
    [
        ("name", "name", ""),
        ("progress", "progress", None),
        ("total", "total", None),
        ("collectionRate", "collection_rate", None),
        ("summary", "summary", ""),
        ("suggestion", "suggestion", ""),
        ("updatedAt", "updated_at", ""),
        ("createdAt", "created_at", ""),
        ("option", "windows", ()),
        ("assistant", None, None),
        ("assistantVid", None, None),
    ],
)
def test_missing_optional_field_is_tolerated(field: str, attribute: str | None, absent: object) -> None:
    doc = body()
    del doc[field]
    snapshot = parse(doc)
    if attribute is None:
        assert snapshot == EXPECTED
    else:
        assert getattr(snapshot, attribute) == absent


def test_id_and_status_alone_are_a_usable_body() -> None:
    assert parse({"id": TASK, "status": "pending"}) == TaskSnapshot(id=TASK, status="pending")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, 42),
        ("42", 42),
        (42.0, 42),
        (" 42 ", 42),
        ("42.0", 42),
        (41.6, 42),
        ("41.6", 42),
        (0, 0),
        ("0", 0),
        (100, 100),
    ],
)
def test_progress_number_forms_are_read_as_an_integer(value: object, expected: int) -> None:
    assert parse(body(progress=value)).progress == expected


@pytest.mark.parametrize(
    ("field", "value", "attribute", "absent"),
    [
        ("progress", "forty-two", "progress", None),
        ("progress", "", "progress", None),
        ("progress", "nan", "progress", None),
        ("progress", None, "progress", None),
        ("progress", True, "progress", None),
        ("progress", [42], "progress", None),
        ("progress", {"value": 42}, "progress", None),
        ("progress", 1e300, "progress", None),
        ("total", "many", "total", None),
        ("total", False, "total", None),
        ("total", [], "total", None),
        ("collectionRate", {}, "collection_rate", None),
        ("collectionRate", "n/a", "collection_rate", None),
        ("name", 7, "name", ""),
        ("name", None, "name", ""),
        ("name", ["a"], "name", ""),
        ("summary", {"text": "x"}, "summary", ""),
        ("summary", None, "summary", ""),
        ("suggestion", 3.5, "suggestion", ""),
        ("updatedAt", 1732352400, "updated_at", ""),
        ("updatedAt", None, "updated_at", ""),
    ],
)
def test_optional_field_of_the_wrong_type_becomes_absent(
    field: str, value: object, attribute: str, absent: object
) -> None:
    snapshot = parse(body(**{field: value}))
    assert getattr(snapshot, attribute) == absent
    assert snapshot.status == "running"


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e400"])
def test_non_finite_numeric_string_progress_becomes_absent(value: str) -> None:
    assert parse(body(progress=value)).progress is None


def _without_status() -> dict[str, Any]:
    doc = body()
    del doc["status"]
    return doc


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(json.dumps(_without_status()), id="status-missing"),
        pytest.param(json.dumps(body(status="")), id="status-empty"),
        pytest.param(json.dumps(body(status="   ")), id="status-blank"),
        pytest.param(json.dumps(body(status=None)), id="status-null"),
        pytest.param(json.dumps(body(status=1)), id="status-int"),
        pytest.param(json.dumps(body(status=True)), id="status-bool"),
        pytest.param(json.dumps(body(status=["running"])), id="status-list"),
        pytest.param(json.dumps(body(status={"code": "running"})), id="status-object"),
        pytest.param("", id="empty-body"),
        pytest.param("not json", id="text"),
        pytest.param("<html><body>502 Bad Gateway</body></html>", id="html"),
        pytest.param('{"status": "running"', id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param("[]", id="json-array-empty"),
        pytest.param(json.dumps([body()]), id="json-array-of-body"),
        pytest.param('"running"', id="json-string"),
        pytest.param("42", id="json-number"),
        pytest.param("null", id="json-null"),
        pytest.param("true", id="json-bool"),
        pytest.param(json.dumps(body(id=TASK + 1)), id="id-mismatch"),
        pytest.param(json.dumps(body(id="abc")), id="id-not-a-number"),
        pytest.param(json.dumps(body(id=1001.5)), id="id-fraction"),
        pytest.param(json.dumps(body(id=[TASK])), id="id-list"),
    ],
)
def test_unusable_body_is_a_transient_api_error(raw: str | bytes) -> None:
    with pytest.raises(TransientApiError):
        parse_task_body(raw, TASK)


def test_deeply_nested_json_is_a_transient_api_error() -> None:
    with pytest.raises(TransientApiError):
        parse_task_body("[" * 100_000, TASK)


def test_id_mismatch_error_names_both_ids() -> None:
    with pytest.raises(TransientApiError, match=r"task 1001: .*task 1002"):
        parse(body(id=TASK + 1))


@pytest.mark.parametrize("status", ["paused", "stop.quota", "RUNNING", "archived", "停止"])
def test_unknown_status_is_kept_raw(status: str) -> None:
    assert parse(body(status=status)).status == status


def test_a_lone_surrogate_in_the_status_is_read_as_a_replacement_character() -> None:
    """The status goes into the event id (uuid5 encodes it) and every alert: a lone surrogate must not break either."""
    snapshot = parse_task_body('{"id": 1001, "status": "run\\ud800"}', 1001)
    assert snapshot.status == "run\ufffd"
    detect(None, snapshot, datetime(2026, 11, 23, 9, 0, tzinfo=UTC), Rules())


def test_status_is_stripped_of_surrounding_whitespace() -> None:
    assert parse(body(status=" running\n")).status == "running"


SECRETS = [
    "ws-token-secret",
    "wsurl-secret",
    "websocketToken",
    "websocketUrl",
    "819012345678",
    "819087654321",
    "818011112222",
    "campaign.owner@example.com",
    "creator",
    "numbers",
]


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "envelope"])
def test_secrets_in_the_body_never_reach_the_snapshot(wrapped: bool) -> None:
    doc = body(summary="All calls done.", suggestion="Call again next week.")
    assert doc["assistant"]["websocketToken"].startswith("ws-token-secret")  # the fixture does carry them
    snapshot = parse({"code": 0, "message": "ok", "data": doc} if wrapped else doc)
    exported = json.dumps(snapshot.to_dict(), ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in repr(snapshot)
        assert secret not in str(snapshot)
        assert secret not in exported


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(body(id=TASK + 1), id="id-mismatch"),
        pytest.param(body(status=""), id="status-empty"),
        pytest.param(body(status=7), id="status-int"),
        pytest.param({"code": 500, "message": "internal error", "data": body()}, id="envelope-failure"),
    ],
)
def test_parse_errors_never_quote_the_secrets(doc: dict[str, Any]) -> None:
    with pytest.raises(TransientApiError) as info:
        parse(doc)
    for secret in SECRETS:
        assert secret not in str(info.value)


def test_snapshot_round_trips_through_to_dict() -> None:
    assert TaskSnapshot.from_dict(json.loads(json.dumps(EXPECTED.to_dict()))) == EXPECTED


# --- property: whatever the server sends, parsing ends in a snapshot or a WatcherError ---------------------------

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

documented_body = st.fixed_dictionaries(
    {
        "id": st.just(TASK),
        "createdAt": st.text(max_size=20),
        "updatedAt": st.text(max_size=20),
        "name": st.text(max_size=30),
        "status": st.sampled_from(["pending", "running", "stop.operate", "stop.timeout", "stop.abnormal", "done"]),
        "total": st.integers(min_value=0, max_value=100_000),
        "progress": st.integers(min_value=0, max_value=100),
        "collectionRate": st.integers(min_value=0, max_value=100),
        "option": st.fixed_dictionaries(
            {
                "numbers": st.lists(st.integers(min_value=10**10, max_value=10**12), max_size=3),
                "startDate": st.text(max_size=10),
                "retryCount": st.integers(min_value=0, max_value=5),
            }
        ),
        "summary": st.text(max_size=30),
        "suggestion": st.text(max_size=30),
        "assistantVid": st.integers(),
        "assistant": st.fixed_dictionaries(
            {"websocketToken": st.text(max_size=20), "creator": st.fixed_dictionaries({"email": st.emails()})}
        ),
    }
)

FIELDS = ["id", "createdAt", "updatedAt", "name", "status", "total", "progress", "collectionRate", "option"]
FIELDS += ["summary", "suggestion", "assistantVid", "assistant"]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> str | bytes:
    """A documented body with random fields replaced, dropped and added; sometimes in an envelope."""
    doc: dict[str, Any] = draw(documented_body)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        op = draw(st.sampled_from(["replace", "drop", "add"]))
        if op == "replace":
            doc[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif op == "drop":
            doc.pop(draw(st.sampled_from(FIELDS)), None)
        else:
            doc[draw(st.text(max_size=10))] = draw(json_values)
    wrapper = draw(st.sampled_from(["bare", "envelope", "odd-envelope"]))
    if wrapper == "envelope":
        doc = {"code": draw(st.sampled_from([0, 200, "OK", 500])), "message": "m", "data": doc}
    elif wrapper == "odd-envelope":
        doc = {"code": draw(json_values), "message": draw(json_values), "data": draw(json_values | st.just(doc))}
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    return text.encode() if draw(st.booleans()) else text


def _parse_or_none(raw: str | bytes) -> TaskSnapshot | None:
    try:
        return parse_task_body(raw, TASK)
    except WatcherError:
        return None


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated_bodies())
def test_parsing_any_mutated_body_gives_a_snapshot_or_a_watcher_error(raw: str | bytes) -> None:
    snapshot = _parse_or_none(raw)
    if snapshot is not None:
        assert snapshot.id == TASK
        assert snapshot.status
        assert snapshot.progress is None or isinstance(snapshot.progress, int)
        assert isinstance(snapshot.name, str)
        json.dumps(snapshot.to_dict())


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=mutated_bodies(),
    second=mutated_bodies(),
    step=st.integers(min_value=0, max_value=100),
    stall_seconds=st.integers(min_value=1, max_value=86_400),
    gap_seconds=st.integers(min_value=0, max_value=200_000),
)
def test_detect_on_two_parsed_snapshots_never_raises(
    first: str | bytes, second: str | bytes, step: int, stall_seconds: int, gap_seconds: int
) -> None:
    a, b = _parse_or_none(first), _parse_or_none(second)
    assume(a is not None and b is not None)
    assert a is not None
    assert b is not None
    rules = Rules(progress_step=step, stall_after=timedelta(seconds=stall_seconds))
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    state, events = detect(None, a, t0, rules)
    state, more = detect(state, b, t0 + timedelta(seconds=gap_seconds), rules)
    state, more2 = detect(state, b, t0 + timedelta(seconds=gap_seconds + stall_seconds), rules)
    _, gone = detect_missing(state, t0 + timedelta(seconds=gap_seconds + stall_seconds + 1))
    all_events = events + more + more2 + gone
    assert len({e.id for e in all_events}) == len(all_events)
    json.dumps([e.to_dict() for e in all_events])


def test_a_boolean_id_is_not_a_task_id() -> None:
    with pytest.raises(TransientApiError):
        parse_task_body(json.dumps({"id": True, "status": "running"}), 1)


@pytest.mark.parametrize("code", [False, 0.0, None, 500, "error"])
def test_an_envelope_succeeds_only_with_a_real_success_code(code: object) -> None:
    with pytest.raises(TransientApiError):
        parse_task_body(json.dumps({"code": code, "message": "m", "data": {"id": 1, "status": "running"}}), 1)


@pytest.mark.parametrize(
    "doc",
    [
        {"status": "error", "message": "db down"},  # JSend-style error body: no id
        {"code": 500, "status": "fail", "message": "db down"},  # an error code beside a status
        {"id": None, "status": "running"},
    ],
)
def test_an_error_body_with_a_status_is_not_a_task(doc: dict[str, Any]) -> None:
    """Without the task's id a body is not the task: an outage must never read as a status change."""
    with pytest.raises(TransientApiError):
        parse_task_body(json.dumps(doc), TASK)


@pytest.mark.parametrize(
    ("option", "start_date", "windows"),
    [
        ({"startDate": "2026-12-01", "startTime": [["08:00", "11:30"]]}, "2026-12-01", (("08:00", "11:30"),)),
        # One unreadable window and the whole value is dropped: a window silently lost would be a window closed.
        ({"startTime": [["8:00", "12:00"], ["x", "y"]]}, "", ()),
        ({"startTime": "09:00-12:00"}, "", (("09:00", "12:00"),)),
        ("not an object", "", ()),
    ],
)
def test_only_the_calling_schedule_is_read_from_option(option: Any, start_date: str, windows: tuple[Any, ...]) -> None:
    snapshot = parse_task_body(json.dumps({"id": TASK, "status": "pending", "option": option}), TASK)
    assert (snapshot.start_date, snapshot.windows) == (start_date, windows)
