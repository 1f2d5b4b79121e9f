"""A VoiceFox-like task API with scriptable timelines and faults, for the demo, the tests and benchmarks.

Bodies look like the real thing, secrets and phone numbers included, so that tests can prove none of them leaks.
Besides `GET /openapi/tasks/{id}` it serves `GET /openapi/calllog` (the documented query and page shape) from
simulated dialers, and has a small control API (used by `watcher simulate` users and by tests that drive a simulator
in another process):

    POST /_sim/tasks/{id}   JSON object of fields to set (`{"status": "running", "progress": 40}`); creates the task
    DELETE /_sim/tasks/{id} the task answers 404 from now on
    POST /_sim/faults       `{"kind": "500", "times": 3, "task_id": 1001, "retry_after": "2", "endpoint": "calllog"}`
    POST /_sim/dialer/{id}  `{"calls_per_minute": 0}`, `{"answered": 0.03}`, `{"duration": [20, 90]}`, `{"ring": [1, 2]}`,
                            `{"advances_progress": true}`, `{"in": 600}` (seconds from now); see `Simulator.dialer`
    POST /_sim/calllog      `{"forbidden": true}`: the call log answers 403 (a token without that permission)
    GET /_sim/stats         request counts

The call log is computed, not stored: a dialer places its calls evenly at `calls_per_minute` while its task is
`running`, answers an exact share of them (`answered`, spread evenly), and draws each call's ring and talk time from
a hash of (task, call number), so the same question always gets the same records, from the simulator's wall clock.
A call is in the log once it has ended. Records carry realistic fake `callee`/`caller` numbers, a `recordFile` URL
naming the callee and a `sessionId`, so that tests can prove none of them leaks. A dialer made with
`advances_progress=True` keeps the task's `progress` consistent with its calls (each call is one number of `total`,
done when it starts); otherwise progress is scripted separately (`set`, `timeline`).

Timestamps: `timestamps="static"` (the default) keeps the fixed `2026-11-23 09:00:00` of `task_body`; "offset" writes
`createdAt`/`updatedAt` as VoiceFox might, in `zone` with its offset (`2026-11-23T10:00:00+09:00`), and "naive" in
`zone` without one (`2026-11-23 10:00:00`); either way `updatedAt` moves whenever a task changes, as the watcher's zone
learning expects of the real API.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Literal, TypeVar

import anyio
import anyio.abc

from .httpserver import Request, Response, serve

DEFAULT_TOKEN = "sim-token-0123456789"  # noqa: S105 - the simulator's public demo token
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "timeout",
    "429",
    "malformed",
    "empty",
    "wrong_type",
    "huge",
    "401",
    "403",
    "404",
    "envelope",
)
TOKYO = timezone(timedelta(hours=9), "+09:00")  # where most VoiceFox campaigns call (a fixed offset: no DST there)
Timestamps = Literal["static", "naive", "offset"]
Endpoint = Literal["tasks", "calllog"]
_TASK_PATH = re.compile(r"^/openapi/tasks/(\d+)$")
_SIM_TASK_PATH = re.compile(r"^/_sim/tasks/(\d+)$")
_SIM_DIALER_PATH = re.compile(r"^/_sim/dialer/(\d+)$")
CALLLOG_PATH = "/openapi/calllog"
CALLLOG_MAX_PAGE_SIZE = 100  # documented; a larger pageSize is served as 100, and the page says so
CALLLOG_MAX_TASKS = 10
_API_TIME = "%Y-%m-%d %H:%M:%S"
V = TypeVar("V")


@dataclasses.dataclass
class Fault:
    """The next `times` matching requests (of `endpoint`, for `task_id` or any) fail this way."""

    kind: str
    times: int = 1
    task_id: int | None = None
    retry_after: str | None = None
    endpoint: Endpoint = "tasks"


@dataclasses.dataclass(frozen=True, slots=True)
class DialerPlan:
    """How a simulated dialer calls: calls started a minute, the share answered, an answered call's talk seconds,
    and how long a call rings (None: as real ones, 4–15 s before an answer, 15–45 s before it is given up)."""

    calls_per_minute: float = 20.0
    answered: float = 0.4
    duration: tuple[int, int] = (20, 90)
    ring: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not (self.calls_per_minute >= 0 and math.isfinite(self.calls_per_minute)):
            raise ValueError("calls_per_minute is a finite number, 0 or more")
        if not 0.0 <= self.answered <= 1.0:
            raise ValueError("answered is a share from 0 to 1")
        low, high = self.duration
        if not 0 <= low <= high:
            raise ValueError("duration is (shortest, longest) talk seconds")
        if self.ring is not None and not 0 <= self.ring[0] <= self.ring[1]:
            raise ValueError("ring is (shortest, longest) seconds a call rings")


@dataclasses.dataclass(frozen=True, slots=True)
class SimCall:
    """One simulated call: its number in the dialer's sequence and its times (epoch seconds)."""

    task_id: int
    number: int
    start: float
    answered: bool
    ring: int
    talk: int

    @property
    def end(self) -> float:
        """When it ended."""
        return self.start + self.ring + self.talk


def _unit(task_id: int, number: int, salt: str) -> float:
    """A deterministic number in [0, 1) for this call: the same records on every request and every run."""
    digest = hashlib.blake2b(f"{task_id}:{number}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


def _in_effect(changes: list[tuple[float, V]], at: float) -> V:
    """The value of the last change made at or before `at` (the first one if none was), from changes in order."""
    return changes[max(0, bisect.bisect_right(changes, at, key=lambda c: c[0]) - 1)][1]


class _Dialer:
    """A task's calls as a function of time: plan changes (scripted) and running spans (from the task's status)."""

    def __init__(self, task_id: int, plan: DialerPlan, at: float, running: bool, numbers: int | None) -> None:
        self.task_id = task_id
        self.plans: list[tuple[float, DialerPlan]] = [(at, plan)]
        self.running: list[tuple[float, bool]] = [(-math.inf, running)]
        self.numbers = numbers  # how many calls it may still make (a dialer advancing progress), None: no end
        self.progress_from: tuple[int, int] | None = None  # (numbers done, total) when it was made

    def plan_at(self, at: float) -> DialerPlan:
        """The plan in effect at `at` (the first one before it began)."""
        return _in_effect(self.plans, at)

    def change(self, at: float, plan: DialerPlan) -> None:
        """From `at` on, call by `plan`."""
        self.plans = sorted([*(p for p in self.plans if p[0] != at), (at, plan)], key=lambda p: p[0])

    def set_running(self, at: float, running: bool) -> None:
        """The task's status went to or from `running` at `at`."""
        if self.running[-1][1] != running:
            self.running.append((at, running))

    def _spans(self) -> Iterator[tuple[float, float, DialerPlan]]:
        """(from, to, plan) while calling, in order; the last one open-ended."""
        points = sorted({p[0] for p in self.plans} | {r[0] for r in self.running if r[0] > -math.inf})
        start = self.plans[0][0]
        points = [p for p in points if p > start]
        bounds = [start, *points, math.inf]
        for a, b in itertools.pairwise(bounds):
            if _in_effect(self.running, a) and (plan := self.plan_at(a)).calls_per_minute > 0:
                yield a, b, plan

    @staticmethod
    def _count(a: float, b: float, gap: float, until: float) -> int:
        """How many calls of a span [a, b) spaced `gap` apart started by `until` (offsets from `a`: epoch seconds
        are too large for a nudge of 1e-9 to mean anything)."""
        if until < a:
            return 0
        by_until = math.floor((until - a) / gap) + 1
        return by_until if math.isinf(b) else min(by_until, math.ceil((b - a) / gap))

    def calls(self, since: float, until: float) -> Iterator[SimCall]:
        """The calls that started in [since, until], in order."""
        number = 0
        for a, b, plan in self._spans():
            if a > until or (self.numbers is not None and number >= self.numbers):
                return
            gap = 60.0 / plan.calls_per_minute
            count = self._count(a, b, gap, until)
            if self.numbers is not None:
                count = min(count, self.numbers - number)
            first = max(0, math.ceil((since - a) / gap))
            for j in range(first, count):
                yield self._call(number + j, a + j * gap, j, plan)
            number += count

    def started(self, until: float) -> int:
        """How many calls started by `until`."""
        number = sum(self._count(a, b, 60.0 / plan.calls_per_minute, until) for a, b, plan in self._spans())
        return number if self.numbers is None else min(number, self.numbers)

    def _call(self, number: int, start: float, j: int, plan: DialerPlan) -> SimCall:
        # An exact share answered, spread evenly over the span (0.4: the 3rd and 5th of every five).
        answered = math.floor((j + 1) * plan.answered + 1e-9) > math.floor(j * plan.answered + 1e-9)
        unit = _unit(self.task_id, number, "ring")
        if answered:
            ring = 4 + int(unit * 12)
            low, high = plan.duration
            talk = low + int(_unit(self.task_id, number, "talk") * (high - low + 1))
        else:
            ring, talk = 15 + int(unit * 31), 0
        if plan.ring is not None:
            ring = plan.ring[0] + int(unit * (plan.ring[1] - plan.ring[0] + 1))
        return SimCall(self.task_id, number, start, answered, ring, talk)


def task_body(task_id: int, name: str, **fields: Any) -> dict[str, Any]:
    """A realistic task-details body, with the secrets and personal data the real API sends."""
    body: dict[str, Any] = {
        "id": task_id,
        "createdAt": "2026-11-23 09:00:00",
        "updatedAt": "2026-11-23 09:00:00",
        "name": name,
        "status": "pending",
        "total": 1200,
        "progress": 0,
        "collectionRate": 0,
        "option": {
            "numberFileMeta": {"号码": 0, "备注": 1, "姓名": 2},
            "numbers": [819012345678, 819087654321, 818011112222],
            "startDate": "2026-11-01",
            # Around the clock, so demos and tests run at any hour; tests of calling windows set their own.
            "startTime": [["00:00", "00:00"]],
            "retryCount": 2,
            "retryInterval": 30,
        },
        "summary": "",
        "suggestion": "",
        "assistantVid": 77,
        "assistant": {
            "id": 12,
            "projectId": 3,
            "name": "Reminder assistant",
            "versionId": 77,
            "scene": "outbound",
            "speakerId": "ja-JP-1",
            "websocketUrl": f"wss://rt.voicefox.example/ws?token=wsurl-secret-{task_id}-abcdef",
            "websocketToken": f"ws-token-secret-{task_id}-abcdef",
            "listenerId": "l-1",
            "welcome": "Hello",
            "prompt": "Confirm the appointment.",
            "collect": [{"question": "Will you attend?", "answers": ["yes", "no"]}],
            "knowledge": "",
            "createdAt": "2026-11-01 10:00:00",
            "updatedAt": "2026-11-01 10:00:00",
            "creator": {"email": "campaign.owner@example.com"},
            "deletedAt": None,
            "idOldVersion": False,
            "usageCount": 5,
            "creatorId": 9,
        },
    }
    body.update(fields)
    return body


class Simulator:
    """The simulated API; `timeline` scripts changes at seconds after `start()`; `clock` is a seam."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        clock: Callable[[], float] = anyio.current_time,
        timestamps: Timestamps = "static",
        zone: tzinfo = TOKYO,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.token = token
        self._clock = clock
        self.timestamps = timestamps
        self.zone = zone
        self._wall = wall_clock
        self._tasks: dict[int, dict[str, Any]] = {}
        self._timelines: dict[int, list[tuple[float, dict[str, Any]]]] = {}
        self._removed: set[int] = set()
        self._faults: deque[Fault] = deque()
        self._t0: float | None = None
        self.requests = 0  # task requests (the call log's are counted apart, so poll counts stay what they were)
        self.requests_by_task: dict[int, int] = {}
        self.calllog_requests = 0
        self.calllog_forbidden = False  # the call log answers 403, as to a token without that permission
        self._dialers: dict[int, _Dialer] = {}
        self.timeout_seconds = 60.0  # how long a "timeout" fault keeps the client waiting

    # -- scripting ---------------------------------------------------------------------------------------------

    def add_task(self, task_id: int, name: str = "", **fields: Any) -> None:
        """Create (or replace) a task with these fields."""
        if self.timestamps != "static":
            now = self.stamp()
            fields = {"createdAt": now, "updatedAt": now, **fields}
        self._tasks[task_id] = task_body(task_id, name or f"Campaign {task_id}", **fields)
        self._removed.discard(task_id)

    def set(self, task_id: int, **fields: Any) -> None:
        """Change fields of a task now (creating it if needed)."""
        if task_id not in self._tasks:
            self.add_task(task_id)
        self._update(self._tasks[task_id], fields)
        self._removed.discard(task_id)

    def now(self) -> datetime:
        """The simulator's wall clock: what the call log's times are written from."""
        return self._wall()

    def dialer(
        self,
        task_id: int,
        *,
        calls_per_minute: float | None = None,
        answered: float | None = None,
        duration: tuple[int, int] | None = None,
        ring: tuple[int, int] | None = None,
        at: datetime | None = None,
        advances_progress: bool | None = None,
    ) -> DialerPlan:
        """From `at` (default now) on, the task's dialer calls this way while the task is `running`; what is not
        given stays as it was (or DialerPlan's default); return the plan now in effect at `at`.

        `answered=0.03` is carriers blocking the numbers, `calls_per_minute=0` a dialer gone silent. A task that
        does not exist is created, running. `advances_progress` (only when the dialer is first made) makes each
        call one number of the task's `total`, so `progress` follows the calls; it stops calling when all are done.
        """
        when = (at or self._wall()).timestamp()
        if task_id not in self._tasks:
            self.add_task(task_id, status="running")
        existing = self._dialers.get(task_id)
        base = existing.plan_at(when) if existing is not None else DialerPlan()
        plan = DialerPlan(
            calls_per_minute=base.calls_per_minute if calls_per_minute is None else float(calls_per_minute),
            answered=base.answered if answered is None else float(answered),
            duration=base.duration if duration is None else (int(duration[0]), int(duration[1])),
            ring=base.ring if ring is None else (int(ring[0]), int(ring[1])),
        )
        if existing is not None:
            if advances_progress is not None and advances_progress != (existing.progress_from is not None):
                raise ValueError("advances_progress is set when a task's dialer is first made")
            existing.change(when, plan)
            return plan
        body = self._tasks[task_id]
        dialer = _Dialer(task_id, plan, when, body.get("status") == "running", None)
        if advances_progress:
            total, progress = body.get("total"), body.get("progress")
            total = total if isinstance(total, int) and total > 0 else 0
            progress = progress if isinstance(progress, int) else 0
            done = total * max(0, min(100, progress)) // 100
            dialer.numbers = total - done
            dialer.progress_from = (done, total)
        self._dialers[task_id] = dialer
        return plan

    def calls(self, task_id: int, since: datetime, until: datetime) -> list[SimCall]:
        """The task's calls that started in [since, until] (ended or not), as the call log computes them."""
        dialer = self._dialers.get(task_id)
        return [] if dialer is None else list(dialer.calls(since.timestamp(), until.timestamp()))

    def stamp(self, when: datetime | None = None) -> str:
        """A timestamp as this simulator writes them (now, unless `when`)."""
        local = (when or self._wall()).astimezone(self.zone)
        if self.timestamps == "offset":
            return local.isoformat(timespec="seconds")
        return local.strftime("%Y-%m-%d %H:%M:%S")

    def _update(self, body: dict[str, Any], fields: dict[str, Any]) -> None:
        changed = any(body.get(k) != v for k, v in fields.items())
        body.update(fields)
        if "status" in fields and (dialer := self._dialers.get(body.get("id", -1))) is not None:
            # A dialer calls while its task runs: a stop silences it, a resume takes the plan up again.
            dialer.set_running(self._wall().timestamp(), body["status"] == "running")
        if changed and self.timestamps != "static" and "updatedAt" not in fields:
            body["updatedAt"] = self.stamp()

    def remove(self, task_id: int) -> None:
        """The task answers 404 from now on."""
        self._removed.add(task_id)

    def timeline(self, task_id: int, steps: list[tuple[float, dict[str, Any]]]) -> None:
        """At each (seconds after start, fields), the task takes those fields."""
        self._timelines[task_id] = sorted(steps, key=lambda s: s[0])

    def inject(
        self,
        kind: str,
        times: int = 1,
        task_id: int | None = None,
        retry_after: str | None = None,
        endpoint: Endpoint = "tasks",
    ) -> None:
        """The next `times` requests to `endpoint` (for `task_id`, or any) fail as `kind` (one of FAULT_KINDS); a
        call log request matches a `task_id` among those it asks for."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if endpoint not in ("tasks", "calllog"):
            raise ValueError(f"unknown endpoint {endpoint!r}; use tasks or calllog")
        self._faults.append(Fault(kind, times, task_id, retry_after, endpoint))

    def clear_faults(self) -> None:
        """Forget every fault not yet served."""
        self._faults.clear()

    def start(self) -> None:
        """Start the timelines' clock (done by `serve` if not before)."""
        if self._t0 is None:
            self._t0 = self._clock()

    def current(self, task_id: int) -> dict[str, Any] | None:
        """The task's body as of now, or None if it does not exist."""
        if task_id in self._removed or task_id not in self._tasks:
            return None
        body = self._tasks[task_id]
        steps = self._timelines.get(task_id)
        if steps and self._t0 is not None:
            elapsed = self._clock() - self._t0
            while steps and steps[0][0] <= elapsed:
                self._update(body, steps.pop(0)[1])
        dialer = self._dialers.get(task_id)
        if dialer is not None and dialer.progress_from is not None:
            done, total = dialer.progress_from
            started = dialer.started(self._wall().timestamp())
            progress = min(100, (done + started) * 100 // total) if total else 100
            if progress != body.get("progress"):
                self._update(body, {"progress": progress})
        return body

    def elapsed(self) -> float:
        """Seconds since `start()`: where a timeline added now begins."""
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def finished(self) -> bool:
        """Every timeline has played out."""
        return not any(self._timelines.values())

    # -- serving -----------------------------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled (HTTPS with `ssl_context`); `await tg.start(sim.serve)` returns the port."""
        self.start()
        await serve(self.handle, host, port, ssl_context=ssl_context, task_status=task_status)

    @asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve while the block runs; yield the base URL (`http://127.0.0.1:PORT`)."""
        async with anyio.create_task_group() as tg:
            bound = await tg.start(self.serve, host, port)
            yield f"http://{host}:{bound}"
            tg.cancel_scope.cancel()

    def _take_fault(self, task_ids: Collection[int], endpoint: Endpoint = "tasks") -> Fault | None:
        for fault in self._faults:
            if fault.endpoint == endpoint and (fault.task_id is None or fault.task_id in task_ids):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def handle(self, request: Request) -> Response:
        """Answer one request."""
        if request.path.startswith("/_sim/"):
            return self._control(request)
        if request.path == CALLLOG_PATH and request.method == "GET":
            return await self._calllog(request)
        match = _TASK_PATH.match(request.path)
        if request.method != "GET" or match is None:
            return _json(404, {"code": 404, "message": "not found"})
        task_id = int(match.group(1))
        self.requests += 1
        self.requests_by_task[task_id] = self.requests_by_task.get(task_id, 0) + 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _json(401, {"code": 401, "message": "invalid token"})
        fault = self._take_fault((task_id,))
        if fault is not None:
            return await self._fault_response(fault, task_id)
        body = self.current(task_id)
        if body is None:
            return _json(404, {"code": 404, "message": "task not found"})
        return _json(200, body)

    async def _calllog(self, request: Request) -> Response:
        self.calllog_requests += 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _json(401, {"code": 401, "message": "invalid token"})
        query = {k: v[-1] for k, v in request.query.items()}
        try:
            task_ids = _calllog_task_ids(query.get("taskId", ""), self._dialers)
            since, until = self._calllog_range(query.get("startTime"), query.get("endTime"))
            index = int(query.get("pageIndex", "1"))
            size = min(CALLLOG_MAX_PAGE_SIZE, int(query.get("pageSize", "10")))
            if index < 1 or size < 1:
                raise ValueError("pageIndex and pageSize start at 1")
        except ValueError as exc:
            return _json(400, {"code": 400, "message": str(exc)})
        fault = self._take_fault(task_ids, "calllog")
        if fault is not None and fault.kind != "envelope":
            return await self._fault_response(fault, task_ids[0] if task_ids else 0)
        if self.calllog_forbidden:
            return _json(403, {"code": 403, "message": "permission denied: the token may not read call records"})
        for task_id in task_ids:
            self.current(task_id)  # a timeline step due now (a stop, a resume) reaches the dialer first
        now = self._wall().timestamp()
        calls = sorted(
            (c for t in task_ids if t in self._dialers for c in self._dialers[t].calls(since, until) if c.end <= now),
            key=lambda c: (c.start, c.task_id, c.number),
        )
        page = {
            "items": [self._record(c) for c in calls[(index - 1) * size : index * size]],
            "total": len(calls),
            "pageIndex": index,
            "pageSize": size,
        }
        return _json(200, {"code": 0, "message": "ok", "data": page} if fault is not None else page)

    def _calllog_range(self, start: str | None, end: str | None) -> tuple[float, float]:
        """[startTime, endTime] as epoch seconds; naive local times of the simulator's zone; default today."""
        today = self._wall().astimezone(self.zone).replace(hour=0, minute=0, second=0, microsecond=0)

        def read(text: str | None, default: datetime) -> float:
            if not text:
                return default.timestamp()
            try:
                return datetime.strptime(text, _API_TIME).replace(tzinfo=self.zone).timestamp()
            except ValueError:
                raise ValueError("startTime and endTime are written 2006-01-02 15:04:05") from None

        return read(start, today), read(end, today + timedelta(days=1, seconds=-1))

    def _record(self, call: SimCall) -> dict[str, Any]:
        """A call record as VoiceFox writes one: personal data included, and "not answered" written three ways."""
        start = datetime.fromtimestamp(call.start, UTC)
        answered_at = start + timedelta(seconds=call.ring)
        callee = _fake_number(call.task_id, call.number)
        session = hashlib.blake2b(f"{call.task_id}:{call.number}".encode(), digest_size=8).hexdigest()
        unanswered = ("", None, "0001-01-01 00:00:00")[call.number % 3]
        return {
            "sessionId": session,
            "taskId": call.task_id,
            "startAt": self._call_time(start),
            "answerAt": self._call_time(answered_at) if call.answered else unanswered,
            "endAt": self._call_time(datetime.fromtimestamp(call.end, UTC)),
            "callee": callee,
            "caller": _CALLERS[call.task_id % len(_CALLERS)],
            "direction": "outbound",
            "duration": call.ring + call.talk,
            "billsec": call.talk,
            "recordFile": f"https://rec.voicefox.example/{session}/{callee.replace(' ', '')}.wav"
            if call.answered
            else "",
            "assistant": [{"id": 12, "vid": 77}],
        }

    def _call_time(self, when: datetime) -> str:
        # As the query is written (naive local time of the workspace), unless the simulator writes offsets.
        return self.stamp(when) if self.timestamps == "offset" else when.astimezone(self.zone).strftime(_API_TIME)

    async def _fault_response(self, fault: Fault, task_id: int) -> Response:
        kind = fault.kind
        if kind in ("500", "502", "503", "401", "403", "404"):
            return _json(int(kind), {"code": int(kind), "message": "simulated fault"})
        if kind == "429":
            headers = (("Content-Type", "application/json"),) + (
                (("Retry-After", fault.retry_after),) if fault.retry_after is not None else ()
            )
            return Response(429, b'{"code":429,"message":"lower QPS or request a higher quota"}', headers)
        if kind == "timeout":
            await anyio.sleep(self.timeout_seconds)
            return _json(504, {})
        if kind == "malformed":
            return Response(200, b'{"id": 1, "status": "runn')
        if kind == "empty":
            return Response(200, b"")
        if kind == "wrong_type":
            return _json(200, [1, 2, 3])
        if kind == "huge":
            return Response(
                200, b'{"id":' + str(task_id).encode() + b',"status":"running","pad":"' + b"x" * (2 << 20) + b'"}'
            )
        # "envelope": the same task wrapped as {code, message, data}
        body = self.current(task_id)
        return _json(
            200,
            {"code": 0, "message": "ok", "data": copy.deepcopy(body)}
            if body
            else {"code": 404, "message": "not found"},
        )

    def _control(self, request: Request) -> Response:
        try:
            payload = json.loads(request.body) if request.body else {}
        except ValueError:
            return _json(400, {"message": "body must be JSON"})
        if request.path == "/_sim/stats":
            return _json(
                200, {"requests": self.requests, "by_task": self.requests_by_task, "calllog": self.calllog_requests}
            )
        if request.path == "/_sim/faults" and request.method == "POST" and isinstance(payload, dict):
            try:
                self.inject(
                    str(payload.get("kind")),
                    int(payload.get("times", 1)),
                    payload.get("task_id"),
                    payload.get("retry_after"),
                    payload.get("endpoint", "tasks"),
                )
            except (ValueError, TypeError) as exc:
                return _json(400, {"message": str(exc)})
            return _json(200, {"ok": True})
        if request.path == "/_sim/calllog" and request.method == "POST" and isinstance(payload, dict):
            self.calllog_forbidden = bool(payload.get("forbidden", False))
            return _json(200, {"forbidden": self.calllog_forbidden})
        dialer = _SIM_DIALER_PATH.match(request.path)
        if dialer and request.method == "POST" and isinstance(payload, dict):
            return self._control_dialer(int(dialer.group(1)), payload)
        match = _SIM_TASK_PATH.match(request.path)
        if match:
            task_id = int(match.group(1))
            if request.method == "DELETE":
                self.remove(task_id)
                return _json(200, {"ok": True})
            if request.method == "POST" and isinstance(payload, dict):
                self.set(task_id, **payload)
                return _json(200, self._tasks[task_id])
        return _json(404, {"message": "unknown control endpoint"})

    def _control_dialer(self, task_id: int, payload: dict[str, Any]) -> Response:
        try:
            duration, ring = payload.get("duration"), payload.get("ring")
            delay = payload.get("in")
            plan = self.dialer(
                task_id,
                calls_per_minute=payload.get("calls_per_minute"),
                answered=payload.get("answered"),
                duration=(int(duration[0]), int(duration[1])) if duration is not None else None,
                ring=(int(ring[0]), int(ring[1])) if ring is not None else None,
                at=self._wall() + timedelta(seconds=float(delay)) if delay is not None else None,
                advances_progress=payload.get("advances_progress"),
            )
        except (ValueError, TypeError, IndexError) as exc:
            return _json(400, {"message": str(exc)})
        return _json(200, dataclasses.asdict(plan))


_CALLERS = ("+81 3-4567-8901", "05012345678", "+86 21 6123 4567")  # the campaigns' own outgoing lines


def _fake_number(task_id: int, number: int) -> str:
    """A realistic fake callee: a Japanese mobile as people write it, a Chinese mobile, or E.164."""
    n = int(_unit(task_id, number, "callee") * 10**8)
    return (f"+81 90-{n // 10**4:04d}-{n % 10**4:04d}", f"138{n:08d}", f"+8180{n:08d}")[number % 3]


def _calllog_task_ids(text: str, dialers: dict[int, _Dialer]) -> list[int]:
    """The `taskId` query: up to 10 comma-separated IDs; none means every task with a dialer."""
    if not text.strip():
        return sorted(dialers)
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError("taskId is up to 10 comma-separated task IDs") from None
    if len(ids) > CALLLOG_MAX_TASKS:
        raise ValueError(f"taskId takes at most {CALLLOG_MAX_TASKS} task IDs")
    return ids


def _json(status: int, doc: Any) -> Response:
    return Response(status, json.dumps(doc, ensure_ascii=False).encode())


def calling_hours(zone: tzinfo, *, open_now: bool, now: datetime | None = None) -> list[list[str]]:
    """`option.startTime` for a window open now in `zone` (from two hours ago to two hours on), or one that is closed
    now (opening in three hours, for an hour): campaigns that call in Tokyo hours while the watcher runs in UTC."""
    local = (now or datetime.now(UTC)).astimezone(zone)
    start, length = (local - timedelta(hours=2), 4) if open_now else (local + timedelta(hours=3), 1)
    end = start + timedelta(hours=length)
    return [[f"{start:%H:%M}", f"{end:%H:%M}"]]  # may cross midnight: "22:30"-"02:30" is one window


def demo_scenario(sim: Simulator, scale: float = 1.0) -> list[int]:
    """Campaigns that, within ~30 s × scale, start, progress, stall, stop, resume, finish and fail, all calling in
    Tokyo hours open now; and one whose window in Tokyo is closed now, which the watcher polls slowly and never calls
    stalled (with `sim.timestamps` "offset" or "naive", the watcher finds that zone from the API alone); and one whose
    answered share collapses while it calls (carriers flagging its numbers), then recovers."""

    def at(t: float) -> float:
        return t * scale

    calling = {"startDate": "2026-11-01", "startTime": calling_hours(sim.zone, open_now=True)}

    def option(**extra: Any) -> dict[str, Any]:
        return {**task_body(0, "")["option"], **calling, **extra}

    sim.add_task(1001, "Spring renewal reminders", status="pending", total=1200, option=option())
    sim.timeline(
        1001,
        [(at(3), {"status": "running", "progress": 0})]
        + [(at(3 + 2 * i), {"progress": 10 * i, "collectionRate": 30 + i}) for i in range(1, 10)]
        + [
            (
                at(23),
                {
                    "status": "done",
                    "progress": 100,
                    "collectionRate": 41,
                    "summary": "1,200 numbers dialled; 812 answered; 41% confirmed their renewal.",
                    "suggestion": "Call the 388 unanswered numbers again on a weekday evening.",
                },
            )
        ],
    )
    sim.add_task(
        1002,
        "Clinic appointment confirmations",
        status="running",
        progress=40,
        total=300,
        collectionRate=55,
        option=option(),
    )
    sim.timeline(1002, [(at(5), {"progress": 50}), (at(9), {"progress": 60}), (at(14), {"status": "stop.abnormal"})])
    sim.add_task(
        1003,
        "Customer satisfaction survey",
        status="running",
        progress=20,
        total=800,
        collectionRate=18,
        option=option(),
    )
    sim.timeline(
        1003,
        [
            (at(16), {"status": "stop.operate"}),
            (at(19), {"status": "running"}),
            (at(22), {"progress": 70}),
            (at(27), {"status": "done", "progress": 100, "summary": "Survey complete.", "suggestion": "None."}),
        ],
    )
    sim.add_task(
        1004,
        "Evening follow-up calls",
        status="running",
        progress=35,
        total=500,
        collectionRate=22,
        option=option(startTime=calling_hours(sim.zone, open_now=False)),
    )
    # Carriers start flagging the numbers of a big campaign as spam: the answered share falls from 40 % to 3 % while
    # it keeps running and calling, then is back once the numbers are cleared. Quick calls, many of them: a window
    # of calls fills in a few seconds of the demo. (Calls that end as they start: the call log lists a call once it
    # has ended, and the demo's stall_after is shorter than any real call.)
    sim.add_task(
        1005,
        "Insurance renewal outreach",
        status="running",
        progress=20,
        total=1_000_000,
        collectionRate=35,
        option=option(),
    )
    start = sim.now()
    per_minute = 1200 / max(scale, 0.05)
    before = start - timedelta(seconds=20)
    sim.dialer(1005, calls_per_minute=per_minute, answered=0.4, ring=(0, 0), duration=(0, 0), at=before)
    sim.dialer(1005, answered=0.03, at=start + timedelta(seconds=at(6)))
    sim.dialer(1005, answered=0.4, at=start + timedelta(seconds=at(15)))
    return [1001, 1002, 1003, 1004, 1005]


# Call log scenarios: each sets up its task(s) with an hour of calls already in the log (a baseline to judge from),
# on the simulator's wall clock, and returns the task IDs; the changes they script happen at wall-clock times from
# now, so a test moves the simulator's `wall_clock` to play them.
HISTORY = timedelta(hours=1)


def creeping_campaign(sim: Simulator, task_id: int = 2001) -> list[int]:
    """A 20,000-number campaign dialling 10 numbers a minute: its progress moves 1 % every 20 minutes, flat for
    longer than a 15-minute `stall_after`, while it calls steadily (40 % answered): no stall."""
    sim.add_task(
        task_id, "Nationwide contract renewals", status="running", total=20_000, progress=37, collectionRate=31
    )
    sim.dialer(task_id, calls_per_minute=10, answered=0.4, at=sim.now() - HISTORY, advances_progress=True)
    return [task_id]


def silent_dialer(sim: Simulator, task_id: int = 2002, silent_after: timedelta = timedelta(minutes=10)) -> list[int]:
    """A running task whose dialer stops calling `silent_after` from now while its status stays `running`: a stall,
    seen in the call log (no call started) before its progress could say so."""
    sim.add_task(task_id, "Clinic reminder calls", status="running", total=5_000, progress=12, collectionRate=48)
    sim.dialer(task_id, calls_per_minute=12, answered=0.45, at=sim.now() - HISTORY, advances_progress=True)
    sim.dialer(task_id, calls_per_minute=0, at=sim.now() + silent_after)
    return [task_id]


def blocked_numbers(sim: Simulator, task_id: int = 2003, blocked_after: timedelta = timedelta(minutes=30)) -> list[int]:
    """Carriers start labelling the calling numbers as spam `blocked_after` from now: the answered share collapses
    from 40 % to 3 % while the task keeps running and calling at the same pace."""
    sim.add_task(task_id, "Insurance renewal outreach", status="running", total=50_000, progress=20, collectionRate=35)
    sim.dialer(task_id, calls_per_minute=30, answered=0.4, at=sim.now() - HISTORY, advances_progress=True)
    sim.dialer(task_id, answered=0.03, at=sim.now() + blocked_after)
    return [task_id]


def calllog_forbidden(sim: Simulator, task_id: int = 2004) -> list[int]:
    """A calling task whose call log the token may not read: the call log answers 403, the task itself 200."""
    sim.add_task(task_id, "Survey follow-up", status="running", total=2_000, progress=50, collectionRate=22)
    sim.dialer(task_id, calls_per_minute=15, answered=0.35, at=sim.now() - HISTORY)
    sim.calllog_forbidden = True
    return [task_id]
