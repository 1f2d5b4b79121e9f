"""The simulator's call log: the documented query and page, records consistent with each dialer and task, run-time
changes, faults, the 403 switch, control endpoints and the four scenarios; in process, on an injected wall clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from watcher.httpserver import Request, Response
from watcher.simulator import (
    DEFAULT_TOKEN,
    Simulator,
    blocked_numbers,
    calllog_forbidden,
    creeping_campaign,
    silent_dialer,
)

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo


class Wall:
    """The simulator's wall clock, moved by the test."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def local(when: datetime) -> str:
    """`when` as the simulator's zone (Tokyo) writes it in a query."""
    return (when + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")


async def get(sim: Simulator, path: str, *, token: str = DEFAULT_TOKEN, **query: Any) -> Response:
    target = f"{path}?{urlencode(query)}" if query else path
    return await sim.handle(Request("GET", target, {"authorization": f"Bearer {token}"}, b""))


async def post(sim: Simulator, path: str, doc: Any) -> Response:
    return await sim.handle(Request("POST", path, {}, json.dumps(doc).encode()))


async def calllog(
    sim: Simulator, task_ids: str, since: datetime, until: datetime, page_size: int = 100, page: int = 1
) -> dict[str, Any]:
    response = await get(
        sim,
        "/openapi/calllog",
        taskId=task_ids,
        startTime=local(since),
        endTime=local(until),
        pageIndex=page,
        pageSize=page_size,
    )
    assert response.status == 200, response.body
    doc = json.loads(response.body)
    assert isinstance(doc, dict)
    return doc


async def all_items(sim: Simulator, task_ids: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        doc = await calllog(sim, task_ids, since, until, page=page)
        items += doc["items"]
        if len(items) >= doc["total"]:
            return items
        page += 1


def answered(items: list[dict[str, Any]]) -> int:
    return sum(1 for i in items if i["billsec"] > 0)


def make(wall: Wall | None = None) -> tuple[Simulator, Wall]:
    wall = wall or Wall()
    return Simulator(wall_clock=wall), wall


# -- the documented shape --------------------------------------------------------------------------------------


async def test_a_page_has_the_documented_shape_and_records_their_fields() -> None:
    sim, _ = make()
    sim.dialer(7, calls_per_minute=6, answered=0.5, at=T0 - timedelta(minutes=10))
    doc = await calllog(sim, "7", T0 - timedelta(minutes=10), T0, page_size=5)
    assert set(doc) == {"items", "total", "pageIndex", "pageSize"}
    assert (doc["pageIndex"], doc["pageSize"], len(doc["items"])) == (1, 5, 5)
    record = doc["items"][0]
    assert set(record) == {
        "sessionId",
        "taskId",
        "startAt",
        "answerAt",
        "endAt",
        "callee",
        "caller",
        "direction",
        "duration",
        "billsec",
        "recordFile",
        "assistant",
    }
    assert record["taskId"] == 7
    assert record["startAt"] == "2026-11-23 09:50:00"  # naive, in the workspace's zone (Tokyo)


async def test_records_carry_realistic_personal_data_for_leak_tests_to_find() -> None:
    sim, _ = make()
    sim.dialer(7, calls_per_minute=6, answered=1.0, at=T0 - timedelta(minutes=10))
    items = await all_items(sim, "7", T0 - timedelta(minutes=10), T0)
    callees = {i["callee"] for i in items}
    assert any(c.startswith("+81 90-") for c in callees) and any(c.startswith("138") for c in callees)
    assert all(i["callee"].replace(" ", "") in i["recordFile"] for i in items)
    assert len({i["sessionId"] for i in items}) == len(items)


async def test_the_default_page_size_is_10_and_more_than_100_is_served_as_100() -> None:
    sim, _ = make()
    sim.dialer(7, calls_per_minute=60, at=T0 - timedelta(minutes=10))
    query = {"taskId": "7", "startTime": local(T0 - timedelta(minutes=10)), "endTime": local(T0)}
    default = json.loads((await get(sim, "/openapi/calllog", **query)).body)
    large = json.loads((await get(sim, "/openapi/calllog", pageSize=500, **query)).body)
    assert (default["pageSize"], len(default["items"])) == (10, 10)
    assert (large["pageSize"], len(large["items"])) == (100, 100)


@pytest.mark.parametrize(
    "query",
    [
        {"taskId": ",".join(str(i) for i in range(11))},
        {"taskId": "7,x"},
        {"taskId": "7", "startTime": "23/11/2026"},
        {"taskId": "7", "pageIndex": "0"},
    ],
)
async def test_a_query_the_api_would_refuse_is_a_400(query: dict[str, str]) -> None:
    sim, _ = make()
    assert (await get(sim, "/openapi/calllog", **query)).status == 400


async def test_without_a_time_range_it_is_today_in_the_workspace_zone() -> None:
    sim, _ = make()
    sim.dialer(7, calls_per_minute=1, at=T0 - timedelta(hours=12))  # since 22:00 yesterday, Tokyo
    doc = json.loads((await get(sim, "/openapi/calllog", taskId="7", pageSize=100)).body)
    assert doc["total"] == 60 * 10  # 00:00 to 09:59 Tokyo; the call started at 10:00 has not ended
    assert doc["items"][0]["startAt"] == "2026-11-23 00:00:00"


async def test_a_wrong_token_is_a_401() -> None:
    sim, _ = make()
    response = await get(sim, "/openapi/calllog", token="nope", taskId="7")
    assert response.status == 401


async def test_the_same_question_gets_the_same_records_on_every_request_and_every_run() -> None:
    runs = []
    for _ in range(2):
        sim, _ = make()
        sim.dialer(7, calls_per_minute=17, answered=0.37, at=T0 - timedelta(minutes=30))
        runs.append(await all_items(sim, "7", T0 - timedelta(minutes=30), T0))
        assert runs[-1] == await all_items(sim, "7", T0 - timedelta(minutes=30), T0)
    assert runs[0] == runs[1]


# -- consistent with the dialer ------------------------------------------------------------------------------------


async def test_records_follow_the_dialer_pace_share_and_durations() -> None:
    sim, wall = make()
    sim.dialer(7, calls_per_minute=20, answered=0.4, duration=(20, 90), at=T0 - timedelta(minutes=30))
    wall.advance(minutes=5)  # every call of the half hour has ended
    items = await all_items(sim, "7", T0 - timedelta(minutes=30), T0 - timedelta(seconds=1))
    assert len(items) == 600
    assert answered(items) == 240
    for item in items:
        start, end = (datetime.fromisoformat(item[k]) for k in ("startAt", "endAt"))
        assert (end - start).total_seconds() == item["duration"]
        if item["billsec"]:
            assert 20 <= item["billsec"] <= 90 and item["answerAt"] > item["startAt"]
        else:
            assert item["answerAt"] in ("", None, "0001-01-01 00:00:00")  # "not answered", as servers write it


async def test_a_call_is_in_the_log_once_it_has_ended() -> None:
    sim, wall = make()
    sim.dialer(7, calls_per_minute=1, answered=1.0, duration=(60, 60), at=T0)
    assert (await calllog(sim, "7", T0, T0 + timedelta(hours=1)))["total"] == 0
    wall.advance(seconds=59)
    assert (await calllog(sim, "7", T0, T0 + timedelta(hours=1)))["total"] == 0
    wall.advance(seconds=30)  # rang up to 15 s, talked 60 s
    assert (await calllog(sim, "7", T0, T0 + timedelta(hours=1)))["total"] == 1


async def test_the_answered_share_changes_at_run_time() -> None:
    """Carriers block the numbers: from that moment 3 % are answered, at the same pace."""
    sim, wall = make()
    sim.dialer(7, calls_per_minute=30, answered=0.4, at=T0 - timedelta(minutes=20))
    sim.dialer(7, answered=0.03)
    wall.advance(minutes=22)
    before = await all_items(sim, "7", T0 - timedelta(minutes=20), T0 - timedelta(seconds=1))
    after = await all_items(sim, "7", T0, T0 + timedelta(minutes=20) - timedelta(seconds=1))
    assert (len(before), answered(before)) == (600, 240)
    assert (len(after), answered(after)) == (600, 18)


async def test_a_dialer_set_to_zero_calls_no_more_while_the_task_runs() -> None:
    sim, wall = make()
    sim.dialer(7, calls_per_minute=12, at=T0 - timedelta(minutes=10))
    sim.dialer(7, calls_per_minute=0, at=T0 + timedelta(minutes=5))
    wall.advance(minutes=30)
    items = await all_items(sim, "7", T0 - timedelta(hours=1), wall.now)
    last = max(datetime.fromisoformat(i["startAt"]) for i in items)
    assert last == datetime(2026, 11, 23, 10, 4, 55)
    assert sim.current(7) is not None and sim.current(7)["status"] == "running"  # type: ignore[index]


async def test_a_stopped_task_calls_no_more_and_a_resumed_one_calls_again() -> None:
    sim, wall = make()
    sim.set(7, status="running")
    sim.dialer(7, calls_per_minute=6, at=T0)
    wall.advance(minutes=10)
    sim.set(7, status="stop.operate")
    wall.advance(minutes=10)
    sim.set(7, status="running")
    wall.advance(minutes=10)
    starts = [c.start - T0.timestamp() for c in sim.calls(7, T0, wall.now)]
    assert len(starts) == 60 + 61  # ten minutes at 6 a minute; then again, up to and including now
    assert not [s for s in starts if 600 < s < 1200]


async def test_a_dialer_for_a_pending_task_waits_for_it_to_run() -> None:
    sim, wall = make()
    sim.add_task(7, status="pending")
    sim.dialer(7, calls_per_minute=6, at=T0)
    wall.advance(minutes=5)
    assert sim.calls(7, T0, wall.now) == []
    sim.timeline(7, [(0, {"status": "running"})])
    sim.start()
    wall.advance(minutes=5)
    assert len(sim.calls(7, T0, wall.now)) == 0  # the timeline step is applied when the task is next read...
    await calllog(sim, "7", T0, wall.now)  # ...as a call log request does first
    wall.advance(minutes=5)
    assert len(sim.calls(7, T0, wall.now)) == 31


async def test_a_dialer_advancing_progress_keeps_progress_with_its_calls_and_stops_at_the_total() -> None:
    sim, wall = make()
    sim.add_task(7, status="running", total=200, progress=50)
    sim.dialer(7, calls_per_minute=10, at=T0, advances_progress=True)
    wall.advance(minutes=2)
    assert sim.current(7)["progress"] == 60  # type: ignore[index]  # 100 done + 21 started of 200
    wall.advance(minutes=60)
    assert sim.current(7)["progress"] == 100  # type: ignore[index]
    assert len(sim.calls(7, T0, wall.now)) == 100  # the numbers left, no more


async def test_advances_progress_is_chosen_when_the_dialer_is_made() -> None:
    sim, _ = make()
    sim.dialer(7)
    with pytest.raises(ValueError, match="first made"):
        sim.dialer(7, advances_progress=True)


@pytest.mark.parametrize("plan", [{"answered": 1.5}, {"calls_per_minute": -1}, {"duration": (90, 20)}])
async def test_an_impossible_plan_is_refused(plan: dict[str, Any]) -> None:
    sim, _ = make()
    with pytest.raises(ValueError, match="is"):
        sim.dialer(7, **plan)


# -- refusals and faults -------------------------------------------------------------------------------------------


async def test_the_call_log_refused_is_a_403_while_tasks_are_served() -> None:
    sim, _ = make()
    sim.dialer(7)
    sim.calllog_forbidden = True
    assert (await get(sim, "/openapi/calllog", taskId="7")).status == 403
    assert (await get(sim, "/openapi/tasks/7")).status == 200


async def test_a_429_for_the_call_log_carries_retry_after_and_spares_the_task_endpoint() -> None:
    sim, _ = make()
    sim.dialer(7)
    sim.inject("429", retry_after="9", endpoint="calllog")
    assert (await get(sim, "/openapi/tasks/7")).status == 200
    response = await get(sim, "/openapi/calllog", taskId="7")
    assert response.status == 429 and ("Retry-After", "9") in response.headers
    assert (await get(sim, "/openapi/calllog", taskId="7")).status == 200


async def test_a_task_fault_does_not_hit_the_call_log() -> None:
    sim, _ = make()
    sim.dialer(7)
    sim.inject("500")
    assert (await get(sim, "/openapi/calllog", taskId="7")).status == 200
    assert (await get(sim, "/openapi/tasks/7")).status == 500


async def test_a_call_log_fault_for_a_task_matches_a_request_that_includes_it() -> None:
    sim, _ = make()
    sim.inject("500", task_id=8, endpoint="calllog")
    assert (await get(sim, "/openapi/calllog", taskId="7")).status == 200
    assert (await get(sim, "/openapi/calllog", taskId="7,8")).status == 500


async def test_the_envelope_fault_wraps_the_page() -> None:
    sim, _ = make()
    sim.dialer(7, at=T0 - timedelta(minutes=5))
    sim.inject("envelope", endpoint="calllog")
    doc = json.loads((await get(sim, "/openapi/calllog", taskId="7", pageSize=100)).body)
    assert doc["code"] == 0 and set(doc["data"]) == {"items", "total", "pageIndex", "pageSize"}


# -- control endpoints ---------------------------------------------------------------------------------------------


async def test_the_dialer_and_the_refusal_are_driven_through_control_endpoints() -> None:
    sim, wall = make()
    response = await post(sim, "/_sim/dialer/7", {"calls_per_minute": 30, "answered": 0.4, "duration": [10, 20]})
    assert json.loads(response.body) == {"calls_per_minute": 30.0, "answered": 0.4, "duration": [10, 20], "ring": None}
    await post(sim, "/_sim/dialer/7", {"answered": 0.03, "in": 600})
    assert (await post(sim, "/_sim/dialer/7", {"answered": 7})).status == 400
    wall.advance(minutes=21)
    before = await all_items(sim, "7", T0, T0 + timedelta(minutes=10) - timedelta(seconds=1))
    after = await all_items(sim, "7", T0 + timedelta(minutes=10), T0 + timedelta(minutes=20) - timedelta(seconds=1))
    assert (answered(before), answered(after)) == (120, 9)
    await post(sim, "/_sim/calllog", {"forbidden": True})
    assert (await get(sim, "/openapi/calllog", taskId="7")).status == 403
    await post(sim, "/_sim/faults", {"kind": "503", "endpoint": "calllog"})
    await post(sim, "/_sim/calllog", {"forbidden": False})
    assert (await get(sim, "/openapi/calllog", taskId="7")).status == 503
    stats = json.loads((await get(sim, "/_sim/stats")).body)
    assert stats["calllog"] == 3 + 3 + 2 and stats["requests"] == 0  # pages read, then the 403 and the 503


async def test_an_unknown_fault_endpoint_is_refused() -> None:
    sim, _ = make()
    assert (await post(sim, "/_sim/faults", {"kind": "500", "endpoint": "elsewhere"})).status == 400


# -- scenarios -----------------------------------------------------------------------------------------------------


async def test_creeping_campaign_is_flat_for_longer_than_stall_after_but_calls_all_along() -> None:
    sim, wall = make()
    (task,) = creeping_campaign(sim)
    progress = [sim.current(task)["progress"]]  # type: ignore[index]
    for _ in range(19):
        wall.advance(minutes=1)
        progress.append(sim.current(task)["progress"])  # type: ignore[index]
    assert set(progress) == {40}  # 37 % + the hour's calls (3 %) of 20,000; flat for 19 minutes...
    items = await all_items(sim, str(task), T0, wall.now)
    assert len(items) >= 180 and sim.current(task)["status"] == "running"  # type: ignore[index]  # ...but calling
    wall.advance(minutes=1)
    assert sim.current(task)["progress"] == 41  # type: ignore[index]


async def test_silent_dialer_stops_calling_while_running() -> None:
    sim, wall = make()
    (task,) = silent_dialer(sim)
    wall.advance(minutes=40)
    starts = [c.start for c in sim.calls(task, T0 - timedelta(hours=1), wall.now)]
    assert max(starts) < (T0 + timedelta(minutes=10)).timestamp()
    assert min(starts) == (T0 - timedelta(hours=1)).timestamp()
    assert sim.current(task)["status"] == "running"  # type: ignore[index]


async def test_blocked_numbers_collapse_the_answered_share_from_40_to_3_percent() -> None:
    sim, wall = make()
    (task,) = blocked_numbers(sim)
    wall.advance(minutes=62)
    before = await all_items(sim, str(task), T0 - timedelta(hours=1), T0 + timedelta(minutes=30, seconds=-1))
    after = await all_items(sim, str(task), T0 + timedelta(minutes=30), T0 + timedelta(minutes=60, seconds=-1))
    assert answered(before) / len(before) == pytest.approx(0.4, abs=0.005)
    assert answered(after) / len(after) == pytest.approx(0.03, abs=0.005)
    assert len(after) == 900


async def test_calllog_forbidden_refuses_the_call_log_but_serves_the_task() -> None:
    sim, _ = make()
    (task,) = calllog_forbidden(sim)
    assert (await get(sim, "/openapi/calllog", taskId=str(task))).status == 403
    assert json.loads((await get(sim, f"/openapi/tasks/{task}")).body)["status"] == "running"


def test_a_dialer_may_ring_briefly_for_runs_in_seconds() -> None:
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    sim.dialer(9, calls_per_minute=60, answered=0.5, duration=(0, 1), ring=(1, 2), at=T0)
    calls = sim.calls(9, T0, T0 + timedelta(minutes=1))
    assert len(calls) == 61  # [since, until]: both ends
    assert all(1 <= c.end - c.start <= 3 for c in calls)
    assert {c.answered for c in calls} == {True, False}
