"""VoiceFoxClient.call_log: paging, the 10-task limit, the error tree, and no phone number anywhere; units on
MockTransport, then through the simulator on 127.0.0.1."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from structlog.testing import capture_logs

from watcher.calllog import CallLog, CallRecord, parse_calllog_page, read_call_time
from watcher.client import VoiceFoxClient
from watcher.errors import (
    ApiError,
    AuthenticationError,
    PermissionDenied,
    RateLimited,
    TransientApiError,
)
from watcher.retry import ApiRetry
from watcher.simulator import TOKYO, Simulator

pytestmark = pytest.mark.anyio

TOKEN = "vf-live-TOKEN-9f8e7d6c5b4a3210"
BASE_URL = "https://openapi.voicefox.test"
NO_JITTER = ApiRetry(attempts=3, initial=0.5, maximum=5.0, jitter=0.0)
SINCE = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
UNTIL = SINCE + timedelta(hours=1)
# Numbers as VoiceFox writes them (Japan, China, E.164): none may reach a result, a log line or an error.
PHONES = ("+81 90-1234-5678", "13800138000", "+8613912345678", "09012345678")

Reply = Callable[[httpx.Request], httpx.Response]


def item(task_id: int, n: int, *, answered: bool = True, **extra: Any) -> dict[str, Any]:
    """A call record as the API sends it, personal data included."""
    start = datetime(2026, 11, 23, 9, 0, 0) + timedelta(seconds=30 * n)
    answer = start + timedelta(seconds=8)
    end = answer + timedelta(seconds=40) if answered else start + timedelta(seconds=25)
    fmt = "%Y-%m-%d %H:%M:%S"
    record = {
        "sessionId": f"sess-{task_id}-{n:06d}",
        "taskId": task_id,
        "startAt": start.strftime(fmt),
        "answerAt": answer.strftime(fmt) if answered else "",
        "endAt": end.strftime(fmt),
        "callee": PHONES[n % len(PHONES)],
        "caller": PHONES[(n + 1) % len(PHONES)],
        "direction": "outbound",
        "duration": int((end - start).total_seconds()),
        "billsec": 40 if answered else 0,
        "recordFile": f"https://rec.voicefox.test/{PHONES[n % len(PHONES)]}/{n}.wav",
        "assistant": [{"id": 12, "vid": 77}],
    }
    record.update(extra)
    return record


class PagedApi:
    """A MockTransport handler serving `records` in pages as the documented endpoint does; records every request."""

    def __init__(self, records: list[dict[str, Any]], *, wrap: bool = False) -> None:
        self.records = records
        self.requests: list[httpx.Request] = []
        self.wrap = wrap

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        query = parse_qs(request.url.query.decode())
        index, size = int(query["pageIndex"][0]), int(query["pageSize"][0])
        page = {
            "items": self.records[(index - 1) * size : index * size],
            "total": len(self.records),
            "pageIndex": index,
            "pageSize": size,
        }
        return httpx.Response(200, json={"code": 0, "message": "ok", "data": page} if self.wrap else page)


async def no_sleep(seconds: float) -> None:
    """A `sleep` seam that does not wait."""


def make_client(handler: Reply, sleep: Callable[[float], Any] = no_sleep) -> VoiceFoxClient:
    return VoiceFoxClient(
        BASE_URL,
        TOKEN,
        transport=httpx.MockTransport(handler),
        retry=NO_JITTER,
        sleep=sleep,
        wall_clock=lambda: 1_800_000_000.0,
    )


def rendered(exc: BaseException) -> str:
    """Everything a log line or traceback would show of an exception."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def assert_no_personal_data(text: str) -> None:
    for phone in (*PHONES, "rec.voicefox.test", "sess-"):
        assert phone not in text
    digits = "".join(c for c in text if c.isdigit())
    for phone in PHONES:
        assert "".join(c for c in phone if c.isdigit()) not in digits


# -- unit: MockTransport -----------------------------------------------------------------------------------------


async def test_the_request_carries_the_documented_query() -> None:
    api = PagedApi([item(7, 1)])
    async with make_client(api) as client:
        await client.call_log([7, 8], SINCE, UNTIL, tz=TOKYO)
    (request,) = api.requests
    assert request.url.path == "/openapi/calllog"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    query = parse_qs(request.url.query.decode())
    assert query == {
        "taskId": ["7,8"],
        "startTime": ["2026-11-23 09:00:00"],  # UTC 00:00 as the workspace's naive local time
        "endTime": ["2026-11-23 10:00:00"],
        "pageIndex": ["1"],
        "pageSize": ["100"],
    }


async def test_records_are_counts_and_times_read_in_the_given_zone() -> None:
    api = PagedApi([item(7, 0), item(7, 1, answered=False)])
    async with make_client(api) as client:
        log = await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    start = datetime(2026, 11, 23, 9, 0, tzinfo=TOKYO)
    assert log == CallLog(
        records=(
            CallRecord(7, start, True, start + timedelta(seconds=48), 48),
            CallRecord(7, start + timedelta(seconds=30), False, start + timedelta(seconds=55), 25),
        ),
        total=2,
        pages=1,
    )


async def test_250_records_are_read_in_three_pages_of_at_most_100() -> None:
    records = [item(7 + n % 3, n, answered=n % 5 < 2) for n in range(250)]
    api = PagedApi(records)
    async with make_client(api) as client:
        log = await client.call_log([7, 8, 9], SINCE, UNTIL, tz=TOKYO)
    assert [parse_qs(r.url.query.decode())["pageIndex"] for r in api.requests] == [["1"], ["2"], ["3"]]
    assert (len(log.records), log.total, log.pages, log.complete) == (250, 250, 3, True)
    assert sum(r.answered for r in log.records) == 100
    assert len(log.for_task(8)) == 83


async def test_an_enveloped_page_is_accepted() -> None:
    api = PagedApi([item(7, n) for n in range(120)], wrap=True)
    async with make_client(api) as client:
        log = await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert (len(log.records), log.pages) == (120, 2)


async def test_paging_stops_at_the_page_limit_and_says_it_is_incomplete() -> None:
    api = PagedApi([item(7, n) for n in range(450)])
    async with make_client(api) as client:
        log = await client.call_log([7], SINCE, UNTIL, tz=TOKYO, max_pages=2)
    assert (len(log.records), log.pages, log.complete) == (200, 2, False)


async def test_a_server_that_pages_with_smaller_pages_than_asked_is_followed_by_its_total() -> None:
    records = [item(7, n) for n in range(75)]

    def small_pages(request: httpx.Request) -> httpx.Response:
        index = int(parse_qs(request.url.query.decode())["pageIndex"][0])
        page = records[(index - 1) * 50 : index * 50]
        return httpx.Response(200, json={"items": page, "total": 75, "pageIndex": index, "pageSize": 50})

    async with make_client(small_pages) as client:
        log = await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert (len(log.records), log.pages) == (75, 2)


async def test_pace_is_awaited_before_every_page() -> None:
    """The daemon's shared gate and rate limit pace each page, so the call log and task polls share one budget."""
    paced: list[int] = []
    api = PagedApi([item(7, n) for n in range(230)])

    async def pace() -> None:
        paced.append(len(api.requests))

    async with make_client(api) as client:
        await client.call_log([7], SINCE, UNTIL, tz=TOKYO, pace=pace)
    assert paced == [0, 1, 2]


@pytest.mark.parametrize("ids", [list(range(1, 12)), []])
async def test_more_than_ten_tasks_or_none_is_refused_before_any_request(ids: list[int]) -> None:
    api = PagedApi([])
    async with make_client(api) as client:
        with pytest.raises(ValueError, match="task"):
            await client.call_log(ids, SINCE, UNTIL, tz=TOKYO)
    assert api.requests == []


async def test_ten_tasks_are_one_request_and_duplicates_count_once() -> None:
    api = PagedApi([])
    async with make_client(api) as client:
        await client.call_log([*range(1, 11), 3, 3], SINCE, UNTIL, tz=TOKYO)
    assert parse_qs(api.requests[0].url.query.decode())["taskId"] == ["1,2,3,4,5,6,7,8,9,10"]


async def test_naive_times_are_refused() -> None:
    async with make_client(PagedApi([])) as client:
        with pytest.raises(ValueError, match="aware"):
            await client.call_log([7], SINCE.replace(tzinfo=None), UNTIL, tz=TOKYO)


def answer(status: int, doc: Any = None, headers: dict[str, str] | None = None) -> Reply:
    return lambda request: httpx.Response(status, json=doc if doc is not None else {}, headers=headers)


async def test_403_is_permission_denied_not_an_authentication_error_and_not_retried() -> None:
    """A token that reads tasks but not calls: the caller switches the call log off; nothing pauses the polls."""
    calls: list[httpx.Request] = []

    def forbidden(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(403, json={"code": 403, "message": "permission denied"})

    async with make_client(forbidden) as client:
        with pytest.raises(PermissionDenied) as caught:
            await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert not isinstance(caught.value, AuthenticationError | TransientApiError)
    assert caught.value.status_code == 403
    assert "call log" in str(caught.value)
    assert len(calls) == 1


async def test_401_is_an_authentication_error() -> None:
    async with make_client(answer(401, {"code": 401})) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert caught.value.status_code == 401


async def test_429_is_rate_limited_with_retry_after_and_not_retried() -> None:
    calls: list[httpx.Request] = []

    def limited(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, json={}, headers={"Retry-After": "12"})

    async with make_client(limited) as client:
        with pytest.raises(RateLimited) as caught:
            await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert caught.value.retry_after == 12.0
    assert len(calls) == 1


async def test_a_429_on_a_later_page_is_raised_too() -> None:
    """A look is all of its pages or an error: the caller asks again after the pause, from the same start."""
    records = [item(7, n) for n in range(150)]
    paged = PagedApi(records)

    def second_page_limited(request: httpx.Request) -> httpx.Response:
        if parse_qs(request.url.query.decode())["pageIndex"] == ["2"]:
            return httpx.Response(429, json={})
        return paged(request)

    async with make_client(second_page_limited) as client:
        with pytest.raises(RateLimited):
            await client.call_log([7], SINCE, UNTIL, tz=TOKYO)


async def test_5xx_is_retried_per_page_with_the_task_policy() -> None:
    replies = [answer(503), answer(500)]
    paged = PagedApi([item(7, n) for n in range(3)])
    waits: list[float] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        return replies.pop(0)(request) if replies else paged(request)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with make_client(flaky, sleep=sleep) as client:
        log = await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert len(log.records) == 3
    assert waits == [0.5, 1.0]


async def test_5xx_beyond_the_attempts_is_a_transient_error() -> None:
    async with make_client(answer(502)) as client:
        with pytest.raises(TransientApiError, match="call log of tasks 7: API answered 502"):
            await client.call_log([7], SINCE, UNTIL, tz=TOKYO)


async def test_a_timeout_is_a_transient_error() -> None:
    def times_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout(f"timed out reading {request.url}", request=request)

    async with make_client(times_out) as client:
        with pytest.raises(TransientApiError) as caught:
            await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert "openapi.voicefox.test" not in rendered(caught.value)


async def test_404_is_a_plain_api_error() -> None:
    async with make_client(answer(404, {"code": 404})) as client:
        with pytest.raises(ApiError) as caught:
            await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert not isinstance(caught.value, TransientApiError | PermissionDenied)


# -- personal data -------------------------------------------------------------------------------------------------


async def test_phone_numbers_reach_no_result_repr_and_no_log_line() -> None:
    records = [item(7, n, answered=n % 3 == 0) for n in range(130)]
    api = PagedApi(records)
    with capture_logs() as logs:
        async with make_client(api) as client:
            log = await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert len(log.records) == 130
    assert_no_personal_data(repr(log))
    assert_no_personal_data(json.dumps(logs, default=str))
    for record in log.records:
        assert not hasattr(record, "__dict__")  # slotted: no room for anything but the declared fields


BAD_PAGES: dict[str, bytes] = {
    "not-json": b'{"items": [{"callee": "+81 90-1234-5678", "startAt": "2026-11-',
    "items-not-a-list": json.dumps({"items": {"callee": "13800138000"}, "total": 1}).encode(),
    "error-envelope": json.dumps({"code": 500, "message": "bad phone 13800138000", "data": None}).encode(),
    "error-envelope-odd-code": json.dumps({"code": ["+81 90-1234-5678"], "message": "", "data": None}).encode(),
    "array": json.dumps([{"callee": "13800138000"}]).encode(),
}


@pytest.mark.parametrize("body", BAD_PAGES.values(), ids=BAD_PAGES.keys())
async def test_an_unusable_page_is_a_transient_error_that_quotes_nothing_of_it(body: bytes) -> None:
    with capture_logs() as logs:
        async with make_client(lambda request: httpx.Response(200, content=body)) as client:
            with pytest.raises(TransientApiError) as caught:
                await client.call_log([7], SINCE, UNTIL, tz=TOKYO)
    assert_no_personal_data(rendered(caught.value))
    assert_no_personal_data(json.dumps(logs, default=str))


# -- tolerant parsing ------------------------------------------------------------------------------------------


def page_of(*items: Any, **fields: Any) -> bytes:
    return json.dumps({"items": list(items), "total": len(items), **fields}).encode()


@pytest.mark.parametrize(
    ("fields", "answered"),
    [
        ({"answerAt": "2026-11-23 09:00:05", "billsec": 0}, True),
        ({"answerAt": "", "billsec": 12}, True),
        ({"answerAt": None, "billsec": "3"}, True),
        ({"answerAt": "", "billsec": 0}, False),
        ({"answerAt": None, "billsec": None}, False),
        ({"answerAt": "0001-01-01 00:00:00", "billsec": 0}, False),  # Go's zero time: never answered
        ({"answerAt": "1970-01-01 08:00:00"}, False),  # the epoch in Beijing
        ({"answerAt": "-"}, False),
        ({"answerAt": 0}, False),
        ({"answerAt": 1795424405}, True),  # epoch seconds
    ],
)
def test_answered_is_a_real_answer_time_or_billed_seconds(fields: dict[str, Any], answered: bool) -> None:
    raw = {"taskId": 7, "startAt": "2026-11-23 09:00:00", "endAt": "2026-11-23 09:01:00", "billsec": 0, **fields}
    page = parse_calllog_page(page_of(raw), "call log", TOKYO, [7])
    assert page.records[0].answered is answered


def test_records_without_a_task_or_a_start_or_of_another_task_are_skipped() -> None:
    good = {"taskId": "7", "startAt": "2026-11-23 09:00:00"}
    page = parse_calllog_page(
        page_of(good, {"taskId": 8, "startAt": "2026-11-23 09:00:00"}, {"taskId": 7}, {"startAt": "x"}, "junk", None),
        "call log",
        TOKYO,
        [7],
    )
    assert (len(page.records), page.items, page.skipped) == (1, 6, 5)
    assert page.records[0] == CallRecord(7, datetime(2026, 11, 23, 9, tzinfo=TOKYO), False, None, None)


def test_duration_falls_back_to_end_minus_start_and_a_backwards_end_is_dropped() -> None:
    page = parse_calllog_page(
        page_of(
            {"taskId": 7, "startAt": "2026-11-23 09:00:00", "endAt": "2026-11-23 09:00:42", "duration": "n/a"},
            {"taskId": 7, "startAt": "2026-11-23 09:00:00", "endAt": "2026-11-23 08:00:00", "duration": 5},
        ),
        "call log",
        TOKYO,
        [7],
    )
    assert [(r.duration, r.ended_at is None) for r in page.records] == [(42, False), (5, True)]


def test_null_items_are_an_empty_page() -> None:
    page = parse_calllog_page(b'{"items": null, "total": 0}', "call log", TOKYO, [7])
    assert (page.records, page.total) == ((), 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23 09:00:00", datetime(2026, 11, 23, 9, tzinfo=TOKYO)),
        ("2026-11-23T09:00:00+08:00", datetime(2026, 11, 23, 1, tzinfo=UTC)),
        (1_795_424_400, datetime(2026, 11, 23, 9, tzinfo=UTC)),
        (1_795_424_400_000, datetime(2026, 11, 23, 9, tzinfo=UTC)),
        ("", None),
        (True, None),
        ([], None),
        ("0001-01-01 00:00:00", None),
        (1e300, None),
    ],
)
def test_call_times_are_read_tolerantly(value: Any, expected: datetime | None) -> None:
    assert read_call_time(value, TOKYO) == expected


# -- through the simulator on 127.0.0.1 ------------------------------------------------------------------------


NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 11:00 in Tokyo


async def test_the_simulator_call_log_is_read_across_pages_and_leaks_nothing() -> None:
    sim = Simulator(wall_clock=lambda: NOW)
    sim.dialer(3001, calls_per_minute=30, answered=0.4, at=NOW - timedelta(minutes=5))
    sim.dialer(3002, calls_per_minute=20, answered=0.1, at=NOW - timedelta(minutes=5))
    with capture_logs() as logs:
        async with sim.serving() as url, VoiceFoxClient(url, sim.token, sleep=no_sleep) as client:
            log = await client.call_log([3001, 3002], NOW - timedelta(minutes=10), NOW, tz=sim.zone)
    first, second = log.for_task(3001), log.for_task(3002)
    started = sim.calls(3001, NOW - timedelta(minutes=10), NOW)
    ended = [c for c in started if c.end <= NOW.timestamp()]  # those still ringing or talking are not in the log
    assert (len(started), len(sim.calls(3002, NOW - timedelta(minutes=10), NOW))) == (151, 101)  # both ends included
    assert len(first) == len(ended) >= 130 and 85 <= len(second) < 100
    assert sum(r.answered for r in first) == sum(c.answered for c in ended)
    assert sum(c.answered for c in started) == 60  # 40 % of 151, spread evenly
    assert (log.pages, log.total, log.complete) == (3, len(log.records), True)
    assert all(r.ended_at is not None and r.duration is not None for r in log.records)
    assert_no_personal_data(repr(log) + json.dumps(logs, default=str))


async def test_the_simulator_refusing_the_call_log_is_permission_denied(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.set(3001, status="running")
    sim.calllog_forbidden = True
    async with VoiceFoxClient(url, sim.token, sleep=no_sleep) as client:
        with pytest.raises(PermissionDenied):
            await client.call_log([3001], sim.now() - timedelta(minutes=5), sim.now(), tz=sim.zone)
        assert (await client.get_task(3001)).status == "running"  # the token still reads tasks


async def test_the_simulator_429_on_the_call_log_carries_retry_after(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.inject("429", retry_after="7", endpoint="calllog")
    async with VoiceFoxClient(url, sim.token, sleep=no_sleep) as client:
        with pytest.raises(RateLimited) as caught:
            await client.call_log([3001], sim.now() - timedelta(minutes=5), sim.now(), tz=sim.zone)
    assert caught.value.retry_after == 7.0
